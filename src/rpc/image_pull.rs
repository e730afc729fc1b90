//! PullImage with two levels of deduplication: N concurrent pulls of one reference share one
//! pull (as CRI-O does), and pulls of images that share layers fetch each blob and apply each
//! snapshot once, under keyed locks on `blob://digest` and `sn://snapshotter/chain` (B21).
//! A pull is cancelled when requests are active but no byte arrives for the progress timeout.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::watch;
use k8s_cri::v1::{PullImageRequest, PullImageResponse};

use crate::error::{Error, Result};
use crate::kmutex::KeyedMutex;
use crate::naming::{ImageRef, normalize_image_ref};
use crate::ports::{
    Descriptor, IMAGE_MANAGED, IMAGE_PINNED, ImageContent, ImageRecord, LABEL_IMAGE_MANAGED, LABEL_IMAGE_PINNED,
    LeasePurpose, RegistryAuth, ResolvedImage,
};
use crate::service::CriService;
use crate::store::Image;

type PullResult = watch::Receiver<Option<Result<String>>>;

pub struct PullManager {
    in_flight: Mutex<BTreeMap<String, PullResult>>,
    pub locks: KeyedMutex,
    pub pulls_started_total: AtomicU64,
    pub pulls_joined_total: AtomicU64,
}

impl Default for PullManager {
    fn default() -> Self {
        Self::new()
    }
}

impl PullManager {
    pub fn new() -> Self {
        PullManager {
            in_flight: Mutex::new(BTreeMap::new()),
            locks: KeyedMutex::new(),
            pulls_started_total: AtomicU64::new(0),
            pulls_joined_total: AtomicU64::new(0),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().unwrap().len()
    }
}

/// A bound on a pull's metadata calls to containerd (does a blob or snapshot exist, leases,
/// image references), which answer in milliseconds: a call that never returns would otherwise
/// hold the blob's, layer's or reference's lock and every later pull of it for good, since the
/// progress watchdog only watches downloads. Unpacking a layer has its own, longer bound.
pub(crate) const IMAGE_METADATA_TIMEOUT: Duration = Duration::from_secs(60);

/// A bound on unpacking one layer: minutes for a large layer, never forever. A diff apply that
/// never returns would hold the layer's lock, and with it every later pull of an image that
/// shares the layer (the sandbox image's included), and the watchdog cannot see it: an unpack
/// reports no bytes. Five minutes (containerd's pull progress timeout) plus a second for every
/// MiB of the compressed layer, a floor no live unpack falls under.
const LAYER_UNPACK_TIMEOUT_BASE: Duration = Duration::from_secs(5 * 60);
const LAYER_UNPACK_MIN_BYTES_PER_S: u64 = 1 << 20;

fn layer_unpack_timeout(layer: &Descriptor) -> Duration {
    LAYER_UNPACK_TIMEOUT_BASE + Duration::from_secs(layer.size_bytes / LAYER_UNPACK_MIN_BYTES_PER_S)
}

/// Bytes received and requests active, for the progress watchdog.
#[derive(Default)]
struct Progress {
    bytes: AtomicU64,
    active: AtomicU64,
}

/// The chain ids of a stack of layers, as OCI defines them.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => format!("sha256:{}", hex::encode(Sha256::digest(format!("{parent} {diff_id}").as_bytes()))),
        };
        chain.push(next);
    }
    chain
}

impl CriService {
    pub async fn pull_image(self: &Arc<Self>, request: PullImageRequest) -> Result<PullImageResponse> {
        self.check_initialized()?;
        let image = request.image.ok_or_else(|| Error::invalid("image spec is required"))?;
        let auth = RegistryAuth::from_cri(request.auth.as_ref())?;
        let image_ref = self.pull(&image.image, &auth).await?;
        Ok(PullImageResponse { image_ref })
    }

