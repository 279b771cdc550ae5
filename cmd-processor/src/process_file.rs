//! What happens to one file: its record read, its stored bytes fetched and
//! validated, then the company loaded or the rejection recorded. The
//! `import_files` ledger decides what a redelivery or a repost of the same
//! content gets: the outcome it recorded, published again, or nothing.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use sqlx::PgPool;
use uuid::Uuid;

use etl_core::dataset::DatasetName;
use etl_core::domain::CompanySlug;
use etl_core::events::{Envelope, Event, FieldError, FileExtractSuccess};
use etl_core::metrics::DependencyTimer;
use etl_core::storage::{ObjectStore, StoreError, file_key};

use crate::catalog::{Catalog, Loadable};
use crate::db::{self, FileMeta, LedgerRow, Rejection, Rows, Written};
use crate::loader::Loader;
use crate::metrics::ProcessorMetrics;
use crate::outcome::{Handled, Outcome, dead_letter_event, invalid_event, loaded_event};
use crate::record::Record;

/// A failure worth retrying: the dependency may come back.
#[derive(Debug)]
pub struct Transient {
    pub cause: &'static str,
    pub message: String,
}

impl Transient {
    fn db(e: impl std::fmt::Display) -> Self {
        Self {
            cause: "postgres",
            message: e.to_string(),
        }
    }
}

/// Why a file's steps end early: its outcome is known already, or a
/// dependency failed and the file is to be tried again.
enum Stop {
    Handled(Box<Handled>),
    Transient(Transient),
}

impl Stop {
    fn handled(handled: Handled) -> Self {
        Stop::Handled(Box::new(handled))
    }
}

impl From<Transient> for Stop {
    fn from(t: Transient) -> Self {
        Stop::Transient(t)
    }
}

/// A `FileExtractSuccess` record, read and checked.
struct FileEvent<'r> {
    record: &'r OwnedMessage,
    envelope: Envelope,
    file: FileExtractSuccess,
    dataset: DatasetName,
    company: CompanySlug,
    /// Rebuilt from the company and the file id, never taken from the event.
    s3_key: String,
}

impl FileEvent<'_> {
    fn dead_letter(&self, error: String) -> Stop {
        Stop::handled(Handled::dead_letter(
            self.record,
            Some(&self.envelope),
            error,
        ))
    }

    fn meta(&self, place: Place) -> FileMeta {
        FileMeta {
            file_id: self.file.file_id,
            dataset: self.dataset.as_str().to_owned(),
            company: self.company.clone(),
            s3_key: self.s3_key.clone(),
            sha256: self.file.sha256.clone(),
            size_bytes: self.file.size_bytes,
            request_id: self.envelope.request_id.clone(),
            event_id: self.envelope.event_id,
            received_at: place.received_at,
            replaces: place.replaces,
        }
    }
}

/// Where the file goes in its company's history.
struct Place {
    received_at: DateTime<Utc>,
    /// A replay: the ledger row's event this outcome replaces.
    replaces: Option<Uuid>,
}

pub struct FileProcessor {
    pool: PgPool,
    store: ObjectStore,
    catalog: Catalog,
    loader: Loader,
    metrics: ProcessorMetrics,
    timer: DependencyTimer,
}

impl FileProcessor {
    pub fn new(
        catalog: Catalog,
        pool: PgPool,
        store: ObjectStore,
        loader: Loader,
        metrics: ProcessorMetrics,
        timer: DependencyTimer,
    ) -> Self {
        Self {
            pool,
            store,
            catalog,
            loader,
            metrics,
            timer,
        }
    }

    /// What happens to the file `record` announces; `Err` only for a
    /// failure worth retrying.
    pub async fn handle(
        &self,
        record: &OwnedMessage,
        started: Instant,
    ) -> Result<Handled, Transient> {
        match self.steps(record, started).await {
            Ok(handled) => Ok(handled),
            Err(Stop::Handled(handled)) => Ok(*handled),
            Err(Stop::Transient(t)) => Err(t),
        }
    }

    async fn steps(&self, record: &OwnedMessage, started: Instant) -> Result<Handled, Stop> {
        let event = read_event(record)?;
        let Some(dataset) = self.catalog.get(event.dataset.as_str()) else {
            let known = self.catalog.names().join(", ");
            let why = format!(
                "dataset {:?} is not one this processor loads ({known})",
                event.dataset.as_str()
            );
            return Err(event.dead_letter(why));
        };
        let place = self.place(&event).await?;
        let bytes = self.download(&event, &place).await?;
        let meta = event.meta(place);
        let validate = tracing::info_span!("validate", dataset = event.dataset.as_str());
        match validate.in_scope(|| dataset.read(&bytes)) {
            Err(errors) => self.reject_invalid(&event, &meta, errors).await,
            Ok(record) => {
                self.load(&event, meta, dataset.clone(), record, started)
                    .await
            }
        }
    }

