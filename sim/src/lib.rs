//! crid's deterministic simulation testbed: in-memory fakes of the four backends, and (in madsim
//! builds) the harness that runs seeded scenarios with faults, invariants and replay.

pub mod fakes;
pub mod kinds;
pub mod out;
pub mod scenario;

#[cfg(madsim)]
pub mod buggify;
#[cfg(madsim)]
pub mod cri_node;
#[cfg(all(madsim, unix))]
pub mod forks;
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
pub mod swarm;
pub mod trace;
