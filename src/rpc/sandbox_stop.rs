//! StopPodSandbox and RemovePodSandbox (SPEC §6.2). Both are idempotent: a missing sandbox is
//! OK (B18).

use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1::{
    ContainerEventType, RemovePodSandboxRequest, RemovePodSandboxResponse, StopPodSandboxRequest,
    StopPodSandboxResponse,
};

use crate::error::{Error, ErrorKind, Result};
use crate::events::HANDLE_EVENT_TIMEOUT;
use crate::ids::TaskId;
use crate::ports::ExitStatus;
use crate::service::CriService;
use crate::store::{Sandbox, SandboxState};

/// How long Stop waits for the sandbox exit after SIGKILL before it reports a typed error
/// instead of hanging on a task that ignores the kill (B19).
pub const SANDBOX_KILL_WAIT: Duration = Duration::from_secs(30);
const SIGKILL: u32 = 9;

impl CriService {
    pub async fn stop_pod_sandbox(self: &Arc<Self>, request: StopPodSandboxRequest) -> Result<StopPodSandboxResponse> {
        self.check_initialized()?;
        let sandbox = match self.sandboxes.get(&request.pod_sandbox_id) {
            Ok(sandbox) => sandbox,
            Err(error) if error.is_not_found() => {
                cov_mark::hit!(stop_of_unknown_sandbox_is_ok);
                return Ok(StopPodSandboxResponse {});
            }
            Err(error) => return Err(error),
        };
        let service = self.clone();
        self.detached(async move { service.stop_sandbox(&sandbox).await }).await?;
        Ok(StopPodSandboxResponse {})
    }

    pub async fn remove_pod_sandbox(
        self: &Arc<Self>,
        request: RemovePodSandboxRequest,
    ) -> Result<RemovePodSandboxResponse> {
        self.check_initialized()?;
        let sandbox = match self.sandboxes.get(&request.pod_sandbox_id) {
            Ok(sandbox) => sandbox,
            Err(error) if error.is_not_found() => return Ok(RemovePodSandboxResponse {}),
            Err(error) => return Err(error),
        };
        let service = self.clone();
        self.detached(async move { service.remove_sandbox(&sandbox).await }).await?;
        Ok(RemovePodSandboxResponse {})
    }