    /// A new file is not looked up first: the ledger's primary key refuses
    /// a second row, and only then is the recorded outcome read (a
    /// redelivery, or the same content posted again). That saves a query
    /// per file; a redelivered file is downloaded again.
    async fn place(&self, event: &FileEvent<'_>) -> Result<Place, Stop> {
        let new = Place {
            received_at: event.envelope.occurred_at,
            replaces: None,
        };
        if !event.file.replay {
            return Ok(new);
        }
        match self.find(&event.file).await? {
            Some(row) if row.source_event_id == event.envelope.event_id => {
                Err(Stop::handled(already_recorded(event, row)))
            }
            Some(row) => {
                // The file keeps its place in the company's history: a
                // replay never overwrites data from a file received later.
                tracing::info!(previous = %row.status, "replaying a recorded file");
                Ok(Place {
                    received_at: row.received_at,
                    replaces: Some(row.source_event_id),
                })
            }
            None => Ok(new),
        }
    }

    async fn download(&self, event: &FileEvent<'_>, place: &Place) -> Result<Vec<u8>, Stop> {
        match self.store.get(&event.s3_key).await {
            Ok(bytes) => Ok(bytes),
            Err(e @ StoreError::NotFound { .. }) => {
                // Deleted after it was loaded: a redelivery still gets the
                // recorded outcome.
                if place.replaces.is_none()
                    && let Some(row) = self.find(&event.file).await?
                {
                    return Err(Stop::handled(already_recorded(event, row)));
                }
                Err(event.dead_letter(e.to_string()))
            }
            Err(e @ StoreError::Unavailable { .. }) => Err(Stop::Transient(Transient {
                cause: "s3",
                message: e.to_string(),
            })),
        }
    }

    async fn reject_invalid(
        &self,
        event: &FileEvent<'_>,
        meta: &FileMeta,
        errors: Vec<FieldError>,
    ) -> Result<Handled, Stop> {
        self.record_rejection(event, meta, Rejection::Invalid, &errors)
            .await?;
        tracing::info!(errors = errors.len(), "file failed validation");
        let announce = Envelope::caused_by(&event.envelope, invalid_event(&event.file, errors));
        Ok(Handled::announcing(Outcome::Invalid, announce))
    }

    async fn load(
        &self,
        event: &FileEvent<'_>,
        meta: FileMeta,
        dataset: Arc<Loadable>,
        record: Record,
        started: Instant,
    ) -> Result<Handled, Stop> {
        match self
            .loader
            .load(meta.clone(), dataset, record, started)
            .await
        {
            Ok(Written::AlreadyRecorded) => Ok(self.recorded_before(event).await?),
            Ok(Written::Done(rows)) => Ok(self.loaded(event, rows, started)),
            Err(e) if db::is_permanent(&e) => self.refused_by_database(event, &meta, &e).await,
            Err(e) => Err(Transient::db(e).into()),
        }
    }

