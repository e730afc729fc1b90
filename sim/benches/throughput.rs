//! Simulator throughput on this machine: seeds per second and simulated/wall time ratio for
//! each scenario, `sim-sweep` profile build (`sim` linked as one unit, Cargo.toml), each seed in a
//! process of its own (forked by a fork server per worker; CRID_SIM_ISOLATION=spawn spawns one
//! instead). Run with `cargo simbench`.
//! CRID_BENCH_SEEDS sets the seeds per scenario (default 40).
//!
//! Measured on 2 cores, 2 workers, 40 seeds, on a quiet machine (`crid-sim run --seeds 0..40`,
//! which runs seeds as this benchmark does; CPU time is the whole process tree's). Before: the
//! binary of 1a0f505. After: the simulation binaries allocate through mimalloc, fault points
//! are found by site without formatting their names, containers are indexed by pod, a status
//! message borrows its image, one copy of the fake containerd's tasks serves a whole check, and
//! the fake disk overwrites in place.
//!
//! | scenario    | before: seeds/s, CPU ms/seed | after: seeds/s, CPU ms/seed |
//! |-------------|------------------------------|-----------------------------|
//! | recovery    | 10.6, 187                    | 15.6, 123                   |
//! | event_storm | 1.6, 1206                    | 3.6, 543                    |
//! | exits       | 9.6, 205                     | 19.5, 101                   |
//! | exec_storm  | 7.4, 264                     | 10.4, 189                   |
//!
//! What a seed's CPU goes to now (perf, frame-pointer build, recovery): about a third to the
//! safety checks' full snapshot and kubelet view after every call and every simulated second,
//! about a tenth to madsim's gRPC transport; the rest is spread thin over the core and fakes.

#[cfg(not(madsim))]
fn main() {
    eprintln!("the simulator benchmark runs in simulation mode: `cargo simbench`");
}

#[cfg(madsim)]
fn main() {
    use crid_sim::scenario::{Scenario, names};
    use crid_sim::summary::{ISOLATION_VAR, Isolation, run_seeds};
    let seeds: u64 = std::env::var("CRID_BENCH_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(40); // determinism-ok: benchmark configuration and wall-clock measurement, outside any run.
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get()); // determinism-ok: the worker count of the sweep, chosen outside any run.
    let exe = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("crid-sim"); // determinism-ok: where the simulator binary is, found outside any run.
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
