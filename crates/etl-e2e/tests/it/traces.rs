//! One trace per file across the services: a client's `traceparent` is
//! continued by the api, carried in the event's Kafka headers and
//! continued by the processor and the monitor; every span reaches an OTLP
//! receiver, the log lines inside the spans carry the trace id and the
//! monitor names the file's trace. A collector that is down loses spans,
//! counted, and nothing else.

use std::collections::BTreeSet;

use etl_core::events::Event;
use etl_testkit::{
    DEADLINE, OtlpReceiver, Received, ReceivedSpan, ServiceProcess, TestEnv, eventually, example,
    get_json, import, metric, run_binary, scrape,
};

/// A client's trace: its id, and the id of the client span that posted.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// Spans are posted at most this long after they end.
const SCHEDULE_MS: &str = "100";

/// The settings that make a service post its spans to `receiver` promptly.
fn exporting_to(receiver: &OtlpReceiver) -> [(&'static str, &str); 2] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_BSP_SCHEDULE_DELAY", SCHEDULE_MS),
    ]
}

#[tokio::test]
async fn a_posted_file_is_one_trace_from_the_client_through_kafka_to_the_processor() {
    let env = TestEnv::new().await;
    let receiver = OtlpReceiver::start().await;
    let otel = exporting_to(&receiver);
    let api = ServiceProcess::api(&env, &otel).await;
    let processor = ServiceProcess::processor(&env, &otel).await;
    let ui = [("TRACES_UI_URL", "http://jaeger.test/trace/{trace_id}")];
    let monitor = ServiceProcess::monitor(&env, &[&otel[..], &ui[..]].concat()).await;
    let topics = env.kafka().topics();
    let mut loaded = env.tail(&topics.file_loaded);

    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let answer = import(&api, example("companies/c.json"))
        .header("traceparent", &traceparent)
        .send()
        .await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let file_id = answer.file_ids().remove(0);
    let is_the_outcome = |r: &Received| match &r.envelope.event {
        Event::FileLoaded(e) => e.file_id.to_string() == file_id,
        _ => false,
    };
    let outcomes = loaded
        .until(DEADLINE, "the file loaded", |r| {
            r.iter().any(is_the_outcome)
        })
        .await;
    let outcome = outcomes
        .iter()
        .find(|r| is_the_outcome(r))
        .cloned()
        .unwrap();

    let announcement = the_kafka_record_carries_the_trace(&env, &file_id).await;
    let spans = receiver
        .until(DEADLINE, "the spans of both services", |spans| {
            let services: BTreeSet<&str> = spans
                .iter()
                .filter(|s| s.trace_id == TRACE_ID)
                .map(|s| s.service.as_str())
                .collect();
            let of = |service| {
                spans
                    .iter()
                    .filter(|s| s.service == service && s.trace_id == TRACE_ID)
                    .count()
            };
            let loaded = spans.iter().any(|s| s.name == "load_files");
            services.contains("cmd-api")
                && of("cmd-processor") >= 4
                && of("cmd-monitoring") >= 2
                && loaded
        })
        .await;
    the_spans_nest_as_the_file_travelled(&spans);
    the_publish_spans_name_where_the_records_landed(&spans, &announcement, &outcome);
    the_monitor_consumed_both_events_in_the_trace(&spans);
    the_log_lines_carry_the_trace_id(&api, &processor);
    the_monitor_names_the_files_trace_and_links_to_it(&monitor, &file_id).await;
}

async fn the_kafka_record_carries_the_trace(env: &TestEnv, file_id: &str) -> Received {
    let topics = env.kafka().topics();
    let mut announced = env.tail(&topics.file_extract_success);
    let records = announced
        .until(DEADLINE, "the announcement", |r| !r.is_empty())
        .await;
    let record = records
        .iter()
        .find(|r| {
            r.envelope
                .event
                .file_id()
                .is_some_and(|f| f.to_string() == file_id)
        })
        .expect("the file's announcement");
    let header = &record.headers["traceparent"];
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "{header}");
    assert_eq!((parts[0], parts[1]), ("00", TRACE_ID), "{header}");
    assert_ne!(
        parts[2], CLIENT_SPAN,
        "the api's own span is the parent: {header}"
    );
    record.clone()
}

/// The partition and offset are known only once the broker has the
/// record; the publish span lasts until then.
fn the_publish_spans_name_where_the_records_landed(
    spans: &[ReceivedSpan],
    announcement: &Received,
    outcome: &Received,
) {
    for (service, record) in [("cmd-api", announcement), ("cmd-processor", outcome)] {
        let publish = one(spans, service, "publish");
        let attribute = |name: &str| publish.attributes.get(name).cloned().unwrap_or_default();
        assert_eq!(
            (
                attribute("messaging.destination.partition.id"),
                attribute("messaging.kafka.offset")
            ),
            (record.partition.to_string(), record.offset.to_string()),
            "{publish:?}"
        );
        let key = record.key.clone().unwrap_or_default();
        assert_eq!(attribute("messaging.kafka.message.key"), key, "{publish:?}");
    }
}

