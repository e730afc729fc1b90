//! Exit monitors (one Wait per task) and the containerd event loop: how an exit or an OOM
//! reaches the stores, and how work that failed goes to the backoff queue.

use std::sync::Arc;

use k8s_cri::v1::ContainerEventType;

use super::backoff::Backoff;
use super::{
    BACKOFF_INITIAL, BACKOFF_MAX, BACKOFF_TICK, BackoffKey, HANDLE_EVENT_TIMEOUT, PendingEvent, RECONNECT_MAX,
};
use crate::error::{Error, Result};
use crate::ids::{ContainerId, SandboxId, TaskId};
use crate::ports::{Event, EventStream, ExitStatus};
use crate::service::CriService;
use crate::store::container::Container;
use crate::store::sandbox::Sandbox;

impl CriService {
    /// Starts the exit monitor of a task. Call only after the object is in its store, so that an
    /// immediate exit is never dropped as "not found" (B7).
    pub(crate) fn start_exit_monitor(self: &Arc<Self>, task: TaskId) {
        match &task {
            TaskId::Sandbox(id) => assert!(self.sandboxes.contains(id), "monitor before store add: {id}"),
            TaskId::Container(id) => assert!(self.containers.contains(id), "monitor before store add: {id}"),
        }
        let service = self.clone();
        tokio::spawn(async move {
            let exit = service.wait_for_exit(task.as_str()).await;
            service.handle_monitored_exit(&task, exit).await;
        });
    }

    /// Handles an exit a Wait reported, marked as in hand meanwhile so that the reconciler does
    /// not take the (already stopped or deleted) task for one nobody saw.
    pub(crate) async fn handle_monitored_exit(self: &Arc<Self>, task: &TaskId, exit: ExitStatus) {
        let _in_hand = self.monitor.hold_exit(task);
        self.handle_exit_or_backoff(task, exit).await;
    }

    /// Waits for the task's exit. A lost connection is retried rather than read as an exit, so a
    /// containerd restart does not kill every container; a vanished task is an unknown exit. Any
    /// other failed Wait is checked against the task's state: read as an exit, it would record
    /// EXITED 255 for a container that runs on, and the exit path's task delete would kill it.
    async fn wait_for_exit(&self, id: &str) -> ExitStatus {
        let mut backoff = Backoff::new(BACKOFF_INITIAL, RECONNECT_MAX);
        loop {
            let error = match self.backends.containerd.wait_task(id).await {
                Ok(exit) => return exit,
                Err(error) => error,
            };
            if error.kind != crate::error::ErrorKind::Unavailable {
                match self.backends.containerd.task_info(id).await {
                    Ok(info) if info.state == crate::ports::TaskState::Stopped => {
                        let unknown =
                            || ExitStatus::new(crate::store::container::EXIT_CODE_UNKNOWN as u32, self.now_ns());
                        return info.exit.unwrap_or_else(unknown);
                    }
                    Err(gone) if gone.is_not_found() => {
                        tracing::warn!(id, %error, "wait for task exit failed and the task is gone; an unknown exit");
                        return ExitStatus::new(crate::store::container::EXIT_CODE_UNKNOWN as u32, self.now_ns());
                    }
                    // Still running (or unreadable): wait again.
                    _ => {}
                }
            }
            tracing::warn!(id, %error, "wait for task exit failed; retrying");
            self.sleep(backoff.next_delay()).await;
        }
    }

    pub(crate) async fn handle_exit_or_backoff(self: &Arc<Self>, task: &TaskId, exit: ExitStatus) {
        if self.monitor.is_in_backoff(task) {
            self.monitor.push(task, PendingEvent::Exit(exit), self.now_ns());
            return;
        }
        if let Err(error) = self.with_timeout(HANDLE_EVENT_TIMEOUT, "handle exit", self.handle_exit(task, exit)).await {
            cov_mark::hit!(exit_handling_failed_retry_queued);
            tracing::warn!(id = %task, %error, "exit handling failed; queued for retry");
            self.monitor.push_failed(task, PendingEvent::Exit(exit), error, self.now_ns());
        }
    }

