//! The tables `make bench` prints.

use serde_json::{Value, json};

use crate::cpu::Cost;
use crate::stats::Phase;

/// Rate, failures and latency of each phase.
pub fn phase_table(phases: &[&Phase]) {
    println!(
        "| {:<58} | {:>18} | {:>6} | {:>8} | {:>8} |",
        "phase", "rate", "failed", "p50 ms", "p99 ms"
    );
    println!(
        "|{}|{}|{}|{}|{}|",
        "-".repeat(60),
        "-".repeat(20),
        "-".repeat(8),
        "-".repeat(10),
        "-".repeat(10)
    );
    for p in phases {
        let pct = |q| {
            p.percentile_ms(q)
                .map_or("-".to_owned(), |v| format!("{v:.1}"))
        };
        println!(
            "| {:<58} | {:>9.0} {:<8} | {:>6} | {:>8} | {:>8} |",
            p.name,
            p.rate(),
            format!("{}/s", p.unit),
            p.failed,
            pct(0.50),
            pct(0.99)
        );
    }
}

/// The processes of the CPU table, in its column order.
const ROLES: [&str; 6] = [
    "api",
    "processor",
    "broker",
    "s3",
    "postgres",
    "bench client",
];

/// CPU µs per operation of each process, for the phases that measured it.
pub fn cpu_table(phases: &[&Phase]) {
    println!(
        "CPU µs per operation (utime + stime from /proc over the phase, children included; \
         broker = its 3 nodes; a service started for a phase counts from its start):"
    );
    print!("| {:<58} |", "phase");
    for role in ROLES {
        print!(" {role:>12} |");
    }
    println!();
    print!("|{}|", "-".repeat(60));
    for _ in ROLES {
        print!("{}|", "-".repeat(14));
    }
    println!();
    for p in phases {
        let Some(cpu) = &p.cpu else { continue };
        cpu_row(&format!("{} (per {})", p.name, singular(p.unit)), cpu);
    }
}

/// What the stack spends doing nothing, measured before the phases.
pub fn idle_row(idle: &Cost) {
    cpu_row("idle for 5 s (per second)", idle);
}

fn cpu_row(name: &str, cost: &Cost) {
    print!("| {name:<58} |");
    for role in ROLES {
        match cost.of(role) {
            Some(us) => print!(" {us:>12.0} |"),
            None => print!(" {:>12} |", "-"),
        }
    }
    println!();
}

fn singular(unit: &str) -> &str {
    match unit {
        "companies" => "company",
        other => other.strip_suffix('s').unwrap_or(other),
    }
}

/// What a file costs a dependency against what one raw operation costs it
/// in the same run (target ≤ 1.1 each).
pub fn dependency_ratios(phases: &Phases<'_>) -> Value {
    let ratio = |file: &Phase, raw: &Phase, role: &str| match (file.cpu_of(role), raw.cpu_of(role))
    {
        (Some(f), Some(r)) if r > 0.0 => Some(f / r),
        _ => None,
    };
    json!({
        "api_s3_per_file_vs_raw_put": ratio(phases.ingest, phases.put, "s3"),
        "api_broker_per_file_vs_raw_record": ratio(phases.ingest, phases.produce, "broker"),
        "api_s3_per_file_vs_raw_put_same_rate": ratio(phases.ingest, phases.put_paced, "s3"),
        "api_broker_per_file_vs_raw_record_same_rate": ratio(phases.ingest, phases.produce_paced, "broker"),
        "processor_s3_per_file_vs_raw_get": ratio(phases.drain, phases.get, "s3"),
        "processor_broker_per_file_vs_raw_record": ratio(phases.drain, phases.produce, "broker"),
    })
}

/// The phases the ratios compare.
pub struct Phases<'a> {
    pub put: &'a Phase,
    pub get: &'a Phase,
    pub produce: &'a Phase,
    pub put_paced: &'a Phase,
    pub produce_paced: &'a Phase,
    pub ingest: &'a Phase,
    pub drain: &'a Phase,
}

pub fn print_ratios(ratios: &Value) {
    let shown = |key: &str| {
        ratios[key]
            .as_f64()
            .map_or("-".to_owned(), |r| format!("{r:.2}"))
    };
    println!(
        "dependency CPU per file / per raw operation (target ≤ 1.1): api: S3 {} (vs a PUT), broker {} (vs a produced record), \
         at the api's rate S3 {} and broker {}; processor: S3 {} (vs a GET), broker {} (vs a produced record; a file is also a fetch)",
        shown("api_s3_per_file_vs_raw_put"),
        shown("api_broker_per_file_vs_raw_record"),
        shown("api_s3_per_file_vs_raw_put_same_rate"),
        shown("api_broker_per_file_vs_raw_record_same_rate"),
        shown("processor_s3_per_file_vs_raw_get"),
        shown("processor_broker_per_file_vs_raw_record"),
    );
}

/// µs for a table cell, `-` when not measured.
fn us(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |us| format!("{us:.0}"))
}

/// The flat load phase against its targets, and its load generator's cost
/// beside the api's.
pub fn flat_load_line(phase: &Phase, connections: u64) {
    let ms = |p| phase.percentile_ms(p).unwrap_or(f64::NAN);
    println!(
        "flat load, {connections} connections: {:.0} imports/s, p50/p99 {:.1}/{:.1} ms, {} failed (non-2xx or socket errors)   \
         (target ≥ 2500/s, 0 failed); CPU per request: api {} µs (target ≤ 150), wrk {} µs",
        phase.rate(),
        ms(0.50),
        ms(0.99),
        phase.failed,
        us(phase.cpu_of("api")),
        us(phase.cpu_of("bench client")),
    );
}
