//! What every service serves besides its own routes: `/liveness`,
//! `/readiness`, `/metrics`, and the HTTP metrics middleware.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::HttpBody;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, join_all};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{encode_text, register};

/// Build metadata shown by `/liveness`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceInfo {
    pub service: &'static str,
    pub version: &'static str,
    pub git_sha: &'static str,
    pub git_branch: &'static str,
    pub build_time: &'static str,
    pub started_at: DateTime<Utc>,
}

/// Git commit, branch and build time embedded by `build.rs` (`unknown`
/// outside a git checkout when not given as build-time variables).
pub const GIT_SHA: &str = env!("ETL_BUILD_GIT_SHA");
pub const GIT_BRANCH: &str = env!("ETL_BUILD_GIT_BRANCH");
pub const BUILD_TIME: &str = env!("ETL_BUILD_TIME_EMBEDDED");

/// The calling crate's [`ServiceInfo`], with the build metadata above.
#[macro_export]
macro_rules! service_info {
    ($service:expr) => {
        $crate::http::ServiceInfo {
            service: $service,
            version: env!("CARGO_PKG_VERSION"),
            git_sha: $crate::http::GIT_SHA,
            git_branch: $crate::http::GIT_BRANCH,
            build_time: $crate::http::BUILD_TIME,
            started_at: ::chrono::Utc::now(),
        }
    };
}

pub type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;
pub type VitalFn = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The dependencies a service needs before it can do useful work, and the
/// states it cannot leave by itself (liveness).
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<(&'static str, CheckFn)>,
    vitals: Vec<(&'static str, VitalFn)>,
    timeout: Duration,
    stopping: CancellationToken,
}

impl Readiness {
    /// `stopping` turns readiness off first thing during shutdown.
    pub fn new(timeout: Duration, stopping: CancellationToken) -> Self {
        Self {
            checks: Vec::new(),
            vitals: Vec::new(),
            timeout,
            stopping,
        }
    }

    /// A state the service cannot heal from in place (a client that stays
    /// broken after every replacement): while `f` fails, `/liveness`
    /// answers 503 and `/readiness` too, so the orchestrator restarts it.
    /// Must be quick: it reads state, asks no one.
    pub fn vital<F>(mut self, name: &'static str, f: F) -> Self
    where
        F: Fn() -> Result<(), String> + Send + Sync + 'static,
    {
        self.vitals.push((name, Arc::new(f)));
        self
    }

    /// The failing vitals, by name.
    fn failing_vitals(&self) -> BTreeMap<&'static str, String> {
        self.vitals
            .iter()
            .filter_map(|(name, vital)| vital().err().map(|e| (*name, e)))
            .collect()
    }

    pub fn check<F, Fut>(mut self, name: &'static str, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((name, Arc::new(move || Box::pin(f()))));
        self
    }

    /// Runs every check concurrently, each bounded by the timeout.
    pub async fn report(&self) -> (bool, serde_json::Value) {
        if self.stopping.is_cancelled() {
            return (false, json!({"status": "shutting_down", "checks": {}}));
        }
        let results = join_all(self.checks.iter().map(|(name, check)| async move {
            let outcome = match tokio::time::timeout(self.timeout, check()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
            };
            (*name, outcome)
        }))
        .await;
        let failing = self.failing_vitals();
        let ready = failing.is_empty() && results.iter().all(|(_, r)| r.is_ok());
        let mut checks: BTreeMap<&str, serde_json::Value> = results
            .into_iter()
            .map(|(name, r)| match r {
                Ok(()) => (name, json!({"ok": true})),
                Err(e) => (name, json!({"ok": false, "error": e})),
            })
            .collect();
        for (name, e) in failing {
            checks.insert(name, json!({"ok": false, "error": e}));
        }
        let status = if ready { "ok" } else { "unavailable" };
        (ready, json!({"status": status, "checks": checks}))
    }
}

#[derive(Clone)]
struct OpsState {
    info: Arc<ServiceInfo>,
    readiness: Readiness,
    registry: Registry,
}

/// The paths of [`ops_router`]: the probes and the metrics scrape.
pub const OPS_PATHS: [&str; 3] = ["/liveness", "/readiness", "/metrics"];

/// `/liveness`, `/readiness` and `/metrics`.
pub fn ops_router(info: ServiceInfo, readiness: Readiness, registry: Registry) -> Router {
    // Every service exports spans the same way, so its counters are here.
    crate::traces::register_metrics(&registry);
    let [live, ready, scrape] = OPS_PATHS;
    Router::new()
        .route(live, get(liveness))
        .route(ready, get(readiness_handler))
        .route(scrape, get(metrics))
        .with_state(OpsState {
            info: Arc::new(info),
            readiness,
            registry,
        })
}

/// 200 while the process can still heal itself; 503 naming what it
/// cannot recover from (then only a restart helps).
async fn liveness(State(s): State<OpsState>) -> Response {
    let mut body = serde_json::to_value(&*s.info).unwrap_or_default();
    let failing = s.readiness.failing_vitals();
    if failing.is_empty() {
        body["status"] = json!("ok");
        return Json(body).into_response();
    }
    body["status"] = json!("failing");
    body["checks"] = failing
        .into_iter()
        .map(|(name, e)| (name.to_owned(), json!({"ok": false, "error": e})))
        .collect();
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn readiness_handler(State(s): State<OpsState>) -> Response {
    let (ready, body) = s.readiness.report().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(s): State<OpsState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        encode_text(&s.registry),
    )
        .into_response()
}

/// Request count, latency, in-flight gauge and body sizes per route.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    in_flight: IntGauge,
    request_size: HistogramVec,
    response_size: HistogramVec,
}

