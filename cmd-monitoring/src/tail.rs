//! Tails every event topic and writes one JSON log line per event.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

use etl_core::bus;
use etl_core::events::Envelope;
use etl_core::metrics::register;

#[derive(Clone)]
pub struct TailMetrics {
    events: IntCounterVec,
}

impl TailMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            events: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "monitoring_events_total",
                        "Events seen on the pipeline topics, by type.",
                    ),
                    &["event_type"],
                )
                .expect("valid counter"),
            ),
        }
    }
}

pub async fn run(consumer: Arc<StreamConsumer>, metrics: TailMetrics, shutdown: CancellationToken) {
    let (retry_base, retry_max) = (Duration::from_millis(200), Duration::from_secs(10));
    while let Some(message) =
        bus::next_record(&consumer, &shutdown, retry_base, retry_max, |_| {}).await
    {
        let payload = message.payload().unwrap_or_default();
        match Envelope::from_json(payload) {
            Ok(envelope) => {
                let event_type = envelope.event.type_name();
                metrics.events.with_label_values(&[event_type]).inc();
                let file_id = envelope.event.file_id().map(|f| f.to_string());
                // The payload parsed as an envelope, so it is that event's JSON already.
                let event = String::from_utf8_lossy(payload);
                tracing::info!(
                    event_type,
                    event_id = %envelope.event_id,
                    request_id = envelope.request_id.as_str(),
                    company = envelope.company.as_ref().map(|c| c.as_str()),
                    file_id,
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    %event,
                    "event"
                );
            }
            Err(e) => {
                metrics.events.with_label_values(&["unreadable"]).inc();
                let request_id = bus::headers_map(message.headers()).remove(bus::HEADER_REQUEST_ID);
                tracing::warn!(
                    request_id,
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    error = %e,
                    payload = %String::from_utf8_lossy(payload),
                    "unreadable record on an event topic"
                );
            }
        }
        // The log line is the whole effect; losing a commit only repeats it.
        if let Err(e) = consumer.commit_message(&message, CommitMode::Async) {
            tracing::debug!(error = %e, "offset commit failed");
        }
    }
}
