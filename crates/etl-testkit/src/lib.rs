//! Helpers for integration tests against the real local stack
//! (`make itest-up`). Each [`TestEnv`] gets its own database, bucket, topic
//! prefix and consumer groups, so tests run in parallel without seeing each
//! other's data.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use etl_core::bus::{KafkaSettings, headers_map};
use etl_core::config::Env;
use etl_core::events::Envelope;

mod app;
pub mod hostile;
mod load;
mod own_kafka;
mod own_server;
mod process;
mod stale;
pub use app::{Answer, ImportRequest, import, test_log};
pub use load::{
    LoadReport, SteadyLoad, assert_loaded_exactly_once, count, files_recorded, group_lag,
    import_generated,
};
pub use own_kafka::{OwnKafka, PartitionState};
pub use own_server::OwnServer;
pub use process::{ServiceProcess, run_binary, workspace_binary};

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
    /// removes the databases, buckets and topics of test runs more than an
    /// hour old, so the local stack does not fill up.
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

/// One record read from a topic.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub partition: i32,
    pub offset: i64,
    pub envelope: Envelope,
}

/// For each file with a `FileLoaded` among `records`, the distinct
/// `event_id`s announcing it. After a crash an outcome may be published
/// again, always with the same id, so a file should have exactly one.
pub fn file_loaded_event_ids(records: &[Received]) -> BTreeMap<String, BTreeSet<String>> {
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in records {
        if let etl_core::events::Event::FileLoaded(e) = &r.envelope.event {
            ids.entry(e.file_id.to_string())
                .or_default()
                .insert(r.envelope.event_id.to_string());
        }
    }
    ids
}

fn received(m: &impl Message) -> Received {
    let envelope = Envelope::from_json(m.payload().unwrap_or_default())
        .unwrap_or_else(|e| panic!("a record on {} is not an envelope: {e}", m.topic()));
    Received {
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        headers: headers_map(m.headers()),
        partition: m.partition(),
        offset: m.offset(),
        envelope,
    }
}

/// Records a tail takes at most before it asks its caller's `done` again.
const TAIL_BATCH: usize = 1_000;

/// Reads a topic from the beginning in a consumer group of its own.
pub struct TopicTail {
    consumer: StreamConsumer,
    seen: Vec<Received>,
}

impl TopicTail {
    pub fn new(settings: &KafkaSettings, topic: &str) -> Self {
        let group = format!("tail-{}", uuid::Uuid::new_v4());
        let consumer = etl_core::bus::consumer(settings, &group, &[topic]).expect("consumer");
        Self {
            consumer,
            seen: Vec::new(),
        }
    }

    /// Reads until `done(all records so far)` holds; panics after `timeout`.
    pub async fn until<F>(&mut self, timeout: Duration, what: &str, done: F) -> &[Received]
    where
        F: Fn(&[Received]) -> bool,
    {
        let started = Instant::now();
        while !done(&self.seen) {
            let left = timeout.saturating_sub(started.elapsed());
            assert!(
                !left.is_zero(),
                "timed out after {timeout:?} waiting for {what}; saw {} record(s): {:#?}",
                self.seen.len(),
                self.seen.iter().map(|r| &r.envelope).collect::<Vec<_>>()
            );
            // `done` reads every record so far: asked after each one, a
            // long tail cost time quadratic in its length. What has
            // arrived is taken first (a zero timeout still polls once).
            let mut wait = left.min(Duration::from_millis(500));
            for _ in 0..TAIL_BATCH {
                let Ok(result) = tokio::time::timeout(wait, self.consumer.recv()).await else {
                    break;
                };
                self.seen.push(received(&result.expect("kafka receive")));
                wait = Duration::ZERO;
            }
        }
        &self.seen
    }

    /// Everything read so far.
    pub fn seen(&self) -> &[Received] {
        &self.seen
    }
}

/// The content of an example file, `examples/data/json/<name>`.
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
    let mut doc = example_json("c.json");
    doc["name"] = format!("Test {tag} {n}").into();
    let inn = etl_core::domain::Inn::with_check_digits(&format!("{:09}", 100_000_000 + n))
        .expect("nine digits");
    doc["inn"] = inn.as_str().into();
    doc
}

