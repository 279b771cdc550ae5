//! What a run found: printed as tables and lines against the targets, and
//! written to `target/bench/results.json`.

use etl_testkit::repo_root;
use serde_json::{Value, json};

use crate::cpu::Cost;
use crate::limits::ROWS_PER_COMPANY;
use crate::refusals::Refusals;
use crate::report;
use crate::settings::Settings;
use crate::stats::Phase;
use crate::streaming::Streamed;

pub struct Results {
    pub put: Phase,
    pub get: Phase,
    pub produce: Phase,
    pub copy: Phase,
    pub ingest: Phase,
    pub put_paced: Phase,
    pub produce_paced: Phase,
    /// `None` when wrk could not run.
    pub flat_load: Option<Phase>,
    pub drain: Phase,
    pub e2e: Phase,
    pub e2e_rate: f64,
    pub streamed: Streamed,
    pub refused: Refusals,
    pub idle: Cost,
    pub api_rss: u64,
    pub processor_rss: u64,
    /// Milliseconds per drained file waited on each dependency call.
    pub waits_per_file: Value,
    pub files_per_transaction: f64,
}

impl Results {
    /// The phases in the order they ran.
    fn phases(&self) -> Vec<&Phase> {
        let mut phases = vec![
            &self.put,
            &self.produce,
            &self.ingest,
            &self.put_paced,
            &self.produce_paced,
        ];
        phases.extend(self.flat_load.as_ref());
        phases.extend([
            &self.get,
            &self.copy,
            &self.drain,
            &self.e2e,
            &self.streamed.phase,
        ]);
        phases
    }

    fn dependency_cpu(&self) -> Value {
        report::dependency_ratios(&report::Phases {
            put: &self.put,
            get: &self.get,
            produce: &self.produce,
            put_paced: &self.put_paced,
            produce_paced: &self.produce_paced,
            ingest: &self.ingest,
            drain: &self.drain,
        })
    }

    fn api_ratio(&self) -> f64 {
        self.ingest.rate() / self.put.rate().min(self.produce.rate())
    }

    /// Each accepted file costs one PUT and one produce; when both limits
    /// are the machine's CPU, as on a small box running the whole stack,
    /// they add up instead of overlapping.
    fn api_vs_shared_ceiling(&self) -> f64 {
        let ceiling = 1.0 / (1.0 / self.put.rate() + 1.0 / self.produce.rate());
        self.ingest.rate() / ceiling
    }

    fn processor_ratio(&self) -> f64 {
        self.drain.rate() / self.get.rate().min(self.copy.rate())
    }

    pub fn print(&self, settings: &Settings, machine: &Value) {
        println!();
        println!(
            "machine: {} ({} cores, {} GiB), {}, git {}{}",
            machine["cpu"].as_str().unwrap_or(""),
            machine["cores"],
            machine["memory_gib"],
            machine["date"].as_str().unwrap_or(""),
            machine["git_sha"].as_str().unwrap_or(""),
            if machine["git_dirty"] == true {
                " (dirty)"
            } else {
                ""
            }
        );
        println!(
            "concurrency {}; release builds; local stack (Apache Kafka 4.4, 3 KRaft nodes, RF 3, min ISR 2; SeaweedFS 4.48; PostgreSQL 15)",
            settings.concurrency
        );
        println!();
        let phases = self.phases();
        report::phase_table(&phases);
        println!();
        report::cpu_table(&phases);
        report::idle_row(&self.idle);
        report::print_ratios(&self.dependency_cpu());
        println!();
        self.print_targets(settings);
        println!();
        self.print_waits();
    }

