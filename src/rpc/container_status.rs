//! ContainerStatus, ListContainers, UpdateContainerResources, ReopenContainerLog and the
//! container stats RPCs.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_cri::v1::{
    ContainerAttributes, ContainerFilter, ContainerStats, ContainerStatsRequest, ContainerStatsResponse,
    ContainerStatusRequest, ContainerStatusResponse, CpuUsage, FilesystemUsage, ListContainerStatsRequest,
    ListContainerStatsResponse, ListContainersRequest, ListContainersResponse, MemoryUsage, ReopenContainerLogRequest,
    ReopenContainerLogResponse, UInt64Value, UpdateContainerResourcesRequest, UpdateContainerResourcesResponse,
};

use crate::error::{Error, Result};
use crate::events::{ContainerStatusView, ImageNames, cri_state};
use crate::naming::{labels_match, sorted};
use crate::ports::{Resources, TaskMetrics};
use crate::service::CriService;
use crate::store::{Container, ContainerState};

/// How many metrics requests the container and pod stats send to containerd at once (see
/// [`CriService::running_tasks_metrics`]): enough to keep a small node's cores busy with the
/// shims' answers, few enough that a large node costs a handful of round trips.
const STATS_REQUESTS_AT_ONCE: usize = 4;

impl CriService {
    pub(crate) fn container_status_message(&self, container: &Arc<Container>) -> k8s_cri::v1::ContainerStatus {
        self.container_status_views(std::slice::from_ref(container))
            .pop()
            .expect("one status per container")
            .to_message()
    }

    /// The statuses of `containers`, in order, as CRI messages.
    pub(crate) fn container_status_messages(&self, containers: &[Arc<Container>]) -> Vec<k8s_cri::v1::ContainerStatus> {
        self.container_status_views(containers).iter().map(ContainerStatusView::to_message).collect()
    }

    /// The statuses of `containers`, in order, as of now. A pod's containers mostly share an
    /// image, and a container event carries the status of every container of its pod (an exit
    /// storm reads ten for each exit): each image is looked up once, and each status copies
    /// only what can change (see [`ContainerStatusView`]).
    pub(crate) fn container_status_views(&self, containers: &[Arc<Container>]) -> Vec<ContainerStatusView> {
        let mut images: Vec<(&str, Arc<ImageNames>)> = Vec::new();
        let mut statuses = Vec::with_capacity(containers.len());
        for container in containers {
            let image_id = container.metadata.image_ref.as_str();
            let names = match images.iter().find(|(id, _)| *id == image_id) {
                Some((_, names)) => names.clone(),
                None => {
                    let names = self.images.names(image_id);
                    images.push((image_id, names.clone()));
                    names
                }
            };
            statuses.push(ContainerStatusView::read(container.clone(), names));
        }
        statuses
    }

