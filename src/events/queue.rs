//! The backoff queue: work that failed once, replayed in order per id with a growing delay.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{BACKOFF_INITIAL, BACKOFF_MAX, BackoffKey, PendingEvent};
use crate::error::Error;
use crate::ids::TaskId;

struct BackoffEntry {
    events: VecDeque<PendingEvent>,
    expire_at_ns: i64,
    duration: Duration,
    /// Why the last attempt at this id's work failed, for a caller that waits on the work and
    /// must tell a cause that will not pass by itself (a full disk) from a slow one.
    last_failure: Option<Error>,
    /// The backoff loop has taken the entry's events and is replaying them. The entry stays
    /// so that the id still counts as in backoff: a new event for it queues behind the replay
    /// instead of overtaking it, and the work counts as pending until the replay is done.
    replaying: bool,
}

/// The backoff queue: task → events replayed in order once the entry expires. Bounded by
/// `max_entries` ids; a failure for a new id beyond that is dropped and counted, and the
/// reconciler repairs that object later from containerd's task state.
pub struct EventMonitor {
    backoff: Mutex<BTreeMap<BackoffKey, BackoffEntry>>,
    max_entries: usize,
    pub backoff_dropped_total: AtomicU64,
    /// Ids whose exit a monitor has received and is handling, with how many monitors do: the
    /// reconciler leaves them alone (their task may already be stopped or deleted, and the
    /// container still RUNNING, for the length of one exit handling).
    exits_in_hand: Mutex<BTreeMap<TaskId, usize>>,
    /// Exits the reconciler recorded (no monitor had seen them).
    pub reconciled_exits_total: AtomicU64,
}

/// An exit a monitor is handling, until dropped.
pub struct ExitInHand<'a> {
    monitor: &'a EventMonitor,
    task: TaskId,
}

