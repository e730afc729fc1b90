//! Production backends for crid: the four backend traits of `crid::ports` implemented against a
//! real containerd (gRPC over its unix socket), CNI plugin binaries and Linux, plus the stream
//! server. The `crid` binary (src/bin/crid.rs) wires them to the core.
//!
//! This crate is production code only: the simulator never depends on it.

pub mod cgroup;
pub mod clock;
pub mod cni;
pub mod containerd;
pub mod daemon;
pub mod errors;
pub mod hosts;
pub mod os;
pub mod pull;
pub mod spdy;
pub mod stream;

pub use clock::SystemClock;
pub use cni::RealCni;
pub use containerd::RealContainerd;
pub use os::LinuxOs;
pub use stream::HttpStreamServer;
