//! Snapshotters: committed layers by chain id, active (writable) rootfs snapshots by key, and
//! the layer applies that commit them.

use std::collections::BTreeMap;
use std::time::Duration;

use crid::error::{Error, Result};
use crid::ports::containerd::*;

use super::FakeContainerd;
use super::content::{InFlight, InFlightKey};

/// What an active (writable) snapshot counts for in usage, unless a test set its usage.
pub const ACTIVE_SNAPSHOT_BYTES: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SnapshotKind {
    Committed,
    Active,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub kind: SnapshotKind,
    /// Chain id of the parent; empty for a base layer.
    pub parent: String,
    pub size_bytes: u64,
}

#[derive(Default)]
pub(super) struct Snapshotter {
    /// Chain id → (parent chain id, size).
    pub(super) committed: BTreeMap<String, (String, u64)>,
    /// Key → parent chain id.
    pub(super) active: BTreeMap<String, String>,
    /// Usage set by a test for an active snapshot (what the container wrote), by key.
    pub(super) written: BTreeMap<String, SnapshotUsage>,
}

impl Snapshotter {
    fn has_children(&self, chain_id: &str) -> bool {
        self.committed.values().any(|(parent, _)| parent == chain_id)
            || self.active.values().any(|parent| parent == chain_id)
    }
}

impl FakeContainerd {
    /// Every layer apply (unpack + commit) sleeps this long.
    pub fn set_apply_latency(&self, latency: Duration) {
        self.raw_state().apply_latency = latency;
    }

    /// Puts a file (e.g. `etc/passwd`) into the rootfs of every container prepared on top of
    /// `chain_id`.
    pub fn set_rootfs_file(&self, chain_id: &str, path: &str, contents: &[u8]) {
        self.raw_state()
            .rootfs_files
            .entry(chain_id.to_string())
            .or_default()
            .insert(path.to_string(), contents.to_vec());
    }

    /// Key (chain id for committed ones) → snapshot, in `snapshotter`.
    pub fn snapshots(&self, snapshotter: &str) -> BTreeMap<String, SnapshotInfo> {
        let state = self.raw_state();
        let Some(snapshots) = state.snapshotters.get(snapshotter) else { return BTreeMap::new() };
        let committed = snapshots.committed.iter().map(|(chain, (parent, size_bytes))| {
            (
                chain.clone(),
                SnapshotInfo { kind: SnapshotKind::Committed, parent: parent.clone(), size_bytes: *size_bytes },
            )
        });
        let active = snapshots.active.iter().map(|(key, parent)| {
            (
                key.clone(),
                SnapshotInfo { kind: SnapshotKind::Active, parent: parent.clone(), size_bytes: ACTIVE_SNAPSHOT_BYTES },
            )
        });
        committed.chain(active).collect()
    }

    /// Sets what the active snapshot `key` uses (what its container wrote); false without one.
    pub fn set_snapshot_usage(&self, snapshotter: &str, key: &str, usage: SnapshotUsage) -> bool {
        let mut state = self.raw_state();
        let snapshots = state.snapshotter(snapshotter);
        if !snapshots.active.contains_key(key) {
            return false;
        }
        snapshots.written.insert(key.to_string(), usage);
        true
    }

    /// Applies of snapshots that were already committed (answered AlreadyExists).
    pub fn redundant_applies(&self) -> u64 {
        self.raw_state().applies.redundant
    }

    pub fn apply_count(&self, snapshotter: &str, chain_id: &str) -> u64 {
        self.raw_state().applies.count.get(&(snapshotter.to_string(), chain_id.to_string())).copied().unwrap_or(0)
    }

    pub fn total_applies(&self) -> u64 {
        self.raw_state().applies.count.values().sum()
    }

    /// The most applies of one (snapshotter, chain id) ever in flight at once.
    pub fn max_concurrent_apply_same_snapshot(&self) -> u32 {
        self.raw_state().applies.max_concurrent
    }

