//! Postgres writes of the processor. A file's data and its `import_files`
//! ledger row commit in one transaction, so a file is either fully loaded
//! and recorded, or not at all; the ledger's primary key makes a second
//! load of the same `file_id` impossible.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
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

/// Rows written per table for one file.
pub type Rows = BTreeMap<String, u64>;

/// One file to load.
#[derive(Debug, Clone, Copy)]
pub struct Load<'a> {
    pub meta: &'a FileMeta,
    pub company: &'a Company,
    /// When handling the file began: its ledger row's `duration_ms`.
    pub started: Instant,
}

/// Loads the files in one transaction: each company with its children
/// (unless a newer file already set the company) and each file's `loaded`
/// ledger row. A file another consumer recorded first is left out and
/// answered `AlreadyRecorded`, the others are loaded without it.
///
/// No two files may carry the same INN: a statement writes a company row
/// once (the caller splits them over transactions).
pub async fn load(pool: &PgPool, files: &[Load<'_>]) -> Result<Vec<Written<Rows>>, sqlx::Error> {
    debug_assert!(
        files
            .iter()
            .map(|f| f.company.inn.as_str())
            .collect::<HashSet<_>>()
            .len()
            == files.len(),
        "one INN twice in a load"
    );
    let mut recorded_elsewhere = vec![false; files.len()];
    loop {
        // Sorted by INN, so that two transactions lock companies in the
        // same order and cannot deadlock.
        let mut live: Vec<usize> = (0..files.len())
            .filter(|&i| !recorded_elsewhere[i])
            .collect();
        if live.is_empty() {
            return Ok(vec![Written::AlreadyRecorded; files.len()]);
        }
        live.sort_by_key(|&i| files[i].company.inn.as_str());
        let live: Vec<&Load<'_>> = live.iter().map(|&i| &files[i]).collect();

        let mut tx = pool.begin().await?;
        // A statement's plan is kept once the plan cache judges a generic
        // plan good enough; made while the tables were small, that plan
        // scanned all of company_offices and company_contacts for each
        // DELETE, ever after (measured: 32 M rows read to load 20,000
        // files into a new database, Postgres at 0.75 of a core). Planned
        // each time, the DELETEs use the primary key as the tables grow.
        sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
            .execute(&mut *tx)
            .await?;
        let set = upsert_companies(&mut tx, &live).await?;
        let ours: Vec<&Company> = live
            .iter()
            .map(|f| f.company)
            .filter(|c| set.contains(c.inn.as_str()))
            .collect();
        replace_offices(&mut tx, &ours).await?;
        replace_contacts(&mut tx, &ours).await?;
        let rows: BTreeMap<Uuid, Rows> = live
            .iter()
            .map(|f| {
                let ours = set.contains(f.company.inn.as_str());
                (f.meta.file_id.as_uuid(), rows_of(f.company, ours))
            })
            .collect();
        let recorded = record_loaded(&mut tx, &live, &rows).await?;
        if recorded.len() < live.len() {
            // Rare: a rebalance let another consumer take these files too.
            tx.rollback().await?;
            for (elsewhere, file) in recorded_elsewhere.iter_mut().zip(files) {
                *elsewhere |= !recorded.contains(&file.meta.file_id.as_uuid());
            }
            continue;
        }
        tx.commit().await?;
        return Ok(files
            .iter()
            .map(|f| match rows.get(&f.meta.file_id.as_uuid()) {
                Some(rows) => Written::Done(rows.clone()),
                None => Written::AlreadyRecorded,
            })
            .collect());
    }
}

fn rows_of(company: &Company, set: bool) -> Rows {
    let (companies, offices, contacts) = if set {
        (1, company.offices.len(), company.contacts.len())
    } else {
        (0, 0, 0)
    };
    BTreeMap::from([
        ("companies".to_owned(), companies),
        ("company_offices".to_owned(), offices as u64),
        ("company_contacts".to_owned(), contacts as u64),
    ])
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

/// The `loaded` ledger rows (a replay updates its row); returns the files
/// recorded, which lacks those another consumer recorded first.
async fn record_loaded(
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
    let inserted: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO import_files
           (file_id, company, s3_key, sha256, size_bytes, request_id, source_event_id,
            status, rows, duration_ms, received_at)
         SELECT f, c, k, h, s, r, e, 'loaded', w, d, t
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                     $7::uuid[], $8::jsonb[], $9::bigint[], $10::timestamptz[])
              AS u(f, c, k, h, s, r, e, w, d, t)
         ON CONFLICT (file_id) DO NOTHING
         RETURNING file_id",
    )
    .bind(column(&new, |(m, ..)| m.file_id.as_uuid()))
    .bind(column(&new, |(m, ..)| m.company.as_str()))
    .bind(column(&new, |(m, ..)| m.s3_key.as_str()))
    .bind(column(&new, |(m, ..)| m.sha256.as_str()))
    .bind(column(&new, |(m, ..)| {
        i64::try_from(m.size_bytes).unwrap_or(i64::MAX)
    }))
    .bind(column(&new, |(m, ..)| m.request_id.as_str()))
    .bind(column(&new, |(m, ..)| m.event_id))
    .bind(column(&new, |(_, rows, _)| Json(*rows)))
    .bind(column(&new, |(.., d)| *d))
    .bind(column(&new, |(m, ..)| m.received_at))
    .fetch_all(&mut **tx)
    .await?;
    recorded.extend(inserted);
    Ok(recorded)
}

