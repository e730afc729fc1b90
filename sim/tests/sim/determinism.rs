//! One seed gives one run, bit for bit: a slice of seeds of every scenario runs twice, in
//! separate processes, and the trace hashes must match. Different seeds must differ. A seed also
//! runs the same when the process ran others before it.

use std::path::Path;

use crid_sim::runner::run_seed;
use crid_sim::scenario::{Scenario, names};
use crid_sim::summary::run_seed_isolated;

#[test]
fn every_scenario_replays_bit_for_bit() {
    let exe = Path::new(env!("CARGO_BIN_EXE_crid-sim"));
    for name in names() {
        let scenario = Scenario::load(name).unwrap();
        let mut hashes = vec![];
        for seed in [1, 7] {
            let first = run_seed_isolated(exe, &scenario, seed);
            let second = run_seed_isolated(exe, &scenario, seed);
            assert!(!first.trace_hash.is_empty(), "{name} seed {seed}: no trace hash ({:?})", first.failures);
            assert_eq!(
                first.trace_hash,
                second.trace_hash,
                "{name} seed {seed} is not deterministic: replay with `cargo sim check-determinism --scenario {name} --seeds {seed}..{}`",
                seed + 1
            );
            assert_eq!(first.rpcs, second.rpcs);
            hashes.push(first.trace_hash);
        }
        assert_ne!(
            hashes[0], hashes[1],
            "{name}: two seeds gave the same run; the seed is not reaching the simulation"
        );
    }
}

/// Runs in one process share what a library keeps per process (tokio's watch channels once
/// ordered their waiters by a generator seeded from a process-wide counter): the third run of a
/// seed in this process must match the first and a run in a fresh process.
#[test]
fn a_seed_replays_in_a_process_that_ran_others_before() {
    let exe = Path::new(env!("CARGO_BIN_EXE_crid-sim"));
    for (name, seed) in [("smoke", 1), ("interrupted_start", 3), ("network", 5)] {
        let scenario = Scenario::load(name).unwrap();
        let fresh = run_seed_isolated(exe, &scenario, seed).trace_hash;
        let runs: Vec<String> = (0..3).map(|_| run_seed(&scenario, seed, false).trace_hash).collect();
        assert!(!fresh.is_empty(), "{name} seed {seed}: no trace hash");
        for (index, hash) in runs.iter().enumerate() {
            assert_eq!(hash, &fresh, "{name} seed {seed}: in-process run {index} differs from a fresh process's");
        }
    }
}
