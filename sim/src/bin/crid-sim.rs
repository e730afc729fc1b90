//! `crid-sim`: run seeded scenarios, replay a seed, check determinism, shrink a failure.
//! Reach it as `cargo sim …` (a cargo alias that builds it in madsim mode, `sim` profile).

use std::process::ExitCode; // determinism-ok: the process's exit status, set once every run has ended.

#[cfg(not(madsim))]
fn main() -> ExitCode {
    eprintln!("crid-sim must be built in simulation mode: run it as `cargo sim <command>` (see README)");
    ExitCode::from(2) // determinism-ok: the exit status of a build that runs nothing.
}

#[cfg(madsim)]
fn main() -> ExitCode {
    ExitCode::from(u8::try_from(cli::main()).unwrap_or(1)) // determinism-ok: the exit status, after every run ended.
}

#[cfg(madsim)]
#[expect(
    clippy::disallowed_methods,
    reason = "the command line works outside any simulated run: it reads and writes files and starts a process per seed"
)]
mod cli {
    use clap::{Parser, Subcommand};
    use crid_sim::outln;
    use crid_sim::runner::{ChaosEvent, replay_command, run_seed};
    use crid_sim::scenario::{Scenario, names};
    use crid_sim::summary::{
        JOB_COUNT_VAR, JOB_INDEX_VAR, Shard, Summary, merge_summaries, parse_seed_range, run_seeds,
    };

    fn own_exe() -> std::path::PathBuf {
        std::env::current_exe().expect("own path") // determinism-ok: locating this binary to start child runs.
    }

