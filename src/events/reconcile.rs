//! The reconciler (B6): task state from containerd compared with the stores, for exits no
//! monitor saw; and the periodic snapshot usage refresh.

use std::sync::Arc;
use std::time::Duration;

use super::TaskKind;
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
        let container_unseen = |container: &crate::store::Container| {
            let status = container.status();
            status.state() == ContainerState::Running
                && !status.starting
                && !self.monitor.is_in_backoff(&container.id)
                && !self.monitor.is_exit_in_hand(&container.id)
        };
        for container in self.containers.list() {
            if !container_unseen(&container) {
                continue;
            }
            if let Some(exit) = self.observed_exit(&container.id).await
                && container_unseen(&container)
            {
                cov_mark::hit!(reconciler_found_missed_exit);
                tracing::warn!(id = container.id, "reconcile: container task is gone; recording its exit");
                self.monitor.reconciled_exits_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.handle_exit_or_backoff(TaskKind::Container, &container.id, exit).await;
            }
        }
        let sandbox_unseen = |sandbox: &crate::store::Sandbox| {
            sandbox.status().state == crate::store::SandboxState::Ready
                && !self.monitor.is_in_backoff(&sandbox.id)
                && !self.monitor.is_exit_in_hand(&sandbox.id)
        };
        for sandbox in self.sandboxes.list() {
            if !sandbox_unseen(&sandbox) {
                continue;
            }
            if let Some(exit) = self.observed_exit(&sandbox.id).await
                && sandbox_unseen(&sandbox)
            {
                tracing::warn!(id = sandbox.id, "reconcile: sandbox task is gone; recording its exit");
                self.monitor.reconciled_exits_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.handle_exit_or_backoff(TaskKind::Sandbox, &sandbox.id, exit).await;
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
