//! The crid-sim binary starts and knows its embedded scenarios. A small test target of its own:
//! `ci/mutants` builds it (with `--no-run`) to get the binary with the test build's dependency
//! features, without compiling the whole simulation suite for every mutant. Simulation mode
//! only: a normal build of crid-sim refuses to run.
#![cfg(madsim)]

use std::process::Command; // determinism-ok: the test starts the built binary, outside any run.

#[test]
#[expect(clippy::disallowed_methods, reason = "the test runs the command line as a shell would")]
fn the_binary_lists_the_embedded_scenarios() {
    let output = Command::new(env!("CARGO_BIN_EXE_crid-sim")).arg("list").output().expect("run crid-sim list");
    assert!(output.status.success(), "crid-sim list failed: {}", String::from_utf8_lossy(&output.stderr));
    let listed = String::from_utf8_lossy(&output.stdout);
    for name in crid_sim::scenario::names() {
        assert!(listed.contains(name), "scenario {name} missing from `crid-sim list`:\n{listed}");
    }
}
