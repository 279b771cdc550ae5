//! Wiring: dependencies, the consumer, the ops server, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use prometheus::Registry;
use rdkafka::consumer::StreamConsumer;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use etl_core::bus::{self, ConsumerLag, EventPublisher, WaitingRecords};
use etl_core::http::{
    BindError, HttpMetrics, OpsServer, Readiness, bind, forward_shutdown, ops_router, track_http,
};
use etl_core::metrics::DependencyTimer;
use etl_core::storage::ObjectStore;

use crate::catalog::{Catalog, TablesError};
use crate::consume::Worker;
use crate::loader::Loader;
use crate::metrics::ProcessorMetrics;
use crate::process_file::FileProcessor;
use crate::progress::Progress;
use crate::settings::ProcessorSettings;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Kafka(#[from] bus::BusError),
    #[error("invalid database settings: {0}")]
    Database(#[source] sqlx::Error),
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the datasets do not fit the database: {0}")]
    Tables(String),
    #[error("a dataset cannot be used: {0}")]
    Datasets(String),
}

pub struct Application {
    listener: TcpListener,
    lag: ConsumerLag,
    lag_interval: Duration,
    router: Router,
    worker: Worker,
    publisher: EventPublisher,
    stopping: CancellationToken,
}

impl Application {
    /// Binds `PROCESSOR_LISTEN_ADDR`.
    pub async fn build(settings: ProcessorSettings) -> Result<Self, StartupError> {
        let listener = bind(settings.listen_addr).await?;
        Self::build_with_listener(settings, listener).await
    }

    /// Uses a listener bound by the caller (tests bind port 0).
    pub async fn build_with_listener(
        settings: ProcessorSettings,
        listener: TcpListener,
    ) -> Result<Self, StartupError> {
        let registry = Registry::new();
        let timer = DependencyTimer::new(&registry);
        let pool = etl_core::db::pool(&settings.database).map_err(StartupError::Database)?;
        if settings.migrate_on_start {
            etl_core::db::migrate(&pool).await?;
        }
        let catalog = Catalog::new(&settings.datasets).map_err(StartupError::Datasets)?;
        check_tables(&catalog, &pool, settings.readiness_timeout).await?;
        let store = ObjectStore::new(&settings.s3, timer.clone());
        let publisher = EventPublisher::new(&settings.kafka, &registry, timer.clone())?;
        let topics = settings.kafka.topics();
        bus::provision_topics(&settings.kafka).await;
        let consumer = Arc::new(bus::consumer(
            &settings.kafka,
            &settings.group_id,
            &[&topics.file_extract_success],
        )?);

        let stopping = CancellationToken::new();
        let lag = ConsumerLag::new(&registry);
        let progress = Progress::new(settings.stall_after);
        let readiness = readiness(
            &settings,
            &pool,
            &store,
            (&consumer, &publisher),
            (&progress, lag.waiting()),
            stopping.clone(),
        );
        let http_metrics = HttpMetrics::new(&registry);
        let metrics = ProcessorMetrics::new(&registry);
        // A transaction takes at most one file from each lane.
        let loader = Loader::spawn(
            pool.clone(),
            timer.clone(),
            metrics.files_per_transaction(),
            settings.concurrency.get(),
        );
        let files = FileProcessor::new(catalog, pool, store, loader, metrics.clone(), timer);
        let worker = Worker::new(
            consumer,
            files,
            publisher.clone(),
            metrics,
            progress,
            &settings,
        );
        let router = ops_router(crate::service_info(), readiness, registry).route_layer(
            axum::middleware::from_fn_with_state(http_metrics, track_http),
        );
        Ok(Self {
            listener,
            lag,
            lag_interval: settings.kafka.lag_interval,
            router,
            worker,
            publisher,
            stopping,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Consumes until `shutdown` is cancelled: readiness turns 503 at once,
    /// the file in hand is finished and committed, the group is left, the
    /// producer flushed.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let server = OpsServer::spawn(self.listener, self.router);
        forward_shutdown(&shutdown, &self.stopping);
        self.lag.spawn(
            self.worker.consumer().clone(),
            self.lag_interval,
            shutdown.clone(),
        );
        let consumer = self.worker.consumer().clone();
        self.worker.run(shutdown).await;
        bus::release_consumer(consumer);
        let publisher = self.publisher;
        tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(5)))
            .await
            .ok();
        server.stop().await
    }
}

fn readiness(
    settings: &ProcessorSettings,
    pool: &PgPool,
    store: &ObjectStore,
    (consumer, publisher): (&Arc<StreamConsumer>, &EventPublisher),
    (progress, waiting): (&Progress, WaitingRecords),
    stopping: CancellationToken,
) -> Readiness {
    let timeout = settings.readiness_timeout;
    let (pool, store, progress) = (pool.clone(), store.clone(), progress.clone());
    let (consumer, publisher) = (consumer.clone(), publisher.clone());
    let (alive_consumer, alive_publisher) = (consumer.clone(), publisher.clone());
    Readiness::new(timeout, stopping)
        .vital("kafka-producer", move || alive_publisher.alive())
        .vital("kafka-consumer", move || {
            bus::consumer_alive(&alive_consumer)
        })
        .check("progress", move || {
            let stalled = progress.check(&waiting, std::time::Instant::now());
            async move { stalled }
        })
        // It reads files' events and writes their outcomes: both must work.
        // Asked together, so that a producer's fatal state (read at once)
        // is not missed while the consumer's metadata round trip runs.
        .check("kafka", move || {
            let (consumer, publisher) = (consumer.clone(), publisher.clone());
            async move {
                let (consumer, producer) = tokio::join!(
                    bus::consumer_ready(consumer, timeout),
                    publisher.check(timeout)
                );
                consumer?;
                producer.map_err(|e| e.to_string())
            }
        })
        .check("s3", move || {
            let store = store.clone();
            async move { store.check().await.map_err(|e| e.to_string()) }
        })
        .check("postgres", move || {
            let pool = pool.clone();
            async move { etl_core::db::check(&pool, timeout).await }
        })
}

/// Refuses to start when a dataset's mapping does not fit the tables. A
/// database that does not answer yet is not a reason to stay down (the
/// processor waits for it like for any dependency): then the check is
/// skipped, and a mismatch shows as files the database refuses.
async fn check_tables(
    catalog: &Catalog,
    pool: &sqlx::PgPool,
    timeout: std::time::Duration,
) -> Result<(), StartupError> {
    match tokio::time::timeout(timeout, catalog.check_tables(pool)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(TablesError::Mismatch(problems))) => Err(StartupError::Tables(problems)),
        Ok(Err(TablesError::Database(e))) => {
            tracing::warn!(error = %e, "the datasets were not checked against the tables: the database did not answer");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(
                "the datasets were not checked against the tables: the database did not answer in time"
            );
            Ok(())
        }
    }
}
