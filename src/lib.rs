//! crid's core: the CRI runtime service with containerd's semantics, written against four
//! backend traits (containerd, CNI, OS, clock) and nothing else. See ARCHITECTURE.md.

pub mod backend;
pub mod backoff;
pub mod checkpoint;
pub mod config;
pub mod container_create;
pub mod container_status;
pub mod container_stop;
pub mod error;
pub mod events;
pub mod exec;
#[cfg(not(madsim))]
pub mod grpc;
pub mod image_pull;
pub mod image_service;
pub mod inspect;
pub mod kmutex;
pub mod naming;
pub mod recover;
pub mod runtime;
pub mod sandbox_run;
pub mod sandbox_status;
pub mod sandbox_stop;
pub mod seccomp;
pub mod service;
pub mod spec;
pub mod store;
pub mod userdb;

pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use service::CriService;
