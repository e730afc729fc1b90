//! Every scenario over a fixed seed range: no invariant may fail. Each seed runs in a process of
//! its own (the crid-sim binary), so a seed here replays exactly as `cargo sim run` replays it.
//! CRID_SIM_SEEDS sets the range length (default 200).

use std::path::Path;

use crid_sim::scenario::{Scenario, names as scenario_names};
use crid_sim::summary::run_seeds;

fn seeds() -> u64 {
    std::env::var("CRID_SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(200) // determinism-ok: the test reads its seed count once; runs never see it.
}

fn check(name: &str) {
    check_seeds(name, (0..seeds()).collect());
}

fn check_seeds(name: &str, seeds: Vec<u64>) {
    let scenario = Scenario::load(name).expect("embedded scenario or scenario file");
    let exe = Path::new(env!("CARGO_BIN_EXE_crid-sim"));
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get()); // determinism-ok: worker count only; each seed runs alone.
    let count = seeds.len() as u64;
    let (summary, failed) = run_seeds(exe, &scenario, seeds, jobs, |_| {});
    assert_eq!(summary.runs, count);
    let described: Vec<String> = failed
        .iter()
        .take(5)
        .map(|r| {
            let f = &r.failures[0];
            format!(
                "seed {}: {} on {} at {}: {}\n  replay: cargo sim run --scenario {name} --seed {} --trace",
                r.seed, f.invariant, f.object, f.sim_time, f.detail, r.seed
            )
        })
        .collect();
    assert!(failed.is_empty(), "{name}: {} of {} seeds failed:\n{}", failed.len(), summary.runs, described.join("\n"));
}

macro_rules! scenario_tests {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { check(stringify!($name)); })*

        #[test]
        fn every_embedded_scenario_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for name in scenario_names() {
                assert!(tested.contains(&name), "scenario {name} has no seed-range test");
            }
        }
    };
}

scenario_tests!(
    smoke,
    recovery,
    event_storm,
    pull_dedup,
    exits,
    shim_leak,
    interrupted_start,
    names,
    network,
    idempotence,
    pull_stall,
    exec_storm,
    paused,
    swarm
);

/// Seeds that reproduced a bug before its fix, kept as regression tests. The bug's mutant in
/// sim/mutants/ brings it back; `ci/mutants` checks that the scenario still catches it.
///
/// B28: an OOM-killed container whose TaskOOM event the bus dropped (or delivered after the
/// exit) ended with reason `Error` (invariant 23).
#[test]
fn regression_b28_oom_reason_without_the_bus_event() {
    check_seeds("event_storm", vec![0]);
}

/// B29: an image event's stale read of containerd, applied after a removal and a pull, left the
/// store without an id reference containerd had (invariant 25).
#[test]
fn regression_b29_image_event_stale_read() {
    check_seeds(concat!(env!("CARGO_MANIFEST_DIR"), "/mutants/scenarios/image_race.toml"), vec![2]);
}

/// A swarm seed that found a rolled-back sandbox's or container's dir left behind when its
/// removal failed once (invariant 13), before the rollback retried it in the background.
#[test]
fn regression_swarm_rollback_dir_removal() {
    check_seeds("swarm", vec![118]);
}

/// Swarm seeds of a wide sweep (20000..23000) that found leaks and stalls no seed of 0..200
/// reached. A rolled-back container's renamed checkpoint (`.del-status`, beside its dir) whose
/// removal failed stayed behind for good (invariant 13): it is now retried in the background.
#[test]
fn regression_swarm_rollback_checkpoint_removal() {
    check_seeds("swarm", vec![20032, 20967]);
}

/// A crash between deleting a container in containerd and removing its dir, then a restart
/// whose orphan sweep could not read the containers dir once: the dir stayed until the next
/// start (invariant 13). The sweep now retries the read before the socket opens.
#[test]
fn regression_swarm_orphan_sweep_read_dir_retried() {
    check_seeds("swarm", vec![20450, 21269]);
}

/// A layer unpack that never returned held the layer's lock, and every later pull of an image
/// sharing it (the sandbox image's, so every RunPodSandbox) waited on it for good (liveness).
/// Unpacks are now bounded.
#[test]
fn regression_swarm_hung_layer_unpack_bounded() {
    check_seeds("swarm", vec![20178, 20437]);
}

/// An image reference containerd has but the store missed for good (invariant 25): an image
/// event whose handling failed (22544, 21262), and a restart whose image resync failed ten
/// times (21364). Both are retried in the backoff queue now.
#[test]
fn regression_swarm_image_reference_refresh_retried() {
    check_seeds("swarm", vec![21262, 21364, 22544]);
}

/// A rootfs lease whose delete (after the call it served answered) hung: the checker called
/// the system quiescent while the delete was still in flight and found the image's disk held
/// (invariant 30). Quiescence now waits for the leases this process holds.
#[test]
fn regression_swarm_detached_lease_release_awaited() {
    check_seeds("swarm", vec![21289, 22452]);
}

