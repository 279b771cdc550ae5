//! What came of one record, and the event that tells the pipeline so:
//! `FileLoaded`, `ValidationError`, or a `DeadLetter` carrying the record.

use std::collections::BTreeMap;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;

use etl_core::bus::{HEADER_REQUEST_ID, headers_map};
use etl_core::dataset::DatasetName;
use etl_core::domain::{CompanySlug, RequestId};
use etl_core::events::{
    DeadLetter, Envelope, Event, FieldError, FileExtractSuccess, FileLoaded, ValidationError,
};

/// What happened to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
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
    pub fn label(self) -> &'static str {
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
pub struct Handled {
    pub outcome: Outcome,
    pub announce: Option<Envelope>,
    /// The file's dataset, for the counters; `None` for a record that did
    /// not name one.
    pub dataset: Option<DatasetName>,
}

impl Handled {
    pub fn quietly(outcome: Outcome, dataset: Option<DatasetName>) -> Self {
        Self {
            outcome,
            announce: None,
            dataset,
        }
    }

    pub fn announcing(outcome: Outcome, event: Envelope) -> Self {
        Self {
            outcome,
            dataset: event.dataset.clone(),
            announce: Some(event),
        }
    }

    /// The record goes to the dead-letter topic, as it came.
    pub fn dead_letter(record: &OwnedMessage, envelope: Option<&Envelope>, error: String) -> Self {
        Self::announcing(
            Outcome::DeadLettered,
            dead_letter_event(record, envelope, error),
        )
    }
}

pub fn loaded_event(
    file: &FileExtractSuccess,
    rows: BTreeMap<String, u64>,
    duration_ms: u64,
) -> Event {
    Event::FileLoaded(FileLoaded {
        file_id: file.file_id,
        rows,
        duration_ms,
    })
}

pub fn invalid_event(file: &FileExtractSuccess, errors: Vec<FieldError>) -> Event {
    Event::ValidationError(ValidationError {
        file_id: file.file_id,
        s3_key: file.s3_key.clone(),
        errors,
    })
}

/// A `DeadLetter` carrying `record` as it came, with the request and
/// company of its event when it could be read, else of its header and key.
pub fn dead_letter_event(
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
        original_value: String::from_utf8_lossy(record.payload().unwrap_or_default()).into_owned(),
        original_headers: headers,
    };
    let dataset = envelope.and_then(|e| e.dataset.clone());
    Envelope::new(request_id, company, dataset, Event::DeadLetter(letter))
}
