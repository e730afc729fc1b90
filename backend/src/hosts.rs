//! Registry host configuration in containerd's `config_path` layout:
//! `<config_path>/<host[:port]>/hosts.toml`, e.g.
//!
//! ```toml
//! server = "https://registry-1.docker.io"
//! [host."http://127.0.0.1:5000"]
//!   capabilities = ["pull", "resolve"]
//!   skip_verify = true
//! [host."https://mirror.internal"]
//!   ca = "internal-ca.pem"                   # or a list; relative to this file's folder
//!   client = [["client.crt", "client.key"]]  # or "client.pem" (cert and key in one file)
//!   [host."https://mirror.internal".header]
//!     x-custom = "value"                     # or a list of values
//! ```
//!
//! `[host]` entries are tried in file order, then `server`. Without a file, the registry itself
//! is used over https (docker.io maps to registry-1.docker.io). Also as in containerd: a host
//! without a scheme is https, `capabilities` absent or empty means all, `override_path = true`
//! takes the URL's path as the API root (no `/v2` appended), and unknown keys are ignored.
//! The file is read into serde structs by the `toml` crate.

use std::path::{Path, PathBuf};

use crid::error::{Error, Result};
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryEndpoint {
    /// `scheme://host[:port]/…/v2`, without a trailing slash.
    pub base_url: String,
    pub skip_verify: bool,
    pub can_pull: bool,
    pub can_resolve: bool,
    /// Extra CA certificates (PEM files) trusted for this host, beside the system's.
    pub ca_files: Vec<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS; the key may sit in the cert file.
    pub client_certs: Vec<(PathBuf, Option<PathBuf>)>,
    /// Headers sent with every request to this host.
    pub headers: Vec<(String, String)>,
}

impl RegistryEndpoint {
    /// True when the default TLS client will do for this host.
    pub fn default_tls(&self) -> bool {
        !self.skip_verify && self.ca_files.is_empty() && self.client_certs.is_empty()
    }

    /// `host[:port]` of the endpoint: what a pull's credentials are matched against.
    pub fn host(&self) -> &str {
        let rest = self.base_url.split_once("://").map_or(self.base_url.as_str(), |(_, rest)| rest);
        rest.split('/').next().unwrap_or_default()
    }
}

/// One host's keys, as containerd reads them; the file's top level holds the `server`'s own.
/// Keys crid does not know are ignored, as containerd ignores them.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct HostFields {
    /// What the host may be used for; absent or empty means everything.
    capabilities: Vec<Capability>,
    /// CA certificate files: a path or a list of paths.
    ca: Option<OneOrMany>,
    /// Client certificates: a path (cert and key in one file), or a list of such paths and
    /// `[cert, key]` pairs.
    client: Option<ClientCerts>,
    /// Headers sent with every request, in file order: a value or a list of values each.
    header: InFileOrder<OneOrMany>,
    skip_verify: bool,
    /// The URL's path is the API root as written: no `/v2` is appended.
    override_path: bool,
}

#[derive(Deserialize, Default, Debug)]
struct HostsFile {
    server: Option<String>,
    /// `[host."…"]` tables, tried in the order the file lists them.
    #[serde(default)]
    host: InFileOrder<HostFields>,
    #[serde(flatten)]
    server_fields: HostFields,
}

/// containerd's capabilities, in any letter case.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(try_from = "String")]
enum Capability {
    Pull,
    Resolve,
    Push,
}

impl TryFrom<String> for Capability {
    type Error = String;

