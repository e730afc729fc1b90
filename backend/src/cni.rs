//! `RealCni`: runs CNI plugin binaries the way libcni does.
//!
//! Configuration: the lexically first `*.conflist`, `*.conf` or `*.json` in `conf_dir` (a
//! single-plugin `.conf` is wrapped into a list). Every pod's `lo` is brought up, which is what
//! the loopback plugin containerd runs for each pod does; crid does it itself, in one rtnetlink
//! request, instead of starting that plugin on every ADD and DEL.
//! ADD runs the plugins in order, chaining each result as the next one's `prevResult`; DEL runs
//! them in reverse with the cached ADD result. Results are cached in `cache_dir` so that DEL works
//! after a restart of crid.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use crid::error::{Error, ErrorKind, Result};
use crid::ports::{Cni, CniResult, IpConfig, PodNetwork};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::RwLock;

use crate::errors::IoContext;

/// A plugin that hangs must not hang the pod operation forever.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(120);

/// A parsed network configuration list.
#[derive(Clone, Debug)]
struct NetworkList {
    name: String,
    cni_version: String,
    plugins: Vec<Value>,
    file: String,
    raw: Value,
}

impl NetworkList {
    fn parse(text: &str, file: &str, is_list: bool) -> Result<NetworkList> {
        let raw: Value = serde_json::from_str(text).map_err(|e| Error::invalid(format!("{file}: {e}")))?;
        let name = raw.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let cni_version = raw.get("cniVersion").and_then(Value::as_str).unwrap_or("0.2.0").to_string();
        let plugins = if is_list {
            raw.get("plugins").and_then(Value::as_array).cloned().unwrap_or_default()
        } else {
            vec![raw.clone()]
        };
        if name.is_empty() {
            return Err(Error::invalid(format!("{file}: network has no name")));
        }
        if plugins.is_empty() || plugins.iter().any(|p| p.get("type").and_then(Value::as_str).is_none()) {
            return Err(Error::invalid(format!("{file}: every plugin needs a type")));
        }
        Ok(NetworkList { name, cni_version, plugins, file: file.to_string(), raw })
    }
}

/// What is cached per pod between ADD and DEL.
#[derive(Serialize, Deserialize)]
struct CachedAttachment {
    network: String,
    interface: String,
    result: Value,
}

pub struct RealCni {
    bin_dirs: Vec<PathBuf>,
    conf_dir: PathBuf,
    cache_dir: PathBuf,
    /// Readers are pod setups/teardowns; a reload takes it exclusively, so it never changes the
    /// configuration under a running ADD.
    network: RwLock<Option<NetworkList>>,
    last_json: std::sync::Mutex<String>,
}

fn conf_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e).io_context(format!("read {}", dir.display())),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if matches!(ext, "conflist" | "conf" | "json") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Extracts the pod's IPs from a plugin result of any spec version.
fn parse_ips(result: &Value) -> Vec<IpConfig> {
    let interfaces: Vec<String> = result
        .get("interfaces")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|i| i.get("name").and_then(Value::as_str).unwrap_or_default().to_string()).collect())
        .unwrap_or_default();
    let strip = |cidr: &str| cidr.split('/').next().unwrap_or_default().to_string();
    let mut ips = Vec::new();
    if let Some(list) = result.get("ips").and_then(Value::as_array) {
        for ip in list {
            let interface = ip
                .get("interface")
                .and_then(Value::as_u64)
                .and_then(|i| interfaces.get(i as usize).cloned())
                .unwrap_or_default();
            ips.push(IpConfig {
                interface,
                address: strip(ip.get("address").and_then(Value::as_str).unwrap_or_default()),
                gateway: ip.get("gateway").and_then(Value::as_str).unwrap_or_default().to_string(),
            });
        }
    }
    // Spec 0.1/0.2: "ip4"/"ip6" objects.
    for key in ["ip4", "ip6"] {
        if let Some(ip) = result.get(key) {
            ips.push(IpConfig {
                interface: "eth0".to_string(),
                address: strip(ip.get("ip").and_then(Value::as_str).unwrap_or_default()),
                gateway: ip.get("gateway").and_then(Value::as_str).unwrap_or_default().to_string(),
            });
        }
    }
    ips.retain(|ip| !ip.address.is_empty());
    ips
}

fn cni_args(network: &PodNetwork) -> String {
    let mut parts = vec!["IgnoreUnknown=1".to_string()];
    parts.extend(network.args.iter().map(|(k, v)| format!("{k}={v}")));
    parts.join(";")
}

