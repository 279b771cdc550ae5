//! Distributed traces: the services' `tracing` spans exported as
//! OpenTelemetry spans over OTLP/HTTP (protobuf), configured by the
//! standard `OTEL_*` variables and off unless an endpoint is set. The
//! trace context crosses HTTP and Kafka as W3C `traceparent` (and
//! `tracestate`) headers, so one file's spans in every service share one
//! trace id.

mod export;
mod sampler;
mod settings;

pub use export::{Traces, TracesError, register_metrics};
pub use settings::{SamplerSetting, TraceSettings};

use std::collections::BTreeMap;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace-context headers of `span`, for an outgoing message:
/// nothing when traces are off (the span has no context).
pub fn headers_of(span: &tracing::Span) -> Vec<(&'static str, String)> {
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.0
}

/// The span of handling one consumed Kafka record (`$message`, an
/// `rdkafka::Message`): a consumer span named `$name` with the messaging
/// semantic-convention attributes, empty `trace_id` and `span_id` for
/// [`continue_from`] to fill, and the caller's own fields after them.
#[macro_export]
macro_rules! consumer_span {
    ($name:literal, $message:expr, $($fields:tt)+) => {{
        use $crate::traces::__macro_support::Message as _;
        let message = &$message;
        $crate::traces::__macro_support::tracing::info_span!(
            $name,
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = message.topic(),
            messaging.destination.partition.id = message.partition(),
            messaging.kafka.offset = message.offset(),
            trace_id = $crate::traces::__macro_support::tracing::field::Empty,
            span_id = $crate::traces::__macro_support::tracing::field::Empty,
            $($fields)+
        )
    }};
}

#[doc(hidden)]
pub mod __macro_support {
    pub use rdkafka::Message;
    pub use tracing;
}

/// Makes the context in `headers` (an HTTP request's, a Kafka record's;
/// all of them: only `traceparent` and `tracestate` are read, in any case)
/// the parent of `span`, and puts the trace id on it for the log lines
/// inside it. Headers without a valid `traceparent` leave the span a root.
/// Returns the headers' trace id (in hex), whether or not this service
/// exports spans.
pub fn continue_from<'h>(
    span: &tracing::Span,
    headers: impl IntoIterator<Item = (&'h str, &'h str)>,
) -> Option<String> {
    let headers: BTreeMap<&str, &str> = headers
        .into_iter()
        .filter_map(|(k, v)| trace_header(k).map(|k| (k, v)))
        .collect();
    let parent = TraceContextPropagator::new().extract(&Received(&headers));
    let ids = parent.span().span_context().clone();
    if ids.is_valid() {
        // Fails only for a span that is already closed or not traced.
        let _ = span.set_parent(parent);
    }
    record_trace_id(span);
    ids.is_valid().then(|| ids.trace_id().to_string())
}

/// Records `trace_id` and `span_id` on `span` (declared with both as
/// `tracing::field::Empty`) when traces are on.
pub fn record_trace_id(span: &tracing::Span) {
    let ids = ids_of(span);
    if ids.is_valid() {
        crate::telemetry::record_fields(
            span,
            [
                ("trace_id", &tracing::field::display(ids.trace_id())),
                ("span_id", &tracing::field::display(ids.span_id())),
            ],
        );
    }
}

/// The trace id of `span` (in hex) when its trace is exported: sampled,
/// with traces on.
pub fn exported_trace_id(span: &tracing::Span) -> Option<String> {
    let ids = ids_of(span);
    (ids.is_valid() && ids.is_sampled()).then(|| ids.trace_id().to_string())
}

/// `span`'s trace and span ids (invalid ones when traces are off).
fn ids_of(span: &tracing::Span) -> SpanContext {
    let cx: Context = span.context();
    cx.span().span_context().clone()
}

/// Sets an attribute of `span`'s exported span only, for what is learnt
/// after its log lines (a response's status, where a record landed): a
/// `tracing` field recorded late costs the JSON log format a rewrite of
/// the span's fields. Nothing happens when traces are off.
pub fn set_attribute(
    span: &tracing::Span,
    key: &'static str,
    value: impl Into<opentelemetry::Value>,
) {
    span.set_attribute(key, value);
}

/// The span some work was asked for in, for a span that does the work
/// of several (one database transaction for many files) to link to.
#[derive(Debug, Clone)]
pub struct SpanLink(SpanContext);

impl SpanLink {
    /// The current span's; one that links nowhere when traces are off.
    pub fn current() -> Self {
        Self(ids_of(&tracing::Span::current()))
    }
}

/// Links `span` to each of `links` that belongs to a trace.
pub fn add_links<'l>(span: &tracing::Span, links: impl IntoIterator<Item = &'l SpanLink>) {
    for link in links {
        if link.0.is_valid() {
            span.add_link(link.0.clone());
        }
    }
}

#[derive(Default)]
struct Carrier(Vec<(&'static str, String)>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            "traceparent" => "traceparent",
            "tracestate" => "tracestate",
            _ => return,
        };
        self.0.push((key, value));
    }
}

/// The W3C trace-context header `name` is, in its lowercase spelling.
fn trace_header(name: &str) -> Option<&'static str> {
    ["traceparent", "tracestate"]
        .into_iter()
        .find(|wanted| name.eq_ignore_ascii_case(wanted))
}

struct Received<'a>(&'a BTreeMap<&'a str, &'a str>);

impl Extractor for Received<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).copied()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().copied().collect()
    }
}
