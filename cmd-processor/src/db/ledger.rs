//! The `import_files` ledger: one row per file, saying what happened to
//! it (`loaded`, `invalid`, `failed`), by which event, with its errors or
//! the rows it wrote.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use etl_core::domain::{CompanySlug, FileId, RequestId};
use etl_core::events::FieldError;

use super::{Load, Rows, Written, column};

/// What the ledger needs to know about the file being processed.
#[derive(Debug, Clone)]
pub struct FileMeta {
    pub file_id: FileId,
    /// The dataset the file belongs to (`companies`, …).
    pub dataset: String,
    pub company: CompanySlug,
    pub s3_key: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub request_id: RequestId,
    pub event_id: Uuid,
    pub received_at: DateTime<Utc>,
    /// A replay: the `source_event_id` of the ledger row this outcome
    /// replaces. The row is updated only if it still names that event, so
    /// two consumers replaying at once record one outcome.
    pub replaces: Option<Uuid>,
}

/// A ledger row as stored.
#[derive(Debug, Clone)]
pub struct LedgerRow {
    pub status: String,
    pub dataset: String,
    pub source_event_id: Uuid,
    pub company: String,
    pub s3_key: String,
    pub received_at: DateTime<Utc>,
    pub errors: Option<Json<Vec<FieldError>>>,
    pub rows: Option<Json<BTreeMap<String, u64>>>,
    pub duration_ms: Option<i64>,
}

pub async fn find(pool: &PgPool, file_id: FileId) -> Result<Option<LedgerRow>, sqlx::Error> {
    sqlx::query_as!(
        LedgerRow,
        r#"SELECT status, dataset, source_event_id, company, s3_key, received_at,
                  errors AS "errors: Json<Vec<FieldError>>",
                  rows AS "rows: Json<BTreeMap<String, u64>>",
                  duration_ms
           FROM import_files WHERE file_id = $1"#,
        file_id.as_uuid(),
    )
    .fetch_optional(pool)
    .await
}

/// Why a file was recorded without writing company data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The document failed the schema or a business rule.
    Invalid,
    /// The database refused the data for good (a data or constraint error
    /// no retry will fix).
    Failed,
}

/// Records a rejected file in the ledger; no company data is written.
pub async fn record_rejected(
    pool: &PgPool,
    meta: &FileMeta,
    rejection: Rejection,
    errors: &[FieldError],
) -> Result<Written<()>, sqlx::Error> {
    let status = match rejection {
        Rejection::Invalid => "invalid",
        Rejection::Failed => "failed",
    };
    let mut tx = pool.begin().await?;
    if !write_ledger(&mut tx, meta, status, Some(errors), None, None).await? {
        tx.rollback().await?;
        return Ok(Written::AlreadyRecorded);
    }
    tx.commit().await?;
    Ok(Written::Done(()))
}

/// Inserts the file's ledger row, or for a replay updates it. `false` when
/// another consumer recorded the file first (then the caller rolls back).
async fn write_ledger(
    tx: &mut Transaction<'_, Postgres>,
    meta: &FileMeta,
    status: &str,
    errors: Option<&[FieldError]>,
    rows: Option<&BTreeMap<String, u64>>,
    duration_ms: Option<i64>,
) -> Result<bool, sqlx::Error> {
    let size_bytes = i64::try_from(meta.size_bytes).unwrap_or(i64::MAX);
    // The query macros expect a jsonb parameter as serde_json::Value;
    // `as _` lets Json<T> encode itself instead.
    let (errors, rows) = (errors.map(Json), rows.map(Json));
    // A replay updates its row only while the row still names the event
    // it replaces ($14), so two consumers replaying at once record one
    // outcome; for a new file $14 is NULL and a row already there is kept:
    // another consumer recorded the file first.
    let written = sqlx::query!(
        "INSERT INTO import_files AS f
           (file_id, dataset, company, s3_key, sha256, size_bytes, request_id,
            source_event_id, status, errors, rows, duration_ms, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (file_id) DO UPDATE SET
           dataset = excluded.dataset, company = excluded.company,
           s3_key = excluded.s3_key, sha256 = excluded.sha256,
           size_bytes = excluded.size_bytes, request_id = excluded.request_id,
           source_event_id = excluded.source_event_id, status = excluded.status,
           errors = excluded.errors, rows = excluded.rows,
           duration_ms = excluded.duration_ms, received_at = excluded.received_at,
           processed_at = now(), replays = f.replays + 1
         WHERE f.source_event_id = $14",
        meta.file_id.as_uuid(),
        meta.dataset,
        meta.company.as_str(),
        meta.s3_key,
        meta.sha256,
        size_bytes,
        meta.request_id.as_str(),
        meta.event_id,
        status,
        errors as _,
        rows as _,
        duration_ms,
        meta.received_at,
        meta.replaces as Option<Uuid>,
    )
    .execute(&mut **tx)
    .await?;
    Ok(written.rows_affected() == 1)
}

/// The `loaded` ledger rows (a replay updates its row); returns the files
/// recorded, which lacks those another consumer recorded first.
pub(super) async fn record_loaded(
    tx: &mut Transaction<'_, Postgres>,
    files: &[&Load<'_>],
    rows: &BTreeMap<Uuid, Rows>,
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let mut recorded = HashSet::with_capacity(files.len());
    let mut new = Vec::with_capacity(files.len());
    for file in files {
        let rows = &rows[&file.meta.file_id.as_uuid()];
        let duration_ms = file.started.elapsed().as_millis() as i64;
        if file.meta.replaces.is_some() {
            if write_ledger(tx, file.meta, "loaded", None, Some(rows), Some(duration_ms)).await? {
                recorded.insert(file.meta.file_id.as_uuid());
            }
        } else {
            new.push((file.meta, rows, duration_ms));
        }
    }
    if new.is_empty() {
        return Ok(recorded);
    }
    let inserted: Vec<Uuid> = sqlx::query_scalar!(
        "INSERT INTO import_files
           (file_id, company, s3_key, sha256, size_bytes, request_id, source_event_id,
            status, rows, duration_ms, received_at, dataset)
         SELECT f, c, k, h, s, r, e, 'loaded', w, d, t, ds
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                     $7::uuid[], $8::jsonb[], $9::bigint[], $10::timestamptz[], $11::text[])
              AS u(f, c, k, h, s, r, e, w, d, t, ds)
         ON CONFLICT (file_id) DO NOTHING
         RETURNING file_id",
        &column(&new, |(m, ..)| m.file_id.as_uuid()),
        &column(&new, |(m, ..)| m.company.as_str()) as &[&str],
        &column(&new, |(m, ..)| m.s3_key.as_str()) as &[&str],
        &column(&new, |(m, ..)| m.sha256.as_str()) as &[&str],
        &column(&new, |(m, ..)| i64::try_from(m.size_bytes)
            .unwrap_or(i64::MAX)),
        &column(&new, |(m, ..)| m.request_id.as_str()) as &[&str],
        &column(&new, |(m, ..)| m.event_id),
        &column(&new, |(_, rows, _)| Json(*rows)) as _,
        &column(&new, |(.., d)| *d),
        &column(&new, |(m, ..)| m.received_at),
        &column(&new, |(m, ..)| m.dataset.as_str()) as &[&str],
    )
    .fetch_all(&mut **tx)
    .await?;
    recorded.extend(inserted);
    Ok(recorded)
}
