//! containerd in memory: containers, tasks run by scripted fake processes, a content store and
//! snapshotters fed by a fake registry, image records, leases and an event bus.
//!
//! It outlives the CRI node that calls it (as containerd and its shims outlive a CRI restart), so
//! it spawns no task of its own. Time-driven behaviour is lazy: a scripted exit is a deadline,
//! and the task is found Stopped by whoever looks after that deadline (every lock of the state
//! settles due exits and publishes their events). A caller that blocks — `wait_task`, a slow
//! fetch — sleeps inside its own future.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::fakes::clock::virtual_now;

use crid::error::{Error, Result};
use crid::ports::Clock;
use crid::ports::containerd::*;

use super::clock::SimClock;
use super::faults::{self, After, FaultAction, FaultInjector};
use super::process::{self, EXIT_KILLED, ExecScript, InitScript, SIGKILL};
use super::registry;

pub use super::registry::chain_ids;

pub const DEFAULT_NAMESPACE: &str = "k8s.io";
/// The capacity of each event subscription; past it events are dropped and counted.
pub const EVENT_BUFFER: usize = 4096;
/// How many published events the fake remembers for tests.
const EVENT_LOG_LIMIT: usize = 10_000;
const FIRST_PID: u32 = 1000;
/// A fetch without a plan reports progress in this many steps, spread over the fetch latency.
const FETCH_PROGRESS_STEPS: u64 = 4;
/// What an active (writable) snapshot counts for in usage, unless a test set its usage.
pub const ACTIVE_SNAPSHOT_BYTES: u64 = 4096;

/// How one blob comes down from the registry, to script slow or stuck pulls (SPEC B23).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchPlan {
    /// `bytes` every `every`, until the blob is complete.
    Trickle { bytes: u64, every: Duration },
    /// Delivers `bytes` (the whole blob when larger), then stalls until the caller gives up.
    StallAfter { bytes: u64 },
}

/// A live exec process, for leak checks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExecInfo {
    pub container_id: String,
    pub exec_id: String,
    pub pid: u32,
    pub exited: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SnapshotKind {
    Committed,
    Active,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub kind: SnapshotKind,
    /// Chain id of the parent; empty for a base layer.
    pub parent: String,
    pub size_bytes: u64,
}

#[derive(Clone, Copy, Debug)]
struct ScriptedExit {
    at: Instant,
    code: u32,
    oom: bool,
}

/// One process: a task's init or an exec. Its exit is published on a watch channel so that
/// waiters wake without polling.
struct Process {
    pid: u32,
    scripted: Option<ScriptedExit>,
    exit: Option<ExitStatus>,
    exit_tx: watch::Sender<Option<ExitStatus>>,
    ignores_sigterm: bool,
    /// Stuck in uninterruptible sleep: no signal, not even SIGKILL, ends it (SPEC B19).
    unkillable: bool,
}

impl Process {
    fn new(pid: u32) -> Self {
        Process {
            pid,
            scripted: None,
            exit: None,
            exit_tx: watch::channel(None).0,
            ignores_sigterm: false,
            unkillable: false,
        }
    }

    fn finish(&mut self, status: ExitStatus) {
        if self.exit.is_none() {
            self.exit = Some(status);
            self.exit_tx.send_replace(Some(status));
        }
    }
}

struct Exec {
    process: Process,
    output: ExecOutput,
    /// A streaming exec's client streams, until its first wait takes them to run the script.
    streams: Option<ProcessIo>,
    /// A `cat`: runs until its client's stdin ends.
    echoes_stdin: bool,
}

/// A task's stdin, as attached clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStdin {
    /// Created without one.
    None,
    Open,
    Closed,
}

struct Task {
    init: Process,
    /// Meaningful while the init process has not exited; Stopped is derived from `init.exit`.
    state: TaskState,
    /// Since when the process has been running uninterrupted: a paused process makes no
    /// progress, so a scripted exit cannot happen before this.
    running_since: Instant,
    started_at: Option<Instant>,
    execs: BTreeMap<String, Exec>,
    /// Wait completions still to swallow (SPEC B6).
    swallowed_waits: u32,
    resources: Option<Resources>,
    /// The resources of the container's spec when the task was created.
    created_with: Resources,
    log_reopens: u32,
    stdin: TaskStdin,
}

impl Task {
    fn info(&self) -> TaskInfo {
        let state = if self.init.exit.is_some() { TaskState::Stopped } else { self.state };
        TaskInfo { pid: self.init.pid, state, exit: self.init.exit }
    }

    fn exited(&self) -> bool {
        self.init.exit.is_some()
    }
}

#[derive(Default)]
struct Snapshotter {
    /// Chain id → (parent chain id, size).
    committed: BTreeMap<String, (String, u64)>,
    /// Key → parent chain id.
    active: BTreeMap<String, String>,
    /// Usage set by a test for an active snapshot (what the container wrote), by key.
    written: BTreeMap<String, SnapshotUsage>,
}

impl Snapshotter {
    fn has_children(&self, chain_id: &str) -> bool {
        self.committed.values().any(|(parent, _)| parent == chain_id)
            || self.active.values().any(|parent| parent == chain_id)
    }
}

/// Counts operations per key and how many ran at once on one key: the B21 invariant is that no
/// two run concurrently on the same blob or chain id.
struct Dedup<K: Ord> {
    count: BTreeMap<K, u64>,
    /// Work started although its result already existed (a blob already in the content store,
    /// a snapshot already committed): what deduplication must prevent.
    redundant: u64,
    in_flight: BTreeMap<K, u32>,
    max_concurrent: u32,
}

impl<K: Ord + Clone> Dedup<K> {
    fn new() -> Self {
        Dedup { count: BTreeMap::new(), redundant: 0, in_flight: BTreeMap::new(), max_concurrent: 0 }
    }

    fn begin(&mut self, key: &K) {
        *self.count.entry(key.clone()).or_default() += 1;
        let in_flight = self.in_flight.entry(key.clone()).or_default();
        *in_flight += 1;
        self.max_concurrent = self.max_concurrent.max(*in_flight);
    }

    fn end(&mut self, key: &K) {
        let in_flight = self.in_flight.get_mut(key).expect("end without begin");
        *in_flight -= 1;
        if *in_flight == 0 {
            self.in_flight.remove(key);
        }
    }
}

struct State {
    up: bool,
    /// Terminal sizes asked for: (container id, exec id or "", size).
    resizes: Vec<(String, String, TerminalSize)>,
    containers: BTreeMap<String, ContainerRecord>,
    tasks: BTreeMap<String, Task>,
    /// Container ids with a live shim: created with the task, reaped by delete_task.
    shims: BTreeSet<String>,
    next_pid: u32,
    snapshotters: BTreeMap<String, Snapshotter>,
    /// Reference → what the registry serves for it.
    registry: BTreeMap<String, ResolvedImage>,
    /// Manifest digest → image, for reading configs of stored images (any manifest ever served).
    manifests: BTreeMap<String, ResolvedImage>,
    /// Digest → size of blobs in the content store.
    content: BTreeMap<String, u64>,
    images: BTreeMap<String, ImageRecord>,
    leases: BTreeSet<String>,
    subscribers: Vec<mpsc::Sender<Envelope>>,
    event_log: VecDeque<Envelope>,
    events_published: u64,
    events_dropped_full: u64,
    events_dropped_by_fault: u64,
    fetches: Dedup<String>,
    applies: Dedup<(String, String)>,
    fetch_latency: Duration,
    fetch_plans: BTreeMap<String, FetchPlan>,
    apply_latency: Duration,
    gc_enabled: bool,
    /// Files of an image's rootfs (its account files), by the chain id of its top layer.
    rootfs_files: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl State {
    fn new() -> Self {
        State {
            up: true,
            resizes: Vec::new(),
            containers: BTreeMap::new(),
            tasks: BTreeMap::new(),
            shims: BTreeSet::new(),
            next_pid: FIRST_PID,
            snapshotters: BTreeMap::new(),
            registry: BTreeMap::new(),
            manifests: BTreeMap::new(),
            content: BTreeMap::new(),
            images: BTreeMap::new(),
            leases: BTreeSet::new(),
            subscribers: Vec::new(),
            event_log: VecDeque::new(),
            events_published: 0,
            events_dropped_full: 0,
            events_dropped_by_fault: 0,
            fetches: Dedup::new(),
            applies: Dedup::new(),
            fetch_latency: Duration::ZERO,
            fetch_plans: BTreeMap::new(),
            apply_latency: Duration::ZERO,
            gc_enabled: true,
            rootfs_files: BTreeMap::new(),
        }
    }

    fn allocate_pid(&mut self) -> u32 {
        let pid = self.next_pid;
        self.next_pid += 1;
        pid
    }

    fn task_mut(&mut self, id: &str) -> Result<&mut Task> {
        self.tasks.get_mut(id).ok_or_else(|| task_not_found(id))
    }

    fn exec_mut(&mut self, id: &str, exec_id: &str) -> Result<&mut Exec> {
        self.task_mut(id)?.execs.get_mut(exec_id).ok_or_else(|| exec_not_found(id, exec_id))
    }

    fn snapshotter(&mut self, name: &str) -> &mut Snapshotter {
        self.snapshotters.entry(name.to_string()).or_default()
    }

    fn committed(&self, snapshotter: &str, chain_id: &str) -> bool {
        self.snapshotters.get(snapshotter).is_some_and(|snapshots| snapshots.committed.contains_key(chain_id))
    }

    /// Drops content and committed snapshots that no image and no container rootfs reaches, as
    /// containerd's GC does. Any lease pauses it: a pull in progress holds its blobs that way.
    fn collect_garbage(&mut self) {
        if !self.gc_enabled || !self.leases.is_empty() {
            return;
        }
        let images: Vec<&ResolvedImage> =
            self.images.values().filter_map(|record| self.manifests.get(&record.target.digest)).collect();
        let mut live_content: BTreeSet<String> = BTreeSet::new();
        let mut image_chains: BTreeSet<String> = BTreeSet::new();
        for image in &images {
            live_content.insert(image.manifest.digest.clone());
            live_content.insert(image.config.digest.clone());
            live_content.extend(image.layers.iter().map(|layer| layer.digest.clone()));
            image_chains.extend(chain_ids(&image.diff_ids));
        }
        self.content.retain(|digest, _| live_content.contains(digest));
        for snapshots in self.snapshotters.values_mut() {
            let mut live: BTreeSet<String> =
                image_chains.iter().filter(|chain| snapshots.committed.contains_key(*chain)).cloned().collect();
            let mut pending: Vec<String> = live.iter().cloned().chain(snapshots.active.values().cloned()).collect();
            while let Some(chain) = pending.pop() {
                if let Some((parent, _)) = snapshots.committed.get(&chain) {
                    live.insert(chain);
                    if !parent.is_empty() && !live.contains(parent) {
                        pending.push(parent.clone());
                    }
                }
            }
            snapshots.committed.retain(|chain, _| live.contains(chain));
        }
    }
}

fn task_not_found(id: &str) -> Error {
    Error::not_found(format!("no running task found: task {id} not found"))
}

fn exec_not_found(id: &str, exec_id: &str) -> Error {
    Error::not_found(format!("process {exec_id} of task {id}: not found"))
}

fn container_not_found(id: &str) -> Error {
    Error::not_found(format!("container \"{id}\" in namespace \"{DEFAULT_NAMESPACE}\": not found"))
}

fn topic_of(event: &Event) -> String {
    match event {
        Event::TaskOom { .. } => "/tasks/oom".to_string(),
        Event::TaskExit { .. } => "/tasks/exit".to_string(),
        Event::ImageCreate { .. } => "/images/create".to_string(),
        Event::ImageUpdate { .. } => "/images/update".to_string(),
        Event::ImageDelete { .. } => "/images/delete".to_string(),
        Event::Other { topic } => topic.clone(),
    }
}

fn event_key(event: &Event) -> &str {
    match event {
        Event::TaskOom { container_id } | Event::TaskExit { container_id, .. } => container_id,
        Event::ImageCreate { name } | Event::ImageUpdate { name } | Event::ImageDelete { name } => name,
        Event::Other { topic } => topic,
    }
}

pub struct FakeContainerd {
    namespace: String,
    clock: Arc<SimClock>,
    faults: Arc<dyn FaultInjector>,
    state: Mutex<State>,
    /// Bumped whenever containerd goes down, so that calls blocked inside it fail as a broken
    /// connection would fail them.
    connection: watch::Sender<u64>,
    /// Bumped when a task starts or changes state by hand, so that waiters re-arm their deadline.
    task_changes: watch::Sender<u64>,
}

/// Marks a fetch or apply in flight for as long as the caller's future lives: a caller that
/// gives up (is dropped) ends it too.
struct InFlight<'a> {
    containerd: &'a FakeContainerd,
    key: InFlightKey,
}

