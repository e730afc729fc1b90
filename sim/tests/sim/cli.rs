//! The command line as a shell uses it: `crid-sim run ... --trace | head` must end quietly when
//! the reader stops reading, with no panic and status 0; and the chaos events of a replay line
//! read back exactly.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitStatus, Stdio}; // determinism-ok: the test runs the binary as a shell would.

use crid_sim::kinds::ChaosKind;
use crid_sim::runner::ChaosEvent;

/// Starts `crid-sim run --scenario SCENARIO --seed SEED --trace`, reads `keep` lines of its
/// stdout, closes the pipe, and returns the exit status and stderr.
#[expect(clippy::disallowed_methods, reason = "the test runs the command line as a shell would")]
fn run_and_close_after(scenario: &str, seed: u64, keep: usize) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crid-sim"))
        .args(["run", "--scenario", scenario, "--seed", &seed.to_string(), "--trace"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start crid-sim");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    for _ in 0..keep {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).expect("read a line") > 0, "crid-sim ended early");
    }
    drop(stdout);
    let output = child.wait_with_output().expect("wait for crid-sim");
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_reader_gone_before_the_first_line_ends_the_run_quietly() {
    let (status, stderr) = run_and_close_after("smoke", 1, 0);
    assert!(status.success(), "status {status}, stderr: {stderr}");
    assert_eq!(stderr, "");
}

/// The header is 5 lines; the trace behind it is far longer than a pipe buffer (64 KiB), so
/// the closed pipe is met by the trace as it is echoed from inside the simulated run.
#[test]
fn a_reader_gone_during_the_trace_ends_the_run_quietly() {
    let (status, stderr) = run_and_close_after("interrupted_start", 3, 10);
    assert!(status.success(), "status {status}, stderr: {stderr}");
    assert_eq!(stderr, "");
}

// How a replay line names a chaos event.
#[test]
fn chaos_events_read_in_seconds_and_encode_exactly() {
    let event = ChaosEvent { kind: ChaosKind::TaskExit, at_ms: 20_649, draw: 13_443_341_983_834_114_641 };
    assert_eq!(event.to_string(), "task_exit at 20.6s");
    assert_eq!(ChaosEvent::decode(&event.encode()), Some(event.clone()));
    assert_eq!(ChaosEvent::describe(&event.encode()), "task_exit at 20.6s");
    // A tenth is cut, never rounded up past the moment of the event.
    let early = ChaosEvent { kind: ChaosKind::CriCrash, at_ms: 999, draw: 0 };
    assert_eq!(early.to_string(), "cri_crash at 0.9s");
    assert_eq!(ChaosEvent::describe("not an event"), "not an event");
}
