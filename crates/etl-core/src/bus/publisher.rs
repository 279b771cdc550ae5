//! The idempotent event publisher: one producer, replaced when librdkafka
//! declares it fatal, and its readiness: the cluster takes writes and the
//! producer delivers them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio::sync::Notify;

use super::fault::{Injector, PRODUCER_FATAL_VAR};
use super::producer_health::ProducerHealth;
use super::{BusError, HEADER_EVENT_TYPE, HEADER_REQUEST_ID, KafkaSettings, Topics};
use crate::events::Envelope;
use crate::metrics::{DependencyTimer, register};

/// How often the recovery task looks at the producer when librdkafka has
/// not called to say it is fatal.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

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
    shared: Arc<Shared>,
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
            // The producer was replaced with the event in its queue.
            Err(_canceled) => Err(KafkaError::Canceled),
        };
        let shared = &self.shared;
        shared
            .timer
            .observe("kafka", "produce", self.started, result.is_ok());
        match result {
            Ok(delivered) => {
                shared.published.with_label_values(&[self.event_type]).inc();
                shared.delivered();
                Ok(delivered)
            }
            Err(source) => Err(shared.failed(&self.topic, source)),
        }
    }
}

type Producer0 = FutureProducer<FatalWatch>;

/// Wakes the recovery task on every global error librdkafka reports (it
/// reports the fatal state as one, under the underlying error's code), and
/// logs them as librdkafka's default context does.
#[derive(Clone)]
struct FatalWatch {
    wake: Arc<Notify>,
}

impl ClientContext for FatalWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}");
        self.wake.notify_one();
    }
}

/// Publishes envelopes to their topic, keyed by company, and waits for the
/// broker's acknowledgement from all in-sync replicas. A producer that
/// librdkafka declares fatal (it then refuses every message for good) is
/// replaced within a second: what it held fails, and callers publish it
/// again as after any failure.
#[derive(Clone)]
pub struct EventPublisher {
    shared: Arc<Shared>,
}

struct Shared {
    producer: RwLock<Producer0>,
    settings: KafkaSettings,
    wake: Arc<Notify>,
    health: Mutex<ProducerHealth>,
    fault: Injector,
    min_isr: MinInsyncReplicas,
    topics: Topics,
    timer: DependencyTimer,
    published: IntCounterVec,
    replacements: IntCounter,
}

impl EventPublisher {
    /// Registers `events_published_total` and
    /// `kafka_producer_replacements_total` in `registry`; publish latency
    /// goes to `timer`. Starts the recovery task on the current runtime.
    pub fn new(
        settings: &KafkaSettings,
        registry: &Registry,
        timer: DependencyTimer,
    ) -> Result<Self, BusError> {
        let wake = Arc::new(Notify::new());
        let producer = build_producer(settings, &wake)?;
        let shared = Arc::new(Shared {
            producer: RwLock::new(producer),
            settings: settings.clone(),
            wake: wake.clone(),
            health: Mutex::new(ProducerHealth::new()),
            fault: Injector::new(settings.producer_fault, PRODUCER_FATAL_VAR),
            min_isr: MinInsyncReplicas {
                admin: settings.client_config().create().map_err(BusError::Setup)?,
                known: Mutex::new(HashMap::new()),
            },
            topics: settings.topics(),
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
            replacements: register(
                registry,
                IntCounter::new(
                    "kafka_producer_replacements_total",
                    "Producers replaced after librdkafka declared them fatal.",
                )
                .expect("valid counter"),
            ),
        });
        tokio::spawn(recover(Arc::downgrade(&shared), wake));
        Ok(Self { shared })
    }

    pub fn topics(&self) -> &Topics {
        &self.shared.topics
    }

    pub async fn publish(&self, envelope: &Envelope) -> Result<Delivered, BusError> {
        self.enqueue(envelope).await?.delivered().await
    }

