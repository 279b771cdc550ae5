//! The whole pipeline, api and processor, against the real stack: what a
//! user posts ends up in Postgres once, or is reported invalid once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

use etl_core::events::{Event, ValidationError};
use etl_testkit::{
    DEADLINE, OwnServer, Received, Sample, Service, TestEnv, eventually, example, example_json,
    generated_company, metric, post_import, readiness, readiness_follows, scrape,
};

struct Pipeline {
    env: TestEnv,
    api: Service,
    processor: Service,
}

async fn start() -> Pipeline {
    start_in(TestEnv::new().await, &[]).await
}

/// Api and processor of `env`, with `extra` settings for both.
async fn start_in(env: TestEnv, extra: &[(&str, &str)]) -> Pipeline {
    let api = env.spawn_api(extra).await;
    let processor = env.spawn_processor(extra).await;
    Pipeline {
        env,
        api,
        processor,
    }
}

async fn post_to(api: &Service, body: Vec<u8>) -> Value {
    let (status, answer) = post_import(api, body).await;
    assert_eq!(status, 202, "{answer}");
    answer
}

impl Pipeline {
    async fn post(&self, body: Vec<u8>) -> Value {
        post_to(&self.api, body).await
    }

    /// Outcome events (FileLoaded / ValidationError) seen so far, waiting
    /// until `done` holds.
    async fn outcomes<F>(&self, topic: &str, what: &str, done: F) -> Vec<Received>
    where
        F: Fn(&[Received]) -> bool,
    {
        let mut tail = self.env.tail(topic);
        tail.until(DEADLINE, what, done).await.to_vec()
    }

    /// Posts an example that fails validation; returns its file id and its
    /// one `ValidationError`.
    async fn post_invalid(&self, example_name: &str) -> (String, ValidationError) {
        let accepted = self.post(example(example_name)).await;
        let file_id = file_ids(&accepted).remove(0);
        let topic = self.env.kafka().topics().validation_error;
        let errors = self
            .outcomes(&topic, "the ValidationError", |r| !r.is_empty())
            .await;
        assert_eq!(errors.len(), 1, "{errors:?}");
        let Event::ValidationError(event) = &errors[0].envelope.event else {
            panic!("unexpected {:?}", errors[0].envelope.event)
        };
        assert_eq!(event.file_id.to_string(), file_id);
        (file_id, event.clone())
    }

    /// What the broker does after a crash between writing and committing:
    /// the very same `FileExtractSuccess` record again.
    async fn redeliver_first_extract_event(&self) {
        let topic = self.env.kafka().topics().file_extract_success;
        let original = self
            .env
            .tail(&topic)
            .until(DEADLINE, "the FileExtractSuccess", |r| !r.is_empty())
            .await[0]
            .envelope
            .clone();
        let publisher = self.env.publisher();
        publisher.publish(&original).await.expect("republished");
    }

    async fn ledger(&self, file_id: &str) -> Vec<(String, Option<Value>)> {
        sqlx::query_as::<_, (String, Option<sqlx::types::Json<Value>>)>(
            "SELECT status, errors FROM import_files WHERE file_id = $1::uuid",
        )
        .bind(file_id)
        .fetch_all(&self.env.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(s, e)| (s, e.map(|j| j.0)))
        .collect()
    }

    async fn processor_metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&scrape(&self.processor).await, name, labels)
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.env.pool)
            .await
            .unwrap()
    }
}

/// The text of every `.rs` file under `dirs` (relative to the repository).
fn sources_of(dirs: &[&str]) -> String {
    fn walk(dir: &std::path::Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                *out += &std::fs::read_to_string(&path).unwrap();
            }
        }
    }
    let mut code = String::new();
    for dir in dirs {
        walk(&etl_testkit::repo_root().join(dir), &mut code);
    }
    code
}

fn file_ids(accepted: &Value) -> Vec<String> {
    accepted["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file_id"].as_str().unwrap().to_owned())
        .collect()
}

