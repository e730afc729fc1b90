//! A read-only snapshot of the service's state, for invariant checks and diagnostics. Taking it
//! changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::ids::{ContainerId, SandboxId};
pub use crate::rpc::image_service::IMAGE_REF_LOCK_PREFIX;
use crate::service::{CriService, Quarantined};
use crate::store::container::Container;
pub use crate::store::container::{REASON_OOM_KILLED, REASON_START_ERROR, REASON_UNKNOWN};
use crate::store::sandbox::Sandbox;
use crate::store::{ContainerState, ContainerStatus, SandboxState};

/// A sandbox as a snapshot saw it: the object (its id, name and metadata are fixed at creation)
/// and a copy of what changes. A snapshot is taken after every step of a simulation, so a view
/// shares the object instead of copying its strings, and two views of one unchanged object
/// compare equal by identity.
#[derive(Clone)]
pub struct SandboxView {
    sandbox: Arc<Sandbox>,
    pub state: SandboxState,
    pub pid: u32,
    pub created_at_ns: i64,
    pub stopped: bool,
    /// Whether its status reports the pod's IPs ([`Sandbox::reports_network`]).
    pub reports_network: bool,
}

impl SandboxView {
    fn read(sandbox: &Arc<Sandbox>) -> Self {
        let status = sandbox.status();
        SandboxView {
            sandbox: sandbox.clone(),
            state: status.state,
            pid: status.pid,
            created_at_ns: status.created_at_ns,
            stopped: sandbox.is_stopped(),
            reports_network: sandbox.reports_network(),
        }
    }

    pub fn id(&self) -> &str {
        self.sandbox.id.as_str()
    }

    pub fn name(&self) -> &str {
        &self.sandbox.name
    }

    pub fn host_network(&self) -> bool {
        self.sandbox.metadata.host_network
    }

    pub fn netns_path(&self) -> &str {
        &self.sandbox.metadata.netns_path
    }

    pub fn ip(&self) -> &str {
        &self.sandbox.metadata.ip
    }

    pub fn has_cni_result(&self) -> bool {
        self.sandbox.metadata.cni_result.is_some()
    }

    pub fn network_setup_attempted(&self) -> bool {
        self.sandbox.metadata.network_setup_attempted
    }
}

/// The same object (each view keeps it alive, so its address is not reused) in the same state.
impl PartialEq for SandboxView {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.sandbox, &other.sandbox)
            && (self.state, self.pid, self.created_at_ns, self.stopped, self.reports_network)
                == (other.state, other.pid, other.created_at_ns, other.stopped, other.reports_network)
    }
}

impl Eq for SandboxView {}

impl std::fmt::Debug for SandboxView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxView")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("state", &self.state)
            .field("ip", &self.ip())
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

/// A container as a snapshot saw it: the object (id, name and metadata fixed at creation) and
/// its status record, both shared.
#[derive(Clone)]
pub struct ContainerView {
    container: Arc<Container>,
    pub state: ContainerState,
    /// Shared with the store: equal to a later snapshot's by identity while it did not change.
    pub status: Arc<ContainerStatus>,
}

impl ContainerView {
    fn read(container: &Arc<Container>) -> Self {
        let status = container.shared_status();
        ContainerView { container: container.clone(), state: status.state(), status }
    }

    pub fn id(&self) -> &str {
        self.container.id.as_str()
    }

    pub fn name(&self) -> &str {
        &self.container.name
    }

    pub fn sandbox_id(&self) -> &str {
        self.container.metadata.sandbox_id.as_str()
    }

    pub fn image_ref(&self) -> &str {
        &self.container.metadata.image_ref
    }
}

/// The same object (kept alive by each view) with an equal status.
impl PartialEq for ContainerView {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.container, &other.container) && self.status == other.status
    }
}

impl Eq for ContainerView {}

