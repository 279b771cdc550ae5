//! Receiving records and handing each to its company's lane, with flow
//! control: when too many records wait for full lanes, every assigned
//! partition is paused, while the consumer keeps polling (heartbeats and
//! rebalances are served, nothing new is delivered).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use etl_core::bus::ReceiveBackoff;

use super::{Done, Job, Worker};
use crate::offsets::OffsetTracker;

/// Records waiting for a lane a record is sent to; more means a full lane
/// (a slow file or retries) and the consumer pauses until they drain.
const LANE_QUEUE: usize = 8;
/// Records received but not yet in a lane before the partitions pause.
const PAUSE_AT: usize = 2_048;
/// Waiting records below which paused partitions resume. Far below
/// `PAUSE_AT`: librdkafka drops what it fetched ahead for a paused
/// partition and fetches it again on resume, so flipping at one threshold
/// (on every record, at full speed) nearly halved the throughput.
const RESUME_AT: usize = 512;
/// How often finished offsets are committed; a crash repeats at most this
/// much work, which the ledger absorbs.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// The dispatcher's state: the lanes, what waits for them, the offsets.
struct Dispatch {
    lanes: Vec<mpsc::Sender<Job>>,
    waiting: VecDeque<Job>,
    offsets: OffsetTracker,
    paused: bool,
    /// The assignment the paused state was last applied to.
    paused_assignment: BTreeSet<(String, i32)>,
}

impl Worker {
    /// Consumes until `shutdown` is cancelled.
    ///
    /// Records are spread over `concurrency` lanes by their key (the
    /// company), so one company's files are handled one after another, in
    /// order, while other companies' go ahead. Offsets are committed every
    /// `COMMIT_INTERVAL` up to the first record not finished. On shutdown
    /// no record is taken any more; the lanes finish those handed to them
    /// (a file waiting to retry is left for the next owner, with the
    /// files of its lane) and the finished offsets are committed.
    pub async fn run(self, shutdown: CancellationToken) {
        let worker = Arc::new(self);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut lane_tasks = JoinSet::new();
        let lanes = (0..worker.concurrency.get())
            .map(|_| {
                let (tx, rx) = mpsc::channel::<Job>(LANE_QUEUE);
                lane_tasks.spawn(worker.clone().lane(rx, done_tx.clone(), shutdown.clone()));
                tx
            })
            .collect();
        drop(done_tx);
        let mut dispatch = Dispatch {
            lanes,
            waiting: VecDeque::new(),
            offsets: OffsetTracker::default(),
            paused: false,
            paused_assignment: BTreeSet::new(),
        };
        let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut receive_backoff = ReceiveBackoff::new(worker.retry_base, worker.retry_max);
        loop {
            dispatch.hand_over_waiting();
            dispatch.pause_or_resume(&worker);
            // Head of the line: a later record may belong to the same
            // company, so nothing overtakes the first one waiting.
            let blocked_lane = dispatch.blocked_lane();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(done) = done_rx.recv() => worker.note(&mut dispatch.offsets, done),
                _ = commit_tick.tick() => {
                    dispatch.follow_assignment(&worker);
                    worker.commit(&mut dispatch.offsets).await;
                }
                Ok(permit) = async { blocked_lane.as_ref().expect("guarded").reserve().await },
                    if blocked_lane.is_some() =>
                {
                    permit.send(dispatch.waiting.pop_front().expect("a record waits"));
                }
                received = worker.consumer.recv() => match received {
                    Ok(message) => {
                        receive_backoff.received();
                        worker.consumer_fault.count(worker.consumer.client());
                        dispatch.received(message.detach());
                    }
                    Err(e) => {
                        worker.metrics.retry("kafka");
                        if receive_backoff.failed(&e, &shutdown).await {
                            break;
                        }
                    }
                },
            }
        }
        worker.wind_down(dispatch, done_rx, lane_tasks).await;
    }

    /// The lanes finish what they were handed; then the last commit.
    async fn wind_down(
        &self,
        dispatch: Dispatch,
        mut done_rx: mpsc::UnboundedReceiver<Done>,
        mut lane_tasks: JoinSet<()>,
    ) {
        let Dispatch {
            lanes,
            waiting,
            mut offsets,
            ..
        } = dispatch;
        // Closing the lanes lets them end once their records are done.
        drop(lanes);
        drop(waiting);
        while let Some(done) = done_rx.recv().await {
            self.note(&mut offsets, done);
        }
        while lane_tasks.join_next().await.is_some() {}
        self.commit(&mut offsets).await;
        tracing::info!("consumer loop stopped");
    }

    /// Pauses (or resumes) every partition assigned now; returns them.
    fn set_paused(&self, paused: bool) -> BTreeSet<(String, i32)> {
        let changed = self.consumer.assignment().and_then(|assigned| {
            if paused {
                self.consumer.pause(&assigned)?;
            } else {
                self.consumer.resume(&assigned)?;
            }
            Ok(assigned)
        });
        match changed {
            Ok(assigned) => partitions(&assigned),
            Err(e) => {
                // Tried again at the next commit tick.
                tracing::warn!(error = %e, paused, "cannot change the paused state of the partitions");
                BTreeSet::new()
            }
        }
    }
}

impl Dispatch {
    fn received(&mut self, record: OwnedMessage) {
        let ticket = self
            .offsets
            .dispatched(record.topic(), record.partition(), record.offset());
        let lane = lane_of(&record, self.lanes.len());
        self.waiting.push_back(Job {
            record,
            ticket,
            lane,
        });
    }

    /// Hands waiting records to their lanes, in order, up to the first
    /// whose lane is full.
    fn hand_over_waiting(&mut self) {
        while let Some(job) = self.waiting.pop_front() {
            match self.lanes[job.lane].try_reserve() {
                Ok(permit) => permit.send(job),
                Err(_) => {
                    self.waiting.push_front(job);
                    break;
                }
            }
        }
    }

    fn blocked_lane(&self) -> Option<mpsc::Sender<Job>> {
        self.waiting.front().map(|job| self.lanes[job.lane].clone())
    }

    fn pause_or_resume(&mut self, worker: &Worker) {
        let should_pause = if self.paused {
            self.waiting.len() > RESUME_AT
        } else {
            self.waiting.len() >= PAUSE_AT
        };
        if should_pause != self.paused {
            self.paused = should_pause;
            self.paused_assignment = worker.set_paused(self.paused);
        }
    }

    /// After a rebalance: records of partitions taken away are their new
    /// owner's now (handling them here too would only repeat its work),
    /// and the new assignment gets the paused state. librdkafka keeps a
    /// partition paused across a rebalance, also when it was paused
    /// before being revoked and is assigned again.
    fn follow_assignment(&mut self, worker: &Worker) {
        let Ok(assigned) = worker.consumer.assignment() else {
            return;
        };
        let assigned = partitions(&assigned);
        self.waiting.retain(|job| {
            let (topic, partition) = (job.record.topic(), job.record.partition());
            assigned.iter().any(|(t, p)| t == topic && *p == partition)
        });
        if assigned != self.paused_assignment {
            self.paused_assignment = worker.set_paused(self.paused);
        }
    }
}

fn partitions(list: &TopicPartitionList) -> BTreeSet<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

/// The lane of a record: by its key (the company), so a company's files
/// stay in order; a record without a key goes by partition.
fn lane_of(record: &OwnedMessage, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    match record.key() {
        Some(key) => key.hash(&mut hasher),
        None => record.partition().hash(&mut hasher),
    }
    (hasher.finish() % lanes as u64) as usize
}
