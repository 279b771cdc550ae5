//! The events of the pipeline, defined once and used by every producer and
//! consumer. On the wire each is one JSON object: the common envelope fields
//! and the event's own fields side by side, `event_type` naming the variant.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::dataset::DatasetName;
use crate::domain::{CompanySlug, FileId, RequestId, derived_uuid};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub request_id: RequestId,
    /// `None` when the company could not be determined (an unparseable body).
    pub company: Option<CompanySlug>,
    /// The dataset the file belongs to, or the upload was posted to; `None`
    /// for a record the processor could not read, and in events written
    /// before every event carried it (only `FileExtractSuccess` did).
    #[serde(default)]
    pub dataset: Option<DatasetName>,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type")]
pub enum Event {
    FileExtractSuccess(FileExtractSuccess),
    FileExtractError(FileExtractError),
    ValidationError(ValidationError),
    FileLoaded(FileLoaded),
    DeadLetter(DeadLetter),
}

/// The dataset of company files, the one the pipeline was built for.
pub const COMPANIES_DATASET: &str = "companies";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileExtractSuccess {
    pub file_id: FileId,
    pub filename: String,
    pub s3_bucket: String,
    pub s3_key: String,
    pub size_bytes: u64,
    /// Hex SHA-256 of the stored object.
    pub sha256: String,
    pub etag: String,
    /// Set by `cmd-processor replay`: process the file again even though the
    /// ledger already has an outcome for it (an ordinary re-post of the same
    /// content is skipped as a duplicate).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileExtractError {
    /// Machine-readable: the same code as the HTTP error (`invalid_json`, ...).
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u64>,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationError {
    pub file_id: FileId,
    pub s3_key: String,
    pub errors: Vec<FieldError>,
}

/// One failed rule, located by a JSON Pointer into the company document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileLoaded {
    pub file_id: FileId,
    /// Rows written per table.
    pub rows: BTreeMap<String, u64>,
    pub duration_ms: u64,
}

/// A record the processor could not handle at all, kept with its origin so it
/// can be inspected and re-driven.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<FileId>,
    pub error: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// The original record value, as text (lossy if it was not UTF-8).
    pub original_value: String,
    #[serde(default)]
    pub original_headers: BTreeMap<String, String>,
}

impl Event {
    /// Every `event_type` on the wire, one per variant.
    pub const TYPE_NAMES: [&'static str; 5] = [
        "FileExtractSuccess",
        "FileExtractError",
        "ValidationError",
        "FileLoaded",
        "DeadLetter",
    ];

    pub fn type_name(&self) -> &'static str {
        match self {
            Event::FileExtractSuccess(_) => "FileExtractSuccess",
            Event::FileExtractError(_) => "FileExtractError",
            Event::ValidationError(_) => "ValidationError",
            Event::FileLoaded(_) => "FileLoaded",
            Event::DeadLetter(_) => "DeadLetter",
        }
    }

    pub fn file_id(&self) -> Option<FileId> {
        match self {
            Event::FileExtractSuccess(e) => Some(e.file_id),
            Event::ValidationError(e) => Some(e.file_id),
            Event::FileLoaded(e) => Some(e.file_id),
            Event::DeadLetter(e) => e.file_id,
            Event::FileExtractError(_) => None,
        }
    }
}

