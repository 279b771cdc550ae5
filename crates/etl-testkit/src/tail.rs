//! Reading a test's topics as a consumer of its own would.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;

use etl_core::bus::{KafkaSettings, headers_map};
use etl_core::events::Envelope;

/// One record read from a topic.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub partition: i32,
    pub offset: i64,
    pub envelope: Envelope,
}

/// For each file with a `FileLoaded` among `records`, the distinct
/// `event_id`s announcing it. After a crash an outcome may be published
/// again, always with the same id, so a file should have exactly one.
pub fn file_loaded_event_ids(records: &[Received]) -> BTreeMap<String, BTreeSet<String>> {
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in records {
        if let etl_core::events::Event::FileLoaded(e) = &r.envelope.event {
            ids.entry(e.file_id.to_string())
                .or_default()
                .insert(r.envelope.event_id.to_string());
        }
    }
    ids
}

fn received(m: &impl Message) -> Received {
    let envelope = Envelope::from_json(m.payload().unwrap_or_default())
        .unwrap_or_else(|e| panic!("a record on {} is not an envelope: {e}", m.topic()));
    Received {
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        headers: headers_map(m.headers()),
        partition: m.partition(),
        offset: m.offset(),
        envelope,
    }
}

/// Records a tail takes at most before it asks its caller's `done` again.
const TAIL_BATCH: usize = 1_000;

/// Reads a topic from the beginning in a consumer group of its own.
pub struct TopicTail {
    consumer: StreamConsumer,
    seen: Vec<Received>,
    /// The last error the consumer reported, for the timeout's message.
    last_error: Option<KafkaError>,
}

impl TopicTail {
    pub fn new(settings: &KafkaSettings, topic: &str) -> Self {
        let group = format!("tail-{}", uuid::Uuid::new_v4());
        let consumer = etl_core::bus::consumer(settings, &group, &[topic]).expect("consumer");
        Self {
            consumer,
            seen: Vec::new(),
            last_error: None,
        }
    }

    /// Reads until `done(all records so far)` holds; panics after `timeout`.
    pub async fn until<F>(&mut self, timeout: Duration, what: &str, done: F) -> &[Received]
    where
        F: Fn(&[Received]) -> bool,
    {
        let started = Instant::now();
        while !done(&self.seen) {
            let left = timeout.saturating_sub(started.elapsed());
            assert!(
                !left.is_zero(),
                "timed out after {timeout:?} waiting for {what} (last consumer error: {:?}); \
                 saw {} record(s): {:#?}",
                self.last_error,
                self.seen.len(),
                self.seen.iter().map(|r| &r.envelope).collect::<Vec<_>>()
            );
            // `done` reads every record so far: asked after each one, a
            // long tail cost time quadratic in its length. What has
            // arrived is taken first (a zero timeout still polls once).
            let mut wait = left.min(Duration::from_millis(500));
            for _ in 0..TAIL_BATCH {
                let Ok(result) = tokio::time::timeout(wait, self.consumer.recv()).await else {
                    break;
                };
                match result {
                    Ok(message) => self.seen.push(received(&message)),
                    Err(e @ KafkaError::MessageConsumptionFatal(_)) => panic!("kafka receive: {e}"),
                    // A broker out of reach for a while (a node restarting)
                    // is ridden out, as the services do; the deadline decides.
                    Err(e) => {
                        self.last_error = Some(e);
                        break;
                    }
                }
                wait = Duration::ZERO;
            }
        }
        &self.seen
    }

    /// Everything read so far.
    pub fn seen(&self) -> &[Received] {
        &self.seen
    }
}