/// Per-plugin config as the plugin reads it on stdin: the plugin's own keys plus the network's
/// name and version, the previous result, and the runtime config for declared capabilities.
fn plugin_stdin(list: &NetworkList, plugin: &Value, prev: Option<&Value>, network: &PodNetwork) -> Value {
    let mut config = plugin.clone();
    let object = config.as_object_mut().expect("validated plugin is an object");
    object.insert("name".into(), json!(list.name));
    object.insert("cniVersion".into(), json!(list.cni_version));
    if let Some(prev) = prev {
        object.insert("prevResult".into(), prev.clone());
    }
    let wants_ports = plugin.pointer("/capabilities/portMappings").and_then(Value::as_bool).unwrap_or(false);
    let ports: Vec<Value> = network
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let mut m = json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol.to_lowercase()});
            if !p.host_ip.is_empty() {
                m["hostIP"] = json!(p.host_ip);
            }
            m
        })
        .collect();
    let mut runtime_config = serde_json::Map::new();
    if wants_ports && !ports.is_empty() {
        runtime_config.insert("portMappings".into(), json!(ports));
    }
    let wants_annotations = plugin
        .get("capabilities")
        .and_then(|c| c.get(POD_ANNOTATIONS_CAPABILITY))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if wants_annotations {
        runtime_config.insert(POD_ANNOTATIONS_CAPABILITY.into(), json!(network.annotations));
    }
    if !runtime_config.is_empty() {
        object.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    config
}

/// The capability under which containerd hands plugins the pod's annotations.
const POD_ANNOTATIONS_CAPABILITY: &str = "io.kubernetes.cri.pod-annotations";

impl RealCni {
    pub fn new(bin_dir: &str, conf_dir: &str, cache_dir: &str) -> Arc<RealCni> {
        Arc::new(RealCni {
            // CNI_PATH style: several dirs separated by ':'.
            bin_dirs: bin_dir.split(':').filter(|d| !d.is_empty()).map(PathBuf::from).collect(),
            conf_dir: PathBuf::from(conf_dir),
            cache_dir: PathBuf::from(cache_dir),
            network: RwLock::new(None),
            last_json: std::sync::Mutex::new(String::new()),
        })
    }

    fn find_plugin(&self, kind: &str) -> Result<PathBuf> {
        if kind.contains('/') {
            return Err(Error::invalid(format!("invalid plugin type {kind:?}")));
        }
        self.bin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::not_found(format!("failed to find plugin {kind:?} in path {:?}", self.bin_dirs)))
    }

    async fn exec_plugin(&self, command: &str, config: &Value, network: &PodNetwork, ifname: &str) -> Result<Value> {
        let kind = config.get("type").and_then(Value::as_str).unwrap_or_default();
        let binary = self.find_plugin(kind)?;
        let cni_path = std::env::join_paths(&self.bin_dirs).unwrap_or_default();
        let started = std::time::Instant::now();
        let mut child = tokio::process::Command::new(&binary)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &network.sandbox_id)
            .env("CNI_NETNS", &network.netns_path)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", cni_path)
            .env("CNI_ARGS", cni_args(network))
            // Plugins call iptables and ip; give them the usual PATH.
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .io_context(format!("run CNI plugin {}", binary.display()))?;
        let input = serde_json::to_vec(config).map_err(|e| Error::internal(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&input).await.io_context("write CNI config")?;
        }
        let output = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| Error::deadline(format!("CNI plugin {kind} {command} timed out")))?
            .io_context(format!("wait for CNI plugin {kind}"))?;
        tracing::debug!(kind, command, elapsed_us = started.elapsed().as_micros() as u64, "CNI plugin ran");
        if !output.status.success() {
            // Plugins report errors as JSON {code, msg, details} on stdout.
            let detail: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
            let msg = detail.get("msg").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| {
                format!("{} {}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
            });
            let details = detail.get("details").and_then(Value::as_str).unwrap_or_default();
            return Err(Error::internal(format!("plugin type={kind:?} failed ({command}): {} {details}", msg.trim())));
        }
        if command == "DEL" || output.stdout.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&output.stdout)
            .map_err(|e| Error::internal(format!("plugin {kind} returned bad JSON: {e}")))
    }

    async fn add_list(&self, list: &NetworkList, network: &PodNetwork, ifname: &str) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let config = plugin_stdin(list, plugin, prev.as_ref(), network);
            let result = self.exec_plugin("ADD", &config, network, ifname).await?;
            if !result.is_null() {
                prev = Some(result);
            }
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    async fn del_list(
        &self,
        list: &NetworkList,
        network: &PodNetwork,
        ifname: &str,
        prev: Option<&Value>,
    ) -> Result<()> {
        for plugin in list.plugins.iter().rev() {
            let config = plugin_stdin(list, plugin, prev.filter(|p| !p.is_null()), network);
            self.exec_plugin("DEL", &config, network, ifname).await?;
        }
        Ok(())
    }

    fn cache_path(&self, sandbox_id: &str) -> PathBuf {
        self.cache_dir.join(format!("{sandbox_id}.json"))
    }

    // The cache's small files are read and written on a blocking thread, as every other file
    // of crid's is: the async work runs on one thread, which a slow disk must not hold.
    async fn read_cache(&self, sandbox_id: &str) -> Option<CachedAttachment> {
        let path = self.cache_path(sandbox_id);
        let bytes = crate::os::blocking(move || Ok(std::fs::read(path).ok())).await.ok().flatten()?;
        serde_json::from_slice(&bytes).ok()
    }

    async fn write_cache(&self, sandbox_id: &str, attachment: &CachedAttachment) -> Result<()> {
        let bytes = serde_json::to_vec(attachment).map_err(|e| Error::internal(e.to_string()))?;
        let (dir, path) = (self.cache_dir.clone(), self.cache_path(sandbox_id));
        crate::os::blocking(move || {
            std::fs::create_dir_all(&dir).io_context(format!("mkdir {}", dir.display()))?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes).io_context("write CNI cache")?;
            std::fs::rename(&tmp, &path).io_context("write CNI cache")
        })
        .await
    }

    async fn remove_cache(&self, sandbox_id: &str) -> Result<()> {
        let path = self.cache_path(sandbox_id);
        crate::os::blocking(move || match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).io_context("remove CNI cache"),
            _ => Ok(()),
        })
        .await
    }

    /// Polls `conf_dir` and reloads when its files change (a simple stand-in for inotify).
    pub fn spawn_watcher(self: &Arc<Self>, period: Duration) -> tokio::task::JoinHandle<()> {
        let cni = self.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let stamp = dir_stamp(&cni.conf_dir);
                if last.as_ref() != Some(&stamp) {
                    if last.is_some() {
                        match cni.load().await {
                            Ok(()) => tracing::info!(dir = %cni.conf_dir.display(), "CNI config reloaded"),
                            Err(e) => tracing::warn!(error = %e, "CNI config reload failed"),
                        }
                    }
                    last = Some(stamp);
                }
                tokio::time::sleep(period).await;
            }
        })
    }
}

