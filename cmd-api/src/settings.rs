use std::net::SocketAddr;
use std::time::Duration;

use etl_core::bus::KafkaSettings;
use etl_core::config::{ConfigError, Env, Secret};
use etl_core::dataset::Datasets;
use etl_core::storage::S3Settings;
use etl_core::telemetry::LogFormat;
use etl_core::traces::TraceSettings;

use crate::extract::DEPTH_CEILING;

/// Everything cmd-api reads from the environment; see `.env.example`.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `API_LISTEN_ADDR`.
    pub listen_addr: SocketAddr,
    /// `MAX_BODY_BYTES`: largest accepted upload, after gzip decompression too.
    pub max_body_bytes: usize,
    /// `MAX_COMPANY_BYTES`: largest single company document; uploads are
    /// streamed, so this (not `MAX_BODY_BYTES`) bounds what one import holds.
    pub max_company_bytes: usize,
    /// `MAX_JSON_DEPTH`: deepest nesting of arrays and objects accepted.
    pub max_json_depth: usize,
    /// `REQUEST_HEADER_TIMEOUT_MS`: a client must send its headers within this.
    pub header_timeout: Duration,
    /// `REQUEST_BODY_TIMEOUT_MS`: an upload must arrive whole, and its
    /// files be stored, within this.
    pub body_timeout: Duration,
    /// `MAX_CONCURRENT_IMPORTS`: imports handled at once; more get 503.
    pub max_concurrent_imports: usize,
    /// `IMPORT_SLOT_WAIT_MS`: how long an import waits for a free slot.
    pub slot_wait: Duration,
    /// `S3_PUT_CONCURRENCY`: objects of one request stored in parallel.
    pub put_concurrency: usize,
    /// `READINESS_TIMEOUT_MS`: per-dependency bound of a readiness check.
    pub readiness_timeout: Duration,
    /// `SHUTDOWN_GRACE_MS`: how long in-flight imports may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// `LOG_FORMAT`: `json` or `pretty`.
    pub log_format: LogFormat,
    /// The `OTEL_*` variables: where and how spans are exported.
    pub traces: TraceSettings,
    /// `API_KEYS`: comma-separated keys accepted as `Authorization: Bearer
    /// <key>` on the import route; empty for an open api.
    pub api_keys: Vec<Secret>,
    /// The built-in datasets and those of `DATASETS_DIR`.
    pub datasets: Datasets,
    pub kafka: KafkaSettings,
    pub s3: S3Settings,
}

impl ApiSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let put_concurrency = env.parse("S3_PUT_CONCURRENCY", 16)?;
        if put_concurrency == 0 {
            return Err(ConfigError {
                var: "S3_PUT_CONCURRENCY".into(),
                problem: "must be at least 1".into(),
            });
        }
        let max_json_depth = env.parse("MAX_JSON_DEPTH", 64)?;
        if !(1..=DEPTH_CEILING).contains(&max_json_depth) {
            return Err(ConfigError {
                var: "MAX_JSON_DEPTH".into(),
                problem: format!("must be between 1 and {DEPTH_CEILING}"),
            });
        }
        let max_concurrent_imports = env.parse("MAX_CONCURRENT_IMPORTS", 16)?;
        if max_concurrent_imports == 0 {
            return Err(ConfigError {
                var: "MAX_CONCURRENT_IMPORTS".into(),
                problem: "must be at least 1".into(),
            });
        }
        let max_company_bytes = env.parse("MAX_COMPANY_BYTES", 16 * 1024 * 1024)?;
        if max_company_bytes == 0 {
            return Err(ConfigError {
                var: "MAX_COMPANY_BYTES".into(),
                problem: "must be at least 1".into(),
            });
        }
        let api_keys = env.string("API_KEYS", "");
        let api_keys = api_keys
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(Secret::new)
            .collect();
        Ok(Self {
            listen_addr: env.socket_addr("API_LISTEN_ADDR", "0.0.0.0:8080")?,
            max_body_bytes: env.parse("MAX_BODY_BYTES", 64 * 1024 * 1024)?,
            max_company_bytes,
            max_json_depth,
            header_timeout: env.millis("REQUEST_HEADER_TIMEOUT_MS", 10_000)?,
            body_timeout: env.millis("REQUEST_BODY_TIMEOUT_MS", 120_000)?,
            max_concurrent_imports,
            slot_wait: env.millis("IMPORT_SLOT_WAIT_MS", 5_000)?,
            put_concurrency,
            readiness_timeout: env.millis("READINESS_TIMEOUT_MS", 2_000)?,
            shutdown_grace: env.millis("SHUTDOWN_GRACE_MS", 20_000)?,
            log_format: env.parse("LOG_FORMAT", LogFormat::Json)?,
            traces: TraceSettings::from_env(env, "cmd-api")?,
            api_keys,
            datasets: Datasets::from_env(env)?,
            kafka: KafkaSettings::from_env(env)?,
            s3: S3Settings::from_env(env)?,
        })
    }
}
