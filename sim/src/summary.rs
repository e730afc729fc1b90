//! Running many seeds: parallel workers, progress, a summary table that shards can merge.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use std::io::Write;
use std::path::Path;

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
    /// The seed range asked for, `[start, end)`, before sharding. Absent in summaries written
    /// before it was recorded, and in merged ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<(u64, u64)>,
    /// The shard of `range` this summary covers, if the range was sharded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
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
    let failed = |detail: String| failed_report(scenario, seed, detail);
    let text = toml::to_string(scenario).expect("scenario serialises");
    #[expect(
        clippy::disallowed_methods,
        reason = "the parent only starts children; each child is one deterministic run"
    )]
    let child = std::process::Command::new(exe) // determinism-ok: starts a seed's own process, outside any run.
        .args(["run-isolated", "--seed", &seed.to_string()])
        .args(keep_trace.then_some("--keep-trace"))
        .stdin(std::process::Stdio::piped()) // determinism-ok: starts a seed's own process, outside any run.
        .stdout(std::process::Stdio::piped()) // determinism-ok: starts a seed's own process, outside any run.
        .stderr(std::process::Stdio::piped()) // determinism-ok: starts a seed's own process, outside any run.
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

/// How [`run_seeds`] gives each seed a process of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// One fork server per worker forks a child per seed (sim/src/forks.rs). Falls back to
    /// [`Isolation::Spawn`] for a worker whose server cannot start.
    Fork,
    /// `crid-sim run-isolated` is started anew for every seed.
    Spawn,
}

/// The variable that chooses the isolation: `spawn` or `fork` (the default where fork exists).
pub const ISOLATION_VAR: &str = "CRID_SIM_ISOLATION";

impl Isolation {
    /// From [`ISOLATION_VAR`]: fork unless it says `spawn` or the system has no fork.
    pub fn from_env() -> Isolation {
        let spawn = std::env::var(ISOLATION_VAR).is_ok_and(|v| v == "spawn"); // determinism-ok: chooses how seeds are started, outside any run; runs are the same.
        if spawn || !cfg!(unix) { Isolation::Spawn } else { Isolation::Fork }
    }
}

/// The report of a seed whose process failed before it could report.
fn failed_report(scenario: &Scenario, seed: u64, detail: String) -> RunReport {
    RunReport::without_run(&scenario.name, seed, "simulator process failed", detail)
}

/// Runs `seeds` with `jobs` workers, each seed in its own process, calling `on_done` after each
/// run (progress). The isolation comes from [`Isolation::from_env`].
pub fn run_seeds(
    exe: &Path,
    scenario: &Scenario,
    seeds: Vec<u64>,
    jobs: usize,
    on_done: impl Fn(&RunReport) + Send + Sync,
) -> (Summary, Vec<RunReport>) {
    run_seeds_with(exe, scenario, seeds, jobs, Isolation::from_env(), on_done)
}

/// One worker's way of running seeds: its fork server, or spawning.
struct Worker<'a> {
    exe: &'a Path,
    scenario: &'a Scenario,
    #[cfg(unix)]
    server: Option<crate::forks::ForkServer>,
}

impl<'a> Worker<'a> {
    fn new(exe: &'a Path, scenario: &'a Scenario, isolation: Isolation) -> Worker<'a> {
        #[cfg(unix)]
        let server = match isolation {
            Isolation::Fork => crate::forks::ForkServer::start(exe, scenario)
                .inspect_err(|e| eprintln!("warning: {e}; starting a process per seed instead"))
                .ok(),
            Isolation::Spawn => None,
        };
        #[cfg(not(unix))]
        let _ = isolation;
        Worker {
            exe,
            scenario,
            #[cfg(unix)]
            server,
        }
    }

    fn run(&mut self, seed: u64, keep_trace: bool) -> RunReport {
        #[cfg(unix)]
        if let Some(server) = &mut self.server {
            return match server.run(seed, keep_trace) {
                Ok(report) => report,
                Err(error) => {
                    // The server may be gone with its child: the next seed gets a new one.
                    self.server = crate::forks::ForkServer::start(self.exe, self.scenario).ok();
                    failed_report(self.scenario, seed, error)
                }
            };
        }
        run_seed_isolated_with(self.exe, self.scenario, seed, keep_trace)
    }
}

/// Runs one seed through a fresh fork server (a test compares it with the spawn path).
#[cfg(unix)]
pub fn run_seed_forked(exe: &Path, scenario: &Scenario, seed: u64, keep_trace: bool) -> Result<RunReport, String> {
    crate::forks::ForkServer::start(exe, scenario)?.run(seed, keep_trace)
}