    pub(super) fn do_apply_begin(
        &self,
        snapshotter: &str,
        chain_id: &str,
        parent_chain_id: &str,
        layer: &Descriptor,
        lease: &str,
    ) -> Result<InFlight<'_>> {
        let mut state = self.state();
        state.check_lease(lease)?;
        if state.committed(snapshotter, chain_id) {
            state.applies.redundant += 1;
            // The backend holds a snapshot its commit finds committed by another unpack (the
            // pull relies on it from here); the fake finds it before unpacking.
            let held = (snapshotter.to_string(), chain_id.to_string());
            state.lease_mut(lease)?.snapshots.insert(held);
            return Err(Error::already_exists(format!("snapshot {chain_id}: already exists")));
        }
        if !parent_chain_id.is_empty() && !state.committed(snapshotter, parent_chain_id) {
            return Err(Error::not_found(format!("parent snapshot {parent_chain_id} does not exist: not found")));
        }
        if !state.content.contains_key(&layer.digest) {
            return Err(Error::not_found(format!("content digest {}: not found", layer.digest)));
        }
        let key = (snapshotter.to_string(), chain_id.to_string());
        state.applies.begin(&key);
        Ok(InFlight { containerd: self, key: InFlightKey::Apply(key) })
    }

    pub(super) fn do_apply_commit(
        &self,
        snapshotter: &str,
        chain_id: &str,
        parent_chain_id: &str,
        layer: &Descriptor,
        lease: &str,
    ) -> Result<()> {
        let mut state = self.state();
        // Another apply of the same chain may have committed while this one unpacked: held, as
        // the backend holds it.
        if state.committed(snapshotter, chain_id) {
            let held = (snapshotter.to_string(), chain_id.to_string());
            state.lease_mut(lease)?.snapshots.insert(held);
            return Err(Error::already_exists(format!("snapshot {chain_id}: already exists")));
        }
        // The lease must still exist, and holds the commit; the parent may have been collected
        // meanwhile if nothing held it.
        state.check_lease(lease)?;
        if !parent_chain_id.is_empty() && !state.committed(snapshotter, parent_chain_id) {
            return Err(Error::not_found(format!("parent snapshot {parent_chain_id} does not exist: not found")));
        }
        state
            .snapshotter(snapshotter)
            .committed
            .insert(chain_id.to_string(), (parent_chain_id.to_string(), layer.size_bytes));
        let key = (snapshotter.to_string(), chain_id.to_string());
        state.lease_mut(lease)?.snapshots.insert(key);
        Ok(())
    }

    pub(super) async fn do_apply_layer(
        &self,
        snapshotter: &str,
        chain_id: &str,
        parent_chain_id: &str,
        layer: &Descriptor,
        lease: &str,
    ) -> Result<()> {
        let mut connection = self.connection.subscribe();
        let in_flight = self.do_apply_begin(snapshotter, chain_id, parent_chain_id, layer, lease)?;
        let latency = self.raw_state().apply_latency;
        self.pause(&mut connection, latency).await?;
        let committed = self.do_apply_commit(snapshotter, chain_id, parent_chain_id, layer, lease);
        drop(in_flight);
        committed
    }

    pub(super) fn do_prepare_snapshot(
        &self,
        snapshotter: &str,
        key: &str,
        parent_chain_id: &str,
        lease: &str,
    ) -> Result<()> {
        let mut state = self.state();
        let holding = (snapshotter.to_string(), key.to_string());
        state.lease_mut(lease)?.snapshots.insert(holding);
        let snapshots = state.snapshotter(snapshotter);
        if snapshots.active.contains_key(key) || snapshots.committed.contains_key(key) {
            return Err(Error::already_exists(format!("snapshot {key}: already exists")));
        }
        if !parent_chain_id.is_empty() && !snapshots.committed.contains_key(parent_chain_id) {
            return Err(Error::not_found(format!("parent snapshot {parent_chain_id} does not exist: not found")));
        }
        snapshots.active.insert(key.to_string(), parent_chain_id.to_string());
        snapshots.written.remove(key);
        Ok(())
    }

    pub(super) fn do_read_rootfs_files(
        &self,
        snapshotter: &str,
        key: &str,
        paths: &[&str],
        max_bytes: usize,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let mut state = self.raw_state();
        let snapshots = state.snapshotter(snapshotter);
        let Some(parent) = snapshots.active.get(key).cloned() else {
            return Err(Error::not_found(format!("snapshot {key} does not exist: not found")));
        };
        // The fake's images carry their account files by chain id, when a scenario gives any.
        let files = state.rootfs_files.get(&parent);
        let read = |path: &&str| {
            let file = files.and_then(|files| files.get(path.trim_start_matches('/')));
            file.filter(|bytes| bytes.len() <= max_bytes).cloned()
        };
        Ok(paths.iter().map(read).collect())
    }

    pub(super) fn do_remove_snapshot(&self, snapshotter: &str, key: &str) -> Result<()> {
        let mut state = self.raw_state();
        let snapshots = state.snapshotter(snapshotter);
        if snapshots.active.remove(key).is_some() {
            snapshots.written.remove(key);
            // Its parents may now be garbage (an image removed while the container lived).
            state.collect_garbage();
            return Ok(());
        }
        if !snapshots.committed.contains_key(key) {
            return Err(Error::not_found(format!("snapshot {key}: not found")));
        }
        if snapshots.has_children(key) {
            return Err(Error::precondition(format!("cannot remove snapshot {key} with child: failed precondition")));
        }
        snapshots.committed.remove(key);
        state.collect_garbage();
        Ok(())
    }

    pub(super) fn do_snapshots_usage(&self, snapshotter: &str) -> BTreeMap<String, SnapshotUsage> {
        self.raw_state().snapshotters.get(snapshotter).map_or_else(BTreeMap::new, |snapshots| {
            let committed = snapshots
                .committed
                .iter()
                .map(|(chain_id, (_, size))| (chain_id.clone(), SnapshotUsage { size_bytes: *size, inodes: 1 }));
            let active = snapshots.active.keys().map(|key| {
                let usage = snapshots.written.get(key).cloned();
                (key.clone(), usage.unwrap_or(SnapshotUsage { size_bytes: ACTIVE_SNAPSHOT_BYTES, inodes: 1 }))
            });
            committed.chain(active).collect()
        })
    }
}
