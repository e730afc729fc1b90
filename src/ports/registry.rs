//! The registry boundary: what a pull asks of an image registry (resolve a reference, fetch its
//! blobs), as opposed to containerd's content, image and snapshot stores ([`super::Containerd`]).
//!
//! A fetched blob lands in containerd's content store, so an implementation writes there too;
//! the pull's lease (see [`super::Containerd::create_lease`]) keeps what it writes from
//! garbage collection until the image record references it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::containerd::{Descriptor, ImageConfig};
use crate::error::Result;

/// Called with the number of bytes received while a blob is fetched (pull progress).
pub type ProgressFn<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// The registry credentials of one pull, from the CRI's `AuthConfig`. Kept in memory for the
/// pull only: never persisted, and `Debug` shows no secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token, traded at the registry's token endpoint.
    pub identity_token: String,
    /// A bearer token sent to the registry as is.
    pub registry_token: String,
    /// The registry the credentials are for (`host[:port]`, with or without a scheme and a
    /// path, as kubelet's keyring names it); empty means the registry of the pulled reference.
    /// Only that host ever receives them (see [`RegistryAuth::for_host`]).
    pub server_address: String,
}

impl RegistryAuth {
    /// From the CRI's `AuthConfig`; its `auth` field is base64 of `username:password` and, when
    /// set, wins over the separate fields (as containerd reads it).
    pub fn from_cri(auth: Option<&k8s_cri::v1::AuthConfig>) -> Result<RegistryAuth> {
        use base64::Engine;
        let Some(auth) = auth else { return Ok(RegistryAuth::default()) };
        let (mut username, mut password) = (auth.username.clone(), auth.password.clone());
        if !auth.auth.is_empty() {
            let invalid = || crate::error::Error::invalid("auth config: `auth` is not base64 of \"username:password\"");
            let decoded = base64::engine::general_purpose::STANDARD.decode(auth.auth.trim()).map_err(|_| invalid())?;
            let text = String::from_utf8(decoded).map_err(|_| invalid())?;
            let (user, pass) = text.split_once(':').ok_or_else(invalid)?;
            (username, password) = (user.to_string(), pass.to_string());
        }
        Ok(RegistryAuth {
            username,
            password,
            identity_token: auth.identity_token.clone(),
            registry_token: auth.registry_token.clone(),
            server_address: auth.server_address.clone(),
        })
    }

    /// No secret to send.
    pub fn is_anonymous(&self) -> bool {
        [&self.username, &self.password, &self.identity_token, &self.registry_token].iter().all(|s| s.is_empty())
    }

    /// The credentials `endpoint_host` (`host[:port]` of one endpoint a pull tries, a mirror
    /// or the registry itself) may receive: all of them when it is the host they are for —
    /// `server_address`'s, else `requested_domain`, the pulled reference's registry — and
    /// none otherwise. A mirror listed in hosts.toml ahead of the registry is thus asked
    /// anonymously and never sees another host's secret, as containerd's CRI matches each
    /// host it tries against `server_address`. One deliberate difference: containerd, with
    /// no `server_address`, hands the credentials to every endpoint; here only the
    /// requested registry gets them.
    pub fn for_host(&self, endpoint_host: &str, requested_domain: &str) -> RegistryAuth {
        let owner = if self.server_address.is_empty() {
            requested_domain
        } else {
            let address = self.server_address.trim();
            let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
            rest.split('/').next().unwrap_or_default()
        };
        if !owner.is_empty() && same_registry(endpoint_host, owner) {
            self.clone()
        } else {
            RegistryAuth { server_address: self.server_address.clone(), ..RegistryAuth::default() }
        }
    }

    /// A digest that tells credentials apart without holding them (in-memory keys only).
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for field in [&self.username, &self.password, &self.identity_token, &self.registry_token, &self.server_address]
        {
            hash.update((field.len() as u64).to_le_bytes());
            hash.update(field.as_bytes());
        }
        hex::encode(&hash.finalize()[..8])
    }
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &String| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &set(&self.password))
            .field("identity_token", &set(&self.identity_token))
            .field("registry_token", &set(&self.registry_token))
            .finish()
    }
}

/// Host names (with their ports) are equal in any letter case; Docker Hub's names are one host:
/// references say `docker.io`, kubelet's keyring `index.docker.io`, and its API answers at
/// `registry-1.docker.io`.
fn same_registry(a: &str, b: &str) -> bool {
    let canonical = |host: &str| {
        let host = host.to_ascii_lowercase();
        match host.as_str() {
            "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
            _ => host,
        }
    };
    canonical(a) == canonical(b)
}

/// A reference resolved at the registry: manifest for the host platform, config and layers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedImage {
    /// The normalized reference that was resolved.
    pub name: String,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// Uncompressed layer digests (the rootfs diff ids), one per layer, for chain ids.
    pub diff_ids: Vec<String>,
    pub image_config: ImageConfig,
}

impl ResolvedImage {
    /// The image as a pull learns it: first the manifest, then what its config says.
    pub fn from_parts(manifest: ResolvedManifest, config: ImageConfigRead) -> ResolvedImage {
        ResolvedImage {
            name: manifest.name,
            manifest: manifest.manifest,
            config: manifest.config,
            layers: manifest.layers,
            diff_ids: config.diff_ids,
            image_config: config.image_config,
        }
    }

