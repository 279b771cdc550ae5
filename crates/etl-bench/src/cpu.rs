//! CPU time each process of the stack spends on a phase, read from
//! `/proc/<pid>/stat` before and after it: what a file costs, which on two
//! shared cores is more repeatable than a rate.
//!
//! A process of the stack counts with its descendants (PostgreSQL's
//! backends, a wrapper's child): the live ones' user + system time, and
//! what the exited ones left in their parents' `cutime`/`cstime`. The bench
//! client counts alone: the services it starts are its children.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::stats::Phase;

/// The processes measured, by role (several pids add up: the broker's
/// three nodes).
#[derive(Debug, Clone, Default)]
pub struct Meter {
    roles: Vec<Role>,
}

#[derive(Debug, Clone)]
struct Role {
    name: &'static str,
    pids: Vec<u32>,
    /// With its descendants, or its own threads alone.
    tree: bool,
}

/// CPU seconds per role at one moment.
#[derive(Debug, Clone)]
pub struct Sample(BTreeMap<&'static str, f64>);

/// CPU µs per operation (or per second) of a phase, per role.
#[derive(Debug, Clone, Default)]
pub struct Cost(BTreeMap<&'static str, f64>);

impl Meter {
    /// The stack started by `scripts/stack.sh` in `stack_dir` (its pid
    /// files), and this process, the load generator.
    pub fn of_stack(stack_dir: &Path) -> anyhow::Result<Self> {
        let pid = |file: &str| -> anyhow::Result<u32> {
            let path = stack_dir.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let first = text.lines().next().unwrap_or_default().trim();
            first
                .parse()
                .map_err(|_| anyhow::anyhow!("{}: no pid in {first:?}", path.display()))
        };
        let brokers = std::fs::read_dir(stack_dir.join("run"))?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                name.starts_with("kafka-").then_some(name)
            })
            .map(|name| pid(&format!("run/{name}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let role = |name, pids, tree| Role { name, pids, tree };
        Ok(Self {
            roles: vec![
                role("broker", brokers, true),
                role("s3", vec![pid("run/seaweedfs.pid")?], true),
                role("postgres", vec![pid("pg/postmaster.pid")?], true),
                role("bench client", vec![std::process::id()], false),
            ],
        })
    }

    /// CPU seconds of every role now, and of `services` (those of the
    /// phase, by role and pid).
    pub fn sample(&self, services: &[(&'static str, u32)]) -> Sample {
        let table = ProcessTable::read();
        let services = services.iter().map(|&(name, pid)| Role {
            name,
            pids: vec![pid],
            tree: true,
        });
        let seconds = |role: &Role| {
            let ticks: u64 = role
                .pids
                .iter()
                .map(|&pid| {
                    if role.tree {
                        table.tree_ticks(pid)
                    } else {
                        table.own_ticks(pid)
                    }
                })
                .sum();
            ticks as f64 / ticks_per_second()
        };
        Sample(
            self.roles
                .iter()
                .cloned()
                .chain(services)
                .map(|role| (role.name, seconds(&role)))
                .collect(),
        )
    }

    /// Runs `phase` and adds what it cost each process per operation done.
    pub async fn measure(
        &self,
        services: &[(&'static str, u32)],
        phase: impl Future<Output = Phase>,
    ) -> Phase {
        let before = self.sample(services);
        let mut phase = phase.await;
        phase.cpu = Some(self.sample(services).cost_since(&before, phase.done));
        phase
    }

    /// CPU seconds this process's children spent that it has waited for
    /// (a load generator it ran to the end); a live child shows only once
    /// it is reaped.
    pub fn reaped_children_seconds() -> f64 {
        let ticks = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| parse_stat(&stat))
            .map_or(0, |(_, ticks)| ticks.reaped);
        ticks as f64 / ticks_per_second()
    }

    /// µs of CPU per second each process spends while nothing is asked of
    /// it: the part of every phase's cost that is not the phase's.
    pub async fn idle(&self, period: Duration) -> Cost {
        let before = self.sample(&[]);
        tokio::time::sleep(period).await;
        self.sample(&[])
            .per_unit_since(&before, period.as_secs_f64())
    }
}

impl Sample {
    /// µs per operation since `before`; a role absent before (a service
    /// started during the phase) counts from its start.
    pub fn cost_since(&self, before: &Sample, operations: u64) -> Cost {
        self.per_unit_since(before, operations.max(1) as f64)
    }

    fn per_unit_since(&self, before: &Sample, units: f64) -> Cost {
        Cost(
            self.0
                .iter()
                .map(|(role, seconds)| {
                    let spent = seconds - before.0.get(role).copied().unwrap_or(0.0);
                    (*role, spent * 1e6 / units)
                })
                .collect(),
        )
    }
}

impl Cost {
    /// Adds `us` per operation to `role`'s.
    pub fn add(&mut self, role: &'static str, us: f64) {
        *self.0.entry(role).or_default() += us;
    }

    pub fn of(&self, role: &str) -> Option<f64> {
        self.0.get(role).copied()
    }

    pub fn to_json(&self) -> Value {
        json!(self.0)
    }
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux
/// nearly everywhere, which is the fallback).
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Every process's parent and CPU ticks, read once.
struct ProcessTable {
    children: HashMap<u32, Vec<u32>>,
    ticks: HashMap<u32, Ticks>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Ticks {
    /// utime + stime: its own threads.
    own: u64,
    /// cutime + cstime: its children that exited.
    reaped: u64,
}

impl ProcessTable {
    fn read() -> Self {
        let mut table = ProcessTable {
            children: HashMap::new(),
            ticks: HashMap::new(),
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return table;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            // Gone since the listing: nothing to count.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some((parent, ticks)) = parse_stat(&stat) {
                table.children.entry(parent).or_default().push(pid);
                table.ticks.insert(pid, ticks);
            }
        }
        table
    }

    fn own_ticks(&self, pid: u32) -> u64 {
        self.ticks.get(&pid).map_or(0, |t| t.own)
    }

    fn tree_ticks(&self, root: u32) -> u64 {
        let mut total = 0;
        let mut stack = vec![root];
        while let Some(pid) = stack.pop() {
            total += self.ticks.get(&pid).map_or(0, |t| t.own + t.reaped);
            stack.extend(self.children.get(&pid).into_iter().flatten());
        }
        total
    }
}

/// The parent pid and CPU ticks of a `/proc/<pid>/stat` line. The command
/// name, in parentheses, may hold spaces and parentheses itself: the
/// fields start after the last `)`.
fn parse_stat(stat: &str) -> Option<(u32, Ticks)> {
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let number = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let parent = u32::try_from(number(1)?).ok()?;
    let ticks = Ticks {
        own: number(11)? + number(12)?,
        reaped: number(13)? + number(14)?,
    };
    Some((parent, ticks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_parent_and_ticks() {
        let line = "4242 (weed (mini)) S 17 4242 17 0 -1 4194560 1 0 0 0 250 75 3 2 20 0 9 0 1 1 1";
        let ticks = Ticks {
            own: 325,
            reaped: 5,
        };
        assert_eq!(parse_stat(line), Some((17, ticks)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_child_counts_in_its_parents_tree_not_alone() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 5",
            ])
            .spawn()
            .expect("sh");
        let me = std::process::id();
        let started = std::time::Instant::now();
        let mut table = ProcessTable::read();
        while table.tree_ticks(me) < table.own_ticks(me) + 10 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the busy child never showed in this process's tree"
            );
            std::thread::sleep(Duration::from_millis(50));
            table = ProcessTable::read();
        }
        assert!(table.own_ticks(child.id()) >= 10);
        child.kill().ok();
        child.wait().ok();
    }
}
