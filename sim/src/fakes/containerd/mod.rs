//! containerd in memory: containers, tasks run by scripted fake processes, a content store and
//! snapshotters fed by a fake registry, image records, leases and an event bus.
//!
//! It outlives the CRI node that calls it (as containerd and its shims outlive a CRI restart), so
//! it spawns no task of its own. Time-driven behaviour is lazy: a scripted exit is a deadline,
//! and the task is found Stopped by whoever looks after that deadline (every lock of the state
//! settles due exits and publishes their events). A caller that blocks — `wait_task`, a slow
//! fetch — sleeps inside its own future.
//!
//! The parts: [`containers`] (records), [`tasks`] (tasks, exec processes, waits and signals),
//! [`content`] (the registry it pulls from and the content store), [`snapshots`] (snapshotters
//! and layer applies), [`images`] (image records, leases, garbage collection), [`events`]
//! (the event bus) and [`streams`] (interactive execs, attach, resize). This file holds the state they share, the call prologue and the trait's
//! dispatch.

mod containers;
mod content;
mod events;
mod images;
mod snapshots;
mod streams;
mod tasks;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use crid::watch;
use tokio::sync::mpsc;

use crate::fakes::clock::virtual_now;

use crid::error::{Error, Result};
use crid::ports::containerd::*;
use crid::ports::registry::*;

use super::clock::SimClock;
use super::faults::{self, After, FaultInjector, FaultSite};

use self::content::Dedup;
use self::snapshots::Snapshotter;
use self::tasks::{Exec, Task};

pub use self::content::FetchPlan;
pub use self::events::EVENT_BUFFER;
pub use self::images::Holdings;
pub use self::snapshots::{ACTIVE_SNAPSHOT_BYTES, SnapshotInfo, SnapshotKind};
pub use self::tasks::TaskEnd;
pub use self::tasks::{ExecInfo, TaskStdin};
pub use super::registry::chain_ids;

pub const DEFAULT_NAMESPACE: &str = "k8s.io";
const FIRST_PID: u32 = 1000;

