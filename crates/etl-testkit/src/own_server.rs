//! A server of the local stack (PostgreSQL, a Kafka node or SeaweedFS)
//! owned by one test, on free ports with its own data folder, so the test
//! can stop, kill and restart it without disturbing other tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

use etl_core::config::Env;
use etl_core::metrics::DependencyTimer;
use etl_core::storage::{ObjectStore, S3Settings};

use crate::{DEADLINE, eventually, repo_root, stack_vars};

pub struct OwnServer {
    name: String,
    /// Program and arguments (behind `runuser` where the server refuses root).
    argv: Vec<String>,
    /// Environment variables of the program.
    envs: Vec<(String, String)>,
    dir: PathBuf,
    pub port: u16,
    /// The signal that asks this server to shut down cleanly.
    stop_signal: &'static str,
    /// Where the server writes its own pid, when `child` is a wrapper.
    pid_file: Option<PathBuf>,
    ready: Ready,
    child: Option<Child>,
    /// The length of the log when the running process was started: what it
    /// wrote since is after that.
    log_start: u64,
}

/// When a started server counts as up (each also needs its port to accept
/// connections).
#[derive(Clone, Copy)]
pub(crate) enum Ready {
    /// Its port accepts connections and a PostgreSQL session opens (it
    /// listens before it accepts sessions, during recovery).
    AcceptsSessions,
    /// It wrote this line to its log since it was started.
    Logged(&'static str),
    /// Its S3 port stores an object: a SeaweedFS just restarted answers
    /// reads a moment before its volume server has registered again, and
    /// refuses writes until then.
    StoresObjects,
}

/// Ports for the tests' own servers: below Linux's ephemeral range
/// (32768–60999), where an outgoing connection of any process could take a
/// port between our choosing it and the server binding it, or while a
/// killed server is down; and above the stacks' ports (19000–29194).
const TEST_PORTS: std::ops::Range<u16> = 30000..32700;
static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

/// A free loopback port (free when asked: the caller binds it soon after).
/// Ports are handed out in turn within the process, from a random start, so
/// that tests running side by side do not pick the same one.
pub(crate) fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `count` consecutive free loopback ports.
pub(crate) fn free_ports(count: u16) -> u16 {
    use std::sync::atomic::Ordering;
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let _ = NEXT_PORT.compare_exchange(
        0,
        fastrand::u16(0..span) + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let offset = NEXT_PORT.fetch_add(count, Ordering::SeqCst) % span;
        let first = TEST_PORTS.start + offset;
        if first + count > TEST_PORTS.end {
            continue;
        }
        let all_free =
            (first..first + count).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return first;
        }
    }
    panic!("no {count} free ports in {TEST_PORTS:?}");
}

impl OwnServer {
    /// A SeaweedFS S3 server with the stack's credentials; `endpoint()` is
    /// its URL.
    pub async fn seaweedfs(test_id: &str) -> Self {
        let vars = stack_vars();
        let envs = ["WEED_BIN", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"]
            .map(|var| (var.to_owned(), stack_var(&vars, var)))
            .to_vec();
        // S3 on the first port, the other parts of SeaweedFS on the nine after it.
        let port = free_ports(10);
        let dir = server_dir(test_id, "seaweedfs");
        let script = repo_root().join("scripts/seaweedfs/server.sh");
        let argv = vec![
            script.display().to_string(),
            dir.display().to_string(),
            port.to_string(),
        ];
        let mut server = Self::new("seaweedfs".into(), dir, port, argv, Ready::StoresObjects);
        server.envs = envs;
        server.restart().await;
        server
    }

    /// One node of a Kafka cluster of the test's own (see [`crate::OwnKafka`]),
    /// spawned but not yet waited for: a node is ready only once a quorum
    /// of its cluster runs.
    pub(crate) fn kafka_node(
        name: String,
        dir: PathBuf,
        port: u16,
        node_args: Vec<String>,
    ) -> Self {
        let script = repo_root().join("scripts/kafka/node.sh");
        let mut argv = vec![script.display().to_string(), dir.display().to_string()];
        argv.extend(node_args);
        let mut server = Self::new(name, dir, port, argv, Ready::Logged("Kafka Server started"));
        server.envs = vec![("KAFKA_HOME".into(), stack_var(&stack_vars(), "KAFKA_HOME"))];
        server.stop_signal = "TERM";
        server.spawn();
        server
    }

    /// A PostgreSQL cluster of its own (trust auth, fsync off);
    /// `database_url()` reaches its `postgres` database.
    pub async fn postgres(test_id: &str) -> Self {
        let bin = PathBuf::from(stack_var(&stack_vars(), "PG_BIN"));
        let dir = server_dir(test_id, "postgres");
        let data = dir.join("pgdata");
        if !data.join("PG_VERSION").exists() {
            init_cluster(&bin, &dir, &data);
        }
        let port = free_port();
        let mut argv = as_postgres_user();
        argv.extend([
            bin.join("postgres").display().to_string(),
            "-D".into(),
            data.display().to_string(),
            "-p".into(),
            port.to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "unix_socket_directories=".into(),
            "-c".into(),
            "fsync=off".into(),
        ]);
        let mut server = Self::new("postgres".into(), dir, port, argv, Ready::AcceptsSessions);
        server.stop_signal = "INT";
        server.pid_file = Some(data.join("postmaster.pid"));
        server.restart().await;
        server
    }

    fn new(name: String, dir: PathBuf, port: u16, argv: Vec<String>, ready: Ready) -> Self {
        Self {
            name,
            argv,
            envs: Vec::new(),
            dir,
            port,
            stop_signal: "TERM",
            pid_file: None,
            ready,
            child: None,
            log_start: 0,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.name))
    }

