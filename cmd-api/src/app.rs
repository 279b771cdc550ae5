//! Wiring: state, routes, start-up provisioning, serving and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use etl_core::bus::{self, EventPublisher};
use etl_core::http::{
    BindError, HttpMetrics, Readiness, bind, forward_shutdown, ops_router, serve, track_http,
};
use etl_core::metrics::DependencyTimer;
use etl_core::storage::ObjectStore;

use crate::error::ApiError;
use crate::idempotency::Idempotency;
use crate::limit::{ImportSlots, take_slot};
use crate::linger::{Linger, linger};
use crate::metrics::ImportMetrics;
use crate::settings::ApiSettings;
use crate::state::AppState;
use crate::{import, request_id};

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
    publisher: EventPublisher,
    stopping: CancellationToken,
    header_timeout: Duration,
}

impl Application {
    /// Binds `API_LISTEN_ADDR`.
    pub async fn build(settings: ApiSettings) -> Result<Self, StartupError> {
        let listener = bind(settings.listen_addr).await?;
        Self::build_with_listener(settings, listener).await
    }

    /// Uses a listener bound by the caller (tests bind port 0).
    pub async fn build_with_listener(
        settings: ApiSettings,
        listener: TcpListener,
    ) -> Result<Self, StartupError> {
        let registry = Registry::new();
        let timer = DependencyTimer::new(&registry);
        let store = ObjectStore::new(&settings.s3, timer.clone());
        let publisher = EventPublisher::new(&settings.kafka, &registry, timer)?;
        provision(&settings, &store).await;

        let stopping = CancellationToken::new();
        let readiness = {
            let (store, publisher) = (store.clone(), publisher.clone());
            let alive = publisher.clone();
            let timeout = settings.readiness_timeout;
            Readiness::new(timeout, stopping.clone())
                .vital("kafka-producer", move || alive.alive())
                .check("s3", move || {
                    let store = store.clone();
                    async move { store.check().await.map_err(|e| e.to_string()) }
                })
                .check("kafka", move || {
                    let publisher = publisher.clone();
                    async move { publisher.check(timeout).await.map_err(|e| e.to_string()) }
                })
        };
        let keys = crate::auth::ApiKeys::new(&settings.api_keys);
        let metrics = ImportMetrics::new(&registry);
        let slots = ImportSlots::new(
            settings.max_concurrent_imports,
            settings.slot_wait,
            metrics.clone(),
            settings.datasets.clone(),
        );
        let header_timeout = settings.header_timeout;
        let refused_bodies = Linger {
            max_bytes: settings.max_body_bytes as u64,
            stopping: stopping.clone(),
        };
        let datasets = settings.datasets.clone();
        let state = AppState {
            settings: Arc::new(settings),
            store,
            publisher: publisher.clone(),
            metrics,
            idempotency: Idempotency::default(),
        };
        let http_metrics = HttpMetrics::new(&registry);
        let router = Router::new()
            .route("/import/{dataset}", post(import::import_dataset))
            .route_layer(axum::middleware::from_fn_with_state(slots, take_slot))
            .route_layer(axum::middleware::from_fn_with_state(
                keys,
                crate::auth::require_key,
            ))
            .with_state(state)
            .merge(ops_router(crate::service_info(), readiness, registry))
            .merge(crate::docs::router())
            .merge(crate::datasets::router(datasets))
            .route_layer(axum::middleware::from_fn_with_state(
                http_metrics,
                track_http,
            ))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(refused_bodies, linger))
            .layer(axum::middleware::from_fn(request_id::assign));
        Ok(Self {
            listener,
            router,
            publisher,
            stopping,
            header_timeout,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled: readiness turns 503 at once,
    /// in-flight imports get the grace period, then the producer is flushed.
    pub async fn run_until_stopped(
        self,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> std::io::Result<()> {
        // Serving stops on `stopping`, which is what turns readiness 503:
        // the probe can never see a stopping server as ready.
        forward_shutdown(&shutdown, &self.stopping);
        let stopping = self.stopping.clone();
        let server = serve(
            self.listener,
            self.router,
            stopping.clone(),
            self.header_timeout,
        );
        let result = tokio::select! {
            r = server => r,
            () = async { stopping.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "in-flight requests outlived the grace period");
                Ok(())
            }
        };
        let publisher = self.publisher;
        tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(5)))
            .await
            .ok();
        result
    }
}

/// Creates the bucket and topics if missing.
async fn provision(settings: &ApiSettings, store: &ObjectStore) {
    let bucket_store = store.clone();
    etl_core::provision("bucket", move || {
        let store = bucket_store.clone();
        async move { store.ensure_bucket().await.map_err(|e| e.to_string()) }
    })
    .await;
    bus::provision_topics(&settings.kafka).await;
}

async fn not_found(req: Request) -> Response {
    let id = request_id::of(&req);
    ApiError::NotFound(format!("{} {}", req.method(), req.uri().path()))
        .with_request_id(id)
        .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    let id = request_id::of(&req);
    let method: &Method = req.method();
    ApiError::MethodNotAllowed(method.to_string())
        .with_request_id(id)
        .into_response()
}
