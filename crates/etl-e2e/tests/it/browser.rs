//! The monitoring dashboard in a real browser (headless Chromium through
//! playwright-core, `scripts/browser.sh`): opened from the monitoring binary
//! alone, it shows a file posted through the api, live, and finds it by
//! file id and by request id; narrowed to a dataset, it shows only that
//! dataset's events; each row and the details name the event's trace.
//! The screenshot lands in `.local/screenshots/`.

use std::time::Duration;

use serde_json::Value;

use etl_testkit::{OtlpReceiver, ServiceProcess, TestEnv, get_json, repo_root};

/// Generous: the first run on a fresh machine installs Chromium and
/// playwright-core (normally `make test` has done that before the suite).
const BROWSER_DEADLINE: Duration = Duration::from_secs(900);

#[tokio::test]
async fn the_dashboard_shows_a_posted_file_live_and_finds_it() {
    let env = TestEnv::new().await;
    // Exporting, so that the events carry a trace for the page to show.
    let receiver = OtlpReceiver::start().await;
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())];
    let api = ServiceProcess::api(&env, &otel).await;
    let _processor = ServiceProcess::processor(&env, &otel).await;
    let monitor = ServiceProcess::monitor(&env, &[]).await;

    let screenshots = repo_root().join(".local/screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let screenshot = screenshots.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);

    let script = repo_root().join("scripts/browser.sh");
    let (monitor_url, api_url, path) = (monitor.url(""), api.url(""), screenshot.clone());
    let output = tokio::task::spawn_blocking(move || {
        // coreutils `timeout` kills the browser run if it ever hangs.
        std::process::Command::new("timeout")
            .arg(BROWSER_DEADLINE.as_secs().to_string())
            .arg(script)
            .arg("dashboard")
            .arg(monitor_url)
            .arg(api_url)
            .arg(path)
            .output()
            .expect("scripts/browser.sh runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser run failed ({}); see .local/screenshots/dashboard-failure.png\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    eprintln!(
        "the page showed the file loaded {} ms after the POST",
        seen["shown_after_ms"]
    );
    assert_eq!(
        seen["timeline"],
        serde_json::json!(["FileExtractSuccess", "FileLoaded"]),
        "{seen}"
    );
    let file_id = seen["file_id"].as_str().unwrap();
    assert!(
        seen["request_text"].as_str().unwrap().contains("1 files"),
        "{seen}"
    );

    // What the page showed is what the monitor knows.
    let (_, file) = get_json(&monitor, &format!("/files/{file_id}")).await;
    assert_eq!(file["status"], "loaded", "{file}");
    assert_eq!(file["request_id"], seen["request_id"], "{file}");
    let trace_id = file["trace_id"].as_str().unwrap_or_default();
    assert_eq!(trace_id.len(), 32, "{file}");
    assert_eq!(
        (&seen["row_trace_ids"], &seen["detail_trace_ids"]),
        (
            &serde_json::json!([trace_id, trace_id]),
            &serde_json::json!([trace_id])
        ),
        "both rows and the details name the file's trace: {seen}"
    );

    // Narrowed to employees, the page showed an employee's load and only
    // employees' events.
    assert_eq!(seen["employee_shown"], true, "{seen}");
    assert_eq!(
        seen["datasets_shown"],
        serde_json::json!(["employees"]),
        "{seen}"
    );
    assert_eq!(seen["company_rows_after_filter"], 0, "{seen}");
    let employee_id = seen["employee_id"].as_str().unwrap();
    let (_, file) = get_json(&monitor, &format!("/files/{employee_id}")).await;
    assert_eq!(
        (&file["dataset"], &file["status"]),
        (
            &serde_json::json!("employees"),
            &serde_json::json!("loaded")
        ),
        "{file}"
    );

    let png = std::fs::read(&screenshot).expect("the screenshot is written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
}
