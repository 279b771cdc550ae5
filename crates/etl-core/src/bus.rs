//! The Kafka side: topic names, topic creation, an idempotent event
//! publisher, and consumers that never commit on their own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Env};
use crate::events::{Envelope, Event};
use crate::metrics::{DependencyTimer, register};
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
    /// `KAFKA_DEBUG`: librdkafka debug contexts (`cgrp,fetch`, `all`) to
    /// log at debug level under the `librdkafka` target (so also set
    /// `RUST_LOG=info,librdkafka=debug`); empty for none.
    pub debug: String,
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
            lag_interval: env.millis("KAFKA_LAG_INTERVAL_MS", 5_000)?,
            session_timeout: env.millis("KAFKA_SESSION_TIMEOUT_MS", 45_000)?,
            max_poll_interval: env.millis("KAFKA_MAX_POLL_INTERVAL_MS", 300_000)?,
            debug: env.string("KAFKA_DEBUG", ""),
        })
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

/// Readiness check of a consumer: the broker answers a metadata request.
pub async fn consumer_ready(
    consumer: Arc<StreamConsumer>,
    timeout: Duration,
) -> Result<(), String> {
    metadata_ok(move || consumer.fetch_metadata(None, timeout).map(|_| ()))
        .await
        .map_err(|e| e.to_string())
}

/// Where a published event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// An event the producer holds until the broker acknowledges it.
#[must_use = "an event is only published once delivered() says so"]
pub struct Pending {
    delivery: DeliveryFuture,
    topic: String,
    event_type: &'static str,
    started: Instant,
    timer: DependencyTimer,
    published: IntCounterVec,
}

impl Pending {
    /// Waits for the broker's acknowledgement from all in-sync replicas.
    pub async fn delivered(self) -> Result<Delivered, BusError> {
        let result = match self.delivery.await {
            Ok(Ok(d)) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
            }),
            Ok(Err((source, _))) => Err(source),
            Err(_canceled) => Err(KafkaError::Canceled),
        };
        self.timer
            .observe("kafka", "produce", self.started, result.is_ok());
        match result {
            Ok(delivered) => {
                self.published.with_label_values(&[self.event_type]).inc();
                Ok(delivered)
            }
            Err(source) => Err(BusError::Publish {
                topic: self.topic,
                source,
            }),
        }
    }
}

/// Publishes envelopes to their topic, keyed by company, and waits for the
/// broker's acknowledgement from all in-sync replicas.
#[derive(Clone)]
pub struct EventPublisher {
    producer: FutureProducer,
    min_isr: Arc<MinInsyncReplicas>,
    topics: Topics,
    timeout: Duration,
    timer: DependencyTimer,
    published: IntCounterVec,
}

