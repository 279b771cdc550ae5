//! `cmd-processor replay FILE_ID`: a stored file is processed again on
//! demand, its ledger row keeps one outcome, and a replayed old file never
//! overwrites a newer file's data.

use serde_json::Value;

use etl_core::events::Event;
use etl_core::metrics::DependencyTimer;
use etl_core::storage::{ObjectStore, S3Settings};
use etl_testkit::{
    DEADLINE, ServiceProcess, TestEnv, eventually, generated_company, metric, run_binary, scrape,
};

async fn import(api: &ServiceProcess, doc: &Value) -> String {
    let answer = etl_testkit::import(api, serde_json::to_vec(doc).unwrap())
        .send()
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    answer.file_ids().remove(0)
}

fn replay(env: &TestEnv, args: &[&str]) -> (bool, String) {
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    let out = run_binary("cmd-processor", &all, env.vars.clone());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `(status, replays, source_event_id)` of the file's ledger row.
async fn ledger_row(env: &TestEnv, file_id: &str) -> (String, i32, String) {
    sqlx::query_as(
        "SELECT status, replays, source_event_id::text FROM import_files WHERE file_id = $1::uuid",
    )
    .bind(file_id)
    .fetch_one(&env.pool)
    .await
    .unwrap()
}

async fn employees(env: &TestEnv, inn: &str) -> Option<i32> {
    sqlx::query_scalar("SELECT employees FROM companies WHERE inn = $1")
        .bind(inn)
        .fetch_optional(&env.pool)
        .await
        .unwrap()
        .flatten()
}

async fn children(env: &TestEnv, inn: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM company_offices WHERE company_inn = $1)
              + (SELECT count(*) FROM company_contacts WHERE company_inn = $1)",
    )
    .bind(inn)
    .fetch_one(&env.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_replayed_file_is_loaded_again_and_recorded_once() {
    let env = TestEnv::new().await;
    let api = ServiceProcess::api(&env, &[]).await;
    let processor = ServiceProcess::processor(&env, &[]).await;
    let topics = env.kafka().topics();
    let mut loaded = env.tail(&topics.file_loaded);

    let doc = generated_company(&env.id, 1);
    let inn = doc["inn"].as_str().unwrap().to_owned();
    let file_id = import(&api, &doc).await;
    loaded
        .until(DEADLINE, "the first FileLoaded", |r| r.len() == 1)
        .await;
    let (status, replays, first_event) = ledger_row(&env, &file_id).await;
    assert_eq!((status.as_str(), replays), ("loaded", 0));
    let rows_before = children(&env, &inn).await;
    assert!(rows_before > 0);

    // Damage by hand: the company is gone from the tables.
    sqlx::query("DELETE FROM companies WHERE inn = $1")
        .bind(&inn)
        .execute(&env.pool)
        .await
        .unwrap();
    eprintln!("injected: company {inn} deleted from the database; replaying file {file_id}");

    let (ok, out) = replay(&env, &[&file_id]);
    assert!(ok, "{out}");
    assert!(out.contains("ledger status before: loaded"), "{out}");
    let records = loaded
        .until(DEADLINE, "the replay's FileLoaded", |r| r.len() == 2)
        .await
        .to_vec();
    let Event::FileLoaded(again) = &records[1].envelope.event else {
        panic!("{:?}", records[1].envelope)
    };
    assert_eq!(again.file_id.to_string(), file_id);
    assert_eq!(again.rows["companies"], 1);
    assert_ne!(records[0].envelope.event_id, records[1].envelope.event_id);

    assert_eq!(children(&env, &inn).await, rows_before, "children restored");
    assert!(employees(&env, &inn).await.is_some(), "company restored");
    let (status, replays, event) = ledger_row(&env, &file_id).await;
    assert_eq!((status.as_str(), replays), ("loaded", 1));
    assert_ne!(event, first_event, "the row names the replay's event");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM import_files")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "one ledger row per file, however often replayed");

    // A plain re-post of the same content is still a duplicate: no load.
    assert_eq!(import(&api, &doc).await, file_id);
    eventually(DEADLINE, "the re-post handled as a duplicate", || async {
        let samples = scrape(&processor).await;
        (metric(
            &samples,
            "processor_files_total",
            &[("outcome", "duplicate")],
        ) == 1.0)
            .then_some(())
    })
    .await;
    let (_, replays_after_repost, _) = ledger_row(&env, &file_id).await;
    assert_eq!(replays_after_repost, 1);
    eprintln!("counted: 2 FileLoaded, 1 ledger row with replays = 1");
}

#[tokio::test]
async fn a_replayed_old_file_does_not_overwrite_a_newer_one() {
    let env = TestEnv::new().await;
    let api = ServiceProcess::api(&env, &[]).await;
    let _processor = ServiceProcess::processor(&env, &[]).await;
    let mut loaded = env.tail(&env.kafka().topics().file_loaded);

    let mut old = generated_company(&env.id, 2);
    old["employees"] = 10.into();
    let mut new = old.clone();
    new["employees"] = 20.into();
    let inn = old["inn"].as_str().unwrap().to_owned();
    let old_id = import(&api, &old).await;
    loaded
        .until(DEADLINE, "the old file", |r| r.len() == 1)
        .await;
    import(&api, &new).await;
    loaded
        .until(DEADLINE, "the new file", |r| r.len() == 2)
        .await;
    assert_eq!(employees(&env, &inn).await, Some(20));

    let (ok, out) = replay(&env, &[&old_id]);
    assert!(ok, "{out}");
    let records = loaded
        .until(DEADLINE, "the replay's FileLoaded", |r| r.len() == 3)
        .await
        .to_vec();
    let Event::FileLoaded(replayed) = &records[2].envelope.event else {
        panic!("{:?}", records[2].envelope)
    };
    assert_eq!(replayed.file_id.to_string(), old_id);
    assert_eq!(
        replayed.rows["companies"], 0,
        "the newer file's row is kept"
    );
    assert_eq!(employees(&env, &inn).await, Some(20));
    eventually(DEADLINE, "the replay recorded", || async {
        (ledger_row(&env, &old_id).await.1 == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn replay_explains_what_it_cannot_do() {
    let env = TestEnv::new().await;
    // Migrations only: no processor needed to answer from the ledger.
    let migrated = run_binary("cmd-processor", &["migrate"], env.vars.clone());
    assert!(migrated.status.success(), "{migrated:?}");

    let (ok, out) = replay(&env, &["not-a-uuid"]);
    assert!(!ok);
    assert!(out.contains("is not a file id"), "{out}");

    let unknown = "0190b2c4-0000-8000-8000-000000000001";
    let (ok, out) = replay(&env, &[unknown]);
    assert!(!ok);
    assert!(out.contains("is not in the ledger"), "{out}");
    assert!(out.contains("redrive"), "{out}");

    // Named with its company, but no such object in S3 (the bucket is
    // there: the api would have made it).
    let registry = prometheus::Registry::new();
    let store = ObjectStore::new(
        &S3Settings::from_env(&env.env(&[])).unwrap(),
        DependencyTimer::new(&registry),
    );
    store.ensure_bucket().await.unwrap();
    let (ok, out) = replay(&env, &[unknown, "acme"]);
    assert!(!ok);
    assert!(out.contains("gone from S3"), "{out}");
    assert!(!out.contains("panicked"), "{out}");
}
