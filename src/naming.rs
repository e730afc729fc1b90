//! Ids, CRI object names, image reference normalisation and request-map conversion.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};
use crate::ports::Os;

/// A fresh 64-hex-digit id drawn from the OS's randomness (seeded in the simulator).
pub fn generate_id(os: &dyn Os) -> String {
    let mut bytes = [0u8; 32];
    os.random_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Converts a request's map so that iteration order never depends on hashing.
#[expect(clippy::disallowed_methods, reason = "the BTreeMap orders what the hash order would not")]
pub fn sorted(map: &HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// `name_namespace_uid_attempt`.
pub fn sandbox_name(metadata: &k8s_cri::v1::PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", metadata.name, metadata.namespace, metadata.uid, metadata.attempt)
}

/// `container_pod_namespace_uid_attempt`.
pub fn container_name(container: &k8s_cri::v1::ContainerMetadata, sandbox: &k8s_cri::v1::PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}_{}", container.name, sandbox.name, sandbox.namespace, sandbox.uid, container.attempt)
}

pub fn validate_sandbox_metadata(
    metadata: Option<&k8s_cri::v1::PodSandboxMetadata>,
) -> Result<&k8s_cri::v1::PodSandboxMetadata> {
    let metadata = metadata.ok_or_else(|| Error::invalid("sandbox config must include metadata"))?;
    for (field, value) in [("name", &metadata.name), ("namespace", &metadata.namespace), ("uid", &metadata.uid)] {
        if value.is_empty() {
            return Err(Error::invalid(format!("sandbox config metadata.{field} must not be empty")));
        }
    }
    Ok(metadata)
}

/// True when `labels` contain every pair of `selector`.
#[expect(clippy::disallowed_methods, reason = "`all` gives the same answer in any order")]
pub fn labels_match(selector: &HashMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

const DEFAULT_DOMAIN: &str = "docker.io";

/// Normalises an image reference the way docker does: `busybox` → `docker.io/library/busybox:latest`.
/// A digest reference keeps its digest; a tag-less one gets `:latest`.
pub fn normalize_image_ref(reference: &str) -> Result<String> {
    let invalid = |why: &str| Error::invalid(format!("invalid image reference {reference:?}: {why}"));
    if reference.is_empty() {
        return Err(invalid("empty"));
    }
    if reference.starts_with("sha256:") {
        return Err(invalid("an image id is not a reference"));
    }
    let (name_and_tag, digest) = match reference.split_once('@') {
        Some((name, digest)) => {
            let hex_part = digest.strip_prefix("sha256:").ok_or_else(|| invalid("unsupported digest algorithm"))?;
            if hex_part.len() != 64 || !hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(invalid("bad digest"));
            }
            (name, Some(digest))
        }
        None => (reference, None),
    };
    // A tag follows the last ':' that comes after the last '/', so `host:5000/x` has no tag.
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
        Some(i) => (&name_and_tag[..last_slash + i], Some(&name_and_tag[last_slash + i + 1..])),
        None => (name_and_tag, None),
    };
    if let Some(tag) = tag {
        let valid =
            !tag.is_empty() && tag.len() <= 128 && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !valid {
            return Err(invalid("bad tag"));
        }
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') { format!("library/{path}") } else { path };
    let path_ok = !path.is_empty()
        && path.split('/').all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        });
    if !path_ok {
        return Err(invalid("repository name must be lowercase alphanumerics separated by '/', '.', '_' or '-'"));
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(tag), _) => {
            out.push(':');
            out.push_str(tag);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(digest) = digest {
        out.push('@');
        out.push_str(digest);
    }
    Ok(out)
}

/// The repository part of a normalised reference (no tag, no digest).
pub fn repository_of(normalized: &str) -> &str {
    let without_digest = normalized.split('@').next().unwrap_or(normalized);
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest[last_slash..].rfind(':') {
        Some(i) => &without_digest[..last_slash + i],
        None => without_digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_like_docker() {
        assert_eq!(normalize_image_ref("busybox").unwrap(), "docker.io/library/busybox:latest");
        assert_eq!(normalize_image_ref("user/app:v1").unwrap(), "docker.io/user/app:v1");
        assert_eq!(normalize_image_ref("localhost:5000/x").unwrap(), "localhost:5000/x:latest");
        assert_eq!(normalize_image_ref("127.0.0.1:5000/a/b:2").unwrap(), "127.0.0.1:5000/a/b:2");
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize_image_ref(&format!("busybox@{digest}")).unwrap(),
            format!("docker.io/library/busybox@{digest}")
        );
        assert!(normalize_image_ref("UPPER").is_err());
        assert!(normalize_image_ref("").is_err());
        assert!(normalize_image_ref("a:b:c").is_err());
        assert_eq!(repository_of("docker.io/library/busybox:latest"), "docker.io/library/busybox");
        assert_eq!(repository_of("localhost:5000/x:1"), "localhost:5000/x");
    }
}
