//! Exit monitors, the containerd event loop, the backoff queue, the reconciler, and the
//! GetContainerEvents fan-out.

use crate::backoff::Backoff;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_cri::v1::{ContainerEventResponse, ContainerEventType};
use tokio::sync::mpsc;

use crate::backend::{Event, EventStream, ExitStatus, TaskState};
use crate::error::Result;
use crate::service::CriService;
use crate::store::ContainerState;

/// Budget for handling one event (containerd's `handleEventTimeout`).
pub const HANDLE_EVENT_TIMEOUT: Duration = Duration::from_secs(10);
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
pub const BACKOFF_TICK: Duration = Duration::from_secs(1);
/// Bounds the wait between re-subscriptions and re-waits when containerd is unreachable.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Which store an exiting task belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskKind {
    Sandbox,
    Container,
}

/// Work that failed once and waits in the backoff queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PendingEvent {
    Exit { kind: TaskKind, exit: ExitStatus },
    Oom,
}

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
}

impl EventMonitor {
    pub fn new(max_entries: usize) -> Self {
        assert!(max_entries > 0);
        EventMonitor { backoff: Mutex::new(BTreeMap::new()), max_entries, backoff_dropped_total: AtomicU64::new(0) }
    }

    pub fn is_in_backoff(&self, id: &str) -> bool {
        self.backoff.lock().unwrap().contains_key(id)
    }

    pub fn backoff_len(&self) -> usize {
        self.backoff.lock().unwrap().len()
    }

