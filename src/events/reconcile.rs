//! The reconciler (B6): task state from containerd compared with the stores, for exits no
//! monitor saw; and the periodic snapshot usage refresh.

use std::sync::Arc;
use std::time::Duration;

use crate::ids::TaskId;
use crate::ports::{ExitStatus, TaskState};
use crate::service::CriService;
use crate::store::ContainerState;

impl CriService {
    pub(crate) fn start_reconciler(self: &Arc<Self>) {
        if self.config.reconcile_period.is_zero() {
            return;
        }
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                service.sleep(service.config.reconcile_period).await;
                service.reconcile().await;
                service.sweep_leases().await;
            }
        });
    }

    /// Compares task state with the stores: a RUNNING container or READY sandbox whose task is
    /// gone or stopped gets its exit handled even if no monitor ever saw it (B6). An exit that a
    /// monitor is handling is not one: between the task's exit (or the exit path's task delete)
    /// and the status update, the object is still RUNNING or READY. So the object is skipped
    /// while its exit is in hand, and looked at again after containerd answered.
    pub async fn reconcile(self: &Arc<Self>) {
        let unseen = |task: &TaskId| !self.monitor.is_in_backoff(task) && !self.monitor.is_exit_in_hand(task);
        let container_unseen = |container: &crate::store::Container, task: &TaskId| {
            let status = container.status();
            status.state() == ContainerState::Running && !status.starting && unseen(task)
        };
        for container in self.containers.list() {
            let task = TaskId::Container(container.id.clone());
            if !container_unseen(&container, &task) {
                continue;
            }
            if let Some(exit) = self.observed_exit(task.as_str()).await
                && container_unseen(&container, &task)
            {
                cov_mark::hit!(reconciler_found_missed_exit);
                tracing::warn!(id = %container.id, "reconcile: container task is gone; recording its exit");
                self.monitor.reconciled_exits_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.handle_exit_or_backoff(&task, exit).await;
            }
        }
        let sandbox_unseen = |sandbox: &crate::store::Sandbox, task: &TaskId| {
            sandbox.status().state == crate::store::SandboxState::Ready && unseen(task)
        };
        for sandbox in self.sandboxes.list() {
            let task = TaskId::Sandbox(sandbox.id.clone());
            if !sandbox_unseen(&sandbox, &task) {
                continue;
            }
            if let Some(exit) = self.observed_exit(task.as_str()).await
                && sandbox_unseen(&sandbox, &task)
            {
                tracing::warn!(id = %sandbox.id, "reconcile: sandbox task is gone; recording its exit");
                self.monitor.reconciled_exits_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.handle_exit_or_backoff(&task, exit).await;
            }
        }
    }

    /// The exit of a task that is stopped or gone; None while it runs or when containerd is
    /// unreachable (no conclusion can be drawn then).
    async fn observed_exit(&self, id: &str) -> Option<ExitStatus> {
        match self.backends.containerd.task_info(id).await {
            Ok(info) if info.state == TaskState::Stopped => Some(
                info.exit.unwrap_or(ExitStatus::new(crate::store::container::EXIT_CODE_UNKNOWN as u32, self.now_ns())),
            ),
            Ok(_) => None,
            Err(error) if error.is_not_found() => {
                Some(ExitStatus::new(crate::store::container::EXIT_CODE_UNKNOWN as u32, self.now_ns()))
            }
            Err(_) => None,
        }
    }

    /// Refreshes the cached snapshot usage every `stats_collect_period` (at least a second; ImageFsInfo,
    /// the containers' writable layers).
    pub(crate) fn start_snapshot_syncer(self: &Arc<Self>) {
        let period = self.config.stats_collect_period.max(Duration::from_secs(1));
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
