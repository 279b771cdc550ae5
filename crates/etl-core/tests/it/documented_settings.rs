//! Every environment variable a service reads is documented in
//! `.env.example` and in the README's configuration table, so the two never
//! fall behind the code.

use std::collections::BTreeSet;
use std::path::Path;

use etl_testkit::repo_root;

const READERS: [&str; 7] = [
    "string",
    "required",
    "non_empty",
    "parse",
    "socket_addr",
    "millis",
    "bool",
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Names passed to `env.<reader>("NAME", ...)` in the services' source,
/// unit-test modules excluded.
fn variables_read_by_the_code() -> BTreeSet<String> {
    let root = repo_root();
    let mut files = Vec::new();
    for dir in [
        "crates/etl-core/src",
        "cmd-api/src",
        "cmd-processor/src",
        "cmd-monitoring/src",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut vars = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for reader in READERS {
            let needle = format!("env.{reader}(\"");
            for (at, _) in code.match_indices(&needle) {
                let rest = &code[at + needle.len()..];
                let name: String = rest.chars().take_while(|c| *c != '"').collect();
                vars.insert(name);
            }
        }
    }
    vars
}

#[test]
fn every_setting_is_in_env_example_and_the_readme() {
    let vars = variables_read_by_the_code();
    assert!(
        vars.contains("KAFKA_BROKERS") && vars.len() > 20,
        "scan found {vars:?}"
    );
    let root = repo_root();
    let example = std::fs::read_to_string(root.join(".env.example")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let in_example: BTreeSet<&str> = example
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    let missing_example: Vec<&String> = vars
        .iter()
        .filter(|v| !in_example.contains(v.as_str()))
        .collect();
    let missing_readme: Vec<&String> = vars
        .iter()
        .filter(|v| !readme.contains(&format!("| `{v}` |")))
        .collect();
    assert!(
        missing_example.is_empty(),
        ".env.example lacks {missing_example:?}"
    );
    assert!(
        missing_readme.is_empty(),
        "the README's table lacks {missing_readme:?}"
    );
    let stale: Vec<&&str> = in_example
        .iter()
        .filter(|v| !vars.contains(**v) && **v != "RUST_LOG")
        .collect();
    assert!(
        stale.is_empty(),
        ".env.example documents variables no code reads: {stale:?}"
    );
}
