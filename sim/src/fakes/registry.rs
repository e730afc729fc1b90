//! Digests of the fake registry's images, computed from their content so that the same layers
//! and config under two tags give the same manifest, config and chain ids, as in a real registry.

use sha2::{Digest, Sha256};

use crid::ports::containerd::{Descriptor, ImageConfig};
use crid::ports::registry::ResolvedImage;

pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The core's, the one definition: its known-answer test keeps the fakes honest too.
pub use crid::chain_ids;

/// A made-up compressed layer digest for tests and default images.
pub fn layer_digest(name: &str) -> String {
    sha256_digest(format!("layer:{name}").as_bytes())
}

/// The uncompressed digest of a layer, derived from its compressed one.
pub fn diff_id_of(layer_digest: &str) -> String {
    sha256_digest(format!("diff:{layer_digest}").as_bytes())
}

/// Builds what resolving `reference` returns: the config blob is the config's JSON plus the
/// rootfs diff ids, the manifest blob names the config and the layers.
pub fn build_image(reference: &str, layers: &[(String, u64)], image_config: ImageConfig) -> ResolvedImage {
    assert!(!layers.is_empty(), "image {reference} needs at least one layer");
    let diff_ids: Vec<String> = layers.iter().map(|(digest, _)| diff_id_of(digest)).collect();
    let config_blob =
        serde_json::json!({ "config": image_config, "rootfs": { "type": "layers", "diff_ids": diff_ids } }).to_string();
    let config = Descriptor {
        media_type: MEDIA_TYPE_CONFIG.to_string(),
        digest: sha256_digest(config_blob.as_bytes()),
        size_bytes: config_blob.len() as u64,
    };
    let layers: Vec<Descriptor> = layers
        .iter()
        .map(|(digest, size_bytes)| {
            assert!(digest.starts_with("sha256:"), "layer digest {digest} is not a sha256 digest");
            Descriptor { media_type: MEDIA_TYPE_LAYER.to_string(), digest: digest.clone(), size_bytes: *size_bytes }
        })
        .collect();
    let layer_digests: Vec<&String> = layers.iter().map(|layer| &layer.digest).collect();
    let manifest_blob =
        serde_json::json!({ "schemaVersion": 2, "config": config.digest, "layers": layer_digests }).to_string();
    let manifest = Descriptor {
        media_type: MEDIA_TYPE_MANIFEST.to_string(),
        digest: sha256_digest(manifest_blob.as_bytes()),
        size_bytes: manifest_blob.len() as u64,
    };
    ResolvedImage { name: reference.to_string(), manifest, config, layers, diff_ids, image_config }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_content_same_digests() {
        let layers = vec![(layer_digest("x"), 10)];
        let a = build_image("docker.io/library/a:1", &layers, ImageConfig::default());
        let b = build_image("docker.io/library/a:2", &layers, ImageConfig::default());
        assert_eq!((a.manifest.clone(), a.config.clone()), (b.manifest, b.config));
        assert_ne!(a.diff_ids[0], a.layers[0].digest);
    }
}
