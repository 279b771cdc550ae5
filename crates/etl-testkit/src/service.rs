//! Services under test, in-process or as child processes, and what every
//! test asks of them over HTTP: JSON, readiness, an outage followed.

use std::future::Future;
use std::time::Duration;

use crate::{DEADLINE, OwnServer, ServiceProcess, eventually, import};

/// A service of the pipeline running inside the test process; stopped
/// (gracefully, as on SIGTERM) when dropped.
pub struct Service {
    pub base_url: String,
    stop: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Runs `run(stop_token)` in the background and waits until the service
    /// at `addr` answers `/readiness` with 200.
    pub async fn spawn<F, Fut, E>(addr: std::net::SocketAddr, run: F) -> Self
    where
        F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Debug,
    {
        let stop = tokio_util::sync::CancellationToken::new();
        let fut = run(stop.clone());
        let task = tokio::spawn(async move {
            fut.await.expect("service ran");
        });
        let service = Self {
            base_url: format!("http://{addr}"),
            stop,
            task: Some(task),
        };
        let url = service.url("/readiness");
        let client = http();
        eventually(DEADLINE, &format!("{url} to answer 200"), || {
            let request = client.get(&url).send();
            async move { request.await.ok().filter(|r| r.status() == 200).map(|_| ()) }
        })
        .await;
        service
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Stops the service and waits until it has shut down.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("service shut down cleanly");
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A listener on a free loopback port, for `build_with_listener`.
pub async fn local_listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port")
}

/// An HTTP client for the services under test.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// A running service, in-process or as a child process.
pub trait Endpoint {
    fn url(&self, path: &str) -> String;
}

impl Endpoint for Service {
    fn url(&self, path: &str) -> String {
        Service::url(self, path)
    }
}

impl Endpoint for ServiceProcess {
    fn url(&self, path: &str) -> String {
        ServiceProcess::url(self, path)
    }
}

/// `GET {service}{path}`: status and JSON body (`null` if the body is not JSON).
pub async fn get_json(service: &impl Endpoint, path: &str) -> (u16, serde_json::Value) {
    let r = http()
        .get(service.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// `POST {service}/import/companies` with a JSON `body`: status and JSON
/// answer (`null` if the answer is not JSON).
pub async fn post_import(service: &impl Endpoint, body: Vec<u8>) -> (u16, serde_json::Value) {
    let answer = import(service, body).send().await;
    (answer.status, answer.body)
}

/// `GET {service}/readiness`: status and report.
pub async fn readiness(service: &impl Endpoint) -> (u16, serde_json::Value) {
    get_json(service, "/readiness").await
}

/// Takes `server` down with `outage` (e.g. [`OwnServer::kill`]), checks
/// that `service`'s readiness turns 503 naming `check` and only it, runs
/// `while_down`, restarts the server and waits for readiness 200 again.
pub async fn readiness_follows(
    service: &impl Endpoint,
    server: &mut OwnServer,
    outage: impl FnOnce(&mut OwnServer),
    check: &str,
    while_down: impl AsyncFnOnce(),
) {
    outage(server);
    eprintln!("injected: the test's own {check} server taken down");
    let report = eventually(
        DEADLINE,
        &format!("readiness to report {check} down"),
        || async {
            let (status, body) = readiness(service).await;
            (status == 503).then_some(body)
        },
    )
    .await;
    assert_eq!(report["status"], "unavailable");
    for (name, result) in report["checks"].as_object().unwrap() {
        assert_eq!(result["ok"], name != check, "{report}");
    }
    assert!(
        !report["checks"][check]["error"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{report}"
    );

    while_down().await;

    server.restart().await;
    eprintln!("injected: {check} restarted");
    eventually(
        DEADLINE,
        &format!("readiness to recover from {check}"),
        || async { (readiness(service).await.0 == 200).then_some(()) },
    )
    .await;
    eprintln!("counted: readiness 503 naming {check} alone while it was down, 200 after");
}
