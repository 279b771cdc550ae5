//! `cmd-processor replay FILE_ID [COMPANY]`: processes a stored file again,
//! whatever the ledger says about it: after a business-rule change (an
//! `invalid` file that is valid now), or to restore a company's rows that
//! were damaged by hand.
//!
//! It publishes a fresh `FileExtractSuccess` marked `replay`; the processor
//! loads the file again and replaces the ledger row's outcome (one row per
//! file, `replays` counting). The file keeps its original `received_at`, so
//! a replay never overwrites data that came from a file received later.
//! A file the ledger does not know (it never reached the processor) can be
//! replayed by naming its company; a dead-lettered record is better
//! re-driven (`redrive`), which keeps its original event.

use prometheus::Registry;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use etl_core::bus::{BusError, EventPublisher};
use etl_core::dataset::{DatasetError, DatasetName};
use etl_core::domain::{CompanySlug, FileId, RequestId, SlugError};
use etl_core::events::{COMPANIES_DATASET, Envelope, Event, FileExtractSuccess};
use etl_core::metrics::DependencyTimer;
use etl_core::storage::{ObjectStore, StoreError, file_key};

use crate::db;
use crate::settings::ProcessorSettings;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("FILE_ID {0:?} is not a file id (a UUID as in the api's answer)")]
    FileId(String),
    #[error("COMPANY {company:?} is not a company slug: {source}")]
    Company {
        company: String,
        #[source]
        source: SlugError,
    },
    #[error(
        "file {0} is not in the ledger: it never reached the processor. A dead-lettered \
         file is re-driven with `redrive`; otherwise name its company: replay {0} COMPANY"
    )]
    Unknown(FileId),
    #[error("the ledger says file {file_id} belongs to {ledger:?}, not {given:?}")]
    OtherCompany {
        file_id: FileId,
        ledger: String,
        given: String,
    },
    #[error("the object of file {file_id} is gone from S3 ({key}); nothing to replay")]
    ObjectMissing { file_id: FileId, key: String },
    #[error("the object at {key} does not hold file {file_id} (its content hash differs)")]
    ContentMismatch { file_id: FileId, key: String },
    #[error("the ledger row of file {file_id} names no usable dataset: {source}")]
    Dataset {
        file_id: FileId,
        #[source]
        source: DatasetError,
    },
    #[error("reading the ledger failed: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// What was published.
#[derive(Debug)]
pub struct Replayed {
    pub file_id: FileId,
    pub company: CompanySlug,
    /// The ledger status before the replay, `None` if it had no row.
    pub previous_status: Option<String>,
    /// The request id of the replay, to follow it in logs and events.
    pub request_id: RequestId,
    /// The replay's trace, when traces are exported: a `replay` span
    /// whose `publish` the processor's handling of the file continues.
    pub trace_id: Option<String>,
}

pub async fn replay(
    settings: &ProcessorSettings,
    file_id: &str,
    company: Option<&str>,
) -> Result<Replayed, ReplayError> {
    let span = tracing::info_span!(
        "replay",
        file_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    etl_core::traces::record_trace_id(&span);
    let trace_id = etl_core::traces::exported_trace_id(&span);
    let replayed = republish(settings, file_id, company)
        .instrument(span)
        .await?;
    Ok(Replayed {
        trace_id,
        ..replayed
    })
}

/// Finds the file, checks its object, and announces it again.
async fn republish(
    settings: &ProcessorSettings,
    file_id: &str,
    company: Option<&str>,
) -> Result<Replayed, ReplayError> {
    let file_id: FileId = file_id
        .parse()
        .map_err(|_| ReplayError::FileId(file_id.to_owned()))?;
    let given = company
        .map(|c| {
            CompanySlug::parse(c).map_err(|source| ReplayError::Company {
                company: c.to_owned(),
                source,
            })
        })
        .transpose()?;

    let pool = etl_core::db::pool(&settings.database)?;
    let row = db::find(&pool, file_id).await?;
    let (company, dataset, previous_status) = locate(file_id, row, given)?;

    let registry = Registry::new();
    let timer = DependencyTimer::new(&registry);
    let store = ObjectStore::new(&settings.s3, timer.clone());
    let key = file_key(dataset.as_str(), &company, file_id);
    let bytes = store.get(&key).await.map_err(|e| match e {
        StoreError::NotFound { key } => ReplayError::ObjectMissing { file_id, key },
        other => ReplayError::Store(other),
    })?;
    // File ids are content-addressed: the object must still be that file.
    let sha: [u8; 32] = Sha256::digest(&bytes).into();
    if FileId::for_content(&company, &sha) != file_id {
        return Err(ReplayError::ContentMismatch { file_id, key });
    }

    let request_id = RequestId::generate();
    let envelope = Envelope::new(
        request_id.clone(),
        Some(company.clone()),
        Some(dataset),
        Event::FileExtractSuccess(FileExtractSuccess {
            file_id,
            filename: format!("{file_id}.json"),
            s3_bucket: store.bucket().to_owned(),
            s3_key: key,
            size_bytes: bytes.len() as u64,
            sha256: hex::encode(sha),
            etag: String::new(),
            replay: true,
        }),
    );
    let publisher = EventPublisher::new(&settings.kafka, &registry, timer)?;
    publisher.publish(&envelope).await?;
    Ok(Replayed {
        file_id,
        company,
        previous_status,
        request_id,
        trace_id: None,
    })
}

/// The file's company, dataset and ledger status: from its ledger row
/// (a company given must be the row's), else from the company given (a
/// file the ledger does not know is taken for a company file).
fn locate(
    file_id: FileId,
    row: Option<db::LedgerRow>,
    given: Option<CompanySlug>,
) -> Result<(CompanySlug, DatasetName, Option<String>), ReplayError> {
    match (row, given) {
        (Some(row), given) => {
            if let Some(g) = given.filter(|g| g.as_str() != row.company) {
                return Err(ReplayError::OtherCompany {
                    file_id,
                    ledger: row.company,
                    given: g.as_str().to_owned(),
                });
            }
            let company =
                CompanySlug::parse(&row.company).map_err(|source| ReplayError::Company {
                    company: row.company.clone(),
                    source,
                })?;
            let dataset = DatasetName::parse(&row.dataset)
                .map_err(|source| ReplayError::Dataset { file_id, source })?;
            Ok((company, dataset, Some(row.status)))
        }
        (None, Some(given)) => Ok((given, companies(), None)),
        (None, None) => Err(ReplayError::Unknown(file_id)),
    }
}

fn companies() -> DatasetName {
    DatasetName::parse(COMPANIES_DATASET).expect("a valid dataset name")
}
