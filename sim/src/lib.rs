//! Deterministic simulation testbed for crid.

pub mod fakes;
