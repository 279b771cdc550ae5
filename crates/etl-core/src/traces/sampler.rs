//! The sampler: the configured one, except that the probes and the
//! metrics scrape are never traced. Kubernetes and Prometheus call them
//! every few seconds; as traces they would bury the files' in noise.

use opentelemetry::trace::{SpanKind, TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};

use crate::http::OPS_PATHS;

#[derive(Debug, Clone)]
pub(super) struct OpsLeftOut(pub(super) Sampler);

impl ShouldSample for OpsLeftOut {
    fn should_sample(
        &self,
        parent: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> SamplingResult {
        if *kind == SpanKind::Server && is_ops_request(attributes) {
            return SamplingResult {
                decision: SamplingDecision::Drop,
                attributes: Vec::new(),
                trace_state: parent
                    .map(|cx| cx.span().span_context().trace_state().clone())
                    .unwrap_or_default(),
            };
        }
        self.0
            .should_sample(parent, trace_id, name, kind, attributes, links)
    }
}

fn is_ops_request(attributes: &[KeyValue]) -> bool {
    attributes
        .iter()
        .any(|kv| kv.key.as_str() == "url.path" && OPS_PATHS.contains(&kv.value.as_str().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(kind: SpanKind, path: &str) -> SamplingDecision {
        let attributes = [KeyValue::new("url.path", path.to_owned())];
        OpsLeftOut(Sampler::AlwaysOn)
            .should_sample(None, TraceId::from(7), "GET", &kind, &attributes, &[])
            .decision
    }

    #[test]
    fn the_probes_and_the_scrape_are_never_sampled() {
        for path in OPS_PATHS {
            assert_eq!(
                decision(SpanKind::Server, path),
                SamplingDecision::Drop,
                "{path}"
            );
        }
    }

    #[test]
    fn every_other_request_gets_the_configured_decision() {
        let sampled = SamplingDecision::RecordAndSample;
        assert_eq!(decision(SpanKind::Server, "/import/companies"), sampled);
        assert_eq!(decision(SpanKind::Server, "/metrics/extra"), sampled);
        // A call this service makes to someone else's /metrics is its own.
        assert_eq!(decision(SpanKind::Client, "/metrics"), sampled);
        let never = OpsLeftOut(Sampler::AlwaysOff);
        let attributes = [KeyValue::new("url.path", "/import/companies")];
        let refused = never.should_sample(
            None,
            TraceId::from(7),
            "POST",
            &SpanKind::Server,
            &attributes,
            &[],
        );
        assert_eq!(refused.decision, SamplingDecision::Drop);
    }
}
