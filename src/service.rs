//! `CriService`: the stores, the backends, the initialization gate and the background loops.
//! The RPCs live in one module per group (`sandbox_*`, `container_*`, `image_*`, `runtime`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::watch;
use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{ContainerEventHub, EventMonitor};
use crate::ids::{ContainerId, SandboxId};
use crate::ports::{Backends, SnapshotUsage};
use crate::removal::REMOVAL_MARK_SUFFIX;
use crate::rpc::image_pull::PullManager;
use crate::store::{Container, ImageStore, Registrar, Sandbox, Table};

/// An object recovery could not load. It stays in containerd, is not served, and its name is
/// held so that no new object can take it (B10, B11).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    pub kind: QuarantineKind,
    pub id: String,
    pub name: String,
    pub reason: String,
}

/// What a quarantined object was; serialised (verbose Status) as its containerd kind label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineKind {
    Sandbox,
    Container,
}

impl QuarantineKind {
    /// The value of the object's `io.cri-containerd.kind` label.
    pub fn label(self) -> &'static str {
        match self {
            QuarantineKind::Sandbox => crate::ports::KIND_SANDBOX,
            QuarantineKind::Container => crate::ports::KIND_CONTAINER,
        }
    }
}

impl std::fmt::Display for QuarantineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Results of RunPodSandbox/CreateContainer operations keyed by name, so that a kubelet retry
/// with the same name joins the running operation or collects a result whose caller gave up
/// (B12), instead of failing with "name is reserved".
pub(crate) type OperationResult = watch::Receiver<Option<Result<String>>>;

/// What a RunPodSandbox or CreateContainer asked for: a call under a name joins the operation
/// of that name only when it asks for the same thing (a retry).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum OperationRequest {
    Sandbox { config: Box<PodSandboxConfig>, runtime_handler: String },
    Container { sandbox_id: String, config: Box<ContainerConfig> },
}

/// A named operation: the request it serves and its result, `None` while it runs.
pub(crate) struct Operation {
    request: OperationRequest,
    pub(crate) result: OperationResult,
}

/// The snapshot usage cache (containerd's snapshot store): ImageFsInfo sums it, a container's
/// writable layer is its snapshot's entry.
#[derive(Clone, Debug, Default)]
pub(crate) struct SnapshotUsageCache {
    pub by_key: BTreeMap<String, SnapshotUsage>,
    /// When the cache was filled; 0 before the first refresh.
    pub sampled_at_ns: i64,
}

pub struct CriService {
    pub(crate) config: Config,
    pub(crate) backends: Backends,
    pub(crate) sandboxes: Table<SandboxId, Sandbox>,
    /// Indexed by pod too: every exit's STOPPED event, and a pod's stop, removal and status,
    /// pick out one pod's containers.
    pub(crate) containers: Table<ContainerId, Container, SandboxId>,
    pub(crate) images: ImageStore,
    pub(crate) sandbox_names: Registrar<SandboxId>,
    pub(crate) container_names: Registrar<ContainerId>,
    pub(crate) operations: Mutex<BTreeMap<String, Operation>>,
    pub(crate) container_events: ContainerEventHub,
    pub(crate) monitor: EventMonitor,
    pub(crate) pulls: PullManager,
    /// The leases this process's operations hold (`lease.rs`).
    pub(crate) leases: crate::lease::LeaseTable,
    pub(crate) quarantine: Mutex<Vec<Quarantined>>,
    /// The snapshotter's usage by snapshot key, refreshed every `stats_collect_period`.
    pub(crate) snapshot_usage: Mutex<SnapshotUsageCache>,
    pub(crate) last_cni_load: Mutex<String>,
    /// Exec/attach sessions and forwarded connections being served (bounded).
    pub(crate) streams: crate::streaming::StreamSessions,
    initialized: AtomicBool,
    /// Dirs whose removal failed and is being retried in the background.
    pub(crate) removals_retrying: AtomicUsize,
    /// Container removals acknowledged and not finished (`removal.rs`).
    pub(crate) pending_removals: crate::removal::PendingRemovals,
}

impl CriService {
    pub fn new(config: Config, backends: Backends) -> Result<Arc<CriService>> {
        config.validate()?;
        let event_buffer = config.container_event_buffer;
        let max_backoff = config.max_backoff_entries;
        Ok(Arc::new(CriService {
            config,
            backends,
            sandboxes: Table::new("sandbox"),
            containers: Table::grouped("container", |container: &Container| &container.metadata.sandbox_id),
            images: ImageStore::new(),
            sandbox_names: Registrar::new(),
            container_names: Registrar::new(),
            operations: Mutex::new(BTreeMap::new()),
            container_events: ContainerEventHub::new(event_buffer),
            monitor: EventMonitor::new(max_backoff),
            pulls: PullManager::new(),
            leases: crate::lease::LeaseTable::default(),
            quarantine: Mutex::new(Vec::new()),
            snapshot_usage: Mutex::new(SnapshotUsageCache::default()),
            last_cni_load: Mutex::new(String::new()),
            streams: crate::streaming::StreamSessions::default(),
            initialized: AtomicBool::new(false),
            removals_retrying: AtomicUsize::new(0),
            pending_removals: Default::default(),
        }))
    }

