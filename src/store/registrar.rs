//! A 1:1 name ↔ key registrar. It is the only guard against two objects with one CRI name:
//! containerd itself accepts them because their ids differ.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::error::{Error, Result};

#[derive(Default)]
struct Maps {
    key_by_name: BTreeMap<String, String>,
    name_by_key: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct Registrar {
    maps: Mutex<Maps>,
}

impl Registrar {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reserves `name` for `key`. Idempotent for the same pair; AlreadyExists if either side is
    /// held by another pair.
    pub fn reserve(&self, name: &str, key: &str) -> Result<()> {
        if name.is_empty() || key.is_empty() {
            return Err(Error::invalid("name and key must not be empty"));
        }
        let mut maps = self.maps.lock().unwrap();
        match (maps.key_by_name.get(name), maps.name_by_key.get(key)) {
            (Some(held_key), _) if held_key == key => return Ok(()),
            (Some(held_key), _) => {
                return Err(Error::already_exists(format!("name {name:?} is reserved for {held_key:?}")));
            }
            (None, Some(held_name)) => {
                return Err(Error::already_exists(format!("key {key:?} is reserved by {held_name:?}")));
            }
            (None, None) => {}
        }
        maps.key_by_name.insert(name.to_string(), key.to_string());
        maps.name_by_key.insert(key.to_string(), name.to_string());
        assert_eq!(maps.key_by_name.len(), maps.name_by_key.len());
        Ok(())
    }

    pub fn release_by_key(&self, key: &str) {
        let mut maps = self.maps.lock().unwrap();
        if let Some(name) = maps.name_by_key.remove(key) {
            maps.key_by_name.remove(&name);
        }
    }

    /// Every (name, key) pair, sorted by name.
    pub fn entries(&self) -> Vec<(String, String)> {
        let maps = self.maps.lock().unwrap();
        maps.key_by_name.iter().map(|(n, k)| (n.clone(), k.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_idempotent_and_exclusive() {
        let registrar = Registrar::new();
        registrar.reserve("pod", "id1").unwrap();
        registrar.reserve("pod", "id1").unwrap();
        let error = registrar.reserve("pod", "id2").unwrap_err();
        assert!(error.message.contains("is reserved for \"id1\""), "{error}");
        assert!(registrar.reserve("other", "id1").is_err());
        registrar.release_by_key("id1");
        registrar.reserve("pod", "id2").unwrap();
        registrar.release_by_key("id2");
        assert!(registrar.entries().is_empty());
    }
}
