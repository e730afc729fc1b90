//! The model oracle: a sequential model of CRI semantics, fed only with acknowledged RPCs. After
//! every step the real state must agree with what was acknowledged — across crashes too, since
//! a crash may lose nothing that was acknowledged.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crid::inspect::StateSnapshot;
use crid::{ContainerState, SandboxState};

#[derive(Clone, Debug, Default)]
struct SandboxModel {
    /// A RemovePodSandbox was sent: from then on the sandbox (and its containers) may be gone,
    /// even if the reply never came.
    remove_issued: bool,
    stopped: bool,
    removed: bool,
}

#[derive(Clone, Debug, Default)]
struct ContainerModel {
    sandbox_id: String,
    remove_issued: bool,
    started: bool,
    stopped: bool,
    removed: bool,
}

#[derive(Default)]
pub struct Oracle {
    sandboxes: Mutex<BTreeMap<String, SandboxModel>>,
    containers: Mutex<BTreeMap<String, ContainerModel>>,
    removed_containers: Mutex<std::collections::BTreeSet<String>>,
    /// normalized ref → image id, for refs never removed.
    images: Mutex<BTreeMap<String, Option<String>>>,
    /// Bumped by every record of an acknowledged call: the safety checks skip a world that
    /// has not changed since they last ran, and the acknowledged history is part of it.
    changes: AtomicU64,
}

/// A disagreement: (object, what was expected, what was found).
pub type Mismatch = (String, String);

