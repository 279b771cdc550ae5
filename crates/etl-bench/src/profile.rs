//! `BENCH_PROFILE=api` or `processor`: `perf record` attached to that
//! service for its phase (the api's ingest, the processor's drain), then
//! the top of `perf report` by symbol, printed and kept in
//! `target/bench/<service>-profile.txt` with the raw
//! `target/bench/<service>.perf.data`. Sampled on the `cpu-clock` software
//! event, which works where hardware counters are not offered (as in many
//! VMs).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use etl_testkit::repo_root;

mod by_crate;

/// Which service to profile, from `BENCH_PROFILE`.
pub fn wanted() -> Option<String> {
    std::env::var("BENCH_PROFILE")
        .ok()
        .filter(|s| !s.is_empty())
}

pub struct Recording {
    service: &'static str,
    perf: Child,
    data: PathBuf,
}

fn out_dir() -> PathBuf {
    repo_root().join("target/bench")
}

/// Starts `perf record` on `pid` when `service` is the one asked for.
pub fn start(service: &'static str, pid: u32) -> Option<Recording> {
    if wanted().as_deref() != Some(service) {
        return None;
    }
    std::fs::create_dir_all(out_dir()).ok()?;
    let data = out_dir().join(format!("{service}.perf.data"));
    let perf = Command::new("perf")
        // DWARF unwinding: release builds keep no frame pointers, and the
        // call chains are what the report by crate is read from.
        .args(["record", "-e", "cpu-clock", "-F", "999"])
        .args(["--call-graph", "dwarf,16384", "-o"])
        .arg(&data)
        .args(["-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match perf {
        Ok(perf) => Some(Recording {
            service,
            perf,
            data,
        }),
        Err(e) => {
            eprintln!(
                "[bench] BENCH_PROFILE={service}: perf did not start ({e}); apt install linux-perf"
            );
            None
        }
    }
}

impl Recording {
    /// Stops the recording and writes the top of its report.
    pub fn finish(mut self) {
        // perf writes its data file on SIGINT.
        let stopped = Command::new("kill")
            .args(["-INT", &self.perf.id().to_string()])
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            eprintln!("[bench] could not stop perf");
            return;
        }
        self.perf.wait().ok();
        let report = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--percent-limit",
                "0.7",
            ])
            .args(["--sort", "dso,symbol", "-g", "none", "-i"])
            .arg(&self.data)
            .output();
        let mut text = match report {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => format!("perf report failed: {e}"),
        };
        let script = Command::new("perf")
            .args(["script", "-F", "comm,ip,sym,dso", "--no-inline", "-i"])
            .arg(&self.data)
            .output();
        match script {
            Ok(out) => text = by_crate::table(&String::from_utf8_lossy(&out.stdout)) + "\n" + &text,
            Err(e) => eprintln!("[bench] perf script failed: {e}"),
        }
        std::fs::write(report_path(self.service), text).ok();
    }
}

fn report_path(service: &str) -> PathBuf {
    out_dir().join(format!("{service}-profile.txt"))
}

/// Prints the top of the profile this run recorded, if it recorded one.
pub fn print_top() {
    let Some(service) = wanted() else { return };
    let path = report_path(&service);
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!(
            "
no profile of {service:?} was recorded (BENCH_PROFILE is api or processor)"
        );
        return;
    };
    println!(
        "
profile of the {service} (perf, cpu-clock at 999 Hz; {}):",
        path.display()
    );
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .take(45)
    {
        println!("  {line}");
    }
}
