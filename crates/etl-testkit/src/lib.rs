//! Helpers for integration tests against the real local stack
//! (`make itest-up`). Each [`TestEnv`] gets its own database, bucket, topic
//! prefix and consumer groups, so tests run in parallel without seeing each
//! other's data.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use etl_core::bus::KafkaSettings;
use etl_core::config::Env;

mod app;
pub mod hostile;
mod load;
mod otlp;
mod own_kafka;
mod own_server;
mod process;
mod scrape;
mod service;
mod sse;
mod stale;
mod tail;
pub use app::{Answer, ImportRequest, import, test_log};
pub use load::{
    LoadReport, SteadyLoad, assert_loaded_exactly_once, count, files_recorded, group_lag,
    import_generated,
};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use own_kafka::{OwnKafka, PartitionState};
pub use own_server::OwnServer;
pub use process::{ServiceProcess, run_binary, workspace_binary};
pub use scrape::{Sample, metric, parse_metrics, scrape};
pub use service::{
    Endpoint, Service, get_json, http, local_listener, post_import, readiness, readiness_follows,
};
pub use sse::read_events;
pub use tail::{Received, TopicTail, file_loaded_event_ids};

/// How long a test waits for something the pipeline does asynchronously.
pub const DEADLINE: Duration = Duration::from_secs(60);

const STACK_VARS: [&str; 5] = [
    "DATABASE_URL",
    "KAFKA_BROKERS",
    "S3_ENDPOINT",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
];

/// The repository root (tests run with the crate as working directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The itest stack's settings: from the environment when the Makefile
/// exported them, else from `.local/itest/stack.env` written by
/// `scripts/stack.sh itest up`.
pub fn stack_vars() -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    let file = repo_root().join(".local/itest/stack.env");
    if let Ok(text) = std::fs::read_to_string(&file) {
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                vars.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
    }
    for var in STACK_VARS.iter().chain(&[
        "KAFKA_REPLICATION_FACTOR",
        "KAFKA_HOME",
        "WEED_BIN",
        "PG_BIN",
        "S3_REGION",
    ]) {
        if let Ok(v) = std::env::var(var) {
            vars.insert((*var).to_owned(), v);
        }
    }
    let missing: Vec<&str> = STACK_VARS
        .iter()
        .copied()
        .filter(|v| !vars.contains_key(*v))
        .collect();
    assert!(
        missing.is_empty(),
        "the integration stack is not configured ({} missing): run `make itest-up` first, \
         or `make test` which does it",
        missing.join(", ")
    );
    vars
}

/// One test's private slice of the stack.
pub struct TestEnv {
    /// Unique per test: `it_<seconds>_<random>`.
    pub id: String,
    pub vars: BTreeMap<String, String>,
    pub pool: PgPool,
}

impl TestEnv {
    /// Creates the test's database (migrated) and names its bucket, topic
    /// prefix and consumer groups. The first one of a test process also
    /// removes the databases, buckets and topics of test runs more than 15
    /// minutes old, so the local stack does not fill up.
    pub async fn new() -> Self {
        let mut vars = stack_vars();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let id = format!(
            "it_{now}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let admin_url = vars["DATABASE_URL"].clone();
        let admin = connect(&admin_url).await;
        stale::sweep_once(&admin, &vars, now).await;
        sqlx::query(&format!(r#"CREATE DATABASE "{id}""#))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        let url = replace_database(&admin_url, &id);
        let pool = connect(&url).await;
        etl_core::db::migrate(&pool)
            .await
            .expect("migrations apply");

        let dashed = id.replace('_', "-");
        vars.insert("DATABASE_URL".into(), url);
        vars.insert("S3_BUCKET".into(), dashed.clone());
        vars.insert("KAFKA_TOPIC_PREFIX".into(), format!("{dashed}."));
        vars.insert("PROCESSOR_GROUP_ID".into(), format!("{dashed}-processor"));
        vars.insert("MONITORING_GROUP_ID".into(), format!("{dashed}-monitoring"));
        // Retries in tests should be quick; production defaults are gentler.
        vars.insert("PROCESSOR_RETRY_BASE_MS".into(), "50".into());
        vars.insert("PROCESSOR_RETRY_MAX_MS".into(), "1000".into());
        vars.insert("KAFKA_LAG_INTERVAL_MS".into(), "200".into());
        // A killed consumer's partitions move on after 6 s instead of 45 s.
        vars.insert("KAFKA_SESSION_TIMEOUT_MS".into(), "6000".into());
        Self { id, vars, pool }
    }

    /// Settings for a service of this test, with extra overrides.
    pub fn env(&self, extra: &[(&str, &str)]) -> Env {
        let mut pairs: Vec<(String, String)> = self.vars.clone().into_iter().collect();
        pairs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Env::with_overrides(pairs)
    }

    pub fn kafka(&self) -> KafkaSettings {
        KafkaSettings::from_env(&self.env(&[])).expect("kafka settings")
    }

    /// Reads a topic of this test from its beginning.
    pub fn tail(&self, topic: &str) -> TopicTail {
        TopicTail::new(&self.kafka(), topic)
    }
}

async fn connect(url: &str) -> PgPool {
    let options: PgConnectOptions = url.parse().expect("DATABASE_URL parses");
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the itest Postgres ({e}); run `make itest-up`"))
}

fn replace_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[authority_end..].find('/') {
        Some(i) => &base[..authority_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// Polls `check` every 50 ms until it yields a value; panics naming `what`
/// when `timeout` passes first.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The content of an example file, `examples/data/json/<dataset>/<name>`.
pub fn example(name: &str) -> Vec<u8> {
    let path = repo_root().join("examples/data/json").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Parses an example as JSON.
pub fn example_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&example(name)).expect("example is JSON")
}

/// A valid company document of its own: `c.json` with the name
/// `Test {tag} {n}` and an INN derived from `n` (valid check digit).
pub fn generated_company(tag: &str, n: u32) -> serde_json::Value {
    let mut doc = example_json("companies/c.json");
    doc["name"] = format!("Test {tag} {n}").into();
    let inn = etl_core::domain::Inn::with_check_digits(&format!("{:09}", 100_000_000 + n))
        .expect("nine digits");
    doc["inn"] = inn.as_str().into();
    doc
}
