//! GetContainerEvents: every container event fanned out to every subscriber (B20).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_cri::v1::ContainerEventType;
use tokio::sync::mpsc;

use super::{ContainerEvent, PodSandboxStatusView};
use crate::ids::SandboxId;
use crate::service::CriService;

/// One GetContainerEvents subscriber: its own bounded buffer and its own drop count.
struct Subscriber {
    sender: mpsc::Sender<ContainerEvent>,
    dropped: u64,
}

/// Fans every container event out to every subscriber. Sending never blocks: a full buffer
/// drops the event for that subscriber and counts it (SPEC B20: 1.7 splits one channel between
/// subscribers; here each one gets every event unless it falls behind).
pub struct ContainerEventHub {
    capacity: usize,
    subscribers: Mutex<Vec<Subscriber>>,
    pub dropped_total: AtomicU64,
    pub sent_total: AtomicU64,
}

impl ContainerEventHub {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0);
        ContainerEventHub {
            capacity,
            subscribers: Mutex::new(Vec::new()),
            dropped_total: AtomicU64::new(0),
            sent_total: AtomicU64::new(0),
        }
    }

    pub fn subscribe(&self) -> mpsc::Receiver<ContainerEvent> {
        let (sender, receiver) = mpsc::channel(self.capacity);
        self.subscribers.lock().unwrap().push(Subscriber { sender, dropped: 0 });
        receiver
    }

    pub fn subscriber_count(&self) -> usize {
        let mut subscribers = self.subscribers.lock().unwrap();
        subscribers.retain(|s| !s.sender.is_closed());
        subscribers.len()
    }

    /// Sends the event `build` makes; with no subscriber, counts it without building it.
    ///
    /// An event carries the status of every container of its pod, and building it was a third
    /// of the cost of recording an exit; kubelet subscribes only with its EventedPLEG feature
    /// on. A subscriber that joins while the event is built misses it, as it would had it
    /// joined just after.
    pub fn publish_with(&self, build: impl FnOnce() -> ContainerEvent) {
        if self.subscriber_count() == 0 {
            cov_mark::hit!(event_without_subscribers_not_built);
            self.sent_total.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.publish(build());
    }

    pub fn publish(&self, event: ContainerEvent) {
        self.sent_total.fetch_add(1, Ordering::Relaxed);
        let mut subscribers = self.subscribers.lock().unwrap();
        // Each subscriber but the last gets a copy; the last (usually the only one) the event.
        let mut event = Some(event);
        let mut left = subscribers.len();
        subscribers.retain_mut(|subscriber| {
            left -= 1;
            let message = if left == 0 { event.take() } else { event.clone() };
            let message = message.expect("taken only for the last subscriber");
            match subscriber.sender.try_send(message) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    cov_mark::hit!(full_subscriber_event_dropped);
                    subscriber.dropped += 1;
                    self.dropped_total.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(dropped = subscriber.dropped, "container event subscriber is full; event dropped");
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

impl CriService {
    /// Builds a CRI container event with the pod's status as of now and sends it to every
    /// subscriber.
    /// `container_id` is the sandbox's own id for the events of its pause container.
    pub(crate) fn send_container_event(
        &self,
        container_id: &str,
        sandbox_id: &SandboxId,
        event_type: ContainerEventType,
    ) {
        self.container_events.publish_with(|| {
            let sandbox_status = self.sandboxes.get(sandbox_id.as_str()).ok().map(PodSandboxStatusView::read);
            let containers = self.container_status_views(&self.containers.in_group(sandbox_id));
            ContainerEvent {
                container_id: container_id.to_string(),
                event_type: event_type as i32,
                created_at_ns: self.now_ns(),
                pod_sandbox_status: sandbox_status,
                containers,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscriber_gets_every_event_and_drops_are_counted() {
        let hub = ContainerEventHub::new(2);
        let mut first = hub.subscribe();
        let mut second = hub.subscribe();
        for i in 0..3 {
            hub.publish(ContainerEvent { container_id: format!("c{i}"), ..Default::default() });
        }
        assert_eq!(first.try_recv().unwrap().container_id, "c0");
        assert_eq!(first.try_recv().unwrap().container_id, "c1");
        assert_eq!(second.try_recv().unwrap().container_id, "c0");
        assert_eq!(hub.dropped_total.load(Ordering::Relaxed), 2);
        drop(first);
        assert_eq!(hub.subscriber_count(), 1);
    }

    #[test]
    fn an_event_nobody_listens_to_is_counted_and_not_built() {
        let hub = ContainerEventHub::new(2);
        {
            cov_mark::check!(event_without_subscribers_not_built);
            hub.publish_with(|| panic!("built with no subscriber"));
        }
        assert_eq!(hub.sent_total.load(Ordering::Relaxed), 1);
        let mut listener = hub.subscribe();
        hub.publish_with(|| ContainerEvent { container_id: "c1".into(), ..Default::default() });
        assert_eq!(listener.try_recv().unwrap().container_id, "c1");
        drop(listener);
        hub.publish_with(|| panic!("built after the last subscriber left"));
        assert_eq!(hub.sent_total.load(Ordering::Relaxed), 3);
    }
}
