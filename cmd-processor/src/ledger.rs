//! Postgres writes of the processor. A file's data and its `import_files`
//! ledger row commit in one transaction, so a file is either fully loaded
//! and recorded, or not at all; the ledger's primary key makes a second
//! load of the same `file_id` impossible.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use etl_core::domain::{CompanySlug, FileId, RequestId};
use etl_core::events::FieldError;

use crate::company::Company;

/// What the ledger needs to know about the file being processed.
#[derive(Debug, Clone)]
pub struct FileMeta {
    pub file_id: FileId,
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
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LedgerRow {
    pub status: String,
    pub source_event_id: Uuid,
    pub company: String,
    pub s3_key: String,
    pub received_at: DateTime<Utc>,
    pub errors: Option<Json<Vec<FieldError>>>,
    pub rows: Option<Json<BTreeMap<String, u64>>>,
    pub duration_ms: Option<i64>,
}

pub async fn find(pool: &PgPool, file_id: FileId) -> Result<Option<LedgerRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT status, source_event_id, company, s3_key, received_at, errors, rows, duration_ms
         FROM import_files WHERE file_id = $1",
    )
    .bind(file_id.as_uuid())
    .fetch_optional(pool)
    .await
}

/// Result of a write: done, or another consumer recorded this file first
/// (then nothing of ours was committed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written<T> {
    Done(T),
    AlreadyRecorded,
}

/// Loads the company with its children and the `loaded` ledger row.
pub async fn load(
    pool: &PgPool,
    meta: &FileMeta,
    company: &Company,
    started: std::time::Instant,
) -> Result<Written<BTreeMap<String, u64>>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let replaced = upsert_company(&mut tx, meta, company).await?;
    let mut rows = BTreeMap::from([
        ("companies".to_owned(), 0u64),
        ("company_offices".to_owned(), 0),
        ("company_contacts".to_owned(), 0),
    ]);
    if replaced {
        rows.insert("companies".into(), 1);
        rows.insert(
            "company_offices".into(),
            replace_offices(&mut tx, company).await?,
        );
        rows.insert(
            "company_contacts".into(),
            replace_contacts(&mut tx, company).await?,
        );
    } else {
        tracing::info!("a newer file of this company is already loaded; company row kept");
    }
    let duration_ms = started.elapsed().as_millis() as i64;
    if !write_ledger(
        &mut tx,
        meta,
        "loaded",
        None,
        Some(&rows),
        Some(duration_ms),
    )
    .await?
    {
        tx.rollback().await?;
        return Ok(Written::AlreadyRecorded);
    }
    tx.commit().await?;
    Ok(Written::Done(rows))
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
    let sql = if meta.replaces.is_some() {
        "UPDATE import_files SET
           company = $2, s3_key = $3, sha256 = $4, size_bytes = $5, request_id = $6,
           source_event_id = $7, status = $8, errors = $9, rows = $10, duration_ms = $11,
           received_at = $12, processed_at = now(), replays = replays + 1
         WHERE file_id = $1 AND source_event_id = $13"
    } else {
        "INSERT INTO import_files
           (file_id, company, s3_key, sha256, size_bytes, request_id, source_event_id,
            status, errors, rows, duration_ms, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (file_id) DO NOTHING"
    };
    let mut query = sqlx::query(sql)
        .bind(meta.file_id.as_uuid())
        .bind(meta.company.as_str())
        .bind(&meta.s3_key)
        .bind(&meta.sha256)
        .bind(i64::try_from(meta.size_bytes).unwrap_or(i64::MAX))
        .bind(meta.request_id.as_str())
        .bind(meta.event_id)
        .bind(status)
        .bind(errors.map(Json))
        .bind(rows.map(Json))
        .bind(duration_ms)
        .bind(meta.received_at);
    if let Some(replaced) = meta.replaces {
        query = query.bind(replaced);
    }
    Ok(query.execute(&mut **tx).await?.rows_affected() == 1)
}

/// Inserts or updates the company unless a newer file already set it.
/// Returns whether this file's data is now the company's.
async fn upsert_company(
    tx: &mut Transaction<'_, Postgres>,
    meta: &FileMeta,
    c: &Company,
) -> Result<bool, sqlx::Error> {
    let written: Option<String> = sqlx::query_scalar(
        "INSERT INTO companies
           (inn, name, slug, ogrn, founded_at, employees, industry, website,
            address_country, address_city, address_street, address_postal_code,
            extra, source_file_id, source_received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (inn) DO UPDATE SET
           name = EXCLUDED.name, slug = EXCLUDED.slug, ogrn = EXCLUDED.ogrn,
           founded_at = EXCLUDED.founded_at, employees = EXCLUDED.employees,
           industry = EXCLUDED.industry, website = EXCLUDED.website,
           address_country = EXCLUDED.address_country, address_city = EXCLUDED.address_city,
           address_street = EXCLUDED.address_street,
           address_postal_code = EXCLUDED.address_postal_code,
           extra = EXCLUDED.extra, source_file_id = EXCLUDED.source_file_id,
           source_received_at = EXCLUDED.source_received_at, updated_at = now()
         WHERE companies.source_received_at <= EXCLUDED.source_received_at
         RETURNING inn",
    )
    .bind(c.inn.as_str())
    .bind(&c.name)
    .bind(meta.company.as_str())
    .bind(&c.ogrn)
    .bind(c.founded_at)
    .bind(c.employees)
    .bind(&c.industry)
    .bind(&c.website)
    .bind(&c.address.country)
    .bind(&c.address.city)
    .bind(&c.address.street)
    .bind(&c.address.postal_code)
    .bind(Json(Value::Object(c.extra.clone())))
    .bind(meta.file_id.as_uuid())
    .bind(meta.received_at)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(written.is_some())
}

async fn replace_offices(
    tx: &mut Transaction<'_, Postgres>,
    c: &Company,
) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM company_offices WHERE company_inn = $1")
        .bind(c.inn.as_str())
        .execute(&mut **tx)
        .await?;
    if c.offices.is_empty() {
        return Ok(0);
    }
    let positions: Vec<i32> = (0..c.offices.len() as i32).collect();
    let cities: Vec<Option<String>> = c.offices.iter().map(|o| o.city.clone()).collect();
    let addresses: Vec<Option<String>> = c.offices.iter().map(|o| o.address.clone()).collect();
    let headcounts: Vec<Option<i32>> = c.offices.iter().map(|o| o.headcount).collect();
    let done = sqlx::query(
        "INSERT INTO company_offices (company_inn, position, city, address, headcount)
         SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::text[], $5::int[])",
    )
    .bind(c.inn.as_str())
    .bind(positions)
    .bind(cities)
    .bind(addresses)
    .bind(headcounts)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

async fn replace_contacts(
    tx: &mut Transaction<'_, Postgres>,
    c: &Company,
) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM company_contacts WHERE company_inn = $1")
        .bind(c.inn.as_str())
        .execute(&mut **tx)
        .await?;
    if c.contacts.is_empty() {
        return Ok(0);
    }
    let positions: Vec<i32> = (0..c.contacts.len() as i32).collect();
    let kinds: Vec<String> = c.contacts.iter().map(|x| x.kind.clone()).collect();
    let values: Vec<String> = c.contacts.iter().map(|x| x.value.clone()).collect();
    let done = sqlx::query(
        "INSERT INTO company_contacts (company_inn, position, kind, value)
         SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::text[])",
    )
    .bind(c.inn.as_str())
    .bind(positions)
    .bind(kinds)
    .bind(values)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}
