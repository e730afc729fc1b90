//! The CNI boundary: network configuration and pod network setup/teardown.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// What a CNI ADD or DEL needs to know about a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNetwork {
    pub sandbox_id: String,
    /// Path of the pod's network namespace; empty on DEL when the netns is already gone.
    pub netns_path: String,
    pub interface_name: String,
    /// K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID.
    pub args: BTreeMap<String, String>,
    pub port_mappings: Vec<PortMapping>,
    /// The pod's annotations, for plugins that declare the `io.kubernetes.cri.pod-annotations`
    /// capability, as containerd passes them.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: String,
    pub container_port: i32,
    pub host_port: i32,
    pub host_ip: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub interface: String,
    /// Address without prefix length, e.g. `10.88.0.5`.
    pub address: String,
    pub gateway: String,
}

/// The result of an ADD, persisted with the sandbox so that DEL can be issued after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CniResult {
    pub ips: Vec<IpConfig>,
    /// The plugin's raw JSON result, shown in verbose status.
    pub raw: String,
}

#[async_trait]
pub trait Cni: Send + Sync + 'static {
    /// (Re)loads the network configuration from the conf dir.
    async fn load(&self) -> Result<()>;
    /// Ok when a usable network configuration is loaded; otherwise why not.
    async fn status(&self) -> Result<()>;
    /// CNI ADD. May allocate an IP even when it fails (chained plugins).
    async fn setup(&self, network: &PodNetwork) -> Result<CniResult>;
    /// CNI DEL. Idempotent: a DEL of an unknown pod succeeds.
    async fn teardown(&self, network: &PodNetwork) -> Result<()>;
    /// The loaded configuration as JSON, for verbose Status.
    fn config_json(&self) -> String;
    /// Writes a conf file rendered from `conf_template` (UpdateRuntimeConfig). Returns the path.
    async fn write_config(&self, file_name: &str, contents: &str) -> Result<String>;
}
