//! `POST /import/companies` against the real S3 server and broker.

use serde_json::Value;

use etl_core::events::{Envelope, Event, FileExtractError};
use etl_core::storage::ObjectStore;
use etl_testkit::{
    DEADLINE, ImportRequest, OwnKafka, OwnServer, Service, TestEnv, example, example_json, http,
    import, metric, readiness_follows, scrape,
};

struct Api {
    env: TestEnv,
    service: Service,
    store: ObjectStore,
}

async fn start() -> Api {
    start_in(TestEnv::new().await, &[]).await
}

async fn start_in(env: TestEnv, extra: &[(&str, &str)]) -> Api {
    let service = env.spawn_api(extra).await;
    let store = env.store(extra);
    Api {
        env,
        service,
        store,
    }
}

impl Api {
    async fn post(
        &self,
        body: Vec<u8>,
        content_type: &str,
        request_id: Option<&str>,
    ) -> (u16, Value) {
        let mut request = ImportRequest::new(
            &self.service,
            "/import/companies?filename=upload.json",
            body,
        )
        .header("content-type", content_type);
        if let Some(id) = request_id {
            request = request.header("x-request-id", id);
        }
        let answer = request.send().await;
        assert_eq!(
            answer.header("x-request-id"),
            answer.body["request_id"].as_str(),
            "X-Request-Id echoed"
        );
        (answer.status, answer.body)
    }

    /// The one `FileExtractError` of this test.
    async fn extract_error(&self) -> (Envelope, FileExtractError) {
        let topic = self.env.kafka().topics().file_extract_error;
        let mut tail = self.env.tail(&topic);
        let records = tail
            .until(DEADLINE, "the FileExtractError", |r| !r.is_empty())
            .await;
        assert_eq!(records.len(), 1, "{records:?}");
        let envelope = records[0].envelope.clone();
        match &envelope.event {
            Event::FileExtractError(e) => (envelope.clone(), e.clone()),
            other => panic!("unexpected event {other:?}"),
        }
    }

    async fn assert_nothing_stored(&self) {
        assert_eq!(
            self.stored_keys().await,
            Vec::<String>::new(),
            "nothing stored"
        );
    }

    async fn stored_keys(&self) -> Vec<String> {
        self.store.list("").await.expect("list the bucket")
    }
}

#[tokio::test]
async fn one_company_is_stored_and_announced_keyed_by_its_slug() {
    let api = start().await;
    let posted = example("companies/c.json");
    let (status, body) = api
        .post(posted.clone(), "application/json", Some("req-c-json-1"))
        .await;

    assert_eq!(status, 202, "{body}");
    assert_eq!(body["request_id"], "req-c-json-1");
    let files = body["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    let file = &files[0];
    assert_eq!(file["company"], "pao-sberbank");
    let file_id = file["file_id"].as_str().unwrap();
    let key = format!("pao-sberbank/files/{file_id}.json");
    assert_eq!(file["s3_key"], key.as_str());

    // The object holds the posted document (surrounding whitespace aside).
    let stored = api.store.get(&key).await.expect("object stored");
    assert_eq!(stored, posted.trim_ascii());
    assert_eq!(file["size_bytes"], stored.len());

    let topic = api.env.kafka().topics().file_extract_success;
    let mut tail = api.env.tail(&topic);
    let records = tail
        .until(DEADLINE, "the FileExtractSuccess", |r| !r.is_empty())
        .await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.key.as_deref(), Some("pao-sberbank"));
    assert_eq!(record.headers["event-type"], "FileExtractSuccess");
    assert_eq!(record.headers["request-id"], "req-c-json-1");
    assert!(
        !record.headers.contains_key("traceparent"),
        "traces are off: no trace context is made up"
    );
    assert_eq!(record.envelope.request_id.as_str(), "req-c-json-1");
    let Event::FileExtractSuccess(e) = &record.envelope.event else {
        panic!("unexpected event {:?}", record.envelope.event)
    };
    assert_eq!(e.file_id.to_string(), file_id);
    assert_eq!(e.s3_key, key);
    assert_eq!(e.s3_bucket, api.store.bucket());
    assert_eq!(e.size_bytes, stored.len() as u64);
    assert_eq!(
        record.envelope.dataset.as_ref().map(|d| d.as_str()),
        Some("companies")
    );
    assert_eq!(e.filename, "upload.json");
    assert_eq!(e.etag, file["etag"].as_str().unwrap());
}

