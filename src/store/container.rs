//! A container: metadata persisted in containerd, status checkpointed in a file by the core.

use std::sync::{Arc, Mutex};

use crate::watch;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ids::{ContainerId, SandboxId};
use crate::ports::Resources;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

pub const REASON_COMPLETED: &str = "Completed";
pub const REASON_ERROR: &str = "Error";
pub const REASON_OOM_KILLED: &str = "OOMKilled";
pub const REASON_START_ERROR: &str = "StartError";
pub const REASON_UNKNOWN: &str = "Unknown";
/// Exit code recorded for a failed start.
pub const EXIT_CODE_START_ERROR: i32 = 128;
/// Exit code recorded when the real exit could not be observed.
pub const EXIT_CODE_UNKNOWN: i32 = 255;

/// Persisted as JSON in the container's extension `io.cri-containerd.container.metadata`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContainerMetadata {
    pub version: String,
    pub id: ContainerId,
    pub name: String,
    pub sandbox_id: SandboxId,
    /// The `ContainerConfig`, protobuf-encoded as hex.
    pub config: String,
    pub image_ref: String,
    pub log_path: String,
    pub stop_signal: String,
}

/// The status; the persisted part is what the checkpoint file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContainerStatus {
    pub pid: u32,
    pub created_at_ns: i64,
    pub started_at_ns: i64,
    pub finished_at_ns: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub resources: Option<Resources>,
    /// Persisted before the task is created so that a restart mid-start has a defined outcome
    /// (B8): the container then becomes EXITED/StartError instead of silently CREATED.
    pub start_requested: bool,
    // In memory only.
    #[serde(skip)]
    pub starting: bool,
    #[serde(skip)]
    pub removing: bool,
    #[serde(skip)]
    pub unknown: bool,
}

impl ContainerStatus {
    /// The state, derived from the fields in containerd's order.
    pub fn state(&self) -> ContainerState {
        if self.unknown {
            ContainerState::Unknown
        } else if self.finished_at_ns != 0 {
            ContainerState::Exited
        } else if self.started_at_ns != 0 {
            ContainerState::Running
        } else if self.created_at_ns != 0 {
            ContainerState::Created
        } else {
            ContainerState::Unknown
        }
    }

    /// The status used when the checkpoint cannot be read.
    pub fn unknown_status() -> Self {
        ContainerStatus {
            exit_code: EXIT_CODE_UNKNOWN,
            reason: REASON_UNKNOWN.into(),
            unknown: true,
            ..Default::default()
        }
    }
}

/// The checkpoint file's contents: `{"version":"v1", ...status}`.
#[derive(Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: String,
    #[serde(flatten)]
    pub status: ContainerStatus,
}

/// What [`Checkpoint`] writes, borrowed: the same bytes, without copying the status first (a
/// checkpoint is written on every exit).
#[derive(Serialize)]
pub struct CheckpointRef<'a> {
    pub version: &'a str,
    #[serde(flatten)]
    pub status: &'a ContainerStatus,
}

pub struct Container {
    pub id: ContainerId,
    pub name: String,
    pub metadata: ContainerMetadata,
    pub config: k8s_cri::v1::ContainerConfig,
    /// Shared, and replaced whole on a change: a reader that keeps a status (the inspection
    /// snapshot) holds it without copying it, and one kept status compares equal to the
    /// current one by identity while nothing changed.
    status: Mutex<Arc<ContainerStatus>>,
    /// Serialises checkpointed updates: a write and the memory change happen together.
    pub update_lock: tokio::sync::Mutex<()>,
    stopped: watch::Sender<bool>,
    /// Set by the first Stop that sends the stop signal, so concurrent Stops signal once.
    stop_signaled: std::sync::atomic::AtomicBool,
    /// Serialises this process's deletes of the task once the exit is recorded, and is true
    /// once one of them went through or found the task gone: the exit handler deletes the
    /// task right after recording the exit, and a RemoveContainer that follows at once waits
    /// for that delete instead of sending a second one into the shim.
    pub exited_task_deleted: tokio::sync::Mutex<bool>,
    /// The last CPU reading of its stats, for `usage_nano_cores`.
    pub cpu_rate: super::CpuRate,
}

impl Container {
    pub fn new(metadata: ContainerMetadata, config: k8s_cri::v1::ContainerConfig, status: ContainerStatus) -> Self {
        assert_eq!(metadata.version, "v1");
        // Only an exited container has had its exit handled; a CREATED one has yet to run.
        let stopped = status.state() == ContainerState::Exited;
        Container {
            id: metadata.id.clone(),
            name: metadata.name.clone(),
            metadata,
            config,
            status: Mutex::new(Arc::new(status)),
            update_lock: tokio::sync::Mutex::new(()),
            stopped: watch::channel(stopped).0,
            stop_signaled: Default::default(),
            exited_task_deleted: tokio::sync::Mutex::new(false),
            cpu_rate: Default::default(),
        }
    }

    pub fn status(&self) -> ContainerStatus {
        ContainerStatus::clone(&self.status.lock().unwrap())
    }

    /// The current status, shared rather than copied.
    pub fn shared_status(&self) -> Arc<ContainerStatus> {
        self.status.lock().unwrap().clone()
    }

    /// Checks that `new` may follow the current status in the monotone state machine (SPEC §10
    /// inv. 2, 6); callers that persist check before writing the checkpoint.
    pub fn check_status(&self, new: &ContainerStatus) -> Result<()> {
        // Compared in place; the lock is released before a refusal is raised.
        let checked = check_transition(&self.id, &self.status.lock().unwrap(), new);
        checked.map_err(illegal)
    }

