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
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use crid::error::{Error, ErrorKind, Result};
use crid::naming::ImageRef;
use crid::ports::{Descriptor, ImageConfig, ImageConfigRead, RegistryAuth, ResolvedManifest};
use oci_spec::image::{Arch, DigestAlgorithm, ImageConfiguration, ImageIndex, ImageManifest, Os};
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

/// A manifest or an index, as `oci-spec` reads them. Docker's schema 2 manifest and manifest
/// list have the same shape as their OCI counterparts; oci-spec keeps their media types (and
/// Docker's layer and config types) as `MediaType::Other` with the text intact. A digest that
/// is malformed fails the parse; one that is well formed but not sha256 fails when it is used.
#[derive(Debug)]
pub enum ManifestDocument {
    // Boxed: both are hundreds of bytes of descriptors, and a document is moved around.
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

impl ManifestDocument {
    /// Parses a manifest or an index. Which one it is comes from the document's own
    /// `mediaType`, else from `declared` (the registry's Content-Type or the descriptor that
    /// pointed here), else from whether it lists `manifests`.
    pub fn parse(bytes: &[u8], declared: Option<&str>) -> Result<ManifestDocument> {
        #[derive(Deserialize)]
        struct Shape {
            #[serde(rename = "mediaType", default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<serde::de::IgnoredAny>,
        }
        let bad = |e: serde_json::Error| Error::invalid(format!("bad manifest: {e}")).with_source(e);
        let shape: Shape = serde_json::from_slice(bytes).map_err(bad)?;
        let own = shape.media_type.as_deref().filter(|t| is_manifest_media_type(t));
        let is_index = match own.or(declared.filter(|t| is_manifest_media_type(t))) {
            Some(media_type) => is_index_media_type(media_type),
            None => shape.manifests.is_some(),
        };
        Ok(if is_index {
            ManifestDocument::Index(Box::new(serde_json::from_slice(bytes).map_err(bad)?))
        } else {
            ManifestDocument::Manifest(Box::new(serde_json::from_slice(bytes).map_err(bad)?))
        })
    }

    /// The document's media type: its own field, else the OCI type of its kind.
    pub fn media_type(&self) -> String {
        let (own, default) = match self {
            ManifestDocument::Index(index) => (index.media_type(), MEDIA_OCI_INDEX),
            ManifestDocument::Manifest(manifest) => (manifest.media_type(), MEDIA_OCI_MANIFEST),
        };
        own.as_ref().map_or_else(|| default.to_string(), |t| t.to_string())
    }

    /// Labels that make containerd's garbage collector keep what this blob refers to.
    pub fn gc_labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        match self {
            ManifestDocument::Manifest(manifest) => {
                labels
                    .insert("containerd.io/gc.ref.content.config".to_string(), manifest.config().digest().to_string());
                for (i, layer) in manifest.layers().iter().enumerate() {
                    labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), layer.digest().to_string());
                }
            }
            ManifestDocument::Index(index) => {
                for (i, manifest) in index.manifests().iter().enumerate() {
                    labels.insert(format!("containerd.io/gc.ref.content.m.{i}"), manifest.digest().to_string());
                }
            }
        }
        labels
    }

    /// The config's descriptor; None for an index.
    pub fn config(&self) -> Option<Result<Descriptor>> {
        match self {
            ManifestDocument::Manifest(manifest) => Some(descriptor(manifest.config())),
            ManifestDocument::Index(_) => None,
        }
    }

    /// The layers, in order; none for an index.
    pub fn layer_descriptors(&self) -> Result<Vec<Descriptor>> {
        match self {
            ManifestDocument::Manifest(manifest) => manifest.layers().iter().map(descriptor).collect(),
            ManifestDocument::Index(_) => Ok(vec![]),
        }
    }

    /// This platform's manifest in an index; None for a manifest or when no entry matches.
    pub fn platform_manifest(&self) -> Option<Result<Descriptor>> {
        let ManifestDocument::Index(index) = self else { return None };
        let (os, arch) = host_platform();
        index
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    *p.os() == os && *p.architecture() == arch && p.variant().as_deref().unwrap_or("") != "unknown"
                })
            })
            .map(descriptor)
    }
}

