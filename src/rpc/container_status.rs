//! ContainerStatus, ListContainers, UpdateContainerResources, ReopenContainerLog and the
//! container stats RPCs.

use std::sync::Arc;

use k8s_cri::v1::{
    ContainerAttributes, ContainerFilter, ContainerStats, ContainerStatsRequest, ContainerStatsResponse,
    ContainerStatusRequest, ContainerStatusResponse, CpuUsage, FilesystemUsage, ImageSpec, ListContainerStatsRequest,
    ListContainerStatsResponse, ListContainersRequest, ListContainersResponse, MemoryUsage, ReopenContainerLogRequest,
    ReopenContainerLogResponse, UInt64Value, UpdateContainerResourcesRequest, UpdateContainerResourcesResponse,
};

use crate::error::{Error, Result};
use crate::naming::{labels_match, sorted};
use crate::service::CriService;
use crate::store::container::{REASON_COMPLETED, REASON_ERROR};
use crate::store::image::Image;
use crate::store::{Container, ContainerState};

fn cri_state(state: ContainerState) -> k8s_cri::v1::ContainerState {
    match state {
        ContainerState::Created => k8s_cri::v1::ContainerState::ContainerCreated,
        ContainerState::Running => k8s_cri::v1::ContainerState::ContainerRunning,
        ContainerState::Exited => k8s_cri::v1::ContainerState::ContainerExited,
        ContainerState::Unknown => k8s_cri::v1::ContainerState::ContainerUnknown,
    }
}

/// What a status takes from the image store: the image's first repo tag and first repo digest
/// (none when the image is gone).
#[derive(Debug)]
struct ImageNames {
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageNames {
    fn of(image: Option<&Image>) -> Self {
        ImageNames {
            tag: image.and_then(|image| image.tags().next()).map(str::to_string),
            digest: image.and_then(|image| image.digests().next()).map(str::to_string),
        }
    }
}

/// The image a container status names, as containerd 1.7 reports it: while the image the
/// container was created from (`image_id`) is known, its first repo tag and its first repo
/// digest; otherwise the config's image and that id.
fn status_image(config_image: Option<&ImageSpec>, image_id: &str, names: &ImageNames) -> (ImageSpec, String) {
    let spec = match &names.tag {
        Some(tag) => ImageSpec { image: tag.clone(), ..Default::default() },
        None => config_image.cloned().unwrap_or_default(),
    };
    (spec, names.digest.as_deref().unwrap_or(image_id).to_string())
}

impl CriService {
    pub(crate) fn container_status_message(&self, container: &Container) -> k8s_cri::v1::ContainerStatus {
        self.container_status_messages(std::slice::from_ref(container)).pop().expect("one status per container")
    }

