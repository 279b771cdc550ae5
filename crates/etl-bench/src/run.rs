//! Runs `total` operations with at most `concurrency` in flight and times
//! each: the shape of every phase of the benchmark.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::stats::Phase;

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
    let started = Instant::now();
    let results: Vec<(Duration, Result<(), String>)> = futures::stream::iter(0..total)
        .map(|i| {
            let fut = op(i);
            async move {
                let t = Instant::now();
                let r = fut.await;
                (t.elapsed(), r)
            }
        })
        .buffer_unordered(concurrency)
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
