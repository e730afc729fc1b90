//! A read-only snapshot of the service's state, for invariant checks and diagnostics. Taking it
//! changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;

pub use crate::rpc::image_service::IMAGE_REF_LOCK_PREFIX;
use crate::service::{CriService, Quarantined};
pub use crate::store::container::{REASON_OOM_KILLED, REASON_START_ERROR, REASON_UNKNOWN};
use crate::store::{ContainerState, ContainerStatus, SandboxState};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SandboxView {
    pub id: String,
    pub name: String,
    pub state: SandboxState,
    pub pid: u32,
    pub created_at_ns: i64,
    pub host_network: bool,
    pub netns_path: String,
    pub ip: String,
    pub has_cni_result: bool,
    pub network_setup_attempted: bool,
    pub stopped: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerView {
    pub id: String,
    pub name: String,
    pub sandbox_id: String,
    pub state: ContainerState,
    /// Shared with the store: equal to a later snapshot's by identity while it did not change.
    pub status: Arc<ContainerStatus>,
    pub image_ref: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StateSnapshot {
    pub initialized: bool,
    pub sandboxes: Vec<SandboxView>,
    pub containers: Vec<ContainerView>,
    /// (name, id), sorted by name.
    pub sandbox_names: Vec<(String, String)>,
    pub container_names: Vec<(String, String)>,
    /// Names of RunPodSandbox/CreateContainer operations in flight.
    pub operations: Vec<String>,
    /// Names of finished operations whose success is kept for a retry until the object goes.
    pub undelivered: Vec<String>,
    /// ref → image id.
    pub image_refs: BTreeMap<String, String>,
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
        let sandboxes = self
            .sandboxes
            .list()
            .iter()
            .map(|s| {
                let status = s.status();
                SandboxView {
                    id: s.id.as_str().to_owned(),
                    name: s.name.clone(),
                    state: status.state,
                    pid: status.pid,
                    created_at_ns: status.created_at_ns,
                    host_network: s.metadata.host_network,
                    netns_path: s.metadata.netns_path.clone(),
                    ip: s.metadata.ip.clone(),
                    has_cni_result: s.metadata.cni_result.is_some(),
                    network_setup_attempted: s.metadata.network_setup_attempted,
                    stopped: s.is_stopped(),
                }
            })
            .collect();
        let containers = self
            .containers
            .list()
            .iter()
            .map(|c| {
                let status = c.shared_status();
                ContainerView {
                    id: c.id.as_str().to_owned(),
                    name: c.name.clone(),
                    sandbox_id: c.metadata.sandbox_id.as_str().to_owned(),
                    state: status.state(),
                    status,
                    image_ref: c.metadata.image_ref.clone(),
                }
            })
            .collect();
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
            sandbox_names: self.sandbox_names.entries().into_iter().map(|(name, id)| (name, id.into())).collect(),
            container_names: self.container_names.entries().into_iter().map(|(name, id)| (name, id.into())).collect(),
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

    /// [`Self::kubelet_view`] with the status of only the containers `include` picks (every
    /// sandbox and image still): for a checker that knows which containers changed.
    pub fn kubelet_view_of(&self, include: impl Fn(&str) -> bool) -> KubeletView {
        let picked: Vec<_> = self.containers.list().into_iter().filter(|c| include(c.id.as_str())).collect();
        let containers = self.container_status_messages(&picked);
        let sandboxes = self
            .sandboxes
            .list()
            .iter()
            .map(|s| KubeletSandbox { status: self.sandbox_status_message(s), host_network: s.metadata.host_network })
            .collect();
        let images = self.images.list().into_iter().map(|i| (i.id, i.references.into_iter().collect())).collect();
        KubeletView { containers, sandboxes, images }
    }
}
