//! The consume loop: `FileExtractSuccess` records spread over lanes by
//! company, each file's outcome made durable (database and/or outcome
//! event), then offsets committed up to the first file not finished.
//!
//! Delivery is at-least-once; the `import_files` ledger turns it into an
//! effectively-once effect: a redelivered record finds its ledger row and
//! only re-emits the recorded outcome (with the same derived `event_id`).
//!
//! - [`dispatch`]: receiving, flow control (pausing the partitions), and
//!   handing each record to its company's lane;
//! - [`lane`]: a lane's files one after another, retried while their
//!   partition is still ours, each done once its outcome event is
//!   acknowledged;
//! - [`commit`]: finished offsets, committed.
//!
//! What happens to one file is [`crate::process_file`]; the events it ends
//! with, [`crate::outcome`].

mod commit;
mod dispatch;
mod lane;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::OwnedMessage;

use etl_core::bus::{EventPublisher, Injector};
use etl_core::dataset::DatasetName;

use crate::metrics::ProcessorMetrics;
use crate::offsets::Ticket;
use crate::outcome::Outcome;
use crate::process_file::FileProcessor;
use crate::progress::Progress;
use crate::settings::ProcessorSettings;

pub struct Worker {
    consumer: Arc<StreamConsumer>,
    files: FileProcessor,
    publisher: EventPublisher,
    metrics: ProcessorMetrics,
    retry_base: Duration,
    retry_max: Duration,
    /// Files handled at once, each in its own lane.
    concurrency: NonZeroUsize,
    progress: Progress,
    /// Nothing, unless a test puts the consumer into the fatal state.
    consumer_fault: Injector,
}

impl Worker {
    pub fn new(
        consumer: Arc<StreamConsumer>,
        files: FileProcessor,
        publisher: EventPublisher,
        metrics: ProcessorMetrics,
        progress: Progress,
        settings: &ProcessorSettings,
    ) -> Self {
        Self {
            consumer,
            files,
            publisher,
            metrics,
            retry_base: settings.retry_base,
            retry_max: settings.retry_max,
            concurrency: settings.concurrency,
            progress,
            consumer_fault: settings.kafka.consumer_fault(),
        }
    }

    pub fn consumer(&self) -> &Arc<StreamConsumer> {
        &self.consumer
    }
}

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
    /// Of the file, for the counters.
    dataset: Option<DatasetName>,
}
