//! ListImages, ImageStatus, RemoveImage, ImageFsInfo, and keeping the image store in step with
//! containerd (events, recovery, reconnects).

use std::sync::Arc;

use k8s_cri::v1::{
    FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, ImageStatusRequest,
    ImageStatusResponse, ListImagesRequest, ListImagesResponse, RemoveImageRequest, RemoveImageResponse, UInt64Value,
};

use crate::error::{Error, Result};
use crate::events::{BackoffKey, PendingEvent};
use crate::naming::normalize_image_ref;
use crate::ports::{IMAGE_MANAGED, LABEL_IMAGE_MANAGED, SnapshotUsage};
use crate::rpc::image_pull::image_from_content;
use crate::service::CriService;
use crate::store::Image;

/// Keyed-lock prefix of one image reference: a change to the reference in containerd and the
/// store's update that follows are made under it, so that an update can never act on a read of
/// containerd older than another's write.
pub const IMAGE_REF_LOCK_PREFIX: &str = "image://";

/// `pinned`: the image is the sandbox image, which containerd pins (kubelet's image garbage
/// collection never removes a pinned image).
fn image_message(image: &Image, pinned: bool) -> k8s_cri::v1::Image {
    let user = &image.config.user;
    let user_part = user.split(':').next().unwrap_or_default();
    let (uid, username) = match user_part.parse::<i64>() {
        Ok(uid) => (Some(k8s_cri::v1::Int64Value { value: uid }), String::new()),
        Err(_) => (None, user_part.to_string()),
    };
    k8s_cri::v1::Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags(),
        repo_digests: image.repo_digests(),
        size: image.size_bytes,
        uid,
        username,
        // containerd 1.7 leaves the spec out (it came with runtime-class images, in 2.0).
        spec: None,
        pinned,
    }
}

impl CriService {
    /// Resolves an image locally: by id, by (normalised) reference, or by id prefix.
    pub(crate) fn local_resolve(&self, id_or_ref: &str) -> Result<Image> {
        self.images.resolve(id_or_ref, |reference| normalize_image_ref(reference).ok())
    }

    /// The image, pulled first if it is not present (the sandbox image).
    pub(crate) async fn ensure_image_exists(self: &Arc<Self>, reference: &str) -> Result<Image> {
        if let Ok(image) = self.local_resolve(reference) {
            return Ok(image);
        }
        // The sandbox image is pulled anonymously, as containerd does without a configured
        // credential for its registry.
        let id = self.pull(reference, &crate::ports::RegistryAuth::default()).await?;
        self.images.get(&id).ok_or_else(|| Error::not_found(format!("image {id:?} vanished after pull")))
    }

    /// Whether an image is pinned: one of its names is the configured sandbox image's.
    fn pinned_by(&self) -> impl Fn(&Image) -> bool + use<> {
        let sandbox = normalize_image_ref(&self.config.sandbox_image).ok();
        move |image| sandbox.as_ref().is_some_and(|sandbox| image.references.contains(sandbox))
    }

    pub async fn list_images(self: &Arc<Self>, request: ListImagesRequest) -> Result<ListImagesResponse> {
        self.check_initialized()?;
        let wanted = request.filter.and_then(|f| f.image).map(|i| i.image).filter(|i| !i.is_empty());
        let pinned = self.pinned_by();
        let images = match wanted {
            Some(reference) => {
                self.local_resolve(&reference).into_iter().map(|i| image_message(&i, pinned(&i))).collect()
            }
            None => self.images.list().iter().map(|i| image_message(i, pinned(i))).collect(),
        };
        Ok(ListImagesResponse { images })
    }

