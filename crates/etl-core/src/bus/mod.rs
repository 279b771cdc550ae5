//! The Kafka side: topic names, topic creation, an idempotent event
//! publisher, and consumers that never commit on their own.

mod fault;
mod producer_health;
mod publisher;

pub use fault::{CONSUMER_FATAL_VAR, FaultPlan, Injector, PRODUCER_FATAL_VAR};
pub use publisher::{Delivered, EventPublisher, Pending};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntGaugeVec, Opts, Registry};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Env};
use crate::events::Event;
use crate::metrics::register;
use crate::shutdown::sleep_or_cancel;

pub const HEADER_EVENT_TYPE: &str = "event-type";
pub const HEADER_REQUEST_ID: &str = "request-id";

/// How the services reach the broker.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `KAFKA_BROKERS`: comma-separated `host:port` bootstrap list.
    pub brokers: String,
    /// `KAFKA_TOPIC_PREFIX`: prepended to every topic name (isolates tests
    /// and environments sharing a broker).
    pub topic_prefix: String,
    /// `KAFKA_TOPIC_PARTITIONS`: partitions for topics this service creates.
    pub partitions: i32,
    /// `KAFKA_REPLICATION_FACTOR`: replication for topics this service creates.
    pub replication_factor: i32,
    /// `KAFKA_PRODUCE_TIMEOUT_MS`: how long a publish may wait for the
    /// broker's acknowledgement before the caller sees an error.
    pub produce_timeout: Duration,
    /// `KAFKA_LINGER_MS`: how long the producer waits for more records to
    /// send with one before it sends a batch (librdkafka's `linger.ms`).
    pub linger: Duration,
    /// `KAFKA_LAG_INTERVAL_MS`: how often consumers refresh the
    /// `consumer_lag_records` gauge.
    pub lag_interval: Duration,
    /// `KAFKA_SESSION_TIMEOUT_MS`: how long the group waits for a consumer
    /// that stopped heartbeating (crashed) before giving its partitions to
    /// the others. A clean shutdown leaves the group at once.
    pub session_timeout: Duration,
    /// `KAFKA_MAX_POLL_INTERVAL_MS`: how long a consumer may go without
    /// polling before the group takes its partitions away. The processor
    /// polls while it waits to retry a file, so this bounds a stuck call,
    /// not an outage.
    pub max_poll_interval: Duration,
    /// `KAFKA_PRODUCER_MAX_REPLACEMENTS`: replacements in a row of a
    /// producer that librdkafka declared fatal, each going fatal again,
    /// after which liveness fails so that the pod is restarted.
    pub producer_max_replacements: u32,
    /// The test hooks [`PRODUCER_FATAL_VAR`] and [`CONSUMER_FATAL_VAR`];
    /// `None` in every real deployment.
    pub producer_fault: Option<FaultPlan>,
    pub consumer_fault: Option<FaultPlan>,
    /// `KAFKA_DEBUG`: librdkafka debug contexts (`cgrp,fetch`, `all`) to
    /// log at debug level under the `librdkafka` target (so also set
    /// `RUST_LOG=info,librdkafka=debug`); empty for none.
    pub debug: String,
}

fn fault_plan(env: &Env, var: &str) -> Result<Option<FaultPlan>, ConfigError> {
    env.raw(var)
        .map(|plan| FaultPlan::parse(var, &plan))
        .transpose()
}

fn consumer_fault_plan(env: &Env) -> Result<Option<FaultPlan>, ConfigError> {
    let plan = fault_plan(env, CONSUMER_FATAL_VAR)?;
    if plan.is_some_and(|p| p.times != 1) {
        return Err(ConfigError {
            var: CONSUMER_FATAL_VAR.into(),
            problem: "times does not apply: a fatal consumer is not replaced".into(),
        });
    }
    Ok(plan)
}

