//! SPEC §10's invariants: safety after every step, liveness at quiescence, and the checks after
//! recovery. A violation names the invariant, the object and the simulated time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crid::inspect::{KubeletView, StateSnapshot};
use crid::ports::{KIND_CONTAINER, KIND_SANDBOX, LABEL_KIND, TaskInfo, TaskState};
use crid::{ContainerState, SandboxState};
use serde::{Deserialize, Serialize};

use crate::cri_node::CriEndpoint;
use crate::fakes::FakeWorld;
use crate::oracle::Oracle;
use crate::trace::{Trace, short};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub invariant: String,
    pub object: String,
    pub sim_time: String,
    pub detail: String,
}

/// Keeps at most this many failures per run; the first one is the one that matters.
const MAX_FAILURES: usize = 20;

pub struct Checker {
    trace: Arc<Trace>,
    world: Arc<FakeWorld>,
    endpoint: CriEndpoint,
    pub oracle: Oracle,
    failures: Mutex<Vec<Failure>>,
    /// Last seen state per container: (state, finished_at, incarnation).
    containers: Mutex<BTreeMap<String, (ContainerState, i64, u64)>>,
    sandboxes: Mutex<BTreeMap<String, (SandboxState, u64)>>,
    incarnation: Mutex<u64>,
    /// Pull-dedup check (redundant fetches and applies). It holds under crashes and image
    /// removal too; a scenario may switch it off to study other things.
    pub check_pull_dedup: bool,
    /// How long a RUNNING container or READY sandbox may keep a task that is gone (invariant 29;
    /// `None`: not checked). Its exit monitor reports the exit at once; the reconciler, every
    /// 10 s, must not be what records it.
    pub gone_task_bound: Option<std::time::Duration>,
    /// Since when (ms into the run) a RUNNING container or READY sandbox has had no running
    /// task, per id, and in which incarnation (invariant 29).
    gone_since_ms: Mutex<BTreeMap<String, (u64, u64)>>,
    /// RemoveImage calls the kubelet has in flight: while one runs, the image store may lag
    /// containerd's references (invariant 25 waits for it).
    pub image_removals_in_flight: AtomicU32,
    /// What the last full safety check read, and how many checks found it unchanged.
    last_checked: Mutex<Option<CheckedWorld>>,
    /// The images the last kubelet view served (id → references).
    last_view_images: Mutex<BTreeMap<String, Vec<String>>>,
    safety_checks: AtomicU64,
    unchanged_checks: AtomicU64,
}

/// Everything the world-only safety checks read: the service's snapshot, the fakes' state that
/// the checks compare it with, and the checker's own inputs. Equal worlds give equal verdicts, so
/// a check after a call that changed nothing (a status poll, a tick of the fault loop with no
/// event) repeats none of that work. The time-dependent check (29) and the cheap ones run every
/// time.
#[derive(PartialEq)]
struct CheckedWorld {
    snapshot: StateSnapshot,
    tasks: Option<BTreeMap<String, TaskInfo>>,
    allocations: Arc<BTreeMap<String, std::net::Ipv4Addr>>,
    netns: Arc<BTreeSet<String>>,
    image_names: Arc<BTreeSet<String>>,
    incarnation: u64,
    image_removals_in_flight: u32,
    oracle_changes: u64,
}

impl Checker {
    pub fn new(trace: Arc<Trace>, world: Arc<FakeWorld>, endpoint: CriEndpoint, check_pull_dedup: bool) -> Self {
        Checker {
            trace,
            world,
            endpoint,
            oracle: Oracle::default(),
            failures: Mutex::new(vec![]),
            containers: Mutex::new(BTreeMap::new()),
            sandboxes: Mutex::new(BTreeMap::new()),
            incarnation: Mutex::new(0),
            check_pull_dedup,
            image_removals_in_flight: AtomicU32::new(0),
            gone_task_bound: None,
            gone_since_ms: Mutex::new(BTreeMap::new()),
            last_checked: Mutex::new(None),
            last_view_images: Mutex::new(BTreeMap::new()),
            safety_checks: AtomicU64::new(0),
            unchanged_checks: AtomicU64::new(0),
        }
    }

    pub fn fail(&self, invariant: &str, object: &str, detail: impl Into<String>) {
        let detail = detail.into();
        let mut failures = self.failures.lock().unwrap();
        if failures.len() >= MAX_FAILURES || failures.iter().any(|f| f.invariant == invariant && f.object == object) {
            return;
        }
        self.trace.log("VIOLATED", format!("{invariant} on {object}: {detail}"));
        failures.push(Failure {
            invariant: invariant.into(),
            object: object.into(),
            sim_time: self.trace.now_label().trim().to_string(),
            detail,
        });
    }

    pub fn failures(&self) -> Vec<Failure> {
        self.failures.lock().unwrap().clone()
    }

