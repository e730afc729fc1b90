//! Registry host configuration in containerd's `config_path` layout:
//! `<config_path>/<host[:port]>/hosts.toml`, e.g.
//!
//! ```toml
//! server = "https://registry-1.docker.io"
//! [host."http://127.0.0.1:5000"]
//!   capabilities = ["pull", "resolve"]
//!   skip_verify = true
//! ```
//!
//! `[host]` entries are tried in file order, then `server`. Without a file, the registry itself
//! is used over https (docker.io maps to registry-1.docker.io).

use std::path::Path;

use crid::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryEndpoint {
    /// `scheme://host[:port]/…/v2`, without a trailing slash.
    pub base_url: String,
    pub skip_verify: bool,
    pub can_pull: bool,
    pub can_resolve: bool,
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

fn endpoint(url: &str, table: &dyn toml_edit::TableLike) -> Result<RegistryEndpoint> {
    let (can_pull, can_resolve) = capabilities(table.get("capabilities"));
    Ok(RegistryEndpoint {
        base_url: normalize_url(url)?,
        skip_verify: table.get("skip_verify").and_then(|v| v.as_bool()).unwrap_or(false),
        can_pull,
        can_resolve,
    })
}

/// Parses one hosts.toml; `default_server` is used when it names no `server`.
pub fn parse_hosts_toml(text: &str, default_server: &str) -> Result<Vec<RegistryEndpoint>> {
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e| Error::invalid(format!("hosts.toml: {e}")))?;
    let mut endpoints = Vec::new();
    if let Some(hosts) = doc.get("host").and_then(|h| h.as_table_like()) {
        for (url, item) in hosts.iter() {
            let table = item.as_table_like().ok_or_else(|| Error::invalid(format!("hosts.toml: host {url:?} is not a table")))?;
            endpoints.push(endpoint(url, table)?);
        }
    }
    let server = doc.get("server").and_then(|s| s.as_str()).unwrap_or(default_server).to_string();
    let server_endpoint = endpoint(&server, doc.as_table())?;
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
                Ok(text) => return parse_hosts_toml(&text, &default).map_err(|e| e.context(file.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(crate::errors::from_io(e, format!("read {}", file.display()))),
            }
        }
    }
    parse_hosts_toml("", &default)
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
        let eps = parse_hosts_toml(text, "https://ignored").unwrap();
        let urls: Vec<_> = eps.iter().map(|e| e.base_url.as_str()).collect();
        assert_eq!(urls, ["http://mirror-b:5000/v2", "https://mirror-a/v2", "https://upstream/v2"]);
        assert!(eps[0].can_pull && !eps[0].can_resolve);
        assert!(eps[1].skip_verify);
    }

    #[test]
    fn no_file_means_https_to_the_registry() {
        let eps = endpoints_for(None, "docker.io").unwrap();
        assert_eq!(eps[0].base_url, "https://registry-1.docker.io/v2");
    }
}
