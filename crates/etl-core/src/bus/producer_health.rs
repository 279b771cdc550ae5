//! What a publisher knows of its producer: whether librdkafka declared it
//! fatal, how many replacements in a row went fatal again, and whether its
//! latest publishes were acknowledged. Readiness and liveness read it; the
//! publisher's recovery task and its deliveries write it.

use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

/// Failed publishes in a row after which readiness says publishing fails.
/// One failure is a retry; several in a row while the cluster looks
/// writable is a producer that does not deliver.
pub(crate) const FAILING_AFTER: u32 = 5;
/// How long a streak of failures counts once publishing stopped: readiness
/// must not stay 503 for ever when no one publishes any more.
const FAILURES_FRESH_FOR: Duration = Duration::from_secs(30);
/// A replacement that stayed healthy this long has recovered, even when no
/// one published through it: its next fatal error starts a new count.
const SETTLED_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct ProducerHealth {
    fatal: Option<Fatal>,
    replaced_at: Option<Instant>,
    /// Replacements since the producer last delivered or settled.
    replacements_in_a_row: u32,
    failures_in_a_row: u32,
    latest_failure: Option<(Instant, String)>,
}

#[derive(Debug)]
struct Fatal {
    since: DateTime<Utc>,
    reason: String,
}

impl ProducerHealth {
    pub(crate) fn new() -> Self {
        Self {
            fatal: None,
            replaced_at: None,
            replacements_in_a_row: 0,
            failures_in_a_row: 0,
            latest_failure: None,
        }
    }

    pub(crate) fn delivered(&mut self) {
        self.failures_in_a_row = 0;
        self.latest_failure = None;
        if self.fatal.is_none() {
            self.replacements_in_a_row = 0;
        }
    }

    pub(crate) fn failed(&mut self, now: Instant, error: String) {
        self.failures_in_a_row += 1;
        self.latest_failure = Some((now, error));
    }

    /// Notes the fatal state of the current producer; `true` the first
    /// time for this producer (the one time it is logged).
    pub(crate) fn fatal(&mut self, now: Instant, reason: &str) -> bool {
        if self.fatal.is_some() {
            return false;
        }
        if self
            .replaced_at
            .is_some_and(|at| now.duration_since(at) >= SETTLED_AFTER)
        {
            self.replacements_in_a_row = 0;
        }
        self.fatal = Some(Fatal {
            since: Utc::now(),
            reason: reason.to_owned(),
        });
        true
    }

    /// Replacements already made since the producer last worked: how long
    /// to wait before the next one.
    pub(crate) fn replacements_in_a_row(&self) -> u32 {
        self.replacements_in_a_row
    }

    pub(crate) fn replaced(&mut self, now: Instant) {
        self.fatal = None;
        self.replaced_at = Some(now);
        self.replacements_in_a_row += 1;
        self.failures_in_a_row = 0;
        self.latest_failure = None;
    }

    /// `Err` with what is wrong while publishing cannot work.
    pub(crate) fn ready(&self, now: Instant) -> Result<(), String> {
        if let Some(fatal) = &self.fatal {
            return Err(format!(
                "producer fatal since {}: {} (replaced {} time(s) in a row so far)",
                fatal.since.to_rfc3339_opts(SecondsFormat::Millis, true),
                fatal.reason,
                self.replacements_in_a_row
            ));
        }
        match &self.latest_failure {
            Some((at, error))
                if self.failures_in_a_row >= FAILING_AFTER
                    && now.duration_since(*at) < FAILURES_FRESH_FOR =>
            {
                Err(format!(
                    "publishes failing: the last {} were not acknowledged (latest {} ms ago: {error})",
                    self.failures_in_a_row,
                    now.duration_since(*at).as_millis()
                ))
            }
            _ => Ok(()),
        }
    }

    /// `Err` once `max` replacements in a row went fatal again: a producer
    /// that cannot be replaced in place, for which only a restart is left.
    pub(crate) fn alive(&self, max: u32) -> Result<(), String> {
        match &self.fatal {
            Some(fatal) if self.replacements_in_a_row >= max => Err(format!(
                "the kafka producer went fatal again after {} replacements in a row \
                 (latest since {}: {})",
                self.replacements_in_a_row,
                fatal.since.to_rfc3339_opts(SecondsFormat::Millis, true),
                fatal.reason
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fatal_producer_is_unready_until_replaced() {
        let now = Instant::now();
        let mut health = ProducerHealth::new();
        assert_eq!(health.ready(now), Ok(()));
        assert!(health.fatal(now, "Broker: Out of order sequence number"));
        assert!(!health.fatal(now, "again"), "logged once per producer");
        let unready = health.ready(now).unwrap_err();
        assert!(unready.starts_with("producer fatal since "), "{unready}");
        assert!(
            unready.contains("Out of order sequence number"),
            "{unready}"
        );
        health.replaced(now);
        assert_eq!(health.ready(now), Ok(()));
    }

    #[test]
    fn replacements_that_go_fatal_again_fail_liveness_at_the_bound() {
        let now = Instant::now();
        let mut health = ProducerHealth::new();
        for round in 0..3 {
            assert!(health.fatal(now, "fenced"));
            assert_eq!(health.replacements_in_a_row(), round);
            assert_eq!(health.alive(3), Ok(()));
            health.replaced(now);
        }
        health.fatal(now, "fenced");
        let dead = health.alive(3).unwrap_err();
        assert!(dead.contains("after 3 replacements in a row"), "{dead}");
    }

    #[test]
    fn a_delivery_or_a_settled_replacement_restarts_the_count() {
        let now = Instant::now();
        let mut health = ProducerHealth::new();
        health.fatal(now, "fenced");
        health.replaced(now);
        health.delivered();
        assert_eq!(health.replacements_in_a_row(), 0);

        health.fatal(now, "fenced");
        health.replaced(now);
        health.fatal(now + SETTLED_AFTER, "fenced");
        assert_eq!(health.replacements_in_a_row(), 0);
    }

    #[test]
    fn a_streak_of_failures_is_unready_while_fresh() {
        let now = Instant::now();
        let mut health = ProducerHealth::new();
        for _ in 1..FAILING_AFTER {
            health.failed(now, "Message production error: MessageTimedOut".into());
        }
        assert_eq!(health.ready(now), Ok(()), "a few failures are retries");
        health.failed(now, "Message production error: MessageTimedOut".into());
        let unready = health.ready(now).unwrap_err();
        assert!(
            unready.starts_with("publishes failing: the last 5 were not acknowledged"),
            "{unready}"
        );
        assert_eq!(health.ready(now + FAILURES_FRESH_FOR), Ok(()));
        health.delivered();
        assert_eq!(health.ready(now), Ok(()));
    }
}
