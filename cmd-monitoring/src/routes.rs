//! The monitor's HTTP answers: stats, file timelines, company and request
//! views, the live event stream and the dashboard page. Errors are JSON
//! `{"error": {"code", "message"}}`, mapped to a status in one place.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use etl_core::dataset::DatasetName;
use etl_core::domain::{CompanySlug, FileId, RequestId};
use etl_core::events::Event;

use crate::store::{EventView, StatsFilter, Store};
use crate::tail::Feed;

const DEFAULT_FILES_LIMIT: i64 = 50;
const MAX_FILES_LIMIT: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("no events seen for file {0}; check the id, or wait until the api has published it")]
    FileNotFound(FileId),
    #[error("no events seen for request {0}")]
    RequestNotFound(String),
    #[error("`{0}` is not a file id; file ids are UUIDs as returned by POST /import/companies")]
    InvalidFileId(String),
    #[error("`{0}` is not a request id; request ids are 1-128 letters, digits or `-_.:`")]
    InvalidRequestId(String),
    #[error("`{value}` is not a company slug: {problem}")]
    InvalidCompany { value: String, problem: String },
    #[error("`{value}` is not a dataset name: {problem}")]
    InvalidDataset { value: String, problem: String },
    #[error("`{0}` is not an event type; use one of {types}", types = Event::TYPE_NAMES.join(", "))]
    UnknownEventType(String),
    #[error("`limit` must be a whole number from 1 to {MAX_FILES_LIMIT}, got `{0}`")]
    InvalidLimit(String),
    #[error("the monitor's database is unavailable; retry later")]
    DatabaseUnavailable(#[source] sqlx::Error),
    /// A query the database refused or an answer that did not decode: our
    /// bug, which retrying will not fix.
    #[error("the monitor failed on its side; this is logged and will not go away by retrying")]
    Internal(#[source] sqlx::Error),
    #[error("no route for {0}; see GET / for the dashboard and the routes it uses")]
    NoRoute(String),
}

impl MonitorError {
    pub fn code(&self) -> &'static str {
        match self {
            MonitorError::FileNotFound(_) => "file_not_found",
            MonitorError::RequestNotFound(_) => "request_not_found",
            MonitorError::InvalidFileId(_) => "invalid_file_id",
            MonitorError::InvalidRequestId(_) => "invalid_request_id",
            MonitorError::InvalidCompany { .. } => "invalid_company",
            MonitorError::InvalidDataset { .. } => "invalid_dataset",
            MonitorError::UnknownEventType(_) => "unknown_event_type",
            MonitorError::InvalidLimit(_) => "invalid_limit",
            MonitorError::DatabaseUnavailable(_) => "dependency_unavailable",
            MonitorError::Internal(_) => "internal_error",
            MonitorError::NoRoute(_) => "not_found",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            MonitorError::FileNotFound(_)
            | MonitorError::RequestNotFound(_)
            | MonitorError::NoRoute(_) => StatusCode::NOT_FOUND,
            MonitorError::InvalidFileId(_)
            | MonitorError::InvalidRequestId(_)
            | MonitorError::InvalidCompany { .. }
            | MonitorError::InvalidDataset { .. }
            | MonitorError::UnknownEventType(_)
            | MonitorError::InvalidLimit(_) => StatusCode::BAD_REQUEST,
            MonitorError::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            MonitorError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<sqlx::Error> for MonitorError {
    fn from(e: sqlx::Error) -> Self {
        if etl_core::db::is_unavailable(&e) {
            MonitorError::DatabaseUnavailable(e)
        } else {
            MonitorError::Internal(e)
        }
    }
}

impl IntoResponse for MonitorError {
    fn into_response(self) -> Response {
        match &self {
            MonitorError::DatabaseUnavailable(e) => {
                tracing::warn!(error = %e, "monitor query failed, answering 503");
            }
            MonitorError::Internal(e) => {
                tracing::error!(error = %e, "monitor query failed on our side, answering 500");
            }
            _ => {}
        }
        let body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        (self.status(), Json(body)).into_response()
    }
}

#[derive(Clone)]
struct RouteState {
    store: Store,
    feed: Feed,
    /// `TRACES_UI_URL`, with `{trace_id}` in it.
    traces_ui_url: Option<Arc<str>>,
    stopping: CancellationToken,
}

/// Every route but the ops ones. `stopping` ends live streams, so that a
/// graceful shutdown does not wait for browsers to go away.
pub fn router(
    store: Store,
    feed: Feed,
    traces_ui_url: Option<String>,
    stopping: CancellationToken,
) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/stats", get(stats))
        .route("/files/{file_id}", get(file))
        .route("/companies/{company}/files", get(company_files))
        .route("/requests/{request_id}", get(request))
        .route("/events/stream", get(stream))
        .fallback(no_route)
        .with_state(RouteState {
            store,
            feed,
            traces_ui_url: traces_ui_url.map(Arc::from),
            stopping,
        })
}

async fn dashboard() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(include_str!("dashboard.html")),
    )
}

