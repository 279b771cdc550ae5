use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use etl_core::bus::KafkaSettings;
use etl_core::config::{ConfigError, Env};
use etl_core::dataset::Datasets;
use etl_core::db::DatabaseSettings;
use etl_core::storage::S3Settings;
use etl_core::telemetry::LogFormat;
use etl_core::traces::TraceSettings;

/// Everything cmd-processor reads from the environment; see `.env.example`.
#[derive(Debug, Clone)]
pub struct ProcessorSettings {
    /// `PROCESSOR_LISTEN_ADDR`: probes and metrics.
    pub listen_addr: SocketAddr,
    /// `PROCESSOR_GROUP_ID`: Kafka consumer group.
    pub group_id: String,
    /// `PROCESSOR_CONCURRENCY`: files handled at once (one company's
    /// files always one after another).
    pub concurrency: NonZeroUsize,
    /// `PROCESSOR_RETRY_BASE_MS`: first delay after a transient failure.
    pub retry_base: Duration,
    /// `PROCESSOR_RETRY_MAX_MS`: longest delay between retries.
    pub retry_max: Duration,
    /// `PROCESSOR_STALL_AFTER_MS`: records waiting and nothing committed
    /// for this long makes the processor unready.
    pub stall_after: Duration,
    /// `DATABASE_MIGRATE_ON_START`: apply pending migrations at start-up.
    pub migrate_on_start: bool,
    /// `READINESS_TIMEOUT_MS`.
    pub readiness_timeout: Duration,
    /// `LOG_FORMAT`: `json` or `pretty`.
    pub log_format: LogFormat,
    /// The `OTEL_*` variables: where and how spans are exported.
    pub traces: TraceSettings,
    /// The built-in datasets and those of `DATASETS_DIR`.
    pub datasets: Datasets,
    pub kafka: KafkaSettings,
    pub s3: S3Settings,
    pub database: DatabaseSettings,
}

impl ProcessorSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            listen_addr: env.socket_addr("PROCESSOR_LISTEN_ADDR", "0.0.0.0:8081")?,
            group_id: env.non_empty("PROCESSOR_GROUP_ID", "etl-processor")?,
            concurrency: NonZeroUsize::new(env.parse("PROCESSOR_CONCURRENCY", 64usize)?)
                .ok_or_else(|| ConfigError {
                    var: "PROCESSOR_CONCURRENCY".into(),
                    problem: "must be at least 1".into(),
                })?,
            retry_base: env.millis("PROCESSOR_RETRY_BASE_MS", 200)?,
            retry_max: env.millis("PROCESSOR_RETRY_MAX_MS", 30_000)?,
            stall_after: env.millis("PROCESSOR_STALL_AFTER_MS", 90_000)?,
            migrate_on_start: env.bool("DATABASE_MIGRATE_ON_START", false)?,
            readiness_timeout: env.millis("READINESS_TIMEOUT_MS", 2_000)?,
            log_format: env.parse("LOG_FORMAT", LogFormat::Json)?,
            traces: TraceSettings::from_env(env, "cmd-processor")?,
            datasets: Datasets::from_env(env)?,
            kafka: KafkaSettings::from_env(env)?,
            s3: S3Settings::from_env(env)?,
            database: DatabaseSettings::from_env(env)?,
        })
    }
}
