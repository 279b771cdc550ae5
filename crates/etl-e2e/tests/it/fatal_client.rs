//! librdkafka's fatal state, raised inside the services' clients through
//! the test hooks `ETL_TEST_KAFKA_PRODUCER_FATAL` and
//! `ETL_TEST_KAFKA_CONSUMER_FATAL` (no broker reaches it on demand): a
//! service replaces its producer by itself, says so in its readiness
//! meanwhile, and loses and doubles nothing; a producer that cannot be
//! replaced, or a fatal consumer, fails liveness, and the pod restarted in
//! its place finishes the work.

use std::time::Duration;

use etl_testkit::{
    Endpoint, ServiceProcess, SteadyLoad, TestEnv, assert_loaded_exactly_once, eventually,
    generated_company, get_json, import_generated, metric, post_import, readiness, scrape,
};

const DEADLINE: Duration = Duration::from_secs(120);
/// Readiness is polled this often to see the few seconds it is 503.
const POLL: Duration = Duration::from_millis(20);

/// Polls readiness from now on, in the background: the fatal state lasts
/// well under a second, so the poll must already run when it comes.
fn watch_readiness(service: &ServiceProcess) -> tokio::task::JoinHandle<serde_json::Value> {
    let url = service.url("");
    tokio::spawn(async move {
        let service = BaseUrl(url);
        let report = eventually(DEADLINE, "readiness to name the fatal producer", || async {
            let (status, report) = readiness(&service).await;
            if status != 503 {
                tokio::time::sleep(POLL).await;
                return None;
            }
            Some(report)
        })
        .await;
        eventually(DEADLINE, "readiness to be 200 again", || async {
            (readiness(&service).await.0 == 200).then_some(())
        })
        .await;
        report
    })
}