fn one<'s>(spans: &'s [ReceivedSpan], service: &str, name: &str) -> &'s ReceivedSpan {
    let found: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name && s.trace_id == TRACE_ID)
        .collect();
    assert!(!found.is_empty(), "no {service} {name} span in {spans:#?}");
    found[0]
}

fn the_spans_nest_as_the_file_travelled(spans: &[ReceivedSpan]) {
    let request = one(spans, "cmd-api", "POST");
    assert_eq!(
        request.parent_span_id, CLIENT_SPAN,
        "the client's span is its parent"
    );
    assert_eq!(request.kind, 2, "a server span");
    assert_eq!(request.attributes["http.response.status_code"], "202");
    assert_eq!(request.attributes["url.path"], "/import/companies");
    let put = one(spans, "cmd-api", "S3.PutObject");
    assert_eq!(
        (put.parent_span_id.as_str(), put.kind),
        (request.span_id.as_str(), 3)
    );
    assert_eq!(put.attributes["rpc.service"], "S3");
    let publish = one(spans, "cmd-api", "publish");
    assert_eq!(publish.parent_span_id, request.span_id);
    assert_eq!(publish.kind, 4, "a producer span");
    assert_eq!(publish.attributes["messaging.system"], "kafka");
    assert!(
        publish.attributes["messaging.destination.name"].ends_with("etl.file-extract-success"),
        "{publish:?}"
    );
    let record = one(spans, "cmd-processor", "record");
    assert_eq!(
        record.parent_span_id, publish.span_id,
        "consumed from the api's publish"
    );
    assert_eq!(record.kind, 5, "a consumer span");
    let get = one(spans, "cmd-processor", "S3.GetObject");
    assert_eq!(get.parent_span_id, record.span_id);
    let validate = one(spans, "cmd-processor", "validate");
    assert_eq!(validate.parent_span_id, record.span_id);
    // The transaction may serve several files: linked to each, not a child.
    let linked = (TRACE_ID.to_owned(), record.span_id.clone());
    let load = spans
        .iter()
        .find(|s| s.name == "load_files" && s.links.contains(&linked))
        .unwrap_or_else(|| panic!("no load_files span linked to the record in {spans:#?}"));
    assert_eq!(load.attributes["db.system.name"], "postgresql");
    let outcome = one(spans, "cmd-processor", "publish");
    assert_eq!(outcome.parent_span_id, record.span_id);
    assert!(
        outcome.attributes["messaging.destination.name"].ends_with("etl.file-loaded"),
        "{outcome:?}"
    );
}

fn the_monitor_consumed_both_events_in_the_trace(spans: &[ReceivedSpan]) {
    let publish = one(spans, "cmd-api", "publish");
    let consumed: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == "cmd-monitoring" && s.name == "consume")
        .filter(|s| s.trace_id == TRACE_ID)
        .collect();
    assert!(
        consumed.iter().any(|s| s.parent_span_id == publish.span_id),
        "the announcement's consume span is a child of the api's publish: {consumed:#?}"
    );
    assert!(consumed.iter().all(|s| s.kind == 5), "{consumed:#?}");
}

async fn the_monitor_names_the_files_trace_and_links_to_it(
    monitor: &ServiceProcess,
    file_id: &str,
) {
    let file = eventually(DEADLINE, "the monitor to record the file", || async {
        let (_, file) = get_json(monitor, &format!("/files/{file_id}")).await;
        (file["status"] == "loaded").then_some(file)
    })
    .await;
    assert_eq!(file["trace_id"], TRACE_ID, "{file}");
    assert_eq!(
        file["trace_url"],
        format!("http://jaeger.test/trace/{TRACE_ID}"),
        "{file}"
    );
    let timeline = file["timeline"].as_array().unwrap();
    assert!(timeline.iter().all(|e| e["trace_id"] == TRACE_ID), "{file}");
}

fn the_log_lines_carry_the_trace_id(api: &ServiceProcess, processor: &ServiceProcess) {
    for (service, line) in [(api, "import accepted"), (processor, "file handled")] {
        let lines = service.log_lines();
        let logged = lines
            .iter()
            .find(|l| l["message"] == line)
            .unwrap_or_else(|| panic!("no {line:?} in {lines:#?}"));
        assert_eq!(logged["span"]["trace_id"], TRACE_ID, "{logged}");
        let span_id = logged["span"]["span_id"].as_str().unwrap_or_default();
        assert_eq!(span_id.len(), 16, "{logged}");
    }
}

