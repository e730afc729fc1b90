//! A container: metadata persisted in containerd, status checkpointed in a file by the core.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::backend::Resources;

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMetadata {
    pub version: String,
    pub id: String,
    pub name: String,
    pub sandbox_id: String,
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

pub struct Container {
    pub id: String,
    pub name: String,
    pub metadata: ContainerMetadata,
    pub config: k8s_cri::v1::ContainerConfig,
    status: Mutex<ContainerStatus>,
    /// Serialises checkpointed updates: a write and the memory change happen together.
    pub update_lock: tokio::sync::Mutex<()>,
    stopped: watch::Sender<bool>,
    /// Set by the first Stop that sends the stop signal, so concurrent Stops signal once.
    stop_signaled: std::sync::atomic::AtomicBool,
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
            status: Mutex::new(status),
            update_lock: tokio::sync::Mutex::new(()),
            stopped: watch::channel(stopped).0,
            stop_signaled: Default::default(),
        }
    }

    pub fn status(&self) -> ContainerStatus {
        self.status.lock().unwrap().clone()
    }

    /// Replaces the in-memory status, checking the monotone state machine (SPEC §10 inv. 2, 6).
    /// Callers that persist write the checkpoint first (under `update_lock`).
    pub fn set_status(&self, new: ContainerStatus) {
        let mut status = self.status.lock().unwrap();
        check_transition(&self.id, &status, &new);
        *status = new;
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

fn check_transition(id: &str, old: &ContainerStatus, new: &ContainerStatus) {
    use ContainerState::*;
    let (before, after) = (old.state(), new.state());
    let allowed = before == after
        || matches!((before, after), (Created, Running) | (Created, Exited) | (Running, Exited) | (Unknown, Exited));
    assert!(allowed, "container {id}: illegal transition {before:?} -> {after:?}");
    assert!(!(new.starting && new.removing), "container {id}: starting and removing at once");
    assert!(!new.starting || after == Created, "container {id}: starting while {after:?}");
    assert!(!new.removing || !matches!(after, Running | Unknown), "container {id}: removing while {after:?}");
    assert!(old.finished_at_ns == 0 || old.finished_at_ns == new.finished_at_ns, "container {id}: finished_at changed");
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

    #[test]
    #[should_panic(expected = "illegal transition")]
    fn exited_never_runs_again() {
        let exited = ContainerStatus { created_at_ns: 1, started_at_ns: 2, finished_at_ns: 3, ..Default::default() };
        let running = ContainerStatus { created_at_ns: 1, started_at_ns: 2, ..Default::default() };
        check_transition("c", &exited, &running);
    }
}
