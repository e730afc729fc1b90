//! Runs one scenario with one seed in a fresh madsim runtime: the CRI node, the kubelet node,
//! the chaos schedule, the fault phase, the liveness phase and the final checks.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::buggify::FaultPlan;
use crate::cri_node::{CRI_ADDR, CriEndpoint, KUBELET_IP, serve};
use crate::fakes::{FakeWorld, PAUSE_IMAGE};
use crate::invariants::{Checker, Failure};
use crate::kinds::ChaosKind;
use crate::kubelet::Kubelet;
use crate::scenario::Scenario;
use crate::trace::{Trace, short};

/// How long the CRI process stays down after a crash.
const CRI_DOWN: Duration = Duration::from_secs(2);
const CONTAINERD_DOWN: Duration = Duration::from_secs(3);
const DISK_FULL_FOR: Duration = Duration::from_secs(5);
const UNKILLABLE_FOR: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    pub scenario: String,
    pub seed: u64,
    pub failures: Vec<Failure>,
    pub trace_hash: String,
    pub trace: Vec<String>,
    pub sim_ms: u64,
    pub wall_ms: u64,
    pub active_points: Vec<String>,
    pub chaos_events: Vec<String>,
    pub rpcs: u64,
    pub pods: u64,
}

impl RunReport {
    /// The report of a seed that ended before its checks could report: one failure, no trace.
    pub fn without_run(scenario: &str, seed: u64, invariant: &str, detail: String) -> RunReport {
        RunReport {
            scenario: scenario.to_string(),
            seed,
            failures: vec![Failure {
                invariant: invariant.to_string(),
                object: "-".into(),
                sim_time: "-".into(),
                detail,
            }],
            trace_hash: String::new(),
            trace: vec![],
            sim_ms: 0,
            wall_ms: 0,
            active_points: vec![],
            chaos_events: vec![],
            rpcs: 0,
            pods: 0,
        }
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The one-line command that replays a run.
pub fn replay_command(scenario: &str, seed: u64) -> String {
    format!("cargo sim run --scenario {scenario} --seed {seed} --trace")
}

/// The CRI config of the simulated node.
pub fn sim_config() -> crid::Config {
    crid::Config {
        sandbox_image: PAUSE_IMAGE.into(),
        root_dir: "/var/lib/crid".into(),
        state_dir: "/run/crid".into(),
        ..crid::Config::default()
    }
}

/// The simulated machine: kubelet and the CRI talk over a unix socket, so a message takes tens
/// of microseconds, not madsim's default of milliseconds between hosts.
pub fn runtime_config() -> madsim::Config {
    let net = madsim::net::Config {
        send_latency: Duration::from_micros(10)..Duration::from_micros(100),
        ..madsim::net::Config::default()
    };
    madsim::Config { net, ..madsim::Config::default() }
}

/// A chaos event: what, when (ms into the run), and a draw that picks its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChaosEvent {
    pub kind: ChaosKind,
    pub at_ms: u64,
    pub draw: u64,
}

impl ChaosEvent {
    pub fn encode(&self) -> String {
        format!("{}@{}#{}", self.kind, self.at_ms, self.draw)
    }
    pub fn decode(text: &str) -> Option<ChaosEvent> {
        let (kind, rest) = text.split_once('@')?;
        let (at, draw) = rest.split_once('#')?;
        Some(ChaosEvent { kind: kind.parse().ok()?, at_ms: at.parse().ok()?, draw: draw.parse().ok()? })
    }

    /// An encoded event (`kind@ms#draw`, as reports and shrunk scenarios carry it) for people:
    /// `task_exit at 20.6s`; text that does not decode is returned as it is.
    pub fn describe(encoded: &str) -> String {
        ChaosEvent::decode(encoded).map_or_else(|| encoded.to_string(), |event| event.to_string())
    }
}

/// For people: the kind and the time into the run, in seconds to a tenth (`task_exit at
/// 20.6s`); the draw that picks the target is left out. [`ChaosEvent::encode`] is the exact form.
impl std::fmt::Display for ChaosEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}.{}s", self.kind, self.at_ms / 1000, self.at_ms % 1000 / 100)
    }
}

