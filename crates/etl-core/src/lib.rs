//! Shared building blocks of the ingest pipeline.

pub mod bus;
pub mod config;
pub mod dataset;
pub mod db;
pub mod domain;
pub mod events;
pub mod http;
pub mod metrics;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod traces;

/// The exit of a service's `main`: on error, one line on stderr with the
/// whole cause chain (`{:#}`), and exit code 1. Never a backtrace, whatever
/// `RUST_BACKTRACE` says: the message names the problem (`invalid
/// configuration: KAFKA_BROKERS is empty`).
pub fn exit_status<E: std::fmt::Display>(
    service: &str,
    result: Result<(), E>,
) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{service}: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line (`a: b: c`), for the one log line
/// or message about it.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

/// Retry delays: exponential from `base`, capped, with full jitter so that
/// many workers retrying one outage do not hit the dependency in step.
pub fn backoff_delay(
    attempt: u32,
    base: std::time::Duration,
    cap: std::time::Duration,
) -> std::time::Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let ceiling = exp.min(cap);
    ceiling.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// Runs a start-up step (creating a bucket or topics) now, and if it fails
/// keeps retrying in the background: a dependency that is down must not
/// stop a service from starting, it only keeps readiness at 503.
pub async fn provision<F, Fut>(what: &'static str, step: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let Err(e) = step().await else { return };
    tracing::warn!(error = %e, "provisioning {what} failed; retrying in the background");
    tokio::spawn(async move {
        for attempt in 0u32.. {
            let delay = backoff_delay(
                attempt,
                std::time::Duration::from_millis(500),
                std::time::Duration::from_secs(30),
            );
            tokio::time::sleep(delay).await;
            match step().await {
                Ok(()) => {
                    tracing::info!("{what} provisioned");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt = attempt + 1, "provisioning {what} failed")
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        for attempt in 0..40 {
            let d = super::backoff_delay(attempt, base, cap);
            assert!(d <= cap, "{attempt}: {d:?}");
            assert!(d >= base.mul_f64(0.5), "{attempt}: {d:?}");
        }
        assert!(super::backoff_delay(10, base, cap) >= Duration::from_millis(2500));
    }
}