/// `replay` is a trace of its own, which the command names: its `replay`
/// span, the `publish` of the fresh announcement under it, and the
/// processor's handling of the file continuing from that publish.
#[tokio::test]
async fn a_replay_is_one_trace_that_the_processor_continues() {
    let env = TestEnv::new().await;
    let receiver = OtlpReceiver::start().await;
    let otel = exporting_to(&receiver);
    let api = ServiceProcess::api(&env, &[]).await;
    let _processor = ServiceProcess::processor(&env, &otel).await;
    let mut loaded = env.tail(&env.kafka().topics().file_loaded);
    let answer = import(&api, example("companies/c.json")).send().await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    let file_id = answer.file_ids().remove(0);
    loaded
        .until(DEADLINE, "the file loaded", |r| r.len() == 1)
        .await;

    let vars: Vec<(String, String)> = env
        .vars
        .clone()
        .into_iter()
        .chain(otel.map(|(name, value)| (name.to_owned(), value.to_owned())))
        .collect();
    // The receiver answers on this test's thread: the command must not
    // block it while it posts its spans.
    let args = ["replay".to_owned(), file_id.clone()];
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_binary("cmd-processor", &args, vars)
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace_id = said
        .lines()
        .filter(|line| line.starts_with("replayed file"))
        .find_map(|line| line.split_once(" and trace id "))
        .map(|(_, id)| id.trim().to_owned())
        .unwrap_or_else(|| panic!("the command names no trace: {said}"));
    loaded
        .until(DEADLINE, "the replay's FileLoaded", |r| r.len() == 2)
        .await;
    let in_trace = |spans: &[ReceivedSpan], parent: &str, name: &str| {
        spans
            .iter()
            .find(|s| s.trace_id == trace_id && s.parent_span_id == parent && s.name == name)
            .cloned()
    };
    let spans = receiver
        .until(DEADLINE, "the replay's spans", |spans| {
            spans
                .iter()
                .any(|s| s.trace_id == trace_id && s.name == "record")
        })
        .await;
    let replay = in_trace(&spans, "", "replay")
        .unwrap_or_else(|| panic!("no root replay span in {spans:#?}"));
    assert_eq!(replay.attributes["file_id"], file_id, "{replay:?}");
    let publish = in_trace(&spans, &replay.span_id, "publish")
        .unwrap_or_else(|| panic!("no publish under the replay in {spans:#?}"));
    assert!(
        publish.attributes["messaging.destination.name"].ends_with("etl.file-extract-success"),
        "{publish:?}"
    );
    let record = in_trace(&spans, &publish.span_id, "record")
        .unwrap_or_else(|| panic!("no record span under the publish in {spans:#?}"));
    assert_eq!(record.service, "cmd-processor");
}

/// A collector that is down costs the pipeline nothing but its spans:
/// the file still loads, and the spans that could not be posted are
/// counted.
#[tokio::test]
async fn with_the_collector_down_files_still_load_and_the_lost_spans_are_counted() {
    let env = TestEnv::new().await;
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", nobody.local_addr().unwrap());
    drop(nobody);
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", SCHEDULE_MS),
    ];
    let api = ServiceProcess::api(&env, &otel).await;
    let _processor = ServiceProcess::processor(&env, &otel).await;
    let mut loaded = env.tail(&env.kafka().topics().file_loaded);
    let answer = import(&api, example("companies/c.json")).send().await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    loaded
        .until(DEADLINE, "the file loaded", |r| !r.is_empty())
        .await;
    let dropped = eventually(DEADLINE, "the api to count its lost spans", || async {
        let samples = scrape(&api).await;
        let failed = metric(
            &samples,
            "traces_spans_dropped_total",
            &[("reason", "export_failed")],
        );
        (failed > 0.0).then_some(failed)
    })
    .await;
    eprintln!("the api counted {dropped} spans it could not post");
}

/// Kubernetes' probes and Prometheus' scrapes call every few seconds; as
/// traces they would bury the files'. Requests before and after them are
/// traced, so their absence is not a delay.
#[tokio::test]
async fn the_probes_and_the_metrics_scrape_are_not_traced() {
    let env = TestEnv::new().await;
    let receiver = OtlpReceiver::start().await;
    let otel = exporting_to(&receiver);
    let api = ServiceProcess::api(&env, &otel).await;
    let traced = |spans: &[ReceivedSpan], path: &str| {
        spans
            .iter()
            .filter(|s| {
                s.service == "cmd-api"
                    && s.attributes.get("url.path").map(String::as_str) == Some(path)
            })
            .count()
    };
    let (status, _) = get_json(&api, "/datasets").await;
    assert_eq!(status, 200);
    for path in etl_core::http::OPS_PATHS {
        let (status, _) = get_json(&api, path).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, _) = get_json(&api, "/datasets").await;
    assert_eq!(status, 200);
    let spans = receiver
        .until(DEADLINE, "both requests for the datasets", |spans| {
            traced(spans, "/datasets") == 2
        })
        .await;
    for path in etl_core::http::OPS_PATHS {
        assert_eq!(traced(&spans, path), 0, "{path} was traced: {spans:#?}");
    }
    // Nor is anything a probe does on its way (a readiness check's calls).
    let requested: BTreeSet<&str> = spans
        .iter()
        .filter(|s| s.attributes.get("url.path").map(String::as_str) == Some("/datasets"))
        .map(|s| s.trace_id.as_str())
        .collect();
    let strays: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| !requested.contains(s.trace_id.as_str()))
        .collect();
    assert!(
        strays.is_empty(),
        "spans of no request asked for: {strays:#?}"
    );
}
