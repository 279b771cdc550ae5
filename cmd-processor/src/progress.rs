//! Whether the consume loop gets anywhere: records wait, yet nothing has
//! been committed for longer than `PROCESSOR_STALL_AFTER_MS`. Each
//! dependency can answer its probe while files still go nowhere (outcome
//! events that are never acknowledged, a load that never returns), and
//! the lag alone grows in every burst.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etl_core::bus::WaitingRecords;

#[derive(Clone)]
pub struct Progress {
    last_commit: Arc<Mutex<Instant>>,
    stall_after: Duration,
}

impl Progress {
    pub fn new(stall_after: Duration) -> Self {
        Self {
            last_commit: Arc::new(Mutex::new(Instant::now())),
            stall_after,
        }
    }

    pub fn committed(&self) {
        *self.last_commit.lock().expect("not poisoned") = Instant::now();
    }

    /// `Err` naming the stall while records have waited, uncommitted, for
    /// longer than the bound.
    pub fn check(&self, waiting: &WaitingRecords, now: Instant) -> Result<(), String> {
        let Some((records, since)) = waiting.get() else {
            return Ok(());
        };
        let last_commit = *self.last_commit.lock().expect("not poisoned");
        stalled(records, since.max(last_commit), now, self.stall_after)
    }
}

fn stalled(records: i64, from: Instant, now: Instant, bound: Duration) -> Result<(), String> {
    let still = now.saturating_duration_since(from);
    if still <= bound {
        return Ok(());
    }
    Err(format!(
        "no commit for {} s while {records} records wait (bound {} s): outcome events or loads do not complete",
        still.as_secs(),
        bound.as_secs()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_without_a_commit_past_the_bound_is_a_stall() {
        let start = Instant::now();
        let bound = Duration::from_secs(90);
        assert_eq!(stalled(10, start, start + bound, bound), Ok(()));
        let stall = stalled(10, start, start + Duration::from_secs(95), bound).unwrap_err();
        assert!(
            stall.starts_with("no commit for 95 s while 10 records wait"),
            "{stall}"
        );
    }

    #[test]
    fn nothing_waiting_is_no_stall() {
        let progress = Progress::new(Duration::ZERO);
        let waiting = WaitingRecords::default();
        let later = Instant::now() + Duration::from_secs(3600);
        assert_eq!(progress.check(&waiting, later), Ok(()));
    }
}