/// Names and modification times of the conf files: changes when any is added, removed or edited.
fn dir_stamp(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>)> {
    conf_files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let mtime = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
            (p, mtime)
        })
        .collect()
}

#[async_trait]
impl Cni for RealCni {
    async fn load(&self) -> Result<()> {
        let files = conf_files(&self.conf_dir)?;
        let mut loaded = None;
        let mut last_error = None;
        for file in files {
            let is_list = file.extension().and_then(|e| e.to_str()) == Some("conflist");
            let text = std::fs::read_to_string(&file).io_context(format!("read {}", file.display()))?;
            match NetworkList::parse(&text, &file.to_string_lossy(), is_list) {
                Ok(list) => {
                    loaded = Some(list);
                    break;
                }
                // libcni skips invalid files and takes the next one.
                Err(e) => last_error = Some(e),
            }
        }
        let mut network = self.network.write().await;
        *network = loaded;
        match network.as_ref() {
            Some(list) => {
                *self.last_json.lock().unwrap() = json!({"file": list.file, "config": list.raw}).to_string();
                Ok(())
            }
            None => {
                self.last_json.lock().unwrap().clear();
                Err(last_error.unwrap_or_else(|| {
                    Error::precondition(format!("no network config found in {}", self.conf_dir.display()))
                }))
            }
        }
    }

    async fn status(&self) -> Result<()> {
        match self.network.read().await.as_ref() {
            Some(_) => Ok(()),
            None => Err(Error::precondition("cni config not initialized")),
        }
    }

