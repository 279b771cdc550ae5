//! The api's pipeline counters (the HTTP and dependency metrics are
//! etl-core's).

use prometheus::{IntCounterVec, Opts, Registry};

use etl_core::metrics::register;

/// Pipeline counters of the api.
#[derive(Clone)]
pub struct ImportMetrics {
    requests: IntCounterVec,
    files_received: IntCounterVec,
    files_stored: IntCounterVec,
    bytes_stored: IntCounterVec,
}

/// A counter by dataset.
fn by_dataset(registry: &Registry, name: &str, help: &str) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), &["dataset"]).expect("valid counter"),
    )
}

impl ImportMetrics {
    pub fn new(registry: &Registry) -> Self {
        Self {
            requests: register(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "import_requests_total",
                        "Import requests by dataset and outcome (accepted or error code).",
                    ),
                    &["dataset", "outcome"],
                )
                .expect("valid counter"),
            ),
            files_received: by_dataset(
                registry,
                "import_files_received_total",
                "Documents parsed from uploads (before de-duplication).",
            ),
            files_stored: by_dataset(registry, "import_files_stored_total", "Files stored in S3."),
            bytes_stored: by_dataset(
                registry,
                "import_stored_bytes_total",
                "Bytes of files stored in S3.",
            ),
        }
    }

    /// `dataset` is empty for a name the api does not know.
    pub fn requests(&self, dataset: &str, outcome: &str) {
        self.requests.with_label_values(&[dataset, outcome]).inc();
    }
    pub fn received(&self, dataset: &str, files: usize) {
        self.files_received
            .with_label_values(&[dataset])
            .inc_by(files as u64);
    }
    pub fn stored(&self, dataset: &str, bytes: u64) {
        self.files_stored.with_label_values(&[dataset]).inc();
        self.bytes_stored
            .with_label_values(&[dataset])
            .inc_by(bytes);
    }
}
