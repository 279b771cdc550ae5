//! The pipeline's own rates: the api acknowledging files, the processor
//! draining them into Postgres, and the time from a 202 to `FileLoaded`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use etl_core::events::Event;
use etl_testkit::{
    ServiceProcess, TestEnv, files_recorded, generated_company, http, metric, scrape,
};
use serde_json::Value;

use crate::cpu::Meter;
use crate::run::{Pace, closed_loop, drive};
use crate::stats::Phase;

/// Sends an import and returns the api's answer if it was 202.
pub async fn accepted(request: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 202 {
        return Err(format!("{status}: {body}"));
    }
    Ok(body)
}

/// POSTs one company and returns its file id once the api answered 202.
/// One client for a whole phase: it keeps its connections alive, as a load
/// generator does, and building one per request (its TLS roots) cost more
/// CPU than the api spent on the request.
async fn post_company(
    client: &reqwest::Client,
    api_url: &str,
    tag: &str,
    n: u64,
) -> Result<String, String> {
    let doc = generated_company(tag, u32::try_from(n).map_err(|e| e.to_string())?);
    let body = accepted(
        client
            .post(api_url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&doc).expect("JSON")),
    )
    .await?;
    body["files"][0]["file_id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no file id in {body}"))
}

/// Single-company imports, `concurrency` clients: each 202 is a file the
/// api stored in S3 and announced on the broker.
pub async fn api_ingest(api: &ServiceProcess, tag: &str, files: u64, concurrency: usize) -> Phase {
    let url = api.url("/import/companies");
    let client = http();
    closed_loop(
        "api ingest (1 company per POST)",
        "files",
        files,
        concurrency,
        |n| {
            let (client, url) = (client.clone(), url.clone());
            async move { post_company(&client, &url, tag, n).await.map(|_| ()) }
        },
    )
    .await
}

/// Starts the processor on `files` waiting events and times it until the
/// ledger holds all of them. Returns the phase and the process (still
/// running, for the latency phase) .
///
/// The processor's CPU counts from its start: it drains from the moment it
/// is assigned its partitions, before it answers ready.
pub async fn processor_drain(
    env: &TestEnv,
    meter: &Meter,
    files: u64,
    settings: &[(&str, &str)],
) -> (Phase, ServiceProcess) {
    let before = meter.sample(&[]);
    let processor = ServiceProcess::processor(env, settings).await;
    let recording = crate::profile::start("processor", processor.pid());
    let started = Instant::now();
    let deadline = Duration::from_secs(3_600);
    let mut recorded = files_recorded(env).await;
    while (recorded as u64) < files && started.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        recorded = files_recorded(env).await;
    }
    let elapsed = started.elapsed();
    if let Some(recording) = recording {
        recording.finish();
    }
    let cpu = meter
        .sample(&[("processor", processor.pid())])
        .cost_since(&before, recorded as u64);
    let phase = Phase {
        name: "processor drain (files from the topic into Postgres)",
        unit: "files",
        done: recorded as u64,
        failed: files.saturating_sub(recorded as u64),
        elapsed,
        latencies: Vec::new(),
        reported_ms: None,
        cpu: Some(cpu),
    };
    (phase, processor)
}

/// Open loop at `rate` files/s for `seconds`: each file's latency is from
/// its 202 to the `occurred_at` of its `FileLoaded` (one clock: this
/// machine's).
pub async fn end_to_end(
    env: &TestEnv,
    api: &ServiceProcess,
    tag: &str,
    first: u64,
    rate: f64,
    seconds: u64,
) -> Phase {
    let url = api.url("/import/companies");
    let client = http();
    let total = ((rate * seconds as f64).round() as u64).max(1);
    let acked: Arc<Mutex<BTreeMap<String, DateTime<Utc>>>> = Arc::default();
    let mut tail = env.tail(&env.kafka().topics().file_loaded);
    let posted = drive("end to end posts", "files", total, Pace::Rate(rate), |i| {
        let (client, url, acked) = (&client, &url, acked.clone());
        async move {
            let id = post_company(client, url, tag, first + i).await?;
            acked.lock().unwrap().insert(id, Utc::now());
            Ok(())
        }
    })
    .await;
    let (posting, failed) = (posted.elapsed, posted.failed);
    let acked = acked.lock().unwrap().clone();
    let want = acked.len();
    let seen = tail
        .until(Duration::from_secs(300), "FileLoaded of every timed file", |records| {
            records
                .iter()
                .filter(|r| matches!(&r.envelope.event, Event::FileLoaded(e) if acked.contains_key(&e.file_id.to_string())))
                .count()
                >= want
        })
        .await;
    let mut latencies = Vec::new();
    for r in seen {
        if let Event::FileLoaded(e) = &r.envelope.event
            && let Some(at) = acked.get(&e.file_id.to_string())
        {
            let ms = (r.envelope.occurred_at - *at)
                .num_microseconds()
                .unwrap_or(0)
                .max(0);
            latencies.push(Duration::from_micros(ms as u64));
        }
    }
    Phase {
        name: "end to end, 202 → FileLoaded (open loop, half rate)",
        unit: "files",
        done: latencies.len() as u64,
        failed,
        elapsed: posting,
        latencies,
        reported_ms: None,
        cpu: None,
    }
}

/// Milliseconds per drained file spent waiting on each dependency call the
/// processor times (`dependency_request_duration_seconds`). Files are
/// handled several at a time, so these add up to more than the wall time
/// per file.
pub async fn time_per_file(processor: &ServiceProcess, drain: &Phase) -> Value {
    let files = drain.done.max(1) as f64;
    let mut per_call: BTreeMap<String, f64> = BTreeMap::new();
    for s in scrape(processor).await {
        if s.name == "dependency_request_duration_seconds_sum" {
            let call = format!("{} {}", s.labels["dependency"], s.labels["operation"]);
            *per_call.entry(call).or_default() += s.value * 1_000.0 / files;
        }
    }
    per_call.retain(|_, ms| *ms > 0.0);
    serde_json::to_value(per_call).expect("JSON")
}

/// The processor's average transaction size (`processor_files_per_transaction`).
pub async fn files_per_transaction(processor: &ServiceProcess) -> f64 {
    let samples = scrape(processor).await;
    let sum = metric(&samples, "processor_files_per_transaction_sum", &[]);
    let count = metric(&samples, "processor_files_per_transaction_count", &[]);
    sum / count.max(1.0)
}
