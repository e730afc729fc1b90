//! A 1:1 name ↔ key registrar. It is the only guard against two objects with one CRI name:
//! containerd itself accepts them because their ids differ.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

struct Maps<K> {
    /// Shared with the snapshots that read it, and copied on the next change after one did.
    key_by_name: Arc<BTreeMap<String, K>>,
    name_by_key: BTreeMap<K, String>,
}

/// Names → keys of one kind (`K`: a sandbox's or a container's id).
pub struct Registrar<K> {
    maps: Mutex<Maps<K>>,
}

impl<K: Ord + Clone + Borrow<str>> Registrar<K> {
    pub fn new() -> Self {
        Registrar { maps: Mutex::new(Maps { key_by_name: Arc::default(), name_by_key: BTreeMap::new() }) }
    }

    /// Reserves `name` for `key`. Idempotent for the same pair; AlreadyExists if either side is
    /// held by another pair.
    pub fn reserve(&self, name: &str, key: &K) -> Result<()> {
        let key_text: &str = key.borrow();
        if name.is_empty() || key_text.is_empty() {
            return Err(Error::invalid("name and key must not be empty"));
        }
        let mut maps = self.maps.lock().unwrap();
        match (maps.key_by_name.get(name), maps.name_by_key.get::<str>(key_text)) {
            (Some(held_key), _) if held_key == key => return Ok(()),
            (Some(held_key), _) => {
                return Err(Error::already_exists(format!(
                    "name {} is reserved for {:?}",
                    crate::error::quoted(name),
                    Borrow::<str>::borrow(held_key)
                )));
            }
            (None, Some(held_name)) => {
                return Err(Error::already_exists(format!(
                    "key {key_text:?} is reserved by {}",
                    crate::error::quoted(held_name)
                )));
            }
            (None, None) => {}
        }
        Arc::make_mut(&mut maps.key_by_name).insert(name.to_string(), key.clone());
        maps.name_by_key.insert(key.clone(), name.to_string());
        assert_eq!(maps.key_by_name.len(), maps.name_by_key.len());
        Ok(())
    }

    pub fn release_by_key(&self, key: &K) {
        let mut maps = self.maps.lock().unwrap();
        if let Some(name) = maps.name_by_key.remove::<str>(key.borrow()) {
            Arc::make_mut(&mut maps.key_by_name).remove(&name);
        }
    }

    /// Every name and its key: the registrar's own map, shared (a reader copies nothing; the
    /// next change copies it once).
    pub fn shared_entries(&self) -> Arc<BTreeMap<String, K>> {
        self.maps.lock().unwrap().key_by_name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SandboxId;

    #[test]
    fn reserve_is_idempotent_and_exclusive() {
        let (id1, id2) = (SandboxId::from("id1"), SandboxId::from("id2"));
        let registrar = Registrar::new();
        registrar.reserve("pod", &id1).unwrap();
        registrar.reserve("pod", &id1).unwrap();
        let error = registrar.reserve("pod", &id2).unwrap_err();
        assert!(error.message.contains("is reserved for \"id1\""), "{error}");
        assert!(registrar.reserve("other", &id1).is_err());
        registrar.release_by_key(&id1);
        registrar.reserve("pod", &id2).unwrap();
        registrar.release_by_key(&id2);
        assert!(registrar.shared_entries().is_empty());
    }

    #[test]
    fn a_read_of_the_names_keeps_what_it_read() {
        let (id1, id2) = (SandboxId::from("id1"), SandboxId::from("id2"));
        let registrar = Registrar::new();
        registrar.reserve("pod", &id1).unwrap();
        let before = registrar.shared_entries();
        assert!(Arc::ptr_eq(&before, &registrar.shared_entries()), "an unchanged map is shared");
        registrar.release_by_key(&id1);
        registrar.reserve("other", &id2).unwrap();
        assert_eq!(before.len(), 1, "a reader's map does not change under it");
        assert_eq!(before["pod"], id1);
        let after = registrar.shared_entries();
        assert_eq!((after.len(), &after["other"]), (1, &id2));
    }
}
