//! Logging: one JSON object per line by default, `LOG_FORMAT=pretty` for
//! humans, level from `RUST_LOG` (default `info`); and the spans, when
//! traces are on (see [`crate::traces`]).

use opentelemetry_sdk::trace::SdkTracer;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::traces::{TraceSettings, Traces, TracesError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("{other:?} is neither json nor pretty")),
        }
    }
}

/// Logging and, when configured, traces; [`Telemetry::shutdown`] posts
/// the spans still queued.
pub struct Telemetry {
    traces: Option<Traces>,
}

impl Telemetry {
    /// Starts the trace exporter (if an endpoint is set) and installs the
    /// global subscriber. Needs a tokio runtime.
    pub fn start(format: LogFormat, traces: &TraceSettings) -> Result<Self, TracesError> {
        let (traces, tracer) = Traces::start(traces)?.unzip();
        init(format, tracer);
        Ok(Self { traces })
    }

    pub async fn shutdown(self) {
        if let Some(traces) = self.traces {
            traces.shutdown(TRACES_DRAIN).await;
        }
    }
}

/// How long a stopping service waits for its last spans to be posted.
const TRACES_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Installs the global subscriber: the log lines, and the spans for
/// `tracer` when there is one. Safe to call more than once (tests): later
/// calls are ignored.
pub fn init(format: LogFormat, tracer: Option<SdkTracer>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let spans = tracer.map(|t| {
        // Each of these costs every span an allocation, or every poll of an
        // instrumented future clock reads and a context attached, for
        // attributes a span's name and kind already say or a context our
        // code never reads (it asks a span for its own); on the processor's
        // hot path they were a measurable share of its CPU
        // (docs/performance.md).
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
    });
    let logs = tracing_subscriber::fmt::layer().with_span_events(FmtSpan::NONE);
    let subscriber = tracing_subscriber::registry().with(filter).with(spans);
    let _ = match format {
        LogFormat::Json => subscriber
            .with(
                logs.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => subscriber.with(logs.pretty()).try_init(),
    };
}

/// Records several of `span`'s declared fields in one call. The JSON log
/// format keeps a span's fields as a JSON string and parses and rewrites
/// it on every record, so fields learnt together are recorded together.
/// Every name must be declared by the span (debug builds check it; release
/// builds then record nothing).
pub fn record_fields<const N: usize>(
    span: &tracing::Span,
    values: [(&str, &dyn tracing::Value); N],
) {
    let Some(meta) = span.metadata() else {
        return;
    };
    let declared = meta.fields();
    let fields = values.map(|(name, _)| declared.field(name));
    if fields.iter().any(Option::is_none) {
        debug_assert!(
            false,
            "a field recorded on span {} is not declared",
            meta.name()
        );
        return;
    }
    let fields = fields.map(Option::unwrap);
    let pairs: [(&tracing::field::Field, Option<&dyn tracing::Value>); N] =
        std::array::from_fn(|i| (&fields[i], Some(values[i].1)));
    span.record_all(&declared.value_set(&pairs));
}
