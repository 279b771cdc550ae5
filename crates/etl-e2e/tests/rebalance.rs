//! Two processor instances in one consumer group, with rebalances in the
//! middle of a load: a second instance joins, then the first leaves. Each
//! acknowledged file is loaded exactly once, and both did part of the work.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use etl_testkit::{
    ServiceProcess, TestEnv, eventually, file_loaded_event_ids, generated_company, http, metric,
    scrape,
};

const FILES: u32 = 600;
const PER_REQUEST: u32 = 100;
const DEADLINE: Duration = Duration::from_secs(300);

async fn count(env: &TestEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&env.pool).await.unwrap()
}

async fn files_loaded_by(processor: &ServiceProcess) -> f64 {
    metric(
        &scrape(processor).await,
        "processor_files_total",
        &[("outcome", "loaded")],
    )
}

#[tokio::test]
async fn two_processors_with_rebalances_mid_load_load_each_file_once() {
    let env = TestEnv::new().await;
    let api = ServiceProcess::start("cmd-api", "API_LISTEN_ADDR", &env, &[]).await;
    let mut first =
        ServiceProcess::start("cmd-processor", "PROCESSOR_LISTEN_ADDR", &env, &[]).await;

    let mut acknowledged = BTreeSet::new();
    for start in (0..FILES).step_by(PER_REQUEST as usize) {
        let batch: Vec<Value> = (start..start + PER_REQUEST)
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

    eventually(DEADLINE, "the first processor to be loading", || async {
        (count(&env, "SELECT count(*) FROM import_files").await >= 30).then_some(())
    })
    .await;
    let second = ServiceProcess::start("cmd-processor", "PROCESSOR_LISTEN_ADDR", &env, &[]).await;
    let at_join = count(&env, "SELECT count(*) FROM import_files").await;
    eprintln!(
        "injected: a second processor joined the group with {at_join} of {FILES} files loaded"
    );
    assert!(
        at_join < i64::from(FILES),
        "the join came too late to test anything"
    );

    eventually(
        DEADLINE,
        "the second processor to get partitions and load",
        || async { (files_loaded_by(&second).await > 0.0).then_some(()) },
    )
    .await;
    let by_first = files_loaded_by(&first).await;
    let at_leave = count(&env, "SELECT count(*) FROM import_files").await;
    first.signal("TERM");
    let status = first.wait(Duration::from_secs(30)).await;
    assert!(status.success(), "first processor exit: {status}");
    eprintln!(
        "injected: the first processor left the group (SIGTERM) with {at_leave} of {FILES} files loaded"
    );

    eventually(DEADLINE, "every acknowledged file to be loaded", || async {
        (count(&env, "SELECT count(*) FROM import_files").await >= i64::from(FILES)).then_some(())
    })
    .await;
    let by_second = files_loaded_by(&second).await;

    let loaded: BTreeSet<String> =
        sqlx::query_scalar("SELECT file_id::text FROM import_files WHERE status = 'loaded'")
            .fetch_all(&env.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(loaded, acknowledged, "every acknowledged file loaded");
    assert_eq!(
        count(&env, "SELECT count(*) FROM import_files").await,
        i64::from(FILES),
        "one ledger row per file"
    );
    assert_eq!(
        count(&env, "SELECT count(*) FROM companies").await,
        i64::from(FILES)
    );
    for table in ["company_offices", "company_contacts"] {
        let rows = count(&env, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(rows, 2 * i64::from(FILES), "{table}");
    }
    assert!(
        by_first > 0.0 && by_second > 0.0,
        "both instances loaded files"
    );
    // `by_first` was read before SIGTERM (the file in hand is finished
    // after it), so the sum may fall short, but never exceed.
    assert!(
        by_first + by_second <= f64::from(FILES),
        "no file loaded by both instances: {by_first} + {by_second}"
    );

    // A file handed over uncommitted may have its outcome published again,
    // always with the same event_id.
    let mut tail = env.tail(&env.kafka().topics().file_loaded);
    // Counted by file, not by record: a repeat may come before the last file.
    let records = tail
        .until(DEADLINE, "a FileLoaded per file", |r| {
            file_loaded_event_ids(r).len() >= FILES as usize
        })
        .await;
    let event_ids = file_loaded_event_ids(records);
    assert_eq!(event_ids.len(), FILES as usize);
    assert!(event_ids.values().all(|ids| ids.len() == 1));
    eprintln!(
        "counted: {FILES} ledger rows, first instance loaded {by_first}, second {by_second}, {} FileLoaded records",
        records.len()
    );
}