impl EventPublisher {
    /// Registers `events_published_total` in `registry`; publish latency
    /// goes to `timer`.
    pub fn new(
        settings: &KafkaSettings,
        registry: &Registry,
        timer: DependencyTimer,
    ) -> Result<Self, BusError> {
        let producer: FutureProducer = settings
            .client_config()
            // Idempotence gives ordered, de-duplicated retries per partition;
            // it implies acks=all, stated anyway for the reader.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                settings.produce_timeout.as_millis().to_string(),
            )
            .create()
            .map_err(BusError::Setup)?;
        let min_isr = Arc::new(MinInsyncReplicas {
            admin: settings.client_config().create().map_err(BusError::Setup)?,
            known: Mutex::new(HashMap::new()),
        });
        Ok(Self {
            producer,
            min_isr,
            topics: settings.topics(),
            timeout: settings.produce_timeout,
            timer,
            published: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "events_published_total",
                        "Events acknowledged by the broker, by type.",
                    ),
                    &["event_type"],
                )
                .expect("valid counter"),
            ),
        })
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    pub async fn publish(&self, envelope: &Envelope) -> Result<Delivered, BusError> {
        self.enqueue(envelope).await?.delivered().await
    }

    /// Hands the event to the producer and returns without waiting for the
    /// broker: events enqueued one after another keep that order on their
    /// partition. Waits only while the producer's queue is full.
    pub async fn enqueue(&self, envelope: &Envelope) -> Result<Pending, BusError> {
        let topic = self.topics.for_event(&envelope.event);
        let payload = envelope.to_json();
        let key = envelope.company.as_ref().map(|c| c.as_str()).unwrap_or("");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_EVENT_TYPE,
                value: Some(envelope.event.type_name()),
            })
            .insert(Header {
                key: HEADER_REQUEST_ID,
                value: Some(envelope.request_id.as_str()),
            });
        let mut record = FutureRecord::to(topic)
            .key(key)
            .payload(&payload)
            .headers(headers);
        let started = Instant::now();
        let failed = |source| BusError::Publish {
            topic: topic.to_owned(),
            source,
        };
        let delivery = loop {
            match self.producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), again))
                    if started.elapsed() < self.timeout =>
                {
                    record = again;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => {
                    self.timer.observe("kafka", "produce", started, false);
                    return Err(failed(e));
                }
            }
        };
        Ok(Pending {
            delivery,
            topic: topic.to_owned(),
            event_type: envelope.event.type_name(),
            started,
            timer: self.timer.clone(),
            published: self.published.clone(),
        })
    }

    /// Publishes a record as it is (not an envelope of ours): the
    /// dead-letter re-drive sends an original record back to its topic.
    pub async fn publish_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &BTreeMap<String, String>,
    ) -> Result<Delivered, BusError> {
        let mut owned = OwnedHeaders::new();
        for (k, v) in headers {
            owned = owned.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut record = FutureRecord::to(topic).payload(payload).headers(owned);
        if let Some(key) = key {
            record = record.key(key);
        }
        let started = Instant::now();
        let result = self.producer.send(record, self.timeout).await;
        self.timer
            .observe("kafka", "produce", started, result.is_ok());
        match result {
            Ok(d) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
            }),
            Err((source, _)) => Err(BusError::Publish {
                topic: topic.to_owned(),
                source,
            }),
        }
    }

    /// Checks that the cluster takes this publisher's writes now: every
    /// partition of the contract's topics has a leader that answers, and at
    /// least `min.insync.replicas` replicas in sync. A broker that answers
    /// is not enough: with two of three brokers down the third still
    /// answers, with the metadata it had when the controllers lost their
    /// quorum, and no `acks=all` write succeeds.
    pub async fn check(&self, timeout: Duration) -> Result<(), BusError> {
        let topics: Vec<String> = self.topics.all().map(str::to_owned).to_vec();
        let producer = self.producer.clone();
        let described = tokio::task::spawn_blocking(move || {
            topics
                .into_iter()
                .map(|topic| {
                    let states = describe_partitions(producer.client(), &topic, timeout)?;
                    Ok((topic, states))
                })
                .collect::<Result<Vec<_>, BusError>>()
        })
        .await
        .map_err(|e| BusError::Metadata(e.to_string()))??;
        for (topic, states) in described {
            let min_isr = self.min_isr.of(&topic, timeout).await?;
            writable(&topic, &states, min_isr).map_err(BusError::Unwritable)?;
        }
        Ok(())
    }

    /// Waits until queued messages are delivered (used at shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "producer flush did not complete");
        }
    }
}

/// Each topic's `min.insync.replicas`, asked once per topic (a topic
/// setting that hardly ever changes).
struct MinInsyncReplicas {
    admin: AdminClient<DefaultClientContext>,
    known: Mutex<HashMap<String, usize>>,
}