/// A service of the pipeline running inside the test process; stopped
/// (gracefully, as on SIGTERM) when dropped.
pub struct Service {
    pub base_url: String,
    stop: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Runs `run(stop_token)` in the background and waits until the service
    /// at `addr` answers `/readiness` with 200.
    pub async fn spawn<F, Fut, E>(addr: std::net::SocketAddr, run: F) -> Self
    where
        F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Debug,
    {
        let stop = tokio_util::sync::CancellationToken::new();
        let fut = run(stop.clone());
        let task = tokio::spawn(async move {
            fut.await.expect("service ran");
        });
        let service = Self {
            base_url: format!("http://{addr}"),
            stop,
            task: Some(task),
        };
        let url = service.url("/readiness");
        let client = http();
        eventually(DEADLINE, &format!("{url} to answer 200"), || {
            let request = client.get(&url).send();
            async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await;
        service
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Stops the service and waits until it has shut down.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("service shut down cleanly");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A listener on a free loopback port, for `build_with_listener`.
pub async fn local_listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port")
}

/// An HTTP client for the services under test.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// A running service, in-process or as a child process.
pub trait Endpoint {
    fn url(&self, path: &str) -> String;
}

impl Endpoint for Service {
    fn url(&self, path: &str) -> String {
        Service::url(self, path)
    }
}

impl Endpoint for ServiceProcess {
    fn url(&self, path: &str) -> String {
        ServiceProcess::url(self, path)
    }
}

/// `GET {service}{path}`: status and JSON body (`null` if the body is not JSON).
pub async fn get_json(service: &impl Endpoint, path: &str) -> (u16, serde_json::Value) {
    let r = http()
        .get(service.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// `POST {service}/import/companies` with a JSON `body`: status and JSON
/// answer (`null` if the answer is not JSON).
pub async fn post_import(service: &impl Endpoint, body: Vec<u8>) -> (u16, serde_json::Value) {
    let answer = import(service, body).send().await;
    (answer.status, answer.body)
}

/// `GET {service}/readiness`: status and report.
pub async fn readiness(service: &impl Endpoint) -> (u16, serde_json::Value) {
    get_json(service, "/readiness").await
}

/// Takes `server` down with `outage` (e.g. [`OwnServer::kill`]), checks
/// that `service`'s readiness turns 503 naming `check` and only it, runs
/// `while_down`, restarts the server and waits for readiness 200 again.
pub async fn readiness_follows(
    service: &impl Endpoint,
    server: &mut OwnServer,
    outage: impl FnOnce(&mut OwnServer),
    check: &str,
    while_down: impl AsyncFnOnce(),
) {
    outage(server);
    eprintln!("injected: the test's own {check} server taken down");
    let report = eventually(
        DEADLINE,
        &format!("readiness to report {check} down"),
        || async {
            let (status, body) = readiness(service).await;
            (status == 503).then_some(body)
        },
    )
    .await;
    assert_eq!(report["status"], "unavailable");
    for (name, result) in report["checks"].as_object().unwrap() {
        assert_eq!(result["ok"], name != check, "{report}");
    }
    assert!(
        !report["checks"][check]["error"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{report}"
    );

    while_down().await;

    server.restart().await;
    eprintln!("injected: {check} restarted");
    eventually(
        DEADLINE,
        &format!("readiness to recover from {check}"),
        || async { (readiness(service).await.0 == 200).then_some(()) },
    )
    .await;
    eprintln!("counted: readiness 503 naming {check} alone while it was down, 200 after");
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses Prometheus text format (enough of it for our own exporters:
/// no escaped quotes or commas inside label values).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once('=').expect("label k=v");
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("numeric sample value"),
            }
        })
        .collect()
}

/// The sum of the samples named `name` whose labels include `labels`.
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Scrapes `{service}/metrics`.
pub async fn scrape(service: &impl Endpoint) -> Vec<Sample> {
    let text = http()
        .get(service.url("/metrics"))
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    parse_metrics(&text)
}