    /// The statuses of `containers`, in order. A pod's containers mostly share an image, and a
    /// container event carries the status of every container of its pod (an exit storm builds
    /// ten for each exit): each image is looked up once, and only the fields a status names are
    /// copied out of each container's status record.
    pub(crate) fn container_status_messages<C: std::borrow::Borrow<Container>>(
        &self,
        containers: &[C],
    ) -> Vec<k8s_cri::v1::ContainerStatus> {
        let mut images: Vec<(&str, ImageNames)> = Vec::new();
        let mut statuses = Vec::with_capacity(containers.len());
        for container in containers {
            let container = container.borrow();
            let image_id = container.metadata.image_ref.as_str();
            let names = match images.iter().find(|(id, _)| *id == image_id) {
                Some((_, names)) => names,
                None => {
                    let names = self.images.read(image_id, ImageNames::of);
                    images.push((image_id, names));
                    &images.last().expect("just pushed").1
                }
            };
            let (image, image_ref) = status_image(container.config.image.as_ref(), image_id, names);
            // Only what changes is read under the status lock; the rest is the container's own.
            let (state, times, exit_code, reason, message, resources) = container.read_status(|status| {
                let state = status.state();
                let reason = if state == ContainerState::Exited && status.reason.is_empty() {
                    if status.exit_code == 0 { REASON_COMPLETED } else { REASON_ERROR }.to_string()
                } else {
                    status.reason.clone()
                };
                let times = (status.created_at_ns, status.started_at_ns, status.finished_at_ns);
                let resources = status.resources.as_ref().map(crate::spec::resources_to_cri);
                (state, times, status.exit_code, reason, status.message.clone(), resources)
            });
            let (created_at, started_at, finished_at) = times;
            statuses.push(k8s_cri::v1::ContainerStatus {
                id: container.id.to_string(),
                metadata: container.config.metadata.clone(),
                state: cri_state(state) as i32,
                created_at,
                started_at,
                finished_at,
                exit_code,
                image: Some(image),
                image_ref,
                reason,
                message,
                labels: container.config.labels.clone(),
                annotations: container.config.annotations.clone(),
                mounts: container.config.mounts.clone(),
                log_path: container.metadata.log_path.clone(),
                resources: resources.map(|linux| k8s_cri::v1::ContainerResources { linux: Some(linux), windows: None }),
                ..Default::default()
            });
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
            let verbose = serde_json::json!({
                "sandboxID": container.metadata.sandbox_id,
                "pid": status.pid,
                "removing": status.removing,
                "starting": status.starting,
                "logPath": container.metadata.log_path,
                "stopSignal": container.metadata.stop_signal,
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
        let resources = crate::spec::resources_from(Some(&linux));
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
        // The checkpoint is the source of truth: write it first, then the running task.
        let previous = status.clone();
        status.resources = Some(resources.clone());
        container.check_status(&status)?;
        self.write_checkpoint(&container.id, &status).await?;
        if state == ContainerState::Running
            && let Err(error) = self
                .backends
                .containerd
                .update_task_resources(container.id.as_str(), &self.config.runtime_resources(&resources))
                .await
        {
            // The task kept its old limits: so must the checkpoint, or the next restart
            // would report limits the caller was told had failed.
            if let Err(restore_error) = self.write_checkpoint(&container.id, &previous).await {
                tracing::error!(id = %container.id, %restore_error, "failed to restore the checkpoint after a failed resource update");
            }
            return Err(error.context("failed to update task resources"));
        }
        container.set_status(status)?;
        Ok(UpdateContainerResourcesResponse {})
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

    pub(crate) async fn container_stats_message(&self, container: &Container) -> ContainerStats {
        let attributes = ContainerAttributes {
            id: container.id.to_string(),
            metadata: container.config.metadata.clone(),
            labels: container.config.labels.clone(),
            annotations: container.config.annotations.clone(),
        };
        let metrics = if container.status().state() == ContainerState::Running {
            self.backends.containerd.task_metrics(container.id.as_str()).await.ok()
        } else {
            None
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
            cpu: metrics.as_ref().map(|m| CpuUsage {
                timestamp: m.timestamp_ns,
                usage_core_nano_seconds: Some(UInt64Value { value: m.cpu_usage_core_ns }),
                usage_nano_cores: None,
            }),
            memory: metrics.as_ref().map(|m| MemoryUsage {
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
        let mut stats = vec![];
        for container in self.filter_containers(&filter) {
            stats.push(self.container_stats_message(&container).await);
        }
        Ok(ListContainerStatsResponse { stats })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const ID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn image(references: &[&str]) -> Image {
        Image {
            id: ID.into(),
            references: references.iter().map(|r| r.to_string()).collect::<BTreeSet<_>>(),
            chain_id: "sha256:c".into(),
            size_bytes: 1,
            config: Default::default(),
        }
    }

    #[test]
    fn status_image_names_the_first_tag_and_the_first_digest() {
        let config = ImageSpec {
            image: ID.into(),
            annotations: [("a".to_string(), "b".to_string())].into(),
            ..Default::default()
        };
        let known = image(&[
            "docker.io/library/busybox:latest",
            "docker.io/library/alpine:3",
            "docker.io/library/busybox@sha256:bbbb",
            "docker.io/library/alpine@sha256:aaaa",
            ID,
        ]);
        let (spec, image_ref) = status_image(Some(&config), ID, &ImageNames::of(Some(&known)));
        assert_eq!(spec, ImageSpec { image: "docker.io/library/alpine:3".into(), ..Default::default() });
        assert_eq!(image_ref, "docker.io/library/alpine@sha256:aaaa");

        // Only a digest reference left: the config's image spec (as sent) and the digest.
        let (spec, image_ref) =
            status_image(Some(&config), ID, &ImageNames::of(Some(&image(&["r/x@sha256:cccc", ID]))));
        assert_eq!(spec, config);
        assert_eq!(image_ref, "r/x@sha256:cccc");

        // Only a tag: the tag, and the id.
        let (spec, image_ref) = status_image(Some(&config), ID, &ImageNames::of(Some(&image(&["r/x:1", ID]))));
        assert_eq!(spec.image, "r/x:1");
        assert_eq!(image_ref, ID);

        // The image is gone: the config's spec and the id the container was created from.
        assert_eq!(status_image(Some(&config), ID, &ImageNames::of(None)), (config.clone(), ID.to_string()));
    }
}
