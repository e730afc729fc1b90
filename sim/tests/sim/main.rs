//! Every integration test of the simulator, in one test binary: the simulation build links it
//! once instead of once per file (RisingWave keeps its simulation tests the same way). One
//! module per file beside this one. `cargo simtest -p crid-sim` runs the madsim ones; a plain
//! `cargo test` runs the normal-mode modules, `races` and `uds`. One module alone:
//! `cargo simtest -p crid-sim --test sim -- golden::`.

// Simulation mode (madsim, `cargo simtest`).
#[cfg(madsim)]
mod cli;
#[cfg(madsim)]
mod common;
#[cfg(madsim)]
mod container;
#[cfg(madsim)]
mod determinism;
#[cfg(madsim)]
mod events;
#[cfg(madsim)]
mod forks;
#[cfg(madsim)]
mod golden;
#[cfg(madsim)]
mod grpc;
#[cfg(madsim)]
mod identity;
#[cfg(madsim)]
mod image;
#[cfg(madsim)]
mod properties;
#[cfg(madsim)]
mod recovery;
#[cfg(madsim)]
mod rollback;
#[cfg(madsim)]
mod runtime;
#[cfg(madsim)]
mod sandbox;
#[cfg(madsim)]
mod seeds;
#[cfg(madsim)]
mod sharding;
#[cfg(madsim)]
mod streaming;

// Normal mode (real tokio, `cargo test`).
#[cfg(not(madsim))]
mod races;
#[cfg(not(madsim))]
mod uds;