struct State {
    up: bool,
    /// Terminal sizes asked for: (container id, exec id or "", size).
    resizes: Vec<(String, String, TerminalSize)>,
    /// Terminal sizes exec processes started with: (container id, exec id, size).
    console_sizes: Vec<(String, String, TerminalSize)>,
    containers: BTreeMap<String, ContainerRecord>,
    /// Boxed: a task is several hundred bytes, and a map's insert and remove move its
    /// neighbours within their node (an exit storm deletes a task per exit).
    tasks: BTreeMap<String, Box<Task>>,
    /// How the init of each deleted task ended (when it ended before its delete), by container
    /// id: what the oracle compares a container's recorded exit (code, OOM) with after the task
    /// is gone, until the container record is deleted.
    deleted_exits: BTreeMap<String, tasks::TaskEnd>,
    /// Wait completions set to be swallowed and not swallowed yet, over every task (an upper
    /// bound: a deleted task takes its own with it): while none, an exit's Wait looks up nothing.
    waits_to_swallow: u32,
    /// Container ids with a live shim: created with the task, reaped by delete_task.
    shims: BTreeSet<String>,
    next_pid: u32,
    snapshotters: BTreeMap<String, Snapshotter>,
    /// Reference → what the registry serves for it.
    registry: BTreeMap<String, ResolvedImage>,
    /// Reference → the (username, password) the registry serves it to; others are refused.
    registry_credentials: BTreeMap<String, (String, String)>,
    /// Manifest digest → image, for reading configs of stored images (any manifest ever served).
    manifests: BTreeMap<String, ResolvedImage>,
    /// Digest → size of blobs in the content store.
    content: BTreeMap<String, u64>,
    images: BTreeMap<String, ImageRecord>,
    /// The names of `images`, shared with the checks that read them after every call (copied
    /// on the next create or delete).
    image_names: Arc<BTreeSet<String>>,
    leases: BTreeMap<String, images::Lease>,
    subscribers: Vec<mpsc::Sender<Envelope>>,
    event_log: VecDeque<Envelope>,
    events_published: u64,
    events_dropped_full: u64,
    events_dropped_by_fault: u64,
    events_duplicated: u64,
    events_reordered: u64,
    /// Events held back by the `containerd.event` fault site, with when they are delivered.
    held_events: Vec<(tokio::time::Instant, Envelope)>,
    fetches: Dedup<String>,
    applies: Dedup<(String, String)>,
    fetch_latency: Duration,
    fetch_plans: BTreeMap<String, FetchPlan>,
    apply_latency: Duration,
    gc_enabled: bool,
    /// No scripted exit of a task's init or of an exec is due before this (`None`: none is
    /// scripted): until then a read need not visit every task to settle due exits, which made
    /// every read cost as much as there are tasks. A bound, not the exact time: it is lowered
    /// where an exit is scripted and recomputed by the pass that settles.
    settle_due: Option<tokio::time::Instant>,
    /// Files of an image's rootfs (its account files), by the chain id of its top layer.
    rootfs_files: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// The earlier of two optional times (`None`: never).
fn earliest(a: Option<tokio::time::Instant>, b: Option<tokio::time::Instant>) -> Option<tokio::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl State {
    /// An exit was scripted at `due`: reads settle from then on.
    fn exit_scripted(&mut self, due: Option<tokio::time::Instant>) {
        self.settle_due = earliest(self.settle_due, due);
    }

    fn new() -> Self {
        State {
            up: true,
            resizes: Vec::new(),
            console_sizes: Vec::new(),
            containers: BTreeMap::new(),
            tasks: BTreeMap::new(),
            settle_due: None,
            deleted_exits: BTreeMap::new(),
            shims: BTreeSet::new(),
            next_pid: FIRST_PID,
            snapshotters: BTreeMap::new(),
            registry: BTreeMap::new(),
            registry_credentials: BTreeMap::new(),
            manifests: BTreeMap::new(),
            content: BTreeMap::new(),
            images: BTreeMap::new(),
            image_names: Arc::default(),
            leases: BTreeMap::new(),
            subscribers: Vec::new(),
            event_log: VecDeque::new(),
            events_published: 0,
            waits_to_swallow: 0,
            events_dropped_full: 0,
            events_dropped_by_fault: 0,
            events_duplicated: 0,
            events_reordered: 0,
            held_events: Vec::new(),
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
        self.tasks.get_mut(id).map(|task| &mut **task).ok_or_else(|| task_not_found(id))
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

pub struct FakeContainerd {
    namespace: String,
    clock: Arc<SimClock>,
    faults: Arc<dyn FaultInjector>,
    state: Mutex<State>,
    /// Bumped whenever containerd goes down, so that calls blocked inside it fail as a broken
    /// connection would fail them.
    connection: watch::Sender<u64>,
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
        }
    }

    fn raw_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake containerd lock poisoned")
    }

    /// The state with every exit that is due by now applied (and its events published).
    fn state(&self) -> MutexGuard<'_, State> {
        let mut state = self.raw_state();
        let mut events = Vec::new();
        // The clock is read only when something waits for a time: a read is a call into
        // madsim's clock, and this runs on every call of the fake.
        let settle_now = state.settle_due.and_then(|due| {
            let now = virtual_now();
            (due <= now).then_some(now)
        });
        if let Some(now) = settle_now {
            let mut next_due = None;
            for (id, task) in state.tasks.iter_mut() {
                self.settle(id, task, now, &mut events);
                next_due = earliest(next_due, task.unsettled_due());
            }
            state.settle_due = next_due;
        }
        // Also delivers the held-back events that are due.
        self.publish(&mut state, events);
        if !state.leases.is_empty() {
            state.expire_leases(crid::ports::Clock::now_ns(&*self.clock));
        }
        state
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
    async fn enter(&self, site: FaultSite, key: &str) -> Result<After> {
        self.check_up()?;
        // A call delayed or hung by a fault fails when containerd goes down meanwhile, as a
        // gRPC call fails when its connection closes. Most calls meet no delay: their fault
        // decision is ready at once, and the connection (up, just checked) is watched only for
        // the calls that wait, rather than registered and dropped on every call.
        let mut before = std::pin::pin!(faults::before(&*self.faults, site, key));
        let mut after = match futures::FutureExt::now_or_never(before.as_mut()) {
            Some(after) => after?,
            None => {
                let mut connection = self.connection.subscribe();
                tokio::select! {
                    biased;
                    _ = connection.changed() => return Err(Self::connection_lost()),
                    after = before => after?,
                }
            }
        };
        self.check_up()?;
        if after.exit_first() {
            // The process the call acts on finishes just before it: an exec for exec_kill, the
            // task's init otherwise (an exec start or resource update on a task that just ended).
            let (id, exec_id) = match key.split_once('/') {
                Some((id, exec_id)) if site == FaultSite::ContainerdExecKill => (id, Some(exec_id)),
                Some((id, _)) => (id, None),
                None => (key, None),
            };
            if !self.exit_on_its_own_now(id, exec_id) {
                after = after.without_race();
            }
        }
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

    /// Containerd stops: every call fails Unavailable, blocked calls fail, subscriptions end.
    /// Shims and their processes keep running; metadata persists.
    pub fn crash(&self) {
        let mut state = self.raw_state();
        state.up = false;
        state.subscribers.clear();
        // Events in flight die with the connection.
        state.held_events.clear();
        drop(state);
        self.connection.send_modify(|generation| *generation += 1);
    }

    pub fn restart(&self) {
        self.raw_state().up = true;
    }

    pub fn is_up(&self) -> bool {
        self.raw_state().up
    }
}

/// Every call runs the same prologue (containerd up, then the injected fault, keyed by the object
/// it acts on) and epilogue (the fault's late part); the bodies live with their part.
#[async_trait]
impl Containerd for FakeContainerd {
    fn namespace(&self) -> String {
        self.namespace.clone()
    }

    async fn create_container(&self, record: ContainerRecord) -> Result<ContainerRecord> {
        let after = self.enter(FaultSite::ContainerdCreateContainer, &record.id).await?;
        after.finish(self.do_create_container(record)).await
    }

    async fn get_container(&self, id: &str) -> Result<ContainerRecord> {
        let after = self.enter(FaultSite::ContainerdGetContainer, id).await?;
        after.finish(self.do_get_container(id)).await
    }

    /// The fake holds no OCI spec: the workload it would be built from stands for it.
    async fn runtime_spec(&self, id: &str) -> Result<serde_json::Value> {
        let after = self.enter(FaultSite::ContainerdGetContainer, id).await?;
        let spec =
            self.do_get_container(id).map(|record| serde_json::to_value(&record.spec).expect("a workload serialises"));
        after.finish(spec).await
    }

    async fn list_containers(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerRecord>> {
        let after = self.enter(FaultSite::ContainerdListContainers, "").await?;
        after.finish(Ok(self.do_list_containers(labels))).await
    }

    async fn update_container(&self, record: &ContainerRecord) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdUpdateContainer, &record.id).await?;
        after.finish(self.do_update_container(record)).await
    }

    async fn delete_container(&self, id: &str, cleanup_snapshot: bool) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdDeleteContainer, id).await?;
        after.finish(self.do_delete_container(id, cleanup_snapshot)).await
    }

    async fn create_task(&self, id: &str, io: &TaskIo) -> Result<u32> {
        let after = self.enter(FaultSite::ContainerdCreateTask, id).await?;
        after.finish(self.do_create_task(id, io.stdin)).await
    }

    async fn start_task(&self, id: &str) -> Result<u32> {
        let after = self.enter(FaultSite::ContainerdStartTask, id).await?;
        let result = self.do_start_task(id);
        after.finish(result).await
    }

    async fn kill_task(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdKillTask, id).await?;
        after.finish(self.do_kill_task(id, signal, all)).await
    }

    async fn delete_task(&self, id: &str) -> Result<ExitStatus> {
        let after = self.enter(FaultSite::ContainerdDeleteTask, id).await?;
        after.finish(self.do_delete_task(id)).await
    }

    async fn wait_task(&self, id: &str) -> Result<ExitStatus> {
        let after = self.enter(FaultSite::ContainerdWaitTask, id).await?;
        after.finish(self.wait_process(id, None).await).await
    }

    async fn task_info(&self, id: &str) -> Result<TaskInfo> {
        let after = self.enter(FaultSite::ContainerdTaskInfo, id).await?;
        after.finish(self.do_task_info(id)).await
    }

    async fn task_metrics(&self, id: &str) -> Result<TaskMetrics> {
        let after = self.enter(FaultSite::ContainerdTaskMetrics, id).await?;
        after.finish(self.do_task_metrics(id)).await
    }

    async fn tasks_metrics(&self, ids: &[&str]) -> Result<BTreeMap<String, TaskMetrics>> {
        // One request, one fault point: keyed by the tasks it names, so that a fault aimed at
        // one task's own metrics read (the exit path's) does not hit a stats request.
        let after = self.enter(FaultSite::ContainerdTaskMetrics, &ids.join(",")).await?;
        let metrics = ids.iter().filter_map(|id| Some((id.to_string(), self.do_task_metrics(id).ok()?))).collect();
        after.finish(Ok(metrics)).await
    }

    async fn update_task_resources(&self, id: &str, resources: &Resources) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdUpdateTaskResources, id).await?;
        after.finish(self.do_update_task_resources(id, resources)).await
    }

    async fn reopen_task_log(&self, id: &str) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdReopenTaskLog, id).await?;
        after.finish(self.do_reopen_task_log(id)).await
    }

    async fn exec_start(&self, id: &str, spec: &ExecSpec) -> Result<u32> {
        let after = self.enter(FaultSite::ContainerdExecStart, &format!("{id}/{}", spec.exec_id)).await?;
        after.finish(self.do_exec_start(id, spec, None)).await
    }

    async fn exec_wait(&self, id: &str, exec_id: &str) -> Result<ExitStatus> {
        let after = self.enter(FaultSite::ContainerdExecWait, &format!("{id}/{exec_id}")).await?;
        self.run_streaming_exec(id, exec_id).await;
        after.finish(self.wait_process(id, Some(exec_id)).await).await
    }

    async fn exec_output_closed(&self, id: &str, exec_id: &str) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdExecOutputClosed, &format!("{id}/{exec_id}")).await?;
        after.finish(self.output_closed(id, exec_id).await).await
    }

    async fn exec_kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdExecKill, &format!("{id}/{exec_id}")).await?;
        after.finish(self.do_exec_kill(id, exec_id, signal)).await
    }

    async fn exec_output(&self, id: &str, exec_id: &str) -> Result<ExecOutput> {
        let after = self.enter(FaultSite::ContainerdExecOutput, &format!("{id}/{exec_id}")).await?;
        after.finish(self.do_exec_output(id, exec_id)).await
    }

    async fn exec_delete(&self, id: &str, exec_id: &str) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdExecDelete, &format!("{id}/{exec_id}")).await?;
        after.finish(self.do_exec_delete(id, exec_id)).await
    }

    async fn exec_start_streaming(&self, id: &str, spec: &ExecSpec, io: ProcessIo) -> Result<u32> {
        let after = self.enter(FaultSite::StreamExecStart, &format!("{id}/{}", spec.exec_id)).await?;
        after.finish(self.do_exec_start(id, spec, Some(io))).await
    }

    async fn resize_pty(&self, id: &str, exec_id: &str, size: TerminalSize) -> Result<()> {
        let after = self.enter(FaultSite::StreamExecResize, &format!("{id}/{exec_id}")).await?;
        after.finish(self.do_resize_pty(id, exec_id, size)).await
    }

    async fn open_task_stdin(&self, id: &str) -> Result<ByteWriter> {
        let after = self.enter(FaultSite::StreamTaskStdin, id).await?;
        after.finish(self.do_open_task_stdin(id)).await
    }

    async fn attach_task_output(&self, id: &str, stdout: Option<ByteWriter>, stderr: Option<ByteWriter>) -> Result<()> {
        let after = self.enter(FaultSite::StreamAttachOutput, id).await?;
        after.finish(self.do_attach_task_output(id, stdout, stderr).await).await
    }

    async fn close_task_stdin(&self, id: &str) -> Result<()> {
        let after = self.enter(FaultSite::StreamCloseStdin, id).await?;
        after.finish(self.do_close_task_stdin(id)).await
    }

    async fn content_exists(&self, digest: &str, lease: &str) -> Result<bool> {
        let after = self.enter(FaultSite::ContainerdContentExists, digest).await?;
        after.finish(self.do_content_exists(digest, lease)).await
    }

    async fn snapshot_exists(&self, snapshotter: &str, chain_id: &str, lease: &str) -> Result<bool> {
        let after = self.enter(FaultSite::ContainerdSnapshotExists, chain_id).await?;
        after.finish(self.do_snapshot_exists(snapshotter, chain_id, lease)).await
    }

    async fn apply_layer(
        &self,
        snapshotter: &str,
        chain_id: &str,
        parent_chain_id: &str,
        layer: &Descriptor,
        lease: &str,
    ) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdApplyLayer, chain_id).await?;
        after.finish(self.do_apply_layer(snapshotter, chain_id, parent_chain_id, layer, lease).await).await
    }

    async fn prepare_snapshot(&self, snapshotter: &str, key: &str, parent_chain_id: &str, lease: &str) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdPrepareSnapshot, key).await?;
        after.finish(self.do_prepare_snapshot(snapshotter, key, parent_chain_id, lease)).await
    }

    async fn read_rootfs_files(
        &self,
        snapshotter: &str,
        key: &str,
        paths: &[&str],
        max_bytes: usize,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let after = self.enter(FaultSite::ContainerdReadRootfsFile, key).await?;
        after.finish(self.do_read_rootfs_files(snapshotter, key, paths, max_bytes)).await
    }

    async fn remove_snapshot(&self, snapshotter: &str, key: &str) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdRemoveSnapshot, key).await?;
        after.finish(self.do_remove_snapshot(snapshotter, key)).await
    }

    async fn snapshots_usage(&self, snapshotter: &str) -> Result<BTreeMap<String, SnapshotUsage>> {
        let after = self.enter(FaultSite::ContainerdSnapshotsUsage, snapshotter).await?;
        after.finish(Ok(self.do_snapshots_usage(snapshotter))).await
    }

    async fn create_image(&self, record: &ImageRecord) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdCreateImage, &record.name).await?;
        after.finish(self.do_create_image(record)).await
    }

    async fn update_image(&self, record: &ImageRecord) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdUpdateImage, &record.name).await?;
        after.finish(self.do_update_image(record)).await
    }

    async fn get_image(&self, name: &str) -> Result<ImageRecord> {
        let after = self.enter(FaultSite::ContainerdGetImage, name).await?;
        after.finish(self.do_get_image(name)).await
    }

    async fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let after = self.enter(FaultSite::ContainerdListImages, "").await?;
        let images = self.raw_state().images.values().cloned().collect();
        after.finish(Ok(images)).await
    }

    async fn delete_image(&self, name: &str, _sync: bool) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdDeleteImage, name).await?;
        after.finish(self.do_delete_image(name)).await
    }

    async fn image_content(&self, record: &ImageRecord) -> Result<ImageContent> {
        let after = self.enter(FaultSite::ContainerdImageContent, &record.name).await?;
        after.finish(self.do_image_content(record)).await
    }

    async fn create_lease(&self, id: &str, labels: &BTreeMap<String, String>, expire_after: Duration) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdCreateLease, id).await?;
        after.finish(self.do_create_lease(id, labels, expire_after)).await
    }

    async fn list_leases(&self) -> Result<Vec<LeaseRecord>> {
        let after = self.enter(FaultSite::ContainerdListLeases, "").await?;
        after.finish(Ok(self.do_list_leases())).await
    }

    async fn delete_lease(&self, id: &str) -> Result<()> {
        let after = self.enter(FaultSite::ContainerdDeleteLease, id).await?;
        after.finish(self.do_delete_lease(id)).await
    }

    async fn subscribe(&self) -> Result<EventStream> {
        let after = self.enter(FaultSite::ContainerdSubscribe, "").await?;
        after.finish(Ok(self.do_subscribe())).await
    }
}

