//! Tails every event topic: records each batch in Postgres, then counts it,
//! streams it to live subscribers and commits the offsets. An offset is
//! committed only after its event is stored, so a crash repeats a batch
//! (which the store ignores) and never loses one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use etl_core::bus;
use etl_core::events::Envelope;
use etl_core::metrics::register;
use etl_core::shutdown::sleep_or_cancel;

use crate::store::{EventView, Recorded, SeenEvent, Store};

/// Records read before they are stored together.
const MAX_BATCH: usize = 500;

#[derive(Clone)]
pub struct TailMetrics {
    events: IntCounterVec,
    latency: Histogram,
}

impl TailMetrics {
    pub fn new(registry: &Registry) -> Self {
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "pipeline_end_to_end_latency_seconds",
                "From FileExtractSuccess (the api stored and announced the file) to FileLoaded, per file.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
        )
        .expect("valid histogram");
        Self {
            events: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "monitoring_events_total",
                        "Events seen on the pipeline topics, by type, each counted once.",
                    ),
                    &["event_type"],
                )
                .expect("valid counter"),
            ),
            latency: register(registry, latency),
        }
    }
}

/// Where live subscribers (`/events/stream`) get events from.
pub type Feed = broadcast::Sender<Arc<EventView>>;

pub fn feed() -> Feed {
    broadcast::channel(1_024).0
}

pub struct Tail {
    pub consumer: Arc<StreamConsumer>,
    pub store: Store,
    pub metrics: TailMetrics,
    pub feed: Feed,
    pub retry_base: Duration,
    pub retry_max: Duration,
}

/// Records read together, with the offsets to commit once they are stored.
struct Batch {
    events: Vec<SeenEvent>,
    /// One `consume` span per event, ended when the batch is stored.
    spans: Vec<tracing::Span>,
    offsets: TopicPartitionList,
}

impl Tail {
    pub async fn run(self, shutdown: CancellationToken) {
        while let Some(batch) = self.next_batch(&shutdown).await {
            if !self.store_with_retry(&batch.events, &shutdown).await {
                return;
            }
            drop(batch.spans);
            if let Err(e) = self.consumer.commit(&batch.offsets, CommitMode::Async) {
                // Stored already: a repeat after a restart is ignored by the store.
                tracing::debug!(error = %e, "offset commit failed");
            }
        }
    }

    /// Waits for one record, then takes what else is already fetched.
    async fn next_batch(&self, shutdown: &CancellationToken) -> Option<Batch> {
        let mut batch = Vec::new();
        let mut spans = Vec::new();
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let first = bus::next_record(
            &self.consumer,
            shutdown,
            self.retry_base,
            self.retry_max,
            |_| {},
        )
        .await?;
        let mut message = Some(first);
        while let Some(m) = message.take() {
            next.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
            if let Some((seen, span)) = self.read(&m) {
                batch.push(seen);
                spans.push(span);
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            message = match self.consumer.recv().now_or_never() {
                Some(Ok(m)) => Some(m),
                _ => None,
            };
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            offsets
                .add_partition_offset(&topic, partition, Offset::Offset(offset))
                .expect("a valid offset");
        }
        Some(Batch {
            events: batch,
            spans,
            offsets,
        })
    }

    /// The record's event and its `consume` span, a child of the span
    /// that published it.
    fn read(&self, message: &impl Message) -> Option<(SeenEvent, tracing::Span)> {
        let payload = message.payload().unwrap_or_default();
        let headers = bus::headers_map(message.headers());
        let trace_headers = headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        match Envelope::from_json(payload) {
            Ok(envelope) => {
                let span = etl_core::consumer_span!(
                    "consume",
                    message,
                    event_type = envelope.event.type_name(),
                );
                let trace_id = etl_core::traces::continue_from(&span, trace_headers);
                let seen = SeenEvent {
                    envelope,
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                    trace_id,
                };
                Some((seen, span))
            }
            Err(e) => {
                self.metrics.events.with_label_values(&["unreadable"]).inc();
                let request_id = headers.get(bus::HEADER_REQUEST_ID);
                tracing::warn!(
                    request_id,
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    error = %e,
                    payload = %String::from_utf8_lossy(payload),
                    "unreadable record on an event topic"
                );
                None
            }
        }
    }

    /// Stores the batch, retrying while Postgres is away; `false` if shut
    /// down first (the batch is then read again by the next run).
    async fn store_with_retry(&self, batch: &[SeenEvent], shutdown: &CancellationToken) -> bool {
        for attempt in 0u32.. {
            match self.store.record(batch).await {
                Ok(recorded) => {
                    self.announce(recorded);
                    return true;
                }
                Err(e) => {
                    let delay = etl_core::backoff_delay(attempt, self.retry_base, self.retry_max);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64,
                        "could not record events; retrying");
                    if sleep_or_cancel(delay, shutdown).await {
                        return false;
                    }
                }
            }
        }
        unreachable!("more attempts than a u32 counts")
    }

    /// Counts, logs and streams the events seen for the first time.
    fn announce(&self, recorded: Recorded) {
        for event in recorded.new_events {
            self.metrics
                .events
                .with_label_values(&[&event.event_type])
                .inc();
            tracing::info!(
                event_type = event.event_type,
                event_id = %event.event_id,
                request_id = event.request_id,
                company = event.company,
                file_id = event.file_id.map(|f| f.to_string()),
                topic = event.topic,
                partition = event.partition,
                offset = event.offset,
                latency_ms = event.latency_ms,
                "event"
            );
            // No subscribers is normal.
            let _ = self.feed.send(Arc::new(event));
        }
        for ms in recorded.latencies_ms {
            self.metrics.latency.observe(ms / 1_000.0);
        }
    }
}
