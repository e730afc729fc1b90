//! The fork server (sim/src/forks.rs) runs each seed in a forked child instead of a spawned
//! process: the runs must be the same, bit for bit. For every scenario, a few seeds through the
//! fork server (one server for several seeds, as a worker of a sweep uses it) against the same
//! seeds spawned one process each; and a sweep through each path must agree seed for seed.

use std::path::Path;

use crid_sim::scenario::{Scenario, names};
use crid_sim::summary::{Isolation, run_seed_forked, run_seed_isolated, run_seeds_with};

#[test]
fn a_forked_seed_runs_as_a_spawned_one() {
    let exe = Path::new(env!("CARGO_BIN_EXE_crid-sim"));
    for name in names() {
        let scenario = Scenario::load(name).unwrap();
        for seed in [0, 3] {
            let spawned = run_seed_isolated(exe, &scenario, seed);
            let forked = run_seed_forked(exe, &scenario, seed, false)
                .unwrap_or_else(|e| panic!("{name} seed {seed}: the fork server failed: {e}"));
            assert!(!spawned.trace_hash.is_empty(), "{name} seed {seed}: no trace hash ({:?})", spawned.failures);
            assert_eq!(forked.trace_hash, spawned.trace_hash, "{name} seed {seed}: forked run differs from spawned");
            assert_eq!((forked.rpcs, forked.sim_ms), (spawned.rpcs, spawned.sim_ms), "{name} seed {seed}");
            assert_eq!(forked.failures, spawned.failures, "{name} seed {seed}");
        }
    }
}

/// One server serves many seeds: a child must not see what an earlier child did, nor the order
/// the seeds came in.
#[test]
fn a_sweep_through_fork_servers_matches_spawning() {
    let exe = Path::new(env!("CARGO_BIN_EXE_crid-sim"));
    for name in ["event_storm", "recovery", "swarm"] {
        let scenario = Scenario::load(name).unwrap();
        let hashes = |isolation, seeds: Vec<u64>| {
            let reports = std::sync::Mutex::new(vec![]);
            let (summary, _) = run_seeds_with(exe, &scenario, seeds, 2, isolation, |report| {
                reports.lock().unwrap().push((report.seed, report.trace_hash.clone()));
            });
            let mut reports = reports.into_inner().unwrap();
            reports.sort();
            (summary.runs, summary.failed_seeds, reports)
        };
        let forked = hashes(Isolation::Fork, (0..8).rev().collect());
        let spawned = hashes(Isolation::Spawn, (0..8).collect());
        assert_eq!(forked.0, 8, "{name}: runs");
        assert!(forked.2.iter().all(|(_, hash)| !hash.is_empty()), "{name}: a forked run gave no hash");
        assert_eq!(forked, spawned, "{name}: forked sweep differs from spawned");
    }
}
