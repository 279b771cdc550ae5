//! The api's pipeline counters (the HTTP and dependency metrics are
//! etl-core's).

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use etl_core::metrics::register;

/// Pipeline counters of the api.
#[derive(Clone)]
pub struct ImportMetrics {
    requests: IntCounterVec,
    files_received: IntCounter,
    files_stored: IntCounter,
    bytes_stored: IntCounter,
}

impl ImportMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "import_requests_total",
                        "Import requests by outcome (accepted or error code).",
                    ),
                    &["outcome"],
                )
                .expect("valid counter"),
            ),
            files_received: register(
                registry,
                IntCounter::new(
                    "import_files_received_total",
                    "Company documents parsed from uploads (before de-duplication).",
                )
                .expect("valid counter"),
            ),
            files_stored: register(
                registry,
                IntCounter::new("import_files_stored_total", "Company files stored in S3.")
                    .expect("valid counter"),
            ),
            bytes_stored: register(
                registry,
                IntCounter::new(
                    "import_stored_bytes_total",
                    "Bytes of company files stored in S3.",
                )
                .expect("valid counter"),
            ),
        }
    }

    pub fn requests(&self, outcome: &str) {
        self.requests.with_label_values(&[outcome]).inc();
    }
    pub fn received(&self, files: usize) {
        self.files_received.inc_by(files as u64);
    }
    pub fn stored(&self, bytes: u64) {
        self.files_stored.inc();
        self.bytes_stored.inc_by(bytes);
    }
}
