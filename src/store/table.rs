//! An id → object table with a truncated-id index: any unique prefix of an id resolves. A table
//! may also index its objects by a group (containers by their pod), so that one group's few
//! objects are found without looking at every other.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result, quoted};

struct Objects<K, T, G> {
    by_id: BTreeMap<K, Arc<T>>,
    /// Group → its objects by id; kept in step with `by_id` under the same lock. A group with
    /// no objects left has no entry, so the map never outgrows the table.
    by_group: BTreeMap<G, BTreeMap<K, Arc<T>>>,
}

/// Keyed by a typed id (`K`); only a lookup by what a client sent (a full id or a prefix) takes
/// a string. `G` is the group objects are indexed by, `()` for a table without one.
pub struct Table<K, T, G = ()> {
    kind: &'static str,
    objects: Mutex<Objects<K, T, G>>,
    /// The group of an object, fixed for its life in the table; None for a table without groups.
    group_of: Option<fn(&T) -> &G>,
}

impl<K: Ord + Clone + Borrow<str>, T> Table<K, T> {
    pub fn new(kind: &'static str) -> Self {
        Table {
            kind,
            objects: Mutex::new(Objects { by_id: BTreeMap::new(), by_group: BTreeMap::new() }),
            group_of: None,
        }
    }
}

impl<K: Ord + Clone + Borrow<str>, T, G: Ord + Clone> Table<K, T, G> {
    /// A table that also finds objects by group: `group_of` must give the same group for an
    /// object for as long as it is in the table (it reads immutable fields).
    pub fn grouped(kind: &'static str, group_of: fn(&T) -> &G) -> Self {
        Table {
            kind,
            objects: Mutex::new(Objects { by_id: BTreeMap::new(), by_group: BTreeMap::new() }),
            group_of: Some(group_of),
        }
    }

    /// AlreadyExists if the id is taken.
    pub fn add(&self, id: &K, object: Arc<T>) -> Result<()> {
        let text: &str = id.borrow();
        assert!(!text.is_empty());
        let mut objects = self.objects.lock().unwrap();
        if objects.by_id.contains_key(text) {
            return Err(Error::already_exists(format!("{} {text:?} already exists", self.kind)));
        }
        if let Some(group_of) = self.group_of {
            let group = group_of(&object).clone();
            objects.by_group.entry(group).or_default().insert(id.clone(), object.clone());
        }
        objects.by_id.insert(id.clone(), object);
        Ok(())
    }

    /// Resolves a full id or a unique prefix of one.
    pub fn get(&self, id_or_prefix: &str) -> Result<Arc<T>> {
        if id_or_prefix.is_empty() {
            return Err(Error::invalid(format!("{} id is empty", self.kind)));
        }
        let objects = self.objects.lock().unwrap();
        if let Some(object) = objects.by_id.get(id_or_prefix) {
            return Ok(object.clone());
        }
        let mut matches = objects
            .by_id
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
        self.objects.lock().unwrap().by_id.contains_key::<str>(id.borrow())
    }

    pub fn remove(&self, id: &K) -> Option<Arc<T>> {
        let mut objects = self.objects.lock().unwrap();
        let removed = objects.by_id.remove::<str>(id.borrow())?;
        if let Some(group_of) = self.group_of {
            let group = group_of(&removed);
            let members = objects.by_group.get_mut(group).expect("an object's group is indexed");
            members.remove::<str>(id.borrow()).expect("an object is indexed in its group");
            if members.is_empty() {
                objects.by_group.remove(group);
            }
        }
        Some(removed)
    }

    /// All objects, in id order.
    pub fn list(&self) -> Vec<Arc<T>> {
        self.objects.lock().unwrap().by_id.values().cloned().collect()
    }

    /// The objects of `group`, in id order, as `list` then a filter on the group would give them.
    /// Only for a table made with [`Table::grouped`].
    pub fn in_group(&self, group: &G) -> Vec<Arc<T>> {
        assert!(self.group_of.is_some(), "{} table has no groups", self.kind);
        let objects = self.objects.lock().unwrap();
        objects.by_group.get(group).map(|members| members.values().cloned().collect()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.objects.lock().unwrap().by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ContainerId, SandboxId};

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

    /// A container in a pod: its id and the pod's.
    #[derive(Debug)]
    struct Member {
        id: &'static str,
        pod: SandboxId,
    }

    fn pod_of(member: &Member) -> &SandboxId {
        &member.pod
    }

    fn ids(members: Vec<Arc<Member>>) -> Vec<&'static str> {
        members.iter().map(|m| m.id).collect()
    }

    #[test]
    fn groups_follow_adds_and_removes_in_id_order() {
        let table = Table::grouped("container", pod_of);
        let add =
            |id: &'static str, pod: &str| table.add(&ContainerId::from(id), Arc::new(Member { id, pod: pod.into() }));
        // Added out of id order, and interleaved with another pod's.
        add("c3", "p1").unwrap();
        add("b2", "p2").unwrap();
        add("a1", "p1").unwrap();
        add("b1", "p1").unwrap();
        let (p1, p2, p3) = (SandboxId::from("p1"), SandboxId::from("p2"), SandboxId::from("p3"));
        assert_eq!(ids(table.in_group(&p1)), ["a1", "b1", "c3"]);
        assert_eq!(ids(table.in_group(&p2)), ["b2"]);
        assert!(table.in_group(&p3).is_empty());
        // A refused duplicate id changes no group, even one naming another pod.
        assert!(add("a1", "p2").unwrap_err().is_already_exists());
        assert_eq!(ids(table.in_group(&p2)), ["b2"]);

        assert_eq!(table.remove(&ContainerId::from("b1")).map(|m| m.id), Some("b1"));
        assert_eq!(ids(table.in_group(&p1)), ["a1", "c3"]);
        assert!(table.remove(&ContainerId::from("b1")).is_none(), "removing twice is a no-op");
        table.remove(&ContainerId::from("b2"));
        assert!(table.in_group(&p2).is_empty());
        assert!(!table.objects.lock().unwrap().by_group.contains_key(&p2), "an emptied group is dropped");
        // The id index and its prefixes are untouched by the groups.
        assert_eq!(table.get("c").unwrap().id, "c3");
        assert_eq!(table.get("a").unwrap().id, "a1");
        assert!(table.get("b").unwrap_err().is_not_found());
        assert_eq!(table.len(), 2);
        // An id can come back in another pod.
        add("b1", "p2").unwrap();
        assert_eq!(ids(table.in_group(&p2)), ["b1"]);
        assert_eq!(ids(table.in_group(&p1)), ["a1", "c3"]);
    }
}