    /// Appends to the id's queue (keeping per-id order) or creates an entry due in 1 s.
    fn push(&self, id: &str, event: PendingEvent, now_ns: i64) {
        let mut backoff = self.backoff.lock().unwrap();
        if let Some(entry) = backoff.get_mut(id) {
            entry.events.push_back(event);
            return;
        }
        if backoff.len() >= self.max_entries {
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
    fn take_expired(&self, now_ns: i64) -> Vec<(String, VecDeque<PendingEvent>, Duration)> {
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
    fn requeue(&self, id: String, mut events: VecDeque<PendingEvent>, previous: Duration, now_ns: i64) {
        let duration = crate::backoff::after(previous, BACKOFF_MAX);
        let mut backoff = self.backoff.lock().unwrap();
        // Events that arrived for this id while it was being replayed go after the rest.
        if let Some(newer) = backoff.remove(&id) {
            events.extend(newer.events);
        }
        backoff.insert(id, BackoffEntry { events, expire_at_ns: now_ns + duration.as_nanos() as i64, duration });
    }
}

/// One GetContainerEvents subscriber: its own bounded buffer and its own drop count.
struct Subscriber {
    sender: mpsc::Sender<ContainerEventResponse>,
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

    pub fn subscribe(&self) -> mpsc::Receiver<ContainerEventResponse> {
        let (sender, receiver) = mpsc::channel(self.capacity);
        self.subscribers.lock().unwrap().push(Subscriber { sender, dropped: 0 });
        receiver
    }

    pub fn subscriber_count(&self) -> usize {
        let mut subscribers = self.subscribers.lock().unwrap();
        subscribers.retain(|s| !s.sender.is_closed());
        subscribers.len()
    }

    pub fn publish(&self, event: ContainerEventResponse) {
        self.sent_total.fetch_add(1, Ordering::Relaxed);
        let mut subscribers = self.subscribers.lock().unwrap();
        subscribers.retain_mut(|subscriber| match subscriber.sender.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                subscriber.dropped += 1;
                self.dropped_total.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(dropped = subscriber.dropped, "container event subscriber is full; event dropped");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}

impl CriService {
    /// Builds a CRI container event with the pod's status as of now and sends it to every
    /// subscriber.
    pub(crate) fn send_container_event(&self, container_id: &str, sandbox_id: &str, event_type: ContainerEventType) {
        let sandbox_status = self.sandboxes.get(sandbox_id).ok().map(|s| self.sandbox_status_message(&s));
        let containers_statuses = self
            .containers
            .list()
            .into_iter()
            .filter(|c| c.metadata.sandbox_id == sandbox_id)
            .map(|c| self.container_status_message(&c))
            .collect();
        self.container_events.publish(ContainerEventResponse {
            container_id: container_id.to_string(),
            container_event_type: event_type as i32,
            created_at: self.now_ns(),
            pod_sandbox_status: sandbox_status,
            containers_statuses,
        });
    }

    /// Starts the exit monitor of a task. Call only after the object is in its store, so that an
    /// immediate exit is never dropped as "not found" (B7).
    pub(crate) fn start_exit_monitor(self: &Arc<Self>, kind: TaskKind, id: String) {
        match kind {
            TaskKind::Sandbox => assert!(self.sandboxes.contains(&id), "monitor before store add: {id}"),
            TaskKind::Container => assert!(self.containers.contains(&id), "monitor before store add: {id}"),
        }
        let service = self.clone();
        tokio::spawn(async move {
            let exit = service.wait_for_exit(&id).await;
            service.handle_exit_or_backoff(kind, &id, exit).await;
        });
    }

    /// Waits for the task's exit. A lost connection is retried rather than read as an exit, so a
    /// containerd restart does not kill every container; a vanished task is an unknown exit.
    async fn wait_for_exit(&self, id: &str) -> ExitStatus {
        let mut backoff = Backoff::new(BACKOFF_INITIAL, RECONNECT_MAX);
        loop {
            match self.backends.containerd.wait_task(id).await {
                Ok(exit) => return exit,
                Err(error) if error.kind == crate::error::ErrorKind::Unavailable => {
                    tracing::warn!(id, %error, "wait for task exit failed; retrying");
                    self.sleep(backoff.next_delay()).await;
                }
                Err(error) => {
                    tracing::warn!(id, %error, "wait for task exit failed; treating as an unknown exit");
                    return ExitStatus {
                        exit_code: crate::store::container::EXIT_CODE_UNKNOWN as u32,
                        exited_at_ns: self.now_ns(),
                    };
                }
            }
        }
    }

    pub(crate) async fn handle_exit_or_backoff(self: &Arc<Self>, kind: TaskKind, id: &str, exit: ExitStatus) {
        if self.monitor.is_in_backoff(id) {
            self.monitor.push(id, PendingEvent::Exit { kind, exit }, self.now_ns());
            return;
        }
        if let Err(error) =
            self.with_timeout(HANDLE_EVENT_TIMEOUT, "handle exit", self.handle_exit(kind, id, exit)).await
        {
            tracing::warn!(id, %error, "exit handling failed; queued for retry");
            self.monitor.push(id, PendingEvent::Exit { kind, exit }, self.now_ns());
        }
    }

    pub(crate) async fn handle_exit(self: &Arc<Self>, kind: TaskKind, id: &str, exit: ExitStatus) -> Result<()> {
        match kind {
            TaskKind::Container => self.handle_container_exit(id, exit).await,
            TaskKind::Sandbox => self.handle_sandbox_exit(id, exit).await,
        }
    }

    /// Records the exit once (persisted first), wakes Stop, sends STOPPED, then deletes the task
    /// (NotFound tolerated). Persisting before deleting keeps the real exit code across a crash
    /// in between. Idempotent: replays, duplicate events and the reconciler may all call it.
    async fn handle_container_exit(self: &Arc<Self>, id: &str, exit: ExitStatus) -> Result<()> {
        let Ok(container) = self.containers.get(id) else {
            return Ok(()); // Removed meanwhile: nothing to record.
        };
        if container.id != id {
            return Ok(()); // A prefix match is not this task.
        }
        let recorded = self
            .update_container_status(&container, |status| {
                if status.finished_at_ns != 0 {
                    // Already recorded; an UNKNOWN container with a recorded exit only needs
                    // its flag cleared (FinishedAt never changes once set).
                    let was_unknown = status.unknown;
                    status.unknown = false;
                    return was_unknown;
                }
                status.finished_at_ns = exit.exited_at_ns.max(status.started_at_ns).max(1);
                status.exit_code = exit.exit_code as i32;
                status.pid = 0;
                status.unknown = false;
                if status.created_at_ns == 0 {
                    // Only an UNKNOWN container loaded from a lost checkpoint lacks it.
                    status.created_at_ns = status.finished_at_ns;
                }
                true
            })
            .await?;
        container.mark_stopped();
        if recorded {
            self.send_container_event(id, &container.metadata.sandbox_id, ContainerEventType::ContainerStoppedEvent);
        }
        match self.backends.containerd.delete_task(id).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() => Ok(()),
            Err(error) => Err(error.context("failed to delete task")),
        }
    }

    async fn handle_sandbox_exit(self: &Arc<Self>, id: &str, exit: ExitStatus) -> Result<()> {
        let Ok(sandbox) = self.sandboxes.get(id) else { return Ok(()) };
        if sandbox.id != id {
            return Ok(());
        }
        match self.backends.containerd.delete_task(id).await {
            Ok(_) => {}
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error.context("failed to delete sandbox task")),
        }
        let mut changed = false;
        sandbox.update_status(|status| {
            if status.state != crate::store::SandboxState::NotReady {
                status.state = crate::store::SandboxState::NotReady;
                status.pid = 0;
                status.exit_code = exit.exit_code;
                status.exited_at_ns = exit.exited_at_ns;
                changed = true;
            }
        });
        sandbox.mark_stopped();
        if changed {
            self.send_container_event(id, id, ContainerEventType::ContainerStoppedEvent);
        }
        Ok(())
    }

    async fn handle_oom(self: &Arc<Self>, id: &str) -> Result<()> {
        let Ok(container) = self.containers.get(id) else { return Ok(()) };
        if container.id != id {
            return Ok(());
        }
        self.update_container_status(&container, |status| {
            status.reason = crate::store::container::REASON_OOM_KILLED.to_string();
            true
        })
        .await?;
        Ok(())
    }

    pub(crate) fn start_event_loops(self: &Arc<Self>, subscription: EventStream) {
        let service = self.clone();
        tokio::spawn(async move { service.event_loop(subscription).await });
        let service = self.clone();
        tokio::spawn(async move { service.backoff_loop().await });
    }

    /// Handles bus events; re-subscribes when the stream ends (containerd restarted) and then
    /// re-reads the images it may have missed events for.
    async fn event_loop(self: Arc<Self>, mut subscription: EventStream) {
        let namespace = self.backends.containerd.namespace();
        loop {
            while let Some(envelope) = subscription.recv().await {
                if envelope.namespace != namespace {
                    continue;
                }
                self.handle_bus_event(envelope.event).await;
            }
            tracing::warn!("containerd event stream ended; re-subscribing");
            let mut backoff = Backoff::new(BACKOFF_INITIAL, RECONNECT_MAX);
            subscription = loop {
                self.sleep(backoff.next_delay()).await;
                match self.backends.containerd.subscribe().await {
                    Ok(stream) => break stream,
                    Err(error) => tracing::warn!(%error, "re-subscribe failed"),
                }
            };
            // Events were missed while disconnected; image state is level-triggered, so re-read.
            self.recover_images().await;
        }
    }

    async fn handle_bus_event(self: &Arc<Self>, event: Event) {
        match event {
            Event::TaskOom { container_id } => {
                if self.monitor.is_in_backoff(&container_id) {
                    self.monitor.push(&container_id, PendingEvent::Oom, self.now_ns());
                    return;
                }
                if let Err(error) =
                    self.with_timeout(HANDLE_EVENT_TIMEOUT, "handle oom", self.handle_oom(&container_id)).await
                {
                    tracing::warn!(container_id, %error, "OOM handling failed; queued for retry");
                    self.monitor.push(&container_id, PendingEvent::Oom, self.now_ns());
                }
            }
            Event::ImageCreate { name } | Event::ImageUpdate { name } | Event::ImageDelete { name } => {
                // Image events are handled in tasks of their own, never behind exit handling or its
                // backoff replays (those run on backoff_loop), so a slow replay cannot leave the image
                // list stale (B3, §4.2); nor does a slow image update hold up the bus events after it.
                let service = self.clone();
                tokio::spawn(async move {
                    if let Err(error) = service.update_image_reference(&name).await {
                        tracing::warn!(name, %error, "image event handling failed");
                    }
                });
            }
            // Exits come from the per-task Wait monitors, which are reliable where the bus is not.
            Event::TaskExit { .. } | Event::Other { .. } => {}
        }
    }

    async fn backoff_loop(self: Arc<Self>) {
        loop {
            self.sleep(BACKOFF_TICK).await;
            for (id, mut events, duration) in self.monitor.take_expired(self.now_ns()) {
                while let Some(event) = events.front().cloned() {
                    let result = match event {
                        PendingEvent::Exit { kind, exit } => {
                            self.with_timeout(HANDLE_EVENT_TIMEOUT, "handle exit", self.handle_exit(kind, &id, exit))
                                .await
                        }
                        PendingEvent::Oom => {
                            self.with_timeout(HANDLE_EVENT_TIMEOUT, "handle oom", self.handle_oom(&id)).await
                        }
                    };
                    if let Err(error) = result {
                        tracing::warn!(id, %error, retry_in = ?crate::backoff::after(duration, BACKOFF_MAX), "backoff retry failed");
                        break;
                    }
                    events.pop_front();
                }
                if !events.is_empty() {
                    self.monitor.requeue(id, events, duration, self.now_ns());
                }
            }
        }
    }

    pub(crate) fn start_reconciler(self: &Arc<Self>) {
        if self.config.reconcile_period == 0 {
            return;
        }
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                service.sleep(Duration::from_secs(service.config.reconcile_period)).await;
                service.reconcile().await;
            }
        });
    }

