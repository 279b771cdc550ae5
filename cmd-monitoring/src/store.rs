//! The monitor's memory: every event seen, and each file's current state,
//! in its own Postgres tables (`monitoring_events`, `monitoring_files`).
//! Writes are idempotent per `event_id`, so a batch redelivered after a
//! crash changes nothing; reads answer the HTTP routes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use etl_core::domain::{CompanySlug, FileId, RequestId};
use etl_core::events::{Envelope, Event};

/// One event as read from a topic, ready to be recorded.
#[derive(Debug, Clone)]
pub struct SeenEvent {
    pub envelope: Envelope,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

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
    pub file_id: Option<Uuid>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The event's own fields: errors, rows, S3 key, reason ...
    pub details: Value,
    /// For `FileLoaded`: received → loaded, once both events were seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// What recording a batch changed: only events seen for the first time.
#[derive(Debug, Default)]
pub struct Recorded {
    pub new_events: Vec<EventView>,
    /// End-to-end latencies that became known with this batch, once per file.
    pub latencies_ms: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileSummary {
    pub file_id: Uuid,
    pub company: Option<String>,
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
    pub timeline: Vec<EventView>,
}

#[derive(Debug, Serialize)]
pub struct RequestView {
    pub request_id: String,
    pub files: Vec<FileSummary>,
    /// Every event of the request, files and refused uploads alike.
    pub events: Vec<EventView>,
}

#[derive(Debug, Serialize)]
pub struct Counts {
    pub by_type: std::collections::BTreeMap<String, i64>,
    /// Refused uploads, invalid files and dead letters over everything that
    /// reached an end (those plus loaded files); `null` before the first.
    pub failure_rate: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    /// Files whose latency is known in the window.
    pub count: i64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Window {
    #[serde(flatten)]
    pub counts: Counts,
    pub latency: Latency,
}

#[derive(Debug, Serialize)]
pub struct CompanyCounts {
    pub company: String,
    pub last_event_at: DateTime<Utc>,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub company: Option<String>,
    pub generated_at: DateTime<Utc>,
    pub total: Counts,
    pub latency: Latency,
    /// `5m`, `1h`, `24h`: by when the events happened.
    pub windows: std::collections::BTreeMap<&'static str, Window>,
    /// Files by current status.
    pub files: std::collections::BTreeMap<String, i64>,
    /// The most recently active companies first.
    pub companies: Vec<CompanyCounts>,
}

/// The windows of `/stats`, as (name, seconds).
pub const WINDOWS: [(&str, i64); 3] = [("5m", 300), ("1h", 3_600), ("24h", 86_400)];
/// How many companies `/stats` lists.
pub const STATS_COMPANIES: i64 = 50;

const FAILURES: [&str; 3] = ["FileExtractError", "ValidationError", "DeadLetter"];

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

/// The file status an event leads to, for events about a file.
fn status_of(event: &Event) -> Option<&'static str> {
    match event {
        Event::FileExtractSuccess(_) => Some("received"),
        Event::FileLoaded(_) => Some("loaded"),
        Event::ValidationError(_) => Some("invalid"),
        Event::DeadLetter(_) => Some("dead_lettered"),
        Event::FileExtractError(_) => None,
    }
}

fn details_of(event: &Event) -> Value {
    let mut details = serde_json::to_value(event).unwrap_or(Value::Null);
    if let Some(fields) = details.as_object_mut() {
        // Already columns of the event.
        fields.remove("event_type");
        fields.remove("file_id");
    }
    details
}

impl SeenEvent {
    fn view(&self) -> EventView {
        let e = &self.envelope;
        let details = details_of(&e.event);
        EventView {
            event_id: e.event_id,
            event_type: e.event.type_name().to_owned(),
            occurred_at: e.occurred_at,
            service: service_of(e.event.type_name(), &details),
            request_id: e.request_id.as_str().to_owned(),
            company: e.company.as_ref().map(|c| c.as_str().to_owned()),
            file_id: e.event.file_id().map(|f| f.as_uuid()),
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            details,
            latency_ms: None,
        }
    }
}

struct EventRow {
    event_id: Uuid,
    event_type: String,
    occurred_at: DateTime<Utc>,
    request_id: String,
    company: Option<String>,
    file_id: Option<Uuid>,
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
            file_id: r.file_id,
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