fn loaded_ids(records: &[Received]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match &r.envelope.event {
            Event::FileLoaded(e) => Some(e.file_id.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn one_company_travels_from_curl_to_postgres() {
    let p = start().await;
    let accepted = p.post(example("companies/c.json")).await;
    let file_id = file_ids(&accepted).remove(0);

    let topics = p.env.kafka().topics();
    let loaded = p
        .outcomes(&topics.file_loaded, "FileLoaded", |r| !r.is_empty())
        .await;
    assert_eq!(loaded_ids(&loaded), std::slice::from_ref(&file_id));
    let Event::FileLoaded(event) = &loaded[0].envelope.event else {
        unreachable!()
    };
    assert_eq!(loaded[0].key.as_deref(), Some("pao-sberbank"));
    assert_eq!(
        loaded[0].envelope.request_id.as_str(),
        accepted["request_id"].as_str().unwrap()
    );
    assert_eq!(
        event.rows,
        BTreeMap::from([
            ("companies".to_owned(), 1),
            ("company_contacts".to_owned(), 2),
            ("company_offices".to_owned(), 2)
        ])
    );

    let doc = example_json("companies/c.json");
    let (name, slug, employees, city, extra): (
        String,
        String,
        Option<i32>,
        Option<String>,
        sqlx::types::Json<Value>,
    ) = sqlx::query_as(
        "SELECT name, slug, employees, address_city, extra FROM companies WHERE inn = $1",
    )
    .bind(doc["inn"].as_str().unwrap())
    .fetch_one(&p.env.pool)
    .await
    .expect("the company row exists");
    assert_eq!(name, doc["name"].as_str().unwrap());
    assert_eq!(slug, "pao-sberbank");
    assert_eq!(employees, doc["employees"].as_i64().map(|e| e as i32));
    assert_eq!(city.as_deref(), doc["address"]["city"].as_str());
    assert_eq!(
        extra.0,
        serde_json::json!({"rating": doc["rating"]}),
        "unknown fields kept"
    );
    assert_eq!(p.count("SELECT count(*) FROM company_offices").await, 2);
    assert_eq!(p.count("SELECT count(*) FROM company_contacts").await, 2);
    assert_eq!(p.ledger(&file_id).await, [("loaded".to_owned(), None)]);
}

#[tokio::test]
async fn every_company_of_a_large_file_is_loaded_exactly_once() {
    let p = start().await;
    let companies = example_json("companies/companies.json");
    let n = companies.as_array().unwrap().len();
    assert!(n >= 50, "the example has {n} companies");
    let accepted = p.post(example("companies/companies.json")).await;
    let ids: BTreeSet<String> = file_ids(&accepted).into_iter().collect();
    assert_eq!(ids.len(), n);

    let topics = p.env.kafka().topics();
    let loaded = p
        .outcomes(&topics.file_loaded, "a FileLoaded per company", |r| {
            r.len() >= n
        })
        .await;
    let loaded: Vec<String> = loaded_ids(&loaded);
    assert_eq!(loaded.len(), n, "one FileLoaded per file");
    assert_eq!(loaded.into_iter().collect::<BTreeSet<_>>(), ids);

    let inns: BTreeSet<&str> = companies
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["inn"].as_str().unwrap())
        .collect();
    let rows: Vec<String> = sqlx::query_scalar("SELECT inn FROM companies ORDER BY inn")
        .fetch_all(&p.env.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), n, "one row per company");
    assert_eq!(
        rows.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        inns
    );
    assert_eq!(
        p.count("SELECT count(*) FROM import_files WHERE status = 'loaded'")
            .await,
        n as i64
    );
    assert_eq!(p.count("SELECT count(*) FROM import_files").await, n as i64);
}

/// Files are handled many at once, but one company's files one after
/// another: each company's `FileLoaded` events come in the order its files
/// were posted, and the last file's data is what stays.
#[tokio::test]
async fn one_companys_files_are_loaded_in_the_order_they_were_posted() {
    const COMPANIES: u32 = 24;
    const ROUNDS: u32 = 8;
    let p = start().await;
    // Round after round, every company once more, each round acknowledged
    // before the next is posted: per company, the order of the rounds.
    let mut posted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for round in 0..ROUNDS {
        let companies: Vec<Value> = (0..COMPANIES)
            .map(|n| {
                let mut company = generated_company("order", n);
                company["employees"] = round.into();
                company
            })
            .collect();
        let accepted = p.post(serde_json::to_vec(&companies).unwrap()).await;
        for file in accepted["files"].as_array().unwrap() {
            posted
                .entry(file["company"].as_str().unwrap().to_owned())
                .or_default()
                .push(file["file_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(posted.len(), COMPANIES as usize);

    let total = (COMPANIES * ROUNDS) as usize;
    let topic = p.env.kafka().topics().file_loaded;
    let mut records = p
        .outcomes(&topic, "a FileLoaded per file", |r| r.len() >= total)
        .await;
    assert_eq!(records.len(), total, "one FileLoaded per file");
    records.sort_by_key(|r| (r.partition, r.offset));
    let mut loaded: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in &records {
        let company = record.key.clone().expect("outcomes are keyed by company");
        loaded
            .entry(company)
            .or_default()
            .extend(loaded_ids(std::slice::from_ref(record)));
    }
    assert_eq!(
        loaded, posted,
        "per company, files loaded in the order posted"
    );

    let employees: Vec<i32> = sqlx::query_scalar("SELECT DISTINCT employees FROM companies")
        .fetch_all(&p.env.pool)
        .await
        .unwrap();
    assert_eq!(
        employees,
        [ROUNDS as i32 - 1],
        "the last round's data stays"
    );
}

#[tokio::test]
async fn a_bad_inn_checksum_is_reported_and_not_loaded() {
    let p = start().await;
    let (file_id, event) = p.post_invalid("companies/invalid/bad-inn.json").await;
    assert_eq!(event.errors.len(), 1, "{:?}", event.errors);
    assert_eq!(event.errors[0].path, "/inn");
    assert!(
        event.errors[0].message.contains("check digit"),
        "{}",
        event.errors[0].message
    );

    let ledger = p.ledger(&file_id).await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].0, "invalid");
    assert_eq!(ledger[0].1.as_ref().unwrap()[0]["path"], "/inn");
    assert_eq!(
        p.count("SELECT count(*) FROM companies").await,
        0,
        "no company row"
    );
}

#[tokio::test]
async fn every_failing_path_of_a_document_is_listed_in_one_event() {
    let p = start().await;
    let (_, event) = p.post_invalid("companies/invalid/schema-errors.json").await;
    let paths: BTreeSet<&str> = event.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        BTreeSet::from([
            "/inn",
            "/ogrn",
            "/founded_at",
            "/employees",
            "/website",
            "/address/country",
            "/contacts/0/kind",
            "/offices/0/headcount"
        ])
    );
}

#[tokio::test]
async fn the_same_file_posted_twice_is_loaded_once() {
    let p = start().await;
    let first = p.post(example("companies/c.json")).await;
    let second = p.post(example("companies/c.json")).await;
    let file_id = file_ids(&first).remove(0);
    assert_eq!(
        file_ids(&second),
        std::slice::from_ref(&file_id),
        "same content, same file id"
    );
    // A later, different file of the same company goes to the same partition,
    // so once it is loaded, both copies before it have been handled.
    let mut changed = example_json("companies/c.json");
    changed["employees"] = 1.into();
    let marker = p.post(serde_json::to_vec(&changed).unwrap()).await;
    let marker_id = file_ids(&marker).remove(0);

    let topics = p.env.kafka().topics();
    let loaded = p
        .outcomes(&topics.file_loaded, "the later file's FileLoaded", |r| {
            loaded_ids(r).contains(&marker_id)
        })
        .await;
    let loaded = loaded_ids(&loaded);
    assert_eq!(
        loaded.iter().filter(|id| **id == file_id).count(),
        1,
        "{loaded:?}"
    );
    assert_eq!(p.ledger(&file_id).await.len(), 1);
    assert_eq!(p.count("SELECT count(*) FROM import_files").await, 2);
    assert_eq!(p.count("SELECT count(*) FROM companies").await, 1);
    let duplicates = eventually(DEADLINE, "the duplicate to be counted", || async {
        let v = p
            .processor_metric("processor_files_total", &[("outcome", "duplicate")])
            .await;
        (v > 0.0).then_some(v)
    })
    .await;
    assert_eq!(duplicates, 1.0);
}

#[tokio::test]
async fn a_redelivered_event_is_not_loaded_again_and_its_outcome_repeats_with_the_same_id() {
    let p = start().await;
    let accepted = p.post(example("companies/c.json")).await;
    let file_id = file_ids(&accepted).remove(0);
    let topics = p.env.kafka().topics();
    let mut loaded = p.env.tail(&topics.file_loaded);
    loaded
        .until(DEADLINE, "the first FileLoaded", |r| !r.is_empty())
        .await;

    p.redeliver_first_extract_event().await;

    let both = loaded
        .until(DEADLINE, "the repeated FileLoaded", |r| r.len() >= 2)
        .await;
    assert_eq!(loaded_ids(both), [file_id.clone(), file_id.clone()]);
    assert_eq!(
        both[0].envelope.event_id, both[1].envelope.event_id,
        "same event id"
    );
    assert_eq!(p.ledger(&file_id).await.len(), 1);
    assert_eq!(p.count("SELECT count(*) FROM companies").await, 1);
}

#[tokio::test]
async fn a_poison_record_is_dead_lettered_and_later_files_still_load() {
    let p = start().await;
    let topics = p.env.kafka().topics();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &p.env.kafka().brokers)
        .create()
        .expect("producer");
    // Same key as c.json's company, so it sits before it in one partition.
    producer
        .send(
            FutureRecord::to(&topics.file_extract_success)
                .key("pao-sberbank")
                .payload("this is not an event"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("poison produced");
    eprintln!("injected: a record that is not an event, ahead of c.json in its partition");
    let accepted = p.post(example("companies/c.json")).await;
    let file_id = file_ids(&accepted).remove(0);

    let mut loaded = p.env.tail(&topics.file_loaded);
    let after = loaded
        .until(DEADLINE, "the good file's FileLoaded", |r| !r.is_empty())
        .await;
    assert_eq!(loaded_ids(after), [file_id]);

    let mut dead = p.env.tail(&topics.dead_letter);
    let letters = dead
        .until(DEADLINE, "the dead letter", |r| !r.is_empty())
        .await;
    assert_eq!(letters.len(), 1);
    let Event::DeadLetter(letter) = &letters[0].envelope.event else {
        panic!("unexpected {:?}", letters[0].envelope.event)
    };
    assert_eq!(letter.original_value, "this is not an event");
    assert_eq!(letter.source_topic, topics.file_extract_success);
    assert!(
        letter.error.contains("not a pipeline event"),
        "{}",
        letter.error
    );
    assert_eq!(letters[0].key.as_deref(), Some("pao-sberbank"));
    eprintln!(
        "counted: 1 dead letter with the original value, 1 FileLoaded for the file behind it"
    );
}

#[tokio::test]
async fn a_file_deleted_before_processing_is_dead_lettered_and_later_files_still_load() {
    let env = TestEnv::new().await;
    let api = env.spawn_api(&[]).await;
    let accepted = post_to(&api, example("companies/c.json")).await;
    let gone = file_ids(&accepted).remove(0);
    let key = accepted["files"][0]["s3_key"].as_str().unwrap().to_owned();
    env.store(&[])
        .delete(&key)
        .await
        .expect("delete the stored file");
    eprintln!("injected: the stored file {key} deleted before the processor runs");
    let processor = env.spawn_processor(&[]).await;
    let p = Pipeline {
        env,
        api,
        processor,
    };
    let later = p
        .post(serde_json::to_vec(&generated_company(&p.env.id, 1)).unwrap())
        .await;

    let topics = p.env.kafka().topics();
    let mut dead = p.env.tail(&topics.dead_letter);
    let letters = dead
        .until(DEADLINE, "the dead letter", |r| !r.is_empty())
        .await;
    let Event::DeadLetter(letter) = &letters[0].envelope.event else {
        panic!("unexpected {:?}", letters[0].envelope.event)
    };
    assert_eq!(letter.file_id.map(|f| f.to_string()), Some(gone));
    assert!(letter.error.contains(&key), "{}", letter.error);
    let mut loaded = p.env.tail(&topics.file_loaded);
    let records = loaded
        .until(DEADLINE, "the later file's FileLoaded", |r| !r.is_empty())
        .await;
    assert_eq!(loaded_ids(records), file_ids(&later));
    let (status, _) = readiness(&p.processor).await;
    assert_eq!(status, 200, "the processor is still ready");
    eprintln!("counted: 1 dead letter naming the missing object, 1 FileLoaded after it");
}

/// What `companies.json` holds, as the metrics should count it.
struct Upload {
    files: f64,
    offices: f64,
    contacts: f64,
    body_bytes: f64,
}

impl Upload {
    fn of(example_name: &str) -> Self {
        let companies = example_json(example_name);
        let companies = companies.as_array().unwrap();
        let children = |field: &str| -> f64 {
            companies
                .iter()
                .map(|c| c[field].as_array().map_or(0, Vec::len))
                .sum::<usize>() as f64
        };
        Self {
            files: companies.len() as f64,
            offices: children("offices"),
            contacts: children("contacts"),
            body_bytes: example(example_name).len() as f64,
        }
    }
}

#[tokio::test]
async fn metrics_count_what_happened_and_are_all_documented() {
    let p = start().await;
    let upload = Upload::of("companies/companies.json");
    let accepted = p.post(example("companies/companies.json")).await;

    let api = the_api_counted_the_upload(&p, &upload, &accepted).await;
    the_processor_counted_every_file_and_row(&p, &upload).await;
    let processor = the_processor_caught_up_on_every_partition(&p).await;
    every_exported_metric_is_documented(&api, &processor);
    every_documented_metric_is_registered_by_the_code();
}

async fn the_api_counted_the_upload(
    p: &Pipeline,
    upload: &Upload,
    accepted: &Value,
) -> Vec<Sample> {
    let n = upload.files;
    let stored_bytes: u64 = accepted["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["size_bytes"].as_u64().unwrap())
        .sum();
    let api = scrape(&p.api).await;
    let route = [("method", "POST"), ("route", "/import/{dataset}")];
    let companies = [("dataset", "companies")];
    assert_eq!(
        metric(
            &api,
            "import_requests_total",
            &[("dataset", "companies"), ("outcome", "accepted")]
        ),
        1.0
    );
    assert_eq!(metric(&api, "import_files_received_total", &companies), n);
    assert_eq!(metric(&api, "import_files_stored_total", &companies), n);
    assert_eq!(
        metric(&api, "import_stored_bytes_total", &companies),
        stored_bytes as f64
    );
    assert_eq!(
        metric(
            &api,
            "events_published_total",
            &[("event_type", "FileExtractSuccess")]
        ),
        n
    );
    assert_eq!(
        metric(
            &api,
            "http_requests_total",
            &[route[0], route[1], ("status", "2xx")]
        ),
        1.0
    );
    assert_eq!(
        metric(&api, "http_request_duration_seconds_count", &route),
        1.0
    );
    assert_eq!(
        metric(&api, "http_request_size_bytes_sum", &route),
        upload.body_bytes
    );
    assert_eq!(
        metric(
            &api,
            "dependency_request_duration_seconds_count",
            &[
                ("dependency", "s3"),
                ("operation", "put_object"),
                ("outcome", "ok")
            ]
        ),
        n
    );
    api
}

async fn the_processor_counted_every_file_and_row(p: &Pipeline, upload: &Upload) {
    let n = upload.files;
    let processor = eventually(DEADLINE, "the processor to count every file", || async {
        let samples = scrape(&p.processor).await;
        (metric(&samples, "processor_files_total", &[("outcome", "loaded")]) >= n)
            .then_some(samples)
    })
    .await;
    assert_eq!(
        metric(&processor, "processor_files_total", &[]),
        n,
        "no other outcome"
    );
    assert_eq!(
        metric(
            &processor,
            "processor_rows_written_total",
            &[("table", "companies")]
        ),
        n
    );
    assert_eq!(
        metric(
            &processor,
            "processor_rows_written_total",
            &[("table", "company_offices")]
        ),
        upload.offices
    );
    assert_eq!(
        metric(
            &processor,
            "processor_rows_written_total",
            &[("table", "company_contacts")]
        ),
        upload.contacts
    );
    assert_eq!(
        metric(&processor, "processor_load_duration_seconds_count", &[]),
        n
    );
    assert_eq!(metric(&processor, "processor_retries_total", &[]), 0.0);
    assert_eq!(
        metric(
            &processor,
            "events_published_total",
            &[("event_type", "FileLoaded")]
        ),
        n
    );
    let timed = |operation| {
        metric(
            &processor,
            "dependency_request_duration_seconds_count",
            &[("dependency", "postgres"), ("operation", operation)],
        )
    };
    // New files are not looked up in the ledger one by one: its key
    // refuses a second row, and only then is the row read.
    assert_eq!(timed("find_ledger_row"), 0.0);
    // Files load together: each file in exactly one transaction, each
    // transaction timed once.
    assert_eq!(
        metric(&processor, "processor_files_per_transaction_sum", &[]),
        n
    );
    let transactions = metric(&processor, "processor_files_per_transaction_count", &[]);
    assert!((1.0..=n).contains(&transactions), "{transactions}");
    assert_eq!(timed("load_files"), transactions);
}

/// Every assigned partition reports, and none is behind.
async fn the_processor_caught_up_on_every_partition(p: &Pipeline) -> Vec<Sample> {
    eventually(DEADLINE, "consumer lag 0 on every partition", || async {
        let samples = scrape(&p.processor).await;
        let lags: Vec<f64> = samples
            .iter()
            .filter(|s| s.name == "consumer_lag_records")
            .map(|s| s.value)
            .collect();
        (lags.len() == 3 && lags.iter().all(|l| *l == 0.0)).then_some(samples)
    })
    .await
}

fn documented_metrics() -> BTreeSet<String> {
    let docs = std::fs::read_to_string(etl_testkit::repo_root().join("docs/metrics.md")).unwrap();
    docs.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_owned()))
        .collect()
}

fn every_exported_metric_is_documented(api: &[Sample], processor: &[Sample]) {
    let documented = documented_metrics();
    for sample in api.iter().chain(processor) {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| sample.name.strip_suffix(suffix))
            .filter(|base| documented.contains(*base))
            .unwrap_or(&sample.name);
        assert!(
            documented.contains(family),
            "{} is exported but not in docs/metrics.md",
            sample.name
        );
    }
}

fn every_documented_metric_is_registered_by_the_code() {
    let code = sources_of(&[
        "crates/etl-core/src",
        "cmd-api/src",
        "cmd-processor/src",
        "cmd-monitoring/src",
    ]);
    for name in &documented_metrics() {
        assert!(
            code.contains(&format!("\"{name}\"")),
            "docs/metrics.md lists {name}, which no code registers"
        );
    }
}

#[tokio::test]
async fn a_document_the_database_refuses_is_recorded_failed_and_dead_lettered_even_when_redelivered()
 {
    let p = start().await;
    // Valid for the schema, but refused by a rule only the database knows
    // (as a constraint a DBA added would): check_violation, class 23.
    sqlx::query("ALTER TABLE companies ADD CONSTRAINT no_test_banks CHECK (industry <> 'Refused')")
        .execute(&p.env.pool)
        .await
        .unwrap();
    let mut doc = example_json("companies/c.json");
    doc["industry"] = "Refused".into();
    let accepted = p.post(serde_json::to_vec(&doc).unwrap()).await;
    let file_id = file_ids(&accepted).remove(0);

    let topic = p.env.kafka().topics().dead_letter;
    let mut dead = p.env.tail(&topic);
    dead.until(DEADLINE, "the dead letter", |r| !r.is_empty())
        .await;
    let ledger = p.ledger(&file_id).await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].0, "failed");
    assert_eq!(p.count("SELECT count(*) FROM companies").await, 0);

    // A redelivery cannot know whether the dead letter went out before the
    // crash, so it is published again rather than risked lost.
    p.redeliver_first_extract_event().await;
    let letters = dead
        .until(DEADLINE, "the repeated dead letter", |r| r.len() >= 2)
        .await;
    for letter in letters {
        let Event::DeadLetter(d) = &letter.envelope.event else {
            panic!("unexpected {:?}", letter.envelope.event)
        };
        assert_eq!(d.file_id.map(|f| f.to_string()), Some(file_id.clone()));
        assert!(d.error.contains("database refused"), "{}", d.error);
    }
    assert_eq!(p.ledger(&file_id).await.len(), 1);
}

