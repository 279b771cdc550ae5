//! Files loaded together in one transaction, against the real database:
//! what one of them does (a refusal, a shared INN, a file another consumer
//! recorded first) lands on that file and not on the others.
//!
//! The tests run on tokio's current-thread runtime: the loader task cannot
//! take a transaction's files before the test has queued all of them, so
//! which files share a transaction is known, not timing.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use prometheus::{Histogram, Registry};
use serde_json::Value;
use sha2::{Digest, Sha256};

use cmd_processor::catalog::{Catalog, Loadable};
use cmd_processor::db::{self, FileMeta, Rejection, Rows, Written};
use cmd_processor::loader::{Loaded, Loader};
use cmd_processor::metrics::ProcessorMetrics;
use cmd_processor::record::Record;
use etl_core::domain::{CompanySlug, FileId, RequestId};
use etl_core::metrics::DependencyTimer;
use etl_testkit::{TestEnv, generated_company};

struct File {
    doc: Value,
    meta: FileMeta,
    dataset: Arc<Loadable>,
    record: Record,
}

fn file(doc: &Value, received_at: DateTime<Utc>) -> File {
    let bytes = serde_json::to_vec(doc).unwrap();
    let dataset = Catalog::built_in().get("companies").unwrap().clone();
    let record = dataset.read(&bytes).expect("a valid document");
    let slug = CompanySlug::from_name(doc["name"].as_str().unwrap()).unwrap();
    let file_id = FileId::for_content(&slug, &Sha256::digest(&bytes).into());
    File {
        doc: doc.clone(),
        meta: FileMeta {
            file_id,
            dataset: "companies".into(),
            s3_key: etl_core::storage::company_file_key(&slug, file_id),
            company: slug,
            sha256: hex::encode(Sha256::digest(&bytes)),
            size_bytes: bytes.len() as u64,
            request_id: RequestId::generate(),
            event_id: uuid::Uuid::new_v4(),
            received_at,
            replaces: None,
        },
        dataset,
        record,
    }
}

fn children(doc: &Value, field: &str) -> u64 {
    doc[field].as_array().map_or(0, Vec::len) as u64
}

fn loader(env: &TestEnv) -> (Loader, Histogram) {
    let registry = Registry::new();
    let per_transaction = ProcessorMetrics::new(&registry).files_per_transaction();
    let loader = Loader::spawn(
        env.pool.clone(),
        DependencyTimer::new(&registry),
        per_transaction.clone(),
        64,
    );
    (loader, per_transaction)
}

/// Hands all the files over at once, in order, and waits for every answer.
async fn load_together(loader: &Loader, files: &[&File]) -> Vec<Loaded> {
    let loads = files.iter().map(|f| {
        loader.load(
            f.meta.clone(),
            f.dataset.clone(),
            f.record.clone(),
            Instant::now(),
        )
    });
    futures::future::join_all(loads).await
}

fn rows(loaded: &Loaded) -> &Rows {
    match loaded {
        Ok(Written::Done(rows)) => rows,
        other => panic!("expected a load, got {other:?}"),
    }
}

async fn ledger_status(env: &TestEnv, f: &File) -> Vec<String> {
    sqlx::query_scalar("SELECT status FROM import_files WHERE file_id = $1")
        .bind(f.meta.file_id.as_uuid())
        .fetch_all(&env.pool)
        .await
        .unwrap()
}