    fn print_targets(&self, settings: &Settings) {
        println!(
            "api_ratio       = api ingest / min(S3 PUT, produce) = {:.2}   (target ≥ 0.7)",
            self.api_ratio()
        );
        println!(
            "                  api ingest / 1/(1/PUT + 1/produce) = {:.2}   (the same limits, paid one after the other on shared cores)",
            self.api_vs_shared_ceiling()
        );
        println!(
            "processor_ratio = processor drain / min(S3 GET, COPY companies) = {:.2}   (target ≥ 0.7)",
            self.processor_ratio()
        );
        println!(
            "processor rows  = {:.0} rows/s; COPY rows = {:.0} rows/s",
            self.drain.rate() * ROWS_PER_COMPANY as f64,
            self.copy.rate() * ROWS_PER_COMPANY as f64
        );
        if let Some(flat_load) = &self.flat_load {
            report::flat_load_line(flat_load, settings.flat.connections);
        }
        println!(
            "end to end p50/p99 = {:.0}/{:.0} ms at {:.0} files/s   (target p99 ≤ 250 ms)",
            self.e2e.percentile_ms(0.5).unwrap_or(f64::NAN),
            self.e2e.percentile_ms(0.99).unwrap_or(f64::NAN),
            self.e2e_rate
        );
        let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
        println!(
            "peak RSS: api {:.0} MiB (during ingest), processor {:.0} MiB (during drain)   (targets ≤ 256 MiB)",
            mib(self.api_rss),
            mib(self.processor_rss)
        );
        println!(
            "peak RSS: api {:.0} MiB while {} clients each streamed {} MiB ({} files of {} KiB stored)   (target ≤ 256 MiB)",
            mib(self.streamed.peak_rss_bytes),
            settings.stream_clients,
            settings.stream_mib,
            self.streamed.files,
            settings.stream_company_kib
        );
        let ms = |d: std::time::Duration| d.as_millis();
        let r = &self.refused;
        println!(
            "refusals: gzip inflating past MAX_BODY_BYTES 413 in {} ms, 40 MiB of numbers 422 in {} ms   (targets ≤ 2000 ms); \
             a good import beside them {} ms, alone {} ms   (target ≤ alone + 1000 ms)",
            ms(r.bomb),
            ms(r.numbers),
            ms(r.good_beside),
            ms(r.good_alone)
        );
    }

    fn print_waits(&self) {
        println!(
            "a processor file waited on (its own dependency_request_duration_seconds; files run PROCESSOR_CONCURRENCY at a time, wall time {:.1} ms per file):",
            1_000.0 / self.drain.rate().max(1e-9)
        );
        for (call, ms) in self.waits_per_file.as_object().into_iter().flatten() {
            println!("  {call:<36} {:>7.2} ms", ms.as_f64().unwrap_or(0.0));
        }
        println!(
            "  ({:.1} files per database transaction on average)",
            self.files_per_transaction
        );
    }

    pub fn write(&self, settings: &Settings, machine: Value) -> anyhow::Result<()> {
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        let r = &self.refused;
        let results = json!({
            "machine": machine,
            "settings": settings.to_json(),
            "phases": self.phases().iter().map(|p| p.to_json()).collect::<Vec<_>>(),
            "dependency_cpu_ratios": self.dependency_cpu(),
            "idle_cpu_us_per_s": self.idle.to_json(),
            "api_ratio": self.api_ratio(),
            "api_vs_shared_ceiling": self.api_vs_shared_ceiling(),
            "processor_ratio": self.processor_ratio(),
            "processor_rows_per_s": self.drain.rate() * ROWS_PER_COMPANY as f64,
            "end_to_end": {"rate_per_s": self.e2e_rate, "p50_ms": self.e2e.percentile_ms(0.5), "p99_ms": self.e2e.percentile_ms(0.99)},
            "peak_rss_bytes": {"api_ingest": self.api_rss, "processor_drain": self.processor_rss, "api_streaming": self.streamed.peak_rss_bytes},
            "streamed_files": self.streamed.files,
            "processor_ms_per_file": self.waits_per_file,
            "processor_files_per_transaction": self.files_per_transaction,
            "refusals_ms": {"inflating_gzip": ms(r.bomb), "numbers_40_mib": ms(r.numbers), "good_beside": ms(r.good_beside), "good_alone": ms(r.good_alone)},
        });
        let out = repo_root().join("target/bench");
        std::fs::create_dir_all(&out)?;
        std::fs::write(
            out.join("results.json"),
            serde_json::to_string_pretty(&results)?,
        )?;
        Ok(())
    }
}
