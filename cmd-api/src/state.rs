//! What every import handler is given.

use std::sync::Arc;

use etl_core::bus::EventPublisher;
use etl_core::storage::ObjectStore;

use crate::idempotency::Idempotency;
use crate::metrics::ImportMetrics;
use crate::settings::ApiSettings;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<ApiSettings>,
    pub store: ObjectStore,
    pub publisher: EventPublisher,
    pub metrics: ImportMetrics,
    pub idempotency: Idempotency,
}
