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
//! is used over https (docker.io maps to registry-1.docker.io).

use std::path::{Path, PathBuf};

use crid::error::{Error, Result};

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
}

fn normalize_url(url: &str) -> Result<String> {
    let url = url.trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::invalid(format!("registry host {url:?} must start with http:// or https://")));
    }
    // A bare host means the standard API root; a URL already ending in /v2 is taken as given.
    Ok(if url.ends_with("/v2") { url.to_string() } else { format!("{url}/v2") })
}

fn capabilities(item: Option<&toml_edit::Item>) -> (bool, bool) {
    match item.and_then(|i| i.as_array()) {
        None => (true, true),
        Some(array) => {
            let has = |c: &str| array.iter().any(|v| v.as_str() == Some(c));
            (has("pull"), has("resolve"))
        }
    }
}

/// A string or a list of strings.
fn strings(item: Option<&toml_edit::Item>, what: &str) -> Result<Vec<String>> {
    let Some(item) = item else { return Ok(Vec::new()) };
    if let Some(s) = item.as_str() {
        return Ok(vec![s.to_string()]);
    }
    let array = item
        .as_array()
        .ok_or_else(|| Error::invalid(format!("hosts.toml: {what} must be a string or a list of strings")))?;
    array
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::invalid(format!("hosts.toml: {what} must hold strings")))
        })
        .collect()
}

fn endpoint(url: &str, table: &dyn toml_edit::TableLike, dir: &Path) -> Result<RegistryEndpoint> {
    let (can_pull, can_resolve) = capabilities(table.get("capabilities"));
    let path = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { dir.join(p) };
    let ca_files = strings(table.get("ca"), "ca")?.iter().map(|p| path(p)).collect();
    let mut client_certs = Vec::new();
    match table.get("client") {
        None => {}
        Some(item) if item.as_str().is_some() => client_certs.push((path(item.as_str().unwrap()), None)),
        Some(item) => {
            let pairs = item
                .as_array()
                .ok_or_else(|| Error::invalid("hosts.toml: client must be a path or a list of [cert, key] pairs"))?;
            for pair in pairs.iter() {
                let files: Vec<&str> = match (pair.as_str(), pair.as_array()) {
                    (Some(single), _) => vec![single],
                    (_, Some(list)) => list.iter().filter_map(|v| v.as_str()).collect(),
                    _ => Vec::new(),
                };
                match files.as_slice() {
                    [cert] => client_certs.push((path(cert), None)),
                    [cert, key] => client_certs.push((path(cert), Some(path(key)))),
                    _ => {
                        return Err(Error::invalid(
                            "hosts.toml: each client entry is a cert path or a [cert, key] pair",
                        ));
                    }
                }
            }
        }
    }
    let mut headers = Vec::new();
    if let Some(table) = table.get("header").and_then(|h| h.as_table_like()) {
        for (name, value) in table.iter() {
            for value in strings(Some(value), &format!("header {name}"))? {
                headers.push((name.to_string(), value));
            }
        }
    }
    Ok(RegistryEndpoint {
        base_url: normalize_url(url)?,
        skip_verify: table.get("skip_verify").and_then(|v| v.as_bool()).unwrap_or(false),
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
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e| Error::invalid(format!("hosts.toml: {e}")))?;
    let mut endpoints = Vec::new();
    if let Some(hosts) = doc.get("host").and_then(|h| h.as_table_like()) {
        for (url, item) in hosts.iter() {
            let table = item
                .as_table_like()
                .ok_or_else(|| Error::invalid(format!("hosts.toml: host {url:?} is not a table")))?;
            endpoints.push(endpoint(url, table, dir)?);
        }
    }
    let server = doc.get("server").and_then(|s| s.as_str()).unwrap_or(default_server).to_string();
    let server_endpoint = endpoint(&server, doc.as_table(), dir)?;
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

    #[test]
    fn no_file_means_https_to_the_registry() {
        let eps = endpoints_for(None, "docker.io").unwrap();
        assert_eq!(eps[0].base_url, "https://registry-1.docker.io/v2");
    }
}
