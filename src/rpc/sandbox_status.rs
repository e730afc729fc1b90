//! PodSandboxStatus and ListPodSandbox: reads of the store.

use std::sync::Arc;

use k8s_cri::v1::{
    ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox, PodSandboxFilter, PodSandboxStatus,
    PodSandboxStatusRequest, PodSandboxStatusResponse,
};

use crate::error::Result;
use crate::events::{PodSandboxStatusView, sandbox_cri_state as cri_state};
use crate::naming::{labels_match, sorted};
use crate::service::CriService;
use crate::store::Sandbox;

impl CriService {
    pub(crate) fn sandbox_status_message(&self, sandbox: &Arc<Sandbox>) -> PodSandboxStatus {
        PodSandboxStatusView::read(sandbox.clone()).to_message()
    }

    pub async fn pod_sandbox_status(
        self: &Arc<Self>,
        request: PodSandboxStatusRequest,
    ) -> Result<PodSandboxStatusResponse> {
        self.check_initialized()?;
        let sandbox = self.sandboxes.get(&request.pod_sandbox_id)?;
        let status = self.sandbox_status_message(&sandbox);
        let mut info = std::collections::HashMap::new();
        if request.verbose {
            let netns = &sandbox.metadata.netns_path;
            // As containerd: a pod on the node's network has no namespace to be closed.
            let netns_closed = !netns.is_empty() && self.backends.os.netns_closed(netns).await.unwrap_or(false);
            let handler = &sandbox.metadata.runtime_handler;
            let verbose = serde_json::json!({
                "pid": sandbox.status().pid,
                "processStatus": format!("{:?}", sandbox.status().state).to_lowercase(),
                "netNamespacePath": netns,
                "netNamespaceClosed": netns_closed,
                "runtimeHandler": sandbox.metadata.reported_runtime_handler(),
                "runtimeType": self.config.runtime_type_for(handler).unwrap_or_default(),
                "snapshotKey": sandbox.id,
                "snapshotter": self.config.snapshotter_for(handler),
                "cniResult": sandbox.metadata.cni_result,
                "image": self.config.sandbox_image,
                "runtimeSpec": self.runtime_spec_for_status(sandbox.id.as_str()).await,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        let containers_statuses = if request.verbose {
            self.container_status_messages(&self.containers.in_group(&sandbox.id))
        } else {
            vec![]
        };
        Ok(PodSandboxStatusResponse { status: Some(status), info, containers_statuses, timestamp: self.now_ns() })
    }

    pub async fn list_pod_sandbox(self: &Arc<Self>, request: ListPodSandboxRequest) -> Result<ListPodSandboxResponse> {
        self.check_initialized()?;
        let items = self
            .filter_sandboxes(&request.filter.unwrap_or_default())
            .into_iter()
            .map(|s| PodSandbox {
                id: s.id.to_string(),
                metadata: s.config.metadata.clone(),
                state: cri_state(s.status().state) as i32,
                created_at: s.status().created_at_ns,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: s.metadata.reported_runtime_handler().to_string(),
            })
            .collect();
        Ok(ListPodSandboxResponse { items })
    }

    /// The sandboxes a list's filter picks: the one its id (or a unique prefix of one) names,
    /// or all; then those in its state and with its labels.
    pub(crate) fn filter_sandboxes(&self, filter: &PodSandboxFilter) -> Vec<Arc<Sandbox>> {
        let candidates = if filter.id.is_empty() {
            self.sandboxes.list()
        } else {
            self.sandboxes.get(&filter.id).into_iter().collect()
        };
        candidates
            .into_iter()
            .filter(|s| filter.state.as_ref().is_none_or(|want| cri_state(s.status().state) as i32 == want.state))
            .filter(|s| labels_match(&filter.label_selector, &sorted(&s.config.labels)))
            .collect()
    }
}
