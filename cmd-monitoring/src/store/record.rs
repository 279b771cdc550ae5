//! Recording events: each seen once (by `event_id`), folded into its
//! file's row.

use serde_json::Value;
use uuid::Uuid;

use etl_core::events::{Envelope, Event};

use super::{EventView, Store, service_of};

/// One event as read from a topic, ready to be recorded.
#[derive(Debug, Clone)]
pub struct SeenEvent {
    pub envelope: Envelope,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Of its record's `traceparent` header.
    pub trace_id: Option<String>,
}

/// What recording a batch changed: only events seen for the first time.
#[derive(Debug, Default)]
pub struct Recorded {
    pub new_events: Vec<EventView>,
    /// End-to-end latencies that became known with this batch, once per file.
    pub latencies_ms: Vec<f64>,
}

impl Store {
    /// Records a batch in one transaction. Events already recorded (a
    /// redelivery, a re-emitted outcome) are skipped and not reported.
    pub async fn record(&self, batch: &[SeenEvent]) -> Result<Recorded, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut recorded = Recorded::default();
        for seen in batch {
            let mut view = seen.view();
            let inserted = sqlx::query!(
                r#"INSERT INTO monitoring_events
                       (event_id, event_type, occurred_at, request_id, company, dataset,
                        file_id, trace_id, topic, "partition", "offset", details)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                   ON CONFLICT (event_id) DO NOTHING"#,
                view.event_id,
                view.event_type,
                view.occurred_at,
                view.request_id,
                view.company,
                view.dataset,
                view.file_id,
                view.trace_id,
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
            dataset: e.dataset.as_ref().map(|d| d.as_str().to_owned()),
            file_id: e.event.file_id().map(|f| f.as_uuid()),
            trace_id: self.trace_id.clone(),
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            details,
            latency_ms: None,
        }
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
    // Events of different topics arrive in any order: the latest outcome
    // decides the status, the first receipt and first load the latency.
    // An announcement never hides an outcome: the same content posted
    // again is announced again and skipped by the processor, with no
    // outcome of its own (a replay's outcome comes, and decides by time).
    sqlx::query!(
        "INSERT INTO monitoring_files AS f
             (file_id, company, dataset, trace_id, request_id, filename, status,
              status_at, received_at, loaded_at, events)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1)
         ON CONFLICT (file_id) DO UPDATE SET
             company = coalesce(f.company, excluded.company),
             dataset = coalesce(f.dataset, excluded.dataset),
             trace_id = coalesce(f.trace_id, excluded.trace_id),
             filename = coalesce(f.filename, excluded.filename),
             status = CASE
                 WHEN excluded.status = 'received' THEN f.status
                 WHEN f.status = 'received' OR excluded.status_at >= f.status_at
                     THEN excluded.status
                 ELSE f.status END,
             status_at = CASE
                 WHEN excluded.status = 'received' THEN f.status_at
                 WHEN f.status = 'received' THEN excluded.status_at
                 ELSE greatest(f.status_at, excluded.status_at) END,
             received_at = least(f.received_at, excluded.received_at),
             loaded_at = least(f.loaded_at, excluded.loaded_at),
             events = f.events + 1",
        file_id,
        view.company,
        view.dataset,
        view.trace_id,
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
