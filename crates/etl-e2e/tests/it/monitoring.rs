//! cmd-monitoring's answers after real imports through the api and the
//! processor: stats, file timelines, company and request views, the live
//! stream, its metrics — and that it remembers all of it across a crash.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use etl_testkit::{
    DEADLINE, ServiceProcess, TestEnv, eventually, generated_company, get_json, http, metric,
    read_events, scrape,
};

struct Pipeline {
    api: ServiceProcess,
    _processor: ServiceProcess,
    monitor: ServiceProcess,
}

async fn pipeline(env: &TestEnv) -> Pipeline {
    Pipeline {
        api: ServiceProcess::api(env, &[]).await,
        _processor: ServiceProcess::processor(env, &[]).await,
        monitor: ServiceProcess::monitor(env, &[]).await,
    }
}

/// Posts `body` with its own request id; returns (status, request id, file ids).
async fn import(api: &ServiceProcess, request_id: &str, body: &Value) -> (u16, Vec<String>) {
    let body = match body {
        Value::String(raw) => raw.clone().into_bytes(),
        other => serde_json::to_vec(other).unwrap(),
    };
    let answer = etl_testkit::import(api, body)
        .header("x-request-id", request_id)
        .send()
        .await;
    (answer.status, answer.file_ids())
}

fn slug(doc: &Value) -> String {
    etl_core::domain::CompanySlug::from_name(doc["name"].as_str().unwrap())
        .unwrap()
        .as_str()
        .to_owned()
}

/// What the import of [`import_three_and_a_refused_upload`] left behind.
struct Imported {
    company: String,
    other_company: String,
    request_id: String,
    refused_request: String,
    loaded_id: String,
    invalid_id: String,
    other_id: String,
}

#[tokio::test]
async fn every_route_answers_what_happened_after_real_imports() {
    let env = TestEnv::new().await;
    let p = pipeline(&env).await;
    let good = generated_company(&env.id, 1);
    let mut live = subscribe_to_loaded_files_of(&p, &slug(&good)).await;
    let run = import_three_and_a_refused_upload(&p, &env, good).await;

    the_live_stream_delivers_what_was_asked_for_and_nothing_else(&mut live, &run).await;
    stats_count_every_event_by_type_window_and_company(&p, &run).await;
    a_files_timeline_tells_its_story(&p, &run).await;
    company_and_request_views_list_their_files(&p, &run).await;
    wrong_questions_get_json_errors_a_person_can_act_on(&p).await;
    prometheus_has_the_same_numbers_and_the_lag_drains(&p, &env).await;
    the_dashboard_page_comes_from_the_binary(&p).await;
}