impl MinInsyncReplicas {
    async fn of(&self, topic: &str, timeout: Duration) -> Result<usize, BusError> {
        if let Some(known) = self.known.lock().expect("not poisoned").get(topic) {
            return Ok(*known);
        }
        let options = AdminOptions::new().request_timeout(Some(timeout));
        let failed = |e: String| BusError::Metadata(format!("{topic}: {e}"));
        let described = self
            .admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &options)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let resource = described
            .into_iter()
            .next()
            .ok_or_else(|| failed("no configuration described".into()))?
            .map_err(|code| failed(code.to_string()))?;
        let min_isr = resource
            .get("min.insync.replicas")
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| failed("min.insync.replicas not described".into()))?;
        self.known
            .lock()
            .expect("not poisoned")
            .insert(topic.to_owned(), min_isr);
        Ok(min_isr)
    }
}

/// One partition of a metadata answer: id, leader, replicas, in-sync replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionState {
    partition: i32,
    leader: i32,
    replicas: usize,
    in_sync: usize,
}

/// The partitions of `topic`, each leader asked for its offsets (a
/// metadata answer can name a leader that is long gone), or what is wrong.
fn describe_partitions<C: rdkafka::client::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<PartitionState>, BusError> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| BusError::Metadata(e.to_string()))?;
    let unwritable = |why: String| BusError::Unwritable(format!("{topic}: {why}"));
    let described = metadata
        .topics()
        .first()
        .ok_or_else(|| unwritable("the broker described no such topic".into()))?;
    if let Some(code) = described.error() {
        return Err(unwritable(RDKafkaErrorCode::from(code).to_string()));
    }
    let states: Vec<PartitionState> = described
        .partitions()
        .iter()
        .map(|p| PartitionState {
            partition: p.id(),
            leader: p.leader(),
            replicas: p.replicas().len(),
            in_sync: p.isr().len(),
        })
        .collect();
    for p in states.iter().filter(|p| p.leader >= 0) {
        if let Err(e) = client.fetch_watermarks(topic, p.partition, timeout / 2) {
            return Err(unwritable(format!(
                "partition {} has broker {} for leader, which does not answer ({e})",
                p.partition, p.leader
            )));
        }
    }
    Ok(states)
}

/// `Ok` when every partition of `topic` has a leader and at least
/// `min_isr` replicas in sync; else a sentence saying which does not.
fn writable(topic: &str, partitions: &[PartitionState], min_isr: usize) -> Result<(), String> {
    if partitions.is_empty() {
        return Err(format!("{topic} has no partitions"));
    }
    for p in partitions {
        if p.leader < 0 {
            return Err(format!("{topic} partition {} has no leader", p.partition));
        }
        if p.in_sync < min_isr {
            return Err(format!(
                "{topic} partition {}: {} of {} replicas in sync, min.insync.replicas is {min_isr}: \
                 the cluster refuses acks=all writes until a broker returns",
                p.partition, p.in_sync, p.replicas
            ));
        }
    }
    Ok(())
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
        }
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
    let committed = consumer.committed_offsets(assignment, timeout)?;
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

    fn partition(partition: i32, leader: i32, in_sync: usize) -> PartitionState {
        PartitionState {
            partition,
            leader,
            replicas: 3,
            in_sync,
        }
    }

    #[test]
    fn a_topic_is_writable_only_with_a_leader_and_enough_replicas_in_sync() {
        let healthy = [partition(0, 1, 3), partition(1, 2, 2), partition(2, 3, 3)];
        assert_eq!(writable("t", &healthy, 2), Ok(()));

        let two_down = [partition(0, 1, 1), partition(1, 1, 1), partition(2, 1, 1)];
        let refused = writable("t", &two_down, 2).unwrap_err();
        assert!(
            refused.contains("t partition 0: 1 of 3 replicas in sync, min.insync.replicas is 2"),
            "{refused}"
        );
        assert_eq!(writable("t", &two_down, 1), Ok(()));

        let leaderless = [partition(0, 1, 2), partition(1, -1, 1)];
        assert_eq!(
            writable("t", &leaderless, 1),
            Err("t partition 1 has no leader".into())
        );
        assert_eq!(writable("t", &[], 1), Err("t has no partitions".into()));
    }

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