/// The core's descriptor of an oci-spec one. crid addresses content by sha256 only (as the
/// registry client verifies it), so another algorithm is refused here rather than later.
fn descriptor(d: &oci_spec::image::Descriptor) -> Result<Descriptor> {
    let digest = sha256_only(d.digest())?;
    Ok(Descriptor { media_type: d.media_type().to_string(), digest, size_bytes: d.size() })
}

fn sha256_only(digest: &oci_spec::image::Digest) -> Result<String> {
    if *digest.algorithm() != DigestAlgorithm::Sha256 {
        return Err(Error::invalid(format!("unsupported digest algorithm in {digest}: only sha256 is supported")));
    }
    Ok(digest.to_string())
}

/// The platform whose manifest is picked from an index: Linux on this machine's architecture.
pub fn host_platform() -> (Os, Arch) {
    (Os::Linux, Arch::default())
}

/// Parses an image config (OCI or Docker's, which has the same fields). Its diff ids name
/// snapshots (chain ids), so each must be a well-formed sha256 digest.
pub fn parse_image_config(bytes: &[u8]) -> Result<ImageConfiguration> {
    let config: ImageConfiguration =
        serde_json::from_slice(bytes).map_err(|e| Error::invalid(format!("bad image config: {e}")).with_source(e))?;
    for diff_id in config.rootfs().diff_ids() {
        let digest = oci_spec::image::Digest::from_str(diff_id)
            .map_err(|e| Error::invalid(format!("bad image config: diff id {diff_id:?}: {e}")).with_source(e))?;
        sha256_only(&digest)?;
    }
    Ok(config)
}

/// What the core needs of an image config: the process defaults, volumes and labels.
pub fn image_config(config: &ImageConfiguration) -> ImageConfig {
    let Some(c) = config.config() else { return ImageConfig::default() };
    let mut volumes = c.volumes().clone().unwrap_or_default();
    volumes.sort();
    ImageConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().unwrap_or_default(),
        user: c.user().clone().unwrap_or_default(),
        stop_signal: c.stop_signal().clone().unwrap_or_default(),
        volumes,
        labels: c.labels().clone().map(|l| l.into_iter().collect()).unwrap_or_default(),
    }
}