    /// The manifest's part of the image.
    pub fn manifest_part(&self) -> ResolvedManifest {
        ResolvedManifest {
            name: self.name.clone(),
            manifest: self.manifest.clone(),
            config: self.config.clone(),
            layers: self.layers.clone(),
        }
    }

    /// The config's part of the image.
    pub fn config_part(&self) -> ImageConfigRead {
        ImageConfigRead { diff_ids: self.diff_ids.clone(), image_config: self.image_config.clone() }
    }
}

/// A reference resolved at the registry to the manifest for the host platform: the config
/// and the layers it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedManifest {
    /// The normalized reference that was resolved.
    pub name: String,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// What a pull reads from an image's config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageConfigRead {
    /// Uncompressed layer digests (the rootfs diff ids), one per layer, for chain ids.
    pub diff_ids: Vec<String>,
    pub image_config: ImageConfig,
}

#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Resolves a normalized reference at its registry to the manifest for this platform.
    /// `auth` answers the registry's challenge; anonymous when default. Nothing is stored: the
    /// pull fetches the manifest blob with the config and the layers.
    async fn resolve(&self, reference: &str, auth: &RegistryAuth) -> Result<ResolvedManifest>;
    /// Reads the image config `config` of a resolved reference: from containerd's content store
    /// when it has it, else from the registry (which then serves it twice, as the pull's fetch
    /// of the blob follows). Separate from the resolve so that a pull's layers are fetched
    /// while it is read.
    async fn read_config(&self, reference: &str, config: &Descriptor, auth: &RegistryAuth) -> Result<ImageConfigRead>;
    /// Fetches a blob of `reference` into the content store under `lease`, reporting progress
    /// in bytes.
    async fn fetch_blob(
        &self,
        reference: &str,
        blob: &Descriptor,
        auth: &RegistryAuth,
        lease: &str,
        progress: ProgressFn<'_>,
    ) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::AuthConfig;

    #[test]
    fn registry_auth_reads_the_cri_config_and_hides_secrets() {
        assert!(RegistryAuth::from_cri(None).unwrap().is_anonymous());
        let plain = AuthConfig { username: "u".into(), password: "p".into(), ..Default::default() };
        let plain = RegistryAuth::from_cri(Some(&plain)).unwrap();
        assert_eq!((plain.username.as_str(), plain.password.as_str()), ("u", "p"));
        // `auth` is base64("alice:s3:cret") and wins over the separate fields.
        let encoded = AuthConfig { username: "u".into(), auth: "YWxpY2U6czM6Y3JldA==".into(), ..Default::default() };
        let encoded = RegistryAuth::from_cri(Some(&encoded)).unwrap();
        assert_eq!((encoded.username.as_str(), encoded.password.as_str()), ("alice", "s3:cret"));
        for bad in ["not base64!", "bm9jb2xvbg=="] {
            let config = AuthConfig { auth: bad.into(), ..Default::default() };
            assert_eq!(
                RegistryAuth::from_cri(Some(&config)).unwrap_err().kind,
                crate::error::ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
        let shown = format!("{encoded:?}");
        assert!(shown.contains("alice") && !shown.contains("s3:cret"), "{shown}");
        assert_ne!(plain.fingerprint(), encoded.fingerprint());
        assert_eq!(plain.fingerprint(), plain.clone().fingerprint());
        let scoped = AuthConfig { server_address: "reg:5001".into(), registry_token: "t".into(), ..Default::default() };
        let scoped = RegistryAuth::from_cri(Some(&scoped)).unwrap();
        assert!(!format!("{scoped:?}").contains("\"t\""), "{scoped:?}");
        let nobody = AuthConfig { server_address: "reg:5001".into(), ..Default::default() };
        assert!(RegistryAuth::from_cri(Some(&nobody)).unwrap().is_anonymous());
    }

    #[test]
    fn credentials_go_only_to_the_host_they_are_for() {
        let auth = |server_address: &str| RegistryAuth {
            username: "u".into(),
            password: "secret".into(),
            server_address: server_address.into(),
            ..Default::default()
        };
        // (server_address, endpoint tried, requested registry, whether it gets the secret)
        let cases = [
            ("", "127.0.0.1:5001", "127.0.0.1:5001", true),
            ("", "127.0.0.1:5000", "127.0.0.1:5001", false),
            ("", "mirror.internal", "docker.io", false),
            ("", "registry-1.docker.io", "docker.io", true),
            ("127.0.0.1:5001", "127.0.0.1:5001", "127.0.0.1:5001", true),
            ("http://127.0.0.1:5001", "127.0.0.1:5001", "docker.io", true),
            ("http://127.0.0.1:5001", "127.0.0.1:5000", "127.0.0.1:5001", false),
            ("https://index.docker.io/v1/", "registry-1.docker.io", "docker.io", true),
            ("https://index.docker.io/v1/", "mirror.gcr.io", "docker.io", false),
            ("Registry.Example.com", "registry.example.com", "x", true),
            ("registry.example.com", "registry.example.com:5000", "registry.example.com", false),
            ("https:///", "127.0.0.1:5001", "127.0.0.1:5001", false),
        ];
        for (server_address, endpoint, requested, gets) in cases {
            let given = auth(server_address).for_host(endpoint, requested);
            assert_eq!(!given.is_anonymous(), gets, "{server_address:?} {endpoint} {requested}");
            if !gets {
                assert!(given.password.is_empty() && given.username.is_empty());
            }
        }
    }
}
