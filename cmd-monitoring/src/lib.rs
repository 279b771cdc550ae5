//! cmd-monitoring: tails every pipeline topic, keeps what it saw in
//! Postgres, and answers what happened to every file: `/stats`,
//! `/files/{id}`, `/companies/{c}/files`, `/requests/{id}`, a live
//! `/events/stream` and a dashboard page at `/`.

pub mod app;
pub mod routes;
pub mod settings;
pub mod store;
pub mod tail;

pub use app::Application;
pub use settings::MonitoringSettings;

pub fn service_info() -> etl_core::http::ServiceInfo {
    etl_core::service_info!("cmd-monitoring")
}
