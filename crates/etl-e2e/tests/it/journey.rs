//! What an operator does with the logs: follow one request id through the
//! api, the processor and the monitor, as the binaries write them.

use serde_json::Value;

use etl_testkit::{DEADLINE, ServiceProcess, TestEnv, eventually, example, import};

/// A field of a JSON log line, whether on the event or on its span.
fn field<'a>(line: &'a Value, name: &str) -> Option<&'a str> {
    line.get(name)
        .or_else(|| line.get("span").and_then(|s| s.get(name)))
        .and_then(Value::as_str)
}

fn lines_of<'a>(lines: &'a [Value], request_id: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| field(l, "request_id") == Some(request_id))
        .collect()
}

#[tokio::test]
async fn one_request_id_leads_through_all_three_services_logs() {
    let env = TestEnv::new().await;
    let api_key = format!("key-{}", env.id);
    let api = ServiceProcess::api(&env, &[("API_KEYS", api_key.as_str())]).await;
    let processor = ServiceProcess::processor(&env, &[]).await;
    let monitor = ServiceProcess::monitor(&env, &[]).await;

    // A wrong key first: refused, and (checked below) not logged either.
    let wrong_key = format!("{api_key}-wrong");
    let refused = import(&api, example("companies/c.json"))
        .header("authorization", &format!("Bearer {wrong_key}"))
        .send()
        .await;
    assert_eq!(refused.status, 401);

    let request_id = format!("trace-{}", env.id);
    let accepted = import(&api, example("companies/c.json"))
        .header("x-request-id", &request_id)
        .header("authorization", &format!("Bearer {api_key}"))
        .send()
        .await;
    assert_eq!(accepted.status, 202);
    assert_eq!(accepted.header("x-request-id"), Some(request_id.as_str()));
    let file_id = accepted.file_ids().remove(0);
    let company = "pao-sberbank";

    // The monitor logs both events of the file (from two topics, in either
    // order).
    let monitor_lines = eventually(DEADLINE, "the monitor to log both events", || async {
        let lines = monitor.log_lines();
        let logged = |event_type: &str| {
            lines.iter().any(|l| {
                field(l, "event_type") == Some(event_type)
                    && field(l, "request_id") == Some(request_id.as_str())
            })
        };
        (logged("FileExtractSuccess") && logged("FileLoaded")).then_some(lines.clone())
    })
    .await;

    let api_lines = api.log_lines();
    let ours = lines_of(&api_lines, &request_id);
    assert!(
        ours.iter()
            .any(|l| field(l, "message") == Some("import accepted")),
        "{ours:#?}"
    );
    assert!(
        ours.iter()
            .any(|l| field(l, "file_id") == Some(file_id.as_str())
                && field(l, "company") == Some(company)),
        "the api names the file it stored: {ours:#?}"
    );

    let processor_lines = processor.log_lines();
    let ours = lines_of(&processor_lines, &request_id);
    assert!(
        ours.iter()
            .any(|l| field(l, "message") == Some("file handled")),
        "{ours:#?}"
    );
    for line in &ours {
        assert_eq!(field(line, "file_id"), Some(file_id.as_str()), "{line}");
        assert_eq!(field(line, "company"), Some(company), "{line}");
    }

    let ours = lines_of(&monitor_lines, &request_id);
    let events: Vec<&str> = ours.iter().filter_map(|l| field(l, "event_type")).collect();
    assert_eq!(events.len(), 2, "{ours:#?}");
    assert!(events.contains(&"FileExtractSuccess") && events.contains(&"FileLoaded"));
    for line in &ours {
        assert_eq!(field(line, "file_id"), Some(file_id.as_str()), "{line}");
        assert_eq!(field(line, "company"), Some(company), "{line}");
    }

    // Secrets of the environment, and keys clients sent, never reach a
    // log line.
    let secrets = [
        (
            "the S3 secret key",
            env.vars["S3_SECRET_ACCESS_KEY"].as_str(),
        ),
        ("the API key", api_key.as_str()),
        ("a wrong API key", wrong_key.as_str()),
    ];
    for (name, service) in [
        ("api", &api),
        ("processor", &processor),
        ("monitor", &monitor),
    ] {
        let log = service.log_text();
        for (what, secret) in secrets {
            assert!(!log.contains(secret), "the {name} logged {what}");
        }
    }
}
