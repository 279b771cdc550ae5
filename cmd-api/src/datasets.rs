//! `GET /datasets` and `GET /datasets/{name}/schema`: what the api imports
//! at `POST /import/{dataset}`, and the JSON Schema each document of a
//! dataset must pass (the processor checks it).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use etl_core::dataset::Datasets;
use etl_core::domain::RequestId;

use crate::error::{ApiError, ErrorResponse};

pub fn router(datasets: Datasets) -> Router {
    Router::new()
        .route("/datasets", get(list))
        .route("/datasets/{name}/schema", get(schema))
        .with_state(datasets)
}

async fn list(State(datasets): State<Datasets>) -> Json<Value> {
    let all: Vec<Value> = datasets
        .iter()
        .map(|d| {
            json!({
                "name": d.name,
                "title": d.schema.get("title"),
                "import": format!("/import/{}", d.name),
                "schema": format!("/datasets/{}/schema", d.name),
            })
        })
        .collect();
    Json(json!({ "datasets": all }))
}

async fn schema(
    State(datasets): State<Datasets>,
    Extension(request_id): Extension<RequestId>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ErrorResponse> {
    let name = name.map_or_else(|_| String::new(), |Path(name)| name);
    match datasets.get(&name) {
        Some(dataset) => Ok(Json(dataset.schema.clone())),
        None => Err(ApiError::unknown_dataset(&name, &datasets).with_request_id(request_id)),
    }
}
