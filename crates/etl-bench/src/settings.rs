//! What a run is asked to do (the `BENCH_*` environment) and what it ran
//! on (machine, date, git sha).

use anyhow::Context;
use etl_testkit::repo_root;
use serde_json::{Value, json};

use crate::wrk::FlatLoad;

/// Service settings worth trying other values of; the rest stay default.
/// They apply to the raw phases' clients too (the services' own).
const SERVICE_KNOBS: [&str; 10] = [
    "PROCESSOR_CONCURRENCY",
    "DATABASE_MAX_CONNECTIONS",
    "MAX_CONCURRENT_IMPORTS",
    "S3_PUT_CONCURRENCY",
    "KAFKA_LINGER_MS",
    "RUST_LOG",
    "TOKIO_WORKER_THREADS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
];

pub struct Settings {
    pub concurrency: usize,
    pub raw_ops: u64,
    pub files: u64,
    pub e2e_seconds: u64,
    pub stream_clients: usize,
    pub stream_mib: u64,
    pub stream_company_kib: usize,
    pub flat: FlatLoad,
    /// Those of `SERVICE_KNOBS` that are set.
    pub knobs: Vec<(&'static str, String)>,
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            concurrency: setting("BENCH_CONCURRENCY", 32)? as usize,
            raw_ops: setting("BENCH_RAW_OPS", 5_000)?,
            files: setting("BENCH_FILES", 20_000)?,
            e2e_seconds: setting("BENCH_E2E_SECONDS", 20)?,
            stream_clients: setting("BENCH_STREAM_CLIENTS", 16)? as usize,
            stream_mib: setting("BENCH_STREAM_MIB", 200)?,
            stream_company_kib: setting("BENCH_STREAM_COMPANY_KIB", 64)? as usize,
            flat: FlatLoad {
                connections: setting("BENCH_WRK_CONNECTIONS", 64)?,
                seconds: setting("BENCH_WRK_SECONDS", 15)?,
            },
            knobs: SERVICE_KNOBS
                .iter()
                .filter_map(|&name| std::env::var(name).ok().map(|v| (name, v)))
                .collect(),
        })
    }

    /// The knobs as the services are started with them.
    pub fn service_settings(&self) -> Vec<(&str, &str)> {
        self.knobs.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "concurrency": self.concurrency,
            "raw_ops": self.raw_ops,
            "files": self.files,
            "e2e_seconds": self.e2e_seconds,
            "stream_clients": self.stream_clients,
            "stream_mib": self.stream_mib,
            "stream_company_kib": self.stream_company_kib,
            "wrk_connections": self.flat.connections,
            "wrk_seconds": self.flat.seconds,
            "services": self.service_settings().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        })
    }
}

fn setting(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a whole number")),
        Err(_) => Ok(default),
    }
}

/// Where `scripts/stack.sh` keeps the itest stack (its pid files).
pub fn stack_dir() -> std::path::PathBuf {
    std::env::var_os("STACK_DIR")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join(".local/itest"))
}

/// The machine, the date and the commit a run's numbers belong to.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(repo_root())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": (mem_kib as f64 / 1_048_576.0 * 10.0).round() / 10.0,
        "date": chrono::Utc::now().to_rfc3339(),
        "git_sha": git(&["rev-parse", "HEAD"]),
        "git_dirty": !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty(),
    })
}
