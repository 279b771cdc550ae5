//! The api's own description: `GET /openapi.yaml` (the spec in
//! `api/openapi.yaml`, embedded so a deployed binary serves the spec it was
//! built with) and `GET /docs`, a Swagger UI whose assets are embedded too,
//! so it works on a cluster without internet access.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use swagger_ui_redist::{SwaggerUi, SwaggerUiStaticFile};

use etl_core::domain::RequestId;

use crate::error::ApiError;

pub const OPENAPI_YAML: &str = include_str!("../../api/openapi.yaml");

const ASSETS: &str = "/docs/assets";

static PAGE: LazyLock<String> = LazyLock::new(|| {
    let mut ui = SwaggerUi::new();
    ui.title("cmd-api");
    ui.config().urls(["/openapi.yaml"]);
    for file in SwaggerUiStaticFile::all() {
        ui.override_file_path(*file, format!("{ASSETS}/{}", file.file_name()));
    }
    ui.serve().expect("the Swagger UI page renders")
});

pub fn router() -> Router {
    Router::new()
        .route("/openapi.yaml", get(spec))
        .route("/docs", get(page))
        .route("/docs/assets/{file}", get(asset))
}

async fn spec() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML).into_response()
}

async fn page() -> Html<&'static str> {
    Html(PAGE.as_str())
}

async fn asset(Path(name): Path<String>, Extension(request_id): Extension<RequestId>) -> Response {
    let found = SwaggerUi::static_files()
        .iter()
        .find(|(file, _)| file.file_name() == name);
    let Some((_, bytes)) = found else {
        return ApiError::NotFound(format!("GET {ASSETS}/{name}"))
            .with_request_id(request_id)
            .into_response();
    };
    let content_type = match name.rsplit('.').next() {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        *bytes,
    )
        .into_response()
}
