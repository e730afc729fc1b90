//! The image store: id (config digest) → image with its references, plus ref → id.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::events::ImageNames;
use crate::ports::ImageConfig;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The config digest, `sha256:…`.
    pub id: String,
    /// Names (repo tags, repo digests, the id itself), sorted.
    pub references: BTreeSet<String>,
    pub chain_id: String,
    pub size_bytes: u64,
    pub config: ImageConfig,
}

impl Image {
    pub fn repo_tags(&self) -> Vec<String> {
        self.tags().map(str::to_string).collect()
    }
    pub fn repo_digests(&self) -> Vec<String> {
        self.digests().map(str::to_string).collect()
    }
    /// The repo tags, sorted, borrowed: a container status names only the first.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.references.iter().map(String::as_str).filter(|r| !r.contains('@') && !r.starts_with("sha256:"))
    }
    /// The repo digests, sorted, borrowed.
    pub fn digests(&self) -> impl Iterator<Item = &str> {
        self.references.iter().map(String::as_str).filter(|r| r.contains('@'))
    }
}

#[derive(Default)]
struct Inner {
    images: BTreeMap<String, Image>,
    /// Shared with the snapshots that read it (invariant checks after every step of a
    /// simulation); the next change copies it if one still holds it.
    id_by_ref: Arc<BTreeMap<String, String>>,
    /// The names a container status takes from each image, made on first use and dropped
    /// whenever the image's references change: every container event reads them for each
    /// container of its pod.
    names: BTreeMap<String, Arc<ImageNames>>,
}

#[derive(Default)]
pub struct ImageStore {
    inner: Mutex<Inner>,
}