/// Longer than the `KAFKA_MAX_POLL_INTERVAL_MS` the test sets (6 s).
const OUTAGE: Duration = Duration::from_secs(9);

/// A database outage: the processor turns unready naming postgres, holds the
/// files back (retrying, committing nothing, so the lag shows them), and
/// loads each exactly once when the database is back.
#[tokio::test]
async fn a_postgres_outage_holds_files_back_and_loses_none() {
    let env = TestEnv::new().await;
    let mut postgres = OwnServer::postgres(&env.id).await;
    let url = postgres.database_url();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    etl_core::db::migrate(&pool).await.unwrap();
    // The outage below outlasts max.poll.interval.ms: a consumer that
    // stopped polling while it retried would be thrown out of its group.
    let p = start_in(
        env,
        &[
            ("DATABASE_URL", &url),
            ("READINESS_TIMEOUT_MS", "1000"),
            ("KAFKA_MAX_POLL_INTERVAL_MS", "6000"),
        ],
    )
    .await;
    let companies: Vec<Value> =
        example_json("companies/companies.json").as_array().unwrap()[..3].to_vec();

    let mut posted = Vec::new();
    readiness_follows(
        &p.processor,
        &mut postgres,
        OwnServer::stop,
        "postgres",
        async || {
            posted = file_ids(&p.post(serde_json::to_vec(&companies).unwrap()).await);
            eventually(DEADLINE, "retries on postgres and a lag of 3", || async {
                let samples = scrape(&p.processor).await;
                let retries = metric(
                    &samples,
                    "processor_retries_total",
                    &[("cause", "postgres")],
                );
                let lag = metric(&samples, "consumer_lag_records", &[]);
                (retries >= 1.0 && lag == 3.0).then_some(())
            })
            .await;
            eprintln!(
                "injected: PostgreSQL stopped with 3 files posted; held for {} s",
                OUTAGE.as_secs()
            );
            // Lag is reported for assigned partitions only: it staying at
            // 3 means the processor kept them, committing nothing.
            let outage = Instant::now();
            while outage.elapsed() < OUTAGE {
                let lag = metric(&scrape(&p.processor).await, "consumer_lag_records", &[]);
                assert_eq!(lag, 3.0, "partitions held, nothing committed");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        },
    )
    .await;

    let topic = p.env.kafka().topics().file_loaded;
    let loaded = p
        .outcomes(&topic, "three FileLoaded", |r| r.len() >= 3)
        .await;
    let mut loaded = loaded_ids(&loaded);
    loaded.sort();
    posted.sort();
    assert_eq!(loaded, posted);
    let ledger: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM import_files GROUP BY status")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(ledger, vec![("loaded".to_owned(), 3)]);
    let companies_loaded: i64 = sqlx::query_scalar("SELECT count(*) FROM companies")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(companies_loaded, 3);
    eventually(DEADLINE, "the lag to drain", || async {
        (metric(&scrape(&p.processor).await, "consumer_lag_records", &[]) == 0.0).then_some(())
    })
    .await;
    let samples = scrape(&p.processor).await;
    let retries = metric(
        &samples,
        "processor_retries_total",
        &[("cause", "postgres")],
    );
    // librdkafka reports a missed poll interval as a receive error.
    let kafka_errors = metric(&samples, "processor_retries_total", &[("cause", "kafka")]);
    assert_eq!(kafka_errors, 0.0, "the consumer never lost its group");
    eprintln!(
        "counted: {retries} retries on postgres, 0 on kafka, 3 ledger rows, 3 companies, 3 FileLoaded"
    );
}

/// An S3 outage: readiness names s3 until it is back, then files load again.
#[tokio::test]
async fn an_s3_outage_makes_the_processor_unready_until_it_is_back() {
    let env = TestEnv::new().await;
    let mut s3 = OwnServer::seaweedfs(&env.id).await;
    let endpoint = s3.endpoint();
    let p = start_in(
        env,
        &[("S3_ENDPOINT", &endpoint), ("READINESS_TIMEOUT_MS", "1000")],
    )
    .await;
    readiness_follows(&p.processor, &mut s3, OwnServer::kill, "s3", async || {}).await;

    let file_id = file_ids(&p.post(example("companies/c.json")).await).remove(0);
    let topic = p.env.kafka().topics().file_loaded;
    let loaded = p.outcomes(&topic, "FileLoaded", |r| !r.is_empty()).await;
    assert_eq!(loaded_ids(&loaded), vec![file_id]);
}

/// A load that never returns (a lock someone holds on `companies`, as a
/// long migration or a forgotten manual transaction would): every
/// dependency answers its probe, yet nothing is committed while files
/// wait, and readiness says so under `progress` once that outlasts its
/// bound.
#[tokio::test]
async fn records_waiting_with_nothing_committed_make_the_processor_unready() {
    let p = start_in(
        TestEnv::new().await,
        &[
            ("PROCESSOR_STALL_AFTER_MS", "3000"),
            ("KAFKA_LAG_INTERVAL_MS", "500"),
        ],
    )
    .await;
    let mut lock = p.env.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE companies IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let companies: Vec<Value> = (0..3).map(|n| generated_company(&p.env.id, n)).collect();
    p.post(serde_json::to_vec(&companies).unwrap()).await;
    eprintln!("injected: companies locked by another transaction with 3 files posted");

    let report = eventually(DEADLINE, "readiness to name the stall", || async {
        let (status, report) = readiness(&p.processor).await;
        (status == 503).then_some(report)
    })
    .await;
    for (name, result) in report["checks"].as_object().unwrap() {
        assert_eq!(result["ok"], name != "progress", "{report}");
    }
    let why = report["checks"]["progress"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(why.starts_with("no commit for "), "{report}");
    assert!(why.contains(" while 3 records wait"), "{report}");

    lock.rollback().await.unwrap();
    let loaded = p
        .outcomes(
            &p.env.kafka().topics().file_loaded,
            "three FileLoaded",
            |r| r.len() >= 3,
        )
        .await;
    assert_eq!(loaded_ids(&loaded).len(), 3);
    eventually(DEADLINE, "readiness 200 again", || async {
        (readiness(&p.processor).await.0 == 200).then_some(())
    })
    .await;
    eprintln!("counted: readiness said {why:?} while locked; 3 files loaded and 200 after");
}