/// Subscribed before anything happens: only `FileLoaded` of `company`.
async fn subscribe_to_loaded_files_of(p: &Pipeline, company: &str) -> reqwest::Response {
    let mut live = http()
        .get(p.monitor.url(&format!(
            "/events/stream?company={company}&event_type=FileLoaded"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    read_events(&mut live, "the ready message", |e| !e.is_empty()).await;
    live
}

/// One request of three companies (the second invalid), and an upload the
/// api refuses.
async fn import_three_and_a_refused_upload(p: &Pipeline, env: &TestEnv, good: Value) -> Imported {
    let company = slug(&good);
    let mut invalid = generated_company(&env.id, 2);
    invalid["employees"] = json!(-5);
    let other = generated_company(&env.id, 3);
    let request_id = format!("mon-{}", env.id);
    let (status, files) = import(&p.api, &request_id, &json!([good, invalid, other])).await;
    assert_eq!(status, 202);
    let refused_request = format!("mon-bad-{}", env.id);
    let (status, _) = import(&p.api, &refused_request, &json!("{\"name\": ")).await;
    assert_eq!(status, 400);
    Imported {
        company,
        other_company: slug(&other),
        request_id,
        refused_request,
        loaded_id: files[0].clone(),
        invalid_id: files[1].clone(),
        other_id: files[2].clone(),
    }
}

async fn the_live_stream_delivers_what_was_asked_for_and_nothing_else(
    live: &mut reqwest::Response,
    run: &Imported,
) {
    let Imported {
        company,
        request_id,
        loaded_id,
        ..
    } = run;
    let streamed = read_events(live, "FileLoaded on the stream", |e| {
        e.iter().any(|(_, v)| v["file_id"] == loaded_id.as_str())
    })
    .await;
    for (name, event) in &streamed[1..] {
        assert_eq!(name, "FileLoaded", "{event}");
        assert_eq!(event["company"], company.as_str(), "{event}");
    }
    let loaded_event = &streamed
        .iter()
        .find(|(_, v)| v["file_id"] == loaded_id.as_str())
        .unwrap()
        .1;
    assert_eq!(loaded_event["service"], "cmd-processor");
    assert_eq!(loaded_event["request_id"], request_id.as_str());
}

/// Everything is recorded once the monitor has seen all 7 events.
async fn stats_count_every_event_by_type_window_and_company(p: &Pipeline, run: &Imported) {
    let company = &run.company;
    let stats = eventually(DEADLINE, "the monitor to count every event", || async {
        let (status, stats) = get_json(&p.monitor, "/stats").await;
        assert_eq!(status, 200, "{stats}");
        let total: i64 = stats["total"]["by_type"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_i64().unwrap())
            .sum();
        (total == 7).then_some(stats)
    })
    .await;
    let expected_types = json!({"FileExtractSuccess": 3, "FileLoaded": 2,
        "ValidationError": 1, "FileExtractError": 1});
    assert_eq!(stats["total"]["by_type"], expected_types, "{stats}");
    assert_eq!(
        stats["total"]["failure_rate"], 0.5,
        "2 failures of 4 ends: {stats}"
    );
    for window in ["5m", "1h", "24h"] {
        assert_eq!(
            stats["windows"][window]["by_type"], expected_types,
            "{window}: {stats}"
        );
        assert_eq!(
            stats["windows"][window]["latency"]["count"], 2,
            "{window}: {stats}"
        );
    }
    assert_eq!(
        stats["files"],
        json!({"loaded": 2, "invalid": 1}),
        "{stats}"
    );
    let latency = &stats["latency"];
    assert_eq!(latency["count"], 2, "{stats}");
    let (p50, p99) = (
        latency["p50_ms"].as_f64().unwrap(),
        latency["p99_ms"].as_f64().unwrap(),
    );
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= latency["max_ms"].as_f64().unwrap(),
        "{stats}"
    );
    let companies: BTreeMap<&str, &Value> = stats["companies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["company"].as_str().unwrap(), &c["by_type"]))
        .collect();
    assert_eq!(
        companies.len(),
        3,
        "the refused upload has no company: {stats}"
    );
    assert_eq!(
        companies[company.as_str()],
        &json!({"FileExtractSuccess": 1, "FileLoaded": 1})
    );
    let (_, one) = get_json(&p.monitor, &format!("/stats?company={company}")).await;
    assert_eq!(one["company"], company.as_str());
    assert_eq!(
        one["total"]["by_type"],
        json!({"FileExtractSuccess": 1, "FileLoaded": 1})
    );
    assert_eq!(one["total"]["failure_rate"], 0.0);
}

/// A loaded file: received by the api, loaded by the processor; an
/// invalid one carries its errors.
async fn a_files_timeline_tells_its_story(p: &Pipeline, run: &Imported) {
    let Imported {
        company,
        request_id,
        loaded_id,
        invalid_id,
        ..
    } = run;
    let (status, file) = get_json(&p.monitor, &format!("/files/{loaded_id}")).await;
    assert_eq!(status, 200, "{file}");
    assert_eq!(file["status"], "loaded");
    assert_eq!(file["company"], company.as_str());
    assert_eq!(file["request_id"], request_id.as_str());
    assert!(file["latency_ms"].as_f64().unwrap() > 0.0, "{file}");
    let steps: Vec<(&str, &str)> = file["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event_type"].as_str().unwrap(),
                e["service"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("FileExtractSuccess", "cmd-api"),
            ("FileLoaded", "cmd-processor")
        ]
    );
    assert_eq!(
        file["timeline"][0]["details"]["s3_key"],
        format!("{company}/files/{loaded_id}.json")
    );
    assert_eq!(file["timeline"][1]["details"]["rows"]["companies"], 1);

    let (_, file) = get_json(&p.monitor, &format!("/files/{invalid_id}")).await;
    assert_eq!(file["status"], "invalid", "{file}");
    let errors = &file["timeline"][1]["details"]["errors"];
    assert_eq!(errors[0]["path"], "/employees", "{file}");
}

/// A company's files with their status; a request's three files, and a
/// refused upload's error.
async fn company_and_request_views_list_their_files(p: &Pipeline, run: &Imported) {
    let Imported {
        other_company,
        request_id,
        refused_request,
        other_id,
        ..
    } = run;
    let (status, listing) =
        get_json(&p.monitor, &format!("/companies/{other_company}/files")).await;
    assert_eq!(status, 200);
    assert_eq!(listing["files"].as_array().unwrap().len(), 1, "{listing}");
    assert_eq!(listing["files"][0]["file_id"], other_id.as_str());
    assert_eq!(listing["files"][0]["status"], "loaded");

    let (status, request) = get_json(&p.monitor, &format!("/requests/{request_id}")).await;
    assert_eq!(status, 200);
    let mut statuses: Vec<&str> = request["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["status"].as_str().unwrap())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["invalid", "loaded", "loaded"], "{request}");
    let (status, refused) = get_json(&p.monitor, &format!("/requests/{refused_request}")).await;
    assert_eq!(status, 200);
    assert!(refused["files"].as_array().unwrap().is_empty());
    assert_eq!(refused["events"][0]["event_type"], "FileExtractError");
    assert_eq!(refused["events"][0]["details"]["reason"], "invalid_json");
}

async fn wrong_questions_get_json_errors_a_person_can_act_on(p: &Pipeline) {
    for (path, status, code) in [
        (
            "/files/0190b2c4-0000-8000-8000-000000000001",
            404,
            "file_not_found",
        ),
        ("/files/not-a-uuid", 400, "invalid_file_id"),
        ("/requests/never-sent", 404, "request_not_found"),
        ("/companies/Not%20A%20Slug/files", 400, "invalid_company"),
        ("/companies/acme/files?limit=0", 400, "invalid_limit"),
        ("/stats?company=..", 400, "invalid_company"),
        (
            "/events/stream?event_type=FileLost",
            400,
            "unknown_event_type",
        ),
        ("/no/such/route", 404, "not_found"),
    ] {
        let (got, body) = get_json(&p.monitor, path).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().len() > 10,
            "{path}: {body}"
        );
    }
}

async fn prometheus_has_the_same_numbers_and_the_lag_drains(p: &Pipeline, env: &TestEnv) {
    let samples = scrape(&p.monitor).await;
    assert_eq!(
        metric(
            &samples,
            "monitoring_events_total",
            &[("event_type", "FileLoaded")]
        ),
        2.0
    );
    assert_eq!(
        metric(&samples, "pipeline_end_to_end_latency_seconds_count", &[]),
        2.0
    );
    // Lag per topic: a series for each of the five topics, all at zero
    // once every event is recorded and committed.
    let topics = env.kafka().topics();
    eventually(DEADLINE, "lag 0 on every topic", || async {
        let samples = scrape(&p.monitor).await;
        let lag: BTreeMap<String, f64> = samples
            .iter()
            .filter(|s| s.name == "consumer_lag_records")
            .fold(BTreeMap::new(), |mut by_topic, s| {
                *by_topic.entry(s.labels["topic"].clone()).or_default() += s.value;
                by_topic
            });
        let all_topics = topics.all().iter().all(|t| lag.contains_key(*t));
        (all_topics && lag.values().all(|v| *v == 0.0)).then_some(())
    })
    .await;
}

async fn the_dashboard_page_comes_from_the_binary(p: &Pipeline) {
    let page = http().get(p.monitor.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("events/stream"));
}

#[tokio::test]
async fn a_crashed_monitor_remembers_everything_and_counts_nothing_twice() {
    let env = TestEnv::new().await;
    let mut p = pipeline(&env).await;
    let request_id = format!("mon-crash-{}", env.id);
    let docs: Vec<Value> = (0..5).map(|n| generated_company(&env.id, n)).collect();
    let (status, files) = import(&p.api, &request_id, &Value::Array(docs)).await;
    assert_eq!(status, 202);

    // Loaded, and both events of each stored (two topics, either order).
    let before = eventually(DEADLINE, "all 5 files loaded in the monitor", || async {
        let (_, request) = get_json(&p.monitor, &format!("/requests/{request_id}")).await;
        let loaded = request["files"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter(|f| f["status"] == "loaded" && f["events"] == 2)
                    .count()
            })
            .unwrap_or(0);
        (loaded == 5).then_some(request)
    })
    .await;
    let (_, stats_before) = get_json(&p.monitor, "/stats").await;

    // kill -9: whatever offsets it had not committed are read again.
    p.monitor.kill().await;
    p.monitor.restart().await;
    let (_, after) = get_json(&p.monitor, &format!("/requests/{request_id}")).await;
    assert_eq!(after["files"], before["files"], "state survives the crash");
    let (_, stats_after) = get_json(&p.monitor, "/stats").await;
    assert_eq!(stats_after["total"], stats_before["total"]);
    assert_eq!(stats_after["latency"], stats_before["latency"]);

    // New events still count, exactly once, also in the fresh process's metrics.
    let (status, more) = import(
        &p.api,
        &format!("{request_id}-2"),
        &generated_company(&env.id, 9),
    )
    .await;
    assert_eq!(status, 202);
    // Both of its events: they come from two topics, in either order.
    eventually(
        DEADLINE,
        "the new file's two events in the monitor",
        || async {
            let (_, file) = get_json(&p.monitor, &format!("/files/{}", more[0])).await;
            (file["status"] == "loaded" && file["events"] == 2).then_some(())
        },
    )
    .await;
    let (_, stats) = get_json(&p.monitor, "/stats").await;
    assert_eq!(
        stats["total"]["by_type"],
        json!({"FileExtractSuccess": 6, "FileLoaded": 6}),
        "{stats}"
    );
    // Events read again after the crash were known already: the fresh
    // process counts only the new file's two events.
    let samples = scrape(&p.monitor).await;
    for event_type in ["FileExtractSuccess", "FileLoaded"] {
        assert_eq!(
            metric(
                &samples,
                "monitoring_events_total",
                &[("event_type", event_type)]
            ),
            1.0,
            "{event_type}"
        );
    }
    assert_eq!(files.len(), 5);
}

/// A browser left open on the live stream must not hold up a rollout: on
/// SIGTERM the stream ends and the monitor exits cleanly.
#[tokio::test]
async fn sigterm_ends_open_live_streams_and_the_monitor_exits() {
    let env = TestEnv::new().await;
    let mut monitor = ServiceProcess::monitor(&env, &[]).await;
    let mut live = http()
        .get(monitor.url("/events/stream"))
        .send()
        .await
        .unwrap();
    read_events(&mut live, "the ready message", |e| !e.is_empty()).await;

    monitor.signal("TERM");
    let status = monitor.wait(std::time::Duration::from_secs(15)).await;
    assert!(status.success(), "monitor exit: {status}");
    // The exit closed the connection: the client sees the end, not a hang.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Ok(Some(_)) = live.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the live stream ends with the monitor");
}
