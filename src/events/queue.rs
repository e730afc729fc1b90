//! The backoff queue: work that failed once, replayed in order per id with a growing delay.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{BACKOFF_INITIAL, BACKOFF_MAX, PendingEvent};

struct BackoffEntry {
    events: VecDeque<PendingEvent>,
    expire_at_ns: i64,
    duration: Duration,
}

/// The backoff queue: id → events replayed in order once the entry expires. Bounded by
/// `max_entries` ids; a failure for a new id beyond that is dropped and counted, and the
/// reconciler repairs that object later from containerd's task state.
pub struct EventMonitor {
    backoff: Mutex<BTreeMap<String, BackoffEntry>>,
    max_entries: usize,
    pub backoff_dropped_total: AtomicU64,
    /// Ids whose exit a monitor has received and is handling, with how many monitors do: the
    /// reconciler leaves them alone (their task may already be stopped or deleted, and the
    /// container still RUNNING, for the length of one exit handling).
    exits_in_hand: Mutex<BTreeMap<String, usize>>,
    /// Exits the reconciler recorded (no monitor had seen them).
    pub reconciled_exits_total: AtomicU64,
}

/// An exit a monitor is handling, until dropped.
pub struct ExitInHand<'a> {
    monitor: &'a EventMonitor,
    id: String,
}

impl Drop for ExitInHand<'_> {
    fn drop(&mut self) {
        let mut in_hand = self.monitor.exits_in_hand.lock().unwrap();
        if let Some(count) = in_hand.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                in_hand.remove(&self.id);
            }
        }
    }
}

impl EventMonitor {
    pub fn new(max_entries: usize) -> Self {
        assert!(max_entries > 0);
        EventMonitor {
            backoff: Mutex::new(BTreeMap::new()),
            max_entries,
            backoff_dropped_total: AtomicU64::new(0),
            exits_in_hand: Mutex::new(BTreeMap::new()),
            reconciled_exits_total: AtomicU64::new(0),
        }
    }

    /// Marks the id's exit as being handled by a monitor until the guard is dropped.
    pub(super) fn hold_exit(&self, id: &str) -> ExitInHand<'_> {
        *self.exits_in_hand.lock().unwrap().entry(id.to_string()).or_default() += 1;
        ExitInHand { monitor: self, id: id.to_string() }
    }

    pub(super) fn is_exit_in_hand(&self, id: &str) -> bool {
        self.exits_in_hand.lock().unwrap().contains_key(id)
    }

    pub fn is_in_backoff(&self, id: &str) -> bool {
        self.backoff.lock().unwrap().contains_key(id)
    }

    /// Ids with an exit in hand or work in the backoff queue: what the service has received and
    /// not yet finished handling (for the simulator's checks, through `inspect`).
    pub fn pending_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.exits_in_hand.lock().unwrap().keys().cloned().collect();
        ids.extend(self.backoff.lock().unwrap().keys().cloned());
        ids.sort();
        ids.dedup();
        ids
    }

    pub fn backoff_len(&self) -> usize {
        self.backoff.lock().unwrap().len()
    }

    /// Appends to the id's queue (keeping per-id order) or creates an entry due in 1 s.
    pub(crate) fn push(&self, id: &str, event: PendingEvent, now_ns: i64) {
        let mut backoff = self.backoff.lock().unwrap();
        if let Some(entry) = backoff.get_mut(id) {
            entry.events.push_back(event);
            return;
        }
        if backoff.len() >= self.max_entries {
            cov_mark::hit!(backoff_queue_full_event_dropped);
            self.backoff_dropped_total.fetch_add(1, Ordering::Relaxed);
            tracing::error!(id, ?event, "backoff queue full: event dropped; the reconciler will repair the object");
            return;
        }
        backoff.insert(
            id.to_string(),
            BackoffEntry {
                events: VecDeque::from([event]),
                expire_at_ns: now_ns + BACKOFF_INITIAL.as_nanos() as i64,
                duration: BACKOFF_INITIAL,
            },
        );
    }

    /// Removes and returns every expired entry, in id order.
    pub(super) fn take_expired(&self, now_ns: i64) -> Vec<(String, VecDeque<PendingEvent>, Duration)> {
        let mut backoff = self.backoff.lock().unwrap();
        let expired: Vec<String> =
            backoff.iter().filter(|(_, e)| e.expire_at_ns <= now_ns).map(|(id, _)| id.clone()).collect();
        expired
            .into_iter()
            .map(|id| {
                let entry = backoff.remove(&id).expect("listed above");
                (id, entry.events, entry.duration)
            })
            .collect()
    }

    /// Puts the unprocessed rest back, due after twice the previous wait (capped).
    pub(super) fn requeue(&self, id: String, mut events: VecDeque<PendingEvent>, previous: Duration, now_ns: i64) {
        let duration = crate::events::backoff::after(previous, BACKOFF_MAX);
        let mut backoff = self.backoff.lock().unwrap();
        // Events that arrived for this id while it was being replayed go after the rest.
        if let Some(newer) = backoff.remove(&id) {
            events.extend(newer.events);
        }
        backoff.insert(id, BackoffEntry { events, expire_at_ns: now_ns + duration.as_nanos() as i64, duration });
    }
}

#[cfg(test)]
mod tests {
    use super::super::TaskKind;
    use super::*;
    use crate::ports::ExitStatus;

    #[test]
    fn backoff_doubles_caps_and_keeps_order() {
        let monitor = EventMonitor::new(2);
        monitor.push("a", PendingEvent::Oom, 0);
        monitor.push("a", PendingEvent::Exit { kind: TaskKind::Container, exit: ExitStatus::new(1, 5) }, 0);
        assert!(monitor.take_expired(999_999_999).is_empty());
        let mut expired = monitor.take_expired(1_000_000_000);
        assert_eq!(expired.len(), 1);
        let (id, events, duration) = expired.pop().unwrap();
        assert_eq!(events.front(), Some(&PendingEvent::Oom));
        monitor.requeue(id, events, duration, 0);
        assert!(monitor.take_expired(1_999_999_999).is_empty());
        let (_, _, duration) = monitor.take_expired(2_000_000_000).pop().unwrap();
        assert_eq!(duration, Duration::from_secs(2));
        monitor.requeue("a".into(), VecDeque::from([PendingEvent::Oom]), BACKOFF_MAX, 0);
        let (_, _, duration) = monitor.take_expired(i64::MAX).pop().unwrap();
        assert_eq!(duration, BACKOFF_MAX);
    }

    #[test]
    fn backoff_is_bounded_and_counts_drops() {
        cov_mark::check!(backoff_queue_full_event_dropped);
        let monitor = EventMonitor::new(1);
        monitor.push("a", PendingEvent::Oom, 0);
        monitor.push("b", PendingEvent::Oom, 0);
        assert_eq!(monitor.backoff_len(), 1);
        assert_eq!(monitor.backoff_dropped_total.load(Ordering::Relaxed), 1);
        // Same id still appends: per-id order matters more than the bound.
        monitor.push("a", PendingEvent::Oom, 0);
        assert_eq!(monitor.backoff_dropped_total.load(Ordering::Relaxed), 1);
    }
}