    /// Hands the event to the producer and returns without waiting for the
    /// broker: events enqueued one after another keep that order on their
    /// partition. Waits only while the producer's queue is full.
    pub async fn enqueue(&self, envelope: &Envelope) -> Result<Pending, BusError> {
        let shared = &self.shared;
        let topic = shared.topics.for_event(&envelope.event);
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
        let delivery = loop {
            // Asked each time: a replacement made meanwhile takes the event.
            let sent = shared.current().send_result(record);
            match sent {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), again))
                    if started.elapsed() < shared.settings.produce_timeout =>
                {
                    record = again;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => {
                    shared.timer.observe("kafka", "produce", started, false);
                    return Err(shared.failed(topic, e));
                }
            }
        };
        Ok(Pending {
            delivery,
            topic: topic.to_owned(),
            event_type: envelope.event.type_name(),
            started,
            shared: shared.clone(),
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
        let shared = &self.shared;
        let started = Instant::now();
        let producer = shared.current();
        let result = producer.send(record, shared.settings.produce_timeout).await;
        shared
            .timer
            .observe("kafka", "produce", started, result.is_ok());
        match result {
            Ok(d) => {
                shared.delivered();
                Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Err((source, _)) => Err(shared.failed(topic, source)),
        }
    }

    /// Checks that this publisher's writes can succeed now: its producer is
    /// not fatal and its latest publishes were not all refused, and every
    /// partition of the contract's topics has a leader that answers and at
    /// least `min.insync.replicas` replicas in sync. A broker that answers
    /// is not enough: with two of three brokers down the third still
    /// answers, with the metadata it had when the controllers lost their
    /// quorum, and no `acks=all` write succeeds.
    pub async fn check(&self, timeout: Duration) -> Result<(), BusError> {
        let shared = &self.shared;
        shared
            .health
            .lock()
            .expect("not poisoned")
            .ready(Instant::now())
            .map_err(BusError::Unhealthy)?;
        let topics: Vec<String> = shared.topics.all().map(str::to_owned).to_vec();
        let producer = shared.current();
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
            let min_isr = shared.min_isr.of(&topic, timeout).await?;
            writable(&topic, &states, min_isr).map_err(BusError::Unwritable)?;
        }
        Ok(())
    }

    /// `Err` once the producer has been replaced
    /// `KAFKA_PRODUCER_MAX_REPLACEMENTS` times in a row and went fatal
    /// again each time: the liveness probe then fails, and the pod is
    /// restarted.
    pub fn alive(&self) -> Result<(), String> {
        let shared = &self.shared;
        let max = shared.settings.producer_max_replacements;
        shared.health.lock().expect("not poisoned").alive(max)
    }

    /// Waits until queued messages are delivered (used at shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.shared.current().flush(timeout) {
            tracing::warn!(error = %e, "producer flush did not complete");
        }
    }
}

impl Shared {
    fn current(&self) -> Producer0 {
        self.producer.read().expect("not poisoned").clone()
    }

    fn delivered(&self) {
        self.health.lock().expect("not poisoned").delivered();
        if self.fault.planned() {
            self.fault.count(self.current().client());
        }
    }

    fn failed(&self, topic: &str, source: KafkaError) -> BusError {
        if source.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
            self.wake.notify_one();
        }
        self.health
            .lock()
            .expect("not poisoned")
            .failed(Instant::now(), source.to_string());
        BusError::Publish {
            topic: topic.to_owned(),
            source,
        }
    }

    /// Builds a new producer and puts it in place of the fatal one, whose
    /// queued and in-flight messages fail (purged as it is dropped).
    fn replace(&self) -> Result<(), BusError> {
        let fresh = build_producer(&self.settings, &self.wake)?;
        let fatal = std::mem::replace(&mut *self.producer.write().expect("not poisoned"), fresh);
        self.health
            .lock()
            .expect("not poisoned")
            .replaced(Instant::now());
        self.replacements.inc();
        tracing::info!("kafka producer replaced");
        self.fault.after_replacement(self.current().client());
        // Dropping a producer purges it and joins its polling thread.
        tokio::task::spawn_blocking(move || drop(fatal));
        Ok(())
    }
}

/// The recovery task: ends with the publisher.
async fn recover(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
        let Some(delay) = fatal_now(&shared) else {
            continue;
        };
        tokio::time::sleep(delay).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(e) = shared.replace() {
            tracing::error!(error = %e, "replacing the fatal kafka producer failed; trying again");
        }
    }
}

/// When the producer is fatal: how long to wait before replacing it (at
/// once the first time, then backing off while replacements go fatal
/// again). Logs the fatal error once per producer.
fn fatal_now(shared: &Weak<Shared>) -> Option<Duration> {
    let shared = shared.upgrade()?;
    let (code, reason) = shared.current().client().fatal_error()?;
    let mut health = shared.health.lock().expect("not poisoned");
    let first = health.fatal(Instant::now(), &reason);
    let replacements = health.replacements_in_a_row();
    if first {
        tracing::error!(
            code = ?code,
            %reason,
            replacements_in_a_row = replacements,
            "the kafka producer is in librdkafka's fatal state and refuses every message; replacing it"
        );
    }
    Some(match replacements {
        0 => Duration::ZERO,
        n => crate::backoff_delay(n - 1, Duration::from_millis(500), Duration::from_secs(30)),
    })
}

fn build_producer(settings: &KafkaSettings, wake: &Arc<Notify>) -> Result<Producer0, BusError> {
    settings
        .client_config()
        // Idempotence gives ordered, de-duplicated retries per partition;
        // it implies acks=all, stated anyway for the reader.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", settings.linger.as_millis().to_string())
        .set(
            "message.timeout.ms",
            settings.produce_timeout.as_millis().to_string(),
        )
        .create_with_context(FatalWatch { wake: wake.clone() })
        .map_err(BusError::Setup)
}

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
}
