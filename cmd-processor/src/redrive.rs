//! `cmd-processor redrive`: sends dead-lettered records back to the topic
//! they came from, once whatever made them fail is fixed (an object put
//! back into S3, a processor bug deployed away).
//!
//! It reads `etl.dead-letter` in a consumer group of its own
//! (`{PROCESSOR_GROUP_ID}-redrive`), so each dead letter is re-driven once:
//! a run takes the dead letters that exist when it starts, re-publishes each
//! original record (value, key and headers) and commits. A record that fails
//! again is dead-lettered again and waits for the next run. The processor's
//! ledger keeps a re-driven file from being loaded twice.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::Registry;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use etl_core::bus::{self, BusError, EventPublisher};
use etl_core::events::{Envelope, Event};
use etl_core::metrics::DependencyTimer;

use crate::settings::ProcessorSettings;

/// How long a run waits for the next dead letter it knows is there.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(60);
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Redriven {
    /// Records sent back to their source topic.
    pub records: u64,
    /// Dead letters that could not be sent back (unreadable, or from a
    /// topic that is not the pipeline's); they stay in the dead-letter topic.
    pub skipped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("reading the dead-letter topic failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error(
        "no dead letter arrived within {} s although {left} are waiting; is the broker healthy?",
        RECEIVE_TIMEOUT.as_secs()
    )]
    Stalled { left: i64 },
}

pub async fn redrive(settings: &ProcessorSettings) -> Result<Redriven, RedriveError> {
    let topics = settings.kafka.topics();
    let registry = Registry::new();
    let publisher =
        EventPublisher::new(&settings.kafka, &registry, DependencyTimer::new(&registry))?;
    let group = format!("{}-redrive", settings.group_id);
    let consumer = bus::consumer(&settings.kafka, &group, &[&topics.dead_letter])?;

    let mut left = backlog(&consumer, &topics.dead_letter).await?;
    let sources = topics.all();
    let mut done = Redriven::default();
    while left.values().any(|(next, end)| next < end) {
        let waiting: i64 = left.values().map(|(next, end)| end - next).sum();
        let message = tokio::time::timeout(RECEIVE_TIMEOUT, consumer.recv())
            .await
            .map_err(|_| RedriveError::Stalled { left: waiting })??;
        let Some((next, end)) = left.get_mut(&message.partition()) else {
            continue;
        };
        if message.offset() >= *end {
            // Dead-lettered after this run started: the next run's.
            *next = *end;
            continue;
        }
        *next = message.offset() + 1;
        let letter = Envelope::from_json(message.payload().unwrap_or_default())
            .ok()
            .and_then(|e| match e.event {
                Event::DeadLetter(d) => Some(d),
                _ => None,
            });
        match letter {
            Some(d)
                if sources.contains(&d.source_topic.as_str())
                    && d.source_topic != topics.dead_letter =>
            {
                publisher
                    .publish_raw(
                        &d.source_topic,
                        message.key(),
                        d.original_value.as_bytes(),
                        &d.original_headers,
                    )
                    .await?;
                tracing::info!(
                    topic = %d.source_topic,
                    file_id = d.file_id.map(|f| f.to_string()),
                    error = %d.error,
                    "dead letter re-driven"
                );
                done.records += 1;
            }
            _ => {
                tracing::warn!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "dead letter without a pipeline source topic; left in place"
                );
                done.skipped += 1;
            }
        }
        consumer.commit_message(&message, CommitMode::Sync)?;
    }
    Ok(done)
}

/// For each partition of the dead-letter topic: the group's next offset and
/// the end of the topic now, as `partition -> (next, end)`.
async fn backlog(
    consumer: &StreamConsumer,
    topic: &str,
) -> Result<BTreeMap<i32, (i64, i64)>, RedriveError> {
    let partitions: Vec<i32> = consumer
        .fetch_metadata(Some(topic), BROKER_TIMEOUT)?
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut wanted = TopicPartitionList::new();
    for p in &partitions {
        wanted.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(wanted, BROKER_TIMEOUT)?;
    let mut backlog = BTreeMap::new();
    for p in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(topic, p.partition(), BROKER_TIMEOUT)?;
        let next = match p.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        backlog.insert(p.partition(), (next, high));
    }
    Ok(backlog)
}