    pub fn failed(&self) -> bool {
        !self.failures.lock().unwrap().is_empty()
    }

    /// A new CRI process starts: state may legitimately be re-derived from here on.
    pub fn new_incarnation(&self) {
        *self.incarnation.lock().unwrap() += 1;
    }

    /// How many CRI processes have started: a call and its retry sent to the same one know
    /// that no restart came in between.
    pub fn incarnation(&self) -> u64 {
        *self.incarnation.lock().unwrap()
    }

    fn live_snapshot(&self) -> Option<StateSnapshot> {
        let service = self.endpoint.service()?;
        let snapshot = service.snapshot();
        snapshot.initialized.then_some(snapshot)
    }

    /// Safety invariants (SPEC §10.1) and the oracle, on the current state.
    pub fn check_safety(&self) {
        let Some(snapshot) = self.live_snapshot() else { return };
        self.safety_checks.fetch_add(1, Ordering::Relaxed);
        self.check_no_duplicate_work();
        // Both task checks read the same tasks; one copy of them serves both.
        let tasks = self.world.containerd.is_up().then(|| self.world.containerd.tasks());
        self.check_gone_tasks_recorded(&snapshot, tasks.as_ref());
        self.check_exited_containers_have_no_running_task(&snapshot, tasks.as_ref());
        let world = CheckedWorld {
            snapshot,
            tasks,
            allocations: self.world.cni.allocations(),
            netns: self.world.os.netns_list(),
            image_names: self.world.containerd.image_names(),
            incarnation: self.incarnation(),
            image_removals_in_flight: self.image_removals_in_flight.load(Ordering::SeqCst),
            oracle_changes: self.oracle.changes(),
        };
        let mut last = self.last_checked.lock().unwrap();
        if last.as_ref() == Some(&world) {
            self.unchanged_checks.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let snapshot = &world.snapshot;
        self.check_registries(snapshot);
        // Found once, for the transitions and the kubelet view: an object whose view is as
        // the last full check saw it made no transition since (in the same process) and would
        // be judged as it was, so only the others are judged.
        let changed = last.as_ref().map(|last| changed_objects(last, &world));
        let same_process = last.as_ref().is_some_and(|last| last.incarnation == world.incarnation);
        let changed_in_process = changed.as_ref().filter(|_| same_process);
        self.check_container_transitions(snapshot, changed_in_process);
        self.check_sandbox_transitions(snapshot, changed_in_process);
        self.check_network(&world);
        self.check_kubelet_view(&world, last.as_ref().zip(changed.as_ref()));
        for (object, detail) in self.oracle.check(snapshot) {
            self.fail("oracle: acknowledged state", &object, detail);
        }
        *last = Some(world);
    }

    /// Safety checks run on a live service, and how many of them found the world as the
    /// previous one left it and skipped their work.
    pub fn safety_checks(&self) -> (u64, u64) {
        (self.safety_checks.load(Ordering::Relaxed), self.unchanged_checks.load(Ordering::Relaxed))
    }

    /// Spec follows the request: a container CreateContainer acknowledged runs as, and in the
    /// namespaces and with the mounts, that its CRI config asked for. Checked on the record
    /// the fake containerd holds, i.e. what the runtime would be handed.
    pub fn check_container_spec(&self, id: &str, config: &k8s_cri::v1::ContainerConfig) {
        use k8s_cri::v1::NamespaceMode;
        let Some(record) = self.world.containerd.container(id) else { return };
        let object = format!("container {}", short(id));
        let spec = &record.spec;
        let security = config.linux.as_ref().and_then(|l| l.security_context.as_ref());
        let Some(user) = &spec.resolved_user else {
            self.fail("spec follows the request", &object, "no resolved user in the runtime's spec");
            return;
        };
        let asked_uid = security.and_then(|s| s.run_as_user.as_ref()).map(|u| u.value);
        let asked_gid = security.and_then(|s| s.run_as_group.as_ref()).map(|g| g.value);
        if asked_uid.is_some_and(|uid| uid != i64::from(user.uid))
            || asked_gid.is_some_and(|gid| gid != i64::from(user.gid))
        {
            self.fail(
                "spec follows the request",
                &object,
                format!("asked for {asked_uid:?}:{asked_gid:?}, runs as {}:{}", user.uid, user.gid),
            );
        }
        let supplemental = security.map(|s| s.supplemental_groups.as_slice()).unwrap_or_default();
        if let Some(missing) = supplemental.iter().find(|g| !user.additional_gids.iter().any(|a| i64::from(*a) == **g))
        {
            self.fail("spec follows the request", &object, format!("supplemental group {missing} is missing"));
        }
        let pid_mode = security.and_then(|s| s.namespace_options.as_ref()).map_or(NamespaceMode::Pod as i32, |o| o.pid);
        let (own, host) = (pid_mode == NamespaceMode::Container as i32, pid_mode == NamespaceMode::Node as i32);
        if spec.own_pid_namespace != own || spec.host_pid != host {
            self.fail(
                "spec follows the request",
                &object,
                format!("pid mode {pid_mode}: own {} host {}", spec.own_pid_namespace, spec.host_pid),
            );
        }
        for mount in &config.mounts {
            let found = spec.mounts.iter().find(|m| m.destination == mount.container_path);
            if found
                .is_none_or(|m| m.source != mount.host_path || m.options.iter().any(|o| o == "ro") != mount.readonly)
            {
                self.fail(
                    "spec follows the request",
                    &object,
                    format!("mount at {:?} is not the one asked for: {found:?}", mount.container_path),
                );
            }
        }
    }

    /// Invariant 27: an ExecSync the service answered left no process of its own running, since
    /// a timeout killed it before the reply (B25). Called right after the reply, with the probe's
    /// command, which tells its exec process apart from those of other probes.
    pub fn check_exec_ended(&self, container_id: &str, cmd: &[String]) {
        let running = self
            .world
            .containerd
            .live_execs()
            .into_iter()
            .find(|exec| exec.container_id == container_id && exec.args == cmd && !exec.exited);
        if let Some(exec) = running {
            self.fail(
                "27 ExecSync leaves no process",
                &format!("container {}", short(container_id)),
                format!("exec {} ({}) still runs after ExecSync returned", exec.exec_id, cmd.join(" ")),
            );
        }
    }

    /// 1. Registry ↔ store.
    fn check_registries(&self, snapshot: &StateSnapshot) {
        let sandboxes: Vec<(&str, &str)> = snapshot.sandboxes.iter().map(|s| (s.id(), s.name())).collect();
        let containers: Vec<(&str, &str)> = snapshot.containers.iter().map(|c| (c.id(), c.name())).collect();
        self.check_registry(snapshot, "sandbox", &snapshot.sandbox_names, &sandboxes);
        self.check_registry(snapshot, "container", &snapshot.container_names, &containers);
    }

    /// Check 1 for one kind: `names` is its registrar, `store` its objects as (id, name) in id
    /// order. Runs after every change, so it looks names and ids up in what the snapshot holds
    /// instead of building maps of them.
    fn check_registry<K: AsRef<str>>(
        &self,
        snapshot: &StateSnapshot,
        kind: &str,
        names: &BTreeMap<String, K>,
        store: &[(&str, &str)],
    ) {
        assert!(store.is_sorted_by(|a, b| a.0 < b.0), "the snapshot lists {kind}s in id order");
        let in_flight = |name: &str| {
            snapshot.operations.iter().chain(&snapshot.undelivered).any(|op| op.split_once('/') == Some((kind, name)))
        };
        let quarantined = |id: &str| snapshot.quarantined.iter().any(|q| q.id == id);
        let mut ids: Vec<&str> = names.values().map(AsRef::as_ref).collect();
        ids.sort_unstable();
        for pair in ids.windows(2).filter(|pair| pair[0] == pair[1]) {
            self.fail("1 registry injective", &format!("{kind} {}", short(pair[0])), "one id holds two names");
        }
        for (name, id) in names {
            let id = id.as_ref();
            let stored = store.binary_search_by(|(key, _)| (*key).cmp(id)).is_ok_and(|at| store[at].1 == name);
            if !stored && !in_flight(name) && !quarantined(id) {
                self.fail(
                    "1 registry <-> store",
                    &format!("{kind} {name}"),
                    format!("name reserved for {} with no object and no operation in flight", short(id)),
                );
            }
        }
        for &(id, name) in store {
            if names.get(name).is_none_or(|reserved| reserved.as_ref() != id) {
                self.fail(
                    "1 registry <-> store",
                    &format!("{kind} {}", short(id)),
                    format!("stored object {name:?} is not reserved under its name"),
                );
            }
        }
    }

    /// 2. Monotone container state; FinishedAt never changes; CreatedAt set unless UNKNOWN.
    ///
    /// `changed`: the only objects that may have changed since the last check, if known.
    fn check_container_transitions(&self, snapshot: &StateSnapshot, changed: Option<&BTreeSet<&str>>) {
        use ContainerState::*;
        let incarnation = *self.incarnation.lock().unwrap();
        let mut seen = self.containers.lock().unwrap();
        for container in snapshot.containers.iter().filter(|c| changed.is_none_or(|ids| ids.contains(c.id()))) {
            // Named only when an invariant fails: this runs for every container after every call.
            let object = || format!("container {}", short(container.id()));
            let (state, finished) = (container.state, container.status.finished_at_ns);
            if container.status.created_at_ns == 0 && state != Unknown {
                self.fail("2 CreatedAt set", &object(), format!("{state:?} with CreatedAt=0 (B9)"));
            }
            if let Some(&(before, before_finished, before_incarnation)) = seen.get(container.id()) {
                let restart = before_incarnation != incarnation;
                let allowed = before == state
                    || matches!(
                        (before, state),
                        (Created, Running) | (Created, Exited) | (Running, Exited) | (Unknown, Exited)
                    )
                    || (restart && state == Unknown && before != Exited);
                if !allowed {
                    self.fail(
                        "2 monotone container state",
                        &object(),
                        format!("{before:?} -> {state:?}{}", if restart { " across a restart" } else { "" }),
                    );
                }
                if before_finished != 0 && finished != before_finished {
                    self.fail("2 FinishedAt immutable", &object(), format!("{before_finished} -> {finished}"));
                }
            }
            match seen.get_mut(container.id()) {
                Some(last) => *last = (state, finished, incarnation),
                None => {
                    seen.insert(container.id().to_string(), (state, finished, incarnation));
                }
            }
        }
    }

    /// 3. Sandboxes never go back to READY.
    fn check_sandbox_transitions(&self, snapshot: &StateSnapshot, changed: Option<&BTreeSet<&str>>) {
        use SandboxState::*;
        let incarnation = *self.incarnation.lock().unwrap();
        let mut seen = self.sandboxes.lock().unwrap();
        for sandbox in snapshot.sandboxes.iter().filter(|s| changed.is_none_or(|ids| ids.contains(s.id()))) {
            if let Some(&(before, before_incarnation)) = seen.get(sandbox.id()) {
                let restart = before_incarnation != incarnation;
                let allowed = before == sandbox.state
                    || matches!((before, sandbox.state), (Unknown, Ready) | (Unknown, NotReady) | (Ready, NotReady))
                    || (restart && sandbox.state == Unknown);
                if !allowed {
                    self.fail(
                        "3 sandbox state",
                        &format!("sandbox {}", short(sandbox.id())),
                        format!("{before:?} -> {:?}", sandbox.state),
                    );
                }
            }
            match seen.get_mut(sandbox.id()) {
                Some(last) => *last = (sandbox.state, incarnation),
                None => {
                    seen.insert(sandbox.id().to_string(), (sandbox.state, incarnation));
                }
            }
        }
    }

    /// 4. A READY pod network has its netns, IP, result and a live allocation.
    fn check_network(&self, world: &CheckedWorld) {
        let (snapshot, allocations) = (&world.snapshot, &world.allocations);
        for sandbox in snapshot.sandboxes.iter().filter(|s| s.state == SandboxState::Ready && !s.stopped) {
            let object = || format!("sandbox {}", short(sandbox.id()));
            if sandbox.host_network() {
                if !sandbox.netns_path().is_empty() || allocations.contains_key(sandbox.id()) {
                    self.fail("4 network", &object(), "host-network sandbox has a netns or an IP");
                }
                continue;
            }
            if !self.world.os.netns_exists(sandbox.netns_path()) {
                self.fail("4 network", &object(), format!("READY but netns {} is missing", sandbox.netns_path()));
            }
            // The core's IP is text; an unparsable one matches no allocation.
            let ip = sandbox.ip().parse::<std::net::Ipv4Addr>().ok();
            if ip.is_none() || !sandbox.has_cni_result() || allocations.get(sandbox.id()) != ip.as_ref() {
                self.fail(
                    "4 network",
                    &object(),
                    format!(
                        "READY but IP {:?} is not its live allocation {:?}",
                        sandbox.ip(),
                        allocations.get(sandbox.id())
                    ),
                );
            }
        }
    }

    /// The kubelet's view for checks 23–25, with the status of each container and sandbox that
    /// may judge differently from the last check (`last`): a container's verdict is a function of
    /// its status message (built from its status, its metadata and its image's names), its
    /// task's end and the images served, and a sandbox's of its status message, so an object
    /// whose view (and task) are as `last` saw them, with the image store as it was, would only
    /// be judged again as it was.
    fn kubelet_view_to_check<'a>(
        &self,
        service: &crid::CriService,
        world: &'a CheckedWorld,
        last: Option<(&'a CheckedWorld, &BTreeSet<&'a str>)>,
    ) -> KubeletView {
        let mut last_images = self.last_view_images.lock().unwrap();
        if let Some((last, changed_objects)) = last
            && last.snapshot.image_refs == world.snapshot.image_refs
            && last.image_names == world.image_names
            && let (Some(tasks_before), Some(tasks_now)) = (&last.tasks, &world.tasks)
        {
            // A sandbox's status message is a function of its view (the object, its state and
            // whether it reports its IPs).
            let mut changed = changed_objects.clone();
            if tasks_before != tasks_now {
                let by_id = |tasks: &'a BTreeMap<String, TaskInfo>| tasks.iter().map(|(id, task)| (id.as_str(), task));
                changed.extend(differing_keys(by_id(tasks_before), by_id(tasks_now)));
            }
            let view = service.kubelet_view_of(|id| changed.contains(id));
            if view.images == *last_images {
                return view;
            }
        }
        let view = service.kubelet_view();
        last_images.clone_from(&view.images);
        view
    }