    fn run_isolated(seed: u64, keep_trace: bool) -> i32 {
        let mut text = String::new();
        let read = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text); // determinism-ok: the scenario arrives on stdin before the run starts.
        if let Err(e) = read {
            return usage_error(&format!("cannot read scenario: {e}"));
        }
        let scenario = match Scenario::parse(&text) {
            Ok(s) => s,
            Err(e) => return usage_error(&e),
        };
        let mut report = run_seed(&scenario, seed, false);
        if report.passed() && !keep_trace {
            report.trace.clear();
        }
        outln!("{}", serde_json::to_string(&report).expect("report serialises"));
        0
    }

    #[derive(Parser)]
    #[command(name = "crid-sim", about = "Deterministic simulation of the crid CRI service")]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        /// Run one seed (`--seed N`) or a seed range (`--seeds A..B`) of a scenario.
        Run {
            /// An embedded scenario name or a scenario file path.
            #[arg(long, default_value = "recovery")]
            scenario: String,
            #[arg(long, conflicts_with = "seeds")]
            seed: Option<u64>,
            /// A range `A..B` (end exclusive).
            #[arg(long)]
            seeds: Option<String>,
            /// Run only shard I of N of the range (seeds with seed % N == I). Without it, a pod
            /// of a Kubernetes Indexed Job runs shard JOB_COMPLETION_INDEX of JOB_COMPLETIONS.
            #[arg(long)]
            shard: Option<String>,
            /// Worker threads for a range (default: available cores).
            #[arg(long)]
            jobs: Option<usize>,
            /// Print the readable trace of a single seed.
            #[arg(long)]
            trace: bool,
            /// Print only the trace hash (used by check-determinism).
            #[arg(long, hide = true)]
            hash_only: bool,
            /// Write the summary of a range as JSON (shards merge with `merge`).
            #[arg(long)]
            json: Option<String>,
            /// Run this seed first in the same process (to check that runs do not leak state).
            #[arg(long, hide = true)]
            warmup_seed: Option<u64>,
        },
        /// Run each seed twice in separate processes and compare trace hashes.
        CheckDeterminism {
            #[arg(long, default_value = "recovery")]
            scenario: String,
            #[arg(long, default_value = "0..4")]
            seeds: String,
        },
        /// Reduce a failing seed's schedule and write it as a scenario file that replays.
        Shrink {
            #[arg(long)]
            scenario: String,
            #[arg(long)]
            seed: u64,
            /// Output scenario file (default: shrunk-<scenario>-<seed>.toml).
            #[arg(long)]
            out: Option<String>,
        },
        /// Run one seed of a scenario read as TOML from stdin; print the report as JSON.
        #[command(hide = true)]
        RunIsolated {
            #[arg(long)]
            seed: u64,
            #[arg(long)]
            keep_trace: bool,
        },
        /// Serve seeds of one scenario, each in a forked child (sim/src/forks.rs): the scenario
        /// as length-prefixed TOML on stdin, then one request line per seed.
        #[command(hide = true)]
        ForkServer,
        /// Merge shard summaries written with `run --json`: files, or directories whose
        /// `*.json` files are read (a Job's results volume).
        Merge {
            #[arg(required = true)]
            files: Vec<String>,
        },
        /// List the embedded scenarios.
        List,
    }

    pub fn main() -> i32 {
        // CRID_SIM_LOG=debug shows the core's own logs on stderr (not part of the trace).
        let log_filter = std::env::var("CRID_SIM_LOG"); // determinism-ok: reading the environment once, before any run.
        if let Ok(filter) = log_filter {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .without_time()
                .with_writer(std::io::stderr)
                .init();
        }
        let cli = Cli::parse();
        match cli.command {
            Command::Run { scenario, seed, seeds, shard: shard_spec, jobs, trace, hash_only, json, warmup_seed } => {
                let scenario = match Scenario::load(&scenario) {
                    Ok(s) => s,
                    Err(e) => return usage_error(&e),
                };
                if let Some(warmup) = warmup_seed {
                    run_seed(&scenario, warmup, false);
                }
                match (seed, seeds) {
                    (Some(seed), _) => run_one(&scenario, seed, trace, hash_only),
                    (None, seeds) => {
                        let range = match parse_seed_range(seeds.as_deref().unwrap_or("0..100")) {
                            Ok(r) => r,
                            Err(e) => return usage_error(&e),
                        };
                        let shard = match shard_spec {
                            Some(spec) => Shard::parse(&spec).map(Some),
                            None => {
                                let var = |name: &str| std::env::var(name).ok(); // determinism-ok: the CLI reads which shard to run, before any run.
                                let shard =
                                    Shard::from_job(var(JOB_INDEX_VAR).as_deref(), var(JOB_COUNT_VAR).as_deref());
                                if let Ok(Some(shard)) = &shard {
                                    eprintln!("shard {shard} (from {JOB_INDEX_VAR} and {JOB_COUNT_VAR})"); // determinism-ok: outside any simulated run (CLI, files, wall-clock report)
                                }
                                shard
                            }
                        };
                        let shard = match shard {
                            Ok(shard) => shard,
                            Err(e) => return usage_error(&e),
                        };
                        run_range(&scenario, range, shard, jobs, json)
                    }
                }
            }
            Command::CheckDeterminism { scenario, seeds } => check_determinism(&scenario, &seeds),
            Command::Shrink { scenario, seed, out } => shrink(&scenario, seed, out),
            Command::Merge { files } => merge(&files),
            Command::RunIsolated { seed, keep_trace } => run_isolated(seed, keep_trace),
            Command::ForkServer => crid_sim::forks::serve(),
            Command::List => {
                for name in names() {
                    let scenario = Scenario::load(name).expect("embedded scenarios parse");
                    outln!("{name:<20} {}", scenario.description);
                }
                0
            }
        }
    }

    fn usage_error(message: &str) -> i32 {
        eprintln!("error: {message}");
        2
    }

    fn run_one(scenario: &Scenario, seed: u64, trace: bool, hash_only: bool) -> i32 {
        if !hash_only {
            outln!("seed       {seed}");
            outln!("scenario   {}", scenario.name);
            // A swarm scenario's knobs are the seed's draw, not the file's.
            let scenario = &scenario.for_seed(seed);
            outln!(
                "options    {} pods x {} containers, {}s faults + {}s liveness, faults at {:?} ({:?}), rate {}",
                scenario.workload.pods,
                scenario.workload.containers_per_pod,
                scenario.duration_s,
                scenario.liveness_s,
                scenario.faults.sites,
                scenario.faults.kinds.iter().map(|kind| kind.as_str()).collect::<Vec<_>>(),
                scenario.faults.rate
            );
            outln!("replay     {}", replay_command(&scenario.name, seed));
            outln!();
        }
        let report = run_seed(scenario, seed, trace && !hash_only);
        if hash_only {
            outln!("{}", report.trace_hash);
            return 0;
        }
        outln!(
            "active fault points  {}",
            if report.active_points.is_empty() { "none".into() } else { report.active_points.join(", ") }
        );
        outln!(
            "chaos events         {}",
            if report.chaos_events.is_empty() {
                "none".into()
            } else {
                report.chaos_events.iter().map(|e| ChaosEvent::describe(e)).collect::<Vec<_>>().join(", ")
            }
        );
        outln!(
            "rpcs {}  pods {}  simulated {:.1}s  wall {}ms  trace {} lines, hash {}",
            report.rpcs,
            report.pods,
            report.sim_ms as f64 / 1000.0,
            report.wall_ms,
            report.trace.len(),
            &report.trace_hash[..16.min(report.trace_hash.len())]
        );
        if report.passed() {
            outln!("PASS");
            0
        } else {
            outln!();
            for failure in &report.failures {
                outln!(
                    "FAIL  invariant: {}\n      object:    {}\n      sim time:  {}\n      detail:    {}",
                    failure.invariant,
                    failure.object,
                    failure.sim_time,
                    failure.detail
                );
            }
            if !trace {
                outln!("\nlast trace lines:");
                for line in report.trace.iter().rev().take(15).collect::<Vec<_>>().into_iter().rev() {
                    outln!("  {line}");
                }
            }
            outln!("\nreplay: {}", replay_command(&scenario.name, seed));
            outln!("shrink: cargo sim shrink --scenario {} --seed {seed}", scenario.name);
            1
        }
    }

    fn run_range(
        scenario: &Scenario,
        range: std::ops::Range<u64>,
        shard: Option<Shard>,
        jobs: Option<usize>,
        json: Option<String>,
    ) -> i32 {
        let bounds = (range.start, range.end);
        let seeds = match shard {
            Some(shard) => shard.seeds(range),
            None => range.collect(),
        };
        let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())); // determinism-ok: the number of worker threads does not affect any run.
        let total = seeds.len() as u64;
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} seeds, {msg} failed ({elapsed})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(scenario.name.clone());
        let failed_count = std::sync::atomic::AtomicU64::new(0);
        let (mut summary, failed) = run_seeds(&own_exe(), scenario, seeds, jobs, |report| {
            if !report.passed() {
                failed_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            bar.set_message(failed_count.load(std::sync::atomic::Ordering::Relaxed).to_string());
            bar.inc(1);
        });
        bar.finish();
        summary.range = Some(bounds);
        summary.shard = shard;
        outln!("{}", summary.render());
        for report in failed.iter().take(3) {
            let first = &report.failures[0];
            outln!(
                "seed {}: {} on {} at {}: {}",
                report.seed,
                first.invariant,
                first.object,
                first.sim_time,
                first.detail
            );
        }
        if let Some(path) = json {
            let text = serde_json::to_string_pretty(&summary).expect("summary serialises");
            let written = std::fs::write(&path, text); // determinism-ok: writing the report after every run finished.
            if let Err(e) = written {
                eprintln!("error: cannot write {path}: {e}"); // determinism-ok: outside any simulated run (CLI, files, wall-clock report)
                return 2;
            }
        }
        if summary.failed_seeds.is_empty() { 0 } else { 1 }
    }

    fn check_determinism(scenario: &str, seeds: &str) -> i32 {
        let range = match parse_seed_range(seeds) {
            Ok(r) => r,
            Err(e) => return usage_error(&e),
        };
        let exe = std::env::current_exe().expect("own path"); // determinism-ok: the check itself runs the simulator in child processes.
        let mut mismatches = 0;
        for seed in range {
            let hashes: Vec<String> = (0..2)
                .map(|_| {
                    let output = std::process::Command::new(&exe) // determinism-ok: a separate process per run is the point of the check.
                        .args(["run", "--scenario", scenario, "--seed", &seed.to_string(), "--hash-only"])
                        .output()
                        .expect("run child"); // determinism-ok: outside any simulated run (CLI, files, wall-clock report)
                    String::from_utf8_lossy(&output.stdout).trim().to_string()
                })
                .collect();
            let same = hashes[0] == hashes[1] && !hashes[0].is_empty();
            outln!(
                "seed {seed:>6}  {}  {}",
                &hashes[0][..16.min(hashes[0].len())],
                if same { "same" } else { "DIFFERENT" }
            );
            if !same {
                mismatches += 1;
                outln!("  second run: {}", hashes[1]);
            }
        }
        if mismatches == 0 {
            outln!("deterministic: every seed replayed bit for bit in separate processes");
            0
        } else {
            outln!("NOT deterministic: {mismatches} seeds differ");
            1
        }
    }

    fn shrink(scenario_name: &str, seed: u64, out: Option<String>) -> i32 {
        let scenario = match Scenario::load(scenario_name) {
            Ok(s) => s,
            Err(e) => return usage_error(&e),
        };
        outln!("shrinking scenario {} seed {seed}", scenario.name);
        let Some(shrunk) = crid_sim::shrink::shrink(&own_exe(), &scenario, seed, |step| outln!("  {step}")) else {
            outln!("seed {seed} does not fail; nothing to shrink");
            return 1;
        };
        let path = out.unwrap_or_else(|| format!("shrunk-{}-{seed}.toml", scenario.name));
        let text = toml::to_string_pretty(&shrunk.scenario).expect("scenario serialises");
        let written = std::fs::write(&path, &text); // determinism-ok: writing the result after all runs finished.
        if let Err(e) = written {
            eprintln!("error: cannot write {path}: {e}"); // determinism-ok: outside any simulated run (CLI, files, wall-clock report)
            return 2;
        }
        let failure = &shrunk.report.failures[0];
        outln!("after {} runs: still fails with {} on {}", shrunk.runs, failure.invariant, failure.object);
        outln!("wrote {path}");
        outln!("replay: cargo sim run --scenario {path} --seed {seed} --trace");
        0
    }

    fn merge(paths: &[String]) -> i32 {
        let mut files = Vec::new();
        for path in paths {
            let listing = std::fs::read_dir(path); // determinism-ok: reading finished shard reports.
            match listing {
                Ok(entries) => {
                    let mut found: Vec<String> = entries
                        .filter_map(|entry| entry.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|ext| ext == "json"))
                        .map(|p| p.to_string_lossy().into_owned())
                        .collect();
                    if found.is_empty() {
                        return usage_error(&format!("no *.json summaries in {path}"));
                    }
                    found.sort();
                    files.extend(found);
                }
                Err(_) => files.push(path.clone()),
            }
        }
        let mut summaries = Vec::new();
        for file in &files {
            let read = std::fs::read_to_string(file); // determinism-ok: reading finished shard reports.
            let text = match read {
                Ok(t) => t, // determinism-ok: outside any simulated run (CLI, files, wall-clock report)
                Err(e) => return usage_error(&format!("cannot read {file}: {e}")),
            };
            match serde_json::from_str::<Summary>(&text) {
                Ok(summary) => summaries.push(summary),
                Err(e) => return usage_error(&format!("{file}: {e}")),
            }
        }
        let total = match merge_summaries(&summaries) {
            Ok(total) => total,
            Err(e) => return usage_error(&e),
        };
        outln!("{}", total.render());
        if total.failed_seeds.is_empty() { 0 } else { 1 }
    }
}