    /// Records a batch in one transaction. Events already recorded (a
    /// redelivery, a re-emitted outcome) are skipped and not reported.
    pub async fn record(&self, batch: &[SeenEvent]) -> Result<Recorded, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut recorded = Recorded::default();
        for seen in batch {
            let mut view = seen.view();
            let inserted = sqlx::query!(
                r#"INSERT INTO monitoring_events
                       (event_id, event_type, occurred_at, request_id, company, file_id,
                        topic, "partition", "offset", details)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                   ON CONFLICT (event_id) DO NOTHING"#,
                view.event_id,
                view.event_type,
                view.occurred_at,
                view.request_id,
                view.company,
                view.file_id,
                view.topic,
                view.partition,
                view.offset,
                view.details,
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                continue;
            }
            if let (Some(file_id), Some(status)) = (view.file_id, status_of(&seen.envelope.event)) {
                view.latency_ms =
                    update_file(&mut tx, &view, file_id, status, &seen.envelope).await?;
                recorded.latencies_ms.extend(view.latency_ms);
            }
            recorded.new_events.push(view);
        }
        tx.commit().await?;
        Ok(recorded)
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
            "SELECT file_id, company, request_id, filename, status, status_at,
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
            r#"SELECT event_id, event_type, occurred_at, request_id, company, file_id,
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
        Ok(Some(FileTimeline { file, timeline }))
    }