async fn no_route(uri: Uri) -> MonitorError {
    MonitorError::NoRoute(uri.path().to_owned())
}

fn company_param(value: &str) -> Result<CompanySlug, MonitorError> {
    CompanySlug::parse(value).map_err(|e| MonitorError::InvalidCompany {
        value: value.to_owned(),
        problem: e.to_string(),
    })
}

fn dataset_param(value: &str) -> Result<DatasetName, MonitorError> {
    DatasetName::parse(value).map_err(|e| MonitorError::InvalidDataset {
        value: value.to_owned(),
        problem: e.to_string(),
    })
}

async fn stats(
    State(s): State<RouteState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, MonitorError> {
    let filter = StatsFilter {
        company: q.get("company").map(|c| company_param(c)).transpose()?,
        dataset: q.get("dataset").map(|d| dataset_param(d)).transpose()?,
    };
    Ok(Json(s.store.stats(&filter).await?).into_response())
}

async fn file(
    State(s): State<RouteState>,
    Path(file_id): Path<String>,
) -> Result<Response, MonitorError> {
    let id: FileId = file_id
        .parse()
        .map_err(|_| MonitorError::InvalidFileId(file_id.clone()))?;
    match s.store.file(id).await? {
        Some(mut timeline) => {
            timeline.trace_url = s
                .traces_ui_url
                .as_deref()
                .zip(timeline.file.trace_id.as_deref())
                .map(|(url, id)| url.replace("{trace_id}", id));
            Ok(Json(timeline).into_response())
        }
        None => Err(MonitorError::FileNotFound(id)),
    }
}

async fn company_files(
    State(s): State<RouteState>,
    Path(company): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, MonitorError> {
    let company = company_param(&company)?;
    let limit = match q.get("limit") {
        None => DEFAULT_FILES_LIMIT,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_FILES_LIMIT).contains(n))
            .ok_or_else(|| MonitorError::InvalidLimit(raw.clone()))?,
    };
    let files = s.store.company_files(&company, limit).await?;
    Ok(Json(json!({"company": company.as_str(), "files": files})).into_response())
}

async fn request(
    State(s): State<RouteState>,
    Path(request_id): Path<String>,
) -> Result<Response, MonitorError> {
    let id = RequestId::parse(&request_id)
        .ok_or_else(|| MonitorError::InvalidRequestId(request_id.clone()))?;
    match s.store.request(&id).await? {
        Some(view) => Ok(Json(view).into_response()),
        None => Err(MonitorError::RequestNotFound(request_id)),
    }
}

/// What a live subscriber asked to see.
struct StreamFilter {
    company: Option<String>,
    dataset: Option<String>,
    event_types: Option<Vec<String>>,
}

impl StreamFilter {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, MonitorError> {
        let company = q
            .get("company")
            .map(|c| company_param(c).map(|c| c.as_str().to_owned()))
            .transpose()?;
        let dataset = q
            .get("dataset")
            .map(|d| dataset_param(d).map(String::from))
            .transpose()?;
        let event_types = q
            .get("event_type")
            .map(|list| {
                list.split(',')
                    .map(|t| {
                        Event::TYPE_NAMES
                            .contains(&t)
                            .then(|| t.to_owned())
                            .ok_or_else(|| MonitorError::UnknownEventType(t.to_owned()))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(Self {
            company,
            dataset,
            event_types,
        })
    }

    fn wants(&self, event: &EventView) -> bool {
        self.company
            .as_ref()
            .is_none_or(|c| event.company.as_ref() == Some(c))
            && self
                .dataset
                .as_ref()
                .is_none_or(|d| event.dataset.as_ref() == Some(d))
            && self
                .event_types
                .as_ref()
                .is_none_or(|types| types.contains(&event.event_type))
    }
}

/// Server-Sent Events: one `event: <EventType>` message per new event, as
/// JSON. A subscriber too slow to keep up gets a `lagged` message saying
/// how many it missed (they are in `/files/{id}` and `/stats` still).
async fn stream(
    State(s): State<RouteState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, MonitorError> {
    let filter = Arc::new(StreamFilter::from_query(&q)?);
    let receiver = s.feed.subscribe();
    let hello = SseEvent::default().event("ready").data("{}");
    let events = futures::stream::unfold(
        (receiver, s.stopping, filter),
        |(mut receiver, stopping, filter)| async move {
            loop {
                let next = tokio::select! {
                    () = stopping.cancelled() => return None,
                    next = receiver.recv() => next,
                };
                let message = match next {
                    Ok(event) if filter.wants(&event) => SseEvent::default()
                        .event(event.event_type.clone())
                        .id(event.event_id.to_string())
                        .json_data(&*event)
                        .unwrap_or_else(|_| SseEvent::default().comment("unserialisable")),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => SseEvent::default()
                        .event("lagged")
                        .data(json!({"missed": missed}).to_string()),
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(message), (receiver, stopping, filter)));
            }
        },
    );
    let stream = futures::stream::once(async { Ok(hello) }).chain(events);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
