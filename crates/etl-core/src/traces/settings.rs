//! The standard OpenTelemetry variables this project reads, each once.

use std::time::Duration;

use opentelemetry_sdk::trace::Sampler;

use crate::config::{ConfigError, Env};

#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// Where spans are posted (`…/v1/traces`); `None`: traces are off.
    pub endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`, the binary's name by default.
    pub service_name: String,
    pub sampler: SamplerSetting,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans waiting for export; more are
    /// dropped (and counted), never waited for.
    pub max_queue: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: spans per OTLP request.
    pub max_batch: usize,
    /// `OTEL_BSP_SCHEDULE_DELAY`: the longest a span waits for a batch.
    pub schedule_delay: Duration,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`: the longest one OTLP request may take.
    pub export_timeout: Duration,
}

/// `OTEL_TRACES_SAMPLER` (with `OTEL_TRACES_SAMPLER_ARG` for the ratios).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerSetting {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl SamplerSetting {
    pub fn sampler(self) -> Sampler {
        let parent_based = |root| Sampler::ParentBased(Box::new(root));
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => parent_based(Sampler::AlwaysOn),
            Self::ParentBasedAlwaysOff => parent_based(Sampler::AlwaysOff),
            Self::ParentBasedRatio(r) => parent_based(Sampler::TraceIdRatioBased(r)),
        }
    }
}

fn problem(var: &str, problem: String) -> ConfigError {
    ConfigError {
        var: var.to_owned(),
        problem,
    }
}

impl TraceSettings {
    pub fn from_env(env: &Env, service: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            endpoint: endpoint(env)?,
            service_name: service_name(env, service),
            sampler: sampler(env)?,
            max_queue: env.parse("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?,
            max_batch: batch_size(env)?,
            schedule_delay: env.millis("OTEL_BSP_SCHEDULE_DELAY", 5_000)?,
            export_timeout: env.millis("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000)?,
        })
    }
}

/// `OTEL_SERVICE_NAME`; empty (as in a `.env` the three services share)
/// is the binary's own name.
fn service_name(env: &Env, service: &str) -> String {
    let name = env.string("OTEL_SERVICE_NAME", "");
    match name.trim() {
        "" => service.to_owned(),
        name => name.to_owned(),
    }
}

fn batch_size(env: &Env) -> Result<usize, ConfigError> {
    let size: usize = env.parse("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?;
    Ok(size.max(1))
}

/// The traces endpoint: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, or
/// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`, as the specification
/// says; none (or `OTEL_SDK_DISABLED=true`) turns traces off.
fn endpoint(env: &Env) -> Result<Option<String>, ConfigError> {
    let disabled = env.bool("OTEL_SDK_DISABLED", false)?;
    let protocol = env.string("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    if protocol != "http/protobuf" {
        let why =
            format!("= {protocol:?}: only http/protobuf is built in (port 4318 of a collector)");
        return Err(problem("OTEL_EXPORTER_OTLP_PROTOCOL", why));
    }
    let traces = env.string("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "");
    let base = env.string("OTEL_EXPORTER_OTLP_ENDPOINT", "");
    let endpoint = match (traces.trim(), base.trim()) {
        _ if disabled => None,
        ("", "") => None,
        ("", base) => Some(format!("{}/v1/traces", base.trim_end_matches('/'))),
        (traces, _) => Some(traces.to_owned()),
    };
    if let Some(url) = &endpoint
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        let why = format!("= {url:?} is not an http:// or https:// URL");
        return Err(problem("OTEL_EXPORTER_OTLP_ENDPOINT", why));
    }
    Ok(endpoint)
}

fn sampler(env: &Env) -> Result<SamplerSetting, ConfigError> {
    let name = env.string("OTEL_TRACES_SAMPLER", "parentbased_always_on");
    let ratio = || -> Result<f64, ConfigError> {
        let r: f64 = env.parse("OTEL_TRACES_SAMPLER_ARG", 1.0)?;
        if (0.0..=1.0).contains(&r) {
            Ok(r)
        } else {
            Err(problem(
                "OTEL_TRACES_SAMPLER_ARG",
                format!("= {r} is not a ratio from 0 to 1"),
            ))
        }
    };
    Ok(match name.trim() {
        "always_on" => SamplerSetting::AlwaysOn,
        "always_off" => SamplerSetting::AlwaysOff,
        "traceidratio" => SamplerSetting::Ratio(ratio()?),
        "parentbased_always_on" => SamplerSetting::ParentBasedAlwaysOn,
        "parentbased_always_off" => SamplerSetting::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => SamplerSetting::ParentBasedRatio(ratio()?),
        other => {
            let why = format!(
                "= {other:?} is not one of always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
            );
            return Err(problem("OTEL_TRACES_SAMPLER", why));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<TraceSettings, ConfigError> {
        let mut all = vec![
            ("OTEL_SDK_DISABLED", "false"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""),
        ];
        all.extend_from_slice(pairs);
        TraceSettings::from_env(&Env::with_overrides(all), "cmd-api")
    }

    #[test]
    fn traces_are_off_without_an_endpoint_or_when_disabled() {
        assert_eq!(settings(&[]).unwrap().endpoint, None);
        let disabled = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert_eq!(settings(&disabled).unwrap().endpoint, None);
    }

    #[test]
    fn the_traces_path_is_added_to_the_base_endpoint_only() {
        let base = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]);
        assert_eq!(
            base.unwrap().endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        let own = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://tempo:4318/otlp",
            ),
        ]);
        assert_eq!(
            own.unwrap().endpoint.as_deref(),
            Some("http://tempo:4318/otlp")
        );
    }

    #[test]
    fn grpc_an_odd_sampler_and_a_ratio_beyond_one_are_refused_by_name() {
        let grpc = settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert_eq!(grpc.var, "OTEL_EXPORTER_OTLP_PROTOCOL");
        let odd = settings(&[("OTEL_TRACES_SAMPLER", "sometimes")]).unwrap_err();
        assert_eq!(odd.var, "OTEL_TRACES_SAMPLER");
        let ratio = settings(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ])
        .unwrap_err();
        assert_eq!(ratio.var, "OTEL_TRACES_SAMPLER_ARG");
        let one_in_a_hundred = settings(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ]);
        assert_eq!(
            one_in_a_hundred.unwrap().sampler,
            SamplerSetting::ParentBasedRatio(0.01)
        );
    }
}
