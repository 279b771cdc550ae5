//! Prometheus metrics. Each service instance owns its own `Registry` (never
//! the global one) so that several instances can run in one test process.

use std::future::Future;
use std::time::Instant;

use prometheus::{Encoder, HistogramOpts, HistogramVec, Registry, TextEncoder};

/// Latency buckets for calls to S3, Kafka and Postgres on a LAN: 1 ms to 10 s.
const DEPENDENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Registers a metric, panicking only on a programming error (a duplicate
/// name or invalid label set), which tests catch immediately.
pub fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique and valid");
    metric
}

/// Times calls to a dependency: `dependency_request_duration_seconds`.
#[derive(Clone)]
pub struct DependencyTimer {
    histogram: HistogramVec,
}

impl DependencyTimer {
    pub fn new(registry: &Registry) -> Self {
        let histogram = HistogramVec::new(
            HistogramOpts::new(
                "dependency_request_duration_seconds",
                "Duration of calls to S3, Kafka and Postgres.",
            )
            .buckets(DEPENDENCY_BUCKETS.to_vec()),
            &["dependency", "operation", "outcome"],
        )
        .expect("valid histogram");
        Self {
            histogram: register(registry, histogram),
        }
    }

    pub fn observe(&self, dependency: &str, operation: &str, started: Instant, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.histogram
            .with_label_values(&[dependency, operation, outcome])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Awaits `call` and observes its duration and outcome.
    pub async fn time<T, E>(
        &self,
        dependency: &str,
        operation: &str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = call.await;
        self.observe(dependency, operation, started, result.is_ok());
        result
    }
}

pub fn encode_text(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding gathered families into a Vec cannot fail.
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("text encoding");
    String::from_utf8(buf).unwrap_or_default()
}
