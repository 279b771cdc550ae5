//! The idempotent event publisher: one producer, replaced when librdkafka
//! declares it fatal, and its readiness: the cluster takes writes and the
//! producer delivers them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio::sync::Notify;
use tracing::Instrument;

use super::fault::{Injector, PRODUCER_FATAL_VAR};
use super::producer_health::ProducerHealth;
use super::writable::{MinInsyncReplicas, describe_partitions, writable};
use super::{BusError, HEADER_EVENT_TYPE, HEADER_REQUEST_ID, KafkaSettings, Topics};
use crate::events::Envelope;
use crate::metrics::{DependencyTimer, register};
use crate::traces;

/// How often the recovery task looks at the producer when librdkafka has
/// not called to say it is fatal.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Where a published event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A record the producer holds until the broker acknowledges it.
#[must_use = "a record is only published once delivered() says so"]
pub struct Pending {
    delivery: DeliveryFuture,
    topic: String,
    /// Counted in `events_published_total` once delivered; `None` for a
    /// record sent back as it was (re-drive), which is not a new event.
    event_type: Option<&'static str>,
    started: Instant,
    shared: Arc<Shared>,
    /// The publish span, open until the broker answers: the partition and
    /// offset are known only then.
    span: tracing::Span,
}

impl Pending {
    /// Waits for the broker's acknowledgement from all in-sync replicas.
    pub async fn delivered(self) -> Result<Delivered, BusError> {
        let result = match self.delivery.instrument(self.span.clone()).await {
            Ok(Ok(d)) => {
                let partition = i64::from(d.partition);
                traces::set_attribute(&self.span, "messaging.destination.partition.id", partition);
                traces::set_attribute(&self.span, "messaging.kafka.offset", d.offset);
                Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Ok(Err((source, _))) => Err(source),
            // The producer was replaced with the record in its queue.
            Err(_canceled) => Err(KafkaError::Canceled),
        };
        let shared = &self.shared;
        shared
            .timer
            .observe("kafka", "produce", self.started, result.is_ok());
        match result {
            Ok(delivered) => {
                if let Some(event_type) = self.event_type {
                    shared.published.with_label_values(&[event_type]).inc();
                }
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
            min_isr: MinInsyncReplicas::new(settings)?,
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
        let topic = self.shared.topics.for_event(&envelope.event);
        let payload = envelope.to_json();
        let key = envelope.company.as_ref().map(|c| c.as_str()).unwrap_or("");
        let event_type = envelope.event.type_name();
        let span = tracing::info_span!(
            "publish",
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.operation.type = "send",
            messaging.destination.name = topic,
            messaging.kafka.message.key = key,
            event_type,
        );
        // The consumer continues the trace from these headers.
        let trace = traces::headers_of(&span);
        let headers = [
            (HEADER_EVENT_TYPE, event_type),
            (HEADER_REQUEST_ID, envelope.request_id.as_str()),
        ]
        .into_iter()
        .chain(trace.iter().map(|(k, v)| (*k, v.as_str())));
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(&payload)
            .headers(owned_headers(headers));
        let pending = self.send(record, Some(event_type)).instrument(span.clone());
        Ok(Pending {
            span,
            ..pending.await?
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
        let headers = headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        let mut record = FutureRecord::to(topic)
            .payload(payload)
            .headers(owned_headers(headers));
        if let Some(key) = key {
            record = record.key(key);
        }
        self.send(record, None).await?.delivered().await
    }

    /// Hands `record` to the current producer, waiting while its queue is
    /// full, up to `KAFKA_PRODUCE_TIMEOUT_MS`.
    async fn send<K, P>(
        &self,
        mut record: FutureRecord<'_, K, P>,
        event_type: Option<&'static str>,
    ) -> Result<Pending, BusError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let shared = &self.shared;
        let topic = record.topic.to_owned();
        let started = Instant::now();
        let delivery = loop {
            // Asked each time: a replacement made meanwhile takes the record.
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
                    return Err(shared.failed(&topic, e));
                }
            }
        };
        Ok(Pending {
            delivery,
            topic,
            event_type,
            started,
            shared: shared.clone(),
            span: tracing::Span::none(),
        })
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

fn owned_headers<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> OwnedHeaders {
    pairs
        .into_iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value),
            })
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
