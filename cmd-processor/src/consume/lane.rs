//! A lane: its company's files one after another, in the order received.
//! A file whose dependency fails is retried with backoff while its
//! partition is still ours (the lane waits, the other lanes and the
//! consumer go on); a file is done once its outcome event is acknowledged.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use etl_core::bus::{BusError, HEADER_REQUEST_ID, Pending, headers_map};
use etl_core::events::Envelope;
use etl_core::shutdown::sleep_or_cancel;

use super::{Done, Job, Worker};
use crate::outcome::{Handled, Outcome};

/// How a step retried by [`Worker::retry_while_assigned`] ended.
enum Retried<T> {
    Done(T),
    /// The partition was taken away meanwhile: its new owner takes the file.
    HandedOver,
    ShutDown,
}

impl Worker {
    /// Ends when the dispatcher drops its sender: on shutdown too, after
    /// the records already handed over. They precede every record not
    /// handed over yet, so the final commit covers all that was done and
    /// nothing is done twice after a restart.
    pub(super) async fn lane(
        self: Arc<Self>,
        mut jobs: mpsc::Receiver<Job>,
        done: mpsc::UnboundedSender<Done>,
        shutdown: CancellationToken,
    ) {
        while let Some(job) = jobs.recv().await {
            let record = &job.record;
            let span = record_span(record);
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
                dataset: handled.dataset,
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
            let enqueued = self
                .publisher
                .enqueue(&event)
                .instrument(span.clone())
                .await;
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

    /// Nothing after the file is committed until it is done.
    async fn handle_with_retries(
        &self,
        record: &OwnedMessage,
        started: Instant,
        shutdown: &CancellationToken,
    ) -> Option<Handled> {
        let files = &self.files;
        let retried = self
            .retry_while_assigned(
                (record.topic(), record.partition()),
                shutdown,
                "transient failure; will retry without committing",
                move || async move {
                    files
                        .handle(record, started)
                        .await
                        .map_err(|t| (t.cause, t.message))
                },
            )
            .await;
        match retried {
            Retried::Done(handled) => {
                tracing::info!(
                    outcome = handled.outcome.label(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "file handled"
                );
                Some(handled)
            }
            Retried::HandedOver => Some(Handled::quietly(Outcome::HandedOver, None)),
            Retried::ShutDown => None,
        }
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
        enqueued: Result<Pending, BusError>,
        event: Envelope,
        mut finished: Done,
        started: Instant,
        done: mpsc::UnboundedSender<Done>,
        shutdown: CancellationToken,
    ) {
        let (worker, event) = (&*self, &event);
        let mut first = Some(enqueued);
        let retried = self
            .retry_while_assigned(
                (&finished.topic, finished.partition),
                &shutdown,
                "the outcome event was not acknowledged; will publish it again",
                move || {
                    let enqueued = first.take();
                    async move {
                        let pending = match enqueued {
                            Some(enqueued) => enqueued,
                            None => worker.publisher.enqueue(event).await,
                        };
                        match pending {
                            Ok(pending) => pending.delivered().await.map(drop),
                            Err(e) => Err(e),
                        }
                        .map_err(|e| ("kafka", e))
                    }
                },
            )
            .await;
        match retried {
            Retried::Done(()) => {}
            Retried::HandedOver => finished.outcome = Outcome::HandedOver,
            Retried::ShutDown => return,
        }
        self.finish(&done, finished, started);
    }

    /// Runs `step` until it succeeds, waiting with backoff after each
    /// failure (`cause` counted in `processor_retries_total`). Gives up
    /// on shutdown, and when the record's partition was taken away
    /// meanwhile.
    async fn retry_while_assigned<T, E, Fut>(
        &self,
        (topic, partition): (&str, i32),
        shutdown: &CancellationToken,
        retrying: &'static str,
        mut step: impl FnMut() -> Fut,
    ) -> Retried<T>
    where
        E: Display,
        Fut: Future<Output = Result<T, (&'static str, E)>>,
    {
        let mut attempt = 0u32;
        loop {
            let (cause, error) = match step().await {
                Ok(value) => return Retried::Done(value),
                Err(failure) => failure,
            };
            self.metrics.retry(cause);
            let delay = etl_core::backoff_delay(attempt, self.retry_base, self.retry_max);
            attempt += 1;
            tracing::warn!(cause, %error, attempt, retry_in_ms = delay.as_millis() as u64, "{retrying}");
            if sleep_or_cancel(delay, shutdown).await {
                return Retried::ShutDown;
            }
            if !self.still_assigned(topic, partition) {
                tracing::info!("partition revoked while retrying; its new owner takes the file");
                return Retried::HandedOver;
            }
        }
    }

    /// The record's outcome is durable: counted, and its offset may be
    /// committed. `false` once the consume loop is gone.
    fn finish(&self, done: &mpsc::UnboundedSender<Done>, finished: Done, started: Instant) -> bool {
        let dataset = finished.dataset.as_ref().map_or("", |d| d.as_str());
        self.metrics.file(dataset, finished.outcome.label());
        if finished.outcome != Outcome::HandedOver {
            self.metrics.load_seconds(started.elapsed().as_secs_f64());
        }
        done.send(finished).is_ok()
    }

    fn still_assigned(&self, topic: &str, partition: i32) -> bool {
        // When in doubt keep the file: the ledger absorbs a double attempt.
        self.consumer.assignment().map_or(true, |assigned| {
            assigned.find_partition(topic, partition).is_some()
        })
    }
}

/// The span of one record's handling. The request id comes from the
/// header first, so that even a record whose payload is unreadable is
/// logged with the request it came from.
fn record_span(record: &OwnedMessage) -> tracing::Span {
    let headers = headers_map(record.headers());
    let span = etl_core::consumer_span!(
        "record",
        record,
        request_id = headers.get(HEADER_REQUEST_ID),
        file_id = tracing::field::Empty,
        company = tracing::field::Empty,
    );
    // The file's trace goes on from the producer's publish span.
    etl_core::traces::continue_from(&span, headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    span
}
