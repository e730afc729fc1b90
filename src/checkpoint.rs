//! Container status checkpoints: written atomically through the Os trait, memory changed only
//! after the write succeeded.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ids::ContainerId;
use crate::service::CriService;
use crate::store::container::{Checkpoint, CheckpointRef};
use crate::store::{Container, ContainerStatus};

pub const CHECKPOINT_VERSION: &str = "v1";

pub fn encode_checkpoint(status: &ContainerStatus) -> Vec<u8> {
    // Sized for a typical status (about 300 bytes) so that the buffer is not grown field by field.
    let mut bytes = Vec::with_capacity(512);
    serde_json::to_writer(&mut bytes, &CheckpointRef { version: CHECKPOINT_VERSION, status })
        .expect("status serialises");
    bytes
}

/// Parses a checkpoint; a torn or corrupt file is an error, never a partial status.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<ContainerStatus> {
    let checkpoint: Checkpoint = serde_json::from_slice(bytes)
        .map_err(|e| Error::new(crate::error::ErrorKind::DataLoss, format!("corrupt status checkpoint: {e}")))?;
    if checkpoint.version != CHECKPOINT_VERSION {
        return Err(Error::new(
            crate::error::ErrorKind::DataLoss,
            format!("unsupported checkpoint version {:?}", checkpoint.version),
        ));
    }
    Ok(checkpoint.status)
}

impl CriService {
    pub(crate) async fn write_checkpoint(&self, id: &ContainerId, status: &ContainerStatus) -> Result<()> {
        let path = self.checkpoint_path(id);
        let bytes = encode_checkpoint(status);
        let mut result = self.backends.os.write_atomic(&path, &bytes).await;
        if result.as_ref().is_err_and(|e| e.is_not_found()) {
            // The container's directory is gone (a rollback or orphan cleanup raced a crash):
            // recreate it rather than leave the container unable to record anything again.
            self.backends.os.mkdir_all(&self.container_root(id)).await?;
            result = self.backends.os.write_atomic(&path, &bytes).await;
        }
        result.map_err(|e| e.context("failed to checkpoint container status"))
    }

    pub(crate) async fn read_checkpoint(&self, id: &ContainerId) -> Result<ContainerStatus> {
        decode_checkpoint(&self.backends.os.read_file(&self.checkpoint_path(id)).await?)
    }

    /// Deletes the checkpoint: rename out of the way first so that a crash never leaves a
    /// half-removed file under the real name. Idempotent.
    pub(crate) async fn delete_checkpoint(&self, id: &ContainerId) -> Result<()> {
        let path = self.checkpoint_path(id);
        let deleted = self.deleted_checkpoint_path(id);
        match self.backends.os.rename(&path, &deleted).await {
            Ok(()) => {}
            Err(error) if error.is_not_found() => {}
            Err(error) => return Err(error),
        }
        self.backends.os.remove_all(&deleted).await
    }

    /// A rolled-back container's checkpoint delete. Nobody retries a rollback, and the
    /// renamed checkpoint lies beside the container's dir, not in it: one that cannot be
    /// removed now is retried in the background, as the rollback's dirs are, instead of staying
    /// until the next start's orphan sweep.
    pub(crate) async fn delete_checkpoint_or_retry(self: &Arc<Self>, id: &ContainerId) {
        if let Err(error) = self.delete_checkpoint(id).await {
            tracing::warn!(%id, %error, "failed to delete a rolled-back container's checkpoint; retrying in the background");
            cov_mark::hit!(rollback_checkpoint_removal_retried);
            self.retry_removal(self.deleted_checkpoint_path(id));
        }
    }

    /// The status transaction: `change` edits a copy and says whether anything changed; the copy
    /// is persisted, then becomes the in-memory status. A failed write leaves memory untouched.
    pub(crate) async fn update_container_status(
        &self,
        container: &Container,
        change: impl FnOnce(&mut ContainerStatus) -> bool,
    ) -> Result<bool> {
        let _guard = container.update_lock.lock().await;
        let mut status = container.status();
        if !change(&mut status) {
            return Ok(false);
        }
        if status.removing {
            // The removal may have renamed the checkpoint to its mark already, and a write now
            // would bring it back for an object about to go. The event path retries the change:
            // it then finds the container gone, or, had the removal failed, applies it.
            cov_mark::hit!(status_change_during_removal_deferred);
            return Err(Error::unavailable(format!("container {:?} is being removed", container.id.as_str())));
        }
        // Checked before the write: an illegal status is never persisted.
        container.check_status(&status)?;
        self.write_checkpoint(&container.id, &status).await?;
        container.set_status(status)?;
        Ok(true)
    }

    /// Changes in-memory-only fields (Starting, Removing) under the same lock.
    pub(crate) async fn update_container_memory<T>(
        &self,
        container: &Container,
        change: impl FnOnce(&mut ContainerStatus) -> Result<T>,
    ) -> Result<T> {
        let _guard = container.update_lock.lock().await;
        let mut status = container.status();
        let value = change(&mut status)?;
        container.set_status(status)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_persisted_fields_only() {
        let status =
            ContainerStatus { pid: 7, created_at_ns: 1, started_at_ns: 2, starting: true, ..Default::default() };
        let decoded = decode_checkpoint(&encode_checkpoint(&status)).unwrap();
        assert_eq!(decoded.pid, 7);
        assert_eq!(decoded.started_at_ns, 2);
        assert!(!decoded.starting, "in-memory flags are not persisted");
        let bytes = encode_checkpoint(&status);
        assert!(decode_checkpoint(&bytes[..bytes.len() / 2]).is_err(), "a torn write is rejected");
    }

    /// The borrowed encoding writes exactly what the owned one did: checkpoints on disk, and the
    /// comparison that skips rewriting an unchanged one, depend on the bytes.
    #[test]
    fn checkpoint_bytes_are_those_of_the_owned_encoding() {
        let status = ContainerStatus {
            pid: 7,
            created_at_ns: 1,
            started_at_ns: 2,
            finished_at_ns: 3,
            exit_code: 137,
            reason: "OOMKilled".into(),
            message: "a \"quoted\" message".into(),
            resources: Some(Default::default()),
            start_requested: true,
            removing: true,
            ..Default::default()
        };
        let owned = Checkpoint { version: CHECKPOINT_VERSION.to_string(), status: status.clone() };
        assert_eq!(encode_checkpoint(&status), serde_json::to_vec(&owned).unwrap());
        assert_eq!(
            String::from_utf8(encode_checkpoint(&ContainerStatus::default())).unwrap(),
            r#"{"version":"v1","pid":0,"created_at_ns":0,"started_at_ns":0,"finished_at_ns":0,"exit_code":0,"reason":"","message":"","resources":null,"start_requested":false}"#
        );
    }
}
