//! The consume loop: `FileExtractSuccess` records spread over lanes by
//! company, each file's outcome made durable (database and/or outcome
//! event), then offsets committed up to the first file not finished.
//!
//! Delivery is at-least-once; the `import_files` ledger turns it into an
//! effectively-once effect: a redelivered record finds its ledger row and
//! only re-emits the recorded outcome (with the same derived `event_id`).

use std::collections::{BTreeSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use etl_core::bus::{
    BusError, EventPublisher, HEADER_REQUEST_ID, Injector, Pending, ReceiveBackoff, headers_map,
};
use etl_core::domain::{CompanySlug, RequestId};
use etl_core::events::{
    DeadLetter, Envelope, Event, FieldError, FileExtractSuccess, FileLoaded, ValidationError,
};
use etl_core::metrics::DependencyTimer;
use etl_core::shutdown::sleep_or_cancel;
use etl_core::storage::{ObjectStore, StoreError, company_file_key};

use crate::company::CompanyValidator;
use crate::ledger::{self, FileMeta, LedgerRow, Rejection, Written};
use crate::loader::Loader;
use crate::metrics::ProcessorMetrics;
use crate::offsets::{OffsetTracker, Ticket};
use crate::progress::Progress;

/// A failure worth retrying: the dependency may come back.
#[derive(Debug)]
struct Transient {
    cause: &'static str,
    message: String,
}

impl Transient {
    fn db(e: impl std::fmt::Display) -> Self {
        Self {
            cause: "postgres",
            message: e.to_string(),
        }
    }
}

/// What happened to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Loaded,
    Invalid,
    /// The same file (same content, same company) was already handled for
    /// an earlier event; nothing written, nothing emitted.
    Duplicate,
    /// This very event was handled before (a redelivery); its recorded
    /// outcome was published again.
    Reemitted,
    DeadLettered,
    /// The database refused the data for good; recorded as `failed` and
    /// dead-lettered.
    Failed,
    /// The partition was taken away (a rebalance) while the file waited to
    /// be retried: not committed, its new owner takes it from there.
    HandedOver,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Loaded => "loaded",
            Outcome::Invalid => "invalid",
            Outcome::Duplicate => "duplicate",
            Outcome::Reemitted => "reemitted",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Failed => "failed",
            Outcome::HandedOver => "handed_over",
        }
    }
}

/// A record handled: its outcome, and the event that must reach the broker
/// before the record counts as done.
struct Handled {
    outcome: Outcome,
    announce: Option<Envelope>,
}

impl Handled {
    fn quietly(outcome: Outcome) -> Self {
        Self {
            outcome,
            announce: None,
        }
    }
    fn announcing(outcome: Outcome, event: Envelope) -> Self {
        Self {
            outcome,
            announce: Some(event),
        }
    }
}

pub struct Worker {
    pub consumer: Arc<StreamConsumer>,
    pub pool: PgPool,
    pub store: ObjectStore,
    pub publisher: EventPublisher,
    pub validator: Arc<CompanyValidator>,
    pub loader: Loader,
    pub metrics: ProcessorMetrics,
    pub timer: DependencyTimer,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Files handled at once, each in its own lane.
    pub concurrency: NonZeroUsize,
    pub progress: Progress,
    /// Nothing, unless a test puts the consumer into the fatal state.
    pub consumer_fault: Injector,
}

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

/// A record on its way to, or in, a lane.
struct Job {
    record: OwnedMessage,
    ticket: Ticket,
    lane: usize,
}

/// A lane's word that a record is done with.
struct Done {
    topic: String,
    partition: i32,
    ticket: Ticket,
    outcome: Outcome,
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
        let lane_count = worker.concurrency.get();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let mut lanes = Vec::with_capacity(lane_count);
        let mut lane_tasks = JoinSet::new();
        for _ in 0..lane_count {
            let (tx, rx) = mpsc::channel::<Job>(LANE_QUEUE);
            lanes.push(tx);
            lane_tasks.spawn(worker.clone().lane(rx, done_tx.clone(), shutdown.clone()));
        }
        drop(done_tx);

