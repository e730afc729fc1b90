//! crid's deterministic simulation testbed: in-memory fakes of the four backends, and (in madsim
//! builds) the harness that runs seeded scenarios with faults, invariants and replay.

pub mod fakes;
pub mod out;

/// The fault kinds a scenario may name.
pub const FAULT_KINDS: &[&str] = &["error", "delay", "hang", "late", "fail_after", "crash"];
pub mod scenario;

#[cfg(madsim)]
pub mod buggify;
#[cfg(madsim)]
pub mod cri_node;
#[cfg(madsim)]
pub mod invariants;
#[cfg(madsim)]
pub mod kubelet;
#[cfg(madsim)]
pub mod oracle;
#[cfg(madsim)]
pub mod runner;
#[cfg(madsim)]
pub mod shrink;
#[cfg(madsim)]
pub mod summary;
pub mod trace;