    /// Compares task state with the stores: a RUNNING container or READY sandbox whose task is
    /// gone or stopped gets its exit handled even if no monitor ever saw it (B6).
    pub async fn reconcile(self: &Arc<Self>) {
        for container in self.containers.list() {
            let status = container.status();
            if status.state() != ContainerState::Running || status.starting || self.monitor.is_in_backoff(&container.id)
            {
                continue;
            }
            if let Some(exit) = self.observed_exit(&container.id).await {
                tracing::warn!(id = container.id, "reconcile: container task is gone; recording its exit");
                self.handle_exit_or_backoff(TaskKind::Container, &container.id, exit).await;
            }
        }
        for sandbox in self.sandboxes.list() {
            if sandbox.status().state != crate::store::SandboxState::Ready || self.monitor.is_in_backoff(&sandbox.id) {
                continue;
            }
            if let Some(exit) = self.observed_exit(&sandbox.id).await {
                tracing::warn!(id = sandbox.id, "reconcile: sandbox task is gone; recording its exit");
                self.handle_exit_or_backoff(TaskKind::Sandbox, &sandbox.id, exit).await;
            }
        }
    }

    /// The exit of a task that is stopped or gone; None while it runs or when containerd is
    /// unreachable (no conclusion can be drawn then).
    async fn observed_exit(&self, id: &str) -> Option<ExitStatus> {
        match self.backends.containerd.task_info(id).await {
            Ok(info) if info.state == TaskState::Stopped => Some(info.exit.unwrap_or(ExitStatus {
                exit_code: crate::store::container::EXIT_CODE_UNKNOWN as u32,
                exited_at_ns: self.now_ns(),
            })),
            Ok(_) => None,
            Err(error) if error.is_not_found() => Some(ExitStatus {
                exit_code: crate::store::container::EXIT_CODE_UNKNOWN as u32,
                exited_at_ns: self.now_ns(),
            }),
            Err(_) => None,
        }
    }

