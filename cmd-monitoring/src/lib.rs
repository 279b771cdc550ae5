//! cmd-monitoring: tails every pipeline topic and reports what happened to
//! every file (for now as one JSON log line per event).

pub mod app;
pub mod settings;
pub mod tail;

pub use app::Application;
pub use settings::MonitoringSettings;

pub fn service_info() -> etl_core::http::ServiceInfo {
    etl_core::service_info!("cmd-monitoring")
}
