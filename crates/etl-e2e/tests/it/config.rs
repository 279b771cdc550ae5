//! Starting a service with help or with broken settings: what a person
//! sees on the terminal.

use std::process::Output;

use etl_testkit::run_binary;

const SERVICES: [&str; 3] = ["cmd-api", "cmd-processor", "cmd-monitoring"];

fn run(name: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
    run_binary(name, args, vars.iter().copied())
}

#[test]
fn help_lists_every_setting_and_touches_nothing() {
    let reference = std::fs::read_to_string(etl_testkit::repo_root().join(".env.example")).unwrap();
    let variables: Vec<&str> = reference
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, _)| k.trim_start_matches("# ").trim())
        })
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(variables.len() > 20, "{variables:?}");
    for service in SERVICES {
        // An unusable broker address proves nothing is contacted.
        let out = run(service, &["--help"], &[("KAFKA_BROKERS", "")]);
        assert!(out.status.success(), "{service}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with(&format!("usage: {service}")), "{text}");
        for var in &variables {
            assert!(
                text.contains(var),
                "{service} --help does not mention {var}"
            );
        }
    }
}

#[test]
fn a_bad_setting_is_named_in_one_line_without_a_backtrace() {
    for service in SERVICES {
        for (var, value, expected) in [
            ("KAFKA_BROKERS", "", "KAFKA_BROKERS is empty"),
            ("READINESS_TIMEOUT_MS", "soon", "READINESS_TIMEOUT_MS"),
            ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ] {
            // Even where backtraces are switched on.
            let out = run(service, &[], &[(var, value), ("RUST_BACKTRACE", "1")]);
            assert_eq!(out.status.code(), Some(1), "{service} {var}: {out:?}");
            let stderr = String::from_utf8(out.stderr).unwrap();
            assert_eq!(stderr.lines().count(), 1, "{service}: {stderr}");
            assert!(
                stderr.starts_with(&format!("{service}: error: invalid configuration: ")),
                "{stderr}"
            );
            assert!(stderr.contains(expected), "{service}: {stderr}");
            assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
        }
    }
}

#[test]
fn the_processor_lists_its_commands_and_refuses_unknown_ones() {
    let out = run("cmd-processor", &["--help"], &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    for command in ["run", "migrate", "rollback", "redrive", "replay"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} missing from:\n{text}"
        );
    }
    let out = run("cmd-processor", &["rollback", "two"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("invalid value 'two'"), "{stderr}");
    let out = run("cmd-processor", &["migrat"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("unrecognized subcommand 'migrat'"),
        "{stderr}"
    );
}
