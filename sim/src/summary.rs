//! Running many seeds: parallel workers, progress, a summary table that shards can merge.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use std::io::Write;
use std::path::Path;

use crate::invariants::Failure;
use crate::runner::{RunReport, replay_command};
use crate::scenario::Scenario;

/// The result of a seed range (or one shard of it). Shards' summaries add up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    pub runs: u64,
    pub failed_seeds: Vec<u64>,
    /// Failing seeds per invariant (first failure of each run).
    pub failures_by_invariant: BTreeMap<String, Vec<u64>>,
    pub sim_ms: u64,
    pub wall_ms: u64,
    /// Wall time of the whole batch (workers run in parallel).
    pub elapsed_ms: u64,
}

impl Summary {
    pub fn add(&mut self, report: &RunReport) {
        self.runs += 1;
        self.sim_ms += report.sim_ms;
        self.wall_ms += report.wall_ms;
        if let Some(first) = report.failures.first() {
            self.failed_seeds.push(report.seed);
            self.failures_by_invariant.entry(first.invariant.clone()).or_default().push(report.seed);
        }
    }

    pub fn merge(&mut self, other: &Summary) {
        if self.scenario.is_empty() {
            self.scenario = other.scenario.clone();
        }
        self.runs += other.runs;
        self.sim_ms += other.sim_ms;
        self.wall_ms += other.wall_ms;
        self.elapsed_ms = self.elapsed_ms.max(other.elapsed_ms);
        self.failed_seeds.extend(&other.failed_seeds);
        self.failed_seeds.sort_unstable();
        for (invariant, seeds) in &other.failures_by_invariant {
            let merged = self.failures_by_invariant.entry(invariant.clone()).or_default();
            merged.extend(seeds);
            merged.sort_unstable();
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let ratio = if self.wall_ms == 0 { 0.0 } else { self.sim_ms as f64 / self.wall_ms as f64 };
        let per_second = if self.elapsed_ms == 0 { 0.0 } else { self.runs as f64 * 1000.0 / self.elapsed_ms as f64 };
        out.push_str(&format!("scenario            {}\n", self.scenario));
        out.push_str(&format!("runs                {}\n", self.runs));
        out.push_str(&format!("failures            {}\n", self.failed_seeds.len()));
        out.push_str(&format!("simulated time      {:.1} s\n", self.sim_ms as f64 / 1000.0));
        out.push_str(&format!("sim/wall ratio      {ratio:.0}x (per seed, single-threaded)\n"));
        out.push_str(&format!("seeds per second    {per_second:.2}\n"));
        if !self.failures_by_invariant.is_empty() {
            out.push_str("\ninvariant                                  failing seeds\n");
            for (invariant, seeds) in &self.failures_by_invariant {
                let shown: Vec<String> = seeds.iter().take(8).map(u64::to_string).collect();
                out.push_str(&format!("{invariant:<42} {} ({})\n", shown.join(", "), seeds.len()));
            }
            if let Some(first) = self.failed_seeds.first() {
                out.push_str(&format!("\nreplay the first: {}\n", replay_command(&self.scenario, *first)));
            }
        }
        out
    }
}

/// Runs one seed in a process of its own (`crid-sim run-isolated`), so that nothing a previous
/// run left in this process — madsim's global task ids, std's hash keys — can change it.
/// The child reads the scenario as TOML on stdin and prints its report as JSON.
pub fn run_seed_isolated(exe: &Path, scenario: &Scenario, seed: u64) -> RunReport {
    run_seed_isolated_with(exe, scenario, seed, false)
}

/// As [`run_seed_isolated`]; with `keep_trace` the report carries the trace even when it passed.
pub fn run_seed_isolated_with(exe: &Path, scenario: &Scenario, seed: u64, keep_trace: bool) -> RunReport {
    let failed = |detail: String| RunReport {
        scenario: scenario.name.clone(),
        seed,
        failures: vec![Failure {
            invariant: "simulator process failed".into(),
            object: "-".into(),
            sim_time: "-".into(),
            detail,
        }],
        trace_hash: String::new(),
        trace: vec![],
        sim_ms: 0,
        wall_ms: 0,
        active_points: vec![],
        chaos_events: vec![],
        rpcs: 0,
        pods: 0,
    };
    let text = toml::to_string(scenario).expect("scenario serialises");
    #[expect(
        clippy::disallowed_methods,
        reason = "the parent only starts children; each child is one deterministic run"
    )]
    let child = std::process::Command::new(exe)
        .args(["run-isolated", "--seed", &seed.to_string()])
        .args(keep_trace.then_some("--keep-trace"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return failed(format!("cannot start {}: {e}", exe.display())),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
    }
    match child.wait_with_output() {
        Ok(output) => match serde_json::from_slice::<RunReport>(&output.stdout) {
            Ok(report) => report,
            Err(e) => failed(format!(
                "bad report ({e}); stderr: {}",
                String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or_default()
            )),
        },
        Err(e) => failed(format!("child failed: {e}")),
    }
}