impl std::fmt::Debug for ContainerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerView")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateSnapshot {
    pub initialized: bool,
    pub sandboxes: Vec<SandboxView>,
    pub containers: Vec<ContainerView>,
    /// Name → id, as the registrars hold them (shared until a name is reserved or released).
    pub sandbox_names: Arc<BTreeMap<String, SandboxId>>,
    pub container_names: Arc<BTreeMap<String, ContainerId>>,
    /// Names of RunPodSandbox/CreateContainer operations in flight.
    pub operations: Vec<String>,
    /// Names of finished operations whose success is kept for a retry until the object goes.
    pub undelivered: Vec<String>,
    /// ref → image id (the image store's own map, shared).
    pub image_refs: Arc<BTreeMap<String, String>>,
    pub backoff_len: usize,
    /// Ids with an exit being handled or work waiting in the backoff queue.
    pub events_pending: Vec<String>,
    pub backoff_dropped: u64,
    pub lock_keys: Vec<String>,
    pub pulls_in_flight: usize,
    /// Leases this process holds: those of operations in flight, and those whose delete runs
    /// after the call they served answered (until it is done or queued).
    pub leases_held: Vec<String>,
    /// Image references (or a whole resync) queued for a retry after an update failed.
    pub image_work_pending: usize,
    /// Dirs whose removal failed and is being retried in the background.
    pub removals_retrying: usize,
    /// Containers whose removal was acknowledged (or found marked at start-up) and whose task,
    /// containerd record or dirs are not all gone yet.
    pub container_removals_pending: usize,
    pub quarantined: Vec<Quarantined>,
    pub events_sent: u64,
    pub events_dropped: u64,
    /// Exits the reconciler recorded because no monitor had seen them.
    pub reconciled_exits: u64,
}

impl CriService {
    /// Container events sent so far, as `snapshot().events_sent` counts them, without the rest
    /// of a snapshot (every object's status): for a caller that polls for events to be through.
    pub fn container_events_sent(&self) -> u64 {
        self.container_events.sent_total.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> StateSnapshot {
        let sandboxes = self.sandboxes.list().iter().map(SandboxView::read).collect();
        let containers = self.containers.list().iter().map(ContainerView::read).collect();
        // One lock for both lists (two guards in one expression would deadlock).
        let (undelivered, operations): (Vec<String>, Vec<String>) = {
            let all = self.operations.lock().unwrap();
            let (done, running): (Vec<_>, Vec<_>) = all.iter().partition(|(_, entry)| entry.result.borrow().is_some());
            (
                done.into_iter().map(|(name, _)| name.clone()).collect(),
                running.into_iter().map(|(name, _)| name.clone()).collect(),
            )
        };
        StateSnapshot {
            initialized: self.is_initialized(),
            sandboxes,
            containers,
            sandbox_names: self.sandbox_names.shared_entries(),
            container_names: self.container_names.shared_entries(),
            operations,
            undelivered,
            image_refs: self.images.references(),
            backoff_len: self.monitor.backoff_len(),
            events_pending: self.monitor.pending_ids(),
            backoff_dropped: self.monitor.backoff_dropped_total.load(Ordering::Relaxed),
            lock_keys: self.pulls.locks.keys(),
            pulls_in_flight: self.pulls.in_flight(),
            leases_held: self.leases.held(),
            image_work_pending: self.monitor.image_work_pending(),
            removals_retrying: self.removals_retrying.load(Ordering::SeqCst),
            container_removals_pending: self.pending_removals.len(),
            quarantined: self.quarantined(),
            events_sent: self.container_events.sent_total.load(Ordering::Relaxed),
            events_dropped: self.container_events.dropped_total.load(Ordering::Relaxed),
            reconciled_exits: self.monitor.reconciled_exits_total.load(Ordering::Relaxed),
        }
    }
}

/// What kubelet reads of each object, built by the RPCs' own code: the ContainerStatus and
/// PodSandboxStatus messages, and the image store as ListImages and ImageStatus serve it.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeletView {
    pub containers: Vec<k8s_cri::v1::ContainerStatus>,
    pub sandboxes: Vec<KubeletSandbox>,
    /// Image id → its references, as ListImages lists them.
    pub images: BTreeMap<String, Vec<String>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct KubeletSandbox {
    pub status: k8s_cri::v1::PodSandboxStatus,
    pub host_network: bool,
}

impl CriService {
    pub fn kubelet_view(&self) -> KubeletView {
        self.kubelet_view_of(|_| true)
    }

    /// [`Self::kubelet_view`] with the status of only the containers and sandboxes `include`
    /// picks by id (every image still): for a checker that knows which objects changed.
    pub fn kubelet_view_of(&self, include: impl Fn(&str) -> bool) -> KubeletView {
        let picked: Vec<_> = self.containers.list().into_iter().filter(|c| include(c.id.as_str())).collect();
        let containers = self.container_status_messages(&picked);
        let sandboxes = self
            .sandboxes
            .list()
            .iter()
            .filter(|s| include(s.id.as_str()))
            .map(|s| KubeletSandbox { status: self.sandbox_status_message(s), host_network: s.metadata.host_network })
            .collect();
        let images = self.images.list().into_iter().map(|i| (i.id, i.references.into_iter().collect())).collect();
        KubeletView { containers, sandboxes, images }
    }
}
