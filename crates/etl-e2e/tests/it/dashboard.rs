//! The Grafana dashboard (`deployments/grafana/dashboards/pipeline.json`)
//! only queries metrics the three services really export: every metric name
//! in every panel's PromQL is found in a live `/metrics` after a real import.

use std::collections::BTreeSet;

use serde_json::Value;

use etl_testkit::{
    DEADLINE, ServiceProcess, TestEnv, eventually, example, files_recorded, http, post_import,
    repo_root,
};

/// Every `expr` in the dashboard.
fn expressions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                match (key.as_str(), field) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => expressions(field, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| expressions(item, out)),
        _ => {}
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Name(String),
    Punct(char),
    Other,
}

fn tokens(expr: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    // Label matchers and range selectors hold no metric names.
    let (mut braces, mut brackets) = (0, 0);
    while let Some(c) = chars.next() {
        match c {
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            _ if braces > 0 || brackets > 0 => {}
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let mut name = c.to_string();
                while let Some(&n) = chars.peek() {
                    if n.is_ascii_alphanumeric() || n == '_' || n == ':' {
                        name.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Name(name));
            }
            c if c.is_whitespace() => {}
            '(' | ')' | ',' => out.push(Token::Punct(c)),
            _ => out.push(Token::Other),
        }
    }
    out
}

/// The metric names a PromQL expression selects: names that are not
/// functions (followed by `(`), not keywords, and not label names of a
/// `by (...)` / `without (...)` clause.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 8] = [
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "group_left",
        "group_right",
        "inf",
    ];
    let tokens = tokens(expr);
    let mut names = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if let Token::Name(name) = &tokens[i] {
            let next = tokens.get(i + 1);
            if matches!(name.as_str(), "by" | "without" | "on" | "ignoring") {
                while i < tokens.len() && tokens[i] != Token::Punct(')') {
                    i += 1;
                }
            } else if next != Some(&Token::Punct('('))
                // `sum by (le) (...)`: an aggregation with its clause first.
                && !matches!(next, Some(Token::Name(n)) if n == "by" || n == "without")
                && !KEYWORDS.contains(&name.as_str())
            {
                names.push(name.clone());
            }
        }
        i += 1;
    }
    names
}

/// Series names a service exports (`x_bucket`, `x_sum`, `x_count` for a
/// histogram `x`).
async fn exported(base_url: &str) -> BTreeSet<String> {
    let text = http()
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .expect("/metrics answers")
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_promql_reader_finds_metric_names_and_only_them() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.95, sum by (le, dependency) (rate(dependency_request_duration_seconds_bucket{outcome="error", route=~"/a.*"}[5m])))"#
        ),
        ["dependency_request_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names("sum(rate(a_total[1m])) / ignoring (x) b_total and on(y) c"),
        ["a_total", "b_total", "c"]
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let path = repo_root().join("deployments/grafana/dashboards/pipeline.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "only {} queries", exprs.len());

    let env = TestEnv::new().await;
    let api = ServiceProcess::api(&env, &[]).await;
    let processor = ServiceProcess::processor(&env, &[]).await;
    let monitor = ServiceProcess::monitor(&env, &[]).await;
    for body in [example("companies/c.json"), b"{broken".to_vec()] {
        post_import(&api, body).await;
    }
    eventually(DEADLINE, "the file loaded", || async {
        (files_recorded(&env).await == 1).then_some(())
    })
    .await;
    // Series that appear only once something happened: events counted,
    // partitions assigned and their lag measured.
    for (url, series) in [
        (&monitor.base_url, "monitoring_events_total"),
        (&monitor.base_url, "consumer_lag_records"),
        (&processor.base_url, "consumer_lag_records"),
    ] {
        eventually(DEADLINE, &format!("{series} at {url}"), || async {
            exported(url).await.contains(series).then_some(())
        })
        .await;
    }

    let mut live = BTreeSet::new();
    for service in [&api, &processor, &monitor] {
        live.extend(exported(&service.base_url).await);
    }
    let mut unknown = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            if !live.contains(&name) {
                unknown.insert(format!("{name} (in {expr})"));
            }
            queried.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics no service exports:\n{}",
        unknown.into_iter().collect::<Vec<_>>().join("\n")
    );
    eprintln!(
        "counted: {} queries over {} metric names, all exported",
        exprs.len(),
        queried.len()
    );
}
