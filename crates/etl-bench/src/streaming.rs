//! The api's memory while many clients stream large uploads: each client
//! sends one generated file (NDJSON or a JSON array, alternately), made as
//! it is sent and never held whole by the client either.

use std::time::{Duration, Instant};

use crate::pipeline::accepted;
use crate::stats::Phase;
use etl_testkit::{ServiceProcess, TestEnv, generated_company, http};
use futures::StreamExt;

/// Companies per chunk handed to the HTTP client.
const COMPANIES_PER_CHUNK: u32 = 4;

pub struct Streamed {
    pub phase: Phase,
    pub files: u64,
    /// Where the api stored them, for the clean-up at the end.
    pub keys: Vec<String>,
    pub peak_rss_bytes: u64,
}

/// One company of about `size` bytes (padded with an extra field, which
/// the pipeline keeps as an unknown field).
fn company(tag: &str, n: u32, padding: &str) -> Vec<u8> {
    let mut doc = generated_company(tag, n);
    doc["notes"] = padding.into();
    serde_json::to_vec(&doc).expect("JSON")
}

/// A body of about `bytes`, produced chunk by chunk.
fn body(tag: String, bytes: u64, company_bytes: usize, ndjson: bool) -> reqwest::Body {
    let padding = "x".repeat(company_bytes.saturating_sub(1_000));
    let per_company = company(&tag, 0, &padding).len() as u64 + 1;
    let companies = (bytes / per_company).max(1) as u32;
    let chunks = futures::stream::iter((0..companies).step_by(COMPANIES_PER_CHUNK as usize)).map(
        move |first| {
            let mut chunk = Vec::new();
            if !ndjson && first == 0 {
                chunk.push(b'[');
            }
            for n in first..(first + COMPANIES_PER_CHUNK).min(companies) {
                if !ndjson && n > 0 {
                    chunk.push(b',');
                }
                chunk.extend(company(&tag, n, &padding));
                if ndjson {
                    chunk.push(b'\n');
                }
            }
            if !ndjson && first + COMPANIES_PER_CHUNK >= companies {
                chunk.push(b']');
            }
            Ok::<_, std::io::Error>(chunk)
        },
    );
    reqwest::Body::wrap_stream(chunks)
}

/// One streamed upload: the keys the api stored and how long it took.
async fn upload(
    url: String,
    tag: String,
    file_bytes: u64,
    company_bytes: usize,
    ndjson: bool,
) -> Result<(Vec<String>, Duration), String> {
    let began = Instant::now();
    let content_type = if ndjson {
        "application/x-ndjson"
    } else {
        "application/json"
    };
    let request = http()
        .post(&url)
        .timeout(Duration::from_secs(3_600))
        .header("content-type", content_type)
        .body(body(tag, file_bytes, company_bytes, ndjson));
    let answer = accepted(request).await?;
    let keys: Vec<String> = answer["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["s3_key"].as_str().map(str::to_owned))
        .collect();
    Ok((keys, began.elapsed()))
}

/// `clients` uploads of `file_bytes` each, all at once, to an api of its
/// own (so its peak memory is this phase's).
pub async fn api_streaming(
    env: &TestEnv,
    clients: usize,
    file_bytes: u64,
    company_bytes: usize,
    knobs: &[(&str, &str)],
) -> Streamed {
    let limit = (file_bytes + file_bytes / 10).to_string();
    let mut settings = knobs.to_vec();
    settings.extend([
        ("MAX_BODY_BYTES", limit.as_str()),
        ("REQUEST_BODY_TIMEOUT_MS", "3600000"),
        ("MAX_CONCURRENT_IMPORTS", "64"),
    ]);
    let api = ServiceProcess::api(env, &settings).await;
    let url = api.url("/import/companies");
    let started = Instant::now();
    let uploads = (0..clients).map(|client| {
        let tag = format!("{} stream {client}", env.id);
        upload(url.clone(), tag, file_bytes, company_bytes, client % 2 == 0)
    });
    let results = futures::future::join_all(uploads).await;
    let elapsed = started.elapsed();
    let peak_rss_bytes = api.peak_memory_bytes();
    let mut keys = Vec::new();
    let mut latencies = Vec::new();
    let mut failed = 0;
    for result in results {
        match result {
            Ok((stored, took)) => {
                keys.extend(stored);
                latencies.push(took);
            }
            Err(e) => {
                eprintln!("[bench] streaming upload failed: {e}");
                failed += 1;
            }
        }
    }
    let done_mib = latencies.len() as u64 * file_bytes / (1024 * 1024);
    Streamed {
        phase: Phase {
            name: "api streaming (large uploads, all at once)",
            unit: "MiB",
            done: done_mib,
            failed,
            elapsed,
            latencies,
            reported_ms: None,
            cpu: None,
        },
        files: keys.len() as u64,
        keys,
        peak_rss_bytes,
    }
}
