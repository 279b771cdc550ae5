//! The flat load phase: single-company POSTs from many keep-alive
//! connections for a fixed time, sent by wrk (Debian's package, installed
//! by `scripts/bench.sh install`), the load generator the speed issue's
//! own baseline used. wrk is written in C and costs far less CPU per
//! request than the api, so what the api spends is not hidden behind its
//! client. Its script (`lua/companies.lua`) posts bodies written here
//! beforehand, a new company each.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use etl_testkit::{ServiceProcess, generated_company, repo_root};
use serde::Deserialize;

use crate::cpu::Meter;
use crate::stats::Phase;

/// wrk's threads: one per core of the machines this runs on.
const THREADS: u64 = 2;

/// Bodies written per second of the phase: room for a rate well above
/// what the api reached with fewer clients, without writing a file that
/// costs wrk more to read than its requests.
const HEADROOM: f64 = 3.0;

pub struct FlatLoad {
    pub connections: u64,
    pub seconds: u64,
}

/// What `companies.lua`'s `done` prints.
#[derive(Debug, Deserialize)]
struct Summary {
    requests: u64,
    duration_us: u64,
    status_errors: u64,
    connect_errors: u64,
    read_errors: u64,
    write_errors: u64,
    timeouts: u64,
    p50_us: f64,
    p99_us: f64,
    wrapped: u64,
}

/// Runs the phase against `api`, companies numbered from `first`. `None`
/// (and why, on stderr) when wrk is not there or did not run.
pub async fn flat_load(
    meter: &Meter,
    api: &ServiceProcess,
    tag: &str,
    first: u64,
    expected_rate: f64,
    load: &FlatLoad,
) -> Option<Phase> {
    let dir = repo_root().join("target/bench/wrk");
    let per_thread =
        ((expected_rate.max(500.0) * HEADROOM * load.seconds as f64) as u64).div_ceil(THREADS);
    if let Err(e) = write_bodies(&dir, tag, first, per_thread) {
        eprintln!(
            "[bench] wrk: could not write its bodies in {}: {e}",
            dir.display()
        );
        return None;
    }
    let script = repo_root().join("crates/etl-bench/lua/companies.lua");
    let mut wrk = Command::new("wrk");
    wrk.arg(format!("--threads={THREADS}"))
        .arg(format!("--connections={}", load.connections))
        .arg(format!("--duration={}s", load.seconds))
        .arg("--timeout=10s")
        .arg("--script")
        .arg(&script)
        .arg(api.url("/import/companies"))
        .arg("--")
        .arg(&dir);
    let services = [("api", api.pid())];
    let before = meter.sample(&services);
    let children_before = Meter::reaped_children_seconds();
    let output = tokio::task::spawn_blocking(move || wrk.output()).await;
    let after = meter.sample(&services);
    let wrk_seconds = Meter::reaped_children_seconds() - children_before;
    let summary = summary_of(output);
    std::fs::remove_dir_all(&dir).ok();
    let summary = summary?;
    let failed = summary.status_errors
        + summary.connect_errors
        + summary.read_errors
        + summary.write_errors
        + summary.timeouts;
    let done = summary.requests.saturating_sub(summary.status_errors);
    let mut cpu = after.cost_since(&before, done);
    // The bench client's column is the load generator's: wrk here.
    cpu.add("bench client", wrk_seconds * 1e6 / done.max(1) as f64);
    if summary.wrapped > 0 {
        eprintln!(
            "[bench] wrk ran out of bodies {} times: some companies were posted twice",
            summary.wrapped
        );
    }
    Some(Phase {
        name: "api flat load (wrk, 1 company per POST)",
        unit: "requests",
        done,
        failed,
        elapsed: Duration::from_micros(summary.duration_us),
        latencies: Vec::new(),
        reported_ms: Some((summary.p50_us / 1_000.0, summary.p99_us / 1_000.0)),
        cpu: Some(cpu),
    })
}

/// wrk's JSON summary line (written by the Lua script), or why there is
/// none, on stderr.
fn summary_of(
    output: Result<std::io::Result<std::process::Output>, tokio::task::JoinError>,
) -> Option<Summary> {
    match output {
        Ok(Ok(out)) if out.status.success() => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let summary = stdout
                .lines()
                .find(|l| l.starts_with("{\"wrk\""))
                .and_then(|l| serde_json::from_str::<Summary>(l).ok());
            if summary.is_none() {
                eprintln!("[bench] wrk printed no summary:\n{stdout}");
            }
            summary
        }
        Ok(Ok(out)) => {
            eprintln!(
                "[bench] wrk failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            None
        }
        Ok(Err(e)) => {
            eprintln!("[bench] wrk did not start ({e}); run scripts/bench.sh install");
            None
        }
        Err(e) => {
            eprintln!("[bench] wrk: {e}");
            None
        }
    }
}

/// `bodies-<thread>.ndjson` in `dir`: `per_thread` companies each, thread
/// `t` taking the numbers `first + t`, `first + t + THREADS`, ...
fn write_bodies(dir: &Path, tag: &str, first: u64, per_thread: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for thread in 0..THREADS {
        let file = std::fs::File::create(dir.join(format!("bodies-{thread}.ndjson")))?;
        let mut out = std::io::BufWriter::new(file);
        for k in 0..per_thread {
            let n = u32::try_from(first + thread + k * THREADS).map_err(std::io::Error::other)?;
            serde_json::to_writer(&mut out, &generated_company(tag, n))?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    Ok(())
}