/// The core's, the one definition (re-exported for the containerd backend).
pub use crid::chain_ids;

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
            // Each endpoint gets only the credentials meant for its host: a mirror ahead of
            // the registry is asked anonymously.
            let auth = auth.for_host(endpoint.host(), reference.domain());
            match self.get(&endpoint, reference.repository(), path, accept, &auth).await {
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

    /// Fetches a manifest (or index) by tag or digest: the document and its bytes.
    async fn manifest(
        &self,
        reference: &ImageRef,
        object: &str,
        auth: &RegistryAuth,
    ) -> Result<(ManifestDocument, Vec<u8>)> {
        let response =
            self.get_any(reference, &format!("manifests/{object}"), Some(MANIFEST_ACCEPT), true, auth).await?;
        let header_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        let bytes = Self::read_small(response, "manifest").await?;
        if object.starts_with("sha256:") && sha256_digest(&bytes) != object {
            return Err(Error::invalid(format!("manifest digest mismatch for {object}")));
        }
        let document = ManifestDocument::parse(&bytes, Some(&header_type))?;
        Ok((document, bytes))
    }

    /// Resolves `reference` to this platform's manifest, and the config and layers it names.
    /// Nothing is stored: the pull fetches the manifest blob as it fetches the others.
    pub async fn resolve(&self, name: &str, auth: &RegistryAuth) -> Result<ResolvedManifest> {
        let reference = ImageRef::parse(name)?;
        let (mut document, mut bytes) = self.manifest(&reference, reference.object(), auth).await?;
        if let ManifestDocument::Index(_) = document {
            let (os, arch) = host_platform();
            let chosen = document
                .platform_manifest()
                .ok_or_else(|| Error::not_found(format!("{name}: no manifest for {os}/{arch}")))??;
            (document, bytes) = self.manifest(&reference, &chosen.digest, auth).await?;
        }
        let config = document
            .config()
            .ok_or_else(|| Error::invalid(format!("{name}: the platform's manifest is an index")))??;
        let manifest = Descriptor {
            media_type: document.media_type(),
            digest: sha256_digest(&bytes),
            size_bytes: bytes.len() as u64,
        };
        let layers = document.layer_descriptors()?;
        Ok(ResolvedManifest { name: name.to_string(), manifest, config, layers })
    }

    /// Reads the image config `config` of `name`. `stored` reads a blob the caller may already
    /// hold (containerd's content store): the config is taken from there when it has it with
    /// the right digest, and downloaded otherwise, as containerd's own resolver does.
    pub async fn read_config<F, Fut>(
        &self,
        name: &str,
        config: &Descriptor,
        auth: &RegistryAuth,
        stored: F,
    ) -> Result<ImageConfigRead>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Option<Vec<u8>>>,
    {
        let config_bytes = match stored(config.digest.clone()).await {
            Some(bytes) if sha256_digest(&bytes) == config.digest => {
                tracing::debug!(digest = %config.digest, reference = name, "image config read from the content store");
                bytes
            }
            _ => {
                // The integration tests count these lines to prove that a re-pull downloads nothing.
                tracing::debug!(digest = %config.digest, reference = name, "downloading image config");
                let bytes = Self::read_small(self.blob(name, config, auth).await?, "image config").await?;
                if sha256_digest(&bytes) != config.digest {
                    return Err(Error::invalid(format!("{name}: config digest mismatch")));
                }
                bytes
            }
        };
        let config_document = parse_image_config(&config_bytes)?;
        Ok(ImageConfigRead {
            diff_ids: config_document.rootfs().diff_ids().clone(),
            image_config: image_config(&config_document),
        })
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

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// A Docker schema 2 manifest, as the local registry serves one pushed by docker.
    fn docker_manifest(config_digest: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_DOCKER_MANIFEST}",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":1469,"digest":"{config_digest}"}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":772788,"digest":"{}"}},
                      {{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":12,"digest":"{}"}}]}}"#,
            digest('b'),
            digest('c')
        )
    }

    #[test]
    fn docker_schema2_manifest_keeps_its_media_types() {
        let document = ManifestDocument::parse(docker_manifest(&digest('a')).as_bytes(), None).unwrap();
        assert_eq!(document.media_type(), MEDIA_DOCKER_MANIFEST);
        let config = document.config().unwrap().unwrap();
        assert_eq!(
            (config.media_type.as_str(), config.digest.clone(), config.size_bytes),
            ("application/vnd.docker.container.image.v1+json", digest('a'), 1469)
        );
        let layers = document.layer_descriptors().unwrap();
        assert_eq!(layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(), [digest('b'), digest('c')]);
        assert_eq!(layers[0].media_type, "application/vnd.docker.image.rootfs.diff.tar.gzip");
        assert_eq!(layers[0].size_bytes, 772788);
        let labels = document.gc_labels();
        assert_eq!(labels["containerd.io/gc.ref.content.config"], digest('a'));
        assert_eq!(labels["containerd.io/gc.ref.content.l.1"], digest('c'));
        assert_eq!(labels.len(), 3);
        assert!(document.platform_manifest().is_none());
    }

    #[test]
    fn an_index_yields_this_platforms_manifest() {
        let (_, arch) = host_platform();
        let other = if arch == Arch::Amd64 { "arm64" } else { "amd64" };
        // No mediaType in the document: the declared type (a Docker manifest list) decides.
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[
            {{"mediaType":"{MEDIA_DOCKER_MANIFEST}","size":1,"digest":"{}","platform":{{"architecture":"{other}","os":"linux"}}}},
            {{"mediaType":"{MEDIA_DOCKER_MANIFEST}","size":2,"digest":"{}","platform":{{"architecture":"{arch}","os":"windows"}}}},
            {{"mediaType":"{MEDIA_DOCKER_MANIFEST}","size":3,"digest":"{}","platform":{{"architecture":"{arch}","os":"linux"}}}}]}}"#,
            digest('1'),
            digest('2'),
            digest('3')
        );
        let document = ManifestDocument::parse(index.as_bytes(), Some(MEDIA_DOCKER_LIST)).unwrap();
        assert!(matches!(document, ManifestDocument::Index(_)));
        assert_eq!(document.media_type(), MEDIA_OCI_INDEX, "no mediaType of its own");
        let chosen = document.platform_manifest().unwrap().unwrap();
        assert_eq!(
            (chosen.digest, chosen.size_bytes, chosen.media_type.as_str()),
            (digest('3'), 3, MEDIA_DOCKER_MANIFEST)
        );
        assert!(document.config().is_none());
        assert_eq!(document.gc_labels()["containerd.io/gc.ref.content.m.2"], digest('3'));
        // Without a declared type, listing manifests makes it an index.
        assert!(matches!(ManifestDocument::parse(index.as_bytes(), None).unwrap(), ManifestDocument::Index(_)));
    }

    #[test]
    fn bad_digests_are_errors_not_panics() {
        for bad in ["sha256:xyz", "sha256:", "nocolon", &format!("sha256:{}", "A".repeat(64))] {
            let error = ManifestDocument::parse(docker_manifest(bad).as_bytes(), None).unwrap_err();
            assert_eq!(error.kind, ErrorKind::InvalidArgument, "{bad}");
            assert!(error.message.contains("bad manifest"), "{bad}: {error}");
        }
        // Well formed but not sha256: parses, and is refused where it would be used.
        let sha512 = format!("sha512:{}", "a".repeat(128));
        let document = ManifestDocument::parse(docker_manifest(&sha512).as_bytes(), None).unwrap();
        let error = document.config().unwrap().unwrap_err();
        assert_eq!(error.kind, ErrorKind::InvalidArgument);
        assert!(error.message.contains("only sha256"), "{error}");
        assert!(ManifestDocument::parse(b"{not json", None).is_err());
        assert!(ManifestDocument::parse(b"[]", None).is_err());
    }

    /// A Docker image config (busybox's shape): the fields the core uses, volumes sorted.
    #[test]
    fn docker_image_config_gives_the_process_defaults() {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["sh"],
            "Entrypoint":["/init"],"WorkingDir":"/w","User":"1000:1000","StopSignal":"SIGQUIT",
            "Volumes":{{"/var":{{}},"/data":{{}}}},"Labels":{{"b":"2","a":"1"}}}},
            "rootfs":{{"type":"layers","diff_ids":["{}","{}"]}},"history":[{{"created_by":"x"}}]}}"#,
            digest('d'),
            digest('e')
        );
        let parsed = parse_image_config(config.as_bytes()).unwrap();
        assert_eq!(parsed.rootfs().diff_ids(), &[digest('d'), digest('e')]);
        let image = image_config(&parsed);
        assert_eq!(image.entrypoint, ["/init"]);
        assert_eq!(image.cmd, ["sh"]);
        assert_eq!(image.env, ["PATH=/bin"]);
        assert_eq!(
            (image.working_dir.as_str(), image.user.as_str(), image.stop_signal.as_str()),
            ("/w", "1000:1000", "SIGQUIT")
        );
        assert_eq!(image.volumes, ["/data", "/var"]);
        assert_eq!(image.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(), ["a=1", "b=2"]);
        // No config section: empty defaults.
        let bare = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        assert_eq!(image_config(&parse_image_config(bare.as_bytes()).unwrap()), ImageConfig::default());
        for bad_diff in ["sha256:zz".to_string(), format!("sha512:{}", "a".repeat(128))] {
            let bad = format!(
                r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{bad_diff}"]}}}}"#
            );
            let error = parse_image_config(bad.as_bytes()).unwrap_err();
            assert_eq!(error.kind, ErrorKind::InvalidArgument, "{bad_diff}: {error}");
        }
    }

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
