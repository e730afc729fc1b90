//! crid's core: the CRI runtime service with containerd's semantics, written against four
//! backend traits (containerd, CNI, OS, clock) and nothing else. See ARCHITECTURE.md.

// The public surface: the config, errors, the ports a backend implements, the service and what
// the simulator's checkers read, and the watch channel the fakes share. Everything else is the
// core's own business.
pub mod config;
pub mod error;
pub mod ids;
pub mod inspect;
pub mod naming;
pub mod ports;
pub mod streaming;
pub mod watch;

mod checkpoint;
mod events;
pub mod kmutex;
mod lease;
mod recover;
mod removal;
mod rpc;
mod service;
mod spec;
mod store;

pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use events::backoff::Backoff;
pub use events::{ContainerEvent, ContainerStatusView, PodSandboxStatusView};
pub use rpc::image_pull::chain_ids;
pub use service::{CriService, Quarantined};
pub use store::{ContainerState, SandboxState};
