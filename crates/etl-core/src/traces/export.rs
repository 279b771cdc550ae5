//! Getting spans out without ever holding up the pipeline: a span that
//! ends goes into a bounded queue (or is dropped and counted when it is
//! full), and one task posts the queue in batches.

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter as _, SpanProcessor,
};
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::{mpsc, oneshot};

use super::TraceSettings;
use super::sampler::OpsLeftOut;

static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "traces_spans_dropped_total",
            "Spans not exported, by reason: queue_full (the exporter fell behind) or export_failed (the collector did not take them).",
        ),
        &["reason"],
    )
    .expect("valid counter")
});

/// Adds the exporter's counters to a service's registry (the exporter is
/// one per process, the registries one per service).
pub fn register_metrics(registry: &Registry) {
    for reason in ["queue_full", "export_failed"] {
        DROPPED.with_label_values(&[reason]);
    }
    let _ = registry.register(Box::new(DROPPED.clone()));
}

/// Why spans cannot be exported as configured.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    #[error("cannot build the OTLP HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("cannot build the OTLP exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// The running exporter; [`Traces::shutdown`] posts what is still queued.
pub struct Traces {
    provider: SdkTracerProvider,
    drained: oneshot::Receiver<()>,
}

impl Traces {
    /// Starts exporting (on the current tokio runtime); `None` when traces
    /// are off.
    pub fn start(settings: &TraceSettings) -> Result<Option<(Self, SdkTracer)>, TracesError> {
        let Some(endpoint) = &settings.endpoint else {
            return Ok(None);
        };
        let http = reqwest::Client::builder()
            .timeout(settings.export_timeout)
            .build()
            .map_err(TracesError::Client)?;
        let mut exporter = SpanExporter::builder()
            .with_http()
            .with_http_client(OtlpClient(http))
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(settings.export_timeout)
            .build()
            .map_err(TracesError::Exporter)?;
        let resource = Resource::builder_empty()
            .with_service_name(settings.service_name.clone())
            .build();
        exporter.set_resource(&resource);
        let (spans, queue) = mpsc::channel(settings.max_queue.max(1));
        let (drained_tx, drained) = oneshot::channel();
        tokio::spawn(post_batches(queue, exporter, settings.clone(), drained_tx));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(QueueProcessor {
                spans: Mutex::new(Some(spans)),
            })
            .with_sampler(OpsLeftOut(settings.sampler.sampler()))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer(settings.service_name.clone());
        Ok(Some((Self { provider, drained }, tracer)))
    }

    /// Closes the queue and waits up to `timeout` for it to be posted.
    pub async fn shutdown(self, timeout: Duration) {
        let _ = self.provider.shutdown();
        let _ = tokio::time::timeout(timeout, self.drained).await;
    }
}

/// Posts batches of at most `max_batch` spans, at least every
/// `schedule_delay` while spans wait; the rest once the queue closes.
async fn post_batches(
    mut queue: mpsc::Receiver<SpanData>,
    exporter: SpanExporter,
    settings: TraceSettings,
    drained: oneshot::Sender<()>,
) {
    let mut batch = Vec::with_capacity(settings.max_batch);
    let mut tick = tokio::time::interval(settings.schedule_delay);
    let mut open = true;
    while open {
        let room = settings.max_batch - batch.len();
        tokio::select! {
            n = queue.recv_many(&mut batch, room) => {
                open = n > 0;
                if open && batch.len() < settings.max_batch {
                    continue;
                }
            }
            _ = tick.tick() => {}
        }
        if batch.is_empty() {
            continue;
        }
        let spans = std::mem::replace(&mut batch, Vec::with_capacity(settings.max_batch));
        let n = spans.len() as u64;
        if let Err(e) = exporter.export(spans).await {
            DROPPED.with_label_values(&["export_failed"]).inc_by(n);
            tracing::debug!(error = %e, spans = n, "spans not exported");
        }
    }
    let _ = drained.send(());
}

/// Hands ended, sampled spans to the queue without waiting.
#[derive(Debug)]
struct QueueProcessor {
    /// `None` once shut down.
    spans: Mutex<Option<mpsc::Sender<SpanData>>>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let guard = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(spans) = guard.as_ref()
            && spans.try_send(span).is_err()
        {
            DROPPED.with_label_values(&["queue_full"]).inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        let closed = self.spans.lock().unwrap_or_else(|e| e.into_inner()).take();
        match closed {
            Some(_) => Ok(()),
            None => Err(OTelSdkError::AlreadyShutdown),
        }
    }
}

/// OTLP over the reqwest the services already use for S3.
#[derive(Debug)]
struct OtlpClient(reqwest::Client);

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let response = self.0.execute(request).await?.error_for_status()?;
        let mut answer = Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            *headers = response.headers().clone();
        }
        Ok(answer.body(response.bytes().await?)?)
    }
}