    fn try_from(name: String) -> std::result::Result<Capability, String> {
        match name.to_ascii_lowercase().as_str() {
            "pull" => Ok(Capability::Pull),
            "resolve" => Ok(Capability::Resolve),
            "push" => Ok(Capability::Push),
            _ => Err(format!("unknown capability {name:?} (pull, resolve or push)")),
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(untagged, expecting = "a string or a list of strings")]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(untagged, expecting = "a path, or a list of paths and [cert, key] pairs")]
enum ClientCerts {
    Combined(String),
    List(Vec<ClientCert>),
}

#[derive(Deserialize, Debug)]
#[serde(untagged, expecting = "a path or a [cert, key] pair")]
enum ClientCert {
    Combined(String),
    /// Exactly `[cert, key]`; checked after parsing, for a message that says so.
    Pair(Vec<String>),
}

/// A table's entries in the order the file lists them (a map type would sort or hash them).
#[derive(Debug)]
struct InFileOrder<V>(Vec<(String, V)>);

impl<V> Default for InFileOrder<V> {
    fn default() -> Self {
        InFileOrder(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for InFileOrder<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Entries<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Entries<V> {
            type Value = InFileOrder<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(InFileOrder(entries))
            }
        }
        deserializer.deserialize_map(Entries(std::marker::PhantomData))
    }
}

/// The API root of a host URL, as containerd derives it: no scheme means https; the path gets
/// `/v2` unless it ends with it or `override_path` says the path is the root as written.
fn api_root(url: &str, override_path: bool) -> Result<String> {
    let url = if url.contains("://") { url.to_string() } else { format!("https://{url}") };
    let Some((scheme, rest)) = url.split_once("://").filter(|(scheme, _)| matches!(*scheme, "http" | "https")) else {
        return Err(Error::invalid(format!("registry host {url:?} must be http:// or https://")));
    };
    let (host, path) = rest.split_once('/').map_or((rest, ""), |(host, path)| (host, path));
    if host.is_empty() {
        return Err(Error::invalid(format!("registry host {url:?} has no host")));
    }
    let path: Vec<&str> = path.split('/').filter(|part| !part.is_empty() && *part != ".").collect();
    let mut root = format!("{scheme}://{host}");
    for part in &path {
        root.push('/');
        root.push_str(part);
    }
    if !override_path && path.last() != Some(&"v2") {
        root.push_str("/v2");
    }
    Ok(root)
}

fn endpoint(url: &str, fields: HostFields, dir: &Path) -> Result<RegistryEndpoint> {
    let has = |wanted: Capability| fields.capabilities.is_empty() || fields.capabilities.contains(&wanted);
    let (can_pull, can_resolve) = (has(Capability::Pull), has(Capability::Resolve));
    let path = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { dir.join(p) };
    let ca_files = fields.ca.map(OneOrMany::into_vec).unwrap_or_default().iter().map(|p| path(p)).collect();
    let mut client_certs = Vec::new();
    let certs = match fields.client {
        None => vec![],
        Some(ClientCerts::Combined(file)) => vec![ClientCert::Combined(file)],
        Some(ClientCerts::List(certs)) => certs,
    };
    for cert in certs {
        match cert {
            ClientCert::Combined(file) => client_certs.push((path(&file), None)),
            ClientCert::Pair(pair) => match pair.as_slice() {
                [cert, key] => client_certs.push((path(cert), Some(path(key)))),
                _ => {
                    return Err(Error::invalid(format!(
                        "hosts.toml: client pair {pair:?} must be [cert, key] (or a single path for both)"
                    )));
                }
            },
        }
    }
    let headers = fields
        .header
        .0
        .into_iter()
        .flat_map(|(name, values)| values.into_vec().into_iter().map(move |v| (name.clone(), v)))
        .collect();
    Ok(RegistryEndpoint {
        base_url: api_root(url, fields.override_path)?,
        skip_verify: fields.skip_verify,
        can_pull,
        can_resolve,
        ca_files,
        client_certs,
        headers,
    })
}

/// Parses one hosts.toml; `default_server` is used when it names no `server`. Relative
/// certificate paths are taken from `dir`, the file's folder.
pub fn parse_hosts_toml(text: &str, default_server: &str, dir: &Path) -> Result<Vec<RegistryEndpoint>> {
    let file: HostsFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |span| text[..span.start.min(text.len())].lines().count().max(1));
        Error::invalid(format!("hosts.toml line {line}: {}", e.message().trim_end())).with_source(e)
    })?;
    let mut endpoints = Vec::new();
    for (url, fields) in file.host.0 {
        endpoints.push(endpoint(&url, fields, dir).map_err(|e| e.context(format!("host {url:?}")))?);
    }
    let server = file.server.as_deref().unwrap_or(default_server);
    let server_endpoint = endpoint(server, file.server_fields, dir)?;
    if !endpoints.iter().any(|e| e.base_url == server_endpoint.base_url) {
        endpoints.push(server_endpoint);
    }
    Ok(endpoints)
}

