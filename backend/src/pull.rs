//! An OCI distribution (registry v2) client: resolves a reference to this platform's manifest
//! and config, and streams blobs. Writing into containerd's content store and unpacking are the
//! containerd module's job; this module only speaks HTTP to registries.
//!
//! Authentication answers the registry's `WWW-Authenticate` challenge with the pull's
//! credentials (the CRI's AuthConfig), as containerd's resolver does:
//! - `Bearer realm=…`: a token from the realm, asked anonymously, with basic auth
//!   (username/password), or by OAuth2 refresh (identity token);
//! - `Basic`: the username and password on every request;
//! - a registry token is sent as the bearer token from the first request.
//!
//! What worked is cached per (endpoint, repository, credentials), so one pull's blobs do not
//! each pay a challenge round trip, and different credentials never share a token.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crid::error::{Error, ErrorKind, Result};
use crid::naming::ImageRef;
use crid::ports::{Descriptor, ImageConfig, RegistryAuth, ResolvedImage};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::hosts::{RegistryEndpoint, endpoints_for};

pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// Manifests and configs are small; anything larger is refused rather than buffered.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

pub fn is_manifest_media_type(media_type: &str) -> bool {
    matches!(media_type, MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST | MEDIA_OCI_MANIFEST | MEDIA_DOCKER_MANIFEST)
}

pub fn is_index_media_type(media_type: &str) -> bool {
    matches!(media_type, MEDIA_OCI_INDEX | MEDIA_DOCKER_LIST)
}

#[derive(Deserialize, Debug)]
struct ManifestDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize, Debug)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

/// Either an image manifest (config + layers) or an index (manifests).
#[derive(Deserialize, Debug)]
pub struct ManifestDocument {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<ManifestDescriptor>,
    #[serde(default)]
    layers: Vec<ManifestDescriptor>,
    #[serde(default)]
    manifests: Vec<ManifestDescriptor>,
}

impl ManifestDocument {
    pub fn parse(bytes: &[u8]) -> Result<ManifestDocument> {
        serde_json::from_slice(bytes).map_err(|e| Error::invalid(format!("bad manifest: {e}")))
    }

    /// Labels that make containerd's garbage collector keep what this blob refers to.
    pub fn gc_labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        if let Some(config) = &self.config {
            labels.insert("containerd.io/gc.ref.content.config".to_string(), config.digest.clone());
        }
        for (i, layer) in self.layers.iter().enumerate() {
            labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), layer.digest.clone());
        }
        for (i, manifest) in self.manifests.iter().enumerate() {
            labels.insert(format!("containerd.io/gc.ref.content.m.{i}"), manifest.digest.clone());
        }
        labels
    }

    pub fn config_digest(&self) -> Option<&str> {
        self.config.as_ref().map(|c| c.digest.as_str())
    }

    pub fn layer_descriptors(&self) -> Vec<Descriptor> {
        self.layers.iter().map(descriptor).collect()
    }

    /// The digest of this platform's manifest in an index.
    pub fn platform_manifest(&self) -> Option<Descriptor> {
        let (os, arch) = host_platform();
        self.manifests
            .iter()
            .find(|m| {
                m.platform.as_ref().is_some_and(|p| {
                    p.os == os && p.architecture == arch && p.variant.as_deref().unwrap_or("") != "unknown"
                })
            })
            .map(descriptor)
    }
}

fn descriptor(d: &ManifestDescriptor) -> Descriptor {
    Descriptor { media_type: d.media_type.clone(), digest: d.digest.clone(), size_bytes: d.size.max(0) as u64 }
}

pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    ("linux", arch)
}

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "PascalCase", default)]
struct ContainerConfigJson {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: String,
    user: String,
    stop_signal: String,
    volumes: Option<HashMap<String, serde_json::Value>>,
    labels: Option<HashMap<String, String>>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct RootFs {
    diff_ids: Vec<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct ImageConfigDocument {
    config: Option<ContainerConfigJson>,
    rootfs: RootFs,
}

impl ImageConfigDocument {
    pub fn parse(bytes: &[u8]) -> Result<ImageConfigDocument> {
        serde_json::from_slice(bytes).map_err(|e| Error::invalid(format!("bad image config: {e}")))
    }

    pub fn diff_ids(&self) -> &[String] {
        &self.rootfs.diff_ids
    }

    pub fn image_config(&self) -> ImageConfig {
        let c = self.config.as_ref();
        let mut volumes: Vec<String> =
            c.and_then(|c| c.volumes.as_ref()).map(|v| v.keys().cloned().collect()).unwrap_or_default();
        volumes.sort();
        ImageConfig {
            entrypoint: c.and_then(|c| c.entrypoint.clone()).unwrap_or_default(),
            cmd: c.and_then(|c| c.cmd.clone()).unwrap_or_default(),
            env: c.and_then(|c| c.env.clone()).unwrap_or_default(),
            working_dir: c.map(|c| c.working_dir.clone()).unwrap_or_default(),
            user: c.map(|c| c.user.clone()).unwrap_or_default(),
            stop_signal: c.map(|c| c.stop_signal.clone()).unwrap_or_default(),
            volumes,
            labels: c.and_then(|c| c.labels.clone()).map(|l| l.into_iter().collect()).unwrap_or_default(),
        }
    }
}

/// The core's, the one definition (re-exported for the containerd backend).
pub use crid::rpc::image_pull::chain_ids;

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A host's TLS settings as a key: skip_verify, CA files, client certificate and key files.
type TlsSettings = (bool, Vec<PathBuf>, Vec<(PathBuf, Option<PathBuf>)>);

/// Talks to registries; one per process, shared by all pulls (connection reuse, token cache).
pub struct RegistryClient {
    config_path: Option<PathBuf>,
    secure: reqwest::Client,
    insecure: reqwest::Client,
    /// Clients of hosts with their own CAs or client certificates, by their TLS settings.
    custom: Mutex<HashMap<TlsSettings, reqwest::Client>>,
    /// How to authorize, by (endpoint, repository, credentials' fingerprint).
    authorizations: Mutex<HashMap<(String, String, String), Authorization>>,
}

#[derive(Clone)]
enum Authorization {
    Bearer(String),
    Basic,
}

fn http_error(e: reqwest::Error, what: &str) -> Error {
    // reqwest's message stops at "error sending request"; the cause (refused connection, an
    // unknown certificate authority, a name mismatch) is down its source chain.
    let mut message = format!("{what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    // A registry that cannot be reached is Unavailable: the kubelet retries the pull.
    Error::unavailable(message)
}

fn status_error(status: reqwest::StatusCode, what: &str) -> Error {
    let kind = match status.as_u16() {
        404 => ErrorKind::NotFound,
        401 | 403 => ErrorKind::FailedPrecondition,
        429 | 500..=599 => ErrorKind::Unavailable,
        _ => ErrorKind::Unknown,
    };
    Error::new(kind, format!("{what}: registry answered {status}"))
}

/// Parses `Bearer realm="…",service="…",scope="…"` into its parameters.
fn parse_bearer_challenge(header: &str) -> Option<HashMap<String, String>> {
    let rest = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer "))?;
    let mut params = HashMap::new();
    let mut remaining = rest.trim();
    while !remaining.is_empty() {
        let (key, after) = remaining.split_once('=')?;
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key.trim().to_ascii_lowercase(), value.to_string());
        remaining = tail.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    Some(params)
}

impl RegistryClient {
    pub fn new(config_path: Option<PathBuf>) -> Result<RegistryClient> {
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .danger_accept_invalid_certs(insecure)
                .connect_timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| Error::internal(format!("http client: {e}")))
        };
        Ok(RegistryClient {
            config_path,
            secure: build(false)?,
            insecure: build(true)?,
            custom: Mutex::new(HashMap::new()),
            authorizations: Mutex::new(HashMap::new()),
        })
    }

    /// The HTTP client for a host's TLS settings. Certificates are read when a host first
    /// needs them; an unreadable or invalid one fails the pull with the file's name.
    fn client(&self, endpoint: &RegistryEndpoint) -> Result<reqwest::Client> {
        if endpoint.default_tls() {
            return Ok(self.secure.clone());
        }
        if endpoint.ca_files.is_empty() && endpoint.client_certs.is_empty() {
            return Ok(self.insecure.clone());
        }
        let key = (endpoint.skip_verify, endpoint.ca_files.clone(), endpoint.client_certs.clone());
        if let Some(client) = self.custom.lock().unwrap().get(&key) {
            return Ok(client.clone());
        }
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| crate::errors::from_io(e, format!("registry certificate {}", path.display())))
        };
        let mut builder = reqwest::Client::builder()
            .danger_accept_invalid_certs(endpoint.skip_verify)
            .connect_timeout(Duration::from_secs(30));
        for path in &endpoint.ca_files {
            let pem = read(path)?;
            for certificate in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::invalid(format!("CA {}: {e}", path.display())))?
            {
                builder = builder.add_root_certificate(certificate);
            }
        }
        // reqwest takes one client identity; the first pair is it.
        if let Some((cert, key_file)) = endpoint.client_certs.first() {
            let mut pem = read(cert)?;
            if let Some(key_file) = key_file {
                pem.push(b'\n');
                pem.extend(read(key_file)?);
            }
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| Error::invalid(format!("client certificate {}: {e}", cert.display())))?;
            builder = builder.identity(identity);
        }
        let client = builder.build().map_err(|e| Error::invalid(format!("registry TLS settings: {e}")))?;
        self.custom.lock().unwrap().insert(key, client.clone());
        Ok(client)
    }

    fn endpoints(&self, reference: &ImageRef) -> Result<Vec<RegistryEndpoint>> {
        endpoints_for(self.config_path.as_deref(), reference.domain())
    }

    /// Answers a 401's challenge: how to authorize the retry.
    async fn answer_challenge(
        &self,
        endpoint: &RegistryEndpoint,
        challenge: &str,
        auth: &RegistryAuth,
        url: &str,
    ) -> Result<Authorization> {
        if challenge.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("basic "))
            || challenge.eq_ignore_ascii_case("basic")
        {
            if auth.username.is_empty() {
                return Err(Error::precondition(format!(
                    "{url}: unauthorized: the registry requires a username and password"
                )));
            }
            return Ok(Authorization::Basic);
        }
        Ok(Authorization::Bearer(self.fetch_token(endpoint, challenge, auth).await?))
    }

    async fn fetch_token(&self, endpoint: &RegistryEndpoint, challenge: &str, auth: &RegistryAuth) -> Result<String> {
        let params = parse_bearer_challenge(challenge)
            .ok_or_else(|| Error::precondition(format!("registry requires unsupported authentication: {challenge}")))?;
        let realm = params.get("realm").ok_or_else(|| Error::precondition("bearer challenge without realm"))?;
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = params.get("service") {
            query.push(("service", service));
        }
        if let Some(scope) = params.get("scope") {
            query.push(("scope", scope));
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let request = if !auth.identity_token.is_empty() {
            // OAuth2 refresh-token grant (docker's identity token), a form POST to the realm.
            let mut form = query.clone();
            form.extend([
                ("grant_type", "refresh_token"),
                ("refresh_token", auth.identity_token.as_str()),
                ("client_id", "crid"),
            ]);
            self.client(endpoint)?.post(realm).form(&form)
        } else if !auth.username.is_empty() {
            query.push(("account", &auth.username));
            self.client(endpoint)?.get(realm).query(&query).basic_auth(&auth.username, Some(&auth.password))
        } else {
            self.client(endpoint)?.get(realm).query(&query)
        };
        let response = request.send().await.map_err(|e| http_error(e, "fetch token"))?;
        if !response.status().is_success() {
            return Err(status_error(response.status(), "fetch token"));
        }
        let body: TokenResponse = response.json().await.map_err(|e| http_error(e, "decode token"))?;
        Ok(if body.token.is_empty() { body.access_token } else { body.token })
    }

    /// GET `<endpoint>/<repository>/<path>`, answering one authentication challenge.
    async fn get(
        &self,
        endpoint: &RegistryEndpoint,
        repository: &str,
        path: &str,
        accept: Option<&str>,
        auth: &RegistryAuth,
    ) -> Result<reqwest::Response> {
        let url = format!("{}/{}/{}", endpoint.base_url, repository, path);
        let key = (endpoint.base_url.clone(), repository.to_string(), auth.fingerprint());
        if !auth.registry_token.is_empty() {
            self.authorizations
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_insert_with(|| Authorization::Bearer(auth.registry_token.clone()));
        }
        for attempt in 0..2 {
            let mut request = self.client(endpoint)?.get(&url);
            for (name, value) in &endpoint.headers {
                request = request.header(name.as_str(), value.as_str());
            }
            if let Some(accept) = accept {
                request = request.header(reqwest::header::ACCEPT, accept);
            }
            let authorization = self.authorizations.lock().unwrap().get(&key).cloned();
            request = match authorization {
                Some(Authorization::Bearer(token)) => request.bearer_auth(token),
                Some(Authorization::Basic) => request.basic_auth(&auth.username, Some(&auth.password)),
                None => request,
            };
            let response = request.send().await.map_err(|e| http_error(e, &url))?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = response
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let authorization = self.answer_challenge(endpoint, &challenge, auth, &url).await?;
                self.authorizations.lock().unwrap().insert(key.clone(), authorization);
                continue;
            }
            if !response.status().is_success() {
                return Err(status_error(response.status(), &url));
            }
            return Ok(response);
        }
        Err(Error::precondition(format!("{url}: unauthorized")))
    }

    /// Tries each endpoint with the capability in turn; the last error is returned.
    async fn get_any(
        &self,
        reference: &ImageRef,
        path: &str,
        accept: Option<&str>,
        resolve: bool,
        auth: &RegistryAuth,
    ) -> Result<reqwest::Response> {
        let mut last = Error::not_found(format!("no registry host can serve {}", reference.domain()));
        for endpoint in self.endpoints(reference)? {
            if (resolve && !endpoint.can_resolve) || (!resolve && !endpoint.can_pull) {
                continue;
            }
            match self.get(&endpoint, reference.repository(), path, accept, auth).await {
                Ok(response) => return Ok(response),
                Err(e) => {
                    tracing::debug!(endpoint = %endpoint.base_url, error = %e, "registry endpoint failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn read_small(response: reqwest::Response, what: &str) -> Result<Vec<u8>> {
        if response.content_length().is_some_and(|n| n as usize > MAX_MANIFEST_BYTES) {
            return Err(Error::invalid(format!("{what} is larger than {MAX_MANIFEST_BYTES} bytes")));
        }
        let bytes = response.bytes().await.map_err(|e| http_error(e, what))?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(Error::invalid(format!("{what} is larger than {MAX_MANIFEST_BYTES} bytes")));
        }
        Ok(bytes.to_vec())
    }

    /// Fetches a manifest (or index) by tag or digest: its media type and bytes.
    async fn manifest(&self, reference: &ImageRef, object: &str, auth: &RegistryAuth) -> Result<(String, Vec<u8>)> {
        let response =
            self.get_any(reference, &format!("manifests/{object}"), Some(MANIFEST_ACCEPT), true, auth).await?;
        let header_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        let bytes = Self::read_small(response, "manifest").await?;
        let document = ManifestDocument::parse(&bytes)?;
        let media_type = match document.media_type {
            Some(t) if !t.is_empty() => t,
            _ if is_manifest_media_type(&header_type) => header_type,
            _ if !document.manifests.is_empty() => MEDIA_OCI_INDEX.to_string(),
            _ => MEDIA_OCI_MANIFEST.to_string(),
        };
        if object.starts_with("sha256:") && sha256_digest(&bytes) != object {
            return Err(Error::invalid(format!("manifest digest mismatch for {object}")));
        }
        Ok((media_type, bytes))
    }

    /// Resolves `reference` to this platform's manifest, config and layers; also returns the
    /// manifest's bytes, which the caller stores (the image record points at them).
    pub async fn resolve(&self, name: &str, auth: &RegistryAuth) -> Result<(ResolvedImage, Vec<u8>)> {
        let reference = ImageRef::parse(name)?;
        let (mut media_type, mut bytes) = self.manifest(&reference, reference.object(), auth).await?;
        let mut document = ManifestDocument::parse(&bytes)?;
        if is_index_media_type(&media_type) || (!document.manifests.is_empty() && document.config.is_none()) {
            let (os, arch) = host_platform();
            let chosen = document
                .platform_manifest()
                .ok_or_else(|| Error::not_found(format!("{name}: no manifest for {os}/{arch}")))?;
            (media_type, bytes) = self.manifest(&reference, &chosen.digest, auth).await?;
            document = ManifestDocument::parse(&bytes)?;
        }
        let config = document
            .config
            .as_ref()
            .map(descriptor)
            .ok_or_else(|| Error::invalid(format!("{name}: manifest has no config")))?;
        let config_bytes = Self::read_small(self.blob(name, &config, auth).await?, "image config").await?;
        if sha256_digest(&config_bytes) != config.digest {
            return Err(Error::invalid(format!("{name}: config digest mismatch")));
        }
        let config_document = ImageConfigDocument::parse(&config_bytes)?;
        let layers = document.layer_descriptors();
        if config_document.diff_ids().len() != layers.len() {
            return Err(Error::invalid(format!(
                "{name}: {} layers but {} diff ids",
                layers.len(),
                config_document.diff_ids().len()
            )));
        }
        let resolved = ResolvedImage {
            name: name.to_string(),
            manifest: Descriptor { media_type, digest: sha256_digest(&bytes), size_bytes: bytes.len() as u64 },
            config,
            layers,
            diff_ids: config_document.diff_ids().to_vec(),
            image_config: config_document.image_config(),
        };
        Ok((resolved, bytes))
    }

    /// Starts the download of a blob (manifests come from the manifests endpoint).
    pub async fn blob(&self, name: &str, blob: &Descriptor, auth: &RegistryAuth) -> Result<reqwest::Response> {
        let reference = ImageRef::parse(name)?;
        if is_manifest_media_type(&blob.media_type) {
            self.get_any(&reference, &format!("manifests/{}", blob.digest), Some(MANIFEST_ACCEPT), true, auth).await
        } else {
            self.get_any(&reference, &format!("blobs/{}", blob.digest), None, false, auth).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_parses() {
        let p = parse_bearer_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:x:pull""#,
        )
        .unwrap();
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["scope"], "repository:x:pull");
    }
}
