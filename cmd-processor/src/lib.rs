//! cmd-processor: consumes `FileExtractSuccess`, validates each stored
//! company file and loads it into Postgres, emitting `FileLoaded` or
//! `ValidationError`.

pub mod app;
pub mod catalog;
mod consume;
pub mod db;
pub mod loader;
pub mod metrics;
mod offsets;
mod outcome;
mod process_file;
mod progress;
pub mod record;
pub mod redrive;
pub mod replay;
mod rules;
pub mod settings;
pub mod validate;

pub use app::Application;
pub use settings::ProcessorSettings;

pub fn service_info() -> etl_core::http::ServiceInfo {
    etl_core::service_info!("cmd-processor")
}