    pub async fn image_status(self: &Arc<Self>, request: ImageStatusRequest) -> Result<ImageStatusResponse> {
        self.check_initialized()?;
        let reference = request.image.map(|i| i.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(Error::invalid("image is required"));
        }
        let image = match self.local_resolve(&reference) {
            Ok(image) => image,
            Err(error) if error.is_not_found() => return Ok(ImageStatusResponse::default()),
            Err(error) => return Err(error),
        };
        let mut info = std::collections::HashMap::new();
        if request.verbose {
            let verbose = serde_json::json!({ "chainID": image.chain_id, "imageSpec": image.config });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(ImageStatusResponse { image: Some(image_message(&image, self.pinned_by()(&image))), info })
    }

    pub async fn remove_image(self: &Arc<Self>, request: RemoveImageRequest) -> Result<RemoveImageResponse> {
        self.check_initialized()?;
        let reference = request.image.map(|i| i.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(Error::invalid("image is required"));
        }
        let image = match self.local_resolve(&reference) {
            Ok(image) => image,
            Err(error) if error.is_not_found() => return Ok(RemoveImageResponse {}),
            Err(error) => return Err(error),
        };
        // The id reference goes last: until then an event for a name still finds the image by
        // its id, and never re-creates an id reference for an image being removed.
        let mut references: Vec<String> = image.references.iter().filter(|r| **r != image.id).cloned().collect();
        if image.references.contains(&image.id) {
            references.push(image.id.clone());
        }
        // Detached: a caller that gives up must not leave a reference deleted in containerd but
        // still in the store.
        let service = self.clone();
        self.detached(async move {
            for (index, name) in references.iter().enumerate() {
                // The last delete is synchronous so that garbage collection has run on return.
                let last = index + 1 == references.len();
                let _held = service.lock_image_reference(name).await;
                let deadline = super::image_pull::IMAGE_METADATA_TIMEOUT;
                let delete = service.backends.containerd.delete_image(name, last);
                match service.with_timeout(deadline, "delete image", delete).await {
                    Ok(()) => {}
                    Err(error) if error.is_not_found() => {}
                    Err(error) => {
                        // A deadline or a lost connection says nothing about whether the delete
                        // was applied: read back, so the store never keeps a reference
                        // containerd no longer has.
                        let read = service.backends.containerd.get_image(name);
                        match service.with_timeout(deadline, "read back image", read).await {
                            Err(gone) if gone.is_not_found() => {}
                            read => {
                                // A read that failed leaves unknown whether containerd still has
                                // the reference (the delete's event may be lost too): a re-read
                                // brings the store in step whichever way it went.
                                if let Err(read_error) = read {
                                    cov_mark::hit!(unclear_image_delete_refresh_queued);
                                    service.queue_image_refresh(name.clone(), read_error);
                                }
                                return Err(error.context(format!("failed to delete image reference {name:?}")));
                            }
                        }
                    }
                }
                service.images.set_reference(name, None);
            }
            Ok(())
        })
        .await?;
        Ok(RemoveImageResponse {})
    }

    /// Holds one image reference (`IMAGE_REF_LOCK_PREFIX`): whoever changes the reference in
    /// containerd, or reads it to update the store, does both under it.
    pub(crate) async fn lock_image_reference(&self, name: &str) -> crate::kmutex::KeyGuard {
        self.pulls.locks.lock(&format!("{IMAGE_REF_LOCK_PREFIX}{name}")).await
    }

    pub async fn image_fs_info(self: &Arc<Self>, _request: ImageFsInfoRequest) -> Result<ImageFsInfoResponse> {
        self.check_initialized()?;
        let (usage, sampled_at_ns) = {
            let cache = self.snapshot_usage.lock().unwrap();
            (SnapshotUsage::total(cache.by_key.values()), cache.sampled_at_ns)
        };
        let mountpoint = format!(
            "{}/io.containerd.snapshotter.v1.{}",
            self.config.containerd_root_dir, self.config.containerd.snapshotter
        );
        let usage = FilesystemUsage {
            timestamp: sampled_at_ns,
            fs_id: Some(FilesystemIdentifier { mountpoint }),
            used_bytes: Some(UInt64Value { value: usage.size_bytes }),
            inodes_used: Some(UInt64Value { value: usage.inodes }),
        };
        Ok(ImageFsInfoResponse { image_filesystems: vec![usage], container_filesystems: vec![] })
    }

    /// Re-reads one reference from containerd and updates the store: level-triggered, so
    /// duplicated or reordered events do no harm. Adopts unmanaged images. The read and the
    /// update are made under the reference's lock: a read that a pull or a removal overtook
    /// before the update would otherwise undo what they did (a removed reference back in the
    /// store, a created one dropped from it).
    /// Every such update has a deadline (`IMAGE_METADATA_TIMEOUT`): a containerd call that
    /// never returns must not hold the reference's lock, and every pull of it, for good.
    pub(crate) async fn update_image_reference(&self, name: &str) -> Result<()> {
        let update = self.update_image_reference_locked(name);
        self.with_timeout(super::image_pull::IMAGE_METADATA_TIMEOUT, "image reference update", update).await
    }

    async fn update_image_reference_locked(&self, name: &str) -> Result<()> {
        let _held = self.lock_image_reference(name).await;
        let containerd = &self.backends.containerd;
        let mut record = match containerd.get_image(name).await {
            Ok(record) => record,
            Err(error) if error.is_not_found() => {
                self.images.set_reference(name, None);
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let content = containerd.image_content(&record).await?;
        if !content.complete {
            tracing::warn!(name, "image content is incomplete; not serving it");
            self.images.set_reference(name, None);
            return Ok(());
        }
        if record.labels.get(LABEL_IMAGE_MANAGED).map(String::as_str) != Some(IMAGE_MANAGED) {
            record.labels.insert(LABEL_IMAGE_MANAGED.to_string(), IMAGE_MANAGED.to_string());
            containerd.update_image(&record).await?;
        }
        if name != content.config_digest {
            // The id reference: created if missing, and in the store whenever it is in
            // containerd (an id reference present in both is never left out of the store).
            let _id_held = self.lock_image_reference(&content.config_digest).await;
            match containerd.get_image(&content.config_digest).await {
                Ok(_) => {}
                Err(error) if error.is_not_found() => {
                    let id_record = crate::ports::ImageRecord {
                        name: content.config_digest.clone(),
                        target: record.target.clone(),
                        labels: record.labels.clone(),
                    };
                    match containerd.create_image(&id_record).await {
                        Ok(()) => {}
                        Err(error) if error.is_already_exists() => {}
                        Err(error) => return Err(error),
                    }
                }
                Err(error) => return Err(error),
            }
            self.images.set_reference(&content.config_digest, Some(image_from_content(&content)));
        }
        self.images.set_reference(name, Some(image_from_content(&content)));
        Ok(())
    }

    /// Queues a re-read of an image reference whose update failed. Nothing else would repair
    /// it: containerd sends no second event for a reference that did not change again, and a
    /// name missing from (or stale in) the store breaks invariant 25 until a restart.
    pub(crate) fn queue_image_refresh(&self, name: String, error: Error) {
        cov_mark::hit!(image_refresh_queued);
        tracing::warn!(name, %error, "image reference update failed; queued for retry");
        self.monitor.push_failed(BackoffKey::Image(name), PendingEvent::RefreshImage, error, self.now_ns());
    }

    /// Makes the store match containerd's image list: adds what is there, drops what is gone.
    /// Returns how many images failed to load.
    pub(crate) async fn resync_images(&self) -> Result<usize> {
        // A deadline: recovery waits for this, and a call that never returns must not keep
        // the service uninitialized for good.
        let deadline = super::image_pull::IMAGE_METADATA_TIMEOUT;
        let records = self.with_timeout(deadline, "list images", self.backends.containerd.list_images()).await?;
        let present: std::collections::BTreeSet<String> = records.iter().map(|r| r.name.clone()).collect();
        let mut failed = 0;
        for record in &records {
            if let Err(error) = self.update_image_reference(&record.name).await {
                tracing::warn!(name = record.name, %error, "failed to load image");
                failed += 1;
            }
        }
        // Gone from the list: re-read each under its lock rather than drop it, since a pull may
        // have created it since the list was read.
        for name in self.images.references().keys() {
            if !present.contains(name)
                && let Err(error) = self.update_image_reference(name).await
            {
                tracing::warn!(name, %error, "failed to re-read image");
                failed += 1;
            }
        }
        Ok(failed)
    }
}
