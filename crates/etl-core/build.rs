//! Embeds what `/liveness` reports about the build, and rebuilds when the
//! embedded migrations change.
//!
//! `ETL_GIT_SHA`, `ETL_GIT_BRANCH` and `ETL_BUILD_TIME` from the environment
//! win (Docker builds pass them as build args, without a `.git`); otherwise
//! they are read from git; outside a checkout they are `unknown`, never a
//! build failure.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn setting(var: &str, from_git: impl FnOnce() -> Option<String>) -> String {
    println!("cargo:rerun-if-env-changed={var}");
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(from_git)
        .unwrap_or_else(|| "unknown".to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
    // A new commit or a branch switch moves one of these.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let head_ref = git(&["symbolic-ref", "-q", "HEAD"]);
        // Only files that exist: cargo re-runs for a missing one every time.
        for file in ["HEAD", "packed-refs"]
            .into_iter()
            .map(str::to_owned)
            .chain(head_ref)
        {
            let path = format!("{git_dir}/{file}");
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    let sha = setting("ETL_GIT_SHA", || git(&["rev-parse", "HEAD"]));
    let branch = setting("ETL_GIT_BRANCH", || {
        git(&["rev-parse", "--abbrev-ref", "HEAD"])
    });
    // When this script last ran: the build of the current commit.
    let built = setting("ETL_BUILD_TIME", || {
        let out = Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .ok()?;
        Some(String::from_utf8(out.stdout).ok()?.trim().to_owned()).filter(|t| !t.is_empty())
    });
    println!("cargo:rustc-env=ETL_BUILD_GIT_SHA={sha}");
    println!("cargo:rustc-env=ETL_BUILD_GIT_BRANCH={branch}");
    println!("cargo:rustc-env=ETL_BUILD_TIME_EMBEDDED={built}");
}