    /// 23–25. The fields kubelet reads, as the RPCs build them, against what the fakes know.
    /// Reads only what `world` holds of the fakes and the checker, so that the skip of an
    /// unchanged world stays exact.
    /// `last`: the last full check's world and the objects whose views changed since.
    fn check_kubelet_view(&self, world: &CheckedWorld, last: Option<(&CheckedWorld, &BTreeSet<&str>)>) {
        use crid::inspect::{IMAGE_REF_LOCK_PREFIX, REASON_OOM_KILLED, REASON_START_ERROR, REASON_UNKNOWN};
        use k8s_cri::v1::{ContainerState as Cri, PodSandboxState};
        let Some(service) = self.endpoint.service() else { return };
        let view = self.kubelet_view_to_check(&service, world, last);
        let (snapshot, k_names) = (&world.snapshot, &world.image_names);
        let image_of = |id: &str| {
            let at = snapshot.containers.binary_search_by(|c| c.id().cmp(id)).ok()?;
            Some(snapshot.containers[at].image_ref())
        };
        for status in &view.containers {
            let object = || format!("container {}", short(&status.id));
            let state = Cri::try_from(status.state).unwrap_or(Cri::ContainerUnknown);
            // 23. Exit: the code the task ended with, and OOMKilled exactly when the OOM killer
            // ended it. A start that failed (StartError), an exit the core reports as unknown (a
            // task that vanished across a restart), or a task that vanished without an exit has
            // nothing to compare with.
            if state == Cri::ContainerExited
                && status.reason != REASON_START_ERROR
                && status.reason != REASON_UNKNOWN
                && let Some(end) = self.world.containerd.task_exit(&status.id)
            {
                let exit = end.exit;
                if (status.reason == REASON_OOM_KILLED) != end.oom_killed {
                    self.fail(
                        "23 OOMKilled iff OOM-killed",
                        &object(),
                        format!("reason {:?}, but the task was OOM-killed: {}", status.reason, end.oom_killed),
                    );
                }
                if status.exit_code != exit.exit_code as i32 {
                    self.fail(
                        "23 exit code is the task's",
                        &object(),
                        format!(
                            "exit code {} (reason {:?}), the task exited with {}",
                            status.exit_code, status.reason, exit.exit_code
                        ),
                    );
                }
            }
            // 23. Times: created ≤ started ≤ finished, each set once its state is reached.
            let (created, started, finished) = (status.created_at, status.started_at, status.finished_at);
            let ordered = (state == Cri::ContainerUnknown || created > 0)
                && (state != Cri::ContainerRunning || started > 0)
                && (state != Cri::ContainerExited || finished > 0)
                && (started == 0 || created <= started)
                && (finished == 0 || created.max(started) <= finished);
            if !ordered {
                self.fail(
                    "23 status times ordered",
                    &object(),
                    format!("{state:?}: created {created}, started {started}, finished {finished}"),
                );
            }
            // 23. Image: image_ref is the image's id or one of its digests in the store, and a
            // tag shown in place of the config's image points at that image.
            let Some(id) = image_of(&status.id) else { continue };
            if status.image_ref != id && snapshot.image_refs.get(&status.image_ref).map(String::as_str) != Some(id) {
                self.fail(
                    "23 image ref in the store",
                    &object(),
                    format!("image_ref {:?} is neither image {id} nor one of its references", status.image_ref),
                );
            }
            let shown = status.image.as_ref().map(|i| i.image.as_str()).unwrap_or_default();
            if view.images.contains_key(id) && snapshot.image_refs.get(shown).is_some_and(|other| other != id) {
                self.fail(
                    "23 image ref in the store",
                    &object(),
                    format!("shows image {shown:?}, which the store maps to another image than {id}"),
                );
            }
        }
        // 24. A READY pod on the pod network reports its IP.
        for sandbox in view.sandboxes.iter().filter(|s| !s.host_network) {
            let status = &sandbox.status;
            if status.state == PodSandboxState::SandboxReady as i32
                && status.network.as_ref().is_none_or(|n| n.ip.is_empty())
            {
                self.fail("24 READY has an IP", &format!("sandbox {}", short(&status.id)), "READY without an IP");
            }
        }
        // 25. Once no pull, removal or reference update is in flight or queued for a retry, the
        // images served are containerd's references exactly.
        let settled = snapshot.pulls_in_flight == 0
            && snapshot.image_work_pending == 0
            && world.image_removals_in_flight == 0
            && !snapshot.lock_keys.iter().any(|k| k.starts_with(IMAGE_REF_LOCK_PREFIX));
        if settled {
            let served: BTreeSet<String> = view.images.values().flatten().cloned().collect();
            if **k_names != served {
                let missing: Vec<_> = k_names.difference(&served).collect();
                let extra: Vec<_> = served.difference(k_names).collect();
                self.fail("25 image list = K", "image store", format!("missing {missing:?}, extra {extra:?}"));
            }
        }
    }

