//! crid's core: the CRI runtime service with containerd's semantics, written against four
//! backend traits (containerd, CNI, OS, clock) and nothing else. See ARCHITECTURE.md.

pub mod checkpoint;
pub mod config;
pub mod error;
pub mod events;
pub mod inspect;
pub mod kmutex;
pub mod naming;
pub mod ports;
pub mod recover;
pub mod rpc;
pub mod service;
pub mod spec;
pub mod store;
pub mod streaming;

pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use service::CriService;
