//! RemoveContainer's work after its reply (SPEC §6.4, docs/behaviour.md §6.4).
//!
//! A removal is acknowledged once it is durable: the status checkpoint is renamed to the
//! container's removal mark (`<root>/containers/<id>.removed`, synced), the container leaves the
//! store and its name is free. What is left (the task's delete, which the exit handler started
//! when StopContainer answered; the containerd container and its snapshot; the container's
//! dirs) follows the reply, retried with the events' backoff until it is done. A restart in
//! between finds the mark beside a containerd container that still exists and finishes the
//! removal instead of loading the container: an acknowledged removal never comes back.
//!
//! RemovePodSandbox waits for the removals of its pod's containers before it removes the pod's
//! dirs and drops it from the store, so that a removed pod leaves nothing behind, as before;
//! the pod's pause task and record go while it waits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::events::backoff::Backoff;
use crate::events::{BACKOFF_INITIAL, RECONNECT_MAX};
use crate::ids::{ContainerId, SandboxId};
use crate::rpc::sandbox_run::ignore_not_found;
use crate::service::CriService;
use crate::store::Container;
use crate::watch;

/// The removal mark's name is the container's id with this suffix.
pub const REMOVAL_MARK_SUFFIX: &str = ".removed";

/// Budget of one attempt at a removal's remaining steps (a task delete that waits for a hung
/// shim gives up within it and is tried again).
pub const REMOVAL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long RemovePodSandbox waits for its containers' removals before it answers with an
/// error (kubelet then asks again; the removals go on meanwhile).
pub const POD_REMOVAL_WAIT: Duration = Duration::from_secs(120);

/// A removal acknowledged and not finished yet.
struct Pending {
    sandbox_id: SandboxId,
    /// Cuts a backoff wait short: a pod's removal asks for the next attempt now.
    retry_now: Arc<Notify>,
    /// Becomes true when the removal is done.
    done: watch::Receiver<bool>,
}

/// The removals acknowledged by this process (or found by its recovery) and not finished.
#[derive(Default)]
pub(crate) struct PendingRemovals {
    entries: Mutex<BTreeMap<ContainerId, Pending>>,
}

/// The worker's side of a pending removal.
struct Registration {
    retry_now: Arc<Notify>,
    finished: watch::Sender<bool>,
}

impl PendingRemovals {
    fn add(&self, id: &ContainerId, sandbox_id: &SandboxId) -> Registration {
        let retry_now = Arc::new(Notify::new());
        let (finished, done) = watch::channel(false);
        let pending = Pending { sandbox_id: sandbox_id.clone(), retry_now: retry_now.clone(), done };
        self.entries.lock().unwrap().insert(id.clone(), pending);
        Registration { retry_now, finished }
    }

    fn finish(&self, id: &ContainerId, registration: &Registration) {
        self.entries.lock().unwrap().remove(id);
        registration.finished.send_replace(true);
    }

    /// How many removals are not finished (the simulator's quiescence waits for none).
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    /// The unfinished removals of one pod's containers, asked to try again now.
    fn of_pod(&self, sandbox_id: &SandboxId) -> Vec<(ContainerId, watch::Receiver<bool>)> {
        let entries = self.entries.lock().unwrap();
        entries
            .iter()
            .filter(|(_, pending)| pending.sandbox_id == *sandbox_id)
            .map(|(id, pending)| {
                pending.retry_now.notify_one();
                (id.clone(), pending.done.clone())
            })
            .collect()
    }
}

