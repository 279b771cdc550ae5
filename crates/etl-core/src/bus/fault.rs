//! The test hook `ETL_TEST_KAFKA_PRODUCER_FATAL=after=N[,times=M]`: after
//! the N-th acknowledged publish of the process, the producer is put into
//! librdkafka's fatal state, and so are the first M-1 producers that replace
//! it, as soon as they are built (a cluster that keeps fencing it). Unset,
//! nothing is ever injected. See docs/reliability.md.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rdkafka::ClientContext;
use rdkafka::client::Client;

use crate::config::ConfigError;

pub const PRODUCER_FATAL_VAR: &str = "ETL_TEST_KAFKA_PRODUCER_FATAL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFault {
    pub after: u64,
    pub times: u32,
}

impl ProducerFault {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let bad = |problem: &str| ConfigError {
            var: PRODUCER_FATAL_VAR.into(),
            problem: format!("{problem} (expected after=N[,times=M], got {text:?})"),
        };
        let mut fault = ProducerFault { after: 0, times: 1 };
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

/// Counts deliveries and raises the planned fatal errors.
#[derive(Debug)]
pub(crate) struct Injector {
    plan: Option<ProducerFault>,
    delivered: AtomicU64,
    raised: AtomicU32,
}

impl Injector {
    pub(crate) fn new(plan: Option<ProducerFault>) -> Self {
        Self {
            plan,
            delivered: AtomicU64::new(0),
            raised: AtomicU32::new(0),
        }
    }

    /// Whether a fault is planned at all (never, outside tests).
    pub(crate) fn planned(&self) -> bool {
        self.plan.is_some()
    }

    pub(crate) fn after_delivery<C: ClientContext>(&self, client: &Client<C>) {
        let Some(plan) = self.plan else { return };
        if self.delivered.fetch_add(1, Ordering::Relaxed) + 1 == plan.after {
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
        tracing::warn!(
            injected = n,
            "{PRODUCER_FATAL_VAR}: putting the kafka producer into the fatal state"
        );
        etl_fault::raise_fatal(client, &format!("injected by {PRODUCER_FATAL_VAR} ({n})"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_names_its_parts() {
        assert_eq!(
            ProducerFault::parse("after=20").unwrap(),
            ProducerFault {
                after: 20,
                times: 1
            }
        );
        assert_eq!(
            ProducerFault::parse("after=5,times=3").unwrap(),
            ProducerFault { after: 5, times: 3 }
        );
        for wrong in [
            "",
            "times=2",
            "after=x",
            "after=1,times=0",
            "after=1,when=2",
        ] {
            assert!(ProducerFault::parse(wrong).is_err(), "{wrong:?} accepted");
        }
    }
}
