//! Image records, leases and the garbage collection that image and lease deletes trigger.

use std::collections::{BTreeMap, BTreeSet};

use crid::error::{Error, Result};
use crid::ports::containerd::*;
use crid::ports::registry::ResolvedImage;

use super::{FakeContainerd, State, chain_ids};

impl State {
    /// What a write under a lease that does not exist gets, as from containerd: a pull must
    /// write under the lease it created.
    pub(super) fn check_lease(&self, lease: &str) -> Result<()> {
        if self.leases.contains(lease) { Ok(()) } else { Err(Error::not_found(format!("lease {lease}: not found"))) }
    }

    /// Drops content and committed snapshots that no image and no container rootfs reaches, as
    /// containerd's GC does. Any lease pauses it: a pull in progress holds its blobs that way.
    pub(super) fn collect_garbage(&mut self) {
        if !self.gc_enabled || !self.leases.is_empty() {
            return;
        }
        let images: Vec<&ResolvedImage> =
            self.images.values().filter_map(|record| self.manifests.get(&record.target.digest)).collect();
        let mut live_content: BTreeSet<String> = BTreeSet::new();
        let mut image_chains: BTreeSet<String> = BTreeSet::new();
        for image in &images {
            live_content.insert(image.manifest.digest.clone());
            live_content.insert(image.config.digest.clone());
            live_content.extend(image.layers.iter().map(|layer| layer.digest.clone()));
            image_chains.extend(chain_ids(&image.diff_ids));
        }
        self.content.retain(|digest, _| live_content.contains(digest));
        for snapshots in self.snapshotters.values_mut() {
            let mut live: BTreeSet<String> =
                image_chains.iter().filter(|chain| snapshots.committed.contains_key(*chain)).cloned().collect();
            let mut pending: Vec<String> = live.iter().cloned().chain(snapshots.active.values().cloned()).collect();
            while let Some(chain) = pending.pop() {
                if let Some((parent, _)) = snapshots.committed.get(&chain) {
                    live.insert(chain);
                    if !parent.is_empty() && !live.contains(parent) {
                        pending.push(parent.clone());
                    }
                }
            }
            snapshots.committed.retain(|chain, _| live.contains(chain));
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

    pub fn leases(&self) -> BTreeSet<String> {
        self.raw_state().leases.clone()
    }

    pub(super) fn do_create_image(&self, record: &ImageRecord) -> Result<()> {
        let mut state = self.state();
        if state.images.contains_key(&record.name) {
            Err(Error::already_exists(format!("image \"{}\": already exists", record.name)))
        } else {
            state.images.insert(record.name.clone(), record.clone());
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
            size_bytes: image.layers.iter().map(|layer| layer.size_bytes).sum(),
            image_config: image.image_config.clone(),
            complete,
        })
    }

    pub(super) fn do_create_lease(&self, id: &str) -> Result<()> {
        if self.raw_state().leases.insert(id.to_string()) {
            Ok(())
        } else {
            Err(Error::already_exists(format!("lease {id}: already exists")))
        }
    }

    pub(super) fn do_delete_lease(&self, id: &str) -> Result<()> {
        let mut state = self.raw_state();
        if state.leases.remove(id) {
            state.collect_garbage();
            Ok(())
        } else {
            Err(Error::not_found(format!("lease {id}: not found")))
        }
    }
}