    async fn setup(&self, network: &PodNetwork) -> Result<CniResult> {
        let guard = self.network.read().await;
        let list = guard.as_ref().ok_or_else(|| Error::precondition("cni config not initialized"))?;
        // A netlink socket acts on the namespace it was opened in. The kernel gives `lo`
        // 127.0.0.1 and ::1 as it comes up.
        let netns_path = network.netns_path.clone();
        if netns_path.is_empty() {
            // in_netns would take the host's: never bring up the host's lo for a pod.
            return Err(Error::internal("loopback: the pod has no network namespace"));
        }
        crate::os::blocking(move || crate::os::in_netns(&netns_path, || set_link_up(LOOPBACK_IFINDEX)))
            .await
            .map_err(|e| e.context("loopback"))?;
        let ifname = if network.interface_name.is_empty() { "eth0" } else { network.interface_name.as_str() };
        let result = self.add_list(list, network, ifname).await?;
        self.write_cache(
            &network.sandbox_id,
            &CachedAttachment { network: list.name.clone(), interface: ifname.to_string(), result: result.clone() },
        )
        .await?;
        let ips = parse_ips(&result);
        if !ips.iter().any(|ip| ip.interface == ifname || ip.interface.is_empty()) {
            return Err(Error::internal(format!(
                "failed to find network info for sandbox {}: no IP on {ifname}",
                network.sandbox_id
            )));
        }
        Ok(CniResult { ips, raw: result.to_string() })
    }

    async fn teardown(&self, network: &PodNetwork) -> Result<()> {
        let guard = self.network.read().await;
        let list = guard.as_ref().ok_or_else(|| Error::precondition("cni config not initialized"))?;
        let cached = self.read_cache(&network.sandbox_id).await;
        let ifname = cached.as_ref().map(|c| c.interface.clone()).unwrap_or_else(|| {
            if network.interface_name.is_empty() { "eth0".into() } else { network.interface_name.clone() }
        });
        let prev = cached.as_ref().filter(|c| c.network == list.name).map(|c| &c.result);
        self.del_list(list, network, &ifname, prev).await?;
        // The loopback plugin's DEL sets `lo` down in a namespace that is removed next; crid
        // leaves it be.
        self.remove_cache(&network.sandbox_id).await
    }

    fn config_json(&self) -> String {
        self.last_json.lock().unwrap().clone()
    }

    async fn write_config(&self, file_name: &str, contents: &str) -> Result<String> {
        if file_name.contains('/') || file_name.is_empty() {
            return Err(Error::invalid(format!("invalid CNI config file name {file_name:?}")));
        }
        std::fs::create_dir_all(&self.conf_dir).io_context(format!("mkdir {}", self.conf_dir.display()))?;
        let path = self.conf_dir.join(file_name);
        let tmp = self.conf_dir.join(format!(".{file_name}.tmp"));
        std::fs::write(&tmp, contents).io_context(format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).io_context(format!("write {}", path.display()))?;
        Ok(path.to_string_lossy().into_owned())
    }
}

/// The kernel's index of `lo`, the first device of every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// Sends `message` to the kernel's rtnetlink in the calling thread's network namespace (a
/// socket acts on the namespace it was opened in) and returns the payload of its one reply.
/// `what` names the request in errors.
fn rtnetlink_exchange(
    message: netlink_packet_route::RouteNetlinkMessage,
    flags: u16,
    what: &str,
    reply_capacity_bytes: usize,
) -> Result<netlink_packet_core::NetlinkPayload<netlink_packet_route::RouteNetlinkMessage>> {
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::RouteNetlinkMessage;

    let mut request = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
    request.header.flags = flags;
    request.header.sequence_number = 1;
    request.finalize();
    let mut buf = vec![0; request.header.length as usize];
    request.serialize(&mut buf);

    let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE).io_context("netlink socket")?;
    socket.bind_auto().io_context("bind netlink socket")?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0)).io_context("connect netlink socket")?;
    socket.send(&buf, 0).io_context(format!("send {what}"))?;
    let mut reply = Vec::with_capacity(reply_capacity_bytes);
    let len = socket.recv(&mut reply, 0).io_context(format!("receive {what}'s reply"))?;
    let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[..len])
        .map_err(|e| Error::internal(format!("unreadable {what} reply: {e}")))?;
    Ok(message.payload)
}

/// Sets the UP flag of the link `index` of the calling thread's network namespace and waits
/// for the kernel's acknowledgement.
fn set_link_up(index: u32) -> Result<()> {
    use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkPayload};
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::{LinkFlags, LinkMessage};

    let mut link = LinkMessage::default();
    link.header.index = index;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    match rtnetlink_exchange(RouteNetlinkMessage::SetLink(link), NLM_F_REQUEST | NLM_F_ACK, "RTM_SETLINK", 4096)? {
        NetlinkPayload::Error(error) => match error.code {
            None => Ok(()),
            Some(code) => {
                let errno = std::io::Error::from_raw_os_error(-code.get());
                Err(Error::internal(format!("set link {index} up: {errno}")).with_source(errno))
            }
        },
        other => Err(Error::internal(format!("unexpected reply to RTM_SETLINK: {other:?}"))),
    }
}