    /// Invariant 29: a task that is gone makes its container EXITED, or its sandbox NOTREADY,
    /// within the scenario's bound of the CRI being able to see it: its exit monitor reports
    /// it, never the reconciler alone (B7). Not counted: while the service holds the exit (being
    /// handled, or queued for a retry after a failed write), while containerd is down (no Wait
    /// completes), and for a task whose Wait completion was swallowed (the reconciler's case,
    /// B6). Scenarios whose faults hit the Wait path itself do not set a bound.
    /// `tasks` is None while containerd is down.
    fn check_gone_tasks_recorded(&self, snapshot: &StateSnapshot, tasks: Option<&BTreeMap<String, TaskInfo>>) {
        let Some(bound) = self.gone_task_bound else { return };
        let containerd = &self.world.containerd;
        let mut since = self.gone_since_ms.lock().unwrap();
        let Some(tasks) = tasks else {
            since.clear();
            return;
        };
        let running = |id: &str| {
            tasks
                .get(id)
                .is_some_and(|t| matches!(t.state, TaskState::Running | TaskState::Paused | TaskState::Pausing))
        };
        let stale: Vec<&str> = snapshot
            .containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .map(|c| c.id())
            .chain(snapshot.sandboxes.iter().filter(|s| s.state == SandboxState::Ready).map(|s| s.id()))
            .filter(|id| {
                !running(id) && !containerd.wait_dropped(id) && !snapshot.events_pending.iter().any(|p| p == id)
            })
            .collect();
        let (now_ms, incarnation) = (self.trace.elapsed_ms(), *self.incarnation.lock().unwrap());
        since.retain(|id, (_, seen_in)| *seen_in == incarnation && stale.contains(&id.as_str()));
        for id in stale {
            let first_ms = match since.get(id) {
                Some(&(first_ms, _)) => first_ms,
                None => {
                    since.insert(id.to_string(), (now_ms, incarnation));
                    now_ms
                }
            };
            if now_ms - first_ms > bound.as_millis() as u64 {
                let kind = if snapshot.sandboxes.iter().any(|s| s.id() == id) { "sandbox" } else { "container" };
                self.fail(
                    "29 gone task recorded",
                    &format!("{kind} {}", short(id)),
                    format!(
                        "its task has been gone for {} ms and it is still {}",
                        now_ms - first_ms,
                        if kind == "sandbox" { "READY" } else { "RUNNING" }
                    ),
                );
            }
        }
    }

