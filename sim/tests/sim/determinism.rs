//! One seed gives one run, bit for bit: a slice of seeds of every scenario runs twice, in
//! separate processes, and the trace hashes must match. Different seeds must differ.

use std::path::Path;

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
