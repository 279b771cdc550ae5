//! Finished offsets, committed: for every partition still assigned, the
//! offset of its first record not finished.

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::{Done, Worker};
use crate::offsets::OffsetTracker;
use crate::outcome::Outcome;

impl Worker {
    /// A lane is done with a record: finished, or handed over to the
    /// partition's new owner (never committed here).
    pub(super) fn note(&self, offsets: &mut OffsetTracker, done: Done) {
        if done.outcome == Outcome::HandedOver {
            offsets.abandoned(&done.topic, done.partition, done.ticket);
        } else {
            offsets.finished(&done.topic, done.partition, done.ticket);
        }
    }

    /// A failed commit only means records come again, which the ledger
    /// absorbs.
    pub(super) async fn commit(&self, offsets: &mut OffsetTracker) {
        let assigned = self.consumer.assignment().ok();
        if let Some(assigned) = &assigned {
            offsets.retain(|topic, partition| assigned.find_partition(topic, partition).is_some());
        }
        let due = offsets.to_commit();
        if due.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, offset) in &due {
            if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                tracing::warn!(error = %e, "cannot build the offset commit");
                return;
            }
        }
        let consumer = self.consumer.clone();
        let result =
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
        match result {
            Ok(Ok(())) => {
                offsets.committed(&due);
                self.progress.committed();
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "offset commit failed; records may be redelivered")
            }
            Err(e) => tracing::warn!(error = %e, "offset commit task failed"),
        }
    }
}
