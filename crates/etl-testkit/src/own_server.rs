//! A server of the local stack (tansu or s3s-fs) owned by one test, on a
//! free port with its own data folder, so the test can kill and restart it
//! without disturbing other tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::{DEADLINE, eventually, repo_root, stack_vars};

pub struct OwnServer {
    name: &'static str,
    bin: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl OwnServer {
    /// A tansu broker with durable (SQLite) storage; `brokers()` is its address.
    pub async fn tansu(test_id: &str) -> Self {
        Self::start("tansu", "TANSU_BIN", test_id, |port| {
            let url = format!("tcp://127.0.0.1:{port}");
            vec![
                "broker".into(),
                "--listener-url".into(),
                url.clone(),
                "--advertised-listener-url".into(),
                url,
                // tansu resolves this against its working directory, the data folder.
                "--storage-engine".into(),
                "sqlite://tansu.db".into(),
            ]
        })
        .await
    }

    /// An s3s-fs server with the stack's credentials; `endpoint()` is its URL.
    pub async fn s3s_fs(test_id: &str) -> Self {
        let vars = stack_vars();
        let (key, secret) = (
            vars["S3_ACCESS_KEY_ID"].clone(),
            vars["S3_SECRET_ACCESS_KEY"].clone(),
        );
        Self::start("s3s-fs", "S3S_FS_BIN", test_id, move |port| {
            vec![
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--access-key".into(),
                key.clone(),
                "--secret-key".into(),
                secret.clone(),
                "data".into(),
            ]
        })
        .await
    }

    async fn start(
        name: &'static str,
        bin_var: &str,
        test_id: &str,
        args: impl Fn(u16) -> Vec<String>,
    ) -> Self {
        let bin = stack_vars()
            .get(bin_var)
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{bin_var} missing from the stack env; run `make itest-up`"));
        let dir = repo_root()
            .join(".local/itest/tmp")
            .join(format!("{test_id}-{name}"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            name,
            bin,
            args: args(port),
            dir,
            port,
            child: None,
        };
        server.restart().await;
        server
    }

    /// Starts the server (again) on the same port and data, and waits until
    /// it listens.
    pub async fn restart(&mut self) {
        self.kill();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", self.name)))
            .unwrap();
        let child = Command::new(&self.bin)
            .current_dir(&self.dir)
            .args(&self.args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        eventually(
            DEADLINE,
            &format!("{} to listen on {addr}", self.name),
            || {
                let addr = addr.clone();
                async move { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) }
            },
        )
        .await;
    }

    /// The hardest stop (SIGKILL): no chance to flush anything.
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
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