    /// What `read` makes of the status, read in place rather than copied out.
    pub fn read_status<R>(&self, read: impl FnOnce(&ContainerStatus) -> R) -> R {
        read(&self.status.lock().unwrap())
    }

    /// Replaces the in-memory status if the state machine allows it. Callers that persist write
    /// the checkpoint first (under `update_lock`). An illegal transition is refused with the lock
    /// released, so it fails one call and never poisons the status.
    pub fn set_status(&self, new: ContainerStatus) -> Result<()> {
        let mut status = self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(message) = check_transition(&self.id, &status, &new) {
            drop(status);
            return Err(illegal(message));
        }
        *status = Arc::new(new);
        Ok(())
    }

    pub fn mark_stopped(&self) {
        self.stopped.send_replace(true);
    }

    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    pub async fn wait_stopped(&self) {
        let mut receiver = self.stopped.subscribe();
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }

    /// True for exactly one caller: the one that should send the stop signal.
    pub fn take_stop_signal(&self) -> bool {
        !self.stop_signaled.swap(true, std::sync::atomic::Ordering::SeqCst)
    }
}

/// A refused transition is a bug in crid: the simulator stops on it (it must see every one);
/// production fails the one call with Internal and keeps serving.
pub(super) fn illegal(message: String) -> Error {
    if cfg!(madsim) {
        panic!("{message}");
    }
    tracing::error!("{message}");
    Error::internal(message)
}

fn check_transition(id: &ContainerId, old: &ContainerStatus, new: &ContainerStatus) -> std::result::Result<(), String> {
    use ContainerState::*;
    let (before, after) = (old.state(), new.state());
    let allowed = before == after
        || matches!((before, after), (Created, Running) | (Created, Exited) | (Running, Exited) | (Unknown, Exited));
    let fail = |what: String| Err(format!("container {id}: {what}"));
    if !allowed {
        return fail(format!("illegal transition {before:?} -> {after:?}"));
    }
    if new.starting && new.removing {
        return fail("starting and removing at once".into());
    }
    if new.starting && after != Created {
        return fail(format!("starting while {after:?}"));
    }
    if new.removing && matches!(after, Running | Unknown) {
        return fail(format!("removing while {after:?}"));
    }
    if old.finished_at_ns != 0 && old.finished_at_ns != new.finished_at_ns {
        return fail("finished_at changed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_derived_in_order() {
        let mut status = ContainerStatus { created_at_ns: 1, ..Default::default() };
        assert_eq!(status.state(), ContainerState::Created);
        status.started_at_ns = 2;
        assert_eq!(status.state(), ContainerState::Running);
        status.finished_at_ns = 3;
        assert_eq!(status.state(), ContainerState::Exited);
        status.unknown = true;
        assert_eq!(status.state(), ContainerState::Unknown);
        assert_eq!(ContainerStatus::default().state(), ContainerState::Unknown);
    }

    /// Metadata as crid wrote it before ids had types: it must read back, and write back the same.
    #[test]
    fn metadata_persisted_with_string_ids_reads_back_unchanged() {
        let persisted = r#"{"version":"v1","id":"c0ffee","name":"app_pod_default_uid_0","sandbox_id":"5a4d","config":"0a00","image_ref":"sha256:ab","log_path":"app/0.log","stop_signal":"SIGTERM"}"#;
        let metadata: ContainerMetadata = serde_json::from_str(persisted).unwrap();
        assert_eq!(metadata.id, ContainerId::from("c0ffee"));
        assert_eq!(metadata.sandbox_id, SandboxId::from("5a4d"));
        assert_eq!(serde_json::to_string(&metadata).unwrap(), persisted);
        let persisted = r#"{"version":"v1","id":"5a4d","name":"pod_default_uid_0","config":"","netns_path":"/var/run/netns/cni-5a4d","ip":"10.88.0.2","additional_ips":[],"runtime_handler":"","cni_result":null,"network_setup_attempted":true,"host_network":false}"#;
        let metadata: crate::store::SandboxMetadata = serde_json::from_str(persisted).unwrap();
        assert_eq!(metadata.id, SandboxId::from("5a4d"));
        assert_eq!(serde_json::to_string(&metadata).unwrap(), persisted);
    }

    #[test]
    fn exited_never_runs_again() {
        let exited = ContainerStatus { created_at_ns: 1, started_at_ns: 2, finished_at_ns: 3, ..Default::default() };
        let running = ContainerStatus { created_at_ns: 1, started_at_ns: 2, ..Default::default() };
        let refused = check_transition(&"c".into(), &exited, &running).unwrap_err();
        assert!(refused.contains("illegal transition Exited -> Running"), "{refused}");
    }

    #[cfg(not(madsim))]
    #[test]
    fn an_illegal_transition_fails_the_call_and_keeps_the_status() {
        let metadata = ContainerMetadata { id: "c".into(), version: "v1".into(), ..Default::default() };
        let exited = ContainerStatus { created_at_ns: 1, started_at_ns: 2, finished_at_ns: 3, ..Default::default() };
        let container = Container::new(metadata, Default::default(), exited.clone());
        let running = ContainerStatus { created_at_ns: 1, started_at_ns: 2, ..Default::default() };
        let error = container.set_status(running).unwrap_err();
        assert_eq!(error.kind, crate::ErrorKind::Internal);
        assert_eq!(container.status().state(), ContainerState::Exited, "unchanged, and the lock is not poisoned");
    }
}
