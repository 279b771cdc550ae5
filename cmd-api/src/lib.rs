//! cmd-api: accepts company imports over HTTP, stores each company file in
//! S3 and announces it on Kafka.

pub mod app;
pub mod auth;
pub mod datasets;
pub mod docs;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod import;
pub mod limit;
pub mod linger;
pub mod metrics;
pub mod request_id;
pub mod settings;
pub mod state;
pub mod upload;

pub use app::Application;
pub use settings::ApiSettings;

pub fn service_info() -> etl_core::http::ServiceInfo {
    etl_core::service_info!("cmd-api")
}