#[tokio::test]
async fn malformed_json_is_rejected_with_its_position_and_nothing_is_stored() {
    let api = start().await;
    let (status, body) = api
        .post(
            example("companies/invalid/malformed.json"),
            "application/json",
            None,
        )
        .await;

    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_json");
    assert_eq!(body["error"]["line"], 5, "{body}");
    assert!(body["error"]["column"].is_u64(), "{body}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());

    let (envelope, e) = api.extract_error().await;
    assert_eq!(e.reason, "invalid_json");
    assert_eq!(e.line, Some(5));
    assert_eq!(envelope.company, None);
    assert_eq!(
        envelope.request_id.as_str(),
        body["request_id"].as_str().unwrap()
    );

    api.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_company_without_a_name_is_422_and_reported() {
    let api = start().await;
    let (status, body) = api
        .post(
            example("companies/invalid/missing-name.json"),
            "application/json",
            None,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "missing_company");

    let (_, e) = api.extract_error().await;
    assert_eq!(e.reason, "missing_company");
    api.assert_nothing_stored().await;
}

#[tokio::test]
async fn ndjson_gives_one_file_per_line() {
    let api = start().await;
    let posted = example("companies/companies.ndjson");
    let (status, body) = api.post(posted.clone(), "application/x-ndjson", None).await;
    assert_eq!(status, 202, "{body}");
    let lines = posted
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    let files = body["files"].as_array().unwrap();
    assert_eq!(files.len(), lines);

    let mut keys = api.stored_keys().await;
    keys.sort();
    let mut expected: Vec<String> = files
        .iter()
        .map(|f| f["s3_key"].as_str().unwrap().to_owned())
        .collect();
    expected.sort();
    assert_eq!(keys, expected);
}

#[tokio::test]
async fn probes_report_the_build_and_the_dependencies() {
    let api = start().await;
    let live: Value = http()
        .get(api.service.url("/liveness"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live["status"], "ok");
    assert_eq!(live["service"], "cmd-api");
    assert_eq!(live["version"], env!("CARGO_PKG_VERSION"));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned());
    let expected = std::env::var("ETL_GIT_SHA")
        .ok()
        .or(head)
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(live["git_sha"], expected.as_str(), "{live}");
    assert!(live["started_at"].as_str().unwrap().contains('T'));

    let ready = http()
        .get(api.service.url("/readiness"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["s3"]["ok"], true, "{ready}");
    assert_eq!(ready["checks"]["kafka"]["ok"], true, "{ready}");
}

#[tokio::test]
async fn without_s3_readiness_names_it_and_imports_get_503_until_it_is_back() {
    let env = TestEnv::new().await;
    let mut s3 = OwnServer::seaweedfs(&env.id).await;
    let endpoint = s3.endpoint();
    let api = start_in(
        env,
        &[("S3_ENDPOINT", &endpoint), ("S3_TIMEOUT_MS", "2000")],
    )
    .await;

    readiness_follows(&api.service, &mut s3, OwnServer::kill, "s3", async || {
        let refused = import(&api.service, example("companies/c.json"))
            .send()
            .await;
        assert_eq!(refused.status, 503);
        assert!(refused.header("retry-after").is_some());
        let body = refused.body;
        assert_eq!(body["error"]["code"], "dependency_unavailable", "{body}");
        assert!(
            !body.to_string().contains("etl-dev-secret"),
            "no secret in the answer: {body}"
        );
    })
    .await;

    let (status, body) = api
        .post(example("companies/c.json"), "application/json", None)
        .await;
    assert_eq!(status, 202, "{body}");
    // A 202 means the object is there.
    let key = body["files"][0]["s3_key"].as_str().unwrap().to_owned();
    assert_eq!(api.stored_keys().await, vec![key]);
    eprintln!(
        "counted: 503 dependency_unavailable during the outage, 202 after; 1 object stored, the acknowledged one"
    );
}

#[tokio::test]
async fn without_the_broker_readiness_names_it_until_it_is_back() {
    let mut env = TestEnv::new().await;
    let mut kafka = OwnKafka::start(&env.id, 1).await;
    kafka.serve(&mut env);
    let api = start_in(env, &[("READINESS_TIMEOUT_MS", "1000")]).await;

    readiness_follows(
        &api.service,
        kafka.node(1),
        OwnServer::kill,
        "kafka",
        async || {},
    )
    .await;

    let (status, body) = api
        .post(example("companies/c.json"), "application/json", None)
        .await;
    assert_eq!(status, 202, "{body}");
}

/// Posts `body` with an Idempotency-Key: status, body, and whether the
/// answer says it is a replay.
async fn post_with_key(api: &Api, key: &str, body: Vec<u8>) -> (u16, Value, bool) {
    let answer = import(&api.service, body)
        .header("idempotency-key", key)
        .send()
        .await;
    let replayed = answer.header("idempotent-replayed").is_some();
    (answer.status, answer.body, replayed)
}

#[tokio::test]
async fn one_idempotency_key_posted_20_times_at_once_imports_once_and_answers_alike() {
    let api = start().await;
    let key = format!("key-{}", api.env.id);
    let files = example_json("companies/companies.json")
        .as_array()
        .unwrap()
        .len();

    let answers = futures::future::join_all(
        (0..20).map(|_| post_with_key(&api, &key, example("companies/companies.json"))),
    )
    .await;
    let original = &answers[0].1;
    assert_eq!(original["files"].as_array().unwrap().len(), files);
    for (status, body, _) in &answers {
        assert_eq!(*status, 202, "{body}");
        assert_eq!(body, original, "every answer is the original one");
    }
    let imported = answers.iter().filter(|(_, _, replayed)| !replayed).count();
    eprintln!("injected: one Idempotency-Key on 20 concurrent requests of {files} companies");
    assert_eq!(imported, 1, "one import, 19 replays");

    // Once, not 20 times: each file was announced once.
    let samples = scrape(&api.service).await;
    let published = metric(
        &samples,
        "events_published_total",
        &[("event_type", "FileExtractSuccess")],
    );
    assert_eq!(published, files as f64);
    eprintln!(
        "counted: 20 identical 202 answers, {imported} import, {published} FileExtractSuccess"
    );
    assert_eq!(
        metric(
            &samples,
            "import_requests_total",
            &[("outcome", "replayed")]
        ),
        19.0
    );

    // Later, the same request gets the same answer again.
    let (status, body, replayed) =
        post_with_key(&api, &key, example("companies/companies.json")).await;
    assert_eq!((status, &body, replayed), (202, original, true));

    // The key cannot be reused for something else, nor be garbage.
    let (status, body, _) = post_with_key(&api, &key, example("companies/c.json")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    let (status, body, _) =
        post_with_key(&api, &"k".repeat(300), example("companies/c.json")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_idempotency_key");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
}

/// Posts c.json with `authorization` (if any): status, WWW-Authenticate, body.
async fn post_authorized(api: &Api, authorization: Option<&str>) -> (u16, Option<String>, Value) {
    let mut request = import(&api.service, example("companies/c.json"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let answer = request.send().await;
    let challenge = answer.header("www-authenticate").map(str::to_owned);
    (answer.status, challenge, answer.body)
}

#[tokio::test]
async fn with_api_keys_an_import_needs_one_and_probes_stay_open() {
    let (first, second) = ("first-key-4b1d9e7c", "second-key-0a8f3c21");
    let keys = format!("{first}, {second}");
    let api = start_in(TestEnv::new().await, &[("API_KEYS", &keys)]).await;

    for (authorization, says) in [
        (None, "requires an API key"),
        (Some("Bearer wrong-key"), "not valid"),
        (Some(&format!("Bearer {first}x") as &str), "not valid"),
        (
            Some(&format!("Basic {first}") as &str),
            "requires an API key",
        ),
    ] {
        let (status, challenge, body) = post_authorized(&api, authorization).await;
        assert_eq!(status, 401, "{authorization:?}: {body}");
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        assert_eq!(body["error"]["code"], "unauthorized");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{authorization:?}: {message}");
        assert!(
            !body.to_string().contains("key-4b1d"),
            "no key in the answer: {body}"
        );
    }
    api.assert_nothing_stored().await;

    for key in [first, second] {
        let (status, _, body) = post_authorized(&api, Some(&format!("Bearer {key}"))).await;
        assert_eq!(status, 202, "{body}");
    }
    for path in ["/liveness", "/readiness", "/metrics"] {
        let status = http()
            .get(api.service.url(path))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path} needs no key");
    }
}

#[tokio::test]
async fn the_spec_and_a_self_contained_swagger_ui_are_served() {
    let api = start().await;
    let spec = http()
        .get(api.service.url("/openapi.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(spec.status(), 200);
    assert_eq!(spec.headers()["content-type"], "application/yaml");
    let on_disk =
        std::fs::read_to_string(etl_testkit::repo_root().join("api/openapi.yaml")).unwrap();
    assert_eq!(
        spec.text().await.unwrap(),
        on_disk,
        "the binary serves the spec in the repo"
    );

    let page = http().get(api.service.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("/openapi.yaml"), "{html}");
    // Every script and style the page loads comes from the api itself.
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with("/docs/assets/"))
        .collect();
    assert!(assets.len() >= 4, "{html}");
    for asset in assets {
        let r = http().get(api.service.url(asset)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{asset}");
        assert!(!r.bytes().await.unwrap().is_empty(), "{asset}");
    }
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external asset: {html}"
    );
    let missing = http()
        .get(api.service.url("/docs/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

/// NDJSON of `n` generated companies, each padded so that together they
/// pass the api's hold (4 MiB) and are stored while the body streams in.
fn padded_ndjson(tag: &str, n: u32) -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..n {
        let mut doc = etl_testkit::generated_company(tag, i);
        doc["notes"] = "x".repeat(2_000).into();
        serde_json::to_writer(&mut body, &doc).unwrap();
        body.push(b'\n');
    }
    body
}

/// POSTs `body` in 64 KiB chunks without a Content-Length, as a client
/// streaming a file does.
async fn post_chunked(api: &Api, body: Vec<u8>) -> (u16, Value) {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let stream = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let answer = import(&api.service, stream)
        .header("content-type", "application/x-ndjson")
        .send()
        .await;
    (answer.status, answer.body)
}

#[tokio::test]
async fn a_streamed_upload_is_stored_and_announced_in_the_order_sent() {
    let api = start().await;
    let companies = 3_000;
    let (status, body) = post_chunked(&api, padded_ndjson("streamed", companies)).await;
    assert_eq!(status, 202, "{}", body["error"]);

    let files = body["files"].as_array().unwrap();
    let slugs: Vec<&str> = files
        .iter()
        .map(|f| f["company"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..companies)
        .map(|i| format!("test-streamed-{i}"))
        .collect();
    assert_eq!(slugs, expected);
    assert_eq!(api.stored_keys().await.len(), companies as usize);

    let topic = api.env.kafka().topics().file_extract_success;
    let mut tail = api.env.tail(&topic);
    let announced: Vec<String> = tail
        .until(DEADLINE, "a FileExtractSuccess per company", |r| {
            r.len() >= companies as usize
        })
        .await
        .iter()
        .map(|r| match &r.envelope.event {
            Event::FileExtractSuccess(e) => e.file_id.to_string(),
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    let mut answered: Vec<&str> = files
        .iter()
        .map(|f| f["file_id"].as_str().unwrap())
        .collect();
    let mut announced: Vec<&str> = announced.iter().map(String::as_str).collect();
    answered.sort_unstable();
    announced.sort_unstable();
    assert_eq!(announced, answered);
}

#[tokio::test]
async fn a_streamed_upload_broken_near_its_end_is_refused_at_its_line_and_announces_nothing() {
    let api = start().await;
    let mut body = padded_ndjson("broken", 3_000);
    body.extend(b"{\"name\": \"Last\", oops}\n");
    let (status, answer) = post_chunked(&api, body).await;

    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_json");
    assert_eq!(answer["error"]["line"], 3_001, "{answer}");
    let (_, e) = api.extract_error().await;
    assert_eq!(e.line, Some(3_001));
    // Events are acknowledged before the api answers: none was sent.
    let published = metric(
        &scrape(&api.service).await,
        "events_published_total",
        &[("event_type", "FileExtractSuccess")],
    );
    assert_eq!(published, 0.0);
}

#[tokio::test]
async fn a_company_over_max_company_bytes_is_413_naming_it() {
    let api = start_in(TestEnv::new().await, &[("MAX_COMPANY_BYTES", "4096")]).await;
    let mut body = padded_ndjson("small", 2);
    let mut huge = etl_testkit::generated_company("huge", 9);
    huge["notes"] = "y".repeat(5_000).into();
    body.extend(serde_json::to_vec(&huge).unwrap());
    let (status, answer) = api.post(body, "application/x-ndjson", None).await;

    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "payload_too_large");
    assert_eq!(answer["error"]["limit_bytes"], 4096);
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("line 3 "), "{message}");
    assert!(message.contains("MAX_COMPANY_BYTES"), "{message}");
    api.assert_nothing_stored().await;
}
