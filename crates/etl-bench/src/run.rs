//! Runs `total` operations and times each: flat out with at most
//! `concurrency` in flight, or paced at a rate. The shape of every phase of
//! the benchmark.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::stats::Phase;

/// How a phase's operations are sent.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// As fast as they complete, this many in flight.
    Flat(usize),
    /// This many per second whatever their latency: what a dependency
    /// costs per operation at the rate the pipeline asked of it.
    Rate(f64),
}

/// Operations a paced phase may have in flight before it falls behind.
const PACED_IN_FLIGHT: usize = 4_096;

pub async fn closed_loop<F, Fut>(
    name: &'static str,
    unit: &'static str,
    total: u64,
    concurrency: usize,
    op: F,
) -> Phase
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    drive(name, unit, total, Pace::Flat(concurrency), op).await
}

pub async fn drive<F, Fut>(
    name: &'static str,
    unit: &'static str,
    total: u64,
    pace: Pace,
    op: F,
) -> Phase
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let (in_flight, interval) = match pace {
        Pace::Flat(concurrency) => (concurrency, None),
        Pace::Rate(per_second) => (
            PACED_IN_FLIGHT,
            Some(Duration::from_secs_f64(1.0 / per_second.max(0.1))),
        ),
    };
    let started = Instant::now();
    let results: Vec<(Duration, Result<(), String>)> = futures::stream::iter(0..total)
        .map(|i| {
            let fut = op(i);
            async move {
                if let Some(interval) = interval {
                    let due = started + interval.mul_f64(i as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let t = Instant::now();
                let r = fut.await;
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut phase = Phase {
        name,
        unit,
        done: 0,
        failed: 0,
        elapsed,
        latencies: Vec::with_capacity(results.len()),
        reported_ms: None,
        cpu: None,
    };
    let mut first_error = None;
    for (latency, result) in results {
        match result {
            Ok(()) => {
                phase.done += 1;
                phase.latencies.push(latency);
            }
            Err(e) => {
                phase.failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!(
            "[bench] {name}: {} failed, the first with: {e}",
            phase.failed
        );
    }
    phase
}
