//! A single-value channel, as tokio's `watch`, whose waiters wake in the order they began to wait.
//!
//! tokio's `watch` parks each waiting receiver on one of eight `Notify`s, picked by tokio's
//! thread-local generator, and a send wakes the eight in turn: the order in which the waiters of
//! one value run is drawn from that generator. Its seed is a hash by std's `RandomState` of a
//! process-wide counter; madsim fixes the hash keys per seed, but they move with every hash map
//! the thread created before the first wait, and the counter moves with every runtime the process
//! ran before. So same-instant waiters (joined pulls, joined operations, a stop's waiters, the
//! fake containerd's calls on a dropped connection) woke in an order that changed when a library
//! built one more hash map, and a seed run twice in one process ran differently. Here all waiters
//! park on one `Notify`, which wakes them in the order they registered.
//!
//! The API is the part of tokio's that crid uses, with the same meaning.

use std::ops::Deref;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

struct State<T> {
    value: T,
    /// Bumped by every send; a receiver has seen the value whose version it holds.
    version: u64,
    /// The sender is gone: no version will follow the current one.
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    changed: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap()
    }
}

/// The sending half; dropping it closes the channel.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// A receiving half; each clone keeps its own record of the last version it saw.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
    seen_version: u64,
}

/// A borrowed value; it holds the channel's lock, so never keep it across an await.
pub struct Ref<'a, T>(MutexGuard<'a, State<T>>);

impl<T> Deref for Ref<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0.value
    }
}

/// The sender was dropped before the awaited change came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the channel's sender is gone")
    }
}

impl std::error::Error for Closed {}

/// A channel holding `initial`; its receiver has seen it.
pub fn channel<T>(initial: T) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { value: initial, version: 0, closed: false }),
        changed: Notify::new(),
    });
    (Sender { shared: shared.clone() }, Receiver { shared, seen_version: 0 })
}

impl<T> Sender<T> {
    /// Stores `value` (whether or not anyone listens) and returns the previous one.
    pub fn send_replace(&self, value: T) -> T {
        let mut previous = None;
        self.send_modify(|current| previous = Some(std::mem::replace(current, value)));
        previous.expect("send_modify runs its closure")
    }

    /// Changes the value in place and wakes the receivers.
    pub fn send_modify(&self, modify: impl FnOnce(&mut T)) {
        {
            let mut state = self.shared.lock();
            modify(&mut state.value);
            state.version += 1;
        }
        self.shared.changed.notify_waiters();
    }

    pub fn borrow(&self) -> Ref<'_, T> {
        Ref(self.shared.lock())
    }

    /// A receiver that has seen the current value.
    pub fn subscribe(&self) -> Receiver<T> {
        let seen_version = self.shared.lock().version;
        Receiver { shared: self.shared.clone(), seen_version }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_waiters();
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver { shared: self.shared.clone(), seen_version: self.seen_version }
    }
}

impl<T> Receiver<T> {
    pub fn borrow(&self) -> Ref<'_, T> {
        Ref(self.shared.lock())
    }

    /// The current value, now marked as seen.
    pub fn borrow_and_update(&mut self) -> Ref<'_, T> {
        let state = self.shared.lock();
        self.seen_version = state.version;
        Ref(state)
    }

    /// Whether both receive from the same channel.
    pub fn same_channel(&self, other: &Receiver<T>) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Waits for a value this receiver has not seen, and marks it seen; Closed once the sender is
    /// gone and no such value remains.
    pub async fn changed(&mut self) -> Result<(), Closed> {
        loop {
            // Registered before the check: a send between the check and the await still wakes it.
            let mut notified = pin!(self.shared.changed.notified());
            notified.as_mut().enable();
            {
                let state = self.shared.lock();
                if state.version != self.seen_version {
                    self.seen_version = state.version;
                    return Ok(());
                }
                if state.closed {
                    return Err(Closed);
                }
            }
            notified.await;
        }
    }

    /// Waits until the value satisfies `ready` (the current one included) and returns it, marked
    /// seen; Closed once the sender is gone and the last value does not satisfy it.
    pub async fn wait_for(&mut self, mut ready: impl FnMut(&T) -> bool) -> Result<Ref<'_, T>, Closed> {
        loop {
            let mut notified = pin!(self.shared.changed.notified());
            notified.as_mut().enable();
            {
                let state = self.shared.lock();
                self.seen_version = state.version;
                if ready(&state.value) {
                    return Ok(Ref(state));
                }
                if state.closed {
                    return Err(Closed);
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    #[tokio::test]
    async fn waiters_wake_in_the_order_they_began_to_wait() {
        let (sender, receiver) = channel(0u32);
        let woke = Arc::new(StdMutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for index in 0..20 {
            let mut receiver = receiver.clone();
            let woke = woke.clone();
            waiters.push(tokio::spawn(async move {
                receiver.wait_for(|v| *v == 1).await.map(|_| ()).unwrap();
                woke.lock().unwrap().push(index);
            }));
            // Let this waiter register before the next one is spawned.
            tokio::task::yield_now().await;
        }
        sender.send_replace(1);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(*woke.lock().unwrap(), (0..20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn changed_sees_each_new_version_once_and_closed_after_the_sender() {
        let (sender, mut receiver) = channel(0u32);
        sender.send_modify(|v| *v += 1);
        assert_eq!(receiver.changed().await, Ok(()));
        assert_eq!(*receiver.borrow(), 1);
        let mut late = sender.subscribe();
        sender.send_replace(2);
        drop(sender);
        // The last send is still delivered, then the channel reports closed.
        assert_eq!(late.changed().await, Ok(()));
        assert_eq!(late.changed().await, Err(Closed));
        assert_eq!(receiver.changed().await, Ok(()));
        assert_eq!(receiver.changed().await, Err(Closed));
    }

    #[tokio::test]
    async fn wait_for_returns_a_ready_value_at_once_and_closed_when_it_never_comes() {
        let (sender, mut receiver) = channel(Some(3u32));
        assert_eq!(receiver.wait_for(Option::is_some).await.map(|v| *v), Ok(Some(3)));
        let (sender_none, mut never) = channel(None::<u32>);
        let other = sender.subscribe();
        assert!(never.same_channel(&never.clone()));
        assert!(!other.same_channel(&sender_none.subscribe()));
        drop(sender_none);
        assert_eq!(never.wait_for(Option::is_some).await.map(|v| *v), Err(Closed));
    }
}