impl Drop for ExitInHand<'_> {
    fn drop(&mut self) {
        let mut in_hand = self.monitor.exits_in_hand.lock().unwrap();
        if let Some(count) = in_hand.get_mut(&self.task) {
            *count -= 1;
            if *count == 0 {
                in_hand.remove(&self.task);
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
    pub(super) fn hold_exit(&self, task: &TaskId) -> ExitInHand<'_> {
        *self.exits_in_hand.lock().unwrap().entry(task.clone()).or_default() += 1;
        ExitInHand { monitor: self, task: task.clone() }
    }

    pub(super) fn is_exit_in_hand(&self, task: &TaskId) -> bool {
        self.exits_in_hand.lock().unwrap().contains_key(task)
    }

    pub fn is_in_backoff(&self, task: &TaskId) -> bool {
        self.backoff.lock().unwrap().contains_key(&BackoffKey::from(task))
    }

    /// Image references (or a whole image resync) waiting for a retry: until they are done the
    /// image store may differ from containerd's list.
    pub fn image_work_pending(&self) -> usize {
        self.backoff.lock().unwrap().keys().filter(|key| key.is_image_work()).count()
    }

    /// Ids with an exit in hand or work in the backoff queue: what the service has received and
    /// not yet finished handling (for the simulator's checks, through `inspect`).
    pub fn pending_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.exits_in_hand.lock().unwrap().keys().map(|t| t.to_string()).collect();
        ids.extend(self.backoff.lock().unwrap().keys().map(|t| t.to_string()));
        ids.sort();
        ids.dedup();
        ids
    }

    /// Why the last attempt at the task's queued work failed, while it waits in the queue.
    pub fn last_failure(&self, task: &TaskId) -> Option<Error> {
        self.backoff.lock().unwrap().get(&BackoffKey::from(task)).and_then(|entry| entry.last_failure.clone())
    }

    pub fn backoff_len(&self) -> usize {
        self.backoff.lock().unwrap().len()
    }

    /// Appends to the id's queue (keeping per-id order) or creates an entry due in 1 s.
    pub(crate) fn push(&self, key: impl Into<BackoffKey>, event: PendingEvent, now_ns: i64) {
        let key = key.into();
        let mut backoff = self.backoff.lock().unwrap();
        if let Some(entry) = backoff.get_mut(&key) {
            entry.events.push_back(event);
            return;
        }
        if backoff.len() >= self.max_entries {
            cov_mark::hit!(backoff_queue_full_event_dropped);
            self.backoff_dropped_total.fetch_add(1, Ordering::Relaxed);
            tracing::error!(id = %key, ?event, "backoff queue full: event dropped; the reconciler will repair the object");
            return;
        }
        backoff.insert(
            key,
            BackoffEntry {
                events: VecDeque::from([event]),
                expire_at_ns: now_ns + BACKOFF_INITIAL.as_nanos() as i64,
                duration: BACKOFF_INITIAL,
                last_failure: None,
                replaying: false,
            },
        );
    }

    /// Queues work whose attempt just failed with `failure`, as `push` does, and keeps why.
    pub(crate) fn push_failed(&self, key: impl Into<BackoffKey>, event: PendingEvent, failure: Error, now_ns: i64) {
        let key = key.into();
        self.push(key.clone(), event, now_ns);
        if let Some(entry) = self.backoff.lock().unwrap().get_mut(&key) {
            entry.last_failure = Some(failure);
        }
    }

    /// Takes the events of every expired entry not already being replayed, in id order; each
    /// entry stays, marked as replaying, until `finish_replay`.
    pub(super) fn take_expired(&self, now_ns: i64) -> Vec<(BackoffKey, VecDeque<PendingEvent>, Duration)> {
        let mut backoff = self.backoff.lock().unwrap();
        backoff
            .iter_mut()
            .filter(|(_, entry)| !entry.replaying && entry.expire_at_ns <= now_ns)
            .map(|(key, entry)| {
                entry.replaying = true;
                (key.clone(), std::mem::take(&mut entry.events), entry.duration)
            })
            .collect()
    }

    /// Ends the replay of `key`'s events: `left` are those not done, after a failure (then
    /// retried after a doubled delay, before any event that came meanwhile), or none. An entry
    /// whose work is all done goes; events that came during a successful replay start afresh.
    pub(super) fn finish_replay(
        &self,
        key: impl Into<BackoffKey>,
        mut left: VecDeque<PendingEvent>,
        previous: Duration,
        now_ns: i64,
        failure: Option<Error>,
    ) {
        let key = key.into();
        let mut backoff = self.backoff.lock().unwrap();
        let newer = backoff.remove(&key);
        let mut last_failure = failure;
        let duration =
            if left.is_empty() { BACKOFF_INITIAL } else { crate::events::backoff::after(previous, BACKOFF_MAX) };
        if let Some(newer) = newer {
            left.extend(newer.events);
            last_failure = last_failure.or(newer.last_failure);
        }
        if left.is_empty() {
            return;
        }
        backoff.insert(
            key,
            BackoffEntry {
                events: left,
                expire_at_ns: now_ns + duration.as_nanos() as i64,
                duration,
                last_failure,
                replaying: false,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::ExitStatus;

    fn container(id: &str) -> TaskId {
        TaskId::Container(id.into())
    }

    #[test]
    fn backoff_doubles_caps_and_keeps_order() {
        let monitor = EventMonitor::new(2);
        monitor.push(container("a"), PendingEvent::Oom, 0);
        monitor.push(container("a"), PendingEvent::Exit(ExitStatus::new(1, 5)), 0);
        assert!(monitor.take_expired(999_999_999).is_empty());
        let mut expired = monitor.take_expired(1_000_000_000);
        assert_eq!(expired.len(), 1);
        let (id, events, duration) = expired.pop().unwrap();
        assert_eq!(events.front(), Some(&PendingEvent::Oom));
        // While replayed the id is still in backoff: a new event queues behind the replay.
        assert!(monitor.is_in_backoff(&container("a")));
        assert_eq!(monitor.backoff_len(), 1);
        assert!(monitor.take_expired(i64::MAX).is_empty());
        monitor.push(container("a"), PendingEvent::Exit(ExitStatus::new(2, 6)), 0);
        monitor.finish_replay(id, events, duration, 0, None);
        assert!(monitor.take_expired(1_999_999_999).is_empty());
        let (id, events, duration) = monitor.take_expired(2_000_000_000).pop().unwrap();
        assert_eq!(duration, Duration::from_secs(2));
        assert_eq!(events.len(), 3, "the failed replay's events, then the one that came meanwhile");
        assert_eq!(events.back(), Some(&PendingEvent::Exit(ExitStatus::new(2, 6))));
        monitor.finish_replay(id, VecDeque::from([PendingEvent::Oom]), BACKOFF_MAX, 0, None);
        let (id, _, duration) = monitor.take_expired(i64::MAX).pop().unwrap();
        assert_eq!(duration, BACKOFF_MAX);
        // All done: the entry goes.
        monitor.finish_replay(id, VecDeque::new(), duration, 0, None);
        assert_eq!(monitor.backoff_len(), 0);
        assert!(!monitor.is_in_backoff(&container("a")));
    }

    #[test]
    fn events_during_a_successful_replay_start_afresh() {
        let monitor = EventMonitor::new(2);
        monitor.push(container("a"), PendingEvent::Oom, 0);
        let (id, _, duration) = monitor.take_expired(i64::MAX).pop().unwrap();
        monitor.push(container("a"), PendingEvent::Exit(ExitStatus::new(1, 5)), 0);
        monitor.finish_replay(id, VecDeque::new(), duration, 10, None);
        let (_, events, duration) = monitor.take_expired(i64::MAX).pop().unwrap();
        assert_eq!(duration, BACKOFF_INITIAL);
        assert_eq!(events, VecDeque::from([PendingEvent::Exit(ExitStatus::new(1, 5))]));
    }

    #[test]
    fn backoff_is_bounded_and_counts_drops() {
        cov_mark::check!(backoff_queue_full_event_dropped);
        let monitor = EventMonitor::new(1);
        monitor.push(container("a"), PendingEvent::Oom, 0);
        monitor.push(container("b"), PendingEvent::Oom, 0);
        assert_eq!(monitor.backoff_len(), 1);
        assert_eq!(monitor.backoff_dropped_total.load(Ordering::Relaxed), 1);
        // Same id still appends: per-id order matters more than the bound.
        monitor.push(container("a"), PendingEvent::Oom, 0);
        assert_eq!(monitor.backoff_dropped_total.load(Ordering::Relaxed), 1);
    }
}
