//! The monitor's memory: every event seen, and each file's current state,
//! in its own Postgres tables (`monitoring_events`, `monitoring_files`).
//! Writes are idempotent per `event_id`, so a batch redelivered after a
//! crash changes nothing; reads answer the HTTP routes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use etl_core::domain::{CompanySlug, FileId, RequestId};

mod record;
mod stats;

pub use record::{Recorded, SeenEvent};
pub use stats::{Stats, StatsFilter};

/// An event as the routes and the live stream show it.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    pub event_id: Uuid,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    /// The service that published it.
    pub service: &'static str,
    pub request_id: String,
    pub company: Option<String>,
    pub dataset: Option<String>,
    pub file_id: Option<Uuid>,
    /// The trace it was published in, when the services export traces.
    pub trace_id: Option<String>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The event's own fields: errors, rows, S3 key, reason ...
    pub details: Value,
    /// For `FileLoaded`: received → loaded, once both events were seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    pub file_id: Uuid,
    pub company: Option<String>,
    pub dataset: Option<String>,
    /// The file's trace: the first its events named.
    pub trace_id: Option<String>,
    pub request_id: String,
    pub filename: Option<String>,
    pub status: String,
    pub status_at: DateTime<Utc>,
    pub received_at: Option<DateTime<Utc>>,
    pub loaded_at: Option<DateTime<Utc>>,
    pub latency_ms: Option<f64>,
    pub events: i32,
}

#[derive(Debug, Serialize)]
pub struct FileTimeline {
    #[serde(flatten)]
    pub file: FileSummary,
    /// The file's trace in the trace backend (`TRACES_UI_URL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
    pub timeline: Vec<EventView>,
}

#[derive(Debug, Serialize)]
pub struct RequestView {
    pub request_id: String,
    pub files: Vec<FileSummary>,
    /// Every event of the request, files and refused uploads alike.
    pub events: Vec<EventView>,
}

/// The service that published an event: the api, except for outcomes and
/// for a `FileExtractSuccess` re-sent by `cmd-processor replay`. Decided
/// from the stored form, so a fresh event and a row read back agree.
fn service_of(event_type: &str, details: &Value) -> &'static str {
    match event_type {
        "FileExtractSuccess" if details["replay"] == Value::Bool(true) => "cmd-processor",
        "FileExtractSuccess" | "FileExtractError" => "cmd-api",
        _ => "cmd-processor",
    }
}

struct EventRow {
    event_id: Uuid,
    event_type: String,
    occurred_at: DateTime<Utc>,
    request_id: String,
    company: Option<String>,
    dataset: Option<String>,
    file_id: Option<Uuid>,
    trace_id: Option<String>,
    topic: String,
    partition: i32,
    offset: i64,
    details: Value,
}

impl From<EventRow> for EventView {
    fn from(r: EventRow) -> Self {
        Self {
            service: service_of(&r.event_type, &r.details),
            event_id: r.event_id,
            event_type: r.event_type,
            occurred_at: r.occurred_at,
            request_id: r.request_id,
            company: r.company,
            dataset: r.dataset,
            file_id: r.file_id,
            trace_id: r.trace_id,
            topic: r.topic,
            partition: r.partition,
            offset: r.offset,
            details: r.details,
            latency_ms: None,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A read-only transaction that sees one moment: reads of the summary
    /// and of the events agree, where a batch recorded between two plain
    /// reads would show more events than the summary counts.
    async fn snapshot(&self) -> Result<Transaction<'_, Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    pub async fn file(&self, file_id: FileId) -> Result<Option<FileTimeline>, sqlx::Error> {
        let mut tx = self.snapshot().await?;
        let Some(file) = sqlx::query_as!(
            FileSummary,
            "SELECT file_id, company, dataset, trace_id, request_id, filename, status, status_at,
                    received_at, loaded_at, latency_ms, events
             FROM monitoring_files WHERE file_id = $1",
            file_id.as_uuid(),
        )
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let timeline = sqlx::query_as!(
            EventRow,
            r#"SELECT event_id, event_type, occurred_at, request_id, company, dataset, file_id, trace_id,
                      topic, "partition", "offset", details
               FROM monitoring_events WHERE file_id = $1
               ORDER BY occurred_at, seen_at"#,
            file_id.as_uuid(),
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(EventView::from)
        .collect();
        tx.commit().await?;
        Ok(Some(FileTimeline {
            file,
            trace_url: None,
            timeline,
        }))
    }

    /// The company's files, most recently changed first.
    pub async fn company_files(
        &self,
        company: &CompanySlug,
        limit: i64,
    ) -> Result<Vec<FileSummary>, sqlx::Error> {
        sqlx::query_as!(
            FileSummary,
            "SELECT file_id, company, dataset, trace_id, request_id, filename, status, status_at,
                    received_at, loaded_at, latency_ms, events
             FROM monitoring_files WHERE company = $1
             ORDER BY status_at DESC LIMIT $2",
            company.as_str(),
            limit,
        )
        .fetch_all(&self.pool)
        .await
    }

    pub async fn request(
        &self,
        request_id: &RequestId,
    ) -> Result<Option<RequestView>, sqlx::Error> {
        let mut tx = self.snapshot().await?;
        let events: Vec<EventView> = sqlx::query_as!(
            EventRow,
            r#"SELECT event_id, event_type, occurred_at, request_id, company, dataset, file_id, trace_id,
                      topic, "partition", "offset", details
               FROM monitoring_events WHERE request_id = $1
               ORDER BY occurred_at, seen_at"#,
            request_id.as_str(),
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(EventView::from)
        .collect();
        if events.is_empty() {
            return Ok(None);
        }
        let files = sqlx::query_as!(
            FileSummary,
            "SELECT file_id, company, dataset, trace_id, request_id, filename, status, status_at,
                    received_at, loaded_at, latency_ms, events
             FROM monitoring_files WHERE request_id = $1
             ORDER BY received_at NULLS LAST, file_id",
            request_id.as_str(),
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(RequestView {
            request_id: request_id.as_str().to_owned(),
            files,
            events,
        }))
    }
}
