//! A profile's samples charged to the crate whose code is nearest the leaf
//! of each call chain: the allocator, libc, the kernel and the standard
//! library count for the crate that called them (a `malloc` for the crate
//! that allocates, a `sendmsg` for the client that sends). Read from
//! `perf script -F comm,ip,sym,dso` of a recording with call chains.

use std::collections::BTreeMap;

/// Frames that belong to whoever called them.
const PASSED_UP: [&str; 5] = ["core", "alloc", "std", "hashbrown", "__rustc"];

/// The table: share of samples per crate, the part of it in the kernel, and
/// the threads (by name) whose samples these are.
pub fn table(script: &str) -> String {
    let mut crates: BTreeMap<String, Share> = BTreeMap::new();
    let mut threads: BTreeMap<String, u64> = BTreeMap::new();
    let mut samples = 0u64;
    for sample in script.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let mut lines = sample.lines();
        let thread = lines.next().unwrap_or_default().trim();
        let frames: Vec<Frame<'_>> = lines.filter_map(Frame::parse).collect();
        let Some(leaf) = frames.first() else { continue };
        samples += 1;
        *threads.entry(thread_kind(thread)).or_default() += 1;
        let owner = frames
            .iter()
            .find_map(Frame::owner)
            .unwrap_or_else(|| "(no crate on the stack)".to_owned());
        let share = crates.entry(owner).or_default();
        share.samples += 1;
        if leaf.dso.contains("kernel") {
            share.kernel += 1;
        }
    }
    let pct = |n: u64| n as f64 * 100.0 / samples.max(1) as f64;
    let mut rows: Vec<_> = crates.into_iter().collect();
    rows.sort_by_key(|(_, share)| std::cmp::Reverse(share.samples));
    let mut out = format!("# by crate nearest the leaf, {samples} samples\n");
    out += "#   share  in kernel  crate\n";
    for (name, share) in rows.iter().filter(|(_, s)| pct(s.samples) >= 0.5) {
        out += &format!(
            "  {:6.1}%  {:8.1}%  {name}\n",
            pct(share.samples),
            pct(share.kernel)
        );
    }
    out += "# by thread\n";
    let mut threads: Vec<_> = threads.into_iter().collect();
    threads.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (name, n) in threads {
        out += &format!("  {:6.1}%  {name}\n", pct(n));
    }
    out
}

#[derive(Default)]
struct Share {
    samples: u64,
    kernel: u64,
}

struct Frame<'a> {
    symbol: &'a str,
    dso: &'a str,
}

impl<'a> Frame<'a> {
    /// `\t<address> <symbol> (<dso>)`.
    fn parse(line: &'a str) -> Option<Self> {
        let rest = line.trim().split_once(' ')?.1;
        let (symbol, dso) = rest.rsplit_once(" (")?;
        Some(Self {
            symbol: symbol.trim(),
            dso: dso.trim_end_matches(')'),
        })
    }

    /// The crate this frame charges its sample to, or `None` to pass it
    /// up to the caller.
    fn owner(&self) -> Option<String> {
        if self.symbol == "[unknown]" || !self.dso.contains("target/") {
            return None;
        }
        let mut path = self.symbol;
        // `<&mut T as Trait>::f`, `<dyn Trait>::f`: the first path.
        loop {
            let trimmed = path
                .trim_start_matches(['<', '&', '*', '('])
                .trim_start_matches("mut ")
                .trim_start_matches("dyn ");
            if trimmed == path {
                break;
            }
            path = trimmed;
        }
        // `<T as core::ops::Fn>::call`: a generic type's impl belongs to
        // its trait's crate.
        if let Some((ty, rest)) = path.split_once(" as ")
            && !ty.contains("::")
        {
            path = rest;
        }
        match path.split_once("::") {
            Some((krate, _)) if PASSED_UP.contains(&krate) => None,
            Some((krate, _)) => Some(krate.to_owned()),
            // C compiled into the binary.
            None if path.starts_with("rd_") => Some("librdkafka (C)".to_owned()),
            None => Some(format!("C: {path}")),
        }
    }
}

/// Thread names without their numbers (`rdk:broker2` → `rdk:broker`).
fn thread_kind(name: &str) -> String {
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_goes_to_the_crate_nearest_its_leaf() {
        let script = "\
tokio-rt-worker 
\t  b66 malloc (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t  1a14 alloc::raw_vec::finish_grow (/w/target/release/cmd-api)
\t  1b00 <&mut serde_json::de::Deserializer<R>>::parse_str (/w/target/release/cmd-api)
\t  1c00 tokio::runtime::task::raw::poll (/w/target/release/cmd-api)

rdk:broker2 
\t  ffff sendmsg ([kernel.kallsyms])
\t  18e0 rd_kafka_transport_send (/w/target/release/cmd-api)

tokio-rt-worker 
\t  1bf0 <T as core::convert::Into<U>>::into (/w/target/release/cmd-api)
\t  1c00 tokio::runtime::park (/w/target/release/cmd-api)
";
        let table = table(script);
        let rows: Vec<Vec<&str>> = table
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(
            table.starts_with("# by crate nearest the leaf, 3 samples"),
            "{table}"
        );
        for row in [
            ["33.3%", "0.0%", "serde_json"],
            ["33.3%", "33.3%", "librdkafka"],
            ["33.3%", "0.0%", "tokio"],
        ] {
            assert!(rows.iter().any(|r| r[..3] == row), "{row:?} in\n{table}");
        }
        assert!(rows.contains(&vec!["66.7%", "tokio-rt-worker"]), "{table}");
        assert!(rows.contains(&vec!["33.3%", "rdk:broker"]), "{table}");
    }
}
