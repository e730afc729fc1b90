//! Version, Status, UpdateRuntimeConfig, RuntimeConfig, GetContainerEvents and the RPCs that
//! answer Unimplemented.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use k8s_cri::v1::{
    CheckpointContainerRequest, CheckpointContainerResponse, GetEventsRequest, LinuxRuntimeConfiguration,
    ListMetricDescriptorsRequest, ListMetricDescriptorsResponse, ListPodSandboxMetricsRequest,
    ListPodSandboxMetricsResponse, RuntimeCondition, RuntimeConfigRequest, RuntimeConfigResponse, RuntimeStatus,
    StatusRequest, StatusResponse, UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse, VersionRequest,
    VersionResponse,
};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::service::CriService;

pub const RUNTIME_NAME: &str = "crid";
pub const RUNTIME_API_VERSION: &str = "v1";
/// The CRI version this runtime speaks (kubelet's `version` field).
pub const KUBE_API_VERSION: &str = "0.1.0";
/// The conf file UpdateRuntimeConfig writes from `conf_template`.
pub const TEMPLATE_CONF_FILE: &str = "10-crid-net.conflist";

impl CriService {
    pub async fn version(self: &Arc<Self>, _request: VersionRequest) -> Result<VersionResponse> {
        self.check_initialized()?;
        Ok(VersionResponse {
            version: KUBE_API_VERSION.into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        })
    }

    pub async fn status(self: &Arc<Self>, request: StatusRequest) -> Result<StatusResponse> {
        self.check_initialized()?;
        let runtime_ready = RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        let network_ready = match self.backends.cni.status().await {
            Ok(()) => RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            Err(error) => RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message: format!("Network plugin returns error: {}", error.message),
            },
        };
        let mut info = std::collections::HashMap::new();
        if request.verbose {
            info.insert("config".to_string(), self.config.containerd_json());
            info.insert("cniconfig".to_string(), self.backends.cni.config_json());
            info.insert("lastCNILoadStatus".to_string(), self.last_cni_load.lock().unwrap().clone());
            info.insert("quarantine".to_string(), serde_json::to_string(&self.quarantined()).expect("serialises"));
            let counters = serde_json::json!({
                "containerEventsSent": self.container_events.sent_total.load(Ordering::Relaxed),
                "containerEventsDropped": self.container_events.dropped_total.load(Ordering::Relaxed),
                "containerEventSubscribers": self.container_events.subscriber_count(),
                "backoffQueueLength": self.monitor.backoff_len(),
                "backoffDropped": self.monitor.backoff_dropped_total.load(Ordering::Relaxed),
                "pullsStarted": self.pulls.pulls_started_total.load(Ordering::Relaxed),
                "pullsJoined": self.pulls.pulls_joined_total.load(Ordering::Relaxed),
            });
            info.insert("counters".to_string(), counters.to_string());
        }
        Ok(StatusResponse {
            status: Some(RuntimeStatus { conditions: vec![runtime_ready, network_ready] }),
            info,
            ..Default::default()
        })
    }

    /// Writes the CNI conf from `conf_template` when a pod CIDR is given and no network is
    /// configured yet; otherwise does nothing.
    pub async fn update_runtime_config(
        self: &Arc<Self>,
        request: UpdateRuntimeConfigRequest,
    ) -> Result<UpdateRuntimeConfigResponse> {
        self.check_initialized()?;
        let cidr = request.runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr).unwrap_or_default();
        if cidr.is_empty() || self.config.cni.conf_template.is_empty() || self.backends.cni.status().await.is_ok() {
            return Ok(UpdateRuntimeConfigResponse {});
        }
        let ranges: Vec<&str> = cidr.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
        for range in &ranges {
            validate_cidr(range)?;
        }
        let template = self
            .backends
            .os
            .read_file(&self.config.cni.conf_template)
            .await
            .map_err(|e| e.context("failed to read cni conf template"))?;
        let template = String::from_utf8(template).map_err(|_| Error::invalid("cni conf template is not UTF-8"))?;
        let rendered = render_conf_template(&template, &ranges);
        self.backends.cni.write_config(TEMPLATE_CONF_FILE, &rendered).await?;
        self.backends.cni.load().await?;
        Ok(UpdateRuntimeConfigResponse {})
    }

    pub async fn runtime_config(self: &Arc<Self>, _request: RuntimeConfigRequest) -> Result<RuntimeConfigResponse> {
        self.check_initialized()?;
        // kubelet follows the default runtime handler's driver, as containerd reports it.
        let systemd = self.config.systemd_cgroup_for(&self.config.containerd.default_runtime_name);
        let driver = if systemd { k8s_cri::v1::CgroupDriver::Systemd } else { k8s_cri::v1::CgroupDriver::Cgroupfs };
        Ok(RuntimeConfigResponse { linux: Some(LinuxRuntimeConfiguration { cgroup_driver: driver as i32 }) })
    }

    /// A new subscriber; it gets every event sent from now on, or counted drops if it lags.
    pub fn get_container_events(
        self: &Arc<Self>,
        _request: GetEventsRequest,
    ) -> Result<mpsc::Receiver<crate::events::ContainerEvent>> {
        self.check_initialized()?;
        Ok(self.container_events.subscribe())
    }

    pub async fn checkpoint_container(
        self: &Arc<Self>,
        _request: CheckpointContainerRequest,
    ) -> Result<CheckpointContainerResponse> {
        self.check_initialized()?;
        Err(Error::unimplemented("CheckpointContainer is not implemented"))
    }

    pub async fn list_metric_descriptors(
        self: &Arc<Self>,
        _request: ListMetricDescriptorsRequest,
    ) -> Result<ListMetricDescriptorsResponse> {
        self.check_initialized()?;
        Err(Error::unimplemented("ListMetricDescriptors is not implemented"))
    }

    pub async fn list_pod_sandbox_metrics(
        self: &Arc<Self>,
        _request: ListPodSandboxMetricsRequest,
    ) -> Result<ListPodSandboxMetricsResponse> {
        self.check_initialized()?;
        Err(Error::unimplemented("ListPodSandboxMetrics is not implemented"))
    }
}