/// Draws the chaos schedule of a run from the seed (or takes the forced one).
pub fn chaos_schedule(scenario: &Scenario, seed: u64) -> Vec<ChaosEvent> {
    if let Some(forced) = scenario.forced.as_ref().and_then(|f| f.chaos_events.clone()) {
        return forced.iter().filter_map(|e| ChaosEvent::decode(e)).collect();
    }
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xC4A05);
    let c = &scenario.chaos;
    let duration_ms = scenario.duration_s * 1000;
    let minutes = scenario.duration_s as f64 / 60.0;
    let mut events = vec![];
    for kind in ChaosKind::all() {
        let per_min = c.per_min(kind);
        let expected = per_min * minutes;
        // Whole events plus one more with the fractional probability.
        let mut count = expected.floor() as u64;
        if rng.gen_bool((expected - expected.floor()).clamp(0.0, 1.0)) {
            count += 1;
        }
        for _ in 0..count {
            events.push(ChaosEvent { kind, at_ms: rng.gen_range(0..duration_ms), draw: rng.r#gen() });
        }
    }
    // Ties are broken by the kind's name, as they always were.
    events.sort_by(|a, b| (a.at_ms, a.kind.as_str(), a.draw).cmp(&(b.at_ms, b.kind.as_str(), b.draw)));
    events
}

/// Runs a seed on a thread of its own (HashMap seeds are stable only in a fresh thread's first
/// runtime) and turns a panic of the simulation into a failure.
pub fn run_seed(scenario: &Scenario, seed: u64, echo_trace: bool) -> RunReport {
    let scenario_for_thread = scenario.clone();
    let joined = std::thread::Builder::new() // determinism-ok: one OS thread per seed is what makes a seed replayable; it does no I/O.
        .name(format!("seed-{seed}"))
        .stack_size(64 * 1024 * 1024)
        .spawn(move || {
            let trace = Arc::new(Trace::new(echo_trace));
            #[expect(
                clippy::disallowed_methods,
                reason = "wall time is measured for the report only, never used by the run"
            )]
            let wall = std::time::Instant::now(); // determinism-ok: wall time for the report; the run never reads it.
            let runtime = madsim::runtime::Runtime::with_seed_and_config(seed, runtime_config());
            let run_trace = trace.clone();
            let scenario = scenario_for_thread.clone();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                runtime.block_on(simulate(scenario, seed, run_trace))
            }));
            let wall_ms = wall.elapsed().as_millis() as u64;
            (outcome, trace, wall_ms)
        })
        .expect("spawn seed thread")
        .join();
    let (outcome, trace, wall_ms) = match joined {
        Ok(parts) => parts,
        Err(_) => unreachable!("the seed thread catches panics"),
    };
    let mut report = match outcome {
        Ok(report) => report,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            trace.log("VIOLATED", format!("assertion: {message}"));
            RunReport::without_run(&scenario.name, seed, "assertion (core or harness panicked)", message)
        }
    };
    report.wall_ms = wall_ms;
    report.trace = trace.lines();
    report.trace_hash = trace.hash();
    report
}