    /// Pulls (or joins the pull of) a reference; returns the image id (config digest). Only
    /// pulls with the same credentials are joined: one that cannot authenticate must not fail
    /// the others, nor succeed on their credentials. Blobs are still fetched once across all.
    pub(crate) async fn pull(self: &Arc<Self>, reference: &str, auth: &RegistryAuth) -> Result<String> {
        let reference = ImageRef::parse(reference)?;
        let normalized = reference.to_string();
        let key =
            if auth.is_anonymous() { normalized.clone() } else { format!("{normalized} auth:{}", auth.fingerprint()) };
        // Join or start under one lock acquisition: a separate get and insert would let two
        // callers on two threads both start a pull of the same key.
        let (mut receiver, start) = {
            let mut in_flight = self.pulls.in_flight.lock().unwrap();
            match in_flight.get(&key) {
                Some(receiver) => (receiver.clone(), None),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    in_flight.insert(key.clone(), receiver.clone());
                    (receiver, Some(sender))
                }
            }
        };
        match start {
            None => {
                cov_mark::hit!(pull_joined_in_flight);
                self.pulls.pulls_joined_total.fetch_add(1, Ordering::Relaxed);
            }
            Some(sender) => {
                self.pulls.pulls_started_total.fetch_add(1, Ordering::Relaxed);
                let service = self.clone();
                let auth = auth.clone();
                // Its own task: the pull completes for the others if the first caller leaves.
                tokio::spawn(async move {
                    let result = service.pull_with_watchdog(&reference, &auth).await;
                    service.pulls.in_flight.lock().unwrap().remove(&key);
                    sender.send_replace(Some(result));
                });
            }
        }
        match receiver.wait_for(|r| r.is_some()).await {
            Ok(result) => result.clone().expect("checked"),
            Err(_) => Err(Error::internal("pull ended without a result")),
        }
    }

    async fn pull_with_watchdog(self: &Arc<Self>, reference: &ImageRef, auth: &RegistryAuth) -> Result<String> {
        let progress = Arc::new(Progress::default());
        let timeout = self.config.image_pull_progress_timeout;
        let pull = self.pull_steps(reference, auth, progress.clone());
        if timeout.is_zero() {
            return pull.await;
        }
        tokio::select! {
            biased;
            result = pull => result,
            error = self.progress_watchdog(progress, timeout) => Err(error.context(format!("failed to pull image {reference:?}"))),
        }
    }

    /// Completes when requests are active and no byte arrived for `timeout`.
    async fn progress_watchdog(&self, progress: Arc<Progress>, timeout: Duration) -> Error {
        let interval = if timeout < Duration::from_secs(10) {
            (timeout / 2).max(Duration::from_secs(5)).min(timeout)
        } else {
            Duration::from_secs(10)
        };
        let mut last_bytes = progress.bytes.load(Ordering::Relaxed);
        let mut last_change_ns = self.now_ns();
        loop {
            self.sleep(interval).await;
            let bytes = progress.bytes.load(Ordering::Relaxed);
            let now = self.now_ns();
            if bytes != last_bytes || progress.active.load(Ordering::Relaxed) == 0 {
                last_bytes = bytes;
                last_change_ns = now;
                continue;
            }
            if now - last_change_ns >= timeout.as_nanos() as i64 {
                return Error::new(
                    crate::error::ErrorKind::DeadlineExceeded,
                    format!("cancelled: no progress for {timeout:?}"),
                );
            }
        }
    }

    async fn pull_steps(
        self: &Arc<Self>,
        reference: &ImageRef,
        auth: &RegistryAuth,
        progress: Arc<Progress>,
    ) -> Result<String> {
        // One lease per pull (joined pulls share it), gone once the image references hold
        // what it protected, or the pull failed (§5.4).
        let lease = self.hold_lease(LeasePurpose::Pull).await?;
        let result = self.pull_under_lease(reference, auth, lease.id(), &progress).await;
        lease.release().await;
        result
    }

    async fn pull_under_lease(
        self: &Arc<Self>,
        image_ref: &ImageRef,
        auth: &RegistryAuth,
        lease: &str,
        progress: &Arc<Progress>,
    ) -> Result<String> {
        let reference = &image_ref.to_string();
        progress.active.fetch_add(1, Ordering::Relaxed);
        let resolved = self.backends.registry.resolve(reference, auth).await;
        progress.active.fetch_sub(1, Ordering::Relaxed);
        let resolved = resolved.map_err(|e| e.context(format!("failed to resolve reference {reference:?}")))?;

        // The manifest too: the image record points at it, and GC follows it to the rest.
        let mut blobs: Vec<&Descriptor> = vec![&resolved.manifest, &resolved.config];
        blobs.extend(resolved.layers.iter());
        let concurrency = self.config.max_concurrent_downloads as usize;
        // At most `max_concurrent_downloads` fetches at once, per pull.
        let permits = tokio::sync::Semaphore::new(concurrency);
        let mut fetches = Vec::with_capacity(blobs.len());
        for blob in blobs {
            let permits = &permits;
            fetches.push(async move {
                let _permit = permits.acquire().await.expect("never closed");
                self.fetch_once(reference, blob, auth, lease, progress).await
            });
        }
        let snapshotter = self.config.containerd.snapshotter.clone();
        // The config is read while the blobs are fetched: the manifest names the layers, and
        // only their unpack needs the diff ids. Then the image's top snapshot is looked for: a
        // re-pull finds it, and then its parents too (containerd removes no snapshot before its
        // children), held by the lease through it, so nothing is unpacked and the unpack's round
        // trips per layer are not waited for after the blobs'.
        let configured = async {
            progress.active.fetch_add(1, Ordering::Relaxed);
            let read = self.backends.registry.read_config(reference, &resolved.config, auth).await;
            progress.active.fetch_sub(1, Ordering::Relaxed);
            let read = read.map_err(|e| e.context(format!("failed to read the image config of {reference:?}")))?;
            if resolved.layers.len() != read.diff_ids.len() {
                return Err(Error::invalid(format!(
                    "image {reference:?}: the manifest has {} layers but the config {} diff ids",
                    resolved.layers.len(),
                    read.diff_ids.len()
                )));
            }
            let chains = chain_ids(&read.diff_ids);
            let unpacked = match chains.last() {
                Some(top) => self.snapshot_present(&snapshotter, top, lease).await?,
                None => false,
            };
            Ok((read, chains, unpacked))
        };
        let (fetched, configured) = futures::join!(futures::future::join_all(fetches), configured);
        let (read, chains, unpacked) = configured?;
        fetched.into_iter().collect::<Result<Vec<()>>>()?;
        let resolved = ResolvedImage::from_parts(resolved, read);
        if unpacked {
            cov_mark::hit!(pull_found_its_top_snapshot);
        } else {
            let mut parent = String::new();
            for (layer, chain) in resolved.layers.iter().zip(&chains) {
                self.apply_once(&snapshotter, chain, &parent, layer, lease).await?;
                parent = chain.clone();
            }
        }
        let references = self.create_image_references(image_ref, &resolved, &chains);
        self.with_timeout(IMAGE_METADATA_TIMEOUT, "create image references", references).await
    }

    async fn fetch_once(
        &self,
        reference: &str,
        blob: &Descriptor,
        auth: &RegistryAuth,
        lease: &str,
        progress: &Progress,
    ) -> Result<()> {
        let _held = self.pulls.locks.lock(&format!("blob://{}", blob.digest)).await;
        let exists = self.backends.containerd.content_exists(&blob.digest, lease);
        if self.with_timeout(IMAGE_METADATA_TIMEOUT, "content exists", exists).await? {
            return Ok(());
        }
        progress.active.fetch_add(1, Ordering::Relaxed);
        let report = |bytes: u64| {
            progress.bytes.fetch_add(bytes, Ordering::Relaxed);
        };
        let result = self.backends.registry.fetch_blob(reference, blob, auth, lease, &report).await;
        progress.active.fetch_sub(1, Ordering::Relaxed);
        result.map_err(|e| e.context(format!("failed to fetch {}", blob.digest)))
    }

    /// Whether the committed snapshot `chain_id` exists, held by `lease` first (§5.4).
    async fn snapshot_present(&self, snapshotter: &str, chain_id: &str, lease: &str) -> Result<bool> {
        let exists = self.backends.containerd.snapshot_exists(snapshotter, chain_id, lease);
        self.with_timeout(IMAGE_METADATA_TIMEOUT, "snapshot exists", exists).await
    }

    async fn apply_once(
        &self,
        snapshotter: &str,
        chain_id: &str,
        parent: &str,
        layer: &Descriptor,
        lease: &str,
    ) -> Result<()> {
        let _held = self.pulls.locks.lock(&format!("sn://{snapshotter}/{chain_id}")).await;
        if self.snapshot_present(snapshotter, chain_id, lease).await? {
            return Ok(());
        }
        // A timed-out unpack is dropped, and with it the layer's lock; the pull fails and the
        // next one finds the snapshot if containerd finished it after all.
        let apply = self.backends.containerd.apply_layer(snapshotter, chain_id, parent, layer, lease);
        match self.with_timeout(layer_unpack_timeout(layer), "unpack layer", apply).await {
            Ok(()) => Ok(()),
            Err(error) if error.is_already_exists() => Ok(()),
            Err(error) => Err(error.context(format!("failed to unpack layer {}", layer.digest))),
        }
    }

    /// Creates (or moves) the tag, digest and id references and updates the store.
    async fn create_image_references(
        &self,
        reference: &ImageRef,
        resolved: &ResolvedImage,
        chains: &[String],
    ) -> Result<String> {
        let image_id = resolved.config.digest.clone();
        let mut names = vec![];
        if reference.tag().is_some() {
            names.push(reference.to_string());
        }
        names.push(format!("{}@{}", reference.name(), resolved.manifest.digest));
        names.push(image_id.clone());
        let mut labels: BTreeMap<String, String> =
            [(LABEL_IMAGE_MANAGED.to_string(), IMAGE_MANAGED.to_string())].into();
        // The sandbox image's references carry containerd's pinned label, as containerd's own
        // pull puts it there, for tools that read containerd's images.
        if normalize_image_ref(&self.config.sandbox_image).is_ok_and(|sandbox| sandbox == reference.to_string()) {
            labels.insert(LABEL_IMAGE_PINNED.to_string(), IMAGE_PINNED.to_string());
        }
        // As containerd counts an image's size: the manifest, the config and the layers, as
        // stored (compressed); the backend counts an image it reads back the same way.
        let size_bytes = resolved.manifest.size_bytes
            + resolved.config.size_bytes
            + resolved.layers.iter().map(|l| l.size_bytes).sum::<u64>();
        let content = ImageContent {
            config_digest: image_id.clone(),
            chain_id: chains.last().cloned().unwrap_or_default(),
            size_bytes,
            image_config: resolved.image_config.clone(),
            complete: true,
        };
        // The references are independent of each other and written at once, each created and
        // stored under its own lock, so that an image event handled meanwhile never acts on a
        // read from before the create. The first failure (in name order) is the pull's.
        let writes = names.iter().map(|name| async {
            let _held = self.lock_image_reference(name).await;
            let mut unfinished = RefreshUnlessFinished { service: self, name, armed: true };
            let written = self.write_image_reference(name, &image_id, resolved, &labels, &content).await;
            unfinished.armed = false;
            written
        });
        futures::future::join_all(writes).await.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(image_id)
    }

    /// Points `name` at the pulled image in containerd, then in the store. Called under the
    /// reference's lock.
    async fn write_image_reference(
        &self,
        name: &str,
        image_id: &str,
        resolved: &ResolvedImage,
        labels: &BTreeMap<String, String>,
        content: &ImageContent,
    ) -> Result<()> {
        let record = ImageRecord { name: name.to_string(), target: resolved.manifest.clone(), labels: labels.clone() };
        // A re-pull (kubelet's Always policy) mostly finds the reference as the last pull
        // left it: read it first and write only what differs, rather than a create that
        // containerd refuses with AlreadyExists followed by the same read.
        let refreshed = self.images.points_at(name, image_id)
            && match self.refresh_image_reference(&record).await {
                Ok(()) => true,
                // Gone meanwhile: created below.
                Err(error) if error.is_not_found() => false,
                Err(error) => return Err(error),
            };
        if refreshed {
            cov_mark::hit!(image_reference_refreshed_without_create);
        } else {
            self.create_image_reference(&record).await?;
        }
        self.images.set_reference(name, Some(image_from_content(content)));
        Ok(())
    }

    /// Creates the reference; one that exists is refreshed, and a create whose outcome is
    /// unknown is read back.
    async fn create_image_reference(&self, record: &ImageRecord) -> Result<()> {
        let name = &record.name;
        match self.backends.containerd.create_image(record).await {
            Ok(()) => {}
            Err(error) if error.is_already_exists() => {
                if let Err(error) = self.refresh_image_reference(record).await {
                    // containerd has the reference but the store may not: a re-read brings the
                    // store in step, as the image event would had it not been lost.
                    if !error.is_not_found() {
                        cov_mark::hit!(existing_image_reference_refresh_queued);
                        self.queue_image_refresh(name.clone(), error.clone());
                    }
                    return Err(error);
                }
            }
            Err(error) => {
                // A deadline or a lost connection says nothing about whether the create was
                // applied: read back, so that a reference containerd has is never missing
                // from the store (invariant 25) nor the pull failed for it.
                let read = self.backends.containerd.get_image(name);
                match self.with_timeout(IMAGE_METADATA_TIMEOUT, "read back image", read).await {
                    Ok(existing) if existing.target == record.target => {
                        cov_mark::hit!(image_create_applied_despite_error);
                    }
                    read => {
                        // A read that failed leaves unknown whether containerd has the
                        // reference: a re-read brings the store in step whichever way it went.
                        if let Err(read_error) = read
                            && !read_error.is_not_found()
                        {
                            self.queue_image_refresh(name.clone(), read_error);
                        }
                        return Err(error.context(format!("failed to create image reference {name:?}")));
                    }
                }
            }
        }
        Ok(())
    }

    /// Points an existing image reference at the record's target, with the managed label,
    /// unless it already is.
    async fn refresh_image_reference(&self, record: &ImageRecord) -> Result<()> {
        let existing = self.backends.containerd.get_image(&record.name).await?;
        let managed = existing.labels.get(LABEL_IMAGE_MANAGED).map(String::as_str) == Some(IMAGE_MANAGED);
        if existing.target != record.target || !managed {
            self.backends.containerd.update_image(record).await?;
        }
        Ok(())
    }
}