enum InFlightKey {
    Fetch(String),
    Apply((String, String)),
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.containerd.raw_state();
        match &self.key {
            InFlightKey::Fetch(digest) => state.fetches.end(digest),
            InFlightKey::Apply(key) => state.applies.end(key),
        }
    }
}

impl FakeContainerd {
    pub fn new(clock: Arc<SimClock>, faults: Arc<dyn FaultInjector>) -> Self {
        Self::with_namespace(DEFAULT_NAMESPACE, clock, faults)
    }

    pub fn with_namespace(namespace: &str, clock: Arc<SimClock>, faults: Arc<dyn FaultInjector>) -> Self {
        FakeContainerd {
            namespace: namespace.to_string(),
            clock,
            faults,
            state: Mutex::new(State::new()),
            connection: watch::channel(0).0,
            task_changes: watch::channel(0).0,
        }
    }

    fn raw_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake containerd lock poisoned")
    }

    /// The state with every exit that is due by now applied (and its events published).
    fn state(&self) -> MutexGuard<'_, State> {
        let mut state = self.raw_state();
        let now = virtual_now();
        let mut events = Vec::new();
        for (id, task) in state.tasks.iter_mut() {
            self.settle(id, task, now, &mut events);
        }
        self.publish(&mut state, events);
        state
    }

    fn settle(&self, id: &str, task: &mut Task, now: Instant, events: &mut Vec<Event>) {
        if task.state == TaskState::Running
            && !task.exited()
            && let Some(scripted) = task.init.scripted.filter(|scripted| scripted.at <= now)
        {
            let at = scripted.at.max(task.running_since);
            self.exit_task(id, task, scripted.code, self.clock.ns_at(at), scripted.oom, events);
        }
        for exec in task.execs.values_mut() {
            if let Some(scripted) = exec.process.scripted.filter(|scripted| scripted.at <= now) {
                exec.process
                    .finish(ExitStatus { exit_code: scripted.code, exited_at_ns: self.clock.ns_at(scripted.at) });
            }
        }
    }

    /// The init process exits; the rest of the task's processes die with its pid namespace.
    fn exit_task(&self, id: &str, task: &mut Task, code: u32, at_ns: i64, oom: bool, events: &mut Vec<Event>) {
        if task.exited() {
            return;
        }
        task.init.finish(ExitStatus { exit_code: code, exited_at_ns: at_ns });
        for exec in task.execs.values_mut() {
            exec.process.finish(ExitStatus { exit_code: EXIT_KILLED, exited_at_ns: at_ns });
        }
        if oom {
            events.push(Event::TaskOom { container_id: id.to_string() });
        }
        events.push(Event::TaskExit {
            container_id: id.to_string(),
            pid: task.init.pid,
            exit_code: code,
            exited_at_ns: at_ns,
        });
    }

    fn publish(&self, state: &mut State, events: Vec<Event>) {
        for event in events {
            if self.faults.at("containerd.event", event_key(&event)) != FaultAction::Proceed {
                state.events_dropped_by_fault += 1;
                continue;
            }
            let envelope = Envelope {
                timestamp_ns: self.clock.now_ns(),
                namespace: self.namespace.clone(),
                topic: topic_of(&event),
                event,
            };
            state.events_published += 1;
            let mut dropped = 0;
            state.subscribers.retain(|subscriber| match subscriber.try_send(envelope.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
            state.events_dropped_full += dropped;
            if state.event_log.len() == EVENT_LOG_LIMIT {
                state.event_log.pop_front();
            }
            state.event_log.push_back(envelope);
        }
    }

    fn check_up(&self) -> Result<()> {
        if self.raw_state().up {
            Ok(())
        } else {
            Err(Error::unavailable(
                "connection error: dial unix /run/containerd/containerd.sock: connect: connection refused",
            ))
        }
    }

    /// The prologue of every call: containerd must be up, then the injected fault runs.
    async fn enter(&self, site: &str, key: &str) -> Result<After> {
        self.check_up()?;
        let after = faults::before(&*self.faults, site, key).await?;
        self.check_up()?;
        Ok(after)
    }

    fn connection_lost() -> Error {
        Error::unavailable("error reading from server: EOF")
    }

    /// Sleeps for `duration`, failing if containerd goes down meanwhile.
    async fn pause(&self, connection: &mut watch::Receiver<u64>, duration: Duration) -> Result<()> {
        tokio::select! {
            biased;
            _ = connection.changed() => Err(Self::connection_lost()),
            () = tokio::time::sleep(duration) => Ok(()),
        }
    }

    /// Blocks until the process exits, containerd goes down, or (for a swallowed wait) forever.
    async fn wait_process(&self, id: &str, exec_id: Option<&str>) -> Result<ExitStatus> {
        let mut connection = self.connection.subscribe();
        let mut task_changes = self.task_changes.subscribe();
        loop {
            let (mut exit_rx, deadline) = {
                let mut state = self.state();
                let task = state.task_mut(id)?;
                // A created or paused init has no deadline yet: start or resume re-arms the loop.
                let running = task.state == TaskState::Running;
                let (process, deadline_applies) = match exec_id {
                    None => (&task.init, running),
                    Some(exec_id) => {
                        (&task.execs.get(exec_id).ok_or_else(|| exec_not_found(id, exec_id))?.process, true)
                    }
                };
                let deadline = process.scripted.map(|scripted| scripted.at).filter(|_| deadline_applies);
                (process.exit_tx.subscribe(), deadline)
            };
            let exit = *exit_rx.borrow_and_update();
            if let Some(exit) = exit {
                return self.deliver_wait(id, exec_id, exit, &mut connection).await;
            }
            tokio::select! {
                biased;
                _ = connection.changed() => return Err(Self::connection_lost()),
                _ = exit_rx.changed() => {}
                _ = task_changes.changed() => {}
                () = async {
                    match deadline {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            // The task may be gone by now (deleted right after its exit): the exit still stands.
            let exit = *exit_rx.borrow();
            if let Some(exit) = exit {
                return self.deliver_wait(id, exec_id, exit, &mut connection).await;
            }
        }
    }

    async fn deliver_wait(
        &self,
        id: &str,
        exec_id: Option<&str>,
        exit: ExitStatus,
        connection: &mut watch::Receiver<u64>,
    ) -> Result<ExitStatus> {
        let swallow = exec_id.is_none()
            && self.raw_state().tasks.get_mut(id).is_some_and(|task| {
                let swallow = task.swallowed_waits > 0;
                task.swallowed_waits = task.swallowed_waits.saturating_sub(1);
                swallow
            });
        if swallow {
            tracing::debug!(id, "fake containerd swallowed a wait completion");
            // As with a real dropped exit, only a broken connection ends this call.
            let _ = connection.changed().await;
            return Err(Self::connection_lost());
        }
        Ok(exit)
    }

    fn signal_process(process: &mut Process, signal: u32, at_ns: i64) -> bool {
        if process.exit.is_some() || process.unkillable {
            return false;
        }
        match process::signal_exit_code(signal, process.ignores_sigterm) {
            Some(code) => {
                process.finish(ExitStatus { exit_code: code, exited_at_ns: at_ns });
                true
            }
            None => false,
        }
    }

    // ---- knobs and test hooks ----

    /// Containerd stops: every call fails Unavailable, blocked calls fail, subscriptions end.
    /// Shims and their processes keep running; metadata persists.
    pub fn crash(&self) {
        let mut state = self.raw_state();
        state.up = false;
        state.subscribers.clear();
        drop(state);
        self.connection.send_modify(|generation| *generation += 1);
    }

    pub fn restart(&self) {
        self.raw_state().up = true;
    }

    pub fn is_up(&self) -> bool {
        self.raw_state().up
    }

    /// Makes the task's init exit now with `code`. False when there is no live task.
    pub fn exit_task_now(&self, id: &str, code: u32) -> bool {
        self.end_task_now(id, code, false)
    }

    /// OOM-kills the task now: exit 137 and a TaskOom event.
    pub fn oom_task_now(&self, id: &str) -> bool {
        self.end_task_now(id, EXIT_KILLED, true)
    }

    fn end_task_now(&self, id: &str, code: u32, oom: bool) -> bool {
        let mut state = self.state();
        let mut events = Vec::new();
        let now_ns = self.clock.now_ns();
        let ended = match state.tasks.get_mut(id) {
            Some(task) if !task.exited() => {
                self.exit_task(id, task, code, now_ns, oom, &mut events);
                true
            }
            _ => false,
        };
        self.publish(&mut state, events);
        ended
    }

    /// Forces the task's state, as another client would (e.g. `Paused` by `ctr task pause`).
    /// `Stopped` makes it exit now with code 0. False when there is no live task.
    pub fn set_task_state(&self, id: &str, task_state: TaskState) -> bool {
        if task_state == TaskState::Stopped {
            return self.exit_task_now(id, 0);
        }
        let mut state = self.state();
        match state.tasks.get_mut(id) {
            Some(task) if !task.exited() => {
                if task_state == TaskState::Running && task.state != TaskState::Running {
                    task.running_since = virtual_now();
                }
                task.state = task_state;
                drop(state);
                self.task_changes.send_modify(|generation| *generation += 1);
                true
            }
            _ => false,
        }
    }

    /// The next wait_task completion for this task is swallowed: that call never returns
    /// (SPEC B6). False when there is no task.
    pub fn drop_next_wait(&self, id: &str) -> bool {
        match self.raw_state().tasks.get_mut(id) {
            Some(task) => {
                task.swallowed_waits += 1;
                true
            }
            None => false,
        }
    }

    /// The task's init ignores every signal until `false` is set again (a process stuck in the
    /// kernel, an empty cgroup.procs): kill returns Ok and changes nothing, delete fails. False
    /// when there is no task.
    pub fn set_unkillable(&self, id: &str, unkillable: bool) -> bool {
        match self.raw_state().tasks.get_mut(id) {
            Some(task) => {
                task.init.unkillable = unkillable;
                true
            }
            None => false,
        }
    }

    /// The task and its shim vanish without an exit (a shim crash, a cleanup by another client).
    pub fn remove_task_out_of_band(&self, id: &str) -> bool {
        let mut state = self.raw_state();
        state.shims.remove(id);
        state.tasks.remove(id).is_some()
    }

    /// Publishes an event as if containerd had (for B3-style image events, or `Other` topics).
    pub fn inject_event(&self, event: Event) {
        let mut state = self.state();
        self.publish(&mut state, vec![event]);
    }

    /// Every fetch sleeps this long in total (progress is reported in steps along the way).
    pub fn set_fetch_latency(&self, latency: Duration) {
        self.raw_state().fetch_latency = latency;
    }

    /// Scripts how one blob is fetched; None restores the default.
    pub fn set_fetch_plan(&self, digest: &str, plan: Option<FetchPlan>) {
        let mut state = self.raw_state();
        match plan {
            Some(plan) => state.fetch_plans.insert(digest.to_string(), plan),
            None => state.fetch_plans.remove(digest),
        };
    }

    /// Every layer apply (unpack + commit) sleeps this long.
    pub fn set_apply_latency(&self, latency: Duration) {
        self.raw_state().apply_latency = latency;
    }

    /// Garbage collection after image and lease deletes (on by default).
    /// Puts a file (e.g. `etc/passwd`) into the rootfs of every container prepared on top of
    /// `chain_id`.
    pub fn set_rootfs_file(&self, chain_id: &str, path: &str, contents: &[u8]) {
        self.raw_state()
            .rootfs_files
            .entry(chain_id.to_string())
            .or_default()
            .insert(path.to_string(), contents.to_vec());
    }

    pub fn set_gc_enabled(&self, enabled: bool) {
        self.raw_state().gc_enabled = enabled;
    }

    /// Makes the registry serve `reference`. Returns what resolving it gives.
    pub fn add_registry_image(
        &self,
        reference: &str,
        layers: Vec<(String, u64)>,
        config: ImageConfig,
    ) -> ResolvedImage {
        let image = registry::build_image(reference, &layers, config);
        let mut state = self.raw_state();
        state.manifests.insert(image.manifest.digest.clone(), image.clone());
        state.registry.insert(reference.to_string(), image.clone());
        image
    }

    /// The registry stops serving `reference` (a deleted tag); stored content is unaffected.
    pub fn remove_registry_image(&self, reference: &str) -> bool {
        self.raw_state().registry.remove(reference).is_some()
    }

    // ---- inspection ----

    pub fn containers(&self) -> BTreeMap<String, ContainerRecord> {
        self.state().containers.clone()
    }

    pub fn tasks(&self) -> BTreeMap<String, TaskInfo> {
        self.state().tasks.iter().map(|(id, task)| (id.clone(), task.info())).collect()
    }

    pub fn shims(&self) -> BTreeSet<String> {
        self.raw_state().shims.clone()
    }

    pub fn task_resources(&self, id: &str) -> Option<Resources> {
        self.raw_state().tasks.get(id).and_then(|task| task.resources.clone())
    }

    /// The resources the task was created with (its container's spec's, at the time).
    pub fn task_created_with(&self, id: &str) -> Option<Resources> {
        self.raw_state().tasks.get(id).map(|task| task.created_with.clone())
    }

    pub fn log_reopens(&self, id: &str) -> u32 {
        self.raw_state().tasks.get(id).map_or(0, |task| task.log_reopens)
    }

    async fn run_streaming_exec(
        &self,
        id: &str,
        exec_id: &str,
        streams: ProcessIo,
        output: ExecOutput,
        echoes_stdin: bool,
        mut exit_rx: watch::Receiver<Option<ExitStatus>>,
    ) {
        let ProcessIo { stdin, mut stdout, mut stderr } = streams;
        let work = async move {
            if let Some(writer) = stdout.as_mut() {
                let _ = writer.write_all(&output.stdout).await;
            }
            if let Some(writer) = stderr.as_mut() {
                let _ = writer.write_all(&output.stderr).await;
            }
            if echoes_stdin {
                if let Some(mut reader) = stdin {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = reader.read(&mut buf).await
                        && n > 0
                    {
                        if let Some(writer) = stdout.as_mut()
                            && writer.write_all(&buf[..n]).await.is_err()
                        {
                            stdout = None;
                        }
                    }
                }
                let now_ns = self.clock.now_ns();
                if let Ok(exec) = self.state().exec_mut(id, exec_id) {
                    exec.process.finish(ExitStatus { exit_code: 0, exited_at_ns: now_ns });
                }
            }
            for writer in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
                let _ = writer.shutdown().await;
            }
        };
        // A killed `cat` stops at once; its client's streams are dropped with the work.
        let killed = async {
            while exit_rx.borrow_and_update().is_none() {
                if exit_rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            biased;
            () = work => {}
            () = killed, if echoes_stdin => {}
        }
    }

    /// Blocks until the task's init process exited (or the task is gone), without taking part
    /// in the wait bookkeeping of `wait_task`.
    async fn wait_init_exit(&self, id: &str) {
        let mut task_changes = self.task_changes.subscribe();
        loop {
            let watched = {
                let mut state = self.state();
                state.tasks.get_mut(id).map(|task| {
                    let deadline = task.init.scripted.map(|s| s.at).filter(|_| task.state == TaskState::Running);
                    (task.init.exit_tx.subscribe(), deadline)
                })
            };
            let Some((mut exit_rx, deadline)) = watched else { return };
            if exit_rx.borrow_and_update().is_some() {
                return;
            }
            tokio::select! {
                biased;
                _ = exit_rx.changed() => {}
                _ = task_changes.changed() => {}
                () = async {
                    match deadline {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    }

    /// Terminal sizes asked for, in order: (container id, exec id or "", size).
    pub fn resizes(&self) -> Vec<(String, String, TerminalSize)> {
        self.raw_state().resizes.clone()
    }

    /// The stdin of a task, if it exists.
    pub fn task_stdin(&self, id: &str) -> Option<TaskStdin> {
        self.raw_state().tasks.get(id).map(|task| task.stdin)
    }

    /// Every exec process not yet deleted, exited or not.
    pub fn live_execs(&self) -> Vec<ExecInfo> {
        let state = self.state();
        let mut execs = Vec::new();
        for (container_id, task) in &state.tasks {
            for (exec_id, exec) in &task.execs {
                execs.push(ExecInfo {
                    container_id: container_id.clone(),
                    exec_id: exec_id.clone(),
                    pid: exec.process.pid,
                    exited: exec.process.exit.is_some(),
                });
            }
        }
        execs
    }

    /// Key (chain id for committed ones) → snapshot, in `snapshotter`.
    pub fn snapshots(&self, snapshotter: &str) -> BTreeMap<String, SnapshotInfo> {
        let state = self.raw_state();
        let Some(snapshots) = state.snapshotters.get(snapshotter) else { return BTreeMap::new() };
        let committed = snapshots.committed.iter().map(|(chain, (parent, size_bytes))| {
            (
                chain.clone(),
                SnapshotInfo { kind: SnapshotKind::Committed, parent: parent.clone(), size_bytes: *size_bytes },
            )
        });
        let active = snapshots.active.iter().map(|(key, parent)| {
            (
                key.clone(),
                SnapshotInfo { kind: SnapshotKind::Active, parent: parent.clone(), size_bytes: ACTIVE_SNAPSHOT_BYTES },
            )
        });
        committed.chain(active).collect()
    }

    /// Sets what the active snapshot `key` uses (what its container wrote); false without one.
    pub fn set_snapshot_usage(&self, snapshotter: &str, key: &str, usage: SnapshotUsage) -> bool {
        let mut state = self.raw_state();
        let snapshots = state.snapshotter(snapshotter);
        if !snapshots.active.contains_key(key) {
            return false;
        }
        snapshots.written.insert(key.to_string(), usage);
        true
    }

    pub fn images(&self) -> BTreeMap<String, ImageRecord> {
        self.raw_state().images.clone()
    }

    /// Digest → size of every blob in the content store.
    pub fn content(&self) -> BTreeMap<String, u64> {
        self.raw_state().content.clone()
    }

    pub fn leases(&self) -> BTreeSet<String> {
        self.raw_state().leases.clone()
    }

    pub fn fetch_count(&self, digest: &str) -> u64 {
        self.raw_state().fetches.count.get(digest).copied().unwrap_or(0)
    }

    /// Fetches of blobs that were already in the content store.
    pub fn redundant_fetches(&self) -> u64 {
        self.raw_state().fetches.redundant
    }

    /// Applies of snapshots that were already committed (answered AlreadyExists).
    pub fn redundant_applies(&self) -> u64 {
        self.raw_state().applies.redundant
    }

    pub fn total_fetches(&self) -> u64 {
        self.raw_state().fetches.count.values().sum()
    }

    /// The most fetches of one blob that were ever in flight at once (1 when deduplicated).
    pub fn max_concurrent_fetch_same_blob(&self) -> u32 {
        self.raw_state().fetches.max_concurrent
    }

    pub fn apply_count(&self, snapshotter: &str, chain_id: &str) -> u64 {
        self.raw_state().applies.count.get(&(snapshotter.to_string(), chain_id.to_string())).copied().unwrap_or(0)
    }

    pub fn total_applies(&self) -> u64 {
        self.raw_state().applies.count.values().sum()
    }

    /// The most applies of one (snapshotter, chain id) ever in flight at once.
    pub fn max_concurrent_apply_same_snapshot(&self) -> u32 {
        self.raw_state().applies.max_concurrent
    }

    /// Fetches and applies currently in flight (0 at quiescence).
    pub fn pulls_in_flight(&self) -> usize {
        let state = self.raw_state();
        state.fetches.in_flight.len() + state.applies.in_flight.len()
    }

    /// The most recent published events (up to 10,000), oldest first.
    pub fn event_log(&self) -> Vec<Envelope> {
        self.raw_state().event_log.iter().cloned().collect()
    }

    pub fn events_published(&self) -> u64 {
        self.raw_state().events_published
    }

    /// Deliveries dropped because a subscriber's buffer was full.
    pub fn events_dropped_full(&self) -> u64 {
        self.raw_state().events_dropped_full
    }

    /// Events dropped by the `containerd.event` fault site.
    pub fn events_dropped_by_fault(&self) -> u64 {
        self.raw_state().events_dropped_by_fault
    }

    pub fn subscriber_count(&self) -> usize {
        let mut state = self.raw_state();
        state.subscribers.retain(|subscriber| !subscriber.is_closed());
        state.subscribers.len()
    }

    // ---- the parts of the trait methods that run under the lock ----

    fn do_create_task(&self, id: &str, stdin: bool) -> Result<u32> {
        let mut state = self.state();
        let container = state.containers.get(id).ok_or_else(|| container_not_found(id))?.clone();
        if state.tasks.contains_key(id) {
            return Err(Error::already_exists(format!("task {id}: already exists")));
        }
        if !container.snapshot_key.is_empty()
            && !state
                .snapshotters
                .get(&container.snapshotter)
                .is_some_and(|snapshots| snapshots.active.contains_key(&container.snapshot_key))
        {
            return Err(Error::not_found(format!(
                "failed to mount rootfs: snapshot {} in {}: not found",
                container.snapshot_key, container.snapshotter
            )));
        }
        let pid = state.allocate_pid();
        let now = virtual_now();
        let task = Task {
            init: Process::new(pid),
            state: TaskState::Created,
            running_since: now,
            started_at: None,
            execs: BTreeMap::new(),
            swallowed_waits: 0,
            resources: None,
            created_with: container.spec.resources.clone(),
            log_reopens: 0,
            stdin: if stdin { TaskStdin::Open } else { TaskStdin::None },
        };
        state.tasks.insert(id.to_string(), task);
        state.shims.insert(id.to_string());
        Ok(pid)
    }

    fn do_start_task(&self, id: &str) -> Result<u32> {
        let mut state = self.state();
        let args = state.containers.get(id).map(|container| container.spec.args.clone()).unwrap_or_default();
        let task = state.task_mut(id)?;
        if task.exited() || task.state != TaskState::Created {
            return Err(Error::precondition(format!(
                "task {id}: cannot start a task in state {:?}",
                task.info().state
            )));
        }
        let behaviour = process::init_behaviour(&args);
        let now = virtual_now();
        task.init.ignores_sigterm = behaviour.ignores_sigterm;
        task.init.scripted = match behaviour.script {
            InitScript::UntilKilled => None,
            InitScript::ExitAfter { code, after } => Some(ScriptedExit { at: now + after, code, oom: false }),
            InitScript::OomAfter { after } => Some(ScriptedExit { at: now + after, code: EXIT_KILLED, oom: true }),
        };
        task.state = TaskState::Running;
        task.running_since = now;
        task.started_at = Some(now);
        Ok(task.init.pid)
    }

    fn do_kill_task(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let mut state = self.state();
        let now_ns = self.clock.now_ns();
        let mut events = Vec::new();
        let task = state.task_mut(id)?;
        if all {
            for exec in task.execs.values_mut() {
                Self::signal_process(&mut exec.process, signal, now_ns);
            }
        }
        // A frozen process only reacts to SIGKILL (as under the cgroup v2 freezer).
        let frozen = matches!(task.state, TaskState::Paused | TaskState::Pausing);
        if !task.exited()
            && !task.init.unkillable
            && (!frozen || signal == SIGKILL)
            && let Some(code) = process::signal_exit_code(signal, task.init.ignores_sigterm)
        {
            self.exit_task(id, task, code, now_ns, false, &mut events);
        }
        self.publish(&mut state, events);
        Ok(())
    }

    fn do_delete_task(&self, id: &str) -> Result<ExitStatus> {
        let mut state = self.state();
        let now_ns = self.clock.now_ns();
        let mut events = Vec::new();
        let task = state.task_mut(id)?;
        if task.init.unkillable && !task.exited() {
            return Err(Error::precondition(format!(
                "task {id} must be stopped before deletion: running: failed precondition"
            )));
        }
        self.exit_task(id, task, EXIT_KILLED, now_ns, false, &mut events);
        let exit = task.init.exit.expect("exited above");
        state.tasks.remove(id);
        state.shims.remove(id);
        self.publish(&mut state, events);
        Ok(exit)
    }

    fn do_exec_start(&self, id: &str, spec: &ExecSpec, streams: Option<ProcessIo>) -> Result<u32> {
        let mut state = self.state();
        let pid = state.next_pid;
        let task = state.task_mut(id)?;
        if task.exited() || task.state != TaskState::Running {
            return Err(Error::precondition(format!("cannot exec in a task in state {:?}: {id}", task.info().state)));
        }
        if task.execs.contains_key(&spec.exec_id) {
            return Err(Error::already_exists(format!("process {} of task {id}: already exists", spec.exec_id)));
        }
        if spec.args.is_empty() {
            return Err(Error::invalid("exec: args must not be empty"));
        }
        let now = virtual_now();
        let streaming = streams.is_some();
        let mut exec = Exec { process: Process::new(pid), output: ExecOutput::default(), streams, echoes_stdin: false };
        // A streaming exec's output goes to its client uncapped.
        let limit = if streaming { usize::MAX } else { spec.output_limit_bytes };
        match process::exec_script(&spec.args, limit) {
            ExecScript::Cat if streaming => exec.echoes_stdin = true,
            ExecScript::Cat => exec.process.finish(ExitStatus { exit_code: 0, exited_at_ns: self.clock.ns_at(now) }),
            ExecScript::Done { code, stdout, stderr } => {
                exec.output = ExecOutput { stdout, stderr };
                exec.process.finish(ExitStatus { exit_code: code, exited_at_ns: self.clock.ns_at(now) });
            }
            ExecScript::SleepThenExit { after } => {
                exec.process.scripted = Some(ScriptedExit { at: now + after, code: 0, oom: false })
            }
            ExecScript::UntilKilled => {}
        }
        task.execs.insert(spec.exec_id.clone(), exec);
        state.next_pid += 1;
        Ok(pid)
    }

    fn do_apply_begin(
        &self,
        snapshotter: &str,
        chain_id: &str,
        parent_chain_id: &str,
        layer: &Descriptor,
    ) -> Result<InFlight<'_>> {
        let mut state = self.state();
        if state.committed(snapshotter, chain_id) {
            state.applies.redundant += 1;
            return Err(Error::already_exists(format!("snapshot {chain_id}: already exists")));
        }
        if !parent_chain_id.is_empty() && !state.committed(snapshotter, parent_chain_id) {
            return Err(Error::not_found(format!("parent snapshot {parent_chain_id} does not exist: not found")));
        }
        if !state.content.contains_key(&layer.digest) {
            return Err(Error::not_found(format!("content digest {}: not found", layer.digest)));
        }
        let key = (snapshotter.to_string(), chain_id.to_string());
        state.applies.begin(&key);
        Ok(InFlight { containerd: self, key: InFlightKey::Apply(key) })
    }

    fn do_apply_commit(
        &self,
        snapshotter: &str,
        chain_id: &str,
        parent_chain_id: &str,
        layer: &Descriptor,
    ) -> Result<()> {
        let mut state = self.state();
        // Another apply of the same chain may have committed while this one unpacked.
        if state.committed(snapshotter, chain_id) {
            return Err(Error::already_exists(format!("snapshot {chain_id}: already exists")));
        }
        state
            .snapshotter(snapshotter)
            .committed
            .insert(chain_id.to_string(), (parent_chain_id.to_string(), layer.size_bytes));
        Ok(())
    }

    /// How a blob's bytes arrive: (bytes, delay before them) steps, and whether it then stalls.
    fn fetch_steps(&self, blob: &Descriptor) -> (Vec<(u64, Duration)>, bool) {
        let state = self.raw_state();
        let size = blob.size_bytes;
        match state.fetch_plans.get(&blob.digest).copied() {
            None if state.fetch_latency.is_zero() || size == 0 => (vec![(size, Duration::ZERO)], false),
            None => {
                let step_bytes = size.div_ceil(FETCH_PROGRESS_STEPS);
                let steps = size.div_ceil(step_bytes);
                let step_latency = state.fetch_latency / u32::try_from(steps).expect("at most 4 steps");
                let mut left = size;
                let mut plan = Vec::new();
                while left > 0 {
                    let bytes = step_bytes.min(left);
                    plan.push((bytes, step_latency));
                    left -= bytes;
                }
                (plan, false)
            }
            Some(FetchPlan::Trickle { bytes, every }) => {
                assert!(bytes > 0, "a trickle must move bytes");
                let mut left = size;
                let mut plan = Vec::new();
                while left > 0 {
                    let step = bytes.min(left);
                    plan.push((step, every));
                    left -= step;
                }
                (plan, false)
            }
            Some(FetchPlan::StallAfter { bytes }) => (vec![(bytes.min(size), Duration::ZERO)], true),
        }
    }
}

#[async_trait]
impl Containerd for FakeContainerd {
    fn namespace(&self) -> String {
        self.namespace.clone()
    }

    async fn create_container(&self, record: ContainerRecord) -> Result<ContainerRecord> {
        let after = self.enter("containerd.create_container", &record.id).await?;
        let result = {
            let mut state = self.state();
            if state.containers.contains_key(&record.id) {
                Err(Error::already_exists(format!("container \"{}\": already exists", record.id)))
            } else {
                let record = ContainerRecord { created_at_ns: self.clock.now_ns(), ..record };
                state.containers.insert(record.id.clone(), record.clone());
                Ok(record)
            }
        };
        after.finish(result).await
    }

    async fn get_container(&self, id: &str) -> Result<ContainerRecord> {
        let after = self.enter("containerd.get_container", id).await?;
        let result = self.state().containers.get(id).cloned().ok_or_else(|| container_not_found(id));
        after.finish(result).await
    }

    async fn list_containers(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerRecord>> {
        let after = self.enter("containerd.list_containers", "").await?;
        let matching = self
            .state()
            .containers
            .values()
            .filter(|record| labels.iter().all(|(key, value)| record.labels.get(key) == Some(value)))
            .cloned()
            .collect();
        after.finish(Ok(matching)).await
    }

    async fn update_container(&self, record: &ContainerRecord) -> Result<()> {
        let after = self.enter("containerd.update_container", &record.id).await?;
        let result = match self.state().containers.get_mut(&record.id) {
            Some(stored) => {
                stored.labels = record.labels.clone();
                stored.extensions = record.extensions.clone();
                stored.spec = record.spec.clone();
                Ok(())
            }
            None => Err(container_not_found(&record.id)),
        };
        after.finish(result).await
    }

    async fn delete_container(&self, id: &str, cleanup_snapshot: bool) -> Result<()> {
        let after = self.enter("containerd.delete_container", id).await?;
        let result = (|| {
            let mut state = self.state();
            if !state.containers.contains_key(id) {
                return Err(container_not_found(id));
            }
            // As containerd's client: a task, even a stopped one, still holds the container.
            if state.tasks.contains_key(id) {
                return Err(Error::precondition(format!("cannot delete running task {id}: failed precondition")));
            }
            let record = state.containers.remove(id).expect("checked above");
            if cleanup_snapshot && !record.snapshot_key.is_empty() {
                state.snapshotter(&record.snapshotter).active.remove(&record.snapshot_key);
            }
            Ok(())
        })();
        after.finish(result).await
    }

    async fn create_task(&self, id: &str, io: &TaskIo) -> Result<u32> {
        let after = self.enter("containerd.create_task", id).await?;
        let result = self.do_create_task(id, io.stdin);
        after.finish(result).await
    }

    async fn start_task(&self, id: &str) -> Result<u32> {
        let after = self.enter("containerd.start_task", id).await?;
        let result = self.do_start_task(id);
        self.task_changes.send_modify(|generation| *generation += 1);
        after.finish(result).await
    }

    async fn kill_task(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let after = self.enter("containerd.kill_task", id).await?;
        let result = self.do_kill_task(id, signal, all);
        after.finish(result).await
    }

    async fn delete_task(&self, id: &str) -> Result<ExitStatus> {
        let after = self.enter("containerd.delete_task", id).await?;
        let result = self.do_delete_task(id);
        after.finish(result).await
    }

    async fn wait_task(&self, id: &str) -> Result<ExitStatus> {
        let after = self.enter("containerd.wait_task", id).await?;
        let result = self.wait_process(id, None).await;
        after.finish(result).await
    }

    async fn task_info(&self, id: &str) -> Result<TaskInfo> {
        let after = self.enter("containerd.task_info", id).await?;
        let result = self.state().tasks.get(id).map(Task::info).ok_or_else(|| task_not_found(id));
        after.finish(result).await
    }

    async fn task_metrics(&self, id: &str) -> Result<TaskMetrics> {
        let after = self.enter("containerd.task_metrics", id).await?;
        let now = virtual_now();
        let result = self.state().tasks.get(id).map(|task| {
            // Deterministic and plausible: a pid-dependent share of a core, a pid-dependent size.
            let pid = u64::from(task.init.pid);
            let ran_ns = task.started_at.map_or(0, |started| now.saturating_duration_since(started).as_nanos() as u64);
            let working_set = (8 + pid % 32) << 20;
            TaskMetrics {
                timestamp_ns: self.clock.ns_at(now),
                cpu_usage_core_ns: ran_ns / 10 * (1 + pid % 4),
                memory_working_set_bytes: working_set,
                memory_usage_bytes: working_set + (4 << 20),
                memory_rss_bytes: working_set - (1 << 20),
                memory_page_faults: 1000 + pid,
                memory_major_page_faults: pid % 10,
            }
        });
        after.finish(result.ok_or_else(|| task_not_found(id))).await
    }

    async fn update_task_resources(&self, id: &str, resources: &Resources) -> Result<()> {
        let after = self.enter("containerd.update_task_resources", id).await?;
        let result = (|| {
            let mut state = self.state();
            let task = state.task_mut(id)?;
            if task.exited() {
                return Err(Error::precondition(format!("task {id} is not running: cannot update resources")));
            }
            task.resources = Some(resources.clone());
            Ok(())
        })();
        after.finish(result).await
    }

    async fn reopen_task_log(&self, id: &str) -> Result<()> {
        let after = self.enter("containerd.reopen_task_log", id).await?;
        let result = self.state().task_mut(id).map(|task| task.log_reopens += 1);
        after.finish(result).await
    }

    async fn exec_start(&self, id: &str, spec: &ExecSpec) -> Result<u32> {
        let after = self.enter("containerd.exec_start", &format!("{id}/{}", spec.exec_id)).await?;
        let result = self.do_exec_start(id, spec, None);
        after.finish(result).await
    }

    async fn exec_wait(&self, id: &str, exec_id: &str) -> Result<ExitStatus> {
        let after = self.enter("containerd.exec_wait", &format!("{id}/{exec_id}")).await?;
        // A streaming exec runs its script in the future of the first wait (the fake spawns
        // nothing): its output reaches the client, a `cat` echoes stdin until its end.
        let streaming = self.state().exec_mut(id, exec_id).ok().and_then(|exec| {
            let streams = exec.streams.take()?;
            Some((streams, exec.output.clone(), exec.echoes_stdin, exec.process.exit_tx.subscribe()))
        });
        if let Some((streams, output, echoes_stdin, exit_rx)) = streaming {
            self.run_streaming_exec(id, exec_id, streams, output, echoes_stdin, exit_rx).await;
        }
        let result = self.wait_process(id, Some(exec_id)).await;
        after.finish(result).await
    }

    async fn exec_kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        let after = self.enter("containerd.exec_kill", &format!("{id}/{exec_id}")).await?;
        let now_ns = self.clock.now_ns();
        let result = self.state().exec_mut(id, exec_id).map(|exec| {
            Self::signal_process(&mut exec.process, signal, now_ns);
        });
        after.finish(result).await
    }

    async fn exec_output(&self, id: &str, exec_id: &str) -> Result<ExecOutput> {
        let after = self.enter("containerd.exec_output", &format!("{id}/{exec_id}")).await?;
        let result = self.state().exec_mut(id, exec_id).map(|exec| exec.output.clone());
        after.finish(result).await
    }

    async fn exec_delete(&self, id: &str, exec_id: &str) -> Result<()> {
        let after = self.enter("containerd.exec_delete", &format!("{id}/{exec_id}")).await?;
        let now_ns = self.clock.now_ns();
        let result = (|| {
            let mut state = self.state();
            let task = state.task_mut(id)?;
            let mut exec = task.execs.remove(exec_id).ok_or_else(|| exec_not_found(id, exec_id))?;
            // Deleting a live exec kills it first, as the CRI's delete-with-kill does.
            exec.process.finish(ExitStatus { exit_code: EXIT_KILLED, exited_at_ns: now_ns });
            Ok(())
        })();
        after.finish(result).await
    }

    async fn exec_start_streaming(&self, id: &str, spec: &ExecSpec, io: ProcessIo) -> Result<u32> {
        let after = self.enter("stream.exec_start", &format!("{id}/{}", spec.exec_id)).await?;
        let result = self.do_exec_start(id, spec, Some(io));
        after.finish(result).await
    }

    async fn resize_pty(&self, id: &str, exec_id: &str, size: TerminalSize) -> Result<()> {
        let after = self.enter("stream.exec_resize", &format!("{id}/{exec_id}")).await?;
        let result = (|| {
            let mut state = self.state();
            if exec_id.is_empty() {
                state.task_mut(id)?;
            } else {
                state.exec_mut(id, exec_id)?;
            }
            state.resizes.push((id.to_string(), exec_id.to_string(), size));
            Ok(())
        })();
        after.finish(result).await
    }

    async fn open_task_stdin(&self, id: &str) -> Result<ByteWriter> {
        let after = self.enter("stream.task_stdin", id).await?;
        let result = (|| {
            let mut state = self.state();
            let task = state.task_mut(id)?;
            match task.stdin {
                // The fake init reads nothing: what the client sends is consumed.
                TaskStdin::Open if !task.exited() => Ok(Box::new(tokio::io::sink()) as ByteWriter),
                _ => Err(Error::precondition(format!("container {id} has no open stdin"))),
            }
        })();
        after.finish(result).await
    }

    async fn attach_task_output(&self, id: &str, stdout: Option<ByteWriter>, stderr: Option<ByteWriter>) -> Result<()> {
        let after = self.enter("stream.attach_output", id).await?;
        let exists = self.state().task_mut(id).map(|_| ());
        if exists.is_ok() {
            // The fake init prints nothing: the output ends when the task exits.
            self.wait_init_exit(id).await;
            for mut writer in [stdout, stderr].into_iter().flatten() {
                let _ = writer.shutdown().await;
            }
        }
        after.finish(exists).await
    }

    async fn close_task_stdin(&self, id: &str) -> Result<()> {
        let after = self.enter("stream.close_stdin", id).await?;
        let result = self.state().task_mut(id).map(|task| {
            if task.stdin == TaskStdin::Open {
                task.stdin = TaskStdin::Closed;
            }
        });
        after.finish(result).await
    }

    async fn resolve(&self, reference: &str, _auth: &RegistryAuth) -> Result<ResolvedImage> {
        let after = self.enter("containerd.resolve", reference).await?;
        let result = self.raw_state().registry.get(reference).cloned().ok_or_else(|| {
            Error::not_found(format!("failed to resolve reference \"{reference}\": {reference}: not found"))
        });
        after.finish(result).await
    }

    async fn content_exists(&self, digest: &str) -> Result<bool> {
        let after = self.enter("containerd.content_exists", digest).await?;
        let exists = self.raw_state().content.contains_key(digest);
        after.finish(Ok(exists)).await
    }

    async fn fetch_blob(
        &self,
        reference: &str,
        blob: &Descriptor,
        _auth: &RegistryAuth,
        progress: ProgressFn<'_>,
    ) -> Result<()> {
        let after = self.enter("containerd.fetch_blob", &blob.digest).await?;
        let mut connection = self.connection.subscribe();
        let result = async {
            let in_flight = {
                let mut state = self.raw_state();
                let image =
                    state.registry.get(reference).ok_or_else(|| Error::not_found(format!("{reference}: not found")))?;
                let served = image.manifest.digest == blob.digest
                    || image.config.digest == blob.digest
                    || image.layers.iter().any(|layer| layer.digest == blob.digest);
                if !served {
                    return Err(Error::not_found(format!("{reference}: blob {}: not found", blob.digest)));
                }
                if state.content.contains_key(&blob.digest) {
                    state.fetches.redundant += 1;
                }
                state.fetches.begin(&blob.digest);
                InFlight { containerd: self, key: InFlightKey::Fetch(blob.digest.clone()) }
            };
            let (steps, stalls) = self.fetch_steps(blob);
            for (bytes, delay) in steps {
                self.pause(&mut connection, delay).await?;
                progress(bytes);
            }
            if stalls {
                // A registry that stops sending: only the caller's deadline ends this.
                let _ = connection.changed().await;
                return Err(Self::connection_lost());
            }
            self.raw_state().content.insert(blob.digest.clone(), blob.size_bytes);
            drop(in_flight);
            Ok(())
        }
        .await;
        after.finish(result).await
    }

    async fn snapshot_exists(&self, snapshotter: &str, chain_id: &str) -> Result<bool> {
        let after = self.enter("containerd.snapshot_exists", chain_id).await?;
        let exists = self.raw_state().committed(snapshotter, chain_id);
        after.finish(Ok(exists)).await
    }

    async fn apply_layer(
        &self,
        snapshotter: &str,
        chain_id: &str,
        parent_chain_id: &str,
        layer: &Descriptor,
    ) -> Result<()> {
        let after = self.enter("containerd.apply_layer", chain_id).await?;
        let mut connection = self.connection.subscribe();
        let result = async {
            let in_flight = self.do_apply_begin(snapshotter, chain_id, parent_chain_id, layer)?;
            let latency = self.raw_state().apply_latency;
            self.pause(&mut connection, latency).await?;
            let committed = self.do_apply_commit(snapshotter, chain_id, parent_chain_id, layer);
            drop(in_flight);
            committed
        }
        .await;
        after.finish(result).await
    }

    async fn prepare_snapshot(&self, snapshotter: &str, key: &str, parent_chain_id: &str) -> Result<()> {
        let after = self.enter("containerd.prepare_snapshot", key).await?;
        let result = (|| {
            let mut state = self.raw_state();
            let snapshots = state.snapshotter(snapshotter);
            if snapshots.active.contains_key(key) || snapshots.committed.contains_key(key) {
                return Err(Error::already_exists(format!("snapshot {key}: already exists")));
            }
            if !parent_chain_id.is_empty() && !snapshots.committed.contains_key(parent_chain_id) {
                return Err(Error::not_found(format!("parent snapshot {parent_chain_id} does not exist: not found")));
            }
            snapshots.active.insert(key.to_string(), parent_chain_id.to_string());
            snapshots.written.remove(key);
            Ok(())
        })();
        after.finish(result).await
    }

    async fn read_rootfs_file(
        &self,
        snapshotter: &str,
        key: &str,
        path: &str,
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>> {
        let after = self.enter("containerd.read_rootfs_file", key).await?;
        let result = (|| {
            let mut state = self.raw_state();
            let snapshots = state.snapshotter(snapshotter);
            let Some(parent) = snapshots.active.get(key).cloned() else {
                return Err(Error::not_found(format!("snapshot {key} does not exist: not found")));
            };
            // The fake's images carry their account files by chain id, when a scenario gives any.
            let file = state.rootfs_files.get(&parent).and_then(|files| files.get(path.trim_start_matches('/')));
            Ok(file.filter(|bytes| bytes.len() <= max_bytes).cloned())
        })();
        after.finish(result).await
    }

    async fn remove_snapshot(&self, snapshotter: &str, key: &str) -> Result<()> {
        let after = self.enter("containerd.remove_snapshot", key).await?;
        let result = (|| {
            let mut state = self.raw_state();
            let snapshots = state.snapshotter(snapshotter);
            if snapshots.active.remove(key).is_some() {
                return Ok(());
            }
            if !snapshots.committed.contains_key(key) {
                return Err(Error::not_found(format!("snapshot {key}: not found")));
            }
            if snapshots.has_children(key) {
                return Err(Error::precondition(format!(
                    "cannot remove snapshot {key} with child: failed precondition"
                )));
            }
            snapshots.committed.remove(key);
            Ok(())
        })();
        after.finish(result).await
    }

    async fn snapshots_usage(&self, snapshotter: &str) -> Result<BTreeMap<String, SnapshotUsage>> {
        let after = self.enter("containerd.snapshots_usage", snapshotter).await?;
        let usage = self.raw_state().snapshotters.get(snapshotter).map_or_else(BTreeMap::new, |snapshots| {
            let committed = snapshots
                .committed
                .iter()
                .map(|(chain_id, (_, size))| (chain_id.clone(), SnapshotUsage { size_bytes: *size, inodes: 1 }));
            let active = snapshots.active.keys().map(|key| {
                let usage = snapshots.written.get(key).cloned();
                (key.clone(), usage.unwrap_or(SnapshotUsage { size_bytes: ACTIVE_SNAPSHOT_BYTES, inodes: 1 }))
            });
            committed.chain(active).collect()
        });
        after.finish(Ok(usage)).await
    }

    async fn create_image(&self, record: &ImageRecord) -> Result<()> {
        let after = self.enter("containerd.create_image", &record.name).await?;
        let result = {
            let mut state = self.state();
            if state.images.contains_key(&record.name) {
                Err(Error::already_exists(format!("image \"{}\": already exists", record.name)))
            } else {
                state.images.insert(record.name.clone(), record.clone());
                self.publish(&mut state, vec![Event::ImageCreate { name: record.name.clone() }]);
                Ok(())
            }
        };
        after.finish(result).await
    }

    async fn update_image(&self, record: &ImageRecord) -> Result<()> {
        let after = self.enter("containerd.update_image", &record.name).await?;
        let result = {
            let mut state = self.state();
            match state.images.get_mut(&record.name) {
                Some(stored) => {
                    *stored = record.clone();
                    self.publish(&mut state, vec![Event::ImageUpdate { name: record.name.clone() }]);
                    Ok(())
                }
                None => Err(Error::not_found(format!("image \"{}\": not found", record.name))),
            }
        };
        after.finish(result).await
    }

    async fn get_image(&self, name: &str) -> Result<ImageRecord> {
        let after = self.enter("containerd.get_image", name).await?;
        let result = self
            .raw_state()
            .images
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("image \"{name}\": not found")));
        after.finish(result).await
    }

    async fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let after = self.enter("containerd.list_images", "").await?;
        let images = self.raw_state().images.values().cloned().collect();
        after.finish(Ok(images)).await
    }

    async fn delete_image(&self, name: &str, _sync: bool) -> Result<()> {
        let after = self.enter("containerd.delete_image", name).await?;
        let result = {
            let mut state = self.state();
            if state.images.remove(name).is_some() {
                // GC runs at once whether or not the caller asked to wait for it.
                state.collect_garbage();
                self.publish(&mut state, vec![Event::ImageDelete { name: name.to_string() }]);
                Ok(())
            } else {
                Err(Error::not_found(format!("image \"{name}\": not found")))
            }
        };
        after.finish(result).await
    }

    async fn image_content(&self, record: &ImageRecord) -> Result<ImageContent> {
        let after = self.enter("containerd.image_content", &record.name).await?;
        let result = (|| {
            let state = self.raw_state();
            let image = state
                .manifests
                .get(&record.target.digest)
                .ok_or_else(|| Error::not_found(format!("content digest {}: not found", record.target.digest)))?;
            // The manifest itself is read through the registry's copy, so completeness is about
            // the blobs a pull must fetch: the config and the layers.
            let complete = state.content.contains_key(&image.config.digest)
                && image.layers.iter().all(|layer| state.content.contains_key(&layer.digest));
            Ok(ImageContent {
                config_digest: image.config.digest.clone(),
                chain_id: chain_ids(&image.diff_ids).pop().expect("images have at least one layer"),
                size_bytes: image.layers.iter().map(|layer| layer.size_bytes).sum(),
                image_config: image.image_config.clone(),
                complete,
            })
        })();
        after.finish(result).await
    }

    async fn create_lease(&self, id: &str) -> Result<()> {
        let after = self.enter("containerd.create_lease", id).await?;
        let result = if self.raw_state().leases.insert(id.to_string()) {
            Ok(())
        } else {
            Err(Error::already_exists(format!("lease {id}: already exists")))
        };
        after.finish(result).await
    }

    async fn delete_lease(&self, id: &str) -> Result<()> {
        let after = self.enter("containerd.delete_lease", id).await?;
        let result = {
            let mut state = self.raw_state();
            if state.leases.remove(id) {
                state.collect_garbage();
                Ok(())
            } else {
                Err(Error::not_found(format!("lease {id}: not found")))
            }
        };
        after.finish(result).await
    }

    async fn subscribe(&self) -> Result<EventStream> {
        let after = self.enter("containerd.subscribe", "").await?;
        let (sender, receiver) = mpsc::channel(EVENT_BUFFER);
        self.raw_state().subscribers.push(sender);
        after.finish(Ok(receiver)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::faults::{NoFaults, ScriptedFaults};
    use crate::fakes::registry::layer_digest;
    use crid::error::ErrorKind;

    fn fake() -> FakeContainerd {
        FakeContainerd::new(Arc::new(SimClock::new()), Arc::new(NoFaults))
    }

    fn record(id: &str, args: &[&str]) -> ContainerRecord {
        ContainerRecord {
            id: id.to_string(),
            labels: BTreeMap::from([(LABEL_KIND.to_string(), KIND_CONTAINER.to_string())]),
            image: "docker.io/library/busybox:latest".to_string(),
            runtime: "io.containerd.runc.v2".to_string(),
            snapshotter: "overlayfs".to_string(),
            snapshot_key: String::new(),
            spec: WorkloadSpec { args: args.iter().map(|arg| arg.to_string()).collect(), ..WorkloadSpec::default() },
            extensions: BTreeMap::new(),
            created_at_ns: 0,
        }
    }

    async fn running(containerd: &FakeContainerd, id: &str, args: &[&str]) -> u32 {
        containerd.create_container(record(id, args)).await.unwrap();
        let pid = containerd.create_task(id, &TaskIo::default()).await.unwrap();
        assert_eq!(containerd.start_task(id).await.unwrap(), pid);
        pid
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_exit_happens_at_its_time() {
        let containerd = fake();
        let t0 = containerd.clock.now_ns();
        running(&containerd, "c1", &["exit", "3", "500"]).await;
        assert_eq!(containerd.task_info("c1").await.unwrap().state, TaskState::Running);
        let exit = containerd.wait_task("c1").await.unwrap();
        assert_eq!(exit, ExitStatus { exit_code: 3, exited_at_ns: t0 + 500_000_000 });
        let info = containerd.task_info("c1").await.unwrap();
        assert_eq!((info.state, info.exit), (TaskState::Stopped, Some(exit)));
        assert_eq!(containerd.delete_task("c1").await.unwrap(), exit);
        assert!(containerd.shims().is_empty());
        assert_eq!(containerd.wait_task("c1").await.unwrap_err().kind, ErrorKind::NotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_before_start_sees_the_scripted_exit() {
        let containerd = Arc::new(fake());
        containerd.create_container(record("c1", &["exit", "0", "100"])).await.unwrap();
        containerd.create_task("c1", &TaskIo::default()).await.unwrap();
        let waiter = {
            let containerd = containerd.clone();
            tokio::spawn(async move { containerd.wait_task("c1").await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        containerd.start_task("c1").await.unwrap();
        assert_eq!(waiter.await.unwrap().unwrap().exit_code, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn kill_codes() {
        let containerd = fake();
        running(&containerd, "term", &["sleep", "inf"]).await;
        running(&containerd, "stubborn", &["sleep", "inf", "ignore-sigterm"]).await;
        containerd.kill_task("term", 15, false).await.unwrap();
        assert_eq!(containerd.wait_task("term").await.unwrap().exit_code, 143);
        containerd.kill_task("stubborn", 15, false).await.unwrap();
        assert_eq!(containerd.task_info("stubborn").await.unwrap().state, TaskState::Running);
        containerd.kill_task("stubborn", 9, false).await.unwrap();
        assert_eq!(containerd.wait_task("stubborn").await.unwrap().exit_code, 137);
        containerd.kill_task("stubborn", 9, false).await.unwrap();
        assert_eq!(containerd.kill_task("missing", 9, false).await.unwrap_err().kind, ErrorKind::NotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn oom_publishes_oom_then_exit() {
        let containerd = fake();
        let mut events = containerd.subscribe().await.unwrap();
        running(&containerd, "c1", &["oom", "20"]).await;
        assert_eq!(containerd.wait_task("c1").await.unwrap().exit_code, 137);
        assert_eq!(events.recv().await.unwrap().event, Event::TaskOom { container_id: "c1".into() });
        let exit = events.recv().await.unwrap();
        assert_eq!(exit.topic, "/tasks/exit");
        assert_eq!(exit.namespace, "k8s.io");
    }

    #[tokio::test(start_paused = true)]
    async fn delete_kills_and_container_delete_needs_no_task() {
        let containerd = fake();
        running(&containerd, "c1", &["sleep", "inf"]).await;
        let error = containerd.delete_container("c1", true).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::FailedPrecondition);
        assert_eq!(containerd.delete_task("c1").await.unwrap().exit_code, 137);
        containerd.delete_container("c1", true).await.unwrap();
        assert_eq!(containerd.delete_container("c1", true).await.unwrap_err().kind, ErrorKind::NotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn swallowed_wait_hangs_but_status_shows_stopped() {
        let containerd = fake();
        running(&containerd, "c1", &["exit", "1", "10"]).await;
        containerd.drop_next_wait("c1");
        let waited = tokio::time::timeout(Duration::from_secs(5), containerd.wait_task("c1")).await;
        assert!(waited.is_err(), "the swallowed wait must not return");
        assert_eq!(containerd.task_info("c1").await.unwrap().state, TaskState::Stopped);
        assert_eq!(containerd.wait_task("c1").await.unwrap().exit_code, 1, "only one completion is swallowed");
    }

    #[tokio::test(start_paused = true)]
    async fn crash_fails_calls_and_ends_subscriptions_but_tasks_survive() {
        let containerd = Arc::new(fake());
        running(&containerd, "c1", &["sleep", "inf"]).await;
        let mut events = containerd.subscribe().await.unwrap();
        let waiter = {
            let containerd = containerd.clone();
            tokio::spawn(async move { containerd.wait_task("c1").await })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        containerd.crash();
        assert_eq!(waiter.await.unwrap().unwrap_err().kind, ErrorKind::Unavailable);
        assert!(events.recv().await.is_none());
        assert_eq!(containerd.task_info("c1").await.unwrap_err().kind, ErrorKind::Unavailable);
        containerd.restart();
        assert_eq!(containerd.task_info("c1").await.unwrap().state, TaskState::Running);
    }

    #[tokio::test(start_paused = true)]
    async fn paused_tasks_and_out_of_band_removal() {
        let containerd = fake();
        running(&containerd, "c1", &["sleep", "inf"]).await;
        assert!(containerd.set_task_state("c1", TaskState::Paused));
        containerd.kill_task("c1", 15, false).await.unwrap();
        assert_eq!(containerd.task_info("c1").await.unwrap().state, TaskState::Paused);
        assert!(containerd.remove_task_out_of_band("c1"));
        assert_eq!(containerd.task_info("c1").await.unwrap_err().kind, ErrorKind::NotFound);
        assert!(containerd.shims().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn unkillable_task_survives_kill_and_blocks_delete() {
        let containerd = fake();
        running(&containerd, "pause", &["/pause"]).await;
        assert!(containerd.set_unkillable("pause", true));
        containerd.kill_task("pause", 9, true).await.unwrap();
        assert_eq!(containerd.task_info("pause").await.unwrap().state, TaskState::Running);
        assert_eq!(containerd.delete_task("pause").await.unwrap_err().kind, ErrorKind::FailedPrecondition);
        containerd.set_unkillable("pause", false);
        containerd.kill_task("pause", 9, true).await.unwrap();
        assert_eq!(containerd.delete_task("pause").await.unwrap().exit_code, 137);
    }

    #[tokio::test(start_paused = true)]
    async fn exec_scripts_and_leaks() {
        let containerd = fake();
        running(&containerd, "c1", &["sleep", "inf"]).await;
        let spec = |exec_id: &str, args: &[&str]| ExecSpec {
            exec_id: exec_id.to_string(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
            tty: false,
            output_limit_bytes: 16,
        };
        containerd.exec_start("c1", &spec("e1", &["echo", "hi", "there"])).await.unwrap();
        assert_eq!(containerd.exec_wait("c1", "e1").await.unwrap().exit_code, 0);
        assert_eq!(containerd.exec_output("c1", "e1").await.unwrap().stdout, b"hi there\n");
        containerd.exec_start("c1", &spec("e2", &["sleep", "200"])).await.unwrap();
        let start = virtual_now();
        assert_eq!(containerd.exec_wait("c1", "e2").await.unwrap().exit_code, 0);
        let slept = start.elapsed();
        assert!(slept >= Duration::from_millis(200) && slept < Duration::from_millis(201), "{slept:?}");
        containerd.exec_start("c1", &spec("e3", &["sleep", "inf"])).await.unwrap();
        assert_eq!(containerd.live_execs().len(), 3);
        containerd.exec_kill("c1", "e3", 9).await.unwrap();
        assert_eq!(containerd.exec_wait("c1", "e3").await.unwrap().exit_code, 137);
        for exec_id in ["e1", "e2", "e3"] {
            containerd.exec_delete("c1", exec_id).await.unwrap();
        }
        assert!(containerd.live_execs().is_empty());
        assert_eq!(containerd.exec_delete("c1", "e1").await.unwrap_err().kind, ErrorKind::NotFound);
        containerd.exec_start("c1", &spec("e4", &["yes", "100"])).await.unwrap();
        assert_eq!(containerd.exec_output("c1", "e4").await.unwrap().stdout.len(), 16);
    }

    #[tokio::test(start_paused = true)]
    async fn fetch_counts_and_concurrency() {
        let containerd = Arc::new(fake());
        let layers = vec![(layer_digest("a"), 1000), (layer_digest("b"), 10)];
        let image = containerd.add_registry_image("docker.io/library/x:1", layers, ImageConfig::default());
        assert_eq!(containerd.resolve("docker.io/library/x:1", &RegistryAuth::default()).await.unwrap(), image);
        assert_eq!(
            containerd.resolve("docker.io/library/y:1", &RegistryAuth::default()).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        containerd.set_fetch_latency(Duration::from_millis(100));
        let layer = image.layers[0].clone();
        let fetches: Vec<_> = (0..2)
            .map(|_| {
                let (containerd, layer) = (containerd.clone(), layer.clone());
                tokio::spawn(async move {
                    let progress = Mutex::new(0u64);
                    let report = |bytes: u64| *progress.lock().unwrap() += bytes;
                    containerd
                        .fetch_blob("docker.io/library/x:1", &layer, &RegistryAuth::default(), &report)
                        .await
                        .unwrap();
                    progress.into_inner().unwrap()
                })
            })
            .collect();
        for fetch in fetches {
            assert_eq!(fetch.await.unwrap(), 1000);
        }
        assert_eq!(containerd.fetch_count(&layer.digest), 2);
        assert_eq!(containerd.total_fetches(), 2);
        assert_eq!(containerd.max_concurrent_fetch_same_blob(), 2);
        assert_eq!(containerd.pulls_in_flight(), 0);
        assert!(containerd.content_exists(&layer.digest).await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_fetch_leaves_nothing_in_flight() {
        let containerd = fake();
        let image = containerd.add_registry_image("r/x:1", vec![(layer_digest("a"), 10)], ImageConfig::default());
        containerd.set_fetch_plan(&image.layers[0].digest, Some(FetchPlan::StallAfter { bytes: 10 }));
        let anonymous = RegistryAuth::default();
        let fetch = containerd.fetch_blob("r/x:1", &image.layers[0], &anonymous, &|_| {});
        assert!(tokio::time::timeout(Duration::from_secs(60), fetch).await.is_err());
        assert_eq!(containerd.pulls_in_flight(), 0);
        assert!(containerd.content().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn pull_unpack_image_and_gc() {
        let containerd = fake();
        let image = containerd.add_registry_image(
            "r/x:1",
            vec![(layer_digest("a"), 100), (layer_digest("b"), 10)],
            ImageConfig::default(),
        );
        let chain = chain_ids(&image.diff_ids);
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            containerd.fetch_blob("r/x:1", blob, &RegistryAuth::default(), &|_| {}).await.unwrap();
        }
        let error = containerd.apply_layer("overlayfs", &chain[1], &chain[0], &image.layers[1]).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::NotFound, "the parent must be committed first");
        containerd.apply_layer("overlayfs", &chain[0], "", &image.layers[0]).await.unwrap();
        containerd.apply_layer("overlayfs", &chain[1], &chain[0], &image.layers[1]).await.unwrap();
        let again = containerd.apply_layer("overlayfs", &chain[1], &chain[0], &image.layers[1]).await.unwrap_err();
        assert_eq!(again.kind, ErrorKind::AlreadyExists);
        assert_eq!(containerd.total_applies(), 2);
        let record = ImageRecord { name: "r/x:1".into(), target: image.manifest.clone(), labels: BTreeMap::new() };
        containerd.create_image(&record).await.unwrap();
        let content = containerd.image_content(&record).await.unwrap();
        assert!(content.complete);
        assert_eq!((content.chain_id.as_str(), content.size_bytes), (chain[1].as_str(), 110));
        let usage = containerd.snapshots_usage("overlayfs").await.unwrap();
        assert_eq!(SnapshotUsage::total(usage.values()), SnapshotUsage { size_bytes: 110, inodes: 2 });
        containerd.prepare_snapshot("overlayfs", "c1", &chain[1]).await.unwrap();
        containerd.delete_image("r/x:1", true).await.unwrap();
        assert!(containerd.content().is_empty());
        assert_eq!(containerd.snapshots("overlayfs").len(), 3, "the rootfs keeps its parents alive");
        containerd.remove_snapshot("overlayfs", "c1").await.unwrap();
        containerd.create_lease("l").await.unwrap();
        containerd.delete_lease("l").await.unwrap();
        assert!(containerd.snapshots("overlayfs").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn faults_apply_to_every_call() {
        let faults = Arc::new(ScriptedFaults::new());
        let containerd = FakeContainerd::new(Arc::new(SimClock::new()), faults.clone());
        running(&containerd, "c1", &["sleep", "inf"]).await;
        faults.push("containerd.delete_task", Some("c1"), FaultAction::CompleteLate(Duration::from_secs(30)));
        let late = tokio::time::timeout(Duration::from_secs(10), containerd.delete_task("c1")).await;
        assert!(late.is_err(), "the caller gave up");
        assert!(containerd.tasks().is_empty() && containerd.shims().is_empty(), "but the delete happened (B4)");
        faults.push("containerd.list_images", None, FaultAction::Fail(ErrorKind::Internal, "boom".into()));
        assert_eq!(containerd.list_images().await.unwrap_err().kind, ErrorKind::Internal);
        faults.set_persistent("containerd.event", None, FaultAction::Fail(ErrorKind::Internal, "lost".into()));
        running(&containerd, "c2", &["exit", "0", "0"]).await;
        containerd.wait_task("c2").await.unwrap();
        assert_eq!(containerd.events_dropped_by_fault(), 1);
    }
}