    fn loaded(&self, event: &FileEvent<'_>, rows: Rows, started: Instant) -> Handled {
        if rows.get("companies") == Some(&0) {
            tracing::info!("a newer file of this company is already loaded; company row kept");
        }
        for (table, n) in &rows {
            self.metrics.rows(table, *n);
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        let announce = Envelope::caused_by(
            &event.envelope,
            loaded_event(&event.file, rows, duration_ms),
        );
        Handled::announcing(Outcome::Loaded, announce)
    }

    /// The database refused the data for good: recorded as `failed`, and
    /// the record dead-lettered.
    async fn refused_by_database(
        &self,
        event: &FileEvent<'_>,
        meta: &FileMeta,
        e: &sqlx::Error,
    ) -> Result<Handled, Stop> {
        let error = FieldError {
            path: String::new(),
            message: format!("the database refused the file: {e}"),
        };
        self.record_rejection(event, meta, Rejection::Failed, std::slice::from_ref(&error))
            .await?;
        let letter = dead_letter_event(event.record, Some(&event.envelope), error.message);
        Ok(Handled::announcing(Outcome::Failed, letter))
    }

    /// Records the file's rejection in the ledger. If another consumer
    /// recorded the file first, what it recorded is the outcome.
    async fn record_rejection(
        &self,
        event: &FileEvent<'_>,
        meta: &FileMeta,
        rejection: Rejection,
        errors: &[FieldError],
    ) -> Result<(), Stop> {
        let rejected = db::record_rejected(&self.pool, meta, rejection, errors);
        let written = self
            .timer
            .time("postgres", "record_rejection", rejected)
            .await
            .map_err(Transient::db)?;
        match written {
            Written::AlreadyRecorded => Err(Stop::handled(self.recorded_before(event).await?)),
            Written::Done(()) => Ok(()),
        }
    }

    async fn find(&self, file: &FileExtractSuccess) -> Result<Option<LedgerRow>, Transient> {
        let found = db::find(&self.pool, file.file_id);
        self.timer
            .time("postgres", "find_ledger_row", found)
            .await
            .map_err(Transient::db)
    }

    /// The ledger refused a second row for the file: what it recorded
    /// decides.
    async fn recorded_before(&self, event: &FileEvent<'_>) -> Result<Handled, Transient> {
        match self.find(&event.file).await? {
            Some(row) => Ok(already_recorded(event, row)),
            // Ledger rows are never deleted; should one be, the next attempt
            // records the file anew.
            None => Err(Transient {
                cause: "postgres",
                message: format!("the ledger row of {} vanished", event.file.file_id),
            }),
        }
    }
}

/// Reads the record's event: a `FileExtractSuccess` of a company, pointing
/// at that company's key. Anything else is dead-lettered.
fn read_event(record: &OwnedMessage) -> Result<FileEvent<'_>, Stop> {
    let letter = |envelope: Option<&Envelope>, error: String| {
        Stop::handled(Handled::dead_letter(record, envelope, error))
    };
    let envelope = Envelope::from_json(record.payload().unwrap_or_default())
        .map_err(|e| letter(None, format!("the record is not a pipeline event: {e}")))?;
    let file_id = match &envelope.event {
        Event::FileExtractSuccess(file) => Some(file.file_id),
        _ => None,
    };
    etl_core::telemetry::record_fields(
        &tracing::Span::current(),
        [
            ("request_id", &envelope.request_id.as_str()),
            ("company", &envelope.company.as_ref().map(|c| c.as_str())),
            ("file_id", &file_id.map(tracing::field::display)),
        ],
    );
    let Event::FileExtractSuccess(file) = &envelope.event else {
        let kind = envelope.event.type_name();
        let error = format!("expected FileExtractSuccess, got {kind}");
        return Err(letter(Some(&envelope), error));
    };
    let Some(company) = envelope.company.clone() else {
        let error = "FileExtractSuccess without a company".into();
        return Err(letter(Some(&envelope), error));
    };
    let Some(dataset) = envelope.dataset.clone() else {
        let error = "FileExtractSuccess without a dataset".into();
        return Err(letter(Some(&envelope), error));
    };
    // The key is rebuilt from validated parts; a record pointing
    // elsewhere is not followed.
    let s3_key = file_key(dataset.as_str(), &company, file.file_id);
    if file.s3_key != s3_key {
        let error = format!(
            "s3_key {:?} does not match dataset, company and file_id (expected {s3_key:?})",
            file.s3_key
        );
        return Err(letter(Some(&envelope), error));
    }
    let file = file.clone();
    Ok(FileEvent {
        record,
        envelope,
        file,
        dataset,
        company,
        s3_key,
    })
}

/// The ledger already knows this file. If it was this very event, the
/// outcome may not have been published before a crash: publish it again.
fn already_recorded(event: &FileEvent<'_>, row: LedgerRow) -> Handled {
    if row.source_event_id != event.envelope.event_id {
        tracing::info!(status = %row.status, "file already handled for an earlier import; skipped");
        return Handled::quietly(Outcome::Duplicate, Some(event.dataset.clone()));
    }
    let outcome = match row.status.as_str() {
        "loaded" => loaded_event(
            &event.file,
            row.rows.map(|r| r.0).unwrap_or_default(),
            row.duration_ms.unwrap_or_default().max(0) as u64,
        ),
        "invalid" => invalid_event(&event.file, row.errors.map(|e| e.0).unwrap_or_default()),
        // `failed`: the dead letter may not have been published either.
        _ => {
            let error = row
                .errors
                .and_then(|e| e.0.into_iter().next())
                .map(|e| e.message)
                .unwrap_or_else(|| format!("recorded as {}", row.status));
            let letter = dead_letter_event(event.record, Some(&event.envelope), error);
            return Handled::announcing(Outcome::Reemitted, letter);
        }
    };
    Handled::announcing(
        Outcome::Reemitted,
        Envelope::caused_by(&event.envelope, outcome),
    )
}