    pub(crate) async fn handle_exit(self: &Arc<Self>, task: &TaskId, exit: ExitStatus) -> Result<()> {
        match task {
            TaskId::Container(id) => self.handle_container_exit(id, exit).await,
            TaskId::Sandbox(id) => self.handle_sandbox_exit(id, exit).await,
        }
    }

    /// Records the exit once (persisted first), wakes Stop, sends STOPPED, then deletes the task
    /// (NotFound tolerated). Persisting before deleting keeps the real exit code across a crash
    /// in between. Idempotent: replays, duplicate events and the reconciler may all call it.
    async fn handle_container_exit(self: &Arc<Self>, id: &ContainerId, exit: ExitStatus) -> Result<()> {
        let Ok(container) = self.containers.get(id.as_str()) else {
            return Ok(()); // Removed meanwhile: nothing to record.
        };
        if container.id != *id {
            return Ok(()); // A prefix match is not this task.
        }
        // Read only while the exit is unrecorded: once recorded, the task may be deleted and
        // its cgroup gone.
        let unrecorded = container.read_status(|status| status.finished_at_ns == 0);
        let oom_killed = unrecorded && self.oom_killed_at_exit(id.as_str()).await?;
        let recorded = self
            .update_container_status(&container, |status| {
                if status.finished_at_ns != 0 {
                    cov_mark::hit!(exit_already_recorded);
                    // Already recorded; an UNKNOWN container with a recorded exit only needs
                    // its flag cleared (FinishedAt never changes once set).
                    let was_unknown = status.unknown;
                    status.unknown = false;
                    return was_unknown;
                }
                status.finished_at_ns = exit.exited_at_ns.max(status.started_at_ns).max(1);
                status.exit_code = exit.exit_code as i32;
                if status.started_at_ns == 0 && !status.unknown {
                    // Never recorded as started (and not an UNKNOWN container whose checkpoint
                    // was lost, whose start time is unknown too): a StartContainer that failed
                    // and could not record its failure (a full disk), whose task the exit
                    // path's retries delete, killing it if the start went through after all.
                    // The exit is that failed start's, as a restart would resolve it, not the
                    // kill's.
                    cov_mark::hit!(unrecorded_start_failure_exit);
                    status.exit_code = crate::store::container::EXIT_CODE_START_ERROR;
                    status.reason = crate::store::container::REASON_START_ERROR.to_string();
                } else if oom_killed {
                    // The exit's own account of the OOM: the bus's TaskOOM event may never come.
                    status.reason = crate::store::container::REASON_OOM_KILLED.to_string();
                }
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
            self.send_container_event(
                id.as_str(),
                &container.metadata.sandbox_id,
                ContainerEventType::ContainerStoppedEvent,
            );
        }
        self.delete_exited_task(&container).await.map_err(|error| error.context("failed to delete task"))
    }

    /// Deletes the task of a container whose exit is recorded, once: a delete that finds
    /// another in flight waits for it, and has nothing left to do if that one went through.
    /// Two deletes sent at once (the exit handler's and RemoveContainer's) both reached the
    /// shim, and the later one failed or found the task gone. NotFound counts as deleted. A
    /// container whose exit is not recorded (one never started, or whose start failed) may
    /// still get a task, so its delete is sent as it comes and remembers nothing.
    ///
    /// The wait is bounded by the exit handler's own budget: a delete in flight on a path with
    /// no bound of its own (a forced stop inside a RemoveContainer that kubelet gave up on) may
    /// never return, and a later RemoveContainer must still be able to send its own delete, as
    /// it did before deletes were joined (swarm seed 270228).
    pub(crate) async fn delete_exited_task(&self, container: &Container) -> Result<()> {
        if container.read_status(|status| status.finished_at_ns == 0) {
            return self.delete_task_found_or_gone(container.id.as_str()).await;
        }
        if self.delete_task_once(container.id.as_str(), &container.exited_task_deleted).await? {
            cov_mark::hit!(exited_task_delete_joined);
        }
        Ok(())
    }

    /// Deletes the pause task of a sandbox whose exit is recorded, once, as
    /// [`Self::delete_exited_task`] does a container's: the exit handler deletes it right after
    /// recording the exit, and RemovePodSandbox, which comes right after StopPodSandbox, joins
    /// that delete instead of sending a second one (which found the task gone, a containerd call
    /// on every pod's removal).
    pub(crate) async fn delete_exited_sandbox_task(&self, sandbox: &Sandbox) -> Result<()> {
        if self.delete_task_once(sandbox.id.as_str(), &sandbox.exited_task_deleted).await? {
            cov_mark::hit!(sandbox_task_delete_joined);
        }
        Ok(())
    }

    /// Deletes a task unless this process's earlier delete under `deleted` went through; true
    /// when nothing was sent for that reason. The wait for a delete in flight is bounded by
    /// the exit handler's budget (see [`Self::delete_exited_task`]).
    async fn delete_task_once(&self, id: &str, deleted: &tokio::sync::Mutex<bool>) -> Result<bool> {
        let Ok(mut deleted) = crate::ports::timeout(&*self.backends.clock, HANDLE_EVENT_TIMEOUT, deleted.lock()).await
        else {
            cov_mark::hit!(exited_task_delete_not_joined);
            tracing::warn!(id, "a task delete in flight did not return; sending another");
            self.delete_task_found_or_gone(id).await?;
            return Ok(false);
        };
        if *deleted {
            return Ok(true);
        }
        self.delete_task_found_or_gone(id).await?;
        *deleted = true;
        Ok(false)
    }

    /// A task delete where NotFound counts as deleted.
    pub(crate) async fn delete_task_found_or_gone(&self, id: &str) -> Result<()> {
        match self.backends.containerd.delete_task(id).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() => {
                cov_mark::hit!(exit_task_already_deleted);
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    async fn handle_sandbox_exit(self: &Arc<Self>, id: &SandboxId, exit: ExitStatus) -> Result<()> {
        let Ok(sandbox) = self.sandboxes.get(id.as_str()) else { return Ok(()) };
        if sandbox.id != *id {
            return Ok(());
        }
        // Recorded first and the task deleted last, as for a container: StopPodSandbox waits
        // for NOTREADY only, so its CNI DEL runs while the shim goes away instead of after
        // (the delete took 25-60 ms of a 200 ms stop on the real stack). A sandbox's state is
        // not checkpointed: a restart before the delete finds the task stopped, loads the
        // sandbox NOTREADY and deletes the task then. A failed delete is retried through the
        // backoff queue, where this record is a no-op.
        let mut changed = false;
        sandbox.update_status(|status| {
            if status.state != crate::store::SandboxState::NotReady {
                status.state = crate::store::SandboxState::NotReady;
                status.pid = 0;
                status.exit_code = exit.exit_code;
                status.exited_at_ns = exit.exited_at_ns;
                changed = true;
            }
        })?;
        sandbox.mark_stopped();
        if changed {
            self.send_container_event(id.as_str(), id, ContainerEventType::ContainerStoppedEvent);
        }
        self.delete_exited_sandbox_task(&sandbox).await.map_err(|error| error.context("failed to delete sandbox task"))
    }

    /// Whether the OOM killer ended the task, decided from its cgroup's OOM kill count, which
    /// the exit leaves readable until the task is deleted. The exit path's own source besides
    /// the bus's TaskOOM event, which may be lost or come after the exit is recorded (B28).
    /// A task already deleted leaves only the bus to say so. Any other failure is returned:
    /// the exit is handled again from the backoff queue rather than recorded without its OOM.
    pub(crate) async fn oom_killed_at_exit(&self, id: &str) -> Result<bool> {
        match self.backends.containerd.task_metrics(id).await {
            Ok(metrics) => Ok(metrics.oom_kills > 0),
            Err(error) if error.is_not_found() => {
                cov_mark::hit!(oom_kill_count_gone_with_task);
                Ok(false)
            }
            Err(error) => Err(error.context("read the exited task's OOM kill count")),
        }
    }

    async fn handle_oom(self: &Arc<Self>, id: &ContainerId) -> Result<()> {
        let Ok(container) = self.containers.get(id.as_str()) else { return Ok(()) };
        if container.id != *id {
            return Ok(());
        }
        self.update_container_status(&container, |status| {
            // A start that failed stays a StartError with the failed start's code: its task
            // ran only by accident (the start went through although its reply failed).
            if status.reason == crate::store::container::REASON_START_ERROR {
                cov_mark::hit!(oom_after_failed_start_ignored);
                return false;
            }
            if status.reason == crate::store::container::REASON_OOM_KILLED {
                return false; // The exit recorded it already: nothing to write.
            }
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
                let container_id = ContainerId::from(container_id);
                let task = TaskId::Container(container_id.clone());
                if self.monitor.is_in_backoff(&task) {
                    self.monitor.push(&task, PendingEvent::Oom, self.now_ns());
                    return;
                }
                if let Err(error) =
                    self.with_timeout(HANDLE_EVENT_TIMEOUT, "handle oom", self.handle_oom(&container_id)).await
                {
                    tracing::warn!(%container_id, %error, "OOM handling failed; queued for retry");
                    self.monitor.push_failed(&task, PendingEvent::Oom, error, self.now_ns());
                }
            }
            Event::ImageCreate { name } | Event::ImageUpdate { name } | Event::ImageDelete { name } => {
                // Image events are handled in tasks of their own, never behind exit handling or its
                // backoff replays (those run on backoff_loop), so a slow replay cannot leave the image
                // list stale (B3, §4.2); nor does a slow image update hold up the bus events after it.
                let service = self.clone();
                tokio::spawn(async move {
                    if let Err(error) = service.update_image_reference(&name).await {
                        service.queue_image_refresh(name, error);
                    }
                });
            }
            // Exits come from the per-task Wait monitors, which are reliable where the bus is not
            // (the subscription leaves them out; a backend that sends one anyway is ignored).
            Event::TaskExit { .. } | Event::Other { .. } => {}
        }
    }

    async fn backoff_loop(self: Arc<Self>) {
        loop {
            self.sleep(BACKOFF_TICK).await;
            for (key, mut events, duration) in self.monitor.take_expired(self.now_ns()) {
                let mut failure = None;
                while let Some(event) = events.front().cloned() {
                    let result = match (event, &key) {
                        (PendingEvent::Exit(exit), BackoffKey::Task(task)) => {
                            self.with_timeout(HANDLE_EVENT_TIMEOUT, "handle exit", self.handle_exit(task, exit)).await
                        }
                        (PendingEvent::Oom, BackoffKey::Task(TaskId::Container(id))) => {
                            self.with_timeout(HANDLE_EVENT_TIMEOUT, "handle oom", self.handle_oom(id)).await
                        }
                        (PendingEvent::DeleteLease, BackoffKey::Lease(id)) => {
                            self.with_timeout(HANDLE_EVENT_TIMEOUT, "delete lease", self.delete_lease(id)).await
                        }
                        (PendingEvent::SweepLeases, BackoffKey::LeaseSweep) => {
                            self.with_timeout(HANDLE_EVENT_TIMEOUT, "sweep leases", self.try_sweep_leases()).await
                        }
                        // Each bounded by the image metadata deadline inside.
                        (PendingEvent::RefreshImage, BackoffKey::Image(name)) => {
                            self.update_image_reference(name).await
                        }
                        (PendingEvent::ResyncImages, BackoffKey::ImageResync) => match self.resync_images().await {
                            Ok(0) => Ok(()),
                            Ok(failed) => Err(Error::unavailable(format!("{failed} images failed to load"))),
                            Err(error) => Err(error),
                        },
                        // Never queued so (an OOM goes with a container's task, lease work under
                        // its lease key): nothing to do.
                        _ => Ok(()),
                    };
                    if let Err(error) = result {
                        tracing::warn!(id = %key, %error, retry_in = ?crate::events::backoff::after(duration, BACKOFF_MAX), "backoff retry failed");
                        failure = Some(error);
                        break;
                    }
                    events.pop_front();
                }
                self.monitor.finish_replay(key, events, duration, self.now_ns(), failure);
            }
        }
    }
}
