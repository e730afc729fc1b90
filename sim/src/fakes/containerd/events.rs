//! The event bus: what containerd publishes (task exits and OOMs, image changes), each event
//! subject to the `containerd.event` fault site (dropped, duplicated or held back to be
//! delivered after later events), with counters of each.

use tokio::sync::mpsc;

use crid::ports::Clock;

use crate::fakes::clock::virtual_now;
use crid::ports::containerd::*;

use super::super::faults::{FaultAction, FaultSite};
use super::{FakeContainerd, State};

/// The capacity of each event subscription; past it events are dropped and counted.
pub const EVENT_BUFFER: usize = 4096;
/// How many published events the fake remembers for tests.
const EVENT_LOG_LIMIT: usize = 10_000;

fn topic_of(event: &Event) -> String {
    match event {
        Event::TaskOom { .. } => "/tasks/oom".to_string(),
        Event::TaskExit { .. } => "/tasks/exit".to_string(),
        Event::ImageCreate { .. } => "/images/create".to_string(),
        Event::ImageUpdate { .. } => "/images/update".to_string(),
        Event::ImageDelete { .. } => "/images/delete".to_string(),
        Event::Other { topic } => topic.clone(),
    }
}

fn event_key(event: &Event) -> &str {
    match event {
        Event::TaskOom { container_id } | Event::TaskExit { container_id, .. } => container_id,
        Event::ImageCreate { name } | Event::ImageUpdate { name } | Event::ImageDelete { name } => name,
        Event::Other { topic } => topic,
    }
}

impl FakeContainerd {
    pub(super) fn publish(&self, state: &mut State, events: Vec<Event>) {
        for event in events {
            let envelope = Envelope {
                timestamp_ns: self.clock.now_ns(),
                namespace: self.namespace.clone(),
                topic: topic_of(&event),
                event,
            };
            match self.faults.at(FaultSite::ContainerdEvent, event_key(&envelope.event)) {
                FaultAction::Proceed => Self::deliver(state, envelope),
                FaultAction::Duplicate => {
                    state.events_duplicated += 1;
                    Self::deliver(state, envelope.clone());
                    Self::deliver(state, envelope);
                }
                FaultAction::Reorder(hold) => {
                    state.events_reordered += 1;
                    state.held_events.push((virtual_now() + hold, envelope));
                }
                _ => state.events_dropped_by_fault += 1,
            }
        }
        Self::deliver_held(state);
    }

    /// Delivers the held-back events whose time has come, after the events published meanwhile.
    /// Checked on every publish and every look at the state, as exits are.
    pub(super) fn deliver_held(state: &mut State) {
        if state.held_events.is_empty() {
            return;
        }
        let now = virtual_now();
        if state.held_events.iter().all(|(due, _)| *due > now) {
            return;
        }
        let (due, held): (Vec<_>, Vec<_>) =
            std::mem::take(&mut state.held_events).into_iter().partition(|(due, _)| *due <= now);
        state.held_events = held;
        for (_, envelope) in due {
            Self::deliver(state, envelope);
        }
    }

    fn deliver(state: &mut State, envelope: Envelope) {
        state.events_published += 1;
        // A subscription takes what the CRI subscribes to (`Containerd::subscribe`): OOMs and
        // image changes. Task exits are published (and logged) but reach no subscriber, as
        // containerd's topic filter keeps them from the real one; the fake also delivers the
        // odd topics tests inject, to show that the core ignores them.
        if !matches!(envelope.event, Event::TaskExit { .. }) {
            let mut dropped = 0;
            state.subscribers.retain(|subscriber| match subscriber.try_send(envelope.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
            state.events_dropped_full += dropped;
        }
        if state.event_log.len() == EVENT_LOG_LIMIT {
            state.event_log.pop_front();
        }
        state.event_log.push_back(envelope);
    }

    /// Publishes an event as if containerd had (for B3-style image events, or `Other` topics).
    pub fn inject_event(&self, event: Event) {
        let mut state = self.state();
        self.publish(&mut state, vec![event]);
    }

    /// Delivers the held-back events whose time has come. The fake delivers them on its next
    /// call that looks at the state; the runner calls this every simulated second too, so that
    /// a held event is late by about its hold, as containerd's would be, and not until the
    /// next task call, which a node without pods may not make for minutes.
    pub fn deliver_due_events(&self) {
        Self::deliver_held(&mut self.raw_state());
    }

    /// The most recent published events (up to 10,000), oldest first.
    pub fn event_log(&self) -> Vec<Envelope> {
        self.raw_state().event_log.iter().cloned().collect()
    }

    pub fn events_published(&self) -> u64 {
        self.raw_state().events_published
    }

    /// Deliveries dropped because a subscriber's buffer was full.
    pub fn events_dropped_full(&self) -> u64 {
        self.raw_state().events_dropped_full
    }

    /// Events the `containerd.event` fault site delivered twice.
    pub fn events_duplicated(&self) -> u64 {
        self.raw_state().events_duplicated
    }

    /// Events the `containerd.event` fault site held back (delivered after later ones).
    pub fn events_reordered(&self) -> u64 {
        self.raw_state().events_reordered
    }

    /// Events dropped by the `containerd.event` fault site.
    pub fn events_dropped_by_fault(&self) -> u64 {
        self.raw_state().events_dropped_by_fault
    }

    pub fn subscriber_count(&self) -> usize {
        let mut state = self.raw_state();
        state.subscribers.retain(|subscriber| !subscriber.is_closed());
        state.subscribers.len()
    }

    pub(super) fn do_subscribe(&self) -> EventStream {
        let (sender, receiver) = mpsc::channel(EVENT_BUFFER);
        self.raw_state().subscribers.push(sender);
        receiver
    }
}