    /// Refreshes the cached snapshot usage every `stats_collect_period` seconds (ImageFsInfo,
    /// the containers' writable layers).
    pub(crate) fn start_snapshot_syncer(self: &Arc<Self>) {
        let period = Duration::from_secs(self.config.stats_collect_period.max(1));
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                service.refresh_snapshot_usage().await;
                service.sleep(period).await;
            }
        });
    }

    pub(crate) async fn refresh_snapshot_usage(&self) {
        let snapshotter = self.config.containerd.snapshotter.clone();
        match self.backends.containerd.snapshots_usage(&snapshotter).await {
            Ok(by_key) => {
                *self.snapshot_usage.lock().unwrap() =
                    crate::service::SnapshotUsageCache { by_key, sampled_at_ns: self.now_ns() }
            }
            Err(error) => tracing::debug!(%error, "snapshot usage refresh failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_keeps_order() {
        let monitor = EventMonitor::new(2);
        monitor.push("a", PendingEvent::Oom, 0);
        monitor.push(
            "a",
            PendingEvent::Exit { kind: TaskKind::Container, exit: ExitStatus { exit_code: 1, exited_at_ns: 5 } },
            0,
        );
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
        let monitor = EventMonitor::new(1);
        monitor.push("a", PendingEvent::Oom, 0);
        monitor.push("b", PendingEvent::Oom, 0);
        assert_eq!(monitor.backoff_len(), 1);
        assert_eq!(monitor.backoff_dropped_total.load(Ordering::Relaxed), 1);
        // Same id still appends: per-id order matters more than the bound.
        monitor.push("a", PendingEvent::Oom, 0);
        assert_eq!(monitor.backoff_dropped_total.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn every_subscriber_gets_every_event_and_drops_are_counted() {
        let hub = ContainerEventHub::new(2);
        let mut first = hub.subscribe();
        let mut second = hub.subscribe();
        for i in 0..3 {
            hub.publish(ContainerEventResponse { container_id: format!("c{i}"), ..Default::default() });
        }
        assert_eq!(first.try_recv().unwrap().container_id, "c0");
        assert_eq!(first.try_recv().unwrap().container_id, "c1");
        assert_eq!(second.try_recv().unwrap().container_id, "c0");
        assert_eq!(hub.dropped_total.load(Ordering::Relaxed), 2);
        drop(first);
        assert_eq!(hub.subscriber_count(), 1);
    }
}
