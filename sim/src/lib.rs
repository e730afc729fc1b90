//! crid's deterministic simulation testbed: in-memory fakes of the four backends, and (in madsim
//! builds) the harness that runs seeded scenarios with faults, invariants and replay.

/// Every simulation binary (crid-sim, the test and benchmark binaries) allocates through
/// mimalloc. A seed's run is allocation-bound (the protobuf messages, status snapshots and
/// trace lines of ~1,000 calls): glibc's malloc and free took about a third of its CPU, and
/// with mimalloc a recovery seed takes about half the time. The allocator changes no
/// behaviour: addresses reach no decision and trace hashes are the same with either.
#[cfg(madsim)]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
