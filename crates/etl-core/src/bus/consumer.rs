//! Consumers that never commit on their own, their health checks, and the
//! receive loop's backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use tokio_util::sync::CancellationToken;

use super::{BusError, KafkaSettings};
use crate::shutdown::sleep_or_cancel;

/// Liveness of a consumer: not in librdkafka's fatal state, which no
/// consumer leaves (without static group membership, which the services do
/// not use, librdkafka has no fatal consumer error; this guards the day it
/// does).
pub fn consumer_alive(consumer: &StreamConsumer) -> Result<(), String> {
    match consumer.client().fatal_error() {
        Some((code, reason)) => Err(format!(
            "the kafka consumer is in librdkafka's fatal state ({code}): {reason}"
        )),
        None => Ok(()),
    }
}

/// Call once the consumer's work is done, on shutdown. A consumer in the
/// fatal state never finishes closing (dropping it waits for ever in
/// librdkafka), so it is leaked instead, for the exit to reclaim; a healthy
/// one is dropped as usual when its last handle goes.
pub fn release_consumer(consumer: Arc<StreamConsumer>) {
    if let Err(why) = consumer_alive(&consumer) {
        tracing::warn!("not closing the kafka consumer: {why}");
        std::mem::forget(consumer);
    }
}

/// Readiness check of a consumer: the broker answers a metadata request.
pub async fn consumer_ready(
    consumer: Arc<StreamConsumer>,
    timeout: Duration,
) -> Result<(), String> {
    metadata_ok(move || consumer.fetch_metadata(None, timeout).map(|_| ()))
        .await
        .map_err(|e| e.to_string())
}

/// Runs a blocking librdkafka metadata call off the async runtime.
pub async fn metadata_ok<F>(call: F) -> Result<(), BusError>
where
    F: FnOnce() -> Result<(), KafkaError> + Send + 'static,
{
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| BusError::Metadata(e.to_string()))?
        .map_err(|e| BusError::Metadata(e.to_string()))
}

/// How often a consumer asks for the metadata of its topics.
const TOPIC_REFRESH_MS: &str = "10000";

/// A consumer of `topics` in `group_id` that starts from the earliest offset
/// of a new group and never commits by itself: callers commit after their
/// work is durable.
pub fn consumer(
    settings: &KafkaSettings,
    group_id: &str,
    topics: &[&str],
) -> Result<StreamConsumer, BusError> {
    let consumer: StreamConsumer = settings
        .client_config()
        .set("group.id", group_id)
        // The classic protocol keeps the session timeout with the client
        // (KAFKA_SESSION_TIMEOUT_MS), works with 3.x brokers too, and is
        // what the rebalance and crash tests prove (docs/local-stack.md).
        .set("group.protocol", "classic")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // A subscribed topic the broker does not know yet (created a moment
        // ago, its metadata still on its way to this broker) is looked for
        // again only at this interval: librdkafka's 5 minutes left a fresh
        // consumer deaf for that long.
        .set("topic.metadata.refresh.interval.ms", TOPIC_REFRESH_MS)
        .set(
            "session.timeout.ms",
            settings.session_timeout.as_millis().to_string(),
        )
        .set(
            "max.poll.interval.ms",
            settings.max_poll_interval.as_millis().to_string(),
        )
        .create()
        .map_err(BusError::Setup)?;
    consumer.subscribe(topics).map_err(BusError::Setup)?;
    Ok(consumer)
}

/// Waits between failed receives of a consumer: librdkafka repairs a lost
/// connection by itself, so there is no point polling a failing consumer in
/// a tight loop; the wait grows with each failure in a row.
pub struct ReceiveBackoff {
    failures: u32,
    base: Duration,
    max: Duration,
}

impl ReceiveBackoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            failures: 0,
            base,
            max,
        }
    }

    /// A record came: the next failure waits the base delay again.
    pub fn received(&mut self) {
        self.failures = 0;
    }

    /// Logs `error` and waits the next delay; `true` when `shutdown` came
    /// first.
    pub async fn failed(&mut self, error: &KafkaError, shutdown: &CancellationToken) -> bool {
        let delay = crate::backoff_delay(self.failures, self.base, self.max);
        self.failures += 1;
        tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "kafka receive failed");
        sleep_or_cancel(delay, shutdown).await
    }
}

/// The next record of `consumer`, or `None` once `shutdown` is cancelled.
/// Receive errors are passed to `on_error` and waited out with
/// [`ReceiveBackoff`].
pub async fn next_record<'c>(
    consumer: &'c StreamConsumer,
    shutdown: &CancellationToken,
    retry_base: Duration,
    retry_max: Duration,
    mut on_error: impl FnMut(&KafkaError),
) -> Option<BorrowedMessage<'c>> {
    let mut backoff = ReceiveBackoff::new(retry_base, retry_max);
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => return None,
            m = consumer.recv() => m,
        };
        match received {
            Ok(message) => return Some(message),
            Err(e) => {
                on_error(&e);
                if backoff.failed(&e, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// The headers of a record as text, for logs and dead letters.
pub fn headers_map<H: Headers>(headers: Option<&H>) -> BTreeMap<String, String> {
    headers
        .map(|h| {
            h.iter()
                .map(|hd| {
                    let v = hd.value.map(String::from_utf8_lossy).unwrap_or_default();
                    (hd.key.to_owned(), v.into_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}