/// The 503 report the watch saw, once readiness is 200 again.
async fn unready_while_fatal_then_ready(
    watch: tokio::task::JoinHandle<serde_json::Value>,
) -> serde_json::Value {
    let report = watch.await.expect("the readiness watch");
    let why = report["checks"]["kafka"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(why.starts_with("producer fatal since "), "{report}");
    assert!(why.contains("ETL_TEST_KAFKA_PRODUCER_FATAL"), "{report}");
    report
}

struct BaseUrl(String);

impl Endpoint for BaseUrl {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

/// Waits for `/liveness` to answer 503 `failing`; returns what it says of
/// `check`, and the whole answer.
async fn liveness_failing(service: &impl Endpoint, check: &str) -> (String, serde_json::Value) {
    let body = eventually(DEADLINE, "liveness to fail", || async {
        let (status, body) = get_json(service, "/liveness").await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["status"], "failing", "{body}");
    let why = body["checks"][check]["error"].as_str().unwrap_or_default();
    (why.to_owned(), body)
}

async fn replacements(service: &impl Endpoint) -> f64 {
    metric(
        &scrape(service).await,
        "kafka_producer_replacements_total",
        &[],
    )
}

#[tokio::test]
async fn the_api_replaces_a_fatal_producer_under_load_and_every_import_is_loaded_once() {
    let env = TestEnv::new().await;
    // Fatal after the 30th publish, and its first two replacements fatal
    // as soon as they are built: three replacements before one works.
    let fault = [("ETL_TEST_KAFKA_PRODUCER_FATAL", "after=30,times=3")];
    let api = ServiceProcess::api(&env, &fault).await;
    let _processor = ServiceProcess::processor(&env, &[]).await;

    let watch = watch_readiness(&api);
    let load = SteadyLoad::start(&api, &env.id, 4);
    let report = unready_while_fatal_then_ready(watch).await;
    eprintln!("injected: the api's producer fatal 3 times; readiness said {report}");
    load.wait_for_more(50, DEADLINE, "imports after the recovery")
        .await;
    let (live, body) = get_json(&api, "/liveness").await;
    assert_eq!(live, 200, "three replacements are under the bound: {body}");

    let answers = load.stop().await;
    assert!(
        answers.unexpected.is_empty(),
        "answers other than 202 and 503 dependency_unavailable: {:?}",
        answers.unexpected
    );
    assert_eq!(replacements(&api).await, 3.0);
    let records = assert_loaded_exactly_once(&env, &answers.acknowledged, DEADLINE).await;
    eprintln!(
        "counted: {} imports acknowledged, {} answered 503 first, each loaded once; {records} FileLoaded records",
        answers.acknowledged.len(),
        answers.unavailable
    );
}

#[tokio::test]
async fn the_processor_replaces_a_fatal_producer_and_announces_every_file_once() {
    let env = TestEnv::new().await;
    let api = ServiceProcess::api(&env, &[]).await;
    let fault = [("ETL_TEST_KAFKA_PRODUCER_FATAL", "after=40,times=3")];
    let processor = ServiceProcess::processor(&env, &fault).await;

    let watch = watch_readiness(&processor);
    let acknowledged = import_generated(&api, &env.id, 0..300, 50).await;
    let report = unready_while_fatal_then_ready(watch).await;
    eprintln!("injected: the processor's producer fatal 3 times; readiness said {report}");

    let records = assert_loaded_exactly_once(&env, &acknowledged, DEADLINE).await;
    assert_eq!(replacements(&processor).await, 3.0);
    eprintln!(
        "counted: 300 files loaded once, each announced with one event id ({records} FileLoaded records); lag 0"
    );
}

#[tokio::test]
async fn a_producer_that_goes_fatal_after_every_replacement_fails_liveness() {
    let env = TestEnv::new().await;
    let vars = [
        ("ETL_TEST_KAFKA_PRODUCER_FATAL", "after=1,times=1000"),
        ("KAFKA_PRODUCER_MAX_REPLACEMENTS", "2"),
    ];
    let api = ServiceProcess::api(&env, &vars).await;
    let (live, body) = get_json(&api, "/liveness").await;
    assert_eq!(live, 200, "{body}");

    let first = serde_json::to_vec(&generated_company(&env.id, 0)).unwrap();
    assert_eq!(post_import(&api, first).await.0, 202);
    let (why, body) = liveness_failing(&api, "kafka-producer").await;
    assert!(why.contains("after 2 replacements in a row"), "{body}");

    let next = serde_json::to_vec(&generated_company(&env.id, 1)).unwrap();
    let (status, answer) = post_import(&api, next).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(
        answer["error"]["code"], "dependency_unavailable",
        "{answer}"
    );
    let (ready, report) = readiness(&api).await;
    assert_eq!(ready, 503, "{report}");
    eprintln!("counted: liveness 503 ({why}); imports 503; readiness 503");
}

#[tokio::test]
async fn a_fatal_consumer_fails_liveness_and_the_restarted_processor_loads_every_file_once() {
    let env = TestEnv::new().await;
    let api = ServiceProcess::api(&env, &[]).await;
    let fault = [("ETL_TEST_KAFKA_CONSUMER_FATAL", "after=50")];
    let mut processor = ServiceProcess::processor(&env, &fault).await;

    let acknowledged = import_generated(&api, &env.id, 0..300, 50).await;
    let (why, body) = liveness_failing(&processor, "kafka-consumer").await;
    assert!(why.contains("fatal state"), "{body}");
    assert!(why.contains("ETL_TEST_KAFKA_CONSUMER_FATAL"), "{body}");
    let (ready, report) = readiness(&processor).await;
    assert_eq!(ready, 503, "{report}");

    // What Kubernetes does once liveness fails: SIGTERM, then SIGKILL after
    // the grace period (30 s by default). The pod must go on SIGTERM.
    processor.signal("TERM");
    let exit = processor.wait(Duration::from_secs(30)).await;
    assert!(exit.success(), "the processor exited with {exit}");

    let _restarted = ServiceProcess::processor(&env, &[]).await;
    let records = assert_loaded_exactly_once(&env, &acknowledged, DEADLINE).await;
    eprintln!(
        "counted: liveness 503 ({why}); exited on SIGTERM; 300 files loaded once by the next processor ({records} FileLoaded records); lag 0"
    );
}