/// `algorithm:hex`, as OCI digests are (sha256 and sha512 alike).
pub fn is_digest(id: &str) -> bool {
    match id.split_once(':') {
        Some((algorithm, hex)) => {
            !algorithm.is_empty()
                && algorithm.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
                && !hex.is_empty()
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

impl ImageStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Points `reference` at `image` (merging references), or, with `None`, drops the reference;
    /// an image left without references is dropped. This is the level-triggered update that
    /// events and pulls feed.
    pub fn set_reference(&self, reference: &str, image: Option<Image>) {
        let mut inner = self.inner.lock().unwrap();
        let old_id = if inner.id_by_ref.contains_key(reference) {
            Arc::make_mut(&mut inner.id_by_ref).remove(reference)
        } else {
            None
        };
        if let Some(old_id) = old_id {
            inner.names.remove(&old_id);
            let drop_image = match inner.images.get_mut(&old_id) {
                Some(old) => {
                    old.references.remove(reference);
                    old.references.is_empty()
                }
                None => false,
            };
            if drop_image {
                inner.images.remove(&old_id);
            }
        }
        if let Some(mut image) = image {
            // The id comes from containerd's data (an image's config digest): a malformed one
            // drops the reference, it never panics with the store locked.
            if !is_digest(&image.id) {
                tracing::warn!(reference, id = image.id, "ignoring an image whose id is not a digest");
                return;
            }
            let entry = inner.images.entry(image.id.clone()).or_insert_with(|| {
                image.references.clear();
                image
            });
            entry.references.insert(reference.to_string());
            let id = entry.id.clone();
            inner.names.remove(&id);
            Arc::make_mut(&mut inner.id_by_ref).insert(reference.to_string(), id);
        }
    }

    /// The image whose id, or one of whose (normalised) references, is exactly `id_or_ref`.
    fn find_exact(&self, id_or_ref: &str) -> Option<Image> {
        let inner = self.inner.lock().unwrap();
        let image = inner.images.get(id_or_ref);
        image.or_else(|| inner.id_by_ref.get(id_or_ref).map(|id| &inner.images[id])).cloned()
    }

    /// Resolves an id, a reference as given or as `normalize` makes it, or a unique id prefix
    /// (with or without `sha256:`). `normalize` runs only when the exact lookups miss: an id (what
    /// kubelet sends in CreateContainer) or a normalised reference needs no parse, and parsing
    /// a reference is most of the cost of a lookup.
    pub fn resolve(&self, id_or_ref: &str, normalize: impl FnOnce(&str) -> Option<String>) -> Result<Image> {
        if let Some(image) = self.find_exact(id_or_ref) {
            return Ok(image);
        }
        let normalized = normalize(id_or_ref);
        let inner = self.inner.lock().unwrap();
        if let Some(id) = normalized.as_deref().and_then(|reference| inner.id_by_ref.get(reference)) {
            return Ok(inner.images[id].clone());
        }
        let prefix =
            if id_or_ref.starts_with("sha256:") { id_or_ref.to_string() } else { format!("sha256:{id_or_ref}") };
        if id_or_ref.len() >= 4
            && id_or_ref.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c.is_ascii_lowercase())
        {
            let mut matches = inner.images.range(prefix.clone()..).take_while(|(id, _)| id.starts_with(&prefix));
            if let (Some((_, image)), None) = (matches.next(), matches.next()) {
                return Ok(image.clone());
            }
        }
        Err(Error::not_found(format!("image {} not found", crate::error::quoted(id_or_ref))))
    }

    /// Whether the store has `reference` pointing at the image `id`.
    pub fn points_at(&self, reference: &str, id: &str) -> bool {
        self.inner.lock().unwrap().id_by_ref.get(reference).is_some_and(|known| known == id)
    }

    pub fn get(&self, id: &str) -> Option<Image> {
        self.inner.lock().unwrap().images.get(id).cloned()
    }

    /// The names a container status takes from the image with this id (empty when there is no
    /// such image), shared until the image's references change.
    pub(crate) fn names(&self, id: &str) -> Arc<ImageNames> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(names) = inner.names.get(id) {
            return names.clone();
        }
        let names = Arc::new(ImageNames::of(inner.images.get(id)));
        if inner.images.contains_key(id) {
            inner.names.insert(id.to_string(), names.clone());
        }
        names
    }

    pub fn list(&self) -> Vec<Image> {
        self.inner.lock().unwrap().images.values().cloned().collect()
    }

    /// ref → id, sorted by ref (for invariant checks), shared.
    pub fn references(&self) -> Arc<BTreeMap<String, String>> {
        self.inner.lock().unwrap().id_by_ref.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str) -> Image {
        Image {
            id: id.into(),
            references: BTreeSet::new(),
            chain_id: "c".into(),
            size_bytes: 1,
            config: Default::default(),
        }
    }

    #[test]
    fn references_merge_move_and_drop() {
        let store = ImageStore::new();
        store.set_reference("docker.io/library/a:1", Some(image("sha256:aaaa")));
        store.set_reference("sha256:aaaa", Some(image("sha256:aaaa")));
        assert_eq!(store.list().len(), 1);
        assert_eq!(store.resolve("aaaa", |_| None).unwrap().references.len(), 2);
        store.set_reference("docker.io/library/a:1", Some(image("sha256:bbbb")));
        assert_eq!(store.list().len(), 2);
        store.set_reference("sha256:aaaa", None);
        assert_eq!(store.list().len(), 1);
        assert!(store.resolve("sha256:aaaa", |_| None).is_err());
        assert_eq!(store.resolve("docker.io/library/a:1", |_| None).unwrap().id, "sha256:bbbb");
    }

    #[test]
    fn a_read_of_the_references_keeps_what_it_read() {
        let store = ImageStore::new();
        store.set_reference("docker.io/library/a:1", Some(image("sha256:aaaa")));
        let before = store.references();
        assert!(Arc::ptr_eq(&before, &store.references()), "an unchanged map is shared");
        store.set_reference("docker.io/library/a:1", Some(image("sha256:bbbb")));
        store.set_reference("docker.io/library/b:1", Some(image("sha256:bbbb")));
        assert_eq!(before.len(), 1, "a reader's map does not change under it");
        assert_eq!(before["docker.io/library/a:1"], "sha256:aaaa");
        let after = store.references();
        assert_eq!(after["docker.io/library/a:1"], "sha256:bbbb");
        assert_eq!(after.len(), 2);
        // Dropping a reference the store does not have changes nothing, and copies nothing.
        store.set_reference("docker.io/library/c:1", None);
        assert!(Arc::ptr_eq(&after, &store.references()));
    }

    #[test]
    fn status_names_follow_the_references() {
        let store = ImageStore::new();
        assert_eq!(store.names("sha256:aaaa").tag(), None, "no image, no names");
        store.set_reference("docker.io/library/a:1", Some(image("sha256:aaaa")));
        let first = store.names("sha256:aaaa");
        assert_eq!(first.tag(), Some("docker.io/library/a:1"));
        assert_eq!(first.digest(), None);
        assert!(Arc::ptr_eq(&first, &store.names("sha256:aaaa")), "unchanged names are shared");
        // A tag that sorts first, then a digest: each change is seen at once.
        store.set_reference("docker.io/library/a:0", Some(image("sha256:aaaa")));
        assert_eq!(store.names("sha256:aaaa").tag(), Some("docker.io/library/a:0"));
        store.set_reference("docker.io/library/a@sha256:dddd", Some(image("sha256:aaaa")));
        assert_eq!(store.names("sha256:aaaa").digest(), Some("docker.io/library/a@sha256:dddd"));
        // A reference moved to another image changes the names of the one it left.
        store.set_reference("docker.io/library/a:0", Some(image("sha256:bbbb")));
        assert_eq!(store.names("sha256:aaaa").tag(), Some("docker.io/library/a:1"));
        assert_eq!(store.names("sha256:bbbb").tag(), Some("docker.io/library/a:0"));
        store.set_reference("docker.io/library/a:1", None);
        store.set_reference("docker.io/library/a@sha256:dddd", None);
        assert_eq!(store.names("sha256:aaaa").tag(), None, "the image is gone");
        assert_eq!(store.names("sha256:aaaa").digest(), None);
    }

    #[test]
    fn exact_lookup_takes_ids_and_stored_references_only() {
        let store = ImageStore::new();
        store.set_reference("docker.io/library/a:1", Some(image("sha256:aaaa")));
        store.set_reference("sha256:aaaa", Some(image("sha256:aaaa")));
        assert_eq!(store.find_exact("sha256:aaaa").unwrap().id, "sha256:aaaa");
        assert_eq!(store.find_exact("docker.io/library/a:1").unwrap().id, "sha256:aaaa");
        // A prefix or a name still to be normalised is for `resolve`.
        assert!(store.find_exact("aaaa").is_none());
        assert!(store.find_exact("a:1").is_none());
        store.set_reference("docker.io/library/a:1", None);
        assert!(store.find_exact("docker.io/library/a:1").is_none());
    }

    #[test]
    fn any_digest_is_an_id_and_garbage_never_panics() {
        let store = ImageStore::new();
        let sha512 = format!("sha512:{}", "c".repeat(128));
        store.set_reference("docker.io/library/big:1", Some(image(&sha512)));
        assert_eq!(store.resolve("docker.io/library/big:1", |_| None).unwrap().id, sha512);
        store.set_reference("docker.io/library/bad:1", Some(image("not a digest")));
        assert!(store.resolve("docker.io/library/bad:1", |_| None).is_err());
        assert_eq!(store.list().len(), 1, "the store is still usable");
        assert!(!is_digest("sha256:") && !is_digest(":abc") && !is_digest("SHA256:ab") && is_digest("sha256:ab"));
    }
}
