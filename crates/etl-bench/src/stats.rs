//! Rates and latency percentiles of one measured phase.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cpu::Cost;

#[derive(Debug, Clone)]
pub struct Phase {
    pub name: &'static str,
    pub unit: &'static str,
    pub done: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// Per-operation latencies, when the phase measures them.
    pub latencies: Vec<Duration>,
    /// p50 and p99 in ms as another program reported them (wrk), for a
    /// phase whose latencies this one did not see.
    pub reported_ms: Option<(f64, f64)>,
    /// CPU per operation of each process, when measured.
    pub cpu: Option<Cost>,
}

impl Phase {
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// `role`'s CPU µs per operation, when the phase measured it.
    pub fn cpu_of(&self, role: &str) -> Option<f64> {
        self.cpu.as_ref().and_then(|c| c.of(role))
    }

    pub fn percentile_ms(&self, p: f64) -> Option<f64> {
        match self.reported_ms {
            Some((p50, _)) if p == 0.50 => Some(p50),
            Some((_, p99)) if p == 0.99 => Some(p99),
            Some(_) => None,
            None => percentile_ms(&self.latencies, p),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "unit": self.unit,
            "done": self.done,
            "failed": self.failed,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "rate_per_s": self.rate(),
            "p50_ms": self.percentile_ms(0.50),
            "p99_ms": self.percentile_ms(0.99),
            "cpu_us_per_op": self.cpu.as_ref().map(Cost::to_json),
        })
    }
}

/// Nearest-rank percentile of `samples`, in milliseconds.
pub fn percentile_ms(samples: &[Duration], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1].as_secs_f64() * 1_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&ms, 0.50), Some(50.0));
        assert_eq!(percentile_ms(&ms, 0.99), Some(99.0));
        assert_eq!(percentile_ms(&ms[..1], 0.99), Some(1.0));
        assert_eq!(percentile_ms(&[], 0.5), None);
    }
}