    /// Invariant 31: an EXITED container has no running task, unless the service holds work for it (a
    /// failed start whose task delete waits in the backoff queue): kubelet takes EXITED for
    /// "the process is gone" and starts the next attempt beside it (B32).
    fn check_exited_containers_have_no_running_task(
        &self,
        snapshot: &StateSnapshot,
        tasks: Option<&BTreeMap<String, TaskInfo>>,
    ) {
        let Some(tasks) = tasks else { return };
        for container in snapshot.containers.iter().filter(|c| c.state == ContainerState::Exited) {
            let Some(task) = tasks.get(container.id()) else { continue };
            if matches!(task.state, TaskState::Running | TaskState::Paused | TaskState::Pausing)
                && !snapshot.events_pending.iter().any(|id| id == container.id())
            {
                self.fail(
                    "31 EXITED container has no running task",
                    &format!("container {}", short(container.id())),
                    format!("its task is {:?} and the service holds no work for it", task.state),
                );
            }
        }
    }

    /// 7. No concurrent duplicate fetch of a blob or apply of a snapshot.
    fn check_no_duplicate_work(&self) {
        let containerd = &self.world.containerd;
        if containerd.max_concurrent_fetch_same_blob() > 1 {
            self.fail("7 kmutex", "content store", "one blob fetched twice concurrently");
        }
        if containerd.max_concurrent_apply_same_snapshot() > 1 {
            self.fail("7 kmutex", "snapshotter", "one snapshot applied twice concurrently");
        }
    }

