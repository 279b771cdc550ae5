//! Crashes for real: `kill -9` of the processor in the middle of a large
//! load. Every acknowledged file must end up loaded exactly once.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use etl_testkit::{
    ServiceProcess, TestEnv, eventually, file_loaded_event_ids, generated_company, http,
};

const FILES: u32 = 2_000;
const PER_REQUEST: u32 = 250;
/// Loading 2,000 files takes a while on a 2-core machine.
const LOAD_DEADLINE: Duration = Duration::from_secs(600);

async fn count(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&env.pool).await.unwrap()
}

#[tokio::test]
async fn kill_9_of_the_processor_mid_load_loses_nothing_and_loads_nothing_twice() {
    let env = TestEnv::new().await;
    let api = ServiceProcess::start("cmd-api", "API_LISTEN_ADDR", &env, &[]).await;
    let mut processor =
        ServiceProcess::start("cmd-processor", "PROCESSOR_LISTEN_ADDR", &env, &[]).await;

    let mut acknowledged = BTreeSet::new();
    for first in (0..FILES).step_by(PER_REQUEST as usize) {
        let batch: Vec<Value> = (first..first + PER_REQUEST)
            .map(|n| generated_company(&env.id, n))
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
    assert_eq!(acknowledged.len(), FILES as usize);

    let loaded_at_kill = eventually(LOAD_DEADLINE, "the processor to be mid-load", || async {
        let loaded = count(&env, "SELECT count(*) FROM import_files").await;
        (loaded >= 200).then_some(loaded)
    })
    .await;
    processor.kill().await;
    let loaded_after_kill = count(&env, "SELECT count(*) FROM import_files").await;
    eprintln!(
        "injected: kill -9 of the processor with {loaded_at_kill}..{loaded_after_kill} of {FILES} files loaded"
    );
    assert!(
        loaded_after_kill < i64::from(FILES),
        "the kill came too late"
    );

    processor.restart().await;
    eventually(
        LOAD_DEADLINE,
        "every acknowledged file to be loaded",
        || async {
            (count(&env, "SELECT count(*) FROM import_files").await >= i64::from(FILES))
                .then_some(())
        },
    )
    .await;

    let ledger: Vec<(String, String)> =
        sqlx::query_as("SELECT file_id::text, status FROM import_files")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    let loaded: BTreeSet<String> = ledger
        .iter()
        .filter(|(_, status)| status == "loaded")
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(ledger.len(), FILES as usize, "one ledger row per file");
    assert_eq!(loaded, acknowledged, "every acknowledged file loaded");
    // Each company once, with its children once (c.json has two of each).
    assert_eq!(
        count(&env, "SELECT count(*) FROM companies").await,
        i64::from(FILES)
    );
    for table in ["company_offices", "company_contacts"] {
        let rows = count(&env, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(rows, 2 * i64::from(FILES), "{table}");
    }

    // A file loaded before the kill whose offset was not committed comes
    // again: its FileLoaded may repeat, but always with the same event_id.
    let topic = env.kafka().topics().file_loaded;
    let mut tail = env.tail(&topic);
    // Counted by file, not by record: a repeat may come before the last file.
    let records = tail
        .until(LOAD_DEADLINE, "a FileLoaded per file", |r| {
            file_loaded_event_ids(r).len() >= FILES as usize
        })
        .await;
    let event_ids = file_loaded_event_ids(records);
    assert_eq!(event_ids.len(), FILES as usize);
    assert!(event_ids.values().all(|ids| ids.len() == 1));
    eprintln!(
        "counted: {} ledger rows, {} companies, {} FileLoaded records for {} files",
        ledger.len(),
        FILES,
        records.len(),
        event_ids.len()
    );
}
