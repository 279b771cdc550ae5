//! Wiring: dependencies, the consumer, the ops server, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use prometheus::Registry;
use rdkafka::consumer::{Consumer, StreamConsumer};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use etl_core::bus::{self, EventPublisher};
use etl_core::http::{HttpMetrics, Readiness, ops_router, serve, track_http};
use etl_core::metrics::DependencyTimer;
use etl_core::storage::ObjectStore;

use crate::company::CompanyValidator;
use crate::metrics::ProcessorMetrics;
use crate::settings::ProcessorSettings;
use crate::worker::Worker;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Kafka(#[from] bus::BusError),
    #[error("invalid database settings: {0}")]
    Database(#[source] sqlx::Error),
    #[error("applying migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    worker: Worker,
    publisher: EventPublisher,
    stopping: CancellationToken,
}

impl Application {
    /// Binds `PROCESSOR_LISTEN_ADDR`.
    pub async fn build(settings: ProcessorSettings) -> Result<Self, StartupError> {
        let addr = settings.listen_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
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
        let store = ObjectStore::new(&settings.s3, timer.clone());
        let publisher = EventPublisher::new(&settings.kafka, timer)?;
        let topics = settings.kafka.topics();
        {
            let kafka = settings.kafka.clone();
            etl_core::provision("topics", move || {
                let kafka = kafka.clone();
                async move {
                    let t = kafka.topics();
                    bus::ensure_topics(&kafka, &t.all())
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await;
        }
        let consumer: Arc<StreamConsumer> =
            Arc::new(bus::consumer(&settings.kafka, &settings.group_id)?);
        consumer
            .subscribe(&[topics.file_extract_success.as_str()])
            .map_err(bus::BusError::Setup)?;

        let stopping = CancellationToken::new();
        let readiness = readiness(&settings, &pool, &store, &consumer, stopping.clone());
        let http_metrics = HttpMetrics::new(&registry);
        let worker = Worker {
            consumer,
            pool,
            store,
            publisher: publisher.clone(),
            validator: Arc::new(CompanyValidator::new()),
            metrics: ProcessorMetrics::new(&registry),
            retry_base: settings.retry_base,
            retry_max: settings.retry_max,
        };
        let router = ops_router(crate::service_info(), readiness, registry).route_layer(
            axum::middleware::from_fn_with_state(http_metrics, track_http),
        );
        Ok(Self {
            listener,
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
        let server_stop = CancellationToken::new();
        let server = tokio::spawn(serve(self.listener, self.router, server_stop.clone()));
        let stopping = self.stopping.clone();
        let worker_stop = shutdown.child_token();
        tokio::spawn({
            let worker_stop = worker_stop.clone();
            async move {
                worker_stop.cancelled().await;
                stopping.cancel();
            }
        });
        self.worker.run(worker_stop).await;
        let publisher = self.publisher;
        tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(5)))
            .await
            .ok();
        server_stop.cancel();
        server.await.unwrap_or(Ok(()))
    }
}

fn readiness(
    settings: &ProcessorSettings,
    pool: &PgPool,
    store: &ObjectStore,
    consumer: &Arc<StreamConsumer>,
    stopping: CancellationToken,
) -> Readiness {
    let timeout = settings.readiness_timeout;
    let (pool, store, consumer) = (pool.clone(), store.clone(), consumer.clone());
    Readiness::new(timeout, stopping)
        .check("kafka", move || {
            let consumer = consumer.clone();
            async move {
                bus::metadata_ok(move || consumer.fetch_metadata(None, timeout).map(|_| ()))
                    .await
                    .map_err(|e| e.to_string())
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