    /// True when nothing is in flight: no operation, no backoff, no lock, no pull.
    pub fn quiescent(&self) -> bool {
        match self.live_snapshot() {
            Some(s) => {
                // A lease released after its call answered is deleted in the background: what
                // it protected is garbage only once that delete is done or queued.
                s.operations.is_empty()
                    && s.backoff_len == 0
                    && s.lock_keys.is_empty()
                    && s.pulls_in_flight == 0
                    && s.leases_held.is_empty()
                    // A dir whose removal is being retried is not yet a leak.
                    && s.removals_retrying == 0
                    // Nor is what an acknowledged container removal has still to delete.
                    && s.container_removals_pending == 0
            }
            None => false,
        }
    }

    /// Liveness and leak invariants (SPEC §10.2), at quiescence after the workload was drained:
    /// every pod was stopped and removed.
    pub fn check_liveness(&self) {
        let Some(snapshot) = self.live_snapshot() else {
            self.fail("liveness", "cri", "the CRI service is not up at the end");
            return;
        };
        let containerd = &self.world.containerd;
        let tasks = containerd.tasks();
        // 11. No stuck RUNNING; READY has a task.
        for container in snapshot.containers.iter().filter(|c| c.state == ContainerState::Running) {
            let running = tasks
                .get(container.id())
                .is_some_and(|t| matches!(t.state, TaskState::Running | TaskState::Paused | TaskState::Pausing));
            if !running {
                self.fail(
                    "11 no stuck RUNNING",
                    &format!("container {}", short(container.id())),
                    "RUNNING without a running task",
                );
            }
        }
        for sandbox in snapshot.sandboxes.iter().filter(|s| s.state == SandboxState::Ready) {
            if !tasks.contains_key(sandbox.id()) {
                self.fail("11 no stuck READY", &format!("sandbox {}", short(sandbox.id())), "READY without a task");
            }
        }
        // 12. No network leak.
        let live: BTreeSet<&str> =
            snapshot.sandboxes.iter().filter(|s| s.state == SandboxState::Ready).map(|s| s.id()).collect();
        for (id, ip) in self.world.cni.allocations().iter() {
            if !live.contains(id.as_str()) {
                self.fail("12 no network leak", &format!("sandbox {}", short(id)), format!("IP {ip} still allocated"));
            }
        }
        let live_netns: BTreeSet<&str> =
            snapshot.sandboxes.iter().filter(|s| s.state == SandboxState::Ready).map(|s| s.netns_path()).collect();
        for netns in self.world.os.netns_list().iter() {
            if !live_netns.contains(netns.as_str()) {
                self.fail("12 no network leak", &format!("netns {netns}"), "netns of a stopped or removed sandbox");
            }
        }
        // 13. No runtime leak and 14. store ⊆ K ⊆ store ∪ quarantine.
        let stored: BTreeSet<&str> =
            snapshot.sandboxes.iter().map(|s| s.id()).chain(snapshot.containers.iter().map(|c| c.id())).collect();
        let quarantined: BTreeSet<&str> = snapshot.quarantined.iter().map(|q| q.id.as_str()).collect();
        let records = containerd.containers();
        for (id, record) in &records {
            let kind = record.labels.get(LABEL_KIND).map(String::as_str);
            if matches!(kind, Some(KIND_SANDBOX) | Some(KIND_CONTAINER))
                && !stored.contains(id.as_str())
                && !quarantined.contains(id.as_str())
            {
                self.fail(
                    "14 K subset of store + quarantine",
                    &format!("containerd container {}", short(id)),
                    "not in any store and not quarantined",
                );
            }
        }
        for id in &stored {
            if !records.contains_key(*id) {
                self.fail(
                    "14 store subset of K",
                    &format!("object {}", short(id)),
                    "in the store but not in containerd",
                );
            }
        }
        for id in tasks.keys() {
            if !stored.contains(id.as_str()) {
                self.fail("13 no runtime leak", &format!("task {}", short(id)), "task of a removed object");
            }
        }
        for id in containerd.shims() {
            if !stored.contains(id.as_str()) {
                self.fail("13 no runtime leak", &format!("shim {}", short(&id)), "shim of a removed object");
            }
        }
        let execs = containerd.live_execs();
        if !execs.is_empty() {
            self.fail("13 no runtime leak", "exec processes", format!("{} exec processes still live", execs.len()));
        }
        for path in self.world.os.files().keys().chain(self.world.os.dirs().iter()) {
            let owner = path.split('/').skip_while(|p| *p != "containers" && *p != "sandboxes").nth(1);
            if let Some(owner) = owner {
                let id = owner.trim_end_matches(".del-status").trim_end_matches(".removed");
                if id.len() == 64 && !stored.contains(id) && !quarantined.contains(id) {
                    self.fail("13 no runtime leak", &format!("path {path}"), "state of a removed object");
                }
            }
        }
        // 15. Pull dedup: no blob fetched while already stored, no snapshot applied twice.
        if self.check_pull_dedup {
            let (fetches, applies) = (containerd.redundant_fetches(), containerd.redundant_applies());
            if fetches > 0 || applies > 0 {
                self.fail(
                    "15 pull dedup",
                    "content store",
                    format!("{fetches} fetches of stored blobs, {applies} applies of committed snapshots"),
                );
            }
        }
        // 16. Image store = K.
        let k_names: BTreeSet<String> = containerd.images().into_keys().collect();
        let store_names: BTreeSet<String> = snapshot.image_refs.keys().cloned().collect();
        if k_names != store_names {
            let missing: Vec<_> = k_names.difference(&store_names).collect();
            let extra: Vec<_> = store_names.difference(&k_names).collect();
            self.fail("16 image store = K", "image store", format!("missing {missing:?}, extra {extra:?}"));
        }
        // 30. The image disk is given back: no lease outlives its operation, and no blob or
        // snapshot stays that no image reference or container needs (nothing is in flight).
        let leases = containerd.leases();
        if !leases.is_empty() {
            self.fail("30 image disk released", "lease store", format!("leases held at quiescence: {leases:?}"));
        }
        if containerd.gc_enabled() {
            let garbage = containerd.unreferenced(false);
            if !garbage.content.is_empty() || !garbage.snapshots.is_empty() {
                self.fail(
                    "30 image disk released",
                    "content store",
                    format!(
                        "held by no image or container: blobs {:?}, snapshots {:?}",
                        garbage.content.iter().map(|digest| short(digest)).collect::<Vec<_>>(),
                        garbage.snapshots.iter().map(|(_, key)| short(key)).collect::<Vec<_>>()
                    ),
                );
            }
        }
        // 7 (at rest). Lock table empty.
        if !snapshot.lock_keys.is_empty() {
            self.fail("7 kmutex", "lock table", format!("keys held at quiescence: {:?}", snapshot.lock_keys));
        }
    }
}