/// A rootfs snapshot prepare applied before its reply was lost (AlreadyExists for the new
/// object's own fresh key) failed RunPodSandbox, and the retry after kubelet's deadline got
/// that error for a name no sandbox held (invariant 28). Taken as done now, as a container
/// create is.
#[test]
fn regression_swarm_snapshot_prepare_already_applied() {
    check_seeds("swarm", vec![30393]);
}

/// A StartContainer that failed on a full disk and could not record its failure, whose task
/// started after all and was OOM-killed: the exit path's retry recorded the failed start's code
/// under the exit's reason (OOMKilled), not StartError (invariant 23). An exit of a container
/// never recorded as started is now its StartError, and a later OOM leaves that alone.
#[test]
fn regression_swarm_unrecorded_start_failure() {
    check_seeds("swarm", vec![34799]);
}

/// B25 by another way: an exec start answered with an error although the process started (a
/// retry answered AlreadyExists, a reply lost to a deadline) left the process running after
/// ExecSync returned (invariant 27).
#[test]
fn regression_b25_exec_start_failed_but_applied() {
    check_seeds("exec_storm", vec![2, 3]);
}

/// Swarm seeds where containerd answered a create with AlreadyExists, the create having been
/// applied before (a retry's answer): a pull lease's (seed 114, PullImage failed AlreadyExists,
/// invariant 26) and a sandbox container's (seed 83, RunPodSandbox failed AlreadyExists for a
/// name nobody held, invariant 28). The ids are fresh, so the object is the call's own.
#[test]
fn regression_swarm_create_already_applied() {
    check_seeds("swarm", vec![83, 114]);
}

/// A reply lost to the caller's deadline (B12): a CreateContainer slowed past kubelet's deadline
/// by slow checkpoint writes finished in the instant the first retry's deadline passed, so the
/// retry's handler received the id and its reply was dropped. The service took the result as
/// delivered and forgot it, and the second retry got "name is reserved" while the name's holder
/// was the CREATED container it had asked for (invariant 28). Successes are now kept until the
/// object is removed.
#[test]
fn regression_b12_reply_lost_at_the_deadline() {
    check_seeds(concat!(env!("CARGO_MANIFEST_DIR"), "/mutants/scenarios/rollback_names.toml"), vec![21]);
}

/// An OOM event queued behind a failed exit (its task delete failed) was retried while
/// RemoveContainer was between deleting the checkpoint and dropping the container: the OOM's
/// status write brought the removed container's checkpoint back (invariant 13). A status change
/// of a container being removed now waits for the removal's outcome.
#[test]
fn regression_swarm_status_write_during_removal() {
    check_seeds("swarm", vec![50353]);
}

/// A recovery's lease delete that hung was queued, and its retry hung too: while the backoff
/// loop replayed it the queue looked empty, so the checker called the system quiescent with the
/// lease still in containerd (invariant 30), and a new event for an id being replayed would
/// have overtaken the replay. An entry now stays queued until its replay is done.
#[test]
fn regression_swarm_backoff_replay_counts_as_pending() {
    check_seeds("swarm", vec![55604]);
}

/// A pull's reference create was answered AlreadyExists (it had been applied) and the read of
/// the existing reference failed: the pull failed with containerd holding the reference and
/// the store not, and its image event was held back past the check (invariant 25). A failed
/// read of an existing reference now queues a re-read, as a failed read-back after an unclear
/// create already did.
#[test]
fn regression_swarm_existing_reference_read_failed() {
    check_seeds("swarm", vec![63676]);
}

/// A RemoveImage whose reference delete was applied but answered DeadlineExceeded, its event
/// lost, and its read-back failed: the store kept a reference containerd no longer had
/// (invariant 25). The failed read-back now queues a re-read, as the pull's does.
#[test]
fn regression_swarm_unclear_image_delete() {
    check_seeds("swarm", vec![100244]);
}

/// A pull's reference create answered AlreadyExists, the read of the existing reference never
/// returned, and the references' 60 s deadline dropped the write with its image event held
/// back: containerd kept the reference and the store never learned of it (invariant 25). A
/// reference write cut off before it finishes now queues a re-read.
#[test]
fn regression_swarm_interrupted_reference_write() {
    check_seeds("swarm", vec![227772]);
}

/// A RemoveContainer that kubelet gave up on force-stopped its container, found the task gone
/// and recorded the exit, and its task delete hung for good while it held the container's
/// delete lock. Every later RemoveContainer waited on that lock until its own bound and was
/// refused as "already being removed" in between: the pod never went (liveness). A delete now
/// waits for one in flight only as long as the exit handler's budget, then sends its own.
#[test]
fn regression_swarm_hung_delete_holds_the_task_delete_lock() {
    check_seeds("swarm", vec![270228]);
}
