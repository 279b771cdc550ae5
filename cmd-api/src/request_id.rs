//! Gives every request a [`RequestId`] (the client's `X-Request-Id` if it is
//! acceptable), echoes it in the response, and puts it on a tracing span so
//! every log line about the request carries it (and its trace id, when
//! traces are on).

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use etl_core::domain::RequestId;

pub const HEADER: &str = "x-request-id";

/// The id [`assign`] gave `req` (a fresh one where it did not run).
pub fn of(req: &Request) -> RequestId {
    req.extensions()
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(RequestId::generate)
}

pub async fn assign(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::parse)
        .unwrap_or_else(RequestId::generate);
    req.extensions_mut().insert(id.clone());
    let span = tracing::info_span!(
        "request",
        otel.name = %req.method(),
        otel.kind = "server",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    // A client's `traceparent` makes this request part of its trace.
    let headers = req.headers().iter();
    let readable = headers.filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
    etl_core::traces::continue_from(&span, readable);
    let mut response = next.run(req).instrument(span.clone()).await;
    // No log line inside the span comes after the answer: only the
    // exported span needs the status.
    let status = i64::from(response.status().as_u16());
    etl_core::traces::set_attribute(&span, "http.response.status_code", status);
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        response.headers_mut().insert(HEADER, v);
    }
    response
}