/// One column of a multi-row statement, for `UNNEST($n::type[])`.
fn column<R, T>(rows: impl IntoIterator<Item = R>, value: impl FnMut(R) -> T) -> Vec<T> {
    rows.into_iter().map(value).collect()
}

/// Inserts or updates each company unless a newer file already set it.
/// Returns the INNs whose row is now this batch's data.
async fn upsert_companies(
    tx: &mut Transaction<'_, Postgres>,
    files: &[&Load<'_>],
) -> Result<HashSet<String>, sqlx::Error> {
    let companies = || files.iter().map(|f| f.company);
    let written: Vec<String> = sqlx::query_scalar(
        "INSERT INTO companies
           (inn, name, slug, ogrn, founded_at, employees, industry, website,
            address_country, address_city, address_street, address_postal_code,
            extra, source_file_id, source_received_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::date[],
                              $6::int[], $7::text[], $8::text[], $9::text[], $10::text[],
                              $11::text[], $12::text[], $13::jsonb[], $14::uuid[],
                              $15::timestamptz[])
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
    .bind(column(companies(), |c| c.inn.as_str()))
    .bind(column(companies(), |c| c.name.as_str()))
    .bind(column(files, |f| f.meta.company.as_str()))
    .bind(column(companies(), |c| c.ogrn.as_deref()))
    .bind(column(companies(), |c| c.founded_at))
    .bind(column(companies(), |c| c.employees))
    .bind(column(companies(), |c| c.industry.as_deref()))
    .bind(column(companies(), |c| c.website.as_deref()))
    .bind(column(companies(), |c| c.address.country.as_deref()))
    .bind(column(companies(), |c| c.address.city.as_deref()))
    .bind(column(companies(), |c| c.address.street.as_deref()))
    .bind(column(companies(), |c| c.address.postal_code.as_deref()))
    .bind(column(companies(), |c| Json(&c.extra)))
    .bind(column(files, |f| f.meta.file_id.as_uuid()))
    .bind(column(files, |f| f.meta.received_at))
    .fetch_all(&mut **tx)
    .await?;
    Ok(written.into_iter().collect())
}

/// The companies' offices, replaced by those of their documents.
async fn replace_offices(
    tx: &mut Transaction<'_, Postgres>,
    companies: &[&Company],
) -> Result<(), sqlx::Error> {
    let offices: Vec<_> = companies
        .iter()
        .flat_map(|c| c.offices.iter().enumerate().map(move |(i, o)| (*c, i, o)))
        .collect();
    clear_children(tx, "company_offices", companies).await?;
    if offices.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO company_offices (company_inn, position, city, address, headcount)
         SELECT * FROM UNNEST($1::text[], $2::int[], $3::text[], $4::text[], $5::int[])",
    )
    .bind(column(&offices, |(c, ..)| c.inn.as_str()))
    .bind(column(&offices, |(_, i, _)| *i as i32))
    .bind(column(&offices, |(.., o)| o.city.as_deref()))
    .bind(column(&offices, |(.., o)| o.address.as_deref()))
    .bind(column(&offices, |(.., o)| o.headcount))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The companies' contacts, replaced by those of their documents.
async fn replace_contacts(
    tx: &mut Transaction<'_, Postgres>,
    companies: &[&Company],
) -> Result<(), sqlx::Error> {
    let contacts: Vec<_> = companies
        .iter()
        .flat_map(|c| c.contacts.iter().enumerate().map(move |(i, x)| (*c, i, x)))
        .collect();
    clear_children(tx, "company_contacts", companies).await?;
    if contacts.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO company_contacts (company_inn, position, kind, value)
         SELECT * FROM UNNEST($1::text[], $2::int[], $3::text[], $4::text[])",
    )
    .bind(column(&contacts, |(c, ..)| c.inn.as_str()))
    .bind(column(&contacts, |(_, i, _)| *i as i32))
    .bind(column(&contacts, |(.., x)| x.kind.as_str()))
    .bind(column(&contacts, |(.., x)| x.value.as_str()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes the rows of `table` (a child table keyed by `company_inn`) of
/// the companies.
async fn clear_children(
    tx: &mut Transaction<'_, Postgres>,
    table: &'static str,
    companies: &[&Company],
) -> Result<(), sqlx::Error> {
    if companies.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!("DELETE FROM {table} WHERE company_inn = ANY($1)"))
        .bind(column(companies, |c| c.inn.as_str()))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Data exceptions (class 22) and integrity violations (class 23) will not
/// go away by retrying; everything else (connection loss, timeouts,
/// serialization failures, deadlocks) might.
pub fn is_permanent(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("23")),
        _ => false,
    }
}