/// Runs `seeds` with `jobs` workers, each seed in its own process, calling `on_done` after each
/// run (progress).
pub fn run_seeds(
    exe: &Path,
    scenario: &Scenario,
    seeds: Vec<u64>,
    jobs: usize,
    on_done: impl Fn(&RunReport) + Send + Sync,
) -> (Summary, Vec<RunReport>) {
    assert!(jobs > 0);
    #[expect(clippy::disallowed_methods, reason = "wall time measures the batch for the report; runs never read it")]
    let started = std::time::Instant::now();
    let queue = Arc::new(Mutex::new(seeds.into_iter().collect::<std::collections::VecDeque<u64>>()));
    let failed = Mutex::new(vec![]);
    let summary = Mutex::new(Summary { scenario: scenario.name.clone(), ..Default::default() });
    let done = AtomicU64::new(0);
    // determinism-ok: worker threads only pick seeds; each seed runs alone on its own thread.
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let Some(seed) = queue.lock().unwrap().pop_front() else { break };
                    let report = run_seed_isolated(exe, scenario, seed);
                    summary.lock().unwrap().add(&report);
                    done.fetch_add(1, Ordering::Relaxed);
                    on_done(&report);
                    if !report.passed() {
                        failed.lock().unwrap().push(report);
                    }
                }
            });
        }
    });
    let mut summary = summary.into_inner().unwrap();
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    summary.failed_seeds.sort_unstable();
    for seeds in summary.failures_by_invariant.values_mut() {
        seeds.sort_unstable();
    }
    let mut failed = failed.into_inner().unwrap();
    failed.sort_by_key(|r| r.seed);
    (summary, failed)
}

/// Parses `A..B` (exclusive end) or a single seed.
pub fn parse_seed_range(text: &str) -> Result<std::ops::Range<u64>, String> {
    match text.split_once("..") {
        Some((start, end)) => {
            let start: u64 = start.parse().map_err(|_| format!("bad seed range {text:?}"))?;
            let end: u64 = end.parse().map_err(|_| format!("bad seed range {text:?}"))?;
            if end <= start {
                return Err(format!("empty seed range {text:?}"));
            }
            Ok(start..end)
        }
        None => {
            let seed: u64 = text.parse().map_err(|_| format!("bad seed {text:?}"))?;
            Ok(seed..seed + 1)
        }
    }
}

/// Parses `I/N` and returns the seeds of that shard.
pub fn shard(range: std::ops::Range<u64>, shard: Option<&str>) -> Result<Vec<u64>, String> {
    let Some(shard) = shard else { return Ok(range.collect()) };
    let (index, count) = shard.split_once('/').ok_or_else(|| format!("bad shard {shard:?}: want I/N"))?;
    let index: u64 = index.parse().map_err(|_| format!("bad shard {shard:?}"))?;
    let count: u64 = count.parse().map_err(|_| format!("bad shard {shard:?}"))?;
    if count == 0 || index >= count {
        return Err(format!("bad shard {shard:?}: want 0 <= I < N"));
    }
    Ok(range.filter(|seed| seed % count == index).collect())
}
