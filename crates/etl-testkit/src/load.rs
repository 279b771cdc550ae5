//! Large loads for the fault tests: many generated companies imported
//! through the api, and the exactly-once checks a user would run after.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::{Endpoint, TestEnv, eventually, file_loaded_event_ids, generated_company, http};

/// Imports the companies numbered `numbers` generated for `tag`, `per_request` to a
/// request, each request acknowledged with 202. The acknowledged file ids.
pub async fn import_generated(
    api: &impl Endpoint,
    tag: &str,
    numbers: std::ops::Range<u32>,
    per_request: u32,
) -> BTreeSet<String> {
    let mut acknowledged = BTreeSet::new();
    for first in numbers.clone().step_by(per_request as usize) {
        let batch: Vec<Value> = (first..(first + per_request).min(numbers.end))
            .map(|n| generated_company(tag, n))
            .collect();
        let response = http()
            .post(api.url("/import/companies"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&batch).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        for file in body["files"].as_array().unwrap() {
            acknowledged.insert(file["file_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(acknowledged.len(), numbers.len());
    acknowledged
}

/// `SELECT count(*)` of anything.
pub async fn count(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&env.pool).await.unwrap()
}

/// Ledger rows so far.
pub async fn files_recorded(env: &TestEnv) -> i64 {
    count(env, "SELECT count(*) FROM import_files").await
}

/// Waits (up to `deadline`) until every acknowledged file of generated
/// companies is recorded, then checks each was loaded exactly once: one
/// `loaded` ledger row per file and no other, one company each with its
/// children once (c.json has two offices and two contacts), and one
/// `event_id` per file among the `FileLoaded` records. Returns how many
/// `FileLoaded` records there were (repeats after a crash included).
pub async fn assert_loaded_exactly_once(
    env: &TestEnv,
    acknowledged: &BTreeSet<String>,
    deadline: Duration,
) -> usize {
    let files = acknowledged.len();
    eventually(deadline, "every acknowledged file to be loaded", || async {
        (files_recorded(env).await >= files as i64).then_some(())
    })
    .await;
    let loaded: BTreeSet<String> =
        sqlx::query_scalar("SELECT file_id::text FROM import_files WHERE status = 'loaded'")
            .fetch_all(&env.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(&loaded, acknowledged, "every acknowledged file loaded");
    assert_eq!(
        files_recorded(env).await,
        files as i64,
        "one ledger row per file"
    );
    assert_eq!(
        count(env, "SELECT count(*) FROM companies").await,
        files as i64
    );
    for table in ["company_offices", "company_contacts"] {
        let rows = count(env, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(rows, 2 * files as i64, "{table}");
    }

    // A file whose offset was not committed comes again: its FileLoaded
    // may repeat, but always with the same event_id. Counted by file, not
    // by record: a repeat may arrive before the last file's first.
    let mut tail = env.tail(&env.kafka().topics().file_loaded);
    let records = tail
        .until(deadline, "a FileLoaded per file", |r| {
            file_loaded_event_ids(r).len() >= files
        })
        .await;
    let event_ids = file_loaded_event_ids(records);
    assert_eq!(event_ids.len(), files);
    assert!(
        event_ids.values().all(|ids| ids.len() == 1),
        "a file announced with two event ids"
    );
    records.len()
}
