//! Postgres writes of the processor. A file's data and its `import_files`
//! ledger row commit in one transaction, so a file is either fully loaded
//! and recorded, or not at all; the ledger's primary key makes a second
//! load of the same `file_id` impossible.
//!
//! - [`ledger`]: the `import_files` rows (what happened to each file);
//! - [`TableWriter`]: a dataset's rows and their child rows, with
//!   statements made from its mapping.

mod ledger;
mod table;

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use sqlx::PgPool;
use uuid::Uuid;

use crate::record::Record;
pub use ledger::{FileMeta, LedgerRow, Rejection, find, record_rejected};
pub use table::TableWriter;

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
    pub record: &'a Record,
    /// The dataset's writer.
    pub writer: &'a TableWriter,
    /// When handling the file began: its ledger row's `duration_ms`.
    pub started: Instant,
}

/// Loads the files in one transaction: each file's row with its children
/// (unless a newer file already set the row) and each file's `loaded`
/// ledger row. A file another consumer recorded first is left out and
/// answered `AlreadyRecorded`, the others are loaded without it.
///
/// No two files of a dataset may carry the same key: a statement writes a
/// row once (the caller splits them over transactions).
pub async fn load(pool: &PgPool, files: &[Load<'_>]) -> Result<Vec<Written<Rows>>, sqlx::Error> {
    debug_assert!(
        files
            .iter()
            .map(|f| (std::ptr::from_ref(f.writer), f.record.key.as_str()))
            .collect::<HashSet<_>>()
            .len()
            == files.len(),
        "one key twice in a load"
    );
    let mut recorded_elsewhere = vec![false; files.len()];
    loop {
        // Sorted by key, so that two transactions lock rows in the same
        // order and cannot deadlock.
        let mut live: Vec<usize> = (0..files.len())
            .filter(|&i| !recorded_elsewhere[i])
            .collect();
        if live.is_empty() {
            return Ok(vec![Written::AlreadyRecorded; files.len()]);
        }
        live.sort_by_key(|&i| files[i].record.key.as_str());
        let live: Vec<&Load<'_>> = live.iter().map(|&i| &files[i]).collect();

        let mut tx = pool.begin().await?;
        // A statement's plan is kept once the plan cache judges a generic
        // plan good enough; made while the tables were small, that plan
        // scanned all of company_offices and company_contacts for each
        // DELETE, ever after (measured: 32 M rows read to load 20,000
        // files into a new database, Postgres at 0.75 of a core). Planned
        // each time, the DELETEs use the primary key as the tables grow.
        sqlx::query!("SET LOCAL plan_cache_mode = force_custom_plan")
            .execute(&mut *tx)
            .await?;
        let rows = write_rows(&mut tx, &live).await?;
        let recorded = ledger::record_loaded(&mut tx, &live, &rows).await?;
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

/// Each dataset's rows of `files`, one writer after another; the rows
/// written per file.
async fn write_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    files: &[&Load<'_>],
) -> Result<BTreeMap<Uuid, Rows>, sqlx::Error> {
    let mut rows = BTreeMap::new();
    let mut done: Vec<&TableWriter> = Vec::new();
    for writer in files.iter().map(|f| f.writer) {
        if done.iter().any(|w| std::ptr::eq(*w, writer)) {
            continue;
        }
        done.push(writer);
        let ours: Vec<&Load<'_>> = files
            .iter()
            .copied()
            .filter(|f| std::ptr::eq(f.writer, writer))
            .collect();
        let set = writer.upsert(tx, &ours).await?;
        let written: Vec<&Record> = ours
            .iter()
            .map(|f| f.record)
            .filter(|r| set.contains(&r.key))
            .collect();
        writer.replace_children(tx, &written).await?;
        for f in &ours {
            let set = set.contains(&f.record.key);
            rows.insert(f.meta.file_id.as_uuid(), writer.rows_of(f.record, set));
        }
    }
    Ok(rows)
}

/// One column of a multi-row statement, for `UNNEST($n::type[])`.
pub(crate) fn column<R, T>(rows: impl IntoIterator<Item = R>, value: impl FnMut(R) -> T) -> Vec<T> {
    rows.into_iter().map(value).collect()
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
