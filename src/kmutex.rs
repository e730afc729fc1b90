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

/// The keyed mutex on a multi-threaded runtime (madsim runs one thread, where a lookup and a
/// count update in two lock acquisitions can never interleave with a release).
#[cfg(all(test, not(madsim)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::KeyedMutex;

    const KEYS: usize = 3;

    /// Eight tasks on four threads take three keys in turn, and some give up waiting: never two
    /// holders of one key, and the table is empty once every guard and waiter is gone. A slot
    /// freed while a waiter still counts on it would hand a second mutex out for its key.
    #[test]
    fn one_holder_per_key_across_threads() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().unwrap();
        runtime.block_on(async {
            let locks = Arc::new(KeyedMutex::new());
            let holders: Arc<[AtomicU32; KEYS]> = Arc::new(Default::default());
            let mut tasks = vec![];
            for task in 0..8 {
                let (locks, holders) = (locks.clone(), holders.clone());
                tasks.push(tokio::spawn(async move {
                    for round in 0..3000 {
                        let key = (task + round) % KEYS;
                        let name = format!("blob://{key}");
                        if round % 5 == 0 {
                            // A waiter that gives up after one poll (a cancelled pull).
                            let mut waiting = Box::pin(locks.lock(&name));
                            let _ = futures::poll!(waiting.as_mut());
                            continue;
                        }
                        let _guard = locks.lock(&name).await;
                        let before = holders[key].fetch_add(1, Ordering::SeqCst);
                        assert_eq!(before, 0, "two holders of {name}");
                        tokio::task::yield_now().await;
                        holders[key].fetch_sub(1, Ordering::SeqCst);
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            assert!(locks.keys().is_empty(), "keys left: {:?}", locks.keys());
        });
    }
}
