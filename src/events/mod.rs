//! What happens after a reply: exit monitors and the containerd event loop (`monitor.rs`), the
//! bounded backoff queue for work that failed once (`queue.rs`), the reconciler and the snapshot
//! usage syncer (`reconcile.rs`), the GetContainerEvents fan-out (`hub.rs`) and its events
//! (`container_event.rs`), and the one backoff
//! schedule (`backoff.rs`).

use std::time::Duration;

use crate::ports::ExitStatus;

pub mod backoff;
mod container_event;
mod hub;
mod monitor;
mod queue;
mod reconcile;

pub(crate) use container_event::cri_state;
pub(crate) use container_event::sandbox_cri_state;
pub use container_event::{ContainerEvent, ContainerStatusView, ImageNames, PodSandboxStatusView};
pub use hub::ContainerEventHub;
pub use queue::EventMonitor;

/// Budget for handling one event (containerd's `handleEventTimeout`).
pub const HANDLE_EVENT_TIMEOUT: Duration = Duration::from_secs(10);
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
pub const BACKOFF_TICK: Duration = Duration::from_secs(1);
/// Bounds the wait between re-subscriptions and re-waits when containerd is unreachable.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// What a backoff entry holds work for: a task's exit or OOM, a lease to delete, the lease
/// sweep, an image reference to re-read or the whole image list to resync. Tasks sort first,
/// by id, as before leases had entries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BackoffKey {
    Task(crate::ids::TaskId),
    Lease(String),
    LeaseSweep,
    Image(String),
    ImageResync,
}

impl BackoffKey {
    /// Work that brings the image store back in step with containerd's image list.
    pub fn is_image_work(&self) -> bool {
        matches!(self, BackoffKey::Image(_) | BackoffKey::ImageResync)
    }
}

impl From<&crate::ids::TaskId> for BackoffKey {
    fn from(task: &crate::ids::TaskId) -> Self {
        BackoffKey::Task(task.clone())
    }
}

impl From<crate::ids::TaskId> for BackoffKey {
    fn from(task: crate::ids::TaskId) -> Self {
        BackoffKey::Task(task)
    }
}

impl std::fmt::Display for BackoffKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackoffKey::Task(task) => write!(f, "{task}"),
            BackoffKey::Lease(id) => write!(f, "lease {id}"),
            BackoffKey::LeaseSweep => f.write_str("lease sweep"),
            BackoffKey::Image(name) => write!(f, "image {name}"),
            BackoffKey::ImageResync => f.write_str("image resync"),
        }
    }
}

/// Work that failed once and waits in the backoff queue, under its task (`TaskId`: the task's
/// kind says which store an exit goes to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingEvent {
    Exit(ExitStatus),
    Oom,
    /// A lease to delete (keyed by the lease id): its operation ended or was dropped.
    DeleteLease,
    /// A lease sweep whose listing failed.
    SweepLeases,
    /// An image reference whose update failed (keyed by its name): re-read it from containerd.
    RefreshImage,
    /// A resync of the image list that recovery could not finish.
    ResyncImages,
}
