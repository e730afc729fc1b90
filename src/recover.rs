//! `recover()`: rebuilds the stores from containerd and the status checkpoints (SPEC §3.4).
//!
//! It never aborts on a bad object: an object whose metadata cannot be read, or whose name is
//! already taken, is quarantined (logged and listed in verbose Status) and left in containerd
//! for an operator (B10, B11). Monitors start only after the object is in its store (B7).

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::events::backoff::Backoff;
use crate::events::{BACKOFF_INITIAL, BackoffKey, PendingEvent, RECONNECT_MAX};
use crate::ids::{ContainerId, SandboxId, TaskId};
use crate::ports::{
    ContainerRecord, EXTENSION_CONTAINER_METADATA, EXTENSION_SANDBOX_METADATA, KIND_CONTAINER, KIND_SANDBOX,
    LABEL_KIND, TaskState,
};
use crate::removal::REMOVAL_MARK_SUFFIX;
use crate::service::{CriService, QuarantineKind, Quarantined};
use crate::store::container::{EXIT_CODE_START_ERROR, EXIT_CODE_UNKNOWN, REASON_START_ERROR, REASON_UNKNOWN};
use crate::store::{
    Container, ContainerMetadata, ContainerState, ContainerStatus, Sandbox, SandboxMetadata, SandboxState,
    SandboxStatus, decode_message,
};

/// Budget of each backend call made while loading one object.
pub const RECOVER_OBJECT_TIMEOUT: Duration = Duration::from_secs(10);
/// What recovery decided for one container.
struct Decision {
    status: ContainerStatus,
    /// Attach an exit monitor (the task runs).
    monitor: bool,
    /// Delete the task once the status is persisted.
    delete_task: bool,
    /// The same inputs give the same status at any later restart (no time taken from now).
    stable: bool,
}

/// A container record as recovery finds it.
enum LoadedContainer {
    /// Loaded, with whether an exit monitor must be attached (its task runs).
    Live(Arc<Container>, bool),
    /// Its removal was acknowledged before the restart: finished, not loaded. The pod's id.
    Removed(SandboxId),
}

/// How many objects recovery loads at once. Each costs a few containerd round trips and a
/// checkpoint read, independent of every other object's; one at a time, a node left with two
/// thousand objects (the soak's) took 15-40 s to serve again. The results keep the listing's
/// order, so what is admitted or quarantined does not depend on which load finished first.
const RECOVER_CONCURRENCY: usize = 16;

/// Listing containers is retried this many times, a second apart, before recovery gives up.
const LIST_ATTEMPTS: u32 = 10;
/// How long recovery keeps asking about a task whose state containerd answers UNKNOWN.
const UNKNOWN_STATE_SETTLE: Duration = Duration::from_secs(5);

/// A recovery call that takes this long is logged with its object: each one keeps the socket
/// closed (containerd takes 2 s to answer for a task whose create its own restart cut short).
const SLOW_RECOVERY_CALL_MS: i64 = 500;

/// A failed orphan removal is tried this many times in all, with the events' backoff between
/// tries (about 4 minutes), before it waits for the next start.
const ORPHAN_REMOVAL_ATTEMPTS: u32 = 10;