/// Queues a re-read of an image reference whose write was cut off (dropped by the references'
/// deadline or the pull's watchdog) before it finished: its create or update may have reached
/// containerd without the store following, and the image event that would repair it may never
/// come (invariant 25). A write that finishes, well or not, disarms it: its own error paths
/// decide.
struct RefreshUnlessFinished<'a> {
    service: &'a CriService,
    name: &'a str,
    armed: bool,
}

impl Drop for RefreshUnlessFinished<'_> {
    fn drop(&mut self) {
        if self.armed {
            cov_mark::hit!(interrupted_image_reference_write_refresh_queued);
            let error = Error::deadline(format!("write of image reference {:?} cut off", self.name));
            self.service.queue_image_refresh(self.name.to_string(), error);
        }
    }
}

pub(crate) fn image_from_content(content: &ImageContent) -> Image {
    Image {
        id: content.config_digest.clone(),
        references: Default::default(),
        chain_id: content.chain_id.clone(),
        size_bytes: content.size_bytes,
        config: content.image_config.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers, computed outside this code with coreutils:
    /// `printf '%s %s' "$chain" "$diff" | sha256sum` for each layer after the first.
    #[test]
    fn chain_ids_known_answers() {
        let diff = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let chains = chain_ids(&[diff('a'), diff('b'), diff('c')]);
        assert_eq!(
            chains,
            [
                diff('a'),
                "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c".to_string(),
                "sha256:c1377126441fb2f5ec2c21ae2a60255331d639e830f0ee1b40a36e52d4c40588".to_string(),
            ]
        );
        assert!(chain_ids(&[]).is_empty());
    }
}
