//! Group commit: files validated in many lanes at once are written to
//! Postgres together, one transaction for all that are waiting, instead of
//! one transaction (and eight round trips) each.
//!
//! A lane hands its file over and waits for the answer, so a company's
//! files still load one after another. While one transaction runs, the
//! files that become ready queue up for the next: the busier the
//! processor, the larger its transactions; a file that comes alone is
//! written at once, not held back for others to join it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use prometheus::Histogram;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use etl_core::metrics::DependencyTimer;
use etl_core::traces::SpanLink;

use crate::catalog::Loadable;
use crate::db::{self, FileMeta, Load, Rows, Written};
use crate::record::Record;

/// What a lane gets back: a failure is shared by every file of the
/// transaction.
pub type Loaded = Result<Written<Rows>, Arc<sqlx::Error>>;

struct Request {
    meta: FileMeta,
    record: Record,
    dataset: Arc<Loadable>,
    started: Instant,
    /// The file's span: the transaction that loads it links to it.
    asked_in: SpanLink,
    answer: oneshot::Sender<Loaded>,
}

/// The lanes' handle on the loader task.
#[derive(Clone)]
pub struct Loader {
    requests: mpsc::Sender<Request>,
}

impl Loader {
    /// Starts the loader task; it ends when every `Loader` is dropped. At
    /// most `max_files` go into one transaction.
    pub fn spawn(
        pool: PgPool,
        timer: DependencyTimer,
        files_per_transaction: Histogram,
        max_files: usize,
    ) -> Self {
        let (requests, queue) = mpsc::channel(max_files.max(1));
        let task = Batches {
            pool,
            timer,
            files_per_transaction,
            max_files: max_files.max(1),
        };
        tokio::spawn(task.run(queue));
        Self { requests }
    }

    /// Loads one file, with whichever others are ready at the same time.
    pub async fn load(
        &self,
        meta: FileMeta,
        dataset: Arc<Loadable>,
        record: Record,
        started: Instant,
    ) -> Loaded {
        let (answer, answered) = oneshot::channel();
        let request = Request {
            meta,
            record,
            dataset,
            started,
            asked_in: SpanLink::current(),
            answer,
        };
        let gone = || Arc::new(sqlx::Error::PoolClosed);
        if self.requests.send(request).await.is_err() {
            return Err(gone());
        }
        answered.await.unwrap_or_else(|_| Err(gone()))
    }
}

struct Batches {
    pool: PgPool,
    timer: DependencyTimer,
    files_per_transaction: Histogram,
    max_files: usize,
}

impl Batches {
    async fn run(self, mut queue: mpsc::Receiver<Request>) {
        // Files whose key is already in the transaction being formed: a
        // statement writes a row once, so they go into the next.
        let mut held: VecDeque<Request> = VecDeque::new();
        loop {
            let first = match held.pop_front() {
                Some(request) => request,
                None => match queue.recv().await {
                    Some(request) => request,
                    None => return,
                },
            };
            let mut keys = HashSet::from([key_of(&first)]);
            let mut batch = vec![first];
            let mut still_held = VecDeque::new();
            while batch.len() < self.max_files {
                let next = match held.pop_front() {
                    Some(request) => request,
                    None => match queue.try_recv() {
                        Ok(request) => request,
                        Err(_) => break,
                    },
                };
                if keys.insert(key_of(&next)) {
                    batch.push(next);
                } else {
                    still_held.push_back(next);
                }
            }
            still_held.extend(held.drain(..));
            held = still_held;
            self.write(batch).await;
        }
    }

    async fn write(&self, batch: Vec<Request>) {
        let loads: Vec<Load<'_>> = batch.iter().map(load_of).collect();
        let span = transaction_span(&batch);
        match self.transaction(&loads).instrument(span).await {
            Ok(written) => {
                for (request, written) in batch.into_iter().zip(written) {
                    let _ = request.answer.send(Ok(written));
                }
            }
            // One file the database refuses must not fail the others:
            // each on its own, so the refusal lands on the file it is about.
            Err(e) if batch.len() > 1 && db::is_permanent(&e) => {
                tracing::info!(files = batch.len(), error = %e, "the database refused a batch; loading its files one by one");
                for request in batch {
                    let span = transaction_span(std::slice::from_ref(&request));
                    let answer = self
                        .transaction(&[load_of(&request)])
                        .instrument(span)
                        .await
                        .map(|mut written| written.remove(0))
                        .map_err(Arc::new);
                    let _ = request.answer.send(answer);
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for request in batch {
                    let _ = request.answer.send(Err(e.clone()));
                }
            }
        }
    }

    /// One load transaction, counted and timed.
    async fn transaction(&self, loads: &[Load<'_>]) -> Result<Vec<Written<Rows>>, sqlx::Error> {
        self.files_per_transaction.observe(loads.len() as f64);
        self.timer
            .time("postgres", "load_files", db::load(&self.pool, loads))
            .await
    }
}

/// One transaction serves several files: its span links to each file's.
fn transaction_span(batch: &[Request]) -> tracing::Span {
    let span = tracing::info_span!(
        "load_files",
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = "transaction",
        files = batch.len(),
    );
    etl_core::traces::add_links(&span, batch.iter().map(|r| &r.asked_in));
    span
}

fn load_of(request: &Request) -> Load<'_> {
    Load {
        meta: &request.meta,
        record: &request.record,
        writer: &request.dataset.writer,
        started: request.started,
    }
}

fn key_of(request: &Request) -> (String, String) {
    (request.dataset.name.clone(), request.record.key.clone())
}
