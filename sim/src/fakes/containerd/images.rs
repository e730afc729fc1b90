//! Image records, leases and the garbage collection that image and lease deletes trigger.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crid::error::{Error, Result};
use crid::ports::containerd::*;

use crid::ports::Clock;

use super::{FakeContainerd, State, chain_ids};

/// A lease: what was written under it, held from GC until it is deleted or expires.
#[derive(Clone, Debug, Default)]
pub(super) struct Lease {
    pub(super) labels: BTreeMap<String, String>,
    pub(super) expires_at_ns: i64,
    pub(super) content: BTreeSet<String>,
    /// (snapshotter, key): committed chains and prepared rootfs snapshots.
    pub(super) snapshots: BTreeSet<(String, String)>,
}

/// What GC keeps: content and snapshots something references, and why not the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holdings {
    pub content: BTreeSet<String>,
    /// (snapshotter, key).
    pub snapshots: BTreeSet<(String, String)>,
}

impl State {
    /// What a write under a lease that does not exist (or expired) gets, as from containerd: a
    /// pull must write under the lease it created.
    pub(super) fn check_lease(&self, lease: &str) -> Result<()> {
        if self.leases.contains_key(lease) {
            Ok(())
        } else {
            Err(Error::not_found(format!("lease {lease}: not found")))
        }
    }

    /// The lease a write holds its result under, refused as `check_lease` refuses it.
    pub(super) fn lease_mut(&mut self, lease: &str) -> Result<&mut Lease> {
        self.check_lease(lease)?;
        Ok(self.leases.get_mut(lease).expect("checked above"))
    }

    /// Drops the leases whose expiry passed, and collects what they alone held.
    pub(super) fn expire_leases(&mut self, now_ns: i64) {
        let before = self.leases.len();
        self.leases.retain(|_, lease| lease.expires_at_ns > now_ns);
        if self.leases.len() != before {
            self.collect_garbage();
        }
    }

    /// What is referenced, directly or through a parent: content by image records (their
    /// manifest, config and layers) and leases; snapshots by images (their chains), container
    /// records (their rootfs) and leases, each with its parents.
    pub(super) fn referenced(&self, with_leases: bool) -> Holdings {
        let mut held = Holdings::default();
        let mut roots: BTreeSet<(String, String)> = BTreeSet::new();
        for record in self.images.values() {
            held.content.insert(record.target.digest.clone());
            if let Some(image) = self.manifests.get(&record.target.digest) {
                held.content.insert(image.config.digest.clone());
                held.content.extend(image.layers.iter().map(|layer| layer.digest.clone()));
                // The image's chain, in every snapshotter that has it (containerd's config
                // labels name the snapshotter it was unpacked into).
                for chain in chain_ids(&image.diff_ids) {
                    for name in self.snapshotters.keys() {
                        roots.insert((name.clone(), chain.clone()));
                    }
                }
            }
        }
        for record in self.containers.values().filter(|record| !record.snapshot_key.is_empty()) {
            roots.insert((record.snapshotter.clone(), record.snapshot_key.clone()));
        }
        if with_leases {
            for lease in self.leases.values() {
                held.content.extend(lease.content.iter().cloned());
                roots.extend(lease.snapshots.iter().cloned());
            }
        }
        let mut pending: Vec<(String, String)> = roots.into_iter().collect();
        while let Some((name, key)) = pending.pop() {
            let Some(snapshots) = self.snapshotters.get(&name) else { continue };
            let parent = match (snapshots.committed.get(&key), snapshots.active.get(&key)) {
                (Some((parent, _)), _) => parent.clone(),
                (None, Some(parent)) => parent.clone(),
                (None, None) => continue,
            };
            if held.snapshots.insert((name.clone(), key)) && !parent.is_empty() {
                pending.push((name, parent));
            }
        }
        held
    }

    /// Drops content and snapshots (committed and prepared) that nothing references, as
    /// containerd's GC does: image records, container records and leases hold them.
    pub(super) fn collect_garbage(&mut self) {
        if !self.gc_enabled {
            return;
        }
        let held = self.referenced(true);
        self.content.retain(|digest, _| held.content.contains(digest));
        for (name, snapshots) in self.snapshotters.iter_mut() {
            let live = |key: &String| held.snapshots.contains(&(name.clone(), key.clone()));
            snapshots.committed.retain(|chain, _| live(chain));
            snapshots.active.retain(|key, _| live(key));
            let active = snapshots.active.clone();
            snapshots.written.retain(|key, _| active.contains_key(key));
        }
    }
}

impl FakeContainerd {
    /// Garbage collection after image and lease deletes (on by default).
    pub fn set_gc_enabled(&self, enabled: bool) {
        self.raw_state().gc_enabled = enabled;
    }

    pub fn images(&self) -> BTreeMap<String, ImageRecord> {
        self.raw_state().images.clone()
    }

    /// The names of [`Self::images`], without copying their records.
    pub fn image_names(&self) -> Arc<BTreeSet<String>> {
        self.raw_state().image_names.clone()
    }

    /// The ids of the leases that exist (not expired).
    pub fn leases(&self) -> BTreeSet<String> {
        self.state().leases.keys().cloned().collect()
    }

    /// Whether garbage collection is on (it is unless a scenario never removes images).
    pub fn gc_enabled(&self) -> bool {
        self.raw_state().gc_enabled
    }