    /// Runs `future` as its own task and waits for it: a caller that gives up does not cut a
    /// multi-step cleanup in half.
    pub(crate) async fn detached<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        match tokio::spawn(Box::pin(future)).await {
            Ok(result) => result,
            Err(error) => Err(Error::internal(format!("operation task failed: {error}"))),
        }
    }

    pub(crate) async fn stop_sandbox(self: &Arc<Self>, sandbox: &Arc<Sandbox>) -> Result<()> {
        let id = sandbox.id.clone();
        // The pod's containers are killed at once rather than one after another: each stop is
        // a kill and a wait for its exit, independent of the others'.
        let containers: Vec<_> = self.containers.in_group(&id);
        let stops = containers.iter().map(|container| async move {
            self.stop_container_inner(container, 0)
                .await
                .map_err(|e| e.context(format!("failed to stop container {:?}", container.id)))
        });
        for stopped in futures::future::join_all(stops).await {
            stopped?;
        }
        self.cleanup_sandbox_files(&id).await?;
        // The network is torn down only once the pause task is gone: a stop that fails before
        // leaves the sandbox READY, and a READY sandbox keeps its netns and its IP.
        let state = sandbox.status().state;
        if matches!(state, SandboxState::Ready | SandboxState::Unknown) {
            self.stop_sandbox_task(sandbox).await?;
        }
        self.teardown_sandbox_network(sandbox).await
    }

    async fn stop_sandbox_task(self: &Arc<Self>, sandbox: &Arc<Sandbox>) -> Result<()> {
        let id = &sandbox.id;
        let containerd = &self.backends.containerd;
        let task = TaskId::Sandbox(id.clone());
        if sandbox.status().state == SandboxState::Unknown {
            if self.record_exit_if_task_gone(&task).await? {
                return Ok(());
            }
            // No monitor was started for an UNKNOWN sandbox; start one for this stop.
            let service = self.clone();
            let monitored = id.clone();
            tokio::spawn(async move {
                if let Ok(exit) = service.backends.containerd.wait_task(monitored.as_str()).await {
                    service.handle_monitored_exit(&TaskId::Sandbox(monitored), exit).await;
                }
            });
        }
        // A READY sandbox's task is killed without asking for it first; only a kill that finds
        // no process asks whether the task is gone.
        match containerd.kill_task(id.as_str(), SIGKILL, true).await {
            Ok(()) => {}
            Err(error) if error.is_not_found() => {
                if self.record_exit_if_task_gone(&task).await? {
                    return Ok(());
                }
            }
            Err(error) => return Err(error.context("failed to kill sandbox task")),
        }
        self.wait_exit_handled(
            &TaskId::Sandbox(id.clone()),
            SANDBOX_KILL_WAIT,
            || sandbox.is_stopped(),
            sandbox.wait_stopped(),
        )
        .await
    }

    /// Waits until the exit is handled. Every second it also asks containerd: if the task is
    /// already gone, the exit is handled here rather than waiting for a monitor that may never
    /// report (B5, B6).
    pub(crate) async fn wait_exit_handled(
        self: &Arc<Self>,
        task: &TaskId,
        bound: Duration,
        is_stopped: impl Fn() -> bool,
        stopped: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        let mut stopped = std::pin::pin!(stopped);
        let deadline_ns = self.now_ns() + bound.as_nanos() as i64;
        loop {
            tokio::select! {
                biased;
                () = &mut stopped => return Ok(()),
                () = self.sleep(Duration::from_secs(1)) => {}
            }
            if is_stopped() {
                return Ok(());
            }
            if let Some(exit) = self.observed_exit_for_stop(task.as_str()).await {
                // The task has ended. If its exit cannot be recorded because the disk is full,
                // which does not pass within this wait, the caller hears that now, typed, rather
                // than a deadline later. The exit stays queued and is recorded once space
                // returns; until then the object keeps the state it was acknowledged in, which a
                // restart agrees with.
                let disk_full = |error: &Error| error.kind == ErrorKind::ResourceExhausted;
                let failure = if self.monitor.last_failure(task).is_some_and(|f| disk_full(&f)) {
                    // Space may have returned since the queued attempt: try now rather than
                    // after the queue's backoff (handling an exit is idempotent; the queued one
                    // stays for its replay).
                    self.with_timeout(HANDLE_EVENT_TIMEOUT, "handle exit", self.handle_exit(task, exit)).await.err()
                } else {
                    self.handle_exit_or_backoff(task, exit).await;
                    self.monitor.last_failure(task)
                };
                if is_stopped() {
                    return Ok(());
                }
                if let Some(failure) = failure.filter(disk_full) {
                    cov_mark::hit!(stop_could_not_record_exit);
                    return Err(failure.context(format!(
                        "{} {:?} exited, but its exit could not be recorded",
                        task.kind_name(),
                        task.as_str()
                    )));
                }
            }
            if self.now_ns() >= deadline_ns {
                cov_mark::hit!(stop_gave_up_on_unkillable_task);
                return Err(Error::deadline(format!(
                    "{} {:?} did not exit within {bound:?} of SIGKILL",
                    task.kind_name(),
                    task.as_str()
                )));
            }
        }
    }

    async fn observed_exit_for_stop(&self, id: &str) -> Option<ExitStatus> {
        match self.backends.containerd.task_info(id).await {
            Ok(info) if info.state == crate::ports::TaskState::Stopped => Some(
                info.exit.unwrap_or(ExitStatus::new(crate::store::container::EXIT_CODE_UNKNOWN as u32, self.now_ns())),
            ),
            Err(error) if error.is_not_found() => {
                Some(ExitStatus::new(crate::store::container::EXIT_CODE_UNKNOWN as u32, self.now_ns()))
            }
            _ => None,
        }
    }

    /// CNI DEL then netns removal. DEL runs whenever an ADD was attempted, even without a
    /// persisted result, because a failed ADD may have allocated (B16, B17).
    async fn teardown_sandbox_network(&self, sandbox: &Sandbox) -> Result<()> {
        let metadata = &sandbox.metadata;
        if metadata.host_network || metadata.netns_path.is_empty() {
            return Ok(());
        }
        if sandbox.network_torn_down() {
            // StopPodSandbox already ran DEL and removed the netns; RemovePodSandbox's stop
            // need not run the plugins again.
            cov_mark::hit!(network_teardown_already_done);
            return Ok(());
        }
        let closed = self.backends.os.netns_closed(&metadata.netns_path).await?;
        if metadata.network_setup_attempted || metadata.cni_result.is_some() {
            if metadata.cni_result.is_none() {
                cov_mark::hit!(network_teardown_without_saved_result);
            }
            let mut network = self.pod_network(metadata, &sandbox.config);
            if closed {
                network.netns_path = String::new();
            }
            self.backends
                .cni
                .teardown(&network)
                .await
                .map_err(|e| e.context("failed to destroy network for sandbox"))?;
        }
        if !closed {
            self.backends
                .os
                .netns_remove(&metadata.netns_path)
                .await
                .map_err(|e| e.context("failed to remove network namespace"))?;
        }
        sandbox.mark_network_torn_down();
        Ok(())
    }

    async fn remove_sandbox(self: &Arc<Self>, sandbox: &Arc<Sandbox>) -> Result<()> {
        let id = sandbox.id.clone();
        self.stop_sandbox(sandbox).await.map_err(|e| e.context("failed to forcibly stop sandbox"))?;
        if !sandbox.metadata.host_network
            && !sandbox.metadata.netns_path.is_empty()
            && !self.backends.os.netns_closed(&sandbox.metadata.netns_path).await?
        {
            return Err(Error::precondition(format!(
                "sandbox network namespace {:?} is not fully closed",
                sandbox.metadata.netns_path
            )));
        }
        for container in self.containers.in_group(&id) {
            self.remove_container_inner(&container)
                .await
                .map_err(|e| e.context(format!("failed to remove container {:?}", container.id)))?;
        }
        // The pause task goes before its record, as a container's does in RemoveContainer: a
        // NOTREADY pod's task may still exist, its delete owed by the exit path (deferred by
        // recovery, or queued after a failed attempt), and containerd deletes a record whose
        // task exists, leaving the task and its shim to nobody once the pod leaves the store.
        // The exit handler's delete, usually in flight or done by now, is joined.
        let pause = async {
            self.delete_exited_sandbox_task(sandbox).await.map_err(|e| e.context("failed to delete sandbox task"))?;
            crate::rpc::sandbox_run::ignore_not_found(
                self.backends.containerd.delete_container(id.as_str(), true).await,
            )
            .map_err(|e| e.context("failed to delete sandbox container"))
        };
        // A removed container's task, record and dirs go after RemoveContainer's reply. The pod
        // leaves the store only after them, so that a removed pod leaves nothing behind, but its
        // pause task and record need not wait: they go meanwhile. A restart in between finds
        // neither the pod (its record is how a restart knows it) nor the containers (their
        // removal marks), finishes the removals and sweeps the pod's dirs.
        let (containers_removed, pause_removed) = futures::join!(self.wait_pod_container_removals(&id), pause);
        containers_removed?;
        pause_removed?;
        self.backends.os.remove_all(&self.sandbox_root(&id)).await?;
        self.backends.os.remove_all(&self.sandbox_state_dir(&id)).await?;
        if self.sandboxes.remove(&id).is_some() {
            self.sandbox_names.release_by_key(&id);
            self.forget_operation(&format!("sandbox/{}", sandbox.name));
            self.send_container_event(id.as_str(), &id, ContainerEventType::ContainerDeletedEvent);
        }
        Ok(())
    }
}
