//! Large loads for the fault tests: many generated companies imported
//! through the api, and the exactly-once checks a user would run after.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::{
    Endpoint, TestEnv, eventually, file_loaded_event_ids, generated_company, http, post_import,
};

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
    let records = records.len();

    let group = &env.vars["PROCESSOR_GROUP_ID"];
    let topic = env.kafka().topics().file_extract_success;
    eventually(
        deadline,
        "the processor's group lag to return to 0",
        || async { (group_lag(env, group, &topic).await == Some(0)).then_some(()) },
    )
    .await;
    records
}

/// Records of `topic` that consumer group `group` has not committed yet,
/// over all partitions (a partition without a commit counts whole); `None`
/// while the cluster does not answer.
pub async fn group_lag(env: &TestEnv, group: &str, topic: &str) -> Option<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, TopicPartitionList};

    let brokers = env.kafka().brokers;
    let (group, topic) = (group.to_owned(), topic.to_owned());
    let timeout = Duration::from_secs(10);
    let lag = move || -> Result<i64, rdkafka::error::KafkaError> {
        // Never subscribes, so it asks for the group's offsets without
        // joining the group.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("log_level", "3")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut partitions = TopicPartitionList::new();
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            partitions.add_partition(&topic, p.id());
        }
        let lags = etl_core::bus::uncommitted(&consumer, partitions, timeout)?;
        Ok(lags.into_iter().map(|(_, _, lag)| lag).sum())
    };
    tokio::task::spawn_blocking(lag).await.unwrap().ok()
}

/// Single-company imports posted without pause by a few clients that
/// behave as a careful client does: a `503` is posted again (the same
/// content, so the same file id) until it is acknowledged. Runs until
/// [`SteadyLoad::stop`]; every answer is counted.
pub struct SteadyLoad {
    stop: tokio_util::sync::CancellationToken,
    clients: Vec<tokio::task::JoinHandle<LoadReport>>,
    acknowledged: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// What the clients of a [`SteadyLoad`] were answered.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// File ids of every import answered 202.
    pub acknowledged: BTreeSet<String>,
    /// `503 dependency_unavailable` answers (each posted again after).
    pub unavailable: usize,
    /// Every other answer that was not a 202: status and error code.
    pub unexpected: Vec<(u16, String)>,
}

impl SteadyLoad {
    /// `clients` clients posting companies generated for `tag`.
    pub fn start(api: &impl Endpoint, tag: &str, clients: u32) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|client| {
                let (api, tag) = (BaseUrl(api.url("")), tag.to_owned());
                let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
                tokio::spawn(async move {
                    let mut report = LoadReport::default();
                    // Numbers of their own per client: distinct companies.
                    for n in (client * 1_000_000).. {
                        if stop.is_cancelled() {
                            break;
                        }
                        let body = serde_json::to_vec(&generated_company(&tag, n)).unwrap();
                        let file_id = post_until_acknowledged(&api, body, &mut report).await;
                        report.acknowledged.insert(file_id);
                        acknowledged.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    report
                })
            })
            .collect();
        Self {
            stop,
            clients,
            acknowledged,
        }
    }

    /// Imports acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acknowledged.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `more` imports beyond those acknowledged now are
    /// acknowledged: the pipeline takes imports at this point.
    pub async fn wait_for_more(&self, more: usize, deadline: Duration, what: &str) {
        let target = self.acknowledged() + more;
        eventually(deadline, what, || async {
            (self.acknowledged() >= target).then_some(())
        })
        .await;
    }

    /// Lets every client finish the import it is posting and adds up what
    /// they were answered.
    pub async fn stop(self) -> LoadReport {
        self.stop.cancel();
        let mut total = LoadReport::default();
        for client in self.clients {
            let report = client.await.expect("load client");
            total.acknowledged.extend(report.acknowledged);
            total.unavailable += report.unavailable;
            total.unexpected.extend(report.unexpected);
        }
        total
    }
}

/// A service's base URL, for the clients' own tasks.
struct BaseUrl(String);

impl Endpoint for BaseUrl {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

/// Posts `body` until it is answered 202 (a careful client's retry of a
/// 503), counting every other answer in `report`; the file id.
async fn post_until_acknowledged(api: &BaseUrl, body: Vec<u8>, report: &mut LoadReport) -> String {
    let started = std::time::Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "an import was not acknowledged within 300 s; answers so far: {report:?}"
        );
        let (status, answer) = post_import(api, body.clone()).await;
        if status == 202 {
            return answer["files"][0]["file_id"].as_str().unwrap().to_owned();
        }
        let code = answer["error"]["code"].as_str().unwrap_or_default();
        if status == 503 && code == "dependency_unavailable" {
            report.unavailable += 1;
        } else {
            report.unexpected.push((status, code.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
