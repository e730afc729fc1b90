//! A pod sandbox: metadata persisted in containerd, status re-derived from the task on restart.

use std::sync::Mutex;

use crate::watch;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::SandboxId;
use crate::ports::CniResult;
use crate::store::container::illegal;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SandboxState {
    Ready,
    NotReady,
    /// Internal only; shows as NOTREADY over CRI.
    Unknown,
}

/// Persisted as JSON in the containerd extension `io.cri-containerd.sandbox.metadata`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxMetadata {
    pub version: String,
    pub id: SandboxId,
    pub name: String,
    /// The `PodSandboxConfig`, protobuf-encoded as hex.
    pub config: String,
    pub netns_path: String,
    pub ip: String,
    pub additional_ips: Vec<String>,
    /// The handler the sandbox runs with: the request's, or the default it named by "".
    pub runtime_handler: String,
    /// The handler as the request named it ("" for the default), which statuses report as
    /// containerd does; None in metadata written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_runtime_handler: Option<String>,
    pub cni_result: Option<CniResult>,
    /// True when a CNI ADD may have run: Stop must then issue DEL even without a result (B17).
    /// RunPodSandbox sets it for every pod with a network of its own in the record's first write,
    /// before the netns exists: a crash before the ADD costs one DEL that finds nothing, and the
    /// pod needs no second metadata write before its ADD.
    pub network_setup_attempted: bool,
    pub host_network: bool,
}

impl SandboxMetadata {
    /// The runtime handler statuses and events report: the request's.
    pub fn reported_runtime_handler(&self) -> &str {
        self.requested_runtime_handler.as_deref().unwrap_or(&self.runtime_handler)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxStatus {
    pub state: SandboxState,
    pub pid: u32,
    pub created_at_ns: i64,
    pub exited_at_ns: i64,
    pub exit_code: u32,
}

pub struct Sandbox {
    pub id: SandboxId,
    pub name: String,
    pub metadata: SandboxMetadata,
    pub config: k8s_cri::v1::PodSandboxConfig,
    status: Mutex<SandboxStatus>,
    /// Flips to true once the sandbox's exit has been handled.
    stopped: watch::Sender<bool>,
    /// Set once this process ran CNI DEL and removed the netns with success: RemovePodSandbox's
    /// own stop then skips a second DEL. Memory only: after a restart DEL runs again, which is
    /// what a lost flag costs (DEL is idempotent).
    network_torn_down: std::sync::atomic::AtomicBool,
    /// Set when the netns is known closed without a teardown of this process: recovery found
    /// it closed (a Stop that removed it before the restart, or a reboot that took every
    /// netns), or a failed RunPodSandbox's rollback removed it. Only the reported IP follows
    /// it: Stop's DEL still runs, since a closed netns does not say that the plugins freed the
    /// address.
    netns_gone: std::sync::atomic::AtomicBool,
    /// Serialises this process's deletes of the pause task once its exit is recorded, and is
    /// true once one went through or found the task gone (as a container's
    /// `exited_task_deleted`). A pause task is never created again once it exited.
    pub exited_task_deleted: tokio::sync::Mutex<bool>,
    /// The last CPU reading of the pod's stats, for `usage_nano_cores`.
    pub cpu_rate: super::CpuRate,
}

impl Sandbox {
    pub fn new(metadata: SandboxMetadata, config: k8s_cri::v1::PodSandboxConfig, status: SandboxStatus) -> Self {
        assert_eq!(metadata.version, "v1");
        let already_stopped = status.state == SandboxState::NotReady;
        Sandbox {
            id: metadata.id.clone(),
            name: metadata.name.clone(),
            metadata,
            config,
            status: Mutex::new(status),
            stopped: watch::channel(already_stopped).0,
            network_torn_down: std::sync::atomic::AtomicBool::new(false),
            netns_gone: std::sync::atomic::AtomicBool::new(false),
            exited_task_deleted: tokio::sync::Mutex::new(false),
            cpu_rate: Default::default(),
        }
    }

    pub fn mark_netns_gone(&self) {
        self.netns_gone.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the pod's IPs are reported, as containerd reports them: while its network
    /// namespace is open, whatever the pod's state (a pod kept UNKNOWN by a failed rollback
    /// included), and never for a pod on the host's network. The netns closes through Stop's
    /// teardown, a rollback, or before a restart.
    pub fn reports_network(&self) -> bool {
        !self.metadata.host_network
            && !self.metadata.netns_path.is_empty()
            && !self.network_torn_down()
            && !self.netns_gone.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn network_torn_down(&self) -> bool {
        self.network_torn_down.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn mark_network_torn_down(&self) {
        self.network_torn_down.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn status(&self) -> SandboxStatus {
        self.status.lock().unwrap().clone()
    }

    /// Applies `change` to a copy of the status and keeps it if the transition is allowed (SPEC
    /// §10 invariant 3). An illegal one is refused with the lock released and the status as it
    /// was, so it fails one call and never poisons the status.
    pub fn update_status(&self, change: impl FnOnce(&mut SandboxStatus)) -> Result<SandboxStatus> {
        let mut status = self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut new = status.clone();
        change(&mut new);
        let (before, after) = (status.state, new.state);
        let allowed = before == after
            || matches!(
                (before, after),
                (SandboxState::Unknown, SandboxState::Ready)
                    | (SandboxState::Unknown, SandboxState::NotReady)
                    | (SandboxState::Ready, SandboxState::NotReady)
            );
        if !allowed {
            drop(status);
            return Err(illegal(format!("sandbox {}: illegal transition {before:?} -> {after:?}", self.id)));
        }
        *status = new.clone();
        Ok(new)
    }

    pub fn mark_stopped(&self) {
        self.stopped.send_replace(true);
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Completes once the exit has been handled.
    pub async fn wait_stopped(&self) {
        let mut receiver = self.stopped.subscribe();
        // The sender lives as long as `self`, so the wait ends only by the flag.
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }
}

// The simulation build panics on an illegal transition instead (see `illegal`).
#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    #[test]
    fn an_illegal_transition_fails_the_call_and_keeps_the_status() {
        let metadata = SandboxMetadata {
            version: "v1".into(),
            id: "s".into(),
            name: String::new(),
            config: String::new(),
            netns_path: String::new(),
            ip: String::new(),
            additional_ips: vec![],
            runtime_handler: String::new(),
            requested_runtime_handler: None,
            cni_result: None,
            network_setup_attempted: false,
            host_network: false,
        };
        let status =
            SandboxStatus { state: SandboxState::NotReady, pid: 0, created_at_ns: 1, exited_at_ns: 2, exit_code: 0 };
        let sandbox = Sandbox::new(metadata, Default::default(), status);
        let error = sandbox.update_status(|status| status.state = SandboxState::Ready).unwrap_err();
        assert_eq!(error.kind, crate::ErrorKind::Internal);
        assert_eq!(sandbox.status().state, SandboxState::NotReady, "unchanged, and the lock is not poisoned");
        sandbox.update_status(|status| status.exit_code = 3).unwrap();
        assert_eq!(sandbox.status().exit_code, 3);
    }
}