fn validate_cidr(range: &str) -> Result<()> {
    let invalid = || Error::invalid(format!("invalid pod CIDR {}", crate::error::quoted(range)));
    let (address, prefix) = range.split_once('/').ok_or_else(invalid)?;
    let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
    match address.parse::<std::net::IpAddr>().map_err(|_| invalid())? {
        std::net::IpAddr::V4(_) if prefix <= 32 => Ok(()),
        std::net::IpAddr::V6(_) if prefix <= 128 => Ok(()),
        _ => Err(invalid()),
    }
}

/// Fills `{{.PodCIDR}}` (the first range), `{{.PodCIDRRanges}}` (JSON list of ranges) and
/// `{{.Routes}}` (JSON list of default routes per family) in the template.
fn render_conf_template(template: &str, ranges: &[&str]) -> String {
    let ranges_json = serde_json::to_string(&ranges).expect("strings serialise");
    let mut routes = vec![];
    if ranges.iter().any(|r| !r.contains(':')) {
        routes.push("0.0.0.0/0");
    }
    if ranges.iter().any(|r| r.contains(':')) {
        routes.push("::/0");
    }
    let routes_json = serde_json::to_string(&routes).expect("strings serialise");
    template
        .replace("{{.PodCIDR}}", ranges.first().copied().unwrap_or_default())
        .replace("{{.PodCIDRRanges}}", &ranges_json)
        .replace("{{.Routes}}", &routes_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_template_renders_ranges_and_routes() {
        let rendered = render_conf_template(
            r#"{"subnet":"{{.PodCIDR}}","ranges":{{.PodCIDRRanges}},"routes":{{.Routes}}}"#,
            &["10.1.0.0/24", "fd00::/64"],
        );
        assert_eq!(
            rendered,
            r#"{"subnet":"10.1.0.0/24","ranges":["10.1.0.0/24","fd00::/64"],"routes":["0.0.0.0/0","::/0"]}"#
        );
        assert!(validate_cidr("10.0.0.0/33").is_err());
        assert!(validate_cidr("nonsense").is_err());
        validate_cidr("10.0.0.0/8").unwrap();
    }
}