    pub async fn container_status(
        self: &Arc<Self>,
        request: ContainerStatusRequest,
    ) -> Result<ContainerStatusResponse> {
        self.check_initialized()?;
        let container = self.containers.get(&request.container_id)?;
        let mut info = std::collections::HashMap::new();
        if request.verbose {
            let status = container.status();
            let handler = self
                .sandboxes
                .get(container.metadata.sandbox_id.as_str())
                .map(|sandbox| sandbox.metadata.runtime_handler.clone())
                .unwrap_or_default();
            let verbose = serde_json::json!({
                "sandboxID": container.metadata.sandbox_id,
                "pid": status.pid,
                "removing": status.removing,
                "starting": status.starting,
                "logPath": container.metadata.log_path,
                "stopSignal": container.metadata.stop_signal,
                "snapshotKey": container.id,
                "snapshotter": self.config.snapshotter_for(&handler),
                "runtimeType": self.config.runtime_type_for(&handler).unwrap_or_default(),
                "runtimeSpec": self.runtime_spec_for_status(container.id.as_str()).await,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(ContainerStatusResponse { status: Some(self.container_status_message(&container)), info })
    }

    fn filter_containers(&self, filter: &ContainerFilter) -> Vec<Arc<Container>> {
        let sandbox_id = if filter.pod_sandbox_id.is_empty() {
            None
        } else {
            match self.sandboxes.get(&filter.pod_sandbox_id) {
                Ok(sandbox) => Some(sandbox.id.clone()),
                // A filter on an unknown sandbox matches nothing.
                Err(_) => return vec![],
            }
        };
        let candidates = if !filter.id.is_empty() {
            self.containers.get(&filter.id).into_iter().collect()
        } else if let Some(sandbox_id) = &sandbox_id {
            self.containers.in_group(sandbox_id)
        } else {
            self.containers.list()
        };
        candidates
            .into_iter()
            .filter(|c| sandbox_id.as_ref().is_none_or(|s| &c.metadata.sandbox_id == s))
            .filter(|c| filter.state.as_ref().is_none_or(|want| cri_state(c.status().state()) as i32 == want.state))
            .filter(|c| labels_match(&filter.label_selector, &sorted(&c.config.labels)))
            .collect()
    }

    pub async fn list_containers(self: &Arc<Self>, request: ListContainersRequest) -> Result<ListContainersResponse> {
        self.check_initialized()?;
        let filter = request.filter.unwrap_or_default();
        let containers = self
            .filter_containers(&filter)
            .into_iter()
            .map(|c| {
                let status = c.status();
                k8s_cri::v1::Container {
                    id: c.id.to_string(),
                    pod_sandbox_id: c.metadata.sandbox_id.to_string(),
                    metadata: c.config.metadata.clone(),
                    image: c.config.image.clone(),
                    image_ref: c.metadata.image_ref.clone(),
                    state: cri_state(status.state()) as i32,
                    created_at: status.created_at_ns,
                    labels: c.config.labels.clone(),
                    annotations: c.config.annotations.clone(),
                    ..Default::default()
                }
            })
            .collect();
        Ok(ListContainersResponse { containers })
    }

    pub async fn update_container_resources(
        self: &Arc<Self>,
        request: UpdateContainerResourcesRequest,
    ) -> Result<UpdateContainerResourcesResponse> {
        self.check_initialized()?;
        let container = self.containers.get(&request.container_id)?;
        let linux = request.linux.ok_or_else(|| Error::invalid("linux resources are required"))?;
        crate::spec::check_resources(&linux)?;
        let resources = crate::spec::resources_as_applied(Some(&linux), self.backends.os.swap_accounted());
        let _serialised = container.update_lock.lock().await;
        let mut status = container.status();
        let state = status.state();
        if status.removing {
            // The removal may have deleted the checkpoint already; a write would bring it back.
            return Err(Error::precondition(format!("container {:?} is being removed", container.id.as_str())));
        }
        if !matches!(state, ContainerState::Created | ContainerState::Running) {
            return Err(Error::precondition(format!(
                "cannot update resources of container {:?} in {} state",
                container.id,
                crate::rpc::container_create::state_name(state)
            )));
        }
        // The checkpoint is the source of truth: write it first, then the container's spec in
        // containerd (as containerd's update writes it, for whatever reads containerd's view),
        // then the running task.
        let previous = status.clone();
        status.resources = Some(resources.clone());
        container.check_status(&status)?;
        self.write_checkpoint(&container.id, &status).await?;
        let id = container.id.as_str();
        let applied = self.config.runtime_resources(&resources);
        let updated = async {
            let spec_before = self.write_spec_resources(id, &applied).await?;
            if state == ContainerState::Running
                && let Err(error) = self.backends.containerd.update_task_resources(id, &applied).await
            {
                if let Some(before) = spec_before
                    && let Err(restore_error) = self.write_spec_resources(id, &before).await
                {
                    tracing::error!(id, %restore_error, "failed to restore the container spec after a failed resource update");
                }
                return Err(error.context("failed to update task resources"));
            }
            Ok(())
        };
        if let Err(error) = updated.await {
            // The task kept its old limits: so must the checkpoint, or the next restart
            // would report limits the caller was told had failed.
            if let Err(restore_error) = self.write_checkpoint(&container.id, &previous).await {
                tracing::error!(id, %restore_error, "failed to restore the checkpoint after a failed resource update");
            }
            return Err(error);
        }
        container.set_status(status)?;
        Ok(UpdateContainerResourcesResponse {})
    }

    /// The runtime spec a verbose status shows; null when containerd cannot give it (the
    /// status is answered still, as containerd's is).
    pub(crate) async fn runtime_spec_for_status(&self, id: &str) -> serde_json::Value {
        self.backends.containerd.runtime_spec(id).await.unwrap_or_else(|error| {
            tracing::warn!(id, %error, "no runtime spec for the verbose status");
            serde_json::Value::Null
        })
    }

    /// Writes `resources` into the spec of the container's containerd record; returns what the
    /// spec held before, or None when it held these already (nothing written).
    pub(crate) async fn write_spec_resources(&self, id: &str, resources: &Resources) -> Result<Option<Resources>> {
        let containerd = &self.backends.containerd;
        let mut record = containerd.get_container(id).await.map_err(|e| e.context("failed to read container spec"))?;
        if record.spec.resources == *resources {
            return Ok(None);
        }
        let before = std::mem::replace(&mut record.spec.resources, resources.clone());
        containerd
            .update_container(&record)
            .await
            .map_err(|e| e.context("failed to update container spec resources"))?;
        Ok(Some(before))
    }

    pub async fn reopen_container_log(
        self: &Arc<Self>,
        request: ReopenContainerLogRequest,
    ) -> Result<ReopenContainerLogResponse> {
        self.check_initialized()?;
        let container = self.containers.get(&request.container_id)?;
        if container.status().state() != ContainerState::Running {
            return Err(Error::precondition("container is not running"));
        }
        self.backends
            .containerd
            .reopen_task_log(container.id.as_str())
            .await
            .map_err(|e| e.context("failed to reopen container log"))?;
        Ok(ReopenContainerLogResponse {})
    }

    /// The stats of one container, with its task's metrics when it runs.
    async fn container_stats_message(&self, container: &Container) -> ContainerStats {
        let metrics = if container.status().state() == ContainerState::Running {
            self.backends.containerd.task_metrics(container.id.as_str()).await.ok()
        } else {
            None
        };
        self.container_stats_with(container, metrics.as_ref())
    }

    /// The task metrics of those of `containers` that run, by id, fetched in a few requests
    /// at once: containerd asks each task's shim in turn within a request, so one request
    /// for a whole node waits for every shim one after the other (as containerd's CRI does),
    /// while [`STATS_REQUESTS_AT_ONCE`] requests keep several shims answering together for
    /// a handful of round trips. A request that fails leaves its containers without metrics,
    /// as a container whose task is gone has none; the stats are still listed.
    pub(crate) async fn running_tasks_metrics<'a>(
        &self,
        containers: impl IntoIterator<Item = &'a Arc<Container>>,
    ) -> BTreeMap<String, TaskMetrics> {
        let ids: Vec<&str> = containers
            .into_iter()
            .filter(|c| c.status().state() == ContainerState::Running)
            .map(|c| c.id.as_str())
            .collect();
        if ids.is_empty() {
            return BTreeMap::new();
        }
        let per_request = ids.len().div_ceil(STATS_REQUESTS_AT_ONCE);
        let requests = ids.chunks(per_request).map(|chunk| self.backends.containerd.tasks_metrics(chunk));
        let mut metrics = BTreeMap::new();
        for answer in futures::future::join_all(requests).await {
            match answer {
                Ok(answer) => metrics.extend(answer),
                Err(error) => tracing::warn!("task metrics for the container stats: {error}"),
            }
        }
        metrics
    }

    /// The stats of one container from its task's metrics, if it has any.
    pub(crate) fn container_stats_with(&self, container: &Container, metrics: Option<&TaskMetrics>) -> ContainerStats {
        let attributes = ContainerAttributes {
            id: container.id.to_string(),
            metadata: container.config.metadata.clone(),
            labels: container.config.labels.clone(),
            annotations: container.config.annotations.clone(),
        };
        let snapshotter = self.config.containerd.snapshotter.clone();
        // The writable layer is the container's snapshot (keyed by its id), as last sampled;
        // one not sampled yet uses nothing at no time, as in containerd.
        let (writable, sampled_at_ns) = {
            let cache = self.snapshot_usage.lock().unwrap();
            match cache.by_key.get(container.id.as_str()) {
                Some(usage) => (usage.clone(), cache.sampled_at_ns),
                None => (Default::default(), 0),
            }
        };
        ContainerStats {
            attributes: Some(attributes),
            cpu: metrics.map(|m| CpuUsage {
                timestamp: m.timestamp_ns,
                usage_core_nano_seconds: Some(UInt64Value { value: m.cpu_usage_core_ns }),
                usage_nano_cores: Some(UInt64Value {
                    value: container.cpu_rate.nano_cores(m.cpu_usage_core_ns, m.timestamp_ns),
                }),
            }),
            memory: metrics.map(|m| MemoryUsage {
                timestamp: m.timestamp_ns,
                working_set_bytes: Some(UInt64Value { value: m.memory_working_set_bytes }),
                usage_bytes: Some(UInt64Value { value: m.memory_usage_bytes }),
                rss_bytes: Some(UInt64Value { value: m.memory_rss_bytes }),
                page_faults: Some(UInt64Value { value: m.memory_page_faults }),
                major_page_faults: Some(UInt64Value { value: m.memory_major_page_faults }),
                available_bytes: None,
            }),
            writable_layer: Some(FilesystemUsage {
                timestamp: sampled_at_ns,
                fs_id: Some(k8s_cri::v1::FilesystemIdentifier {
                    mountpoint: format!(
                        "{}/io.containerd.snapshotter.v1.{snapshotter}",
                        self.config.containerd_root_dir
                    ),
                }),
                used_bytes: Some(UInt64Value { value: writable.size_bytes }),
                inodes_used: Some(UInt64Value { value: writable.inodes }),
            }),
            swap: None,
        }
    }

    pub async fn container_stats(self: &Arc<Self>, request: ContainerStatsRequest) -> Result<ContainerStatsResponse> {
        self.check_initialized()?;
        let container = self.containers.get(&request.container_id)?;
        // As in containerd, the stats of one container are its task's: one that is not running
        // has none to give (ListContainerStats still lists it, with its writable layer only).
        let state = container.status().state();
        if state != ContainerState::Running {
            return Err(Error::precondition(format!(
                "container {:?} is in {} state: it has no running task to take stats of",
                container.id.as_str(),
                crate::rpc::container_create::state_name(state)
            )));
        }
        Ok(ContainerStatsResponse { stats: Some(self.container_stats_message(&container).await) })
    }

    pub async fn list_container_stats(
        self: &Arc<Self>,
        request: ListContainerStatsRequest,
    ) -> Result<ListContainerStatsResponse> {
        self.check_initialized()?;
        let filter = request.filter.unwrap_or_default();
        let filter = ContainerFilter {
            id: filter.id,
            pod_sandbox_id: filter.pod_sandbox_id,
            label_selector: filter.label_selector,
            state: None,
        };
        let containers = self.filter_containers(&filter);
        let metrics = self.running_tasks_metrics(&containers).await;
        let stats = containers.iter().map(|c| self.container_stats_with(c, metrics.get(c.id.as_str()))).collect();
        Ok(ListContainerStatsResponse { stats })
    }
}
