//! Wiring: consumer of every event topic, ops server, shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use prometheus::Registry;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use etl_core::bus;
use etl_core::http::{HttpMetrics, Readiness, ops_router, serve, track_http};

use crate::settings::MonitoringSettings;
use crate::tail::{self, TailMetrics};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Kafka(#[from] bus::BusError),
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    consumer: Arc<StreamConsumer>,
    metrics: TailMetrics,
    stopping: CancellationToken,
}

impl Application {
    pub async fn build(settings: MonitoringSettings) -> Result<Self, StartupError> {
        let addr = settings.listen_addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        Self::build_with_listener(settings, listener).await
    }

    pub async fn build_with_listener(
        settings: MonitoringSettings,
        listener: TcpListener,
    ) -> Result<Self, StartupError> {
        let registry = Registry::new();
        {
            let kafka = settings.kafka.clone();
            etl_core::provision("topics", move || {
                let kafka = kafka.clone();
                async move {
                    bus::ensure_topics(&kafka, &kafka.topics().all())
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await;
        }
        let consumer = Arc::new(bus::consumer(&settings.kafka, &settings.group_id)?);
        let topics = settings.kafka.topics();
        consumer
            .subscribe(&topics.all())
            .map_err(bus::BusError::Setup)?;

        let stopping = CancellationToken::new();
        let timeout = settings.readiness_timeout;
        let readiness = {
            let consumer = consumer.clone();
            Readiness::new(timeout, stopping.clone()).check("kafka", move || {
                let consumer = consumer.clone();
                async move {
                    bus::metadata_ok(move || consumer.fetch_metadata(None, timeout).map(|_| ()))
                        .await
                        .map_err(|e| e.to_string())
                }
            })
        };
        let http_metrics = HttpMetrics::new(&registry);
        let metrics = TailMetrics::new(&registry);
        let router = ops_router(crate::service_info(), readiness, registry).route_layer(
            axum::middleware::from_fn_with_state(http_metrics, track_http),
        );
        Ok(Self {
            listener,
            router,
            consumer,
            metrics,
            stopping,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let server_stop = CancellationToken::new();
        let server = tokio::spawn(serve(self.listener, self.router, server_stop.clone()));
        let tail_stop = shutdown.child_token();
        let stopping = self.stopping.clone();
        tokio::spawn({
            let tail_stop = tail_stop.clone();
            async move {
                tail_stop.cancelled().await;
                stopping.cancel();
            }
        });
        tail::run(self.consumer, self.metrics, tail_stop).await;
        server_stop.cancel();
        server.await.unwrap_or(Ok(()))
    }
}