impl KafkaSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let partitions = env.parse("KAFKA_TOPIC_PARTITIONS", 3)?;
        if partitions < 1 {
            return Err(ConfigError {
                var: "KAFKA_TOPIC_PARTITIONS".into(),
                problem: "must be at least 1".into(),
            });
        }
        Ok(Self {
            brokers: env.non_empty("KAFKA_BROKERS", "127.0.0.1:19092")?,
            topic_prefix: env.string("KAFKA_TOPIC_PREFIX", ""),
            partitions,
            replication_factor: env.parse("KAFKA_REPLICATION_FACTOR", 1)?,
            produce_timeout: env.millis("KAFKA_PRODUCE_TIMEOUT_MS", 10_000)?,
            linger: env.millis("KAFKA_LINGER_MS", 20)?,
            lag_interval: env.millis("KAFKA_LAG_INTERVAL_MS", 5_000)?,
            session_timeout: env.millis("KAFKA_SESSION_TIMEOUT_MS", 45_000)?,
            max_poll_interval: env.millis("KAFKA_MAX_POLL_INTERVAL_MS", 300_000)?,
            producer_max_replacements: env.parse("KAFKA_PRODUCER_MAX_REPLACEMENTS", 5)?,
            producer_fault: fault_plan(env, PRODUCER_FATAL_VAR)?,
            consumer_fault: consumer_fault_plan(env)?,
            debug: env.string("KAFKA_DEBUG", ""),
        })
    }

    /// What puts a consumer of these settings into the fatal state in a
    /// test: nothing, unless [`CONSUMER_FATAL_VAR`] is set.
    pub fn consumer_fault(&self) -> Injector {
        Injector::new(self.consumer_fault, CONSUMER_FATAL_VAR)
    }

    pub fn topics(&self) -> Topics {
        Topics::with_prefix(&self.topic_prefix)
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        if self.debug.is_empty() {
            // Quiet librdkafka's own logging; errors reach us as results.
            c.set("log_level", "3");
        } else {
            c.set("debug", &self.debug).set("log_level", "7");
        }
        c
    }
}