pub fn default_server(domain: &str) -> String {
    match domain {
        "docker.io" => "https://registry-1.docker.io".to_string(),
        _ => format!("https://{domain}"),
    }
}

/// The endpoints to try for `domain`, in order.
pub fn endpoints_for(config_path: Option<&Path>, domain: &str) -> Result<Vec<RegistryEndpoint>> {
    let default = default_server(domain);
    if let Some(dir) = config_path {
        // containerd also accepts `_default` as the fallback for hosts without their own file.
        for candidate in [domain, "_default"] {
            let file = dir.join(candidate).join("hosts.toml");
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    return parse_hosts_toml(&text, &default, &dir.join(candidate))
                        .map_err(|e| e.context(file.display()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(crate::errors::from_io(e, format!("read {}", file.display()))),
            }
        }
    }
    parse_hosts_toml("", &default, Path::new("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_tried_in_file_order_then_server() {
        let text = r#"
server = "https://upstream"
[host."http://mirror-b:5000"]
  capabilities = ["pull"]
[host."https://mirror-a"]
  skip_verify = true
"#;
        let eps = parse_hosts_toml(text, "https://ignored", Path::new("/d")).unwrap();
        let urls: Vec<_> = eps.iter().map(|e| e.base_url.as_str()).collect();
        assert_eq!(urls, ["http://mirror-b:5000/v2", "https://mirror-a/v2", "https://upstream/v2"]);
        assert!(eps[0].can_pull && !eps[0].can_resolve);
        assert!(eps[1].skip_verify);
        let hosts: Vec<_> = eps.iter().map(|e| e.host()).collect();
        assert_eq!(hosts, ["mirror-b:5000", "mirror-a", "upstream"], "what credentials are matched against");
    }

    #[test]
    fn certificates_and_headers_per_host() {
        let text = r#"
server = "https://r"
ca = ["/etc/ca.pem", "extra.pem"]
client = [["c.crt", "c.key"], "both.pem"]
[header]
  x-one = "1"
  x-two = ["a", "b"]
"#;
        let eps = parse_hosts_toml(text, "https://ignored", Path::new("/d/r")).unwrap();
        assert_eq!(eps[0].ca_files, [PathBuf::from("/etc/ca.pem"), PathBuf::from("/d/r/extra.pem")]);
        assert_eq!(
            eps[0].client_certs,
            [(PathBuf::from("/d/r/c.crt"), Some(PathBuf::from("/d/r/c.key"))), (PathBuf::from("/d/r/both.pem"), None)]
        );
        assert_eq!(
            eps[0].headers,
            [("x-one".to_string(), "1".to_string()), ("x-two".into(), "a".into()), ("x-two".into(), "b".into())]
        );
        assert!(!eps[0].default_tls());
        assert!(parse_hosts_toml("client = [[\"a\", \"b\", \"c\"]]", "https://r", Path::new("/")).is_err());
        assert!(parse_hosts_toml("ca = 5", "https://r", Path::new("/")).is_err());
    }

    fn parse(text: &str) -> Result<Vec<RegistryEndpoint>> {
        parse_hosts_toml(text, "https://default", Path::new("/d"))
    }

    fn message(text: &str) -> String {
        let error = parse(text).unwrap_err();
        assert_eq!(error.kind, crid::error::ErrorKind::InvalidArgument, "{error}");
        error.message
    }

    #[test]
    fn key_server() {
        assert_eq!(parse("").unwrap()[0].base_url, "https://default/v2");
        assert_eq!(parse(r#"server = "http://r:5000""#).unwrap()[0].base_url, "http://r:5000/v2");
        // No scheme means https, as in containerd; a path gets /v2 unless it has it.
        assert_eq!(parse(r#"server = "r.example""#).unwrap()[0].base_url, "https://r.example/v2");
        assert_eq!(parse(r#"server = "https://r/a//b/""#).unwrap()[0].base_url, "https://r/a/b/v2");
        assert_eq!(parse(r#"server = "https://r/v2/""#).unwrap()[0].base_url, "https://r/v2");
        assert!(message(r#"server = "ftp://r""#).contains("http:// or https://"));
        assert!(message("server = 5").contains("line 1"));
    }

    #[test]
    fn key_capabilities() {
        let eps = parse(
            r#"
[host."https://a"]
  capabilities = ["Pull"]
[host."https://b"]
  capabilities = ["resolve", "push"]
[host."https://c"]
  capabilities = []
"#,
        )
        .unwrap();
        let caps: Vec<_> = eps.iter().map(|e| (e.can_pull, e.can_resolve)).collect();
        // Empty or absent means everything (the server's entry has none).
        assert_eq!(caps, [(true, false), (false, true), (true, true), (true, true)]);
        let error = message("[host.\"https://a\"]\ncapabilities = [\"pull\", \"write\"]\n");
        assert!(error.contains("unknown capability \"write\"") && error.contains("line 2"), "{error}");
    }

    #[test]
    fn key_ca() {
        let eps = parse("ca = \"ca.pem\"\n[host.\"https://m\"]\nca = [\"/abs/a.pem\", \"rel/b.pem\"]\n").unwrap();
        assert_eq!(eps[0].ca_files, [PathBuf::from("/abs/a.pem"), PathBuf::from("/d/rel/b.pem")]);
        assert_eq!(eps[1].ca_files, [PathBuf::from("/d/ca.pem")]);
        assert!(!eps[1].default_tls());
        assert!(message("ca = [1]").contains("a string or a list of strings"));
    }

    #[test]
    fn key_client() {
        let combined = parse(r#"client = "both.pem""#).unwrap();
        assert_eq!(combined[0].client_certs, [(PathBuf::from("/d/both.pem"), None)]);
        let list = parse(r#"client = ["one.pem", ["/c.crt", "c.key"]]"#).unwrap();
        assert_eq!(
            list[0].client_certs,
            [(PathBuf::from("/d/one.pem"), None), (PathBuf::from("/c.crt"), Some(PathBuf::from("/d/c.key")))]
        );
        assert!(message(r#"client = [["only-cert.crt"]]"#).contains("must be [cert, key]"));
        assert!(message(r#"client = [["a", "b", "c"]]"#).contains("must be [cert, key]"));
        assert!(message("client = 5").contains("a path, or a list of paths and [cert, key] pairs"));
    }

    #[test]
    fn key_header() {
        let eps = parse("[host.\"https://m\".header]\nx-b = \"1\"\nx-a = [\"2\", \"3\"]\n").unwrap();
        // File order, not sorted.
        assert_eq!(
            eps[0].headers,
            [("x-b".into(), "1".into()), ("x-a".into(), "2".into()), ("x-a".into(), "3".into())]
        );
        assert!(eps[1].headers.is_empty(), "the server has headers of its own only");
        assert!(message("[header]\nx = 1\n").contains("a string or a list of strings"));
    }

    #[test]
    fn key_skip_verify() {
        let eps = parse("skip_verify = true\n[host.\"https://m\"]\n").unwrap();
        assert!(!eps[0].skip_verify && eps[0].default_tls());
        assert!(eps[1].skip_verify && !eps[1].default_tls());
        assert!(message(r#"skip_verify = "yes""#).contains("line 1"));
    }

    #[test]
    fn key_override_path() {
        let eps = parse(
            r#"
[host."https://m/custom/root"]
  override_path = true
[host."https://n/custom/root"]
[host."https://o"]
  override_path = true
"#,
        )
        .unwrap();
        let urls: Vec<_> = eps.iter().map(|e| e.base_url.as_str()).collect();
        assert_eq!(urls, ["https://m/custom/root", "https://n/custom/root/v2", "https://o", "https://default/v2"]);
    }

    #[test]
    fn unknown_keys_are_ignored_as_containerd_does() {
        assert_eq!(parse("future_key = 1\n[host.\"https://m\"]\nother = \"x\"\n").unwrap().len(), 2);
    }

    #[test]
    fn no_file_means_https_to_the_registry() {
        let eps = endpoints_for(None, "docker.io").unwrap();
        assert_eq!(eps[0].base_url, "https://registry-1.docker.io/v2");
    }
}