/// The registry the fake serves from, with the same prologue; a fetch writes into the content
/// store above (the manifest is read from the registry's copy, so a resolve writes nothing).
#[async_trait]
impl Registry for FakeContainerd {
    async fn resolve(&self, reference: &str, auth: &RegistryAuth) -> Result<ResolvedManifest> {
        let after = self.enter(FaultSite::RegistryResolve, reference).await?;
        after.finish(self.do_resolve(reference, auth).map(|image| image.manifest_part())).await
    }

    /// A download of the config blob from the registry (the fake's content store is not read:
    /// the backend reads it there only on a re-pull), with a blob fetch's faults.
    async fn read_config(&self, reference: &str, config: &Descriptor, auth: &RegistryAuth) -> Result<ImageConfigRead> {
        let after = self.enter(FaultSite::RegistryFetchBlob, &config.digest).await?;
        after.finish(self.do_read_config(reference, config, auth)).await
    }

    async fn fetch_blob(
        &self,
        reference: &str,
        blob: &Descriptor,
        auth: &RegistryAuth,
        lease: &str,
        progress: ProgressFn<'_>,
    ) -> Result<()> {
        let after = self.enter(FaultSite::RegistryFetchBlob, &blob.digest).await?;
        if let Err(refused) = self.authorize(reference, auth) {
            return after.finish(Err(refused)).await;
        }
        after.finish(self.do_fetch_blob(reference, blob, lease, progress).await).await
    }
}