    /// Content and snapshots that exist but that no image record, container record or lease
    /// references (with `with_leases` false: that no record references) — what a GC would take.
    pub fn unreferenced(&self, with_leases: bool) -> Holdings {
        let state = self.state();
        let held = state.referenced(with_leases);
        let mut garbage = Holdings::default();
        garbage.content.extend(state.content.keys().filter(|digest| !held.content.contains(*digest)).cloned());
        for (name, snapshots) in &state.snapshotters {
            for key in snapshots.committed.keys().chain(snapshots.active.keys()) {
                let id = (name.clone(), key.clone());
                if !held.snapshots.contains(&id) {
                    garbage.snapshots.insert(id);
                }
            }
        }
        garbage
    }

    pub(super) fn do_create_image(&self, record: &ImageRecord) -> Result<()> {
        let mut state = self.state();
        if state.images.contains_key(&record.name) {
            Err(Error::already_exists(format!("image \"{}\": already exists", record.name)))
        } else {
            state.images.insert(record.name.clone(), record.clone());
            Arc::make_mut(&mut state.image_names).insert(record.name.clone());
            self.publish(&mut state, vec![Event::ImageCreate { name: record.name.clone() }]);
            Ok(())
        }
    }

    pub(super) fn do_update_image(&self, record: &ImageRecord) -> Result<()> {
        let mut state = self.state();
        match state.images.get_mut(&record.name) {
            Some(stored) => {
                *stored = record.clone();
                self.publish(&mut state, vec![Event::ImageUpdate { name: record.name.clone() }]);
                Ok(())
            }
            None => Err(Error::not_found(format!("image \"{}\": not found", record.name))),
        }
    }

    pub(super) fn do_get_image(&self, name: &str) -> Result<ImageRecord> {
        self.raw_state()
            .images
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("image \"{name}\": not found")))
    }

    pub(super) fn do_delete_image(&self, name: &str) -> Result<()> {
        let mut state = self.state();
        if state.images.remove(name).is_some() {
            Arc::make_mut(&mut state.image_names).remove(name);
            // GC runs at once whether or not the caller asked to wait for it.
            state.collect_garbage();
            self.publish(&mut state, vec![Event::ImageDelete { name: name.to_string() }]);
            Ok(())
        } else {
            Err(Error::not_found(format!("image \"{name}\": not found")))
        }
    }

    pub(super) fn do_image_content(&self, record: &ImageRecord) -> Result<ImageContent> {
        let state = self.raw_state();
        let image = state
            .manifests
            .get(&record.target.digest)
            .ok_or_else(|| Error::not_found(format!("content digest {}: not found", record.target.digest)))?;
        // The manifest itself is read through the registry's copy, so completeness is about
        // the blobs a pull must fetch: the config and the layers.
        let complete = state.content.contains_key(&image.config.digest)
            && image.layers.iter().all(|layer| state.content.contains_key(&layer.digest));
        Ok(ImageContent {
            config_digest: image.config.digest.clone(),
            chain_id: chain_ids(&image.diff_ids).pop().expect("images have at least one layer"),
            // As containerd counts it: the manifest, the config and the layers.
            size_bytes: record.target.size_bytes
                + image.config.size_bytes
                + image.layers.iter().map(|layer| layer.size_bytes).sum::<u64>(),
            image_config: image.image_config.clone(),
            complete,
        })
    }

    /// Content/Info, then for a blob it finds Leases/AddResource and Content/Info again, as the
    /// backend calls them, in one step: an absent blob is held by nothing (its fetch's commit
    /// holds it), one that exists is held by the lease. The state is read raw, as it always was
    /// for these checks: they settle no task and deliver no event.
    pub(super) fn do_content_exists(&self, digest: &str, lease: &str) -> Result<bool> {
        let mut state = self.raw_state();
        if !state.content.contains_key(digest) {
            return Ok(false);
        }
        state.lease_mut(lease)?.content.insert(digest.to_string());
        Ok(true)
    }

    /// Snapshots/Stat, then for a snapshot it finds Leases/AddResource and Snapshots/Stat again
    /// (see `do_content_exists`).
    pub(super) fn do_snapshot_exists(&self, snapshotter: &str, chain_id: &str, lease: &str) -> Result<bool> {
        let mut state = self.raw_state();
        if !state.committed(snapshotter, chain_id) {
            return Ok(false);
        }
        let held = (snapshotter.to_string(), chain_id.to_string());
        state.lease_mut(lease)?.snapshots.insert(held);
        Ok(true)
    }

    pub(super) fn do_create_lease(
        &self,
        id: &str,
        labels: &BTreeMap<String, String>,
        expire_after: std::time::Duration,
    ) -> Result<()> {
        let mut state = self.state();
        if state.leases.contains_key(id) {
            return Err(Error::already_exists(format!("lease {id}: already exists")));
        }
        let expires_at_ns =
            self.clock.now_ns().saturating_add(i64::try_from(expire_after.as_nanos()).unwrap_or(i64::MAX));
        let lease = Lease { labels: labels.clone(), expires_at_ns, ..Lease::default() };
        state.leases.insert(id.to_string(), lease);
        Ok(())
    }

    pub(super) fn do_list_leases(&self) -> Vec<LeaseRecord> {
        let state = self.state();
        state.leases.iter().map(|(id, lease)| LeaseRecord { id: id.clone(), labels: lease.labels.clone() }).collect()
    }

    pub(super) fn do_delete_lease(&self, id: &str) -> Result<()> {
        let mut state = self.state();
        if state.leases.remove(id).is_some() {
            state.collect_garbage();
            Ok(())
        } else {
            Err(Error::not_found(format!("lease {id}: not found")))
        }
    }
}
