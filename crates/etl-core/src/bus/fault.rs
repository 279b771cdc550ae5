//! The test hooks that put a client into librdkafka's fatal state (no
//! broker reaches it on demand; see docs/reliability.md). Unset, nothing is
//! ever injected.
//!
//! - `ETL_TEST_KAFKA_PRODUCER_FATAL=after=N[,times=M]`: after the N-th
//!   acknowledged publish of the process the producer goes fatal, and so do
//!   the first M-1 producers that replace it, as soon as they are built (a
//!   cluster that keeps fencing it).
//! - `ETL_TEST_KAFKA_CONSUMER_FATAL=after=N`: after the N-th record
//!   received the consumer goes fatal (it is never replaced: liveness fails).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rdkafka::ClientContext;
use rdkafka::client::Client;

use crate::config::ConfigError;

pub const PRODUCER_FATAL_VAR: &str = "ETL_TEST_KAFKA_PRODUCER_FATAL";
pub const CONSUMER_FATAL_VAR: &str = "ETL_TEST_KAFKA_CONSUMER_FATAL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    pub after: u64,
    pub times: u32,
}

impl FaultPlan {
    /// `after=N[,times=M]`, from the variable `var`.
    pub fn parse(var: &str, text: &str) -> Result<Self, ConfigError> {
        let bad = |problem: &str| ConfigError {
            var: var.into(),
            problem: format!("{problem} (expected after=N[,times=M], got {text:?})"),
        };
        let mut fault = FaultPlan { after: 0, times: 1 };
        let mut after = None;
        for part in text.split(',') {
            match part.trim().split_once('=') {
                Some(("after", n)) => {
                    after = Some(n.parse().map_err(|_| bad("after is not a number"))?)
                }
                Some(("times", n)) => {
                    fault.times = n.parse().map_err(|_| bad("times is not a number"))?
                }
                _ => return Err(bad("unknown part")),
            }
        }
        fault.after = after.ok_or_else(|| bad("after is missing"))?;
        if fault.times == 0 {
            return Err(bad("times must be at least 1"));
        }
        Ok(fault)
    }
}

/// Counts deliveries (or records) and raises the planned fatal errors.
#[derive(Debug)]
pub struct Injector {
    plan: Option<FaultPlan>,
    var: &'static str,
    counted: AtomicU64,
    raised: AtomicU32,
}

impl Injector {
    pub(crate) fn new(plan: Option<FaultPlan>, var: &'static str) -> Self {
        Self {
            plan,
            var,
            counted: AtomicU64::new(0),
            raised: AtomicU32::new(0),
        }
    }

    /// Whether a fault is planned at all (never, outside tests).
    pub(crate) fn planned(&self) -> bool {
        self.plan.is_some()
    }

    /// One more delivery or record: the planned one puts `client` into the
    /// fatal state.
    pub fn count<C: ClientContext>(&self, client: &Client<C>) {
        let Some(plan) = self.plan else { return };
        if self.counted.fetch_add(1, Ordering::Relaxed) + 1 == plan.after {
            self.raise(client);
        }
    }

    pub(crate) fn after_replacement<C: ClientContext>(&self, client: &Client<C>) {
        let Some(plan) = self.plan else { return };
        if self.raised.load(Ordering::Relaxed) < plan.times {
            self.raise(client);
        }
    }

    fn raise<C: ClientContext>(&self, client: &Client<C>) {
        let n = self.raised.fetch_add(1, Ordering::Relaxed) + 1;
        let var = self.var;
        tracing::warn!(
            injected = n,
            "{var}: putting the kafka client into the fatal state"
        );
        etl_fault::raise_fatal(client, &format!("injected by {var} ({n})"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_names_its_parts() {
        let parse = |text| FaultPlan::parse(PRODUCER_FATAL_VAR, text);
        assert_eq!(
            parse("after=20").unwrap(),
            FaultPlan {
                after: 20,
                times: 1
            }
        );
        assert_eq!(
            parse("after=5,times=3").unwrap(),
            FaultPlan { after: 5, times: 3 }
        );
        for wrong in [
            "",
            "times=2",
            "after=x",
            "after=1,times=0",
            "after=1,when=2",
        ] {
            assert!(parse(wrong).is_err(), "{wrong:?} accepted");
        }
    }
}
