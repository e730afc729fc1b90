//! What happens after a reply: exit monitors and the containerd event loop (`monitor.rs`), the
//! bounded backoff queue for work that failed once (`queue.rs`), the reconciler and the snapshot
//! usage syncer (`reconcile.rs`), the GetContainerEvents fan-out (`hub.rs`), and the one backoff
//! schedule (`backoff.rs`).

use std::time::Duration;

use crate::ports::ExitStatus;

pub mod backoff;
mod hub;
mod monitor;
mod queue;
mod reconcile;

pub use hub::ContainerEventHub;
pub use queue::EventMonitor;

/// Budget for handling one event (containerd's `handleEventTimeout`).
pub const HANDLE_EVENT_TIMEOUT: Duration = Duration::from_secs(10);
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
pub const BACKOFF_TICK: Duration = Duration::from_secs(1);
/// Bounds the wait between re-subscriptions and re-waits when containerd is unreachable.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Which store an exiting task belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskKind {
    Sandbox,
    Container,
}

/// Work that failed once and waits in the backoff queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingEvent {
    Exit {
        kind: TaskKind,
        exit: ExitStatus,
    },
    Oom,
    /// A lease to delete (keyed by the lease id): its operation ended or was dropped.
    DeleteLease,
    /// A lease sweep whose listing failed.
    SweepLeases,
}
