//! Wiring: consumer of every event topic, ops server, shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use prometheus::Registry;
use rdkafka::consumer::StreamConsumer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use etl_core::bus::{self, ConsumerLag};
use etl_core::http::{
    BindError, HttpMetrics, OpsServer, Readiness, bind, forward_shutdown, ops_router, track_http,
};

use crate::settings::MonitoringSettings;
use crate::tail::{self, TailMetrics};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Kafka(#[from] bus::BusError),
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    consumer: Arc<StreamConsumer>,
    metrics: TailMetrics,
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
            Readiness::new(timeout, stopping.clone()).check("kafka", move || {
                bus::consumer_ready(consumer.clone(), timeout)
            })
        };
        let http_metrics = HttpMetrics::new(&registry);
        let metrics = TailMetrics::new(&registry);
        let lag = ConsumerLag::new(&registry);
        let router = ops_router(crate::service_info(), readiness, registry).route_layer(
            axum::middleware::from_fn_with_state(http_metrics, track_http),
        );
        Ok(Self {
            listener,
            router,
            consumer,
            metrics,
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
        self.lag
            .spawn(self.consumer.clone(), self.lag_interval, shutdown.clone());
        tail::run(self.consumer, self.metrics, shutdown).await;
        server.stop().await
    }
}