    /// Subscribes to events, recovers state, starts the background loops and opens the gate.
    /// Returns once the service answers RPCs; the loops run until the runtime stops.
    pub async fn run(self: &Arc<Self>) -> Result<()> {
        assert!(!self.is_initialized(), "run() called twice");
        // Bounded: a start-up that waits for good on the CNI config never serves.
        let load = self.backends.cni.load();
        let cni_load = match self.with_timeout(crate::recover::RECOVER_OBJECT_TIMEOUT, "CNI config load", load).await {
            Ok(()) => "OK".to_string(),
            Err(error) => {
                tracing::warn!(%error, "initial CNI config load failed");
                error.message
            }
        };
        *self.last_cni_load.lock().unwrap() = cni_load;
        // Subscribe before recovery so that image events raised meanwhile are not missed.
        // containerd may be restarting: retry (RPCs answer Unavailable meanwhile) rather than
        // leave the service uninitialized for good.
        let mut backoff =
            crate::events::backoff::Backoff::new(crate::events::BACKOFF_INITIAL, crate::events::RECONNECT_MAX);
        let subscription = loop {
            let subscribe = self.backends.containerd.subscribe();
            match self.with_timeout(crate::recover::RECOVER_OBJECT_TIMEOUT, "subscribe", subscribe).await {
                Ok(subscription) => break subscription,
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, retry_in = ?delay, "failed to subscribe to containerd events");
                    self.sleep(delay).await;
                }
            }
        };
        self.recover().await;
        self.start_event_loops(subscription);
        self.start_reconciler();
        self.start_snapshot_syncer();
        self.initialized.store(true, Ordering::SeqCst);
        tracing::info!(
            sandboxes = self.sandboxes.len(),
            containers = self.containers.len(),
            images = self.images.list().len(),
            "CRI service initialized"
        );
        Ok(())
    }

    pub fn is_initialized(&self) -> bool {
        self.initialized.load(Ordering::SeqCst)
    }

    /// The gate every RPC passes first.
    pub(crate) fn check_initialized(&self) -> Result<()> {
        if self.is_initialized() { Ok(()) } else { Err(Error::unavailable("server is not initialized yet")) }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn now_ns(&self) -> i64 {
        self.backends.clock.now_ns()
    }

    pub(crate) async fn sleep(&self, duration: Duration) {
        self.backends.clock.sleep(duration).await
    }

    /// Runs `future` for at most `duration`. A plain function that boxes the future before any
    /// state machine holds it: an async fn keeps its argument beside the future it awaits, so
    /// each layer of wrapping doubled a large future (RunPodSandbox's reached 68 KB, copied
    /// whole as it passed from layer to layer), where a box is one pointer.
    pub(crate) fn with_timeout<'a, T: 'a>(
        &'a self,
        duration: Duration,
        what: &'a str,
        future: impl std::future::Future<Output = Result<T>> + 'a,
    ) -> impl std::future::Future<Output = Result<T>> + 'a {
        let future = Box::pin(future);
        async move {
            match crate::ports::timeout(&*self.backends.clock, duration, future).await {
                Ok(result) => result,
                Err(_) => Err(Error::deadline(format!("{what}: timed out after {duration:?}"))),
            }
        }
    }

    /// Objects that recovery could not load.
    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.quarantine.lock().unwrap().clone()
    }

    pub(crate) fn sandbox_root(&self, id: &SandboxId) -> String {
        format!("{}/sandboxes/{id}", self.config.root_dir)
    }
    pub(crate) fn sandbox_state_dir(&self, id: &SandboxId) -> String {
        format!("{}/sandboxes/{id}", self.config.state_dir)
    }
    /// The pod's /dev/shm tmpfs, mounted by RunPodSandbox and shared by its containers.
    pub(crate) fn sandbox_shm_dir(&self, id: &SandboxId) -> String {
        format!("{}/shm", self.sandbox_state_dir(id))
    }
    pub(crate) fn container_root(&self, id: &ContainerId) -> String {
        format!("{}/containers/{id}", self.config.root_dir)
    }
    pub(crate) fn container_state_dir(&self, id: &ContainerId) -> String {
        format!("{}/containers/{id}", self.config.state_dir)
    }
    /// `container_root`/status, made in one allocation: an exit writes the checkpoint.
    pub(crate) fn checkpoint_path(&self, id: &ContainerId) -> String {
        let root = self.config.root_dir.as_str();
        let mut path = String::with_capacity(root.len() + "/containers/".len() + id.as_str().len() + "/status".len());
        for part in [root, "/containers/", id.as_str(), "/status"] {
            path.push_str(part);
        }
        path
    }
    /// Where a checkpoint is renamed to while it is deleted: beside the container's dir, so
    /// that a crash in between leaves no half-removed file under the real name.
    pub(crate) fn deleted_checkpoint_path(&self, id: &ContainerId) -> String {
        format!("{}/containers/{id}.del-status", self.config.root_dir)
    }
    /// Beside the container's dir: a removal acknowledged and not finished (`removal.rs`).
    pub(crate) fn removal_mark_path(&self, id: &ContainerId) -> String {
        format!("{}/containers/{id}{REMOVAL_MARK_SUFFIX}", self.config.root_dir)
    }
    pub(crate) fn netns_path(&self, id: &SandboxId) -> String {
        if self.config.netns_mounts_under_state_dir {
            format!("{}/netns/cni-{id}", self.config.state_dir)
        } else {
            format!("/var/run/netns/cni-{id}")
        }
    }

    /// Runs `operation` as its own task so that a caller that gives up (kubelet's deadline, a
    /// dropped connection) does not cut it in half: it finishes and rolls back on a context of its
    /// own (B15). A success stays under `name` until its object is removed, so that a retry of
    /// the same request gets the original id (B12) even when the answer to an earlier attempt
    /// was lost on its way: a reply that leaves the handler as the caller's deadline passes
    /// never reaches it, and the service cannot tell. A different request under the same name
    /// joins nothing and meets the name's reservation, as in containerd.
    pub(crate) fn run_named_operation<F>(
        self: &Arc<Self>,
        name: String,
        request: OperationRequest,
        operation: F,
    ) -> impl std::future::Future<Output = Result<String>> + Send + '_
    where
        F: std::future::Future<Output = Result<String>> + Send + 'static,
    {
        // Boxed before any state machine holds it (see `with_timeout`), and before the spawn,
        // which would otherwise copy it whole through each layer of the runtime's task machinery.
        self.run_boxed_operation(name, request, Box::pin(operation))
    }

    async fn run_boxed_operation(
        self: &Arc<Self>,
        name: String,
        request: OperationRequest,
        operation: std::pin::Pin<Box<dyn std::future::Future<Output = Result<String>> + Send>>,
    ) -> Result<String> {
        // One lock acquisition decides join-or-start: with a separate get and insert, two callers
        // on two threads could both miss the entry and run the operation twice.
        let (mut receiver, start) = {
            let mut operations = self.operations.lock().unwrap();
            match operations.get(&name) {
                Some(entry) if entry.request == request => {
                    cov_mark::hit!(retry_joined_running_operation);
                    (entry.result.clone(), None)
                }
                Some(_) => {
                    cov_mark::hit!(different_request_under_a_reserved_name);
                    let (sender, receiver) = watch::channel(None);
                    (receiver, Some((sender, false)))
                }
                None => {
                    let (sender, receiver) = watch::channel(None);
                    operations.insert(name.clone(), Operation { request, result: receiver.clone() });
                    (receiver, Some((sender, true)))
                }
            }
        };
        if let Some((sender, registered)) = start {
            let service = self.clone();
            let op_name = name.clone();
            let own = receiver.clone();
            tokio::spawn(async move {
                let result = operation.await;
                if result.is_err() && registered {
                    // Only successes are kept for a retry; a failure leaves nothing behind.
                    service.forget_entry(&op_name, &own);
                }
                sender.send_replace(Some(result));
            });
        }
        match receiver.wait_for(|r| r.is_some()).await {
            Ok(value) => value.clone().expect("checked by wait_for"),
            Err(_) => Err(Error::internal("operation ended without a result")),
        }
    }

    /// Removes `name`'s entry if it is still this operation's: a caller that joined late must not
    /// remove the entry of a newer operation started under the same name meanwhile.
    fn forget_entry(&self, name: &str, operation: &OperationResult) {
        let mut operations = self.operations.lock().unwrap();
        if operations.get(name).is_some_and(|entry| entry.result.same_channel(operation)) {
            operations.remove(name);
        }
    }

    /// Forgets the kept result for `name`: its object was removed, so a later call under the
    /// name is a new request.
    pub(crate) fn forget_operation(&self, name: &str) {
        let mut operations = self.operations.lock().unwrap();
        if operations.get(name).is_some_and(|entry| entry.result.borrow().is_some()) {
            operations.remove(name);
        }
    }
}
