//! Simulator throughput on this machine: seeds per second and simulated/wall time ratio for
//! each scenario, `sim` profile build, each seed in a process of its own (forked by a fork server
//! per worker; CRID_SIM_ISOLATION=spawn spawns one instead). Run with `cargo simbench`.
//! CRID_BENCH_SEEDS sets the seeds per scenario (default 40).
//!
//! Measured on 2 cores with 2 workers, 20 seeds, while another build loaded the machine (load
//! 4-6: seeds/s are depressed alike; CPU ms per seed is the steadier figure). Before: 4366b3e.
//! After: cheaper safety checks (no whole-store clones, names built only for a failure), fake
//! containerd reads that settle exits only when one may be due, the fake disk's directory test
//! by range, and the fork server.
//!
//! | scenario    | before: seeds/s, CPU ms/seed | after, spawn | after, fork server |
//! |-------------|------------------------------|--------------|--------------------|
//! | recovery    | 3.7, 264                     | 4.5, 218     | 5.2, 191           |
//! | event_storm | 0.9, 1104                    | 1.3, 786     | 1.2, 811           |
//! | exits       | 4.4, 229                     | 4.9, 200     | 6.4, 153           |
//!
//! The fork server saves about 30-50 ms of CPU per seed (exec, loading, one-time setup such as
//! the image reference regex); the rest of a seed is the safety checks' full snapshot and
//! kubelet view after every call, madsim's gRPC transport, and allocation.

#[cfg(not(madsim))]
fn main() {
    eprintln!("the simulator benchmark runs in simulation mode: `cargo simbench`");
}

#[cfg(madsim)]
fn main() {
    use crid_sim::scenario::{Scenario, names};
    use crid_sim::summary::{ISOLATION_VAR, Isolation, run_seeds};
    // determinism-ok: benchmark configuration and wall-clock measurement, outside any run.
    let seeds: u64 = std::env::var("CRID_BENCH_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let exe = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("crid-sim");
    assert!(exe.exists(), "build the simulator first: cargo sim list ({} missing)", exe.display());
    let isolation = match Isolation::from_env() {
        Isolation::Fork => "one forked process per seed, one fork server per worker",
        Isolation::Spawn => "one spawned process per seed",
    };
    println!("{seeds} seeds per scenario, {jobs} workers, {isolation} ({ISOLATION_VAR}=spawn|fork)\n");
    println!(
        "{:<20} {:>10} {:>14} {:>16} {:>14}",
        "scenario", "seeds/s", "sim/wall", "sim s per seed", "rpcs per seed"
    );
    for name in names() {
        let scenario = Scenario::load(name).unwrap();
        let rpcs = std::sync::atomic::AtomicU64::new(0);
        let (summary, _) = run_seeds(&exe, &scenario, (0..seeds).collect(), jobs, |r| {
            rpcs.fetch_add(r.rpcs, std::sync::atomic::Ordering::Relaxed);
        });
        let per_second = summary.runs as f64 * 1000.0 / summary.elapsed_ms.max(1) as f64;
        let ratio = summary.sim_ms as f64 / summary.wall_ms.max(1) as f64;
        println!(
            "{name:<20} {per_second:>10.1} {ratio:>13.0}x {:>16.0} {:>14}",
            summary.sim_ms as f64 / 1000.0 / summary.runs as f64,
            rpcs.into_inner() / summary.runs
        );
    }
}
