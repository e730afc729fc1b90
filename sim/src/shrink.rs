//! Shrinking a failing seed: its recorded schedule — the active fault points, the chaos events
//! and the workload size — is reduced step by step while the run still fails with the same
//! invariant; the result is a scenario file that replays the failure.

use std::path::Path;

use crate::runner::{ChaosEvent, RunReport};
use crate::scenario::{Forced, Scenario};
use crate::summary::run_seed_isolated;

pub struct Shrunk {
    pub scenario: Scenario,
    pub report: RunReport,
    pub runs: u32,
}

fn first_invariant(report: &RunReport) -> Option<String> {
    report.failures.first().map(|f| f.invariant.clone())
}

/// Returns None when the seed does not fail.
pub fn shrink(exe: &Path, original: &Scenario, seed: u64, mut progress: impl FnMut(&str)) -> Option<Shrunk> {
    // A swarm's knobs are the seed's: shrink the configuration the seed drew.
    let original = &original.for_seed(seed);
    let report = run_seed_isolated(exe, original, seed);
    let target = first_invariant(&report)?;
    let mut best = original.clone();
    best.forced = Some(Forced {
        active_points: Some(report.active_points.clone()),
        chaos_events: Some(report.chaos_events.clone()),
    });
    let mut best_report = report;
    let mut runs = 1;
    let still_fails = |candidate: &Scenario, runs: &mut u32| -> Option<RunReport> {
        *runs += 1;
        let report = run_seed_isolated(exe, candidate, seed);
        (first_invariant(&report).as_deref() == Some(target.as_str())).then_some(report)
    };
    // Drop chaos events and fault points one at a time, keeping each removal that still fails.
    for list in ["chaos", "points"] {
        let mut index = 0;
        loop {
            let forced = best.forced.clone().unwrap_or_default();
            let items = if list == "chaos" {
                forced.chaos_events.clone().unwrap_or_default()
            } else {
                forced.active_points.clone().unwrap_or_default()
            };
            if index >= items.len() {
                break;
            }
            let mut fewer = items.clone();
            let removed = fewer.remove(index);
            let mut candidate = best.clone();
            let forced = candidate.forced.get_or_insert_with(Forced::default);
            if list == "chaos" {
                forced.chaos_events = Some(fewer);
            } else {
                forced.active_points = Some(fewer);
            }
            match still_fails(&candidate, &mut runs) {
                Some(report) => {
                    let removed = if list == "chaos" { ChaosEvent::describe(&removed) } else { removed };
                    progress(&format!("dropped {removed}"));
                    best = candidate;
                    best_report = report;
                }
                None => index += 1,
            }
        }
    }
    // Then make the workload smaller.
    loop {
        let mut candidate = best.clone();
        let w = &mut candidate.workload;
        if w.pods > 1 {
            w.pods = w.pods.div_ceil(2).min(w.pods - 1);
        } else if w.containers_per_pod > 1 {
            w.containers_per_pod -= 1;
        } else if candidate.duration_s > 30 {
            candidate.duration_s /= 2;
        } else {
            break;
        }
        match still_fails(&candidate, &mut runs) {
            Some(report) => {
                progress(&format!(
                    "workload: {} pods x {} containers, {}s",
                    candidate.workload.pods, candidate.workload.containers_per_pod, candidate.duration_s
                ));
                best = candidate;
                best_report = report;
            }
            None => break,
        }
    }
    best.name = format!("{}-shrunk-{seed}", original.name);
    best.description = format!("Shrunk from scenario {} seed {seed}; fails with: {target}", original.name);
    Some(Shrunk { scenario: best, report: best_report, runs })
}