async fn company_name(env: &TestEnv, f: &File) -> Option<String> {
    sqlx::query_scalar("SELECT name FROM companies WHERE inn = $1")
        .bind(&f.record.key)
        .fetch_optional(&env.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn files_waiting_together_load_in_one_transaction() {
    let env = TestEnv::new().await;
    let (loader, per_transaction) = loader(&env);
    let now = Utc::now();
    let files: Vec<File> = (0..5)
        .map(|n| file(&generated_company(&env.id, n), now))
        .collect();

    let loaded = load_together(&loader, &files.iter().collect::<Vec<_>>()).await;

    for (f, loaded) in files.iter().zip(&loaded) {
        let rows = rows(loaded);
        assert_eq!(rows["companies"], 1);
        assert_eq!(rows["company_offices"], children(&f.doc, "offices"));
        assert_eq!(rows["company_contacts"], children(&f.doc, "contacts"));
        assert_eq!(ledger_status(&env, f).await, ["loaded"]);
        assert_eq!(
            company_name(&env, f).await.as_deref(),
            f.doc["name"].as_str()
        );
    }
    assert_eq!(per_transaction.get_sample_count(), 1);
    assert_eq!(per_transaction.get_sample_sum(), 5.0);
}

#[tokio::test]
async fn a_file_the_database_refuses_fails_alone_and_the_others_of_its_transaction_load() {
    let env = TestEnv::new().await;
    // A rule only the database knows, as a constraint a DBA added would.
    sqlx::query("ALTER TABLE companies ADD CONSTRAINT no_test_banks CHECK (industry <> 'Refused')")
        .execute(&env.pool)
        .await
        .unwrap();
    let (loader, per_transaction) = loader(&env);
    let now = Utc::now();
    let mut refused_doc = generated_company(&env.id, 1);
    refused_doc["industry"] = "Refused".into();
    let good = file(&generated_company(&env.id, 0), now);
    let refused = file(&refused_doc, now);
    let also_good = file(&generated_company(&env.id, 2), now);

    let [a, b, c]: [Loaded; 3] = load_together(&loader, &[&good, &refused, &also_good])
        .await
        .try_into()
        .unwrap();

    assert_eq!(rows(&a)["companies"], 1);
    assert_eq!(rows(&c)["companies"], 1);
    let refusal = b.expect_err("the refused file fails");
    assert!(db::is_permanent(&refusal), "{refusal}");
    assert!(refusal.to_string().contains("no_test_banks"), "{refusal}");
    assert_eq!(ledger_status(&env, &good).await, ["loaded"]);
    assert_eq!(ledger_status(&env, &also_good).await, ["loaded"]);
    assert!(ledger_status(&env, &refused).await.is_empty());
    assert_eq!(company_name(&env, &refused).await, None);
    // The three together, refused; then each on its own.
    assert_eq!(per_transaction.get_sample_count(), 4);
    assert_eq!(per_transaction.get_sample_sum(), 6.0);
}

#[tokio::test]
async fn files_of_one_inn_take_turns_and_the_newest_received_keeps_the_company() {
    let env = TestEnv::new().await;
    let (loader, per_transaction) = loader(&env);
    let now = Utc::now();
    let mut older_doc = generated_company(&env.id, 7);
    older_doc["name"] = format!("Test {} older name", env.id).into();
    // The newer file is handed over first; the older, processed late, must
    // not overwrite it.
    let newer = file(&generated_company(&env.id, 7), now);
    let older = file(&older_doc, now - Duration::seconds(60));
    let other = file(&generated_company(&env.id, 8), now);

    let [n, o, x]: [Loaded; 3] = load_together(&loader, &[&newer, &older, &other])
        .await
        .try_into()
        .unwrap();

    assert_eq!(rows(&n)["companies"], 1);
    assert_eq!(rows(&x)["companies"], 1);
    let older_rows = rows(&o);
    assert_eq!(older_rows["companies"], 0, "{older_rows:?}");
    assert_eq!(older_rows["company_offices"], 0);
    assert_eq!(ledger_status(&env, &older).await, ["loaded"]);
    assert_eq!(
        company_name(&env, &newer).await.as_deref(),
        newer.doc["name"].as_str()
    );
    // The same INN cannot be written twice by one statement: the second
    // file waited for the next transaction.
    assert_eq!(per_transaction.get_sample_count(), 2);
    assert_eq!(per_transaction.get_sample_sum(), 3.0);
}

#[tokio::test]
async fn a_file_another_consumer_recorded_first_is_left_out_and_the_others_load() {
    let env = TestEnv::new().await;
    let (loader, _) = loader(&env);
    let now = Utc::now();
    let files: Vec<File> = (0..3)
        .map(|n| file(&generated_company(&env.id, n), now))
        .collect();
    // As a consumer that took the partition over in a rebalance would.
    let recorded = db::record_rejected(&env.pool, &files[1].meta, Rejection::Invalid, &[])
        .await
        .unwrap();
    assert_eq!(recorded, Written::Done(()));

    let loaded = load_together(&loader, &files.iter().collect::<Vec<_>>()).await;

    assert_eq!(rows(&loaded[0])["companies"], 1);
    assert!(
        matches!(loaded[1], Ok(Written::AlreadyRecorded)),
        "{:?}",
        loaded[1]
    );
    assert_eq!(rows(&loaded[2])["companies"], 1);
    assert_eq!(ledger_status(&env, &files[1]).await, ["invalid"]);
    assert_eq!(
        company_name(&env, &files[1]).await,
        None,
        "its data rolled back"
    );
    assert_eq!(
        company_name(&env, &files[2]).await.as_deref(),
        files[2].doc["name"].as_str()
    );
}
