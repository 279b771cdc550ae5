//! The broker behaviours the pipeline relies on, checked against the real
//! local Kafka cluster: consumer groups resume exactly where they
//! committed, even inside a multi-record producer batch, and clients ride
//! out a broker restart without losing or repeating records.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::future::join_all;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use etl_core::bus;
use etl_testkit::{DEADLINE, OwnKafka, TestEnv};

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // A long linger packs many records into each batch: the resume
        // point then falls inside a batch, the case that breaks some brokers.
        .set("linger.ms", "100")
        .set("message.timeout.ms", "60000")
        .set("log_level", "3")
        .create()
        .expect("producer")
}

/// Produces `range` as values `"<n>"` with 7 different keys, all at once,
/// and waits until every record is acknowledged.
async fn produce(producer: &FutureProducer, topic: &str, range: std::ops::Range<u32>) {
    let sends = range.map(|n| {
        let (key, value) = (format!("k{}", n % 7), n.to_string());
        async move {
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&value),
                    Duration::from_secs(60),
                )
                .await
                .map_err(|(e, _)| e)
        }
    });
    for result in join_all(sends).await {
        result.expect("record acknowledged");
    }
}

/// A consumed record: its value and where it was.
#[derive(Debug, Clone, Copy)]
struct Got {
    value: u32,
    partition: i32,
    offset: i64,
}

async fn consume(consumer: &StreamConsumer, count: usize, what: &str) -> Vec<Got> {
    let started = Instant::now();
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let left = DEADLINE.saturating_sub(started.elapsed());
        assert!(
            !left.is_zero(),
            "timed out waiting for {what}: {} of {count}",
            got.len()
        );
        let Ok(m) = tokio::time::timeout(left, consumer.recv()).await else {
            continue;
        };
        // librdkafka reports a lost connection as an error and reconnects by
        // itself; a consumer loop carries on, as the services' loops do.
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{what}: transient consumer error: {e}");
                continue;
            }
        };
        let value = std::str::from_utf8(m.payload().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        got.push(Got {
            value,
            partition: m.partition(),
            offset: m.offset(),
        });
    }
    got
}

/// Commits exactly the records in `got`: per partition, the next offset.
fn commit(consumer: &StreamConsumer, topic: &str, got: &[Got]) {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for g in got {
        let e = next.entry(g.partition).or_default();
        *e = (*e).max(g.offset + 1);
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in next {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
}

fn values(got: &[Got]) -> Vec<u32> {
    got.iter().map(|g| g.value).collect()
}

fn assert_exactly_once(parts: &[&[Got]], expected: std::ops::Range<u32>) {
    let all: Vec<u32> = parts.iter().flat_map(|p| values(p)).collect();
    let unique: BTreeSet<u32> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "some records arrived twice");
    assert_eq!(
        unique,
        expected.collect::<BTreeSet<_>>(),
        "records lost or unexpected"
    );
}

#[tokio::test]
async fn a_consumer_group_resumes_exactly_after_its_commit() {
    let env = TestEnv::new().await;
    let kafka = env.kafka();
    let topic = format!("{}resume", kafka.topic_prefix);
    bus::ensure_topics(&kafka, &[&topic]).await.unwrap();
    produce(&producer(&kafka.brokers), &topic, 0..300).await;

    let group = format!("{}-resume", env.id);
    let first = bus::consumer(&kafka, &group, &[&topic]).unwrap();
    let part1 = consume(&first, 120, "the first 120 records").await;
    commit(&first, &topic, &part1);
    drop(first);

    let second = bus::consumer(&kafka, &group, &[&topic]).unwrap();
    let part2 = consume(&second, 180, "the remaining 180 records").await;
    assert_exactly_once(&[&part1, &part2], 0..300);
    // Nothing beyond the 300 is pending for the group.
    let extra = tokio::time::timeout(Duration::from_secs(2), second.recv()).await;
    assert!(
        extra.is_err(),
        "a record arrived after all 300 were consumed"
    );
}

#[tokio::test]
async fn producers_and_consumers_survive_a_broker_restart() {
    let mut env = TestEnv::new().await;
    let mut cluster = OwnKafka::start(&env.id, 1).await;
    cluster.serve(&mut env);
    let kafka = env.kafka();
    let topic = format!("{}restart", kafka.topic_prefix);
    bus::ensure_topics(&kafka, &[&topic]).await.unwrap();
    let producer = producer(&kafka.brokers);
    let consumer = bus::consumer(&kafka, &format!("{}-restart", env.id), &[&topic]).unwrap();

    produce(&producer, &topic, 0..100).await;
    let before = consume(&consumer, 100, "the records produced before the restart").await;
    commit(&consumer, &topic, &before);

    cluster.node(1).kill();
    cluster.restart(1).await;
    eprintln!(
        "injected: kill -9 of the broker after 100 records consumed and committed; restarted on its storage"
    );

    // The same clients carry on: the producer reconnects and its records
    // are acknowledged, the consumer continues after its commit.
    produce(&producer, &topic, 100..200).await;
    let after = consume(&consumer, 100, "the records produced after the restart").await;
    commit(&consumer, &topic, &after);
    assert_exactly_once(&[&before, &after], 0..200);

    // A new member of the group starts after the last commit: nothing again.
    drop(consumer);
    let fresh = bus::consumer(&kafka, &format!("{}-restart", env.id), &[&topic]).unwrap();
    let extra = tokio::time::timeout(Duration::from_secs(3), fresh.recv()).await;
    assert!(
        extra.is_err(),
        "a committed record was delivered again after the restart"
    );
    eprintln!(
        "counted: {} + {} records consumed, 0..200 each once, none delivered again",
        before.len(),
        after.len()
    );
}
