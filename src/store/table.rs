//! An id → object table with a truncated-id index: any unique prefix of an id resolves.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result, quoted};

/// Keyed by a typed id (`K`); only a lookup by what a client sent (a full id or a prefix) takes
/// a string.
pub struct Table<K, T> {
    kind: &'static str,
    objects: Mutex<BTreeMap<K, Arc<T>>>,
}

impl<K: Ord + Clone + Borrow<str>, T> Table<K, T> {
    pub fn new(kind: &'static str) -> Self {
        Table { kind, objects: Mutex::new(BTreeMap::new()) }
    }

    /// AlreadyExists if the id is taken.
    pub fn add(&self, id: &K, object: Arc<T>) -> Result<()> {
        let text: &str = id.borrow();
        assert!(!text.is_empty());
        let mut objects = self.objects.lock().unwrap();
        if objects.contains_key(text) {
            return Err(Error::already_exists(format!("{} {text:?} already exists", self.kind)));
        }
        objects.insert(id.clone(), object);
        Ok(())
    }

    /// Resolves a full id or a unique prefix of one.
    pub fn get(&self, id_or_prefix: &str) -> Result<Arc<T>> {
        if id_or_prefix.is_empty() {
            return Err(Error::invalid(format!("{} id is empty", self.kind)));
        }
        let objects = self.objects.lock().unwrap();
        if let Some(object) = objects.get(id_or_prefix) {
            return Ok(object.clone());
        }
        let mut matches = objects
            .range::<str, _>((Bound::Included(id_or_prefix), Bound::Unbounded))
            .take_while(|(id, _)| (*id).borrow().starts_with(id_or_prefix));
        match (matches.next(), matches.next()) {
            (Some((_, object)), None) => Ok(object.clone()),
            (Some(_), Some(_)) => {
                Err(Error::invalid(format!("{} id prefix {} is ambiguous", self.kind, quoted(id_or_prefix))))
            }
            (None, _) => Err(Error::not_found(format!("{} {} not found", self.kind, quoted(id_or_prefix)))),
        }
    }

    pub fn contains(&self, id: &K) -> bool {
        self.objects.lock().unwrap().contains_key::<str>(id.borrow())
    }

    pub fn remove(&self, id: &K) -> Option<Arc<T>> {
        self.objects.lock().unwrap().remove::<str>(id.borrow())
    }

    /// All objects, in id order.
    pub fn list(&self) -> Vec<Arc<T>> {
        self.objects.lock().unwrap().values().cloned().collect()
    }

    /// The objects `keep` accepts, in id order: only those are cloned out, which matters when
    /// a pod's few containers are picked out of thousands on every exit event.
    pub fn filter(&self, keep: impl Fn(&T) -> bool) -> Vec<Arc<T>> {
        self.objects.lock().unwrap().values().filter(|object| keep(object)).cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.objects.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ContainerId;

    #[test]
    fn prefixes_resolve_when_unique() {
        let table = Table::new("container");
        table.add(&ContainerId::from("abc123"), Arc::new(1)).unwrap();
        table.add(&ContainerId::from("abd456"), Arc::new(2)).unwrap();
        assert_eq!(*table.get("abc").unwrap(), 1);
        assert_eq!(*table.get("abd456").unwrap(), 2);
        assert_eq!(table.get("ab").unwrap_err().kind, crate::error::ErrorKind::InvalidArgument);
        assert!(table.get("x").unwrap_err().is_not_found());
        assert!(table.add(&ContainerId::from("abc123"), Arc::new(3)).unwrap_err().is_already_exists());
        assert_eq!(table.list().iter().map(|v| **v).collect::<Vec<_>>(), vec![1, 2]);
    }
}