async fn simulate(scenario: Scenario, seed: u64, trace: Arc<Trace>) -> RunReport {
    trace.begin();
    let swarm = scenario.swarm;
    let scenario = scenario.for_seed(seed);
    let handle = madsim::runtime::Handle::current();
    let crash_requested = Arc::new(tokio::sync::Notify::new());
    let plan = Arc::new(FaultPlan::new(&scenario, seed, trace.clone(), crash_requested.clone()));
    let chaos = chaos_schedule(&scenario, seed);
    trace.log("sim", format!("scenario {} seed {seed}", scenario.name));
    if swarm {
        for knobs in scenario.knobs() {
            trace.log("sim", format!("swarm {knobs}"));
        }
    }
    trace.log("sim", format!("active fault points: [{}]", plan.active_points().join(", ")));
    trace.log(
        "sim",
        format!("chaos events: [{}]", chaos.iter().map(ChaosEvent::to_string).collect::<Vec<_>>().join(", ")),
    );

    let world = Arc::new(FakeWorld::new(seed, plan.clone()).with_default_images());
    world.cni.set_chained_failure(scenario.chaos.chained_cni);
    if scenario.workload.remove_image_probability == 0.0 {
        world.containerd.set_gc_enabled(false);
    }
    let endpoint = CriEndpoint::default();
    let mut checker = Checker::new(trace.clone(), world.clone(), endpoint.clone(), true);
    checker.gone_task_bound = scenario.gone_task_bound_s.map(Duration::from_secs);
    let checker = Arc::new(checker);
    let config = sim_config();
    let cri = {
        let (world, endpoint, trace) = (world.clone(), endpoint.clone(), trace.clone());
        handle
            .create_node()
            .name("cri")
            .ip(CRI_ADDR.ip())
            .init(move || serve(config.clone(), world.clone(), endpoint.clone(), trace.clone()))
            .build()
    };
    let kubelet = Arc::new(Kubelet::new(scenario.clone(), seed, checker.clone(), trace.clone()));
    let kubelet_node = handle.create_node().name("kubelet").ip(KUBELET_IP).build();
    let workload = kubelet_node.spawn(kubelet.clone().run_workload());

    // The fault phase: chaos events and crash requests, then the liveness phase.
    let fault_phase = Duration::from_secs(scenario.duration_s);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x7A26E7);
    let mut pending = chaos.into_iter().peekable();
    let mut paused: Vec<String> = vec![];
    loop {
        let now_ms = trace.elapsed_ms();
        if now_ms >= fault_phase.as_millis() as u64 || checker.failed() {
            break;
        }
        let next_ms =
            pending.peek().map_or(fault_phase.as_millis() as u64, |e| e.at_ms.min(fault_phase.as_millis() as u64));
        let wait = Duration::from_millis(next_ms.saturating_sub(now_ms).max(1)).min(Duration::from_secs(1));
        tokio::select! {
            biased;
            () = crash_requested.notified() => {
                crash_cri(&handle, &cri, &endpoint, &world, &checker, &trace, scenario.chaos.tear_on_crash, rng.r#gen(), "crash point").await;
            }
            () = tokio::time::sleep(wait) => {}
        }
        while pending.peek().is_some_and(|e| e.at_ms <= trace.elapsed_ms()) {
            let event = pending.next().expect("peeked");
            apply_chaos(&event, &handle, &cri, &endpoint, &world, &checker, &trace, &scenario, &mut paused).await;
        }
        checker.check_safety();
        world.containerd.deliver_due_events();
    }

    // Liveness: faults stop, everything heals, the kubelet drains.
    plan.set_enabled(false);
    trace.log("sim", "fault phase over: faults off, draining");
    if !world.containerd.is_up() {
        world.containerd.restart();
    }
    world.os.set_disk_full(false);
    for id in &paused {
        world.containerd.set_task_state(id, crid::ports::TaskState::Running);
    }
    if endpoint.service().is_none() {
        checker.new_incarnation();
        handle.restart(cri.id());
    }
    kubelet.drain();
    let liveness_deadline_ms = trace.elapsed_ms() + scenario.liveness_s * 1000;
    let mut converged = false;
    let mut last_collection_ms = 0;
    while trace.elapsed_ms() < liveness_deadline_ms && !checker.failed() {
        if workload.is_finished() && checker.quiescent() {
            // Kubelet's periodic garbage collection: objects created by calls whose replies were
            // lost show up in the lists and are removed. Converged once a pass finds nothing.
            if kubelet_node
                .spawn({
                    let kubelet = kubelet.clone();
                    async move { kubelet.garbage_collect().await }
                })
                .await
                .unwrap_or(true)
            {
                converged = true;
                break;
            }
        } else if workload.is_finished() && trace.elapsed_ms() >= last_collection_ms + 10_000 {
            last_collection_ms = trace.elapsed_ms();
            let kubelet = kubelet.clone();
            let _ = kubelet_node.spawn(async move { kubelet.garbage_collect().await }).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        checker.check_safety();
        world.containerd.deliver_due_events();
    }
    if converged {
        trace.log("sim", "quiescent; checking liveness invariants");
        checker.check_liveness();
    } else if !checker.failed() {
        let detail = match endpoint.service() {
            Some(service) => {
                let s = service.snapshot();
                format!(
                    "not quiescent after {}s: workload finished={}, operations={:?}, backoff={}, locks={:?}, pulls={}, \
                     leases held={:?}",
                    scenario.liveness_s,
                    workload.is_finished(),
                    s.operations,
                    s.backoff_len,
                    s.lock_keys,
                    s.pulls_in_flight,
                    s.leases_held
                )
            }
            None => "the CRI service is down".into(),
        };
        checker.fail("liveness: convergence", "system", detail);
    }
    let failures = checker.failures();
    let (checks, unchanged) = checker.safety_checks();
    trace.log(
        "sim",
        format!(
            "done: {} failures, {} rpcs, {} pods, {checks} safety checks ({unchanged} found nothing changed)",
            failures.len(),
            kubelet.rpcs_total.load(std::sync::atomic::Ordering::Relaxed),
            kubelet.pods_total.load(std::sync::atomic::Ordering::Relaxed)
        ),
    );
    RunReport {
        scenario: scenario.name.clone(),
        seed,
        failures,
        trace_hash: String::new(),
        trace: vec![],
        sim_ms: trace.elapsed_ms(),
        wall_ms: 0,
        active_points: plan.active_points(),
        chaos_events: chaos_schedule(&scenario, seed).iter().map(ChaosEvent::encode).collect(),
        rpcs: kubelet.rpcs_total.load(std::sync::atomic::Ordering::Relaxed),
        pods: kubelet.pods_total.load(std::sync::atomic::Ordering::Relaxed),
    }
}

#[allow(clippy::too_many_arguments)]
async fn crash_cri(
    handle: &madsim::runtime::Handle,
    cri: &madsim::runtime::NodeHandle,
    endpoint: &CriEndpoint,
    world: &FakeWorld,
    checker: &Checker,
    trace: &Trace,
    tear: bool,
    draw: u64,
    why: &str,
) {
    if endpoint.service().is_none() {
        return;
    }
    trace.log("chaos", format!("CRI process killed ({why})"));
    handle.kill(cri.id());
    endpoint.down();
    if tear {
        world.os.crash_tear_unsynced(draw);
    } else {
        world.os.crash_lose_unsynced();
    }
    tokio::time::sleep(CRI_DOWN).await;
    checker.new_incarnation();
    trace.log("chaos", "CRI process restarted");
    handle.restart(cri.id());
}

/// Picks a running task by the event's draw.
fn pick_task(world: &FakeWorld, draw: u64, sandboxes_only: bool) -> Option<String> {
    let candidates = world.containerd.running_task_ids(sandboxes_only);
    (!candidates.is_empty()).then(|| candidates[(draw % candidates.len() as u64) as usize].clone())
}

#[allow(clippy::too_many_arguments)]
async fn apply_chaos(
    event: &ChaosEvent,
    handle: &madsim::runtime::Handle,
    cri: &madsim::runtime::NodeHandle,
    endpoint: &CriEndpoint,
    world: &Arc<FakeWorld>,
    checker: &Checker,
    trace: &Trace,
    scenario: &Scenario,
    paused: &mut Vec<String>,
) {
    match event.kind {
        ChaosKind::CriCrash => {
            crash_cri(
                handle,
                cri,
                endpoint,
                world,
                checker,
                trace,
                scenario.chaos.tear_on_crash,
                event.draw,
                "scheduled",
            )
            .await
        }
        ChaosKind::ContainerdRestart => {
            trace.log("chaos", "containerd restarting");
            world.containerd.crash();
            let world = world.clone();
            tokio::spawn(async move {
                tokio::time::sleep(CONTAINERD_DOWN).await;
                world.containerd.restart();
            });
        }
        ChaosKind::DiskFull => {
            trace.log("chaos", "disk full");
            world.os.set_disk_full(true);
            let world = world.clone();
            tokio::spawn(async move {
                tokio::time::sleep(DISK_FULL_FOR).await;
                world.os.set_disk_full(false);
            });
        }
        kind => {
            let Some(id) = pick_task(world, event.draw, kind == ChaosKind::Unkillable) else { return };
            trace.log("chaos", format!("{kind} on task {}", short(&id)));
            match kind {
                ChaosKind::TaskExit => {
                    world.containerd.exit_task_now(&id, (event.draw % 3) as u32);
                }
                ChaosKind::TaskOom => {
                    world.containerd.oom_task_now(&id);
                }
                ChaosKind::DropWait => {
                    world.containerd.drop_next_wait(&id);
                }
                ChaosKind::TaskVanish => {
                    world.containerd.remove_task_out_of_band(&id);
                }
                ChaosKind::PauseTask => {
                    world.containerd.set_task_state(&id, crid::ports::TaskState::Paused);
                    paused.push(id);
                }
                ChaosKind::Unkillable => {
                    world.containerd.set_unkillable(&id, true);
                    let world = world.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(UNKILLABLE_FOR).await;
                        world.containerd.set_unkillable(&id, false);
                    });
                }
                ChaosKind::CriCrash | ChaosKind::ContainerdRestart | ChaosKind::DiskFull => {
                    unreachable!("handled above")
                }
            }
        }
    }
}