/// Runs `loads` RECOVER_CONCURRENCY at a time and returns their results in the order given.
///
/// A slot frees as soon as its load ends, whatever the others do: with results delivered in
/// order as they come (`buffered`), a finished load kept its slot until every load before it
/// had finished, so one task that containerd took 2 s to answer for held back the loads queued
/// behind it for those 2 s, and a restart that should take 2 s took 4.
async fn in_listing_order<T>(loads: Vec<impl std::future::Future<Output = T>>) -> Vec<T> {
    use futures::StreamExt;
    let indexed = loads.into_iter().enumerate().map(|(index, load)| async move { (index, load.await) });
    let mut results: Vec<(usize, T)> =
        futures::stream::iter(indexed).buffer_unordered(RECOVER_CONCURRENCY).collect().await;
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

impl CriService {
    pub(crate) async fn recover(self: &Arc<Self>) {
        // Pods and containers are listed and loaded at once: no load reads another object's
        // result (a container's status comes from its own checkpoint and task), and containerd
        // can take seconds to answer for one task (2 s for a task whose create its own restart
        // cut short), which paid once per phase kept the socket closed twice as long.
        let started_ns = self.now_ns();
        let (sandbox_records, container_records) =
            futures::join!(self.list_kind(KIND_SANDBOX), self.list_kind(KIND_CONTAINER));
        let listed_ns = self.now_ns();
        // The loads are built first and run RECOVER_CONCURRENCY at a time per kind, their
        // results in the listing's order. (A stream that borrows each record in a closure trips
        // the compiler's Send check of the spawned recovery future.)
        let sandbox_loads: Vec<_> = sandbox_records.iter().map(|record| self.load_sandbox(record)).collect();
        let container_loads: Vec<_> = container_records.iter().map(|record| self.load_container(record)).collect();
        let (sandboxes_loaded, containers_loaded) =
            futures::join!(in_listing_order(sandbox_loads), in_listing_order(container_loads));
        let loaded_ns = self.now_ns();
        let mut sandboxes = vec![];
        for (record, result) in sandbox_records.iter().zip(sandboxes_loaded) {
            match result {
                Ok(sandbox) => sandboxes.push((record.created_at_ns, sandbox)),
                Err(error) => self.quarantine(QuarantineKind::Sandbox, &record.id, "", &error.message),
            }
        }
        let mut containers = vec![];
        let mut removed = vec![];
        for (record, result) in container_records.iter().zip(containers_loaded) {
            match result {
                Ok(LoadedContainer::Live(container, monitor)) => {
                    containers.push((record.created_at_ns, (container, monitor)))
                }
                Ok(LoadedContainer::Removed(sandbox_id)) => {
                    removed.push((ContainerId::from(record.id.as_str()), sandbox_id))
                }
                Err(error) => self.quarantine(QuarantineKind::Container, &record.id, "", &error.message),
            }
        }
        // Two objects with one name can only mean that kubelet re-created an object it could not
        // see (B10, B11): the newest is the one it knows, so names go to the newest first and
        // the older duplicate is quarantined, never a reason to abort.
        sandboxes.sort_by(|a, b| (b.0, &b.1.id).cmp(&(a.0, &a.1.id)));
        containers.sort_by(|a, b| (b.0, &b.1.0.id).cmp(&(a.0, &a.1.0.id)));
        let mut monitors = vec![];
        for (_, sandbox) in sandboxes {
            let ready = sandbox.status().state == SandboxState::Ready;
            if self.admit(
                QuarantineKind::Sandbox,
                &sandbox.id,
                &sandbox.name,
                || self.sandboxes.add(&sandbox.id, sandbox.clone()),
                &self.sandbox_names,
            ) && ready
            {
                monitors.push(TaskId::Sandbox(sandbox.id.clone()));
            }
        }
        for (_, (container, monitor)) in containers {
            if self.admit(
                QuarantineKind::Container,
                &container.id,
                &container.name,
                || self.containers.add(&container.id, container.clone()),
                &self.container_names,
            ) && monitor
            {
                monitors.push(TaskId::Container(container.id.clone()));
            }
        }
        // Every object is in its store now, so no exit can be dropped as "not found" (B7).
        for task in monitors {
            self.start_exit_monitor(task);
        }
        // Acknowledged removals a crash cut short: finished, never loaded (`removal.rs`).
        for (id, sandbox_id) in removed {
            self.resume_container_removal(id, &sandbox_id);
        }
        self.recover_images().await;
        let images_ns = self.now_ns();
        let known: BTreeSet<String> = sandbox_records.iter().chain(&container_records).map(|r| r.id.clone()).collect();
        self.remove_orphan_dirs(&known).await;
        // After the images: what a pull cut short by the crash wrote is then garbage.
        self.sweep_leases().await;
        // The phases' times say where a slow restart went (the socket stays closed until here).
        let ms = |from_ns: i64, to_ns: i64| (to_ns - from_ns).max(0) / 1_000_000;
        tracing::info!(
            sandboxes = self.sandboxes.len(),
            containers = self.containers.len(),
            quarantined = self.quarantined().len(),
            list_ms = ms(started_ns, listed_ns),
            load_ms = ms(listed_ns, loaded_ns),
            images_ms = ms(loaded_ns, images_ns),
            cleanup_ms = ms(images_ns, self.now_ns()),
            "recovered state"
        );
    }

    /// Loads the image store; transient errors are retried so that a pulled image never goes
    /// missing after a restart.
    pub(crate) async fn recover_images(&self) {
        for attempt in 1..=LIST_ATTEMPTS {
            match self.resync_images().await {
                Ok(0) => return,
                Ok(failed) => tracing::warn!(failed, attempt, "some images could not be loaded; retrying"),
                Err(error) => tracing::warn!(%error, attempt, "failed to list images; retrying"),
            }
            self.sleep(Duration::from_secs(1)).await;
        }
        // No event may ever come for an image that is not changing: the resync goes on in the
        // backoff queue, and the service starts with what loaded.
        cov_mark::hit!(image_resync_queued);
        tracing::error!("images still failing to load; resyncing in the background");
        self.monitor.push(BackoffKey::ImageResync, PendingEvent::ResyncImages, self.now_ns());
    }

    async fn list_kind(&self, kind: &str) -> Vec<ContainerRecord> {
        let filter: BTreeMap<String, String> = [(LABEL_KIND.to_string(), kind.to_string())].into();
        for attempt in 1..=LIST_ATTEMPTS {
            // Each try has a deadline: a call that never returns must not keep the service
            // uninitialized for good.
            let call = self.backends.containerd.list_containers(&filter);
            match self.with_timeout(RECOVER_OBJECT_TIMEOUT, "list containers", call).await {
                Ok(records) => return records,
                Err(error) => {
                    tracing::error!(kind, attempt, %error, "failed to list containers for recovery");
                    self.sleep(Duration::from_secs(1)).await;
                }
            }
        }
        tracing::error!(kind, "giving up listing containers; starting without them");
        vec![]
    }

    /// Reserves the name, then adds to the store; a conflict quarantines instead of aborting.
    fn admit<K: Ord + Clone + Borrow<str>>(
        &self,
        kind: QuarantineKind,
        id: &K,
        name: &str,
        add: impl FnOnce() -> Result<()>,
        names: &crate::store::Registrar<K>,
    ) -> bool {
        if let Err(error) = names.reserve(name, id) {
            self.quarantine(kind, id.borrow(), name, &format!("duplicate name: {}", error.message));
            return false;
        }
        if let Err(error) = add() {
            names.release_by_key(id);
            self.quarantine(kind, id.borrow(), name, &error.message);
            return false;
        }
        true
    }

    fn quarantine(&self, kind: QuarantineKind, id: &str, name: &str, reason: &str) {
        tracing::error!(%kind, id, name, reason, "object could not be recovered; quarantined");
        self.quarantine.lock().unwrap().push(Quarantined {
            kind,
            id: id.into(),
            name: name.into(),
            reason: reason.into(),
        });
    }

    async fn load_sandbox(&self, record: &ContainerRecord) -> Result<Arc<Sandbox>> {
        let bytes = record
            .extensions
            .get(EXTENSION_SANDBOX_METADATA)
            .ok_or_else(|| Error::internal("sandbox metadata extension is missing"))?;
        let metadata: SandboxMetadata =
            serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("bad sandbox metadata: {e}")))?;
        if metadata.version != "v1" || metadata.id.as_str() != record.id {
            return Err(Error::internal(format!(
                "bad sandbox metadata: version {:?}, id {:?}",
                metadata.version, metadata.id
            )));
        }
        let config = decode_message(&metadata.config)?;
        let mut status = SandboxStatus {
            state: SandboxState::Unknown,
            pid: 0,
            created_at_ns: record.created_at_ns.max(1),
            exited_at_ns: 0,
            exit_code: 0,
        };
        match self.task_info_settled(&record.id).await {
            Err(error) if error.is_not_found() => status.state = SandboxState::NotReady,
            Err(error) => tracing::warn!(id = record.id, %error, "sandbox task state unknown"),
            Ok(info) => match info.state {
                TaskState::Running | TaskState::Paused | TaskState::Pausing => {
                    // RunPodSandbox starts the task while the network is set up; a crash before
                    // the network's result was persisted leaves a task with no IP behind, and
                    // such a sandbox was never ready (its RunPodSandbox never succeeded).
                    let network_unfinished =
                        metadata.network_setup_attempted && metadata.cni_result.is_none() && !metadata.host_network;
                    if network_unfinished {
                        cov_mark::hit!(recovered_sandbox_without_network);
                    } else {
                        status.state = SandboxState::Ready;
                    }
                    status.pid = info.pid;
                }
                _ => {
                    self.delete_task_later(&TaskId::Sandbox(SandboxId::from(record.id.as_str())));
                    status.state = SandboxState::NotReady;
                    if let Some(exit) = info.exit {
                        status.exit_code = exit.exit_code;
                        status.exited_at_ns = exit.exited_at_ns;
                    }
                }
            },
        }
        let sandbox = Arc::new(Sandbox::new(metadata, config, status));
        let netns_path = &sandbox.metadata.netns_path;
        if !sandbox.metadata.host_network && !netns_path.is_empty() {
            // Whether a Stop before the restart removed the netns: its IP is no longer reported.
            match self.backends.os.netns_closed(netns_path).await {
                Ok(true) => sandbox.mark_netns_gone(),
                Ok(false) => {}
                Err(error) => tracing::warn!(id = record.id, %error, "cannot tell whether the sandbox's netns is open"),
            }
        }
        Ok(sandbox)
    }

    /// Loads a container and decides its status from the checkpoint and the task, with whether
    /// an exit monitor must be attached; or finds it removed.
    async fn load_container(&self, record: &ContainerRecord) -> Result<LoadedContainer> {
        let bytes = record
            .extensions
            .get(EXTENSION_CONTAINER_METADATA)
            .ok_or_else(|| Error::internal("container metadata extension is missing"))?;
        let metadata: ContainerMetadata =
            serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("bad container metadata: {e}")))?;
        if metadata.version != "v1" || metadata.id.as_str() != record.id {
            return Err(Error::internal(format!(
                "bad container metadata: version {:?}, id {:?}",
                metadata.version, metadata.id
            )));
        }
        let config = decode_message(&metadata.config)?;
        let Some(checkpoint) = self.load_checkpoint(&metadata.id).await? else {
            return Ok(LoadedContainer::Removed(metadata.sandbox_id));
        };
        let decision = self.reconcile_container_status(&record.id, checkpoint.clone()).await;
        let mut status = decision.status;
        // Persist what recovery decided before acting on it or serving it; an unchanged status
        // needs no write. The task is deleted only after the write, so that a restart in between
        // decides the same from the same task (B9, B10).
        let changed =
            crate::checkpoint::encode_checkpoint(&status) != crate::checkpoint::encode_checkpoint(&checkpoint);
        let persisted = !changed || {
            let written = self
                .with_timeout(RECOVER_OBJECT_TIMEOUT, "write checkpoint", self.write_checkpoint(&metadata.id, &status))
                .await;
            if let Err(error) = &written {
                tracing::error!(id = record.id, %error, "failed to persist the recovered status");
            }
            written.is_ok()
        };
        if persisted {
            if decision.delete_task {
                self.delete_task_later(&TaskId::Container(metadata.id.clone()));
            }
        } else if !decision.stable {
            // A decision that a later restart could make differently (its times come from now)
            // is not served: the container is UNKNOWN with its persisted fields, and stays
            // visible, unlike containerd, which skips it (B10).
            status = ContainerStatus { unknown: true, ..checkpoint };
        }
        let monitor = decision.monitor;
        Ok(LoadedContainer::Live(Arc::new(Container::new(metadata, config, status)), monitor))
    }

    /// Runs `call` until it succeeds or fails for a lasting reason (NotFound, DataLoss), at most
    /// LIST_ATTEMPTS times a second apart, each within RECOVER_OBJECT_TIMEOUT. A transient error
    /// must not turn into a lasting decision (an UNKNOWN container, an erased exit).
    async fn retry_transient<T, F, Fut>(&self, what: &str, id: &str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            let started_ns = self.now_ns();
            let result = self.with_timeout(RECOVER_OBJECT_TIMEOUT, what, call()).await;
            let took_ms = (self.now_ns() - started_ns) / 1_000_000;
            if took_ms >= SLOW_RECOVERY_CALL_MS {
                tracing::info!(what, id, attempt, took_ms, "slow recovery call");
            }
            match result {
                Err(error)
                    if !matches!(error.kind, crate::error::ErrorKind::DataLoss | crate::error::ErrorKind::NotFound)
                        && attempt < LIST_ATTEMPTS =>
                {
                    tracing::warn!(what, attempt, %error, "recovery call failed; retrying");
                    attempt += 1;
                    self.sleep(Duration::from_secs(1)).await;
                }
                other => return other,
            }
        }
    }

    async fn task_info_retrying(&self, id: &str) -> Result<crate::ports::TaskInfo> {
        self.retry_transient("task info", id, || self.backends.containerd.task_info(id)).await
    }

    /// The task's info, asked again a second apart while containerd answers its state UNKNOWN,
    /// for at most UNKNOWN_STATE_SETTLE. containerd does that for a task whose shim it has not
    /// reached again yet after its own restart (or whose shim did not answer within its own
    /// 2 s), which mostly settles within seconds. Taken at its word, a container would stay
    /// UNKNOWN, with no exit monitor, until kubelet stops it, and a sandbox's running pause
    /// task would be killed. The bound is short because crid serves nothing until recovery
    /// ends: a shim that never answers again (the soak saw two, 2 s a question) held a restart
    /// for 29 s when the bound was ten questions.
    async fn task_info_settled(&self, id: &str) -> Result<crate::ports::TaskInfo> {
        let first_ns = self.now_ns();
        let mut attempt = 1;
        loop {
            let info = self.task_info_retrying(id).await?;
            let asked_for = Duration::from_nanos(u64::try_from(self.now_ns() - first_ns).unwrap_or(0));
            if info.state != TaskState::Unknown || asked_for >= UNKNOWN_STATE_SETTLE {
                if info.state == TaskState::Unknown {
                    tracing::warn!(
                        id,
                        attempts = attempt,
                        "containerd still cannot tell the task's state; taken as UNKNOWN"
                    );
                }
                return Ok(info);
            }
            cov_mark::hit!(unknown_task_state_asked_again);
            tracing::info!(id, attempt, "containerd cannot tell the task's state yet; asking again");
            attempt += 1;
            self.sleep(Duration::from_secs(1)).await;
        }
    }

    /// The checkpoint, or the UNKNOWN status when it is missing, corrupt or unreadable; None
    /// when the container's removal was acknowledged before the restart. A removal renames the
    /// checkpoint to the container's removal mark, and nothing writes the checkpoint again: a
    /// container without one was either removed (the mark says so) or lost it (B9). An error
    /// when the mark cannot be read: served, a removed container would come back; quarantined,
    /// it stays in containerd for an operator.
    async fn load_checkpoint(&self, id: &ContainerId) -> Result<Option<ContainerStatus>> {
        let error = match self.retry_transient("read checkpoint", id.as_str(), || self.read_checkpoint(id)).await {
            Ok(status) => return Ok(Some(status)),
            Err(error) => error,
        };
        if !error.is_not_found() {
            tracing::warn!(%id, %error, "status checkpoint unusable; container is UNKNOWN");
            return Ok(Some(ContainerStatus::unknown_status()));
        }
        let mark = self.removal_mark_path(id);
        match self.retry_transient("read removal mark", id.as_str(), || self.backends.os.read_file(&mark)).await {
            // Only the mark's existence counts: one whose data is lost is there too.
            Ok(_) => Ok(None),
            Err(error) if error.kind == crate::error::ErrorKind::DataLoss => Ok(None),
            Err(error) if error.is_not_found() => {
                tracing::warn!(%id, "status checkpoint missing; container is UNKNOWN");
                Ok(Some(ContainerStatus::unknown_status()))
            }
            Err(error) => Err(error.context("cannot tell whether the container was removed")),
        }
    }

    /// The decision table of SPEC §3.4 step 2, with defined outcomes for an interrupted start
    /// (B8), a lost checkpoint with a live task (B9) and a paused task (B27).
    async fn reconcile_container_status(&self, id: &str, mut status: ContainerStatus) -> Decision {
        let now = self.now_ns();
        let state = status.state();
        let info = match self.task_info_settled(id).await {
            Ok(info) => Some(info),
            Err(error) if error.is_not_found() => None,
            Err(error) => {
                tracing::warn!(id, %error, "task state unknown; container is UNKNOWN");
                status.unknown = true;
                return Decision { status, monitor: false, delete_task: false, stable: true };
            }
        };
        let start_error = |status: &mut ContainerStatus| {
            cov_mark::hit!(interrupted_start_became_start_error);
            status.finished_at_ns = now;
            status.exit_code = EXIT_CODE_START_ERROR;
            status.reason = REASON_START_ERROR.into();
            status.message = "start was interrupted by a runtime restart".into();
            status.start_requested = false;
        };
        let vanished = |status: &mut ContainerStatus| {
            status.finished_at_ns = now;
            status.exit_code = EXIT_CODE_UNKNOWN;
            status.reason = REASON_UNKNOWN.into();
            status.pid = 0;
        };
        let Some(info) = info else {
            match state {
                ContainerState::Created if status.start_requested => start_error(&mut status),
                ContainerState::Running => vanished(&mut status),
                _ => {}
            }
            return Decision { status, monitor: false, delete_task: false, stable: false };
        };
        match info.state {
            TaskState::Created => {
                match state {
                    ContainerState::Created => start_error(&mut status),
                    ContainerState::Running => vanished(&mut status),
                    _ => {}
                }
                Decision { status, monitor: false, delete_task: true, stable: false }
            }
            TaskState::Running | TaskState::Paused | TaskState::Pausing => match state {
                ContainerState::Running => Decision { status, monitor: true, delete_task: false, stable: true },
                ContainerState::Created => {
                    // Crash between task start and the started checkpoint. RUNNING is safe to
                    // serve unpersisted: a later restart decides RUNNING or EXITED again.
                    status.started_at_ns = now;
                    status.pid = info.pid;
                    status.start_requested = false;
                    Decision { status, monitor: true, delete_task: false, stable: true }
                }
                // A lost checkpoint stays UNKNOWN (never RUNNING with CreatedAt=0, B9); the
                // monitor turns it EXITED when the task ends, or kubelet stops it.
                ContainerState::Unknown => {
                    cov_mark::hit!(lost_checkpoint_kept_unknown);
                    status.pid = info.pid;
                    Decision { status, monitor: true, delete_task: false, stable: true }
                }
                // A start that was rolled back and answered as failed, whose task delete failed
                // and whose retries died with the process (B32): kubelet was told the start
                // failed, so the task is the rollback's to finish. Deleted (killed first), never
                // served as a running container.
                ContainerState::Exited if status.reason == REASON_START_ERROR => {
                    cov_mark::hit!(failed_start_task_deleted_at_recovery);
                    tracing::warn!(id, "the task of a failed start runs; deleting it");
                    Decision { status, monitor: false, delete_task: true, stable: true }
                }
                ContainerState::Exited => {
                    tracing::warn!(id, "task runs but the checkpoint says exited; container is UNKNOWN");
                    status.unknown = true;
                    Decision { status, monitor: true, delete_task: false, stable: true }
                }
            },
            TaskState::Stopped => {
                let oom_killed = if status.finished_at_ns == 0 {
                    match self.retry_transient("OOM kill count", id, || self.oom_killed_at_exit(id)).await {
                        Ok(oom_killed) => oom_killed,
                        Err(error) => {
                            // Left to the exit path: its Wait returns at once for the stopped
                            // task, and it retries from the backoff queue until the count is
                            // readable, so the exit is recorded with its OOM.
                            tracing::warn!(id, %error, "exited task's OOM kill count unreadable; exit left to the monitor");
                            return Decision { status, monitor: true, delete_task: false, stable: true };
                        }
                    }
                } else {
                    false
                };
                if status.finished_at_ns == 0 || status.unknown {
                    // The exit comes from the task, which is kept until this is persisted, so
                    // the decision is the same after any number of restarts.
                    let exit = info.exit.unwrap_or(crate::ports::ExitStatus::new(
                        EXIT_CODE_UNKNOWN as u32,
                        status.started_at_ns.max(status.created_at_ns).max(1),
                    ));
                    if status.finished_at_ns == 0 {
                        status.finished_at_ns = exit.exited_at_ns.max(status.started_at_ns).max(1);
                        status.exit_code = exit.exit_code as i32;
                        if oom_killed {
                            status.reason = crate::store::container::REASON_OOM_KILLED.to_string();
                        }
                    }
                    if status.created_at_ns == 0 {
                        status.created_at_ns = status.finished_at_ns;
                    }
                    status.unknown = false;
                    status.pid = 0;
                    status.start_requested = false;
                }
                Decision { status, monitor: false, delete_task: true, stable: true }
            }
            TaskState::Unknown => {
                // task_info_settled warned.
                status.unknown = true;
                Decision { status, monitor: false, delete_task: false, stable: true }
            }
        }
    }

    /// Hands a finished (or never started) task of a recovered container or pod to the exit
    /// path, which deletes it (killing it first if it runs) from the backoff queue once crid
    /// serves, and retries with backoff until containerd answers. Recovery does not wait for
    /// the delete: containerd can hold one for many seconds (the real-stack soak saw 28 s for
    /// a task create its own restart had interrupted), and the socket would stay closed that
    /// long. Nothing is lost by not waiting: a container's decision is persisted already, and a
    /// pod whose task is not running is loaded NOTREADY, which the exit path leaves as it is.
    /// Queued, the task counts as work the service holds (invariant 31) from here on.
    fn delete_task_later(&self, task: &TaskId) {
        cov_mark::hit!(recovery_task_delete_deferred);
        let exit = crate::ports::ExitStatus::new(EXIT_CODE_UNKNOWN as u32, self.now_ns());
        self.monitor.push(task, crate::events::PendingEvent::Exit(exit), self.now_ns());
    }

    /// Retries a failed removal in the background: one failed remove (of an orphan at
    /// start-up, of a rolled-back object's dir) must not leave the dir until the next restart.
    /// Gives up after `ORPHAN_REMOVAL_ATTEMPTS` (the next recovery tries again); a dir that
    /// vanished meanwhile is done.
    pub(crate) fn retry_removal(self: &Arc<Self>, path: String) {
        let service = self.clone();
        // Counted while it runs, so that the simulator's quiescence waits for it.
        self.removals_retrying.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            service.retry_removal_attempts(&path).await;
            service.removals_retrying.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
    }

    async fn retry_removal_attempts(&self, path: &str) {
        let mut backoff = Backoff::new(BACKOFF_INITIAL, RECONNECT_MAX);
        for attempt in 2..=ORPHAN_REMOVAL_ATTEMPTS {
            self.sleep(backoff.next_delay()).await;
            match self.backends.os.remove_all(path).await {
                Ok(()) => return,
                Err(error) if error.is_not_found() => return,
                Err(error) if attempt == ORPHAN_REMOVAL_ATTEMPTS => {
                    tracing::error!(path, %error, attempt, "giving up removing the dir until the next start");
                }
                Err(error) => tracing::warn!(path, %error, attempt, "failed to remove the dir; retrying"),
            }
        }
    }

    /// Removes a rolled-back object's dirs. Nobody retries a rollback, so a dir that cannot be
    /// removed now is retried in the background instead of staying behind for good.
    pub(crate) async fn remove_dirs_or_retry(self: &Arc<Self>, dirs: [String; 2]) {
        for dir in dirs {
            match self.backends.os.remove_all(&dir).await {
                Ok(()) => {}
                Err(error) if error.is_not_found() => {}
                Err(error) => {
                    tracing::warn!(dir, %error, "failed to remove a rolled-back object's dir; retrying in the background");
                    cov_mark::hit!(rollback_dir_removal_retried);
                    self.retry_removal(dir);
                }
            }
        }
    }

    /// Removes pod and container dirs that no containerd container owns. Never touches the dirs
    /// of a listed object; plain files other than half-deleted checkpoints and removal marks
    /// are left alone.
    async fn remove_orphan_dirs(self: &Arc<Self>, known: &BTreeSet<String>) {
        for base in [&self.config.root_dir, &self.config.state_dir] {
            for kind in ["sandboxes", "containers"] {
                let dir = format!("{base}/{kind}");
                // Retried as recovery's other reads are: the sweep runs once per start, so a dir
                // it could not read would keep a removed object's state until the next restart.
                let entries = match self.retry_transient("read dir", &dir, || self.backends.os.read_dir(&dir)).await {
                    Ok(entries) => entries,
                    Err(error) => {
                        if !error.is_not_found() {
                            tracing::error!(dir, %error, "cannot read the dir; its orphans stay until the next start");
                        }
                        continue;
                    }
                };
                for entry in entries {
                    let path = format!("{dir}/{}", entry.name);
                    // A removal mark stays while its containerd container does: the removal
                    // resumed above needs it until the record is gone.
                    let orphan = if entry.is_dir {
                        !known.contains(&entry.name)
                    } else if let Some(id) = entry.name.strip_suffix(REMOVAL_MARK_SUFFIX) {
                        !known.contains(id)
                    } else {
                        entry.name.ends_with(".del-status")
                    };
                    if orphan {
                        tracing::info!(path, "removing orphaned state");
                        if let Err(error) = self.backends.os.remove_all(&path).await {
                            tracing::warn!(path, %error, "failed to remove orphaned state; retrying");
                            self.retry_removal(path);
                        }
                    }
                }
            }
        }
    }
}
