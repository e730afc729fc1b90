//! The backend traits — the only way the core touches the world: containerd, the image registry,
//! CNI, the host and the clock, plus the stream server.
//!
//! Every process, file, socket, network namespace, clock reading and random number the core uses
//! goes through one of these. The production crate implements them against containerd, CNI
//! plugins and Linux; the simulator implements them in memory under madsim.

pub mod clock;
pub mod cni;
pub mod containerd;
pub mod os;
pub mod registry;
pub mod stream;

pub use clock::{Clock, timeout};
pub use cni::{Cni, CniResult, IpConfig, PodNetwork, PortMapping};
pub use containerd::*;
pub use os::{CgroupStats, InterfaceStats, Os};
pub use registry::{ImageConfigRead, ProgressFn, Registry, RegistryAuth, ResolvedImage, ResolvedManifest};
pub use stream::{
    ByteReader, ByteWriter, ClientStreams, ProcessIo, SessionEnd, StreamHandler, StreamRequest, StreamServer,
    TerminalSize,
};

use std::sync::Arc;

/// One bundle of backends, cheap to clone. The core holds nothing else that reaches outside.
#[derive(Clone)]
pub struct Backends {
    pub containerd: Arc<dyn Containerd>,
    pub registry: Arc<dyn Registry>,
    pub cni: Arc<dyn Cni>,
    pub os: Arc<dyn Os>,
    pub clock: Arc<dyn Clock>,
    pub stream: Arc<dyn StreamServer>,
}
