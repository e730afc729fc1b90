//! Golden traces: the trace of a few fixed seeds, as insta snapshots under snapshots/. Any
//! change of behaviour shows up as a snapshot diff to review (`cargo insta review`). What is
//! pinned is the trace's projection (`crid_sim::trace::projection`): object ids renamed in order
//! of first appearance and times cut to whole seconds, so that new random ids or a latency
//! that moves by microseconds leave the snapshots alone.

use std::path::Path;

use crid_sim::scenario::Scenario;
use crid_sim::summary::run_seed_isolated_with;
use crid_sim::trace::projection;

fn golden(scenario: &str, seed: u64) {
    let exe = Path::new(env!("CARGO_BIN_EXE_crid-sim"));
    let report = run_seed_isolated_with(exe, &Scenario::load(scenario).unwrap(), seed, true);
    assert!(report.passed(), "{scenario} seed {seed} failed: {:?}", report.failures);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../../../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_description(format!("cargo sim run --scenario {scenario} --seed {seed} --trace"));
    let projected = projection(&report.trace).join("\n");
    settings.bind(|| insta::assert_snapshot!(format!("{scenario}-seed-{seed}"), projected));
}

#[test]
fn smoke_seed_1() {
    golden("smoke", 1);
}

#[test]
fn smoke_seed_2() {
    golden("smoke", 2);
}

#[test]
fn interrupted_start_seed_3() {
    golden("interrupted_start", 3);
}

#[test]
fn network_seed_5() {
    golden("network", 5);
}

#[test]
fn pull_dedup_seed_4() {
    golden("pull_dedup", 4);
}