/// 100 B to 1 GiB in powers of 8.
fn size_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(100.0, 8.0, 10).expect("valid buckets")
}

/// Decrements the in-flight gauge even when the client goes away and the
/// request future is dropped.
struct InFlight(IntGauge);

impl InFlight {
    fn enter(gauge: &IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl HttpMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "http_requests_total",
                        "HTTP requests by route and status class.",
                    ),
                    &["method", "route", "status"],
                )
                .expect("valid counter"),
            ),
            duration: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new("http_request_duration_seconds", "HTTP request latency."),
                    &["method", "route"],
                )
                .expect("valid histogram"),
            ),
            in_flight: register(
                registry,
                IntGauge::new("http_requests_in_flight", "HTTP requests being served.")
                    .expect("valid gauge"),
            ),
            request_size: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "http_request_size_bytes",
                        "Declared (Content-Length) size of request bodies.",
                    )
                    .buckets(size_buckets()),
                    &["method", "route"],
                )
                .expect("valid histogram"),
            ),
            response_size: register(
                registry,
                HistogramVec::new(
                    HistogramOpts::new("http_response_size_bytes", "Size of response bodies.")
                        .buckets(size_buckets()),
                    &["method", "route"],
                )
                .expect("valid histogram"),
            ),
        }
    }
}

/// Middleware for `Router::route_layer` (which makes `MatchedPath` available).
pub async fn track_http(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    if let Some(size) = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<f64>().ok())
    {
        m.request_size
            .with_label_values(&[&method, &route])
            .observe(size);
    }
    let started = Instant::now();
    let in_flight = InFlight::enter(&m.in_flight);
    let response = next.run(req).await;
    drop(in_flight);
    if let Some(size) = response.body().size_hint().exact() {
        m.response_size
            .with_label_values(&[&method, &route])
            .observe(size as f64);
    }
    let class = format!("{}xx", response.status().as_u16() / 100);
    m.requests
        .with_label_values(&[&method, &route, &class])
        .inc();
    m.duration
        .with_label_values(&[&method, &route])
        .observe(started.elapsed().as_secs_f64());
    response
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: std::net::SocketAddr,
    pub source: std::io::Error,
}

/// Binds a service's listen address.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// The ops endpoints of a worker service (processor, monitoring), served in
/// the background while the service's loop runs in the foreground.
pub struct OpsServer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl OpsServer {
    pub fn spawn(listener: TcpListener, router: Router) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            router,
            stop.clone(),
            DEFAULT_HEADER_TIMEOUT,
        ));
        Self { stop, task }
    }

    /// Stops serving after in-flight requests are answered.
    pub async fn stop(self) -> std::io::Result<()> {
        self.stop.cancel();
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Cancels `stopping` (readiness turns 503) as soon as `shutdown` is.
pub fn forward_shutdown(shutdown: &CancellationToken, stopping: &CancellationToken) {
    let (shutdown, stopping) = (shutdown.clone(), stopping.clone());
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopping.cancel();
    });
}

/// Longest a client may take to send a request's headers before its
/// connection is closed; without it a client sending one byte a second
/// holds a connection (and a task) forever.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` (HTTP/1.1) until `shutdown` is cancelled, then lets
/// in-flight requests finish. `header_timeout` bounds how long a client may
/// take to send its headers, which `axum::serve` does not.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    header_timeout: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = connections.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_reports_each_check_and_turns_off_first_at_shutdown() {
        let stopping = CancellationToken::new();
        let readiness = Readiness::new(Duration::from_millis(100), stopping.clone())
            .check("fine", || async { Ok(()) })
            .check("slow", || async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            });
        let (ready, report) = readiness.report().await;
        assert!(!ready);
        assert_eq!(report["checks"]["fine"]["ok"], true);
        assert_eq!(report["checks"]["slow"]["error"], "no answer within 100 ms");

        let ready_one = Readiness::new(Duration::from_millis(100), stopping.clone())
            .check("fine", || async { Ok(()) });
        assert!(ready_one.report().await.0);
        stopping.cancel();
        let (ready, report) = ready_one.report().await;
        assert!(!ready, "dependencies are fine, but the service is stopping");
        assert_eq!(report["status"], "shutting_down");
    }
}