/// The topic names of the contract, with the configured prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub file_extract_success: String,
    pub file_extract_error: String,
    pub validation_error: String,
    pub file_loaded: String,
    pub dead_letter: String,
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            file_extract_success: format!("{prefix}etl.file-extract-success"),
            file_extract_error: format!("{prefix}etl.file-extract-error"),
            validation_error: format!("{prefix}etl.validation-error"),
            file_loaded: format!("{prefix}etl.file-loaded"),
            dead_letter: format!("{prefix}etl.dead-letter"),
        }
    }

    pub fn for_event(&self, event: &Event) -> &str {
        match event {
            Event::FileExtractSuccess(_) => &self.file_extract_success,
            Event::FileExtractError(_) => &self.file_extract_error,
            Event::ValidationError(_) => &self.validation_error,
            Event::FileLoaded(_) => &self.file_loaded,
            Event::DeadLetter(_) => &self.dead_letter,
        }
    }

    pub fn all(&self) -> [&str; 5] {
        [
            &self.file_extract_success,
            &self.file_extract_error,
            &self.validation_error,
            &self.file_loaded,
            &self.dead_letter,
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("kafka client setup failed: {0}")]
    Setup(#[source] KafkaError),
    #[error("creating topic {topic} failed: {error}")]
    CreateTopic { topic: String, error: String },
    #[error("publishing to {topic} failed: {source}")]
    Publish {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("kafka metadata request failed: {0}")]
    Metadata(String),
    #[error("{0}")]
    Unwritable(String),
    /// The producer cannot deliver: fatal, or its latest publishes failed.
    #[error("{0}")]
    Unhealthy(String),
}

/// Creates the given topics if they do not exist yet.
pub async fn ensure_topics(settings: &KafkaSettings, topics: &[&str]) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> =
        settings.client_config().create().map_err(BusError::Setup)?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                settings.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e| BusError::CreateTopic {
            topic: topics.join(","),
            error: e.to_string(),
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(BusError::CreateTopic {
                    topic,
                    error: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Creates every topic of the contract if missing, now or, while the broker
/// is down, in the background (see [`crate::provision`]).
pub async fn provision_topics(settings: &KafkaSettings) {
    let settings = settings.clone();
    crate::provision("topics", move || {
        let settings = settings.clone();
        async move {
            ensure_topics(&settings, &settings.topics().all())
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
}

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

/// `consumer_lag_records{topic,partition}`: for every partition assigned to
/// a consumer, the records its group has not committed yet (high watermark
/// minus committed offset). Measured on a timer rather than per record so
/// that it keeps moving while the consumer is stuck, which is when it matters.
pub struct ConsumerLag {
    gauge: IntGaugeVec,
    waiting: WaitingRecords,
}

/// The records of the assigned partitions not committed yet, as last
/// measured by [`ConsumerLag`], and since when there have been some.
#[derive(Clone, Default)]
pub struct WaitingRecords(Arc<Mutex<Option<(i64, Instant)>>>);

impl WaitingRecords {
    /// `(records, waiting since)`; `None` while nothing waits.
    pub fn get(&self) -> Option<(i64, Instant)> {
        *self.0.lock().expect("not poisoned")
    }

    fn set(&self, records: i64) {
        let mut waiting = self.0.lock().expect("not poisoned");
        *waiting = match *waiting {
            _ if records <= 0 => None,
            Some((_, since)) => Some((records, since)),
            None => Some((records, Instant::now())),
        };
    }
}

impl ConsumerLag {
    pub fn new(registry: &Registry) -> Self {
        let gauge = IntGaugeVec::new(
            Opts::new(
                "consumer_lag_records",
                "Records of the assigned partitions not yet committed by this consumer group.",
            ),
            &["topic", "partition"],
        )
        .expect("valid gauge");
        Self {
            gauge: register(registry, gauge),
            waiting: WaitingRecords::default(),
        }
    }

    pub fn waiting(&self) -> WaitingRecords {
        self.waiting.clone()
    }

    /// Refreshes the gauge every `every` until `shutdown`.
    pub fn spawn(
        self,
        consumer: Arc<StreamConsumer>,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        // Not tied to `every`: a short interval must not fail slow brokers.
        let timeout = Duration::from_secs(5);
        tokio::spawn(async move {
            loop {
                let c = consumer.clone();
                match tokio::task::spawn_blocking(move || partition_lags(&c, timeout)).await {
                    Ok(Ok(lags)) => {
                        // Partitions revoked since the last round disappear.
                        self.gauge.reset();
                        self.waiting.set(lags.iter().map(|(_, _, lag)| lag).sum());
                        for (topic, partition, lag) in lags {
                            self.gauge
                                .with_label_values(&[&topic, &partition.to_string()])
                                .set(lag);
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "consumer lag not measured this round")
                    }
                    Err(e) => tracing::debug!(error = %e, "consumer lag task failed"),
                }
                if sleep_or_cancel(every, &shutdown).await {
                    return;
                }
            }
        });
    }
}

fn partition_lags(
    consumer: &StreamConsumer,
    timeout: Duration,
) -> Result<Vec<(String, i32, i64)>, KafkaError> {
    let assignment = consumer.assignment()?;
    if assignment.count() == 0 {
        return Ok(Vec::new());
    }
    uncommitted(consumer, assignment, timeout)
}

/// For each of `partitions`, the records its consumer group (the one
/// `consumer` was made with) has not committed yet: high watermark minus
/// committed offset.
pub fn uncommitted<K: Consumer>(
    consumer: &K,
    partitions: TopicPartitionList,
    timeout: Duration,
) -> Result<Vec<(String, i32, i64)>, KafkaError> {
    let committed = consumer.committed_offsets(partitions, timeout)?;
    committed
        .elements()
        .iter()
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(p.topic(), p.partition(), timeout)?;
            // Nothing committed yet: everything still on the partition is behind.
            let next = match p.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            Ok((p.topic().to_owned(), p.partition(), (high - next).max(0)))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_the_contract_and_take_a_prefix() {
        let t = Topics::with_prefix("");
        assert_eq!(
            t.all(),
            [
                "etl.file-extract-success",
                "etl.file-extract-error",
                "etl.validation-error",
                "etl.file-loaded",
                "etl.dead-letter"
            ]
        );
        assert_eq!(
            Topics::with_prefix("it-1.").file_loaded,
            "it-1.etl.file-loaded"
        );
    }
}