impl CriService {
    /// Makes the removal of a stopped container durable, takes it out of the store and starts
    /// the rest in the background. The container is marked `removing` by the caller.
    pub(crate) async fn acknowledge_container_removal(self: &Arc<Self>, container: &Arc<Container>) -> Result<()> {
        let id = &container.id;
        {
            // Under the status lock: no status write can bring the checkpoint back after the
            // rename (every writer refuses a container being removed, and waits for the lock).
            let _guard = container.update_lock.lock().await;
            let mark = self.removal_mark_path(id);
            match self.backends.os.rename(&self.checkpoint_path(id), &mark).await {
                Ok(()) => {}
                // A lost checkpoint (an UNKNOWN container, B9) leaves nothing to rename: an empty
                // mark says the same.
                Err(error) if error.is_not_found() => {
                    cov_mark::hit!(removal_marked_without_checkpoint);
                    self.backends
                        .os
                        .write_atomic(&mark, b"")
                        .await
                        .map_err(|e| e.context("failed to mark the container removed"))?;
                }
                Err(error) => return Err(error.context("failed to mark the container removed")),
            }
        }
        let registration = self.pending_removals.add(id, &container.metadata.sandbox_id);
        if self.containers.remove(id).is_some() {
            self.container_names.release_by_key(id);
            self.forget_operation(&format!("container/{}", container.name));
            self.send_container_event(
                id.as_str(),
                &container.metadata.sandbox_id,
                k8s_cri::v1::ContainerEventType::ContainerDeletedEvent,
            );
        }
        tokio::spawn(self.clone().finish_container_removal(id.clone(), Some(container.clone()), registration));
        Ok(())
    }

    /// Finishes a removal that a restart found marked: the container was not loaded.
    pub(crate) fn resume_container_removal(self: &Arc<Self>, id: ContainerId, sandbox_id: &SandboxId) {
        cov_mark::hit!(removal_resumed_after_restart);
        let registration = self.pending_removals.add(&id, sandbox_id);
        tokio::spawn(self.clone().finish_container_removal(id, None, registration));
    }

    /// Tries the removal's remaining steps until they succeed, then marks it finished.
    /// `container` is the removed object when this process removed it (its exit handler may
    /// have the task's delete in flight, which is joined rather than sent again).
    async fn finish_container_removal(
        self: Arc<Self>,
        id: ContainerId,
        container: Option<Arc<Container>>,
        registration: Registration,
    ) {
        let mut backoff = Backoff::new(BACKOFF_INITIAL, RECONNECT_MAX);
        loop {
            let steps = self.container_removal_steps(&id, container.as_deref());
            match self.with_timeout(REMOVAL_ATTEMPT_TIMEOUT, "finish container removal", steps).await {
                Ok(()) => break,
                Err(error) => {
                    cov_mark::hit!(removal_after_reply_retried);
                    tracing::warn!(%id, %error, "failed to finish removing a removed container; retrying");
                }
            }
            tokio::select! {
                biased;
                () = registration.retry_now.notified() => {}
                () = self.sleep(backoff.next_delay()) => {}
            }
        }
        self.pending_removals.finish(&id, &registration);
    }

    /// The task, the containerd container (with its snapshot), the mark, the dirs: in this
    /// order, so that a crash at any point leaves either the mark beside the containerd
    /// container (the next start finishes the removal) or state no listed object owns (the
    /// next start's orphan sweep removes it).
    async fn container_removal_steps(&self, id: &ContainerId, container: Option<&Container>) -> Result<()> {
        match container {
            Some(container) => self.delete_exited_task(container).await,
            None => self.delete_task_found_or_gone(id.as_str()).await,
        }
        .map_err(|e| e.context("failed to delete task"))?;
        ignore_not_found(self.backends.containerd.delete_container(id.as_str(), true).await)
            .map_err(|e| e.context("failed to delete containerd container"))?;
        self.backends.os.remove_all(&self.removal_mark_path(id)).await?;
        self.backends.os.remove_all(&self.container_root(id)).await?;
        self.backends.os.remove_all(&self.container_state_dir(id)).await
    }

    /// Waits until the removals of the pod's containers are done, asking each for its next
    /// attempt now. Bounded: an error when one is still going after `POD_REMOVAL_WAIT`.
    pub(crate) async fn wait_pod_container_removals(&self, sandbox_id: &SandboxId) -> Result<()> {
        let pending = self.pending_removals.of_pod(sandbox_id);
        if pending.is_empty() {
            return Ok(());
        }
        cov_mark::hit!(pod_removal_waited_for_container_removal);
        let ids: Vec<ContainerId> = pending.iter().map(|(id, _)| id.clone()).collect();
        let all_done = async {
            for (_, mut done) in pending {
                // A closed channel is a removal whose task ended: done as well.
                let _ = done.wait_for(|done| *done).await;
            }
            Ok(())
        };
        self.with_timeout(POD_REMOVAL_WAIT, "wait for the pod's container removals", all_done)
            .await
            .map_err(|e| Error::unavailable(format!("containers {ids:?} of the pod are still being removed: {e}")))
    }
}
