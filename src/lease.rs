//! Leases scoped to what they protect (§5.4). A pull's blobs and snapshots, and a rootfs
//! snapshot before its container record exists, are written under a lease of their own, made
//! for that one operation and deleted as soon as a record references what it protected (or the
//! operation failed): content and snapshots are then owned by image references and containers
//! alone, and RemoveImage frees them. No lease id is cached, so a lease deleted behind crid's
//! back costs at most the one operation that held it.
//!
//! A lease that could not be deleted, or whose operation was dropped (a timeout, the pull
//! watchdog), is deleted through the backoff queue; one left by a crash expires by itself and
//! is deleted by the sweep of recovery at the next start. The sweep deletes every lease crid
//! made that no operation of this process holds; it runs again with the reconciler, and through
//! the backoff queue when it could not list the leases.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::Result;
use crate::events::{BackoffKey, PendingEvent};
use crate::ports::{LABEL_LEASE, LeasePurpose};
use crate::service::CriService;

/// A pull lease's expiry: containerd's client default. It only matters when crid dies mid-pull
/// and never starts again (recovery deletes it otherwise); a pull still making progress must
/// not lose its blobs to GC halfway.
pub const PULL_LEASE_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);
/// A rootfs lease's expiry: far beyond the creation timeouts that bound its use.
pub const ROOTFS_LEASE_EXPIRY: Duration = Duration::from_secs(60 * 60);

/// A bound on each lease call, which containerd answers in milliseconds: a call that never
/// returns must not hold up the pull or create it serves for good.
const LEASE_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The leases operations of this process hold: the sweep leaves them alone. An id enters
/// before its lease is created and leaves once its delete was done or queued.
#[derive(Default)]
pub struct LeaseTable {
    held: Mutex<BTreeSet<String>>,
}

/// A lease that this process holds for one operation. `release` deletes it; dropped without
/// that (the operation was cancelled), its deletion is queued.
pub(crate) struct HeldLease<'a> {
    service: &'a CriService,
    id: String,
    released: bool,
}

impl LeaseTable {
    /// The ids held now, in order.
    pub fn held(&self) -> Vec<String> {
        self.held.lock().unwrap().iter().cloned().collect()
    }
}

impl CriService {
    /// Creates a fresh lease for one operation.
    pub(crate) async fn hold_lease(&self, purpose: LeasePurpose) -> Result<HeldLease<'_>> {
        let mut suffix = [0u8; 8];
        self.backends.os.random_bytes(&mut suffix);
        let id = format!("crid-{}-{}", purpose.as_str(), hex::encode(suffix));
        self.leases.held.lock().unwrap().insert(id.clone());
        let lease = HeldLease { service: self, id, released: false };
        let labels: BTreeMap<String, String> = [(LABEL_LEASE.to_string(), purpose.as_str().to_string())].into();
        let expire_after = match purpose {
            LeasePurpose::Pull => PULL_LEASE_EXPIRY,
            LeasePurpose::Rootfs => ROOTFS_LEASE_EXPIRY,
        };
        // A create that failed may still have happened (a reply lost): the guard's drop
        // queues the delete either way.
        let create = self.backends.containerd.create_lease(&lease.id, &labels, expire_after);
        // The id is fresh: AlreadyExists means this create was applied before its reply was lost.
        let created = match self.with_timeout(LEASE_CALL_TIMEOUT, "create lease", create).await {
            Err(error) if error.is_already_exists() => Ok(()),
            other => other,
        };
        created.map_err(|e| e.context(format!("failed to create {} lease", purpose.as_str())))?;
        Ok(lease)
    }

    /// Deletes a lease; gone already counts as done. Used by `HeldLease`, recovery and the
    /// backoff queue's replay.
    pub(crate) async fn delete_lease(&self, id: &str) -> Result<()> {
        match self.with_timeout(LEASE_CALL_TIMEOUT, "delete lease", self.backends.containerd.delete_lease(id)).await {
            Err(error) if error.is_not_found() => Ok(()),
            result => result,
        }
    }

    /// Deletes a lease an operation held and lets go of it; a failure queues the delete.
    async fn delete_held_lease(&self, id: &str) {
        match self.delete_lease(id).await {
            Ok(()) => {
                self.leases.held.lock().unwrap().remove(id);
            }
            Err(error) => {
                tracing::warn!(lease = id, %error, "failed to delete lease; retrying later");
                self.queue_lease_delete(id);
            }
        }
    }

    /// Queues the delete of a lease no operation holds any more.
    fn queue_lease_delete(&self, id: &str) {
        self.monitor.push(BackoffKey::Lease(id.to_string()), PendingEvent::DeleteLease, self.now_ns());
        self.leases.held.lock().unwrap().remove(id);
    }

    /// Deletes every lease crid made that no operation of this process holds: at start-up,
    /// those of an earlier process (a crash mid-pull); later, any whose delete was lost. When
    /// the leases cannot be listed, the sweep is queued for a retry.
    pub(crate) async fn sweep_leases(&self) {
        if let Err(error) = self.try_sweep_leases().await {
            tracing::warn!(%error, "failed to list leases; sweeping again later");
            self.monitor.push(BackoffKey::LeaseSweep, PendingEvent::SweepLeases, self.now_ns());
        }
    }

    pub(crate) async fn try_sweep_leases(&self) -> Result<()> {
        let leases =
            self.with_timeout(LEASE_CALL_TIMEOUT, "list leases", self.backends.containerd.list_leases()).await?;
        for lease in leases.iter().filter(|lease| lease.labels.contains_key(LABEL_LEASE)) {
            if self.leases.held.lock().unwrap().contains(&lease.id) {
                continue;
            }
            cov_mark::hit!(sweep_deleted_unheld_lease);
            tracing::info!(lease = lease.id, "deleting a lease no operation holds");
            if let Err(error) = self.delete_lease(&lease.id).await {
                tracing::warn!(lease = lease.id, %error, "failed to delete a lease; retrying later");
                self.queue_lease_delete(&lease.id);
            }
        }
        Ok(())
    }
}

impl HeldLease<'_> {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Deletes the lease (what it alone held becomes garbage); a failure queues the delete.
    pub(crate) async fn release(mut self) {
        self.service.delete_held_lease(&self.id).await;
        self.released = true;
    }
}

impl HeldLease<'_> {
    /// As `release`, but the delete runs after the caller has moved on: once a record
    /// references what the lease protected, nothing waits on its delete, and the call it
    /// served need not pay for a round trip. The id stays held until the delete is done or
    /// queued, so the sweep never races it.
    pub(crate) fn release_detached(mut self, service: std::sync::Arc<CriService>) {
        self.released = true;
        let id = std::mem::take(&mut self.id);
        tokio::spawn(async move { service.delete_held_lease(&id).await });
    }
}

impl Drop for HeldLease<'_> {
    fn drop(&mut self) {
        if !self.released {
            cov_mark::hit!(dropped_lease_queued_for_delete);
            self.service.queue_lease_delete(&self.id);
        }
    }
}
