//! A server of the local stack (PostgreSQL, tansu or s3s-fs) owned by one
//! test, on a free port with its own data folder, so the test can stop, kill
//! and restart it without disturbing other tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::{DEADLINE, eventually, repo_root, stack_vars};

pub struct OwnServer {
    name: &'static str,
    /// Program and arguments (behind `runuser` where the server refuses root).
    argv: Vec<String>,
    dir: PathBuf,
    pub port: u16,
    /// The signal that asks this server to shut down cleanly.
    stop_signal: &'static str,
    /// Where the server writes its own pid, when `child` is a wrapper.
    pid_file: Option<PathBuf>,
    child: Option<Child>,
}

impl OwnServer {
    /// A tansu broker with durable (SQLite) storage; `brokers()` is its address.
    pub async fn tansu(test_id: &str) -> Self {
        let bin = stack_bin("TANSU_BIN");
        Self::start("tansu", test_id, "INT", |port, _| {
            let url = format!("tcp://127.0.0.1:{port}");
            let mut argv = vec![
                bin.clone(),
                "broker".into(),
                "--listener-url".into(),
                url.clone(),
                "--advertised-listener-url".into(),
                url,
            ];
            // tansu resolves this against its working directory, the data folder.
            argv.extend(["--storage-engine".into(), "sqlite://tansu.db".into()]);
            (argv, None)
        })
        .await
    }

    /// An s3s-fs server with the stack's credentials; `endpoint()` is its URL.
    pub async fn s3s_fs(test_id: &str) -> Self {
        let bin = stack_bin("S3S_FS_BIN");
        let vars = stack_vars();
        let (key, secret) = (
            vars["S3_ACCESS_KEY_ID"].clone(),
            vars["S3_SECRET_ACCESS_KEY"].clone(),
        );
        Self::start("s3s-fs", test_id, "TERM", move |port, _| {
            let argv = vec![
                bin.clone(),
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--access-key".into(),
                key.clone(),
                "--secret-key".into(),
                secret.clone(),
                "data".into(),
            ];
            (argv, None)
        })
        .await
    }

    /// A PostgreSQL cluster of its own (trust auth, fsync off);
    /// `database_url()` reaches its `postgres` database.
    pub async fn postgres(test_id: &str) -> Self {
        let bin = PathBuf::from(stack_bin("PG_BIN"));
        Self::start("postgres", test_id, "INT", move |port, dir| {
            let data = dir.join("pgdata");
            if !data.join("PG_VERSION").exists() {
                init_cluster(&bin, dir, &data);
            }
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
            (argv, Some(data.join("postmaster.pid")))
        })
        .await
    }

    async fn start(
        name: &'static str,
        test_id: &str,
        stop_signal: &'static str,
        command: impl Fn(u16, &Path) -> (Vec<String>, Option<PathBuf>),
    ) -> Self {
        let dir = repo_root()
            .join(".local/itest/tmp")
            .join(format!("{test_id}-{name}"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (argv, pid_file) = command(port, &dir);
        let mut server = Self {
            name,
            argv,
            dir,
            port,
            stop_signal,
            pid_file,
            child: None,
        };
        server.restart().await;
        server
    }

    /// Starts the server (again) on the same port and data, and waits until
    /// it answers.
    pub async fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", self.name)))
            .unwrap();
        let child = Command::new(&self.argv[0])
            .current_dir(&self.dir)
            .args(&self.argv[1..])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        eventually(
            DEADLINE,
            &format!("{} to answer on {addr}", self.name),
            || {
                let (addr, url) = (addr.clone(), self.database_url());
                let postgres = self.name == "postgres";
                async move {
                    tokio::net::TcpStream::connect(addr).await.ok()?;
                    // PostgreSQL listens before it accepts sessions (recovery).
                    if postgres {
                        sqlx::PgConnection::connect(&url)
                            .await
                            .ok()?
                            .close()
                            .await
                            .ok()?;
                    }
                    Some(())
                }
            },
        )
        .await;
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

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
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

fn stack_bin(var: &str) -> String {
    stack_vars()
        .get(var)
        .cloned()
        .unwrap_or_else(|| panic!("{var} missing from the stack env; run `make itest-up`"))
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
