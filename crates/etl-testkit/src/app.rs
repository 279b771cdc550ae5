//! The services of a test, started inside the test's process on free
//! ports with the test's own slice of the stack ([`TestEnv`]), and what
//! tests do with them: post an import, publish an event, read the bucket.
//!
//! Each service is behind a feature (`api`, `processor`, `monitor`), so a
//! crate's tests build only the services they start. The tests that need
//! signals, crashes or log output start binaries instead
//! ([`crate::ServiceProcess`]).
//!
//! `TEST_LOG=1` prints the in-process services' logs (`RUST_LOG` and
//! `LOG_FORMAT` apply) and, when a test drops a service process, that
//! process's log.

use prometheus::Registry;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use etl_core::bus::EventPublisher;
use etl_core::metrics::DependencyTimer;
use etl_core::storage::{ObjectStore, S3Settings};

use crate::{Endpoint, TestEnv, http};

/// Whether `TEST_LOG` asks for the services' logs.
pub fn test_log() -> bool {
    std::env::var_os("TEST_LOG").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Installs the log subscriber once per test process when `TEST_LOG` is
/// set; without it the in-process services log nowhere.
#[cfg(any(feature = "api", feature = "processor", feature = "monitor"))]
fn init_test_log() {
    if test_log() {
        let format = std::env::var("LOG_FORMAT")
            .ok()
            .and_then(|f| f.parse().ok())
            .unwrap_or(etl_core::telemetry::LogFormat::Pretty);
        etl_core::telemetry::init(format, None);
    }
}

impl TestEnv {
    /// The api of this test, ready, with `extra` settings.
    #[cfg(feature = "api")]
    pub async fn spawn_api(&self, extra: &[(&str, &str)]) -> crate::Service {
        init_test_log();
        let settings = cmd_api::ApiSettings::from_env(&self.env(extra)).expect("api settings");
        let app =
            cmd_api::Application::build_with_listener(settings, crate::local_listener().await)
                .await
                .expect("the api starts");
        crate::Service::spawn(app.local_addr(), |stop| {
            app.run_until_stopped(stop, std::time::Duration::from_secs(5))
        })
        .await
    }

    /// The processor of this test, ready, with `extra` settings.
    #[cfg(feature = "processor")]
    pub async fn spawn_processor(&self, extra: &[(&str, &str)]) -> crate::Service {
        init_test_log();
        let settings = cmd_processor::ProcessorSettings::from_env(&self.env(extra))
            .expect("processor settings");
        let app = cmd_processor::Application::build_with_listener(
            settings,
            crate::local_listener().await,
        )
        .await
        .expect("the processor starts");
        crate::Service::spawn(app.local_addr(), |stop| app.run_until_stopped(stop)).await
    }

    /// The monitor of this test, ready, with `extra` settings.
    #[cfg(feature = "monitor")]
    pub async fn spawn_monitor(&self, extra: &[(&str, &str)]) -> crate::Service {
        init_test_log();
        let settings = cmd_monitoring::MonitoringSettings::from_env(&self.env(extra))
            .expect("monitoring settings");
        let app = cmd_monitoring::Application::build_with_listener(
            settings,
            crate::local_listener().await,
        )
        .await
        .expect("the monitor starts");
        crate::Service::spawn(app.local_addr(), |stop| app.run_until_stopped(stop)).await
    }

    /// A publisher on this test's topics, as the services publish.
    pub fn publisher(&self) -> EventPublisher {
        let registry = Registry::new();
        EventPublisher::new(&self.kafka(), &registry, DependencyTimer::new(&registry))
            .expect("a publisher")
    }

    /// This test's bucket, as a service with `extra` settings reaches it.
    pub fn store(&self, extra: &[(&str, &str)]) -> ObjectStore {
        let settings = S3Settings::from_env(&self.env(extra)).expect("s3 settings");
        ObjectStore::new(&settings, DependencyTimer::new(&Registry::new()))
    }
}

/// What the api answered an import.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The body as JSON (`null` when it is not JSON).
    pub body: Value,
    pub headers: HeaderMap,
}

impl Answer {
    /// The `file_id`s of a 202, in the order of the answer.
    pub fn file_ids(&self) -> Vec<String> {
        self.body["files"]
            .as_array()
            .map(|files| {
                files
                    .iter()
                    .map(|f| f["file_id"].as_str().expect("a file id").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `POST /import/companies`, JSON by default; add headers, then `send`.
pub struct ImportRequest {
    url: String,
    body: reqwest::Body,
    headers: HeaderMap,
}

impl ImportRequest {
    pub fn new(api: &impl Endpoint, path_and_query: &str, body: impl Into<reqwest::Body>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Self {
            url: api.url(path_and_query),
            body: body.into(),
            headers,
        }
    }

    /// Sets a request header, replacing one set before (the content type).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a header name");
        let value = HeaderValue::from_str(value).expect("a header value");
        self.headers.insert(name, value);
        self
    }

    pub async fn send(self) -> Answer {
        let request = http().post(&self.url).headers(self.headers).body(self.body);
        let response = request.send().await.expect("the api answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            body,
            headers,
        }
    }
}

/// `POST /import/companies` with a JSON body.
pub fn import(api: &impl Endpoint, body: impl Into<reqwest::Body>) -> ImportRequest {
    ImportRequest::new(api, "/import/companies", body)
}
