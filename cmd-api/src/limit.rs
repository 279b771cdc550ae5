//! At most `MAX_CONCURRENT_IMPORTS` imports at once. Bodies are streamed,
//! but each import holds the companies it is storing (`import::HOLD_BYTES`
//! before storing starts), so the limit bounds memory as well as work. A
//! request waits up to `IMPORT_SLOT_WAIT_MS` for a slot (a burst is
//! absorbed; its body is not read meanwhile), then gets `503 overloaded`
//! instead of a queue that grows unseen.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use etl_core::dataset::Datasets;

use crate::error::ApiError;
use crate::metrics::ImportMetrics;
use crate::request_id;

#[derive(Clone)]
pub struct ImportSlots {
    slots: Arc<Semaphore>,
    limit: usize,
    wait: Duration,
    metrics: ImportMetrics,
    datasets: Datasets,
}

impl ImportSlots {
    pub fn new(limit: usize, wait: Duration, metrics: ImportMetrics, datasets: Datasets) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            wait,
            metrics,
            datasets,
        }
    }

    /// The dataset a refused request was posted to, as the import route
    /// would name it in the metrics.
    fn dataset_of(&self, req: &Request) -> &str {
        let name = req.uri().path().rsplit('/').next().unwrap_or_default();
        self.datasets.get(name).map_or("", |d| d.name.as_str())
    }
}

pub async fn take_slot(State(slots): State<ImportSlots>, req: Request, next: Next) -> Response {
    let slot = tokio::time::timeout(slots.wait, slots.slots.clone().acquire_owned()).await;
    let Ok(Ok(_slot)) = slot else {
        let error = ApiError::Overloaded { limit: slots.limit };
        slots.metrics.requests(slots.dataset_of(&req), error.code());
        tracing::warn!(limit = slots.limit, "import refused: every slot is taken");
        return error.with_request_id(request_id::of(&req)).into_response();
    };
    next.run(req).await
}