    /// The company's files, most recently changed first.
    pub async fn company_files(
        &self,
        company: &CompanySlug,
        limit: i64,
    ) -> Result<Vec<FileSummary>, sqlx::Error> {
        sqlx::query_as!(
            FileSummary,
            "SELECT file_id, company, request_id, filename, status, status_at,
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
            r#"SELECT event_id, event_type, occurred_at, request_id, company, file_id,
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
            "SELECT file_id, company, request_id, filename, status, status_at,
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

    /// Every number of `/stats`, read from one snapshot, so they agree
    /// with each other however many events arrive meanwhile.
    pub async fn stats(&self, company: Option<&CompanySlug>) -> Result<Stats, sqlx::Error> {
        let company = company.map(|c| c.as_str());
        let mut tx = self.snapshot().await?;
        let (total, window_counts) = event_counts(&mut tx, company).await?;
        let mut windows = std::collections::BTreeMap::new();
        for ((name, seconds), counts) in WINDOWS.into_iter().zip(window_counts) {
            let latency = latency(&mut tx, company, Some(seconds)).await?;
            windows.insert(name, Window { counts, latency });
        }
        let files = sqlx::query!(
            r#"SELECT status, count(*) AS "files!" FROM monitoring_files
               WHERE ($1::text IS NULL OR company = $1) GROUP BY status"#,
            company,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|row| (row.status, row.files))
        .collect();
        let companies = active_companies(&mut tx, company).await?;
        let latency = latency(&mut tx, company, None).await?;
        tx.commit().await?;
        Ok(Stats {
            company: company.map(str::to_owned),
            generated_at: Utc::now(),
            total,
            latency,
            windows,
            files,
            companies,
        })
    }
}

/// Events by type in all, and in each of `WINDOWS`: one scan.
async fn event_counts(
    conn: &mut PgConnection,
    company: Option<&str>,
) -> Result<(Counts, [Counts; 3]), sqlx::Error> {
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query!(
        r#"SELECT event_type,
                  count(*) AS "total!",
                  count(*) FILTER (WHERE occurred_at > now() - make_interval(secs => $2))
                      AS "first_window!",
                  count(*) FILTER (WHERE occurred_at > now() - make_interval(secs => $3))
                      AS "second_window!",
                  count(*) FILTER (WHERE occurred_at > now() - make_interval(secs => $4))
                      AS "third_window!"
           FROM monitoring_events
           WHERE ($1::text IS NULL OR company = $1)
           GROUP BY event_type"#,
        company,
        WINDOWS[0].1 as f64,
        WINDOWS[1].1 as f64,
        WINDOWS[2].1 as f64,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| {
        (
            r.event_type,
            r.total,
            r.first_window,
            r.second_window,
            r.third_window,
        )
    })
    .collect();
    // A window lists only the types it saw, as a GROUP BY of its own would.
    let column = |pick: fn(&(String, i64, i64, i64, i64)) -> i64| {
        counts(
            rows.iter()
                .map(|row| (row.0.clone(), pick(row)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    };
    Ok((
        column(|r| r.1),
        [column(|r| r.2), column(|r| r.3), column(|r| r.4)],
    ))
}

/// The `STATS_COMPANIES` most recently active companies with their counts.
async fn active_companies(
    conn: &mut PgConnection,
    company: Option<&str>,
) -> Result<Vec<CompanyCounts>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH active AS (
               SELECT company, max(occurred_at) AS last_event_at FROM monitoring_events
               WHERE company IS NOT NULL AND ($1::text IS NULL OR company = $1)
               GROUP BY company ORDER BY last_event_at DESC LIMIT $2)
           SELECT a.company AS "company!", a.last_event_at AS "last_event_at!",
                  e.event_type, count(*) AS "events!"
           FROM active a JOIN monitoring_events e ON e.company = a.company
           GROUP BY a.company, a.last_event_at, e.event_type
           ORDER BY a.last_event_at DESC, a.company"#,
        company,
        STATS_COMPANIES,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut companies: Vec<CompanyCounts> = Vec::new();
    for row in rows {
        let (company, last_event_at, event_type, n) =
            (row.company, row.last_event_at, row.event_type, row.events);
        match companies.last_mut() {
            Some(current) if current.company == company => {
                current.counts.by_type.insert(event_type, n);
            }
            _ => companies.push(CompanyCounts {
                company,
                last_event_at,
                counts: counts(vec![(event_type, n)]),
            }),
        }
    }
    for c in &mut companies {
        c.counts = counts(std::mem::take(&mut c.counts.by_type).into_iter().collect());
    }
    Ok(companies)
}

/// End-to-end latency of the files loaded (in the last `seconds`).
async fn latency(
    conn: &mut PgConnection,
    company: Option<&str>,
    seconds: Option<i64>,
) -> Result<Latency, sqlx::Error> {
    sqlx::query_as!(
        Latency,
        r#"SELECT count(latency_ms) AS "count!",
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50_ms,
                  percentile_cont(0.9) WITHIN GROUP (ORDER BY latency_ms) AS p90_ms,
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99_ms,
                  max(latency_ms) AS max_ms
           FROM monitoring_files
           WHERE latency_ms IS NOT NULL
             AND ($1::text IS NULL OR company = $1)
             AND ($2::float8 IS NULL OR loaded_at > now() - make_interval(secs => $2))"#,
        company,
        seconds.map(|s| s as f64),
    )
    .fetch_one(&mut *conn)
    .await
}

fn counts(by_type: Vec<(String, i64)>) -> Counts {
    let by_type: std::collections::BTreeMap<String, i64> = by_type.into_iter().collect();
    let failed: i64 = FAILURES
        .iter()
        .map(|t| by_type.get(*t).copied().unwrap_or(0))
        .sum();
    let finished = failed + by_type.get("FileLoaded").copied().unwrap_or(0);
    Counts {
        failure_rate: (finished > 0).then(|| failed as f64 / finished as f64),
        by_type,
    }
}

/// Folds one new event into its file's row; returns the file's end-to-end
/// latency if this event is the one that made it known.
async fn update_file(
    tx: &mut sqlx::PgConnection,
    view: &EventView,
    file_id: Uuid,
    status: &str,
    envelope: &Envelope,
) -> Result<Option<f64>, sqlx::Error> {
    let (filename, received_at, loaded_at) = match &envelope.event {
        Event::FileExtractSuccess(e) => (Some(e.filename.as_str()), Some(view.occurred_at), None),
        Event::FileLoaded(_) => (None, None, Some(view.occurred_at)),
        _ => (None, None, None),
    };
    // Events of different topics arrive in any order: the latest event
    // decides the status, the first receipt and first load the latency.
    sqlx::query!(
        "INSERT INTO monitoring_files AS f
             (file_id, company, request_id, filename, status, status_at,
              received_at, loaded_at, events)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1)
         ON CONFLICT (file_id) DO UPDATE SET
             company = coalesce(f.company, excluded.company),
             filename = coalesce(f.filename, excluded.filename),
             status = CASE WHEN excluded.status_at >= f.status_at
                           THEN excluded.status ELSE f.status END,
             status_at = greatest(f.status_at, excluded.status_at),
             received_at = least(f.received_at, excluded.received_at),
             loaded_at = least(f.loaded_at, excluded.loaded_at),
             events = f.events + 1",
        file_id,
        view.company,
        view.request_id,
        filename,
        status,
        view.occurred_at,
        received_at,
        loaded_at,
    )
    .execute(&mut *tx)
    .await?;
    let latency_ms = sqlx::query_scalar!(
        "UPDATE monitoring_files
         SET latency_ms = greatest(0, extract(epoch FROM loaded_at - received_at) * 1000)
         WHERE file_id = $1 AND latency_ms IS NULL
           AND received_at IS NOT NULL AND loaded_at IS NOT NULL
         RETURNING latency_ms",
        file_id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(latency_ms.flatten())
}
