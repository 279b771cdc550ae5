//! Which offsets may be committed while the files of a partition finish out
//! of order in several lanes: never past the first one not finished, so a
//! commit never runs ahead of the database.

use std::collections::{BTreeSet, HashMap};

/// A record as the tracker knows it; handed back when the record is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// A partition forgotten (revoked) or read again from an earlier offset
    /// starts a new generation; tickets of an older one no longer count.
    generation: u64,
    offset: i64,
}

#[derive(Debug)]
struct PartitionState {
    generation: u64,
    in_flight: BTreeSet<i64>,
    /// The offset after the last record dispatched.
    next: i64,
    /// A record given up without being finished (its partition was handed
    /// over while it waited to retry): nothing from it on may be committed.
    stuck_at: Option<i64>,
    committed: Option<i64>,
}

#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), PartitionState>,
    generations: u64,
}

impl OffsetTracker {
    /// Notes a record handed to a lane.
    pub fn dispatched(&mut self, topic: &str, partition: i32, offset: i64) -> Ticket {
        let key = (topic.to_owned(), partition);
        let rewound = self
            .partitions
            .get(&key)
            .is_some_and(|state| offset < state.next);
        if rewound {
            // Fetched again from an earlier point (the partition came back
            // after a rebalance): what was in flight before is not ours to
            // account for any more; the ledger absorbs a second handling.
            self.partitions.remove(&key);
        }
        let generations = &mut self.generations;
        let state = self.partitions.entry(key).or_insert_with(|| {
            *generations += 1;
            PartitionState {
                generation: *generations,
                in_flight: BTreeSet::new(),
                next: offset,
                stuck_at: None,
                committed: None,
            }
        });
        state.in_flight.insert(offset);
        state.next = offset + 1;
        Ticket {
            generation: state.generation,
            offset,
        }
    }

    /// The record's outcome is durable: it no longer holds commits back.
    pub fn finished(&mut self, topic: &str, partition: i32, ticket: Ticket) {
        if let Some(state) = self.current(topic, partition, ticket) {
            state.in_flight.remove(&ticket.offset);
        }
    }

    /// The record was given up unfinished: commits stop before it.
    pub fn abandoned(&mut self, topic: &str, partition: i32, ticket: Ticket) {
        if let Some(state) = self.current(topic, partition, ticket) {
            state.in_flight.remove(&ticket.offset);
            state.stuck_at = Some(
                state
                    .stuck_at
                    .map_or(ticket.offset, |s| s.min(ticket.offset)),
            );
        }
    }

    /// Drops the partitions no longer assigned to this consumer.
    pub fn retain(&mut self, mut assigned: impl FnMut(&str, i32) -> bool) {
        self.partitions
            .retain(|(topic, partition), _| assigned(topic, *partition));
    }

    /// Per partition, the offset to commit (the first not finished) when it
    /// moved since the last commit.
    pub fn to_commit(&self) -> Vec<(String, i32, i64)> {
        let mut positions: Vec<_> = self
            .partitions
            .iter()
            .filter_map(|((topic, partition), state)| {
                let first_open = state.in_flight.first().copied().unwrap_or(state.next);
                let position = state.stuck_at.map_or(first_open, |s| s.min(first_open));
                (state.committed != Some(position)).then(|| (topic.clone(), *partition, position))
            })
            .collect();
        positions.sort();
        positions
    }

    /// Notes positions the broker accepted.
    pub fn committed(&mut self, positions: &[(String, i32, i64)]) {
        for (topic, partition, offset) in positions {
            if let Some(state) = self.partitions.get_mut(&(topic.clone(), *partition)) {
                state.committed = Some(*offset);
            }
        }
    }

    fn current(
        &mut self,
        topic: &str,
        partition: i32,
        ticket: Ticket,
    ) -> Option<&mut PartitionState> {
        self.partitions
            .get_mut(&(topic.to_owned(), partition))
            .filter(|state| state.generation == ticket.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(tracker: &OffsetTracker) -> Vec<(i32, i64)> {
        tracker
            .to_commit()
            .into_iter()
            .map(|(_, partition, offset)| (partition, offset))
            .collect()
    }

    #[test]
    fn commits_stop_at_the_first_unfinished_record() {
        let mut t = OffsetTracker::default();
        let a = t.dispatched("t", 0, 10);
        let b = t.dispatched("t", 0, 11);
        let c = t.dispatched("t", 0, 12);
        assert_eq!(positions(&t), [(0, 10)]);
        t.finished("t", 0, b);
        t.finished("t", 0, c);
        assert_eq!(positions(&t), [(0, 10)], "11 and 12 are done, 10 is not");
        t.finished("t", 0, a);
        assert_eq!(positions(&t), [(0, 13)]);
    }

    #[test]
    fn a_committed_position_is_not_committed_again() {
        let mut t = OffsetTracker::default();
        let a = t.dispatched("t", 1, 0);
        t.finished("t", 1, a);
        let due = t.to_commit();
        assert_eq!(due, [("t".to_owned(), 1, 1)]);
        t.committed(&due);
        assert!(t.to_commit().is_empty());
        let b = t.dispatched("t", 1, 1);
        assert!(t.to_commit().is_empty(), "position still 1 while 1 is open");
        t.finished("t", 1, b);
        assert_eq!(positions(&t), [(1, 2)]);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::default();
        let _slow = t.dispatched("t", 0, 5);
        let fast = t.dispatched("t", 1, 7);
        t.finished("t", 1, fast);
        assert_eq!(positions(&t), [(0, 5), (1, 8)]);
    }

    #[test]
    fn an_abandoned_record_holds_every_later_commit_back() {
        let mut t = OffsetTracker::default();
        let a = t.dispatched("t", 0, 3);
        let b = t.dispatched("t", 0, 4);
        t.abandoned("t", 0, a);
        t.finished("t", 0, b);
        assert_eq!(positions(&t), [(0, 3)]);
    }

    #[test]
    fn a_rewound_partition_forgets_tickets_of_the_old_generation() {
        let mut t = OffsetTracker::default();
        let old_a = t.dispatched("t", 0, 20);
        let old_b = t.dispatched("t", 0, 21);
        // Fetched again from 20 (the partition came back after a rebalance).
        let new_a = t.dispatched("t", 0, 20);
        t.finished("t", 0, old_b);
        t.abandoned("t", 0, old_a);
        assert_eq!(positions(&t), [(0, 20)], "20 is open in the new generation");
        t.finished("t", 0, new_a);
        assert_eq!(positions(&t), [(0, 21)], "21 was not dispatched again yet");
    }

    #[test]
    fn a_forgotten_partition_starts_over() {
        let mut t = OffsetTracker::default();
        let stale = t.dispatched("t", 2, 50);
        t.retain(|_, partition| partition != 2);
        assert!(t.to_commit().is_empty());
        let fresh = t.dispatched("t", 2, 60);
        t.finished("t", 2, stale);
        assert_eq!(positions(&t), [(2, 60)], "a stale ticket changes nothing");
        t.finished("t", 2, fresh);
        assert_eq!(positions(&t), [(2, 61)]);
    }
}
