//! A keyed mutex: one holder per key, entries freed when nobody holds or waits for them.
//! Waiting is cancellation-safe: a dropped waiter releases its reference.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

type Slot = (Arc<tokio::sync::Mutex<()>>, usize);

#[derive(Default)]
pub struct KeyedMutex {
    slots: Arc<Mutex<BTreeMap<String, Slot>>>,
}

/// Holds a key until dropped.
pub struct KeyGuard {
    // Field order matters: the lock is released before the reference is dropped.
    _lock: tokio::sync::OwnedMutexGuard<()>,
    _reference: Reference,
}

struct Reference {
    slots: Arc<Mutex<BTreeMap<String, Slot>>>,
    key: String,
}

impl Drop for Reference {
    fn drop(&mut self) {
        let mut slots = self.slots.lock().unwrap();
        let slot = slots.get_mut(&self.key).expect("a referenced key has a slot");
        assert!(slot.1 > 0);
        slot.1 -= 1;
        if slot.1 == 0 {
            slots.remove(&self.key);
        }
    }
}

impl KeyedMutex {
    pub fn new() -> Self {
        Self::default()
    }

    pub async fn lock(&self, key: &str) -> KeyGuard {
        let mutex = {
            let mut slots = self.slots.lock().unwrap();
            let slot = slots.entry(key.to_string()).or_insert_with(|| (Arc::new(tokio::sync::Mutex::new(())), 0));
            slot.1 += 1;
            slot.0.clone()
        };
        let reference = Reference { slots: self.slots.clone(), key: key.to_string() };
        let lock = mutex.lock_owned().await;
        KeyGuard { _lock: lock, _reference: reference }
    }

    /// Keys currently held or waited for (empty when no pull runs: SPEC §10 invariant 7).
    pub fn keys(&self) -> Vec<String> {
        self.slots.lock().unwrap().keys().cloned().collect()
    }
}