impl Envelope {
    pub fn new(
        request_id: RequestId,
        company: Option<CompanySlug>,
        dataset: Option<DatasetName>,
        event: Event,
    ) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            occurred_at: Utc::now(),
            request_id,
            company,
            dataset,
            event,
        }
    }

    /// An event caused by `cause` (the processor's outcome of a file). Its id
    /// is derived from the cause's id and the event type, so re-emitting the
    /// outcome after a crash yields the same `event_id` and consumers can
    /// drop the repeat.
    pub fn caused_by(cause: &Envelope, event: Event) -> Self {
        Self {
            event_id: derived_uuid(&[cause.event_id.as_bytes(), event.type_name().as_bytes()]),
            occurred_at: Utc::now(),
            request_id: cause.request_id.clone(),
            company: cause.company.clone(),
            dataset: cause.dataset.clone(),
            event,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail: no maps with non-string keys.
        serde_json::to_vec(self).expect("envelope serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn success() -> Envelope {
        Envelope::new(
            RequestId::parse("req-1").unwrap(),
            Some(CompanySlug::parse("acme").unwrap()),
            Some(DatasetName::parse("companies").unwrap()),
            Event::FileExtractSuccess(FileExtractSuccess {
                file_id: "0190b2c4-0000-8000-8000-000000000001".parse().unwrap(),
                filename: "c.json".into(),
                s3_bucket: "imports".into(),
                s3_key: "acme/files/0190b2c4-0000-8000-8000-000000000001.json".into(),
                size_bytes: 42,
                sha256: "ab".repeat(32),
                etag: "\"e\"".into(),
                replay: false,
            }),
        )
    }

    #[test]
    fn envelope_fields_sit_beside_the_event_fields() {
        let v: serde_json::Value = serde_json::from_slice(&success().to_json()).unwrap();
        assert_eq!(v["event_type"], "FileExtractSuccess");
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["company"], "acme");
        assert_eq!(v["file_id"], "0190b2c4-0000-8000-8000-000000000001");
        assert_eq!(v["dataset"], "companies");
        assert!(v["occurred_at"].as_str().unwrap().contains('T'), "RFC 3339");
    }

    #[test]
    fn envelopes_round_trip() {
        let e = success();
        assert_eq!(Envelope::from_json(&e.to_json()).unwrap(), e);
    }

    #[test]
    fn an_outcome_written_before_events_named_their_dataset_still_reads() {
        let mut v: serde_json::Value = serde_json::from_slice(&success().to_json()).unwrap();
        v["event_type"] = json!("FileLoaded");
        v["rows"] = json!({"companies": 1});
        v["duration_ms"] = json!(3);
        v.as_object_mut().unwrap().remove("dataset");
        let read = Envelope::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(read.dataset, None);
        assert_eq!(read.event.type_name(), "FileLoaded");
    }

    #[test]
    fn an_event_naming_an_impossible_dataset_is_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&success().to_json()).unwrap();
        v["dataset"] = json!("../companies");
        let err = Envelope::from_json(v.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("../companies"), "{err}");
    }

    #[test]
    fn unknown_company_is_null_and_optional_fields_are_omitted() {
        let e = Envelope::new(
            RequestId::generate(),
            None,
            None,
            Event::FileExtractError(FileExtractError {
                reason: "invalid_json".into(),
                message: "EOF while parsing".into(),
                line: Some(3),
                column: None,
                size_bytes: 10,
            }),
        );
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["company"], json!(null));
        assert_eq!(v["dataset"], json!(null));
        assert_eq!(v["line"], 3);
        assert!(v.get("column").is_none());
        assert_eq!(Envelope::from_json(&e.to_json()).unwrap(), e);
    }

    #[test]
    fn an_outcome_has_the_same_id_however_often_it_is_emitted() {
        let cause = success();
        let loaded = || {
            Envelope::caused_by(
                &cause,
                Event::FileLoaded(FileLoaded {
                    file_id: cause.event.file_id().unwrap(),
                    rows: BTreeMap::new(),
                    duration_ms: 1,
                }),
            )
        };
        assert_eq!(loaded().event_id, loaded().event_id);
        assert_ne!(loaded().event_id, cause.event_id);
        // Stored by consumers to drop repeats: stable across versions.
        let mut pinned = cause.clone();
        pinned.event_id = "0190b2c4-0000-8000-8000-000000000001".parse().unwrap();
        assert_eq!(
            Envelope::caused_by(&pinned, loaded().event)
                .event_id
                .to_string(),
            "88fb2f28-823a-8c85-b0a2-7b3cf70fb6b7"
        );
        assert_eq!(loaded().request_id, cause.request_id);
        assert_eq!(loaded().company, cause.company);
        assert_eq!(loaded().dataset, cause.dataset);
    }

    #[test]
    fn type_names_are_exactly_the_variants() {
        // serde names every variant it knows when it meets an unknown one.
        let err = serde_json::from_value::<Event>(json!({"event_type": "Nope"}))
            .unwrap_err()
            .to_string();
        let mut known: Vec<&str> = err
            .split("expected one of ")
            .nth(1)
            .expect("serde lists the variants")
            .split(", ")
            .map(|v| v.trim_matches(|c: char| c == '`' || !c.is_alphanumeric()))
            .collect();
        known.sort_unstable();
        let mut listed = Event::TYPE_NAMES.to_vec();
        listed.sort_unstable();
        assert_eq!(listed, known, "{err}");
    }

    #[test]
    fn an_event_with_an_unknown_type_is_rejected() {
        let bad = json!({"event_type": "Nope", "event_id": Uuid::new_v4(),
            "occurred_at": "2026-01-01T00:00:00Z", "request_id": "r", "company": null});
        assert!(Envelope::from_json(bad.to_string().as_bytes()).is_err());
    }
}