    /// Starts the server (again) on the same ports and data, without
    /// waiting for it.
    pub(crate) fn spawn(&mut self) {
        self.kill();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        self.log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let child = Command::new(&self.argv[0])
            .current_dir(&self.dir)
            .args(&self.argv[1..])
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
    }

    /// Waits until the server started last is up.
    pub(crate) async fn wait_ready(&self) {
        let addr = format!("127.0.0.1:{}", self.port);
        eventually(
            DEADLINE,
            &format!("{} to be up on {addr}", self.name),
            || {
                let (addr, url, log) = (addr.clone(), self.database_url(), self.log_path());
                let (ready, log_start) = (self.ready, self.log_start);
                let (endpoint, envs) = (self.endpoint(), self.envs.clone());
                async move {
                    tokio::net::TcpStream::connect(addr).await.ok()?;
                    match ready {
                        Ready::AcceptsSessions => {
                            sqlx::PgConnection::connect(&url)
                                .await
                                .ok()?
                                .close()
                                .await
                                .ok()?;
                        }
                        Ready::Logged(line) => {
                            let text = std::fs::read(&log).ok()?;
                            let since = text.get(log_start as usize..)?;
                            String::from_utf8_lossy(since)
                                .contains(line)
                                .then_some(())?;
                        }
                        Ready::StoresObjects => stores_an_object(endpoint, envs).await?,
                    }
                    Some(())
                }
            },
        )
        .await;
    }

    /// Starts the server (again) on the same ports and data, and waits
    /// until it is up.
    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_ready().await;
    }

    /// A clean stop (what `systemctl stop` would do); waits until the
    /// process is gone, killing it if it takes longer than 20 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = self
            .pid_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|text| text.lines().next().map(str::to_owned))
            .unwrap_or_else(|| child.id().to_string());
        Command::new("kill")
            .args([&format!("-{}", self.stop_signal), &pid])
            .status()
            .ok();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().ok();
        child.wait().ok();
    }

    /// Freezes the server (SIGSTOP) for `how_long`, then lets it go on
    /// (SIGCONT): a stalled VM or disk, as its clients see it. Requests sent
    /// meanwhile are answered late, in a burst.
    pub async fn freeze_for(&self, how_long: Duration) {
        let pid = self
            .child
            .as_ref()
            .expect("server running")
            .id()
            .to_string();
        let signal = |sig: &str| {
            let ok = Command::new("kill")
                .args([sig, &pid])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} {}", self.name);
        };
        signal("-STOP");
        tokio::time::sleep(how_long).await;
        signal("-CONT");
    }

    /// The hardest stop (SIGKILL): no chance to flush anything. (For
    /// PostgreSQL, use [`OwnServer::stop`]: a killed postmaster leaves its
    /// backends behind for a while.)
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn database_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.stop();
        // A failed test keeps the server's data and log to look at.
        if std::thread::panicking() {
            eprintln!("{} kept for a look: {}", self.name, self.dir.display());
        } else {
            std::fs::remove_dir_all(&self.dir).ok();
        }
    }
}

/// Stores a small object in a probe bucket of the S3 server at `endpoint`,
/// with the credentials among `envs`.
async fn stores_an_object(endpoint: String, envs: Vec<(String, String)>) -> Option<()> {
    let mut vars = envs;
    vars.extend([
        ("S3_ENDPOINT".to_owned(), endpoint),
        ("S3_BUCKET".to_owned(), "ready-probe".to_owned()),
        ("S3_TIMEOUT_MS".to_owned(), "2000".to_owned()),
    ]);
    let settings = S3Settings::from_env(&Env::with_overrides(vars)).ok()?;
    let store = ObjectStore::new(
        &settings,
        DependencyTimer::new(&prometheus::Registry::new()),
    );
    store.ensure_bucket().await.ok()?;
    store.put("probe", b"ready".to_vec()).await.ok()?;
    Some(())
}

fn stack_var(vars: &std::collections::BTreeMap<String, String>, var: &str) -> String {
    vars.get(var)
        .cloned()
        .unwrap_or_else(|| panic!("{var} missing from the stack env; run `make itest-up`"))
}

/// `.local/itest/tmp/<test id>-<name>`, created.
pub(crate) fn server_dir(test_id: &str, name: &str) -> PathBuf {
    let dir = repo_root()
        .join(".local/itest/tmp")
        .join(format!("{test_id}-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// initdb and postgres refuse to run as root: then they run as `postgres`.
fn as_postgres_user() -> Vec<String> {
    if running_as_root() {
        ["runuser", "-u", "postgres", "--"]
            .map(String::from)
            .to_vec()
    } else {
        Vec::new()
    }
}

fn init_cluster(bin: &Path, dir: &Path, data: &Path) {
    if running_as_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown {} to postgres", dir.display());
    }
    let mut argv = as_postgres_user();
    argv.push(bin.join("initdb").display().to_string());
    let output = Command::new(&argv[0])
        .args(&argv[1..])
        .arg("-D")
        .arg(data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ])
        .output()
        .expect("run initdb");
    assert!(
        output.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