impl Oracle {
    pub fn ran_sandbox(&self, id: &str) {
        self.changed();
        self.sandboxes.lock().unwrap().entry(id.to_string()).or_default();
    }
    pub fn stopped_sandbox(&self, id: &str) {
        self.changed();
        if let Some(model) = self.sandboxes.lock().unwrap().get_mut(id) {
            model.stopped = true;
        }
        // Stop acts on started containers only; a CREATED one stays CREATED.
        for model in self.containers.lock().unwrap().values_mut().filter(|c| c.sandbox_id == id) {
            if model.started {
                model.stopped = true;
            }
        }
    }
    pub fn removing_sandbox(&self, id: &str) {
        self.changed();
        self.sandboxes.lock().unwrap().entry(id.to_string()).or_default().remove_issued = true;
    }
    pub fn removing_container(&self, id: &str) {
        self.changed();
        if let Some(model) = self.containers.lock().unwrap().get_mut(id) {
            model.remove_issued = true;
        }
    }
    pub fn removed_sandbox(&self, id: &str) {
        self.changed();
        if let Some(model) = self.sandboxes.lock().unwrap().get_mut(id) {
            model.removed = true;
            model.stopped = true;
        }
        for model in self.containers.lock().unwrap().values_mut().filter(|c| c.sandbox_id == id) {
            model.removed = true;
        }
    }
    pub fn created_container(&self, id: &str, sandbox_id: &str) {
        self.changed();
        self.containers
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_insert_with(|| ContainerModel { sandbox_id: sandbox_id.to_string(), ..Default::default() });
    }
    pub fn started_container(&self, id: &str) {
        self.changed();
        if let Some(model) = self.containers.lock().unwrap().get_mut(id) {
            model.started = true;
        }
    }
    pub fn stopped_container(&self, id: &str) {
        self.changed();
        // A Stop of a container whose start was not acknowledged promises nothing: the start
        // may still be running.
        if let Some(model) = self.containers.lock().unwrap().get_mut(id).filter(|m| m.started) {
            model.stopped = true;
        }
    }
    pub fn removed_container(&self, id: &str) {
        self.changed();
        if let Some(model) = self.containers.lock().unwrap().get_mut(id) {
            model.removed = true;
        }
    }
    pub fn pulled_image(&self, reference: &str, id: &str) {
        self.changed();
        let mut images = self.images.lock().unwrap();
        // A ref that was ever removed is no longer tracked: a concurrent pull may race it.
        if !matches!(images.get(reference), Some(None)) {
            images.insert(reference.to_string(), Some(id.to_string()));
        }
    }
    pub fn removing_image(&self, reference: &str) {
        self.changed();
        self.images.lock().unwrap().insert(reference.to_string(), None);
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// How many records of acknowledged calls the history has had: equal counts, equal history.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Compares the service's state with the acknowledged history.
    pub fn check(&self, snapshot: &StateSnapshot) -> Vec<Mismatch> {
        let mut mismatches = vec![];
        // The snapshot lists objects in id order: found by a binary search, with no map built
        // for a check that runs after every change.
        let sandbox_state = |id: &str| {
            let at = snapshot.sandboxes.binary_search_by(|s| s.id().cmp(id)).ok()?;
            Some(snapshot.sandboxes[at].state)
        };
        let sandbox_models = self.sandboxes.lock().unwrap();
        for (id, model) in sandbox_models.iter() {
            match (sandbox_state(id).as_ref(), model.removed) {
                (Some(_), true) => {
                    mismatches.push((format!("sandbox {id}"), "removal was acknowledged but it is still listed".into()))
                }
                (None, false) if !model.remove_issued => {
                    mismatches.push((format!("sandbox {id}"), "RunPodSandbox was acknowledged but it is gone".into()))
                }
                (Some(SandboxState::Ready), false) if model.stopped => {
                    mismatches.push((format!("sandbox {id}"), "StopPodSandbox was acknowledged but it is READY".into()))
                }
                _ => {}
            }
        }
        // Live models must be listed; removed ones must not be. Removed models are kept only as
        // ids, so a check costs O(live objects + listed objects), not O(history).
        let container_state = |id: &str| {
            let at = snapshot.containers.binary_search_by(|c| c.id().cmp(id)).ok()?;
            Some(snapshot.containers[at].state)
        };
        let sandbox_removing: std::collections::BTreeSet<&str> =
            sandbox_models.iter().filter(|(_, m)| m.remove_issued).map(|(id, _)| id.as_str()).collect();
        let mut models = self.containers.lock().unwrap();
        let mut removed = self.removed_containers.lock().unwrap();
        let mut forget = vec![];
        for (id, model) in models.iter() {
            let Some(state) = container_state(id) else {
                if model.removed || model.remove_issued || sandbox_removing.contains(model.sandbox_id.as_str()) {
                    forget.push(id.clone());
                } else {
                    mismatches
                        .push((format!("container {id}"), "CreateContainer was acknowledged but it is gone".into()));
                }
                continue;
            };
            if model.removed {
                mismatches.push((
                    format!("container {id}"),
                    "RemoveContainer was acknowledged but it is still listed".into(),
                ));
            } else if model.stopped && state != ContainerState::Exited {
                mismatches
                    .push((format!("container {id}"), format!("StopContainer was acknowledged but it is {state:?}")));
            } else if model.started && state == ContainerState::Created {
                mismatches
                    .push((format!("container {id}"), "StartContainer was acknowledged but it is CREATED".into()));
            }
        }
        // A container that is gone after its removal was issued stays gone: remember only that.
        for id in forget {
            models.remove(&id);
            removed.insert(id);
        }
        for container in &snapshot.containers {
            if removed.contains(container.id()) {
                mismatches.push((format!("container {}", container.id()), "it was removed but is listed again".into()));
            }
        }
        // A restart whose image resync failed (or an image update that failed) starts serving
        // without the images it could not read and retries them in the background: until then
        // a pulled image may be missing, never another one in its place.
        let images_pending = snapshot.image_work_pending > 0;
        for (reference, id) in self.images.lock().unwrap().iter() {
            if let Some(id) = id
                && snapshot.image_refs.get(reference) != Some(id)
                && (!images_pending || snapshot.image_refs.contains_key(reference))
            {
                mismatches.push((
                    format!("image {reference}"),
                    format!("PullImage returned {id} but the store has {:?}", snapshot.image_refs.get(reference)),
                ));
            }
        }
        mismatches
    }
}
