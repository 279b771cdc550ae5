//! What a consumer group has not committed yet: the lag gauge and the
//! readiness view of it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntGaugeVec, Opts, Registry};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::metrics::register;
use crate::shutdown::sleep_or_cancel;

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
