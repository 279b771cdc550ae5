//! The services as real processes (the binaries users run), for tests that
//! need signals, crashes or the log output: a test can SIGTERM or SIGKILL
//! them and read what they wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::{DEADLINE, TestEnv, http, repo_root};

/// Path of a workspace binary, as built by the same `cargo test
/// --workspace` that runs the test (it builds every binary of a package with
/// integration tests). Building it from here instead would run a second
/// cargo whose feature resolution differs and evicts the outer build's
/// artifacts, rebuilding half the world on every run. A missing or stale
/// binary is reported instead of silently tested.
pub fn workspace_binary(name: &str) -> PathBuf {
    // A test binary is <target>/<profile>/deps/<test>-<hash>; a binary of
    // the workspace (etl-bench) sits in <target>/<profile> itself.
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable folder");
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>")
    } else {
        dir
    }
    .to_path_buf();
    let binary = profile_dir.join(name);
    let how = "build it the way `make test` does: `cargo test --workspace --no-run`";
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} does not exist; {how}", binary.display()));
    let root = repo_root();
    // Sources, and files embedded with include_str! and sqlx::migrate!:
    // etl-core's (with the datasets) go into every binary.
    let embedded: &[&str] = match name {
        "cmd-api" => &["api"],
        _ => &[],
    };
    let sources = [
        name,
        "crates/etl-core",
        "datasets",
        "migrations",
        ".env.example",
    ]
    .into_iter()
    .chain(embedded.iter().copied());
    for source in sources.map(|dir| root.join(dir)) {
        if let Some((path, changed)) = newest_file(&source)
            && changed > built
        {
            panic!(
                "{} is older than {}; {how}",
                binary.display(),
                path.display()
            );
        }
    }
    binary
}

/// The newest source file under `dir` (or `dir` itself, when a file) that
/// goes into a binary.
fn newest_file(dir: &Path) -> Option<(PathBuf, SystemTime)> {
    if dir.is_file() {
        let changed = std::fs::metadata(dir).and_then(|m| m.modified()).ok()?;
        return Some((dir.to_path_buf(), changed));
    }
    let mut newest: Option<(PathBuf, SystemTime)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            // Integration tests are not part of the binary: editing one
            // does not (and need not) rebuild it.
            if entry.file_name() == "tests" {
                continue;
            }
            newest_file(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (path, t))
        };
        if let Some(c) = candidate
            && newest.as_ref().is_none_or(|n| c.1 > n.1)
        {
            newest = Some(c);
        }
    }
    newest
}

/// Runs a workspace binary to completion with only `vars` in its
/// environment, away from any `.env` (a one-shot command such as
/// `cmd-processor redrive`, or a service that should refuse to start).
pub fn run_binary<K, V>(name: &str, args: &[&str], vars: impl IntoIterator<Item = (K, V)>) -> Output
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    Command::new(workspace_binary(name))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"))
}

/// One of the three services, running as a child process with JSON logs
/// written to a file of the test.
pub struct ServiceProcess {
    name: &'static str,
    binary: PathBuf,
    vars: BTreeMap<String, String>,
    log: PathBuf,
    pub base_url: String,
    child: Option<Child>,
}

impl ServiceProcess {
    /// `cmd-api` with the settings of `env` plus `extra`, ready.
    pub async fn api(env: &TestEnv, extra: &[(&str, &str)]) -> Self {
        Self::start("cmd-api", "API_LISTEN_ADDR", env, extra).await
    }

    /// `cmd-processor` with the settings of `env` plus `extra`, ready.
    pub async fn processor(env: &TestEnv, extra: &[(&str, &str)]) -> Self {
        Self::start("cmd-processor", "PROCESSOR_LISTEN_ADDR", env, extra).await
    }

    /// `cmd-monitoring` with the settings of `env` plus `extra`, ready.
    pub async fn monitor(env: &TestEnv, extra: &[(&str, &str)]) -> Self {
        Self::start("cmd-monitoring", "MONITORING_LISTEN_ADDR", env, extra).await
    }

    /// Starts `name` (`cmd-api`, `cmd-processor`, `cmd-monitoring`) with the
    /// settings of `env` plus `extra`, listening on a free port given in
    /// `listen_var`, and waits for readiness 200.
    pub async fn start(
        name: &'static str,
        listen_var: &str,
        env: &TestEnv,
        extra: &[(&str, &str)],
    ) -> Self {
        let binary = workspace_binary(name);
        let dir = repo_root().join(".local/itest/tmp").join(&env.id);
        std::fs::create_dir_all(&dir).unwrap();
        // Kept across restarts: outside the range outgoing connections take.
        let port = crate::own_server::free_port();
        let mut vars = env.vars.clone();
        vars.insert(listen_var.into(), format!("127.0.0.1:{port}"));
        vars.insert("LOG_FORMAT".into(), "json".into());
        vars.insert("RUST_LOG".into(), "info".into());
        for (k, v) in extra {
            vars.insert((*k).into(), (*v).into());
        }
        let mut service = Self {
            name,
            binary,
            vars,
            log: dir.join(format!("{name}.log")),
            base_url: format!("http://127.0.0.1:{port}"),
            child: None,
        };
        service.restart().await;
        service
    }

    /// Starts the process (again), appending to the same log, and waits
    /// for readiness 200.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.binary)
            // Only what the test sets: no developer `.env` or shell settings.
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.vars)
            .current_dir(self.log.parent().unwrap())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
        let url = self.url("/readiness");
        let client = http();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{} not ready within {DEADLINE:?}:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The running process's id (for reading its `/proc` entries).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process running").id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {}", self.name);
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().expect("process running");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "{} still running {timeout:?} after being asked to stop",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: the crash case, nothing gets finished.
    pub async fn kill(&mut self) {
        self.signal("KILL");
        self.wait(Duration::from_secs(10)).await;
    }

    /// The most memory the process has held so far (VmHWM: peak resident
    /// set), for tests that a hostile input cannot blow it up.
    pub fn peak_memory_bytes(&self) -> u64 {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib * 1024
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every log line, parsed; panics on a line that is not a JSON object
    /// (the services promise one per line).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .map(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .filter(|v| v.is_object())
                    .unwrap_or_else(|| {
                        panic!(
                            "{} wrote a line that is not a JSON object: {line}",
                            self.name
                        )
                    })
            })
            .collect()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
        if crate::app::test_log() {
            eprintln!("----- {} log -----\n{}", self.name, self.log_text());
        }
    }
}
