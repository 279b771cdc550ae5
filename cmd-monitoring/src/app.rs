//! Wiring: consumer of every event topic, its store, the routes, shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use etl_core::bus::{self, ConsumerLag};
use etl_core::http::{
    BindError, HttpMetrics, OpsServer, Readiness, bind, forward_shutdown, ops_router, track_http,
};

use crate::settings::MonitoringSettings;
use crate::store::Store;
use crate::tail::{Tail, TailMetrics, feed};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Kafka(#[from] bus::BusError),
    #[error("invalid database settings: {0}")]
    Database(sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    tail: Tail,
    lag: ConsumerLag,
    lag_interval: Duration,
    stopping: CancellationToken,
}

impl Application {
    pub async fn build(settings: MonitoringSettings) -> Result<Self, StartupError> {
        let listener = bind(settings.listen_addr).await?;
        Self::build_with_listener(settings, listener).await
    }

    pub async fn build_with_listener(
        settings: MonitoringSettings,
        listener: TcpListener,
    ) -> Result<Self, StartupError> {
        let registry = Registry::new();
        let pool = etl_core::db::pool(&settings.database).map_err(StartupError::Database)?;
        if settings.migrate_on_start {
            etl_core::db::migrate(&pool).await?;
        }
        bus::provision_topics(&settings.kafka).await;
        let topics = settings.kafka.topics();
        let consumer = Arc::new(bus::consumer(
            &settings.kafka,
            &settings.group_id,
            &topics.all(),
        )?);

        let stopping = CancellationToken::new();
        let timeout = settings.readiness_timeout;
        let readiness = {
            let consumer = consumer.clone();
            let alive = consumer.clone();
            let pool = pool.clone();
            Readiness::new(timeout, stopping.clone())
                .vital("kafka-consumer", move || bus::consumer_alive(&alive))
                .check("postgres", move || {
                    let pool = pool.clone();
                    async move { etl_core::db::check(&pool, timeout).await }
                })
                .check("kafka", move || {
                    bus::consumer_ready(consumer.clone(), timeout)
                })
        };
        let http_metrics = HttpMetrics::new(&registry);
        let store = Store::new(pool);
        let feed = feed();
        let tail = Tail {
            consumer,
            store: store.clone(),
            metrics: TailMetrics::new(&registry),
            feed: feed.clone(),
            retry_base: settings.retry_base,
            retry_max: settings.retry_max,
        };
        let lag = ConsumerLag::new(&registry);
        let router = ops_router(crate::service_info(), readiness, registry)
            .merge(crate::routes::router(
                store,
                feed,
                settings.traces_ui_url.clone(),
                stopping.clone(),
            ))
            .route_layer(axum::middleware::from_fn_with_state(
                http_metrics,
                track_http,
            ));
        Ok(Self {
            listener,
            router,
            tail,
            lag,
            lag_interval: settings.kafka.lag_interval,
            stopping,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Tails until `shutdown` is cancelled; readiness turns 503 at once.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let server = OpsServer::spawn(self.listener, self.router);
        forward_shutdown(&shutdown, &self.stopping);
        self.lag.spawn(
            self.tail.consumer.clone(),
            self.lag_interval,
            shutdown.clone(),
        );
        let consumer = self.tail.consumer.clone();
        self.tail.run(shutdown).await;
        bus::release_consumer(consumer);
        server.stop().await
    }
}