        let mut offsets = OffsetTracker::default();
        let mut waiting: VecDeque<Job> = VecDeque::new();
        let mut paused = false;
        // The assignment the paused state was last applied to.
        let mut paused_assignment = BTreeSet::new();
        let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut receive_backoff = ReceiveBackoff::new(worker.retry_base, worker.retry_max);
        loop {
            while let Some(job) = waiting.pop_front() {
                match lanes[job.lane].try_reserve() {
                    Ok(permit) => permit.send(job),
                    Err(_) => {
                        waiting.push_front(job);
                        break;
                    }
                }
            }
            let should_pause = if paused {
                waiting.len() > RESUME_AT
            } else {
                waiting.len() >= PAUSE_AT
            };
            if should_pause != paused {
                paused = should_pause;
                paused_assignment = worker.set_paused(paused);
            }
            // Head of the line: a later record may belong to the same
            // company, so nothing overtakes the first one waiting.
            let blocked_lane = waiting.front().map(|job| lanes[job.lane].clone());
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(done) = done_rx.recv() => worker.note(&mut offsets, done),
                _ = commit_tick.tick() => {
                    if let Ok(assigned) = worker.consumer.assignment() {
                        let assigned = partitions(&assigned);
                        // Records of partitions taken away in a rebalance are
                        // their new owner's now: handling them here too
                        // would only repeat its work.
                        waiting.retain(|job| {
                            let (topic, partition) = (job.record.topic(), job.record.partition());
                            assigned.iter().any(|(t, p)| t == topic && *p == partition)
                        });
                        // librdkafka keeps a partition paused across a
                        // rebalance, also when it was paused before being
                        // revoked and is assigned again: each new assignment
                        // gets our state.
                        if assigned != paused_assignment {
                            paused_assignment = worker.set_paused(paused);
                        }
                    }
                    worker.commit(&mut offsets).await;
                }
                Ok(permit) = async { blocked_lane.as_ref().expect("guarded").reserve().await },
                    if blocked_lane.is_some() =>
                {
                    permit.send(waiting.pop_front().expect("a record waits"));
                }
                received = worker.consumer.recv() => match received {
                    Ok(message) => {
                        receive_backoff.received();
                        worker.consumer_fault.count(worker.consumer.client());
                        let record = message.detach();
                        let ticket = offsets.dispatched(record.topic(), record.partition(), record.offset());
                        let lane = lane_of(&record, lane_count);
                        waiting.push_back(Job { record, ticket, lane });
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

        drop(lanes);
        drop(waiting);
        while let Some(done) = done_rx.recv().await {
            worker.note(&mut offsets, done);
        }
        while lane_tasks.join_next().await.is_some() {}
        worker.commit(&mut offsets).await;
        tracing::info!("consumer loop stopped");
    }

    /// One lane: its records one at a time, in the order received.
    async fn lane(
        self: Arc<Self>,
        mut jobs: mpsc::Receiver<Job>,
        done: mpsc::UnboundedSender<Done>,
        shutdown: CancellationToken,
    ) {
        // Ends when the dispatcher drops its sender: on shutdown too, after
        // the records already handed over. They precede every record not
        // handed over yet, so the final commit covers all that was done
        // and nothing is done twice after a restart.
        while let Some(job) = jobs.recv().await {
            let record = &job.record;
            // From the header first, so that even a record whose payload is
            // unreadable is logged with the request it came from.
            let request_id = headers_map(record.headers()).remove(HEADER_REQUEST_ID);
            let span = tracing::info_span!(
                "record",
                topic = record.topic(),
                partition = record.partition(),
                offset = record.offset(),
                request_id,
                file_id = tracing::field::Empty,
                company = tracing::field::Empty,
            );
            let started = Instant::now();
            let handled = self
                .handle_with_retries(record, started, &shutdown)
                .instrument(span.clone())
                .await;
            // Shut down while waiting to retry: left unfinished, uncommitted,
            // and the company's later files with it.
            let Some(handled) = handled else { return };
            let finished = Done {
                topic: record.topic().to_owned(),
                partition: record.partition(),
                ticket: job.ticket,
                outcome: handled.outcome,
            };
            let Some(event) = handled.announce else {
                if !self.finish(&done, finished, started) {
                    return;
                }
                continue;
            };
            // The lane goes on to its next file while the broker
            // acknowledges this one's event (events enqueued in order stay
            // in order); the record is done only once it has.
            let enqueued = self.publisher.enqueue(&event).await;
            let confirm = self.clone().confirm(
                enqueued,
                event,
                finished,
                started,
                done.clone(),
                shutdown.clone(),
            );
            tokio::spawn(confirm.instrument(span));
        }
    }

    /// The record's outcome is durable: counted, and its offset may be
    /// committed. `false` once the consume loop is gone.
    fn finish(&self, done: &mpsc::UnboundedSender<Done>, finished: Done, started: Instant) -> bool {
        self.metrics.file(finished.outcome.label());
        if finished.outcome != Outcome::HandedOver {
            self.metrics.load_seconds(started.elapsed().as_secs_f64());
        }
        done.send(finished).is_ok()
    }

    /// Waits for the broker to acknowledge a record's event, publishing it
    /// again after a failure, then reports the record done. The consume
    /// loop's last drain waits for this; shut down while waiting to retry,
    /// the record is left unfinished and its redelivery publishes the
    /// recorded outcome again. An event published again goes after those
    /// the lane enqueued meanwhile: after a broker failure, a company's
    /// events can arrive out of order (each names its file).
    async fn confirm(
        self: Arc<Self>,
        mut enqueued: Result<Pending, BusError>,
        event: Envelope,
        mut finished: Done,
        started: Instant,
        done: mpsc::UnboundedSender<Done>,
        shutdown: CancellationToken,
    ) {
        let mut attempt = 0u32;
        loop {
            let failure = match enqueued {
                Ok(pending) => match pending.delivered().await {
                    Ok(_) => break,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            self.metrics.retry("kafka");
            let delay = etl_core::backoff_delay(attempt, self.retry_base, self.retry_max);
            attempt += 1;
            tracing::warn!(error = %failure, attempt, retry_in_ms = delay.as_millis() as u64, "the outcome event was not acknowledged; will publish it again");
            if sleep_or_cancel(delay, &shutdown).await {
                return;
            }
            if !self.still_assigned(&finished.topic, finished.partition) {
                tracing::info!("partition revoked while retrying; its new owner takes the file");
                finished.outcome = Outcome::HandedOver;
                break;
            }
            enqueued = self.publisher.enqueue(&event).await;
        }
        self.finish(&done, finished, started);
    }

    fn note(&self, offsets: &mut OffsetTracker, done: Done) {
        if done.outcome == Outcome::HandedOver {
            offsets.abandoned(&done.topic, done.partition, done.ticket);
        } else {
            offsets.finished(&done.topic, done.partition, done.ticket);
        }
    }

    /// Handles `record`, retrying transient failures with backoff. The
    /// lane waits; other lanes go on, and the consumer keeps polling, so
    /// the group does not take it for dead (past `max.poll.interval.ms`).
    /// Nothing after the file is committed until it is done.
    async fn handle_with_retries(
        &self,
        record: &OwnedMessage,
        started: Instant,
        shutdown: &CancellationToken,
    ) -> Option<Handled> {
        let mut attempt = 0u32;
        loop {
            match self.handle(record, started).await {
                Ok(handled) => {
                    tracing::info!(
                        outcome = handled.outcome.label(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "file handled"
                    );
                    return Some(handled);
                }
                Err(t) => {
                    self.metrics.retry(t.cause);
                    let delay = etl_core::backoff_delay(attempt, self.retry_base, self.retry_max);
                    attempt += 1;
                    tracing::warn!(cause = t.cause, error = %t.message, attempt, retry_in_ms = delay.as_millis() as u64, "transient failure; will retry without committing");
                    if sleep_or_cancel(delay, shutdown).await {
                        return None;
                    }
                    if !self.still_assigned(record.topic(), record.partition()) {
                        tracing::info!(
                            "partition revoked while retrying; its new owner takes the file"
                        );
                        return Some(Handled::quietly(Outcome::HandedOver));
                    }
                }
            }
        }
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

    fn still_assigned(&self, topic: &str, partition: i32) -> bool {
        // When in doubt keep the file: the ledger absorbs a double attempt.
        self.consumer.assignment().map_or(true, |assigned| {
            assigned.find_partition(topic, partition).is_some()
        })
    }

    async fn handle(&self, record: &OwnedMessage, started: Instant) -> Result<Handled, Transient> {
        let payload = record.payload().unwrap_or_default();
        let envelope = match Envelope::from_json(payload) {
            Ok(e) => e,
            Err(e) => {
                return Ok(self.dead_letter(
                    record,
                    None,
                    format!("the record is not a pipeline event: {e}"),
                ));
            }
        };
        let span = tracing::Span::current();
        span.record("request_id", envelope.request_id.as_str());
        if let Some(c) = &envelope.company {
            span.record("company", c.as_str());
        }
        let Event::FileExtractSuccess(file) = &envelope.event else {
            let kind = envelope.event.type_name();
            return Ok(self.dead_letter(
                record,
                Some(&envelope),
                format!("expected FileExtractSuccess, got {kind}"),
            ));
        };
        span.record("file_id", tracing::field::display(file.file_id));
        let Some(company) = envelope.company.clone() else {
            return Ok(self.dead_letter(
                record,
                Some(&envelope),
                "FileExtractSuccess without a company".into(),
            ));
        };
        // The key is rebuilt from validated parts; a record pointing
        // elsewhere is not followed.
        let s3_key = company_file_key(&company, file.file_id);
        if file.s3_key != s3_key {
            let msg = format!(
                "s3_key {:?} does not match company and file_id (expected {s3_key:?})",
                file.s3_key
            );
            return Ok(self.dead_letter(record, Some(&envelope), msg));
        }

        // A new file is not looked up first: the ledger's primary key
        // refuses a second row, and only then is the recorded outcome read
        // (a redelivery, or the same content posted again). That saves a
        // query per file; a redelivered file is downloaded again.
        let (received_at, replaces) = if file.replay {
            match self.find(file).await? {
                Some(row) if row.source_event_id == envelope.event_id => {
                    return Ok(self.already_recorded(record, &envelope, file, row));
                }
                Some(row) => {
                    // The file keeps its place in the company's history: a
                    // replay never overwrites data from a file received later.
                    tracing::info!(previous = %row.status, "replaying a recorded file");
                    (row.received_at, Some(row.source_event_id))
                }
                None => (envelope.occurred_at, None),
            }
        } else {
            (envelope.occurred_at, None)
        };

        let bytes = match self.store.get(&s3_key).await {
            Ok(b) => b,
            Err(e @ StoreError::NotFound { .. }) => {
                // Deleted after it was loaded: a redelivery still gets the
                // recorded outcome.
                if replaces.is_none()
                    && let Some(row) = self.find(file).await?
                {
                    return Ok(self.already_recorded(record, &envelope, file, row));
                }
                return Ok(self.dead_letter(record, Some(&envelope), e.to_string()));
            }
            Err(e @ StoreError::Unavailable { .. }) => {
                return Err(Transient {
                    cause: "s3",
                    message: e.to_string(),
                });
            }
        };
        let meta = FileMeta {
            file_id: file.file_id,
            company,
            s3_key,
            sha256: file.sha256.clone(),
            size_bytes: file.size_bytes,
            request_id: envelope.request_id.clone(),
            event_id: envelope.event_id,
            received_at,
            replaces,
        };

        match self.validator.validate(&bytes) {
            Err(errors) => {
                let rejected =
                    ledger::record_rejected(&self.pool, &meta, Rejection::Invalid, &errors);
                match self
                    .postgres("record_rejection", rejected)
                    .await
                    .map_err(Transient::db)?
                {
                    Written::AlreadyRecorded => {
                        return self.recorded_before(record, &envelope, file).await;
                    }
                    Written::Done(()) => {}
                }
                tracing::info!(errors = errors.len(), "file failed validation");
                let event = Envelope::caused_by(&envelope, invalid_event(file, errors));
                Ok(Handled::announcing(Outcome::Invalid, event))
            }
            Ok(company) => match self.loader.load(meta.clone(), company, started).await {
                Ok(Written::AlreadyRecorded) => self.recorded_before(record, &envelope, file).await,
                Ok(Written::Done(rows)) => {
                    if rows.get("companies") == Some(&0) {
                        tracing::info!(
                            "a newer file of this company is already loaded; company row kept"
                        );
                    }
                    for (table, n) in &rows {
                        self.metrics.rows(table, *n);
                    }
                    let duration_ms = started.elapsed().as_millis() as u64;
                    let event =
                        Envelope::caused_by(&envelope, loaded_event(file, rows, duration_ms));
                    Ok(Handled::announcing(Outcome::Loaded, event))
                }
                Err(e) if ledger::is_permanent(&e) => {
                    let error = FieldError {
                        path: String::new(),
                        message: format!("the database refused the file: {e}"),
                    };
                    let rejected = ledger::record_rejected(
                        &self.pool,
                        &meta,
                        Rejection::Failed,
                        std::slice::from_ref(&error),
                    );
                    match self
                        .postgres("record_rejection", rejected)
                        .await
                        .map_err(Transient::db)?
                    {
                        Written::AlreadyRecorded => {
                            self.recorded_before(record, &envelope, file).await
                        }
                        Written::Done(()) => Ok(Handled::announcing(
                            Outcome::Failed,
                            self.dead_letter_event(record, Some(&envelope), error.message),
                        )),
                    }
                }
                Err(e) => Err(Transient::db(e)),
            },
        }
    }

    async fn find(&self, file: &FileExtractSuccess) -> Result<Option<LedgerRow>, Transient> {
        self.postgres("find_ledger_row", ledger::find(&self.pool, file.file_id))
            .await
            .map_err(Transient::db)
    }

    /// The ledger refused a second row for the file: what it recorded
    /// decides.
    async fn recorded_before(
        &self,
        record: &OwnedMessage,
        envelope: &Envelope,
        file: &FileExtractSuccess,
    ) -> Result<Handled, Transient> {
        match self.find(file).await? {
            Some(row) => Ok(self.already_recorded(record, envelope, file, row)),
            // Ledger rows are never deleted; should one be, the next attempt
            // records the file anew.
            None => Err(Transient {
                cause: "postgres",
                message: format!("the ledger row of {} vanished", file.file_id),
            }),
        }
    }

    /// The ledger already knows this file. If it was this very event, the
    /// outcome may not have been published before a crash: publish it again.
    fn already_recorded(
        &self,
        record: &OwnedMessage,
        envelope: &Envelope,
        file: &FileExtractSuccess,
        row: LedgerRow,
    ) -> Handled {
        if row.source_event_id != envelope.event_id {
            tracing::info!(status = %row.status, "file already handled for an earlier import; skipped");
            return Handled::quietly(Outcome::Duplicate);
        }
        let event = match row.status.as_str() {
            "loaded" => loaded_event(
                file,
                row.rows.map(|r| r.0).unwrap_or_default(),
                row.duration_ms.unwrap_or_default().max(0) as u64,
            ),
            "invalid" => invalid_event(file, row.errors.map(|e| e.0).unwrap_or_default()),
            // `failed`: the dead letter may not have been published either.
            _ => {
                let error = row
                    .errors
                    .and_then(|e| e.0.into_iter().next())
                    .map(|e| e.message)
                    .unwrap_or_else(|| format!("recorded as {}", row.status));
                let letter = self.dead_letter_event(record, Some(envelope), error);
                return Handled::announcing(Outcome::Reemitted, letter);
            }
        };
        Handled::announcing(Outcome::Reemitted, Envelope::caused_by(envelope, event))
    }

    /// A database call, timed as `dependency_request_duration_seconds{dependency="postgres"}`.
    async fn postgres<T>(
        &self,
        operation: &str,
        call: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        self.timer.time("postgres", operation, call).await
    }

    fn dead_letter(
        &self,
        record: &OwnedMessage,
        envelope: Option<&Envelope>,
        error: String,
    ) -> Handled {
        let letter = self.dead_letter_event(record, envelope, error);
        Handled::announcing(Outcome::DeadLettered, letter)
    }

    fn dead_letter_event(
        &self,
        record: &OwnedMessage,
        envelope: Option<&Envelope>,
        error: String,
    ) -> Envelope {
        tracing::warn!(%error, "routing record to the dead-letter topic");
        let headers = headers_map(record.headers());
        let request_id = envelope
            .map(|e| e.request_id.clone())
            .or_else(|| {
                headers
                    .get(HEADER_REQUEST_ID)
                    .and_then(|r| RequestId::parse(r))
            })
            .unwrap_or_else(RequestId::generate);
        let company = envelope.and_then(|e| e.company.clone()).or_else(|| {
            record
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .and_then(|k| CompanySlug::parse(k).ok())
        });
        let letter = DeadLetter {
            file_id: envelope.and_then(|e| e.event.file_id()),
            error,
            source_topic: record.topic().to_owned(),
            source_partition: record.partition(),
            source_offset: record.offset(),
            original_value: String::from_utf8_lossy(record.payload().unwrap_or_default())
                .into_owned(),
            original_headers: headers,
        };
        Envelope::new(request_id, company, Event::DeadLetter(letter))
    }

    /// Commits, for every partition still assigned, the offset of its
    /// first record not finished. A failed commit only means records come
    /// again, which the ledger absorbs.
    async fn commit(&self, offsets: &mut OffsetTracker) {
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

fn loaded_event(
    file: &FileExtractSuccess,
    rows: std::collections::BTreeMap<String, u64>,
    duration_ms: u64,
) -> Event {
    Event::FileLoaded(FileLoaded {
        file_id: file.file_id,
        rows,
        duration_ms,
    })
}

fn invalid_event(file: &FileExtractSuccess, errors: Vec<FieldError>) -> Event {
    Event::ValidationError(ValidationError {
        file_id: file.file_id,
        s3_key: file.s3_key.clone(),
        errors,
    })
}