/// As [`run_seeds`], with the isolation given.
pub fn run_seeds_with(
    exe: &Path,
    scenario: &Scenario,
    seeds: Vec<u64>,
    jobs: usize,
    isolation: Isolation,
    on_done: impl Fn(&RunReport) + Send + Sync,
) -> (Summary, Vec<RunReport>) {
    assert!(jobs > 0);
    #[expect(clippy::disallowed_methods, reason = "wall time measures the batch for the report; runs never read it")]
    let started = std::time::Instant::now(); // determinism-ok: wall time of the batch, for the report; runs never read it.
    let queue = Arc::new(Mutex::new(seeds.into_iter().collect::<std::collections::VecDeque<u64>>()));
    let failed = Mutex::new(vec![]);
    let summary = Mutex::new(Summary { scenario: scenario.name.clone(), ..Default::default() });
    let done = AtomicU64::new(0);
    // determinism-ok: worker threads only pick seeds; each seed runs alone on its own thread.
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                let mut worker = Worker::new(exe, scenario, isolation);
                loop {
                    let Some(seed) = queue.lock().unwrap().pop_front() else { break };
                    let report = worker.run(seed, false);
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

/// One part of a seed range: the seeds with `seed % count == index`. Shards of one range are
/// disjoint and together cover it, whatever its bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

/// The variables of a Kubernetes Indexed Job that name a pod's shard: Kubernetes sets the
/// index in every pod; the manifest sets the count, equal to the Job's `completions`.
pub const JOB_INDEX_VAR: &str = "JOB_COMPLETION_INDEX";
pub const JOB_COUNT_VAR: &str = "JOB_COMPLETIONS";

impl Shard {
    pub fn new(index: u64, count: u64) -> Result<Shard, String> {
        if count == 0 || index >= count {
            return Err(format!("bad shard {index}/{count}: want 0 <= I < N"));
        }
        Ok(Shard { index, count })
    }

    /// `I/N`, as `--shard` takes it.
    pub fn parse(spec: &str) -> Result<Shard, String> {
        let (index, count) = spec.split_once('/').ok_or_else(|| format!("bad shard {spec:?}: want I/N"))?;
        let number = |text: &str| text.trim().parse::<u64>().map_err(|_| format!("bad shard {spec:?}: want I/N"));
        Shard::new(number(index)?, number(count)?)
    }

    /// The shard an Indexed Job's pod runs, from the values of `JOB_COMPLETION_INDEX` and
    /// `JOB_COMPLETIONS`: none when neither is set; an error when only one is, so that a pod
    /// never runs the whole range, or a wrong part of it, in silence.
    pub fn from_job(index: Option<&str>, count: Option<&str>) -> Result<Option<Shard>, String> {
        match (index, count) {
            (None, None) => Ok(None),
            (Some(index), Some(count)) => {
                let number = |name: &str, text: &str| {
                    text.trim().parse::<u64>().map_err(|_| format!("{name}={text:?} is not a number"))
                };
                let shard = Shard::new(number(JOB_INDEX_VAR, index)?, number(JOB_COUNT_VAR, count)?)
                    .map_err(|e| format!("{JOB_INDEX_VAR}={index}, {JOB_COUNT_VAR}={count}: {e}"))?;
                Ok(Some(shard))
            }
            (Some(_), None) => {
                Err(format!("{JOB_INDEX_VAR} is set but {JOB_COUNT_VAR} is not: set it to the Job's completions"))
            }
            (None, Some(_)) => Err(format!("{JOB_COUNT_VAR} is set but {JOB_INDEX_VAR} is not")),
        }
    }

    pub fn seeds(self, range: std::ops::Range<u64>) -> Vec<u64> {
        range.filter(|seed| seed % self.count == self.index).collect()
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Merges the summaries of one sweep. When they carry their shard, they must be the shards of
/// one range of one scenario, each once, all of them: a lost or repeated shard would make a
/// sweep look complete, or count seeds twice. Summaries without a shard are added up.
pub fn merge_summaries(summaries: &[Summary]) -> Result<Summary, String> {
    let mut total = Summary::default();
    let Some(first) = summaries.first() else { return Err("no summaries to merge".to_string()) };
    if let Some(other) = summaries.iter().find(|s| s.scenario != first.scenario) {
        return Err(format!("summaries of different scenarios: {} and {}", first.scenario, other.scenario));
    }
    let sharded: Vec<Shard> = summaries.iter().filter_map(|s| s.shard).collect();
    if !sharded.is_empty() {
        if sharded.len() != summaries.len() {
            return Err("some summaries are shards and some are not".to_string());
        }
        let count = sharded[0].count;
        if let Some(other) =
            summaries.iter().find(|s| s.range != first.range || s.shard.map(|s| s.count) != Some(count))
        {
            return Err(format!(
                "shards of different sweeps: range {:?} in {} shards, and range {:?} in {}",
                first.range,
                count,
                other.range,
                other.shard.map_or(0, |s| s.count)
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for shard in &sharded {
            if !seen.insert(shard.index) {
                return Err(format!("shard {shard} is there twice"));
            }
        }
        let missing: Vec<String> = (0..count).filter(|i| !seen.contains(i)).map(|i| i.to_string()).collect();
        if !missing.is_empty() {
            return Err(format!("{} of {count} shards missing: {}", missing.len(), missing.join(", ")));
        }
    }
    for summary in summaries {
        total.merge(summary);
    }
    total.range = first.range.filter(|_| summaries.iter().all(|s| s.range == first.range));
    Ok(total)
}