/// The containers and sandboxes whose views differ between two worlds, or that only one has.
/// Both lists are in id order (as the stores list them), so one walk over each pair finds them.
fn changed_objects<'a>(last: &'a CheckedWorld, now: &'a CheckedWorld) -> BTreeSet<&'a str> {
    let containers = |world: &'a CheckedWorld| world.snapshot.containers.iter().map(|c| (c.id(), c));
    let sandboxes = |world: &'a CheckedWorld| world.snapshot.sandboxes.iter().map(|s| (s.id(), s));
    let mut changed = differing_keys(containers(last), containers(now));
    changed.extend(differing_keys(sandboxes(last), sandboxes(now)));
    changed
}

/// The keys whose values differ between two id-ordered sequences, or that only one of them has.
fn differing_keys<'a, V: PartialEq + 'a>(
    before: impl Iterator<Item = (&'a str, &'a V)>,
    after: impl Iterator<Item = (&'a str, &'a V)>,
) -> BTreeSet<&'a str> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let mut differing = BTreeSet::new();
    let (mut before, mut after) = (before.peekable(), after.peekable());
    loop {
        match (before.peek(), after.peek()) {
            (None, None) => return differing,
            (Some(&(key, _)), None) => {
                differing.insert(key);
                before.next();
            }
            (None, Some(&(key, _))) => {
                differing.insert(key);
                after.next();
            }
            (Some(&(old_key, old)), Some(&(new_key, new))) => match old_key.cmp(new_key) {
                Less => {
                    differing.insert(old_key);
                    before.next();
                }
                Greater => {
                    differing.insert(new_key);
                    after.next();
                }
                Equal => {
                    if old != new {
                        differing.insert(new_key);
                    }
                    before.next();
                    after.next();
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::differing_keys;

    fn keys<'a>(before: &'a [(&'a str, u32)], after: &'a [(&'a str, u32)]) -> Vec<&'a str> {
        let pairs = |list: &'a [(&'a str, u32)]| list.iter().map(|(k, v)| (*k, v));
        differing_keys(pairs(before), pairs(after)).into_iter().collect()
    }

    #[test]
    fn differing_keys_finds_changed_added_and_removed() {
        assert!(keys(&[("a", 1), ("b", 2)], &[("a", 1), ("b", 2)]).is_empty());
        assert_eq!(keys(&[("a", 1), ("b", 2)], &[("a", 1), ("b", 3)]), ["b"]);
        assert_eq!(keys(&[("a", 1), ("c", 3)], &[("b", 2), ("c", 3), ("d", 4)]), ["a", "b", "d"]);
        assert_eq!(keys(&[], &[("a", 1)]), ["a"]);
        assert_eq!(keys(&[("a", 1)], &[]), ["a"]);
    }

    #[test]
    fn differing_keys_never_misses_a_change_out_of_order() {
        // Out of order, a key may be named though it is unchanged, but a changed one never goes
        // unnamed.
        let found = keys(&[("b", 1), ("a", 1)], &[("a", 2), ("b", 1)]);
        assert!(found.contains(&"a"), "{found:?}");
    }
}
