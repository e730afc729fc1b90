//! Container records: metadata only (a container's process is its task).

use std::collections::BTreeMap;

use crid::error::{Error, Result};
use crid::ports::Clock;
use crid::ports::containerd::ContainerRecord;

use super::{FakeContainerd, container_not_found};

impl FakeContainerd {
    pub fn containers(&self) -> BTreeMap<String, ContainerRecord> {
        self.state().containers.clone()
    }

    /// One record: what [`Self::containers`] holds under `id`, without copying the others. It
    /// settles due exits as every other read does.
    pub fn container(&self, id: &str) -> Option<ContainerRecord> {
        self.state().containers.get(id).cloned()
    }

    pub(super) fn do_create_container(&self, record: ContainerRecord) -> Result<ContainerRecord> {
        let mut state = self.state();
        if state.containers.contains_key(&record.id) {
            Err(Error::already_exists(format!("container \"{}\": already exists", record.id)))
        } else {
            let record = ContainerRecord { created_at_ns: self.clock.now_ns(), ..record };
            state.containers.insert(record.id.clone(), record.clone());
            Ok(record)
        }
    }

    pub(super) fn do_get_container(&self, id: &str) -> Result<ContainerRecord> {
        self.state().containers.get(id).cloned().ok_or_else(|| container_not_found(id))
    }

    pub(super) fn do_list_containers(&self, labels: &BTreeMap<String, String>) -> Vec<ContainerRecord> {
        self.state()
            .containers
            .values()
            .filter(|record| labels.iter().all(|(key, value)| record.labels.get(key) == Some(value)))
            .cloned()
            .collect()
    }

    pub(super) fn do_update_container(&self, record: &ContainerRecord) -> Result<()> {
        match self.state().containers.get_mut(&record.id) {
            Some(stored) => {
                stored.labels = record.labels.clone();
                stored.extensions = record.extensions.clone();
                stored.spec = record.spec.clone();
                Ok(())
            }
            None => Err(container_not_found(&record.id)),
        }
    }

    pub(super) fn do_delete_container(&self, id: &str, cleanup_snapshot: bool) -> Result<()> {
        let mut state = self.state();
        if !state.containers.contains_key(id) {
            return Err(container_not_found(id));
        }
        // As containerd's client: a task, even a stopped one, still holds the container.
        if state.tasks.contains_key(id) {
            return Err(Error::precondition(format!("cannot delete running task {id}: failed precondition")));
        }
        let record = state.containers.remove(id).expect("checked above");
        // The exit its last task ended with was kept for the oracle until now: a container
        // whose record is deleted is on its way out of the CRI's store as well (which recovery
        // would not load it into), and the table grew with every container a run made.
        state.deleted_exits.remove(id);
        if cleanup_snapshot && !record.snapshot_key.is_empty() {
            state.snapshotter(&record.snapshotter).active.remove(&record.snapshot_key);
        }
        // What only this container's rootfs held (an image removed meanwhile) goes.
        state.collect_garbage();
        Ok(())
    }
}
