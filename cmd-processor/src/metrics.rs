use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

use etl_core::metrics::register;

/// Pipeline metrics of the processor.
#[derive(Clone)]
pub struct ProcessorMetrics {
    files: IntCounterVec,
    rows: IntCounterVec,
    retries: IntCounterVec,
    load_duration: Histogram,
    files_per_transaction: Histogram,
}

/// Every `cause` a retry can have. Their series exist from the start at 0,
/// so `rate()` and alerts work before the first retry ever happens.
const RETRY_CAUSES: [&str; 3] = ["s3", "postgres", "kafka"];

impl ProcessorMetrics {
    pub fn new(registry: &Registry) -> Self {
        let metrics = Self {
            files: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "processor_files_total",
                        "Files handled, by dataset and outcome (loaded, invalid, duplicate, reemitted, dead_lettered, failed, handed_over).",
                    ),
                    &["dataset", "outcome"],
                )
                .expect("valid counter"),
            ),
            rows: register(
                registry,
                IntCounterVec::new(
                    Opts::new("processor_rows_written_total", "Rows written, by table."),
                    &["table"],
                )
                .expect("valid counter"),
            ),
            retries: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "processor_retries_total",
                        "Transient failures that made the processor retry a file, by dependency.",
                    ),
                    &["cause"],
                )
                .expect("valid counter"),
            ),
            load_duration: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "processor_load_duration_seconds",
                        "Time from picking a file up to its outcome being durable.",
                    )
                    .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                )
                .expect("valid histogram"),
            ),
            files_per_transaction: register(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "processor_files_per_transaction",
                        "Files loaded together in one database transaction.",
                    )
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
                )
                .expect("valid histogram"),
            ),
        };
        for cause in RETRY_CAUSES {
            metrics.retries.with_label_values(&[cause]);
        }
        metrics
    }

    /// `dataset` is empty for a record that named none (or was handed
    /// over before it was read).
    pub fn file(&self, dataset: &str, outcome: &str) {
        self.files.with_label_values(&[dataset, outcome]).inc();
    }

    pub fn rows(&self, table: &str, n: u64) {
        self.rows.with_label_values(&[table]).inc_by(n);
    }

    pub fn retry(&self, cause: &str) {
        debug_assert!(
            RETRY_CAUSES.contains(&cause),
            "undeclared retry cause {cause}"
        );
        self.retries.with_label_values(&[cause]).inc();
    }

    /// For the loader, which observes each transaction's size.
    pub fn files_per_transaction(&self) -> Histogram {
        self.files_per_transaction.clone()
    }

    pub fn load_seconds(&self, seconds: f64) {
        self.load_duration.observe(seconds);
    }
}