/// The counters of the link `name` of the calling thread's network namespace, from one
/// RTM_GETLINK request (the kernel's 64-bit counters).
pub(crate) fn link_stats(name: &str) -> Result<crid::ports::InterfaceStats> {
    use netlink_packet_core::{NLM_F_REQUEST, NetlinkPayload};
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};

    let mut link = LinkMessage::default();
    link.attributes.push(LinkAttribute::IfName(name.to_string()));
    // A link's message with every attribute is a few kilobytes; the kernel truncates a reply
    // that does not fit, so the buffer is generous.
    match rtnetlink_exchange(RouteNetlinkMessage::GetLink(link), NLM_F_REQUEST, "RTM_GETLINK", 64 * 1024)? {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => link
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                LinkAttribute::Stats64(stats) => Some(crid::ports::InterfaceStats {
                    rx_bytes: stats.rx_bytes,
                    rx_errors: stats.rx_errors,
                    tx_bytes: stats.tx_bytes,
                    tx_errors: stats.tx_errors,
                }),
                _ => None,
            })
            .ok_or_else(|| Error::internal(format!("link {name} has no counters"))),
        NetlinkPayload::Error(error) => {
            let code = error.code.map(|code| -code.get()).unwrap_or(0);
            let errno = std::io::Error::from_raw_os_error(code);
            let kind = if code == libc::ENODEV { ErrorKind::NotFound } else { ErrorKind::Internal };
            Err(Error::new(kind, format!("link {name}: {errno}")).with_source(errno))
        }
        other => Err(Error::internal(format!("unexpected reply to RTM_GETLINK: {other:?}"))),
    }
}

/// The parsed IPs of a raw result, for callers that only kept the JSON.
pub fn ips_of(raw: &str) -> Vec<IpConfig> {
    serde_json::from_str::<Value>(raw).map(|v| parse_ips(&v)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn parses_v1_result_ips_with_interfaces() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.99.0.5/16", "gateway": "10.99.0.1", "interface": 2}]
        });
        assert_eq!(
            parse_ips(&result),
            vec![IpConfig { interface: "eth0".into(), address: "10.99.0.5".into(), gateway: "10.99.0.1".into() }]
        );
    }

    #[test]
    fn parses_old_result_format() {
        let result = json!({"ip4": {"ip": "10.1.0.2/24", "gateway": "10.1.0.1"}});
        assert_eq!(parse_ips(&result)[0].address, "10.1.0.2");
    }

    #[tokio::test]
    async fn status_fails_without_config_and_loads_first_file() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("net.d");
        let cni = RealCni::new("/nonexistent", &conf.to_string_lossy(), &dir.path().join("cache").to_string_lossy());
        assert!(cni.load().await.is_err());
        assert_eq!(cni.status().await.unwrap_err().message, "cni config not initialized");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(
            conf.join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(conf.join("10-a.conf"), r#"{"cniVersion":"1.0.0","name":"a","type":"bridge"}"#).unwrap();
        cni.load().await.unwrap();
        cni.status().await.unwrap();
        assert!(cni.config_json().contains("10-a.conf"));
    }

    #[test]
    fn port_mappings_reach_plugins_that_ask_for_them() {
        let list = NetworkList::parse(
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
            "f",
            true,
        )
        .unwrap();
        let network = PodNetwork {
            sandbox_id: "s".into(),
            netns_path: "/x".into(),
            interface_name: "eth0".into(),
            args: BTreeMap::new(),
            port_mappings: vec![crid::ports::PortMapping {
                protocol: "TCP".into(),
                container_port: 80,
                host_port: 8080,
                host_ip: String::new(),
            }],
            annotations: [("a".to_string(), "1".to_string())].into(),
        };
        let bridge = plugin_stdin(&list, &list.plugins[0], None, &network);
        assert!(bridge.get("runtimeConfig").is_none());
        let portmap = plugin_stdin(&list, &list.plugins[1], Some(&json!({"ips": []})), &network);
        assert_eq!(portmap["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert_eq!(portmap["name"], "n");
        assert!(portmap.get("prevResult").is_some());
        // The pod's annotations, only to a plugin that asks for them.
        assert!(portmap["runtimeConfig"].get(POD_ANNOTATIONS_CAPABILITY).is_none());
        let annotated = NetworkList::parse(
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"fp","capabilities":{"io.kubernetes.cri.pod-annotations":true}}]}"#,
            "f",
            true,
        )
        .unwrap();
        let fp = plugin_stdin(&annotated, &annotated.plugins[0], None, &network);
        assert_eq!(fp["runtimeConfig"][POD_ANNOTATIONS_CAPABILITY], json!({"a": "1"}));
        assert!(fp["runtimeConfig"].get("portMappings").is_none());
    }
}
