//! The CRI's RPCs, one file per group, each an `impl CriService` block: what a call checks,
//! which backend calls it makes in which order, and how it rolls back.

pub mod container_create;
pub mod container_status;
pub mod container_stop;
pub mod exec;
pub mod image_pull;
pub mod image_service;
pub mod runtime;
pub mod sandbox_run;
pub mod sandbox_stats;
pub mod sandbox_status;
pub mod sandbox_stop;
