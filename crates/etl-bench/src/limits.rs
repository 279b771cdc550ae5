//! The raw rates of the dependencies, through the same clients the
//! services use: the ceilings the pipeline is measured against.

use std::collections::BTreeMap;
use std::sync::Arc;

use etl_core::bus::{self, EventPublisher};
use etl_core::metrics::DependencyTimer;
use etl_core::storage::{ObjectStore, S3Settings};
use etl_testkit::TestEnv;
use futures::StreamExt;
use prometheus::Registry;

use crate::run::{Pace, closed_loop, drive};
use crate::stats::Phase;

pub fn s3_settings(env: &TestEnv) -> S3Settings {
    S3Settings::from_env(&env.env(&[])).expect("S3 settings")
}

pub fn store(env: &TestEnv) -> Arc<ObjectStore> {
    Arc::new(ObjectStore::new(
        &s3_settings(env),
        DependencyTimer::new(&Registry::new()),
    ))
}

/// The shape of the api's keys (`<company>/files/<file id>.json`), one
/// company each as in the api phase: SeaweedFS's filer makes a directory
/// per new prefix, a cost every new company's first file pays.
pub fn raw_key(i: u64) -> String {
    format!("bench-raw-{i:08}/files/{i:08}.json")
}

/// PUTs of 2 KiB objects, each under a new company's prefix, keys
/// `first..first + total`.
pub async fn s3_put(store: &Arc<ObjectStore>, first: u64, total: u64, pace: Pace) -> Phase {
    store.ensure_bucket().await.expect("bucket");
    let name = match pace {
        Pace::Flat(_) => "raw S3 PUT (2 KiB, new company prefix)",
        Pace::Rate(_) => "raw S3 PUT at the api ingest rate",
    };
    drive(name, "objects", total, pace, |i| {
        let store = store.clone();
        async move {
            store
                .put(&raw_key(first + i), vec![b'x'; 2_048])
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

/// GETs of the objects `s3_put` wrote.
pub async fn s3_get(store: &Arc<ObjectStore>, total: u64, concurrency: usize) -> Phase {
    closed_loop("raw S3 GET (2 KiB)", "objects", total, concurrency, |i| {
        let store = store.clone();
        async move {
            store
                .get(&raw_key(i))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

/// Idempotent, acks=all produces of 1 KiB records to a 3-partition topic.
pub async fn produce(env: &TestEnv, total: u64, pace: Pace) -> Phase {
    let settings = env.kafka();
    let topic = format!("{}bench.raw", settings.topic_prefix);
    bus::ensure_topics(&settings, &[&topic])
        .await
        .expect("bench topic");
    let registry = Registry::new();
    let publisher = Arc::new(
        EventPublisher::new(&settings, &registry, DependencyTimer::new(&registry))
            .expect("producer"),
    );
    let payload = vec![b'x'; 1_024];
    let headers = BTreeMap::new();
    let name = match pace {
        Pace::Flat(_) => "raw produce (1 KiB, acks=all)",
        Pace::Rate(_) => "raw produce at the api ingest rate",
    };
    drive(name, "records", total, pace, |i| {
        let (publisher, topic, payload, headers) = (
            publisher.clone(),
            topic.clone(),
            payload.clone(),
            headers.clone(),
        );
        async move {
            let key = format!("company-{}", i % 97);
            publisher
                .publish_raw(&topic, Some(key.as_bytes()), &payload, &headers)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await
}

/// Rows each benchmark company has: itself, two offices, two contacts
/// (the shape of examples/data/json/companies/c.json).
pub const ROWS_PER_COMPANY: u64 = 5;

/// `COPY … FROM STDIN` of companies with their offices and contacts into
/// the processor's tables, `per_copy` companies per transaction.
pub async fn pg_copy(env: &TestEnv, companies: u64, per_copy: u64, concurrency: usize) -> Phase {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(concurrency as u32)
        .connect(&env.vars["DATABASE_URL"])
        .await
        .expect("bench pool");
    let batches = companies.div_ceil(per_copy);
    let mut phase = closed_loop(
        "raw COPY (company + 4 rows)",
        "companies",
        batches,
        concurrency,
        |b| {
            let pool = pool.clone();
            async move {
                let first = b * per_copy;
                let last = (first + per_copy).min(companies);
                copy_batch(&pool, first..last)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await;
    // The loop counted batches; the phase is about companies.
    phase.done = (phase.done * per_copy).min(companies);
    phase.failed *= per_copy;
    phase.latencies.clear();
    pool.close().await;
    phase
}

async fn copy_batch(pool: &sqlx::PgPool, range: std::ops::Range<u64>) -> Result<(), sqlx::Error> {
    let (mut companies, mut offices, mut contacts) = (String::new(), String::new(), String::new());
    let now = chrono::Utc::now().to_rfc3339();
    for i in range {
        let inn = format!("{}", 1_000_000_000 + i);
        let file_id = uuid::Uuid::new_v4();
        companies += &format!(
            "{inn}\tBench company {i}\tbench-company-{i}\t1027700132195\t1991-06-20\t210000\tБанки\thttps://example.com\tRU\tМосква\tул. Вавилова, 19\t117312\t{{\"rating\": \"ruAAA\"}}\t{file_id}\t{now}\n"
        );
        offices += &format!(
            "{inn}\t0\tМосква\tКутузовский пр., 32\t5200\n{inn}\t1\tСанкт-Петербург\tНевский пр., 21\t900\n"
        );
        contacts +=
            &format!("{inn}\t0\tphone\t+7 495 500-55-50\n{inn}\t1\temail\tbench@example.com\n");
    }
    let mut tx = pool.begin().await?;
    for (sql, data) in [
        (
            "COPY companies (inn, name, slug, ogrn, founded_at, employees, industry, website, \
             address_country, address_city, address_street, address_postal_code, extra, \
             source_file_id, source_received_at) FROM STDIN",
            companies,
        ),
        (
            "COPY company_offices (company_inn, position, city, address, headcount) FROM STDIN",
            offices,
        ),
        (
            "COPY company_contacts (company_inn, position, kind, value) FROM STDIN",
            contacts,
        ),
    ] {
        let mut copy = tx.copy_in_raw(sql).await?;
        copy.send(data.into_bytes()).await?;
        copy.finish().await?;
    }
    tx.commit().await
}

/// Deletes in flight at once while cleaning up.
const DELETE_CONCURRENCY: usize = 64;

/// Deletes the objects the run stored, then its bucket: a run stores tens
/// of thousands of files and gigabytes of streamed companies, which would
/// otherwise pile up run after run in the local S3 server's folder. The
/// keys are the ones the run knows (the raw phase's, the ledger's, the
/// streaming answers'), so no listing of a large bucket is needed.
pub async fn clean_up(
    env: &TestEnv,
    store: &ObjectStore,
    raw_puts: u64,
    streamed: Vec<String>,
) -> Result<usize, String> {
    let ledger: Vec<String> = sqlx::query_scalar("SELECT s3_key FROM import_files")
        .fetch_all(&env.pool)
        .await
        .map_err(|e| format!("reading the ledger: {e}"))?;
    let keys: Vec<String> = (0..raw_puts)
        .map(raw_key)
        .chain(ledger)
        .chain(streamed)
        .collect();
    let deleted = futures::stream::iter(keys.iter())
        .map(|key| store.delete(key))
        .buffer_unordered(DELETE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    if let Some(Err(e)) = deleted.into_iter().find(Result::is_err) {
        return Err(format!("deleting: {e}"));
    }
    store.delete_bucket().await.map_err(|e| {
        format!("deleting the bucket (objects the run did not record are left): {e}")
    })?;
    Ok(keys.len())
}
