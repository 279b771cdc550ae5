use std::net::SocketAddr;
use std::time::Duration;

use etl_core::bus::KafkaSettings;
use etl_core::config::{ConfigError, Env};
use etl_core::db::DatabaseSettings;
use etl_core::telemetry::LogFormat;
use etl_core::traces::TraceSettings;

/// Everything cmd-monitoring reads from the environment; see `.env.example`.
#[derive(Debug, Clone)]
pub struct MonitoringSettings {
    /// `MONITORING_LISTEN_ADDR`: the dashboard, its routes, probes and metrics.
    pub listen_addr: SocketAddr,
    /// `MONITORING_GROUP_ID`: its own consumer group, so it sees every event
    /// without taking any from the processor.
    pub group_id: String,
    /// `READINESS_TIMEOUT_MS`.
    pub readiness_timeout: Duration,
    /// `LOG_FORMAT`: `json` or `pretty`.
    pub log_format: LogFormat,
    /// The `OTEL_*` variables: where and how spans are exported.
    pub traces: TraceSettings,
    /// `TRACES_UI_URL`: a trace's page in the trace backend, `{trace_id}`
    /// standing for the id; a file's answer and the dashboard link to it.
    pub traces_ui_url: Option<String>,
    /// `DATABASE_MIGRATE_ON_START`: apply pending migrations at start-up
    /// (the monitor keeps what it saw in its own tables).
    pub migrate_on_start: bool,
    /// `MONITORING_RETRY_BASE_MS` / `MONITORING_RETRY_MAX_MS`: backoff while
    /// Postgres refuses to store events (offsets wait; nothing is skipped).
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
}

impl MonitoringSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            listen_addr: env.socket_addr("MONITORING_LISTEN_ADDR", "0.0.0.0:8082")?,
            group_id: env.non_empty("MONITORING_GROUP_ID", "etl-monitoring")?,
            readiness_timeout: env.millis("READINESS_TIMEOUT_MS", 2_000)?,
            log_format: env.parse("LOG_FORMAT", LogFormat::Json)?,
            traces: TraceSettings::from_env(env, "cmd-monitoring")?,
            traces_ui_url: traces_ui_url(env)?,
            migrate_on_start: env.bool("DATABASE_MIGRATE_ON_START", false)?,
            retry_base: env.millis("MONITORING_RETRY_BASE_MS", 200)?,
            retry_max: env.millis("MONITORING_RETRY_MAX_MS", 10_000)?,
            database: DatabaseSettings::from_env(env)?,
            kafka: KafkaSettings::from_env(env)?,
        })
    }
}

fn traces_ui_url(env: &Env) -> Result<Option<String>, ConfigError> {
    let url = env.string("TRACES_UI_URL", "");
    match url.trim() {
        "" => Ok(None),
        url if url.contains("{trace_id}") => Ok(Some(url.to_owned())),
        url => Err(ConfigError {
            var: "TRACES_UI_URL".into(),
            problem: format!("= {url:?} has no {{trace_id}} to put the trace's id in"),
        }),
    }
}
