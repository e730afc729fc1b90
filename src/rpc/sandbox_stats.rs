//! PodSandboxStats and ListPodSandboxStats: a pod's usage as the host counts it.
//!
//! A pod's CPU, memory and process count are those of its cgroup (the cgroup parent kubelet
//! gives it), as in containerd: the cgroup holds the pause process and every exec, and keeps
//! the CPU time of containers that have exited, which no sum over its running tasks carries
//! (such a sum falls when a container goes, and kubelet would read the fall as a counter
//! reset). Its network usage is the counters of its interface in its network namespace. A pod
//! without a cgroup parent, whose stats containerd refuses, gets the sum of its running
//! containers' usage; one whose cgroup or interface cannot be read is still listed, with what
//! could be read and a warning.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_cri::v1::{
    ContainerStats, CpuUsage, LinuxPodSandboxStats, ListPodSandboxStatsRequest, ListPodSandboxStatsResponse,
    MemoryUsage, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes, PodSandboxFilter, PodSandboxState,
    PodSandboxStateValue, PodSandboxStats, PodSandboxStatsRequest, PodSandboxStatsResponse, ProcessUsage, UInt64Value,
};

use crate::error::Result;
use crate::ports::{CgroupStats, InterfaceStats, TaskMetrics};
use crate::service::CriService;
use crate::store::{Container, Sandbox};

/// The interface crid asks the CNI plugins to give a pod, whose counters are the pod's
/// network usage.
pub const POD_INTERFACE: &str = "eth0";

/// How many pods' cgroups and interfaces a ListPodSandboxStats reads at once: each read is a
/// blocking task of the host's (the interface's in a thread of its own that enters the pod's
/// namespace), and a node of a hundred pods should not start a hundred at a time.
const POD_READS_AT_ONCE: usize = 8;

/// What the host counts for a pod besides its running tasks.
struct PodUsage {
    cgroup: Option<CgroupStats>,
    network: Option<InterfaceStats>,
    at_ns: i64,
}

fn value(value: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value })
}

impl CriService {
    async fn pod_usage(&self, sandbox: &Sandbox) -> PodUsage {
        let os = &self.backends.os;
        let id = sandbox.id.as_str();
        let parent = sandbox.config.linux.as_ref().map(|linux| linux.cgroup_parent.as_str()).unwrap_or_default();
        let systemd = self.config.systemd_cgroup_for(&sandbox.metadata.runtime_handler);
        let cgroup = async {
            // With `disable_cgroup` runc is given no cgroup path and the pod has no cgroup.
            if parent.is_empty() || self.config.disable_cgroup {
                return None;
            }
            match os.cgroup_stats(parent, systemd).await {
                Ok(stats) => Some(stats),
                Err(error) => {
                    tracing::warn!(id, parent, %error, "no cgroup usage for the pod's stats");
                    None
                }
            }
        };
        let network = async {
            // A pod on the node's network has no interface of its own; one whose network is
            // torn down has none left.
            if !sandbox.reports_network() {
                return None;
            }
            match os.interface_stats(&sandbox.metadata.netns_path, POD_INTERFACE).await {
                Ok(stats) => Some(stats),
                Err(error) => {
                    tracing::warn!(id, %error, "no network usage for the pod's stats");
                    None
                }
            }
        };
        let (cgroup, network) = futures::join!(cgroup, network);
        PodUsage { cgroup, network, at_ns: self.now_ns() }
    }

    /// The stats of `sandbox` from what the host counts for it and its containers' task
    /// metrics, by task id.
    fn sandbox_stats(
        &self,
        sandbox: &Sandbox,
        containers: &[Arc<Container>],
        metrics: &BTreeMap<String, TaskMetrics>,
        usage: PodUsage,
    ) -> PodSandboxStats {
        let containers: Vec<ContainerStats> =
            containers.iter().map(|c| self.container_stats_with(c, metrics.get(c.id.as_str()))).collect();
        let at_ns = usage.at_ns;
        let (cpu_usage_core_ns, memory, process) = match usage.cgroup {
            Some(cgroup) => (
                cgroup.cpu_usage_core_ns,
                MemoryUsage {
                    timestamp: at_ns,
                    working_set_bytes: value(cgroup.memory_working_set_bytes),
                    usage_bytes: value(cgroup.memory_usage_bytes),
                    rss_bytes: value(cgroup.memory_rss_bytes),
                    page_faults: value(cgroup.memory_page_faults),
                    major_page_faults: value(cgroup.memory_major_page_faults),
                    available_bytes: None,
                },
                cgroup.process_count.map(|count| ProcessUsage { timestamp: at_ns, process_count: value(count) }),
            ),
            None => {
                let sum = |read: fn(&ContainerStats) -> Option<u64>| containers.iter().filter_map(read).sum::<u64>();
                (
                    sum(|c| c.cpu.as_ref()?.usage_core_nano_seconds.as_ref().map(|v| v.value)),
                    MemoryUsage {
                        timestamp: at_ns,
                        working_set_bytes: value(sum(|c| {
                            c.memory.as_ref()?.working_set_bytes.as_ref().map(|v| v.value)
                        })),
                        usage_bytes: value(sum(|c| c.memory.as_ref()?.usage_bytes.as_ref().map(|v| v.value))),
                        rss_bytes: value(sum(|c| c.memory.as_ref()?.rss_bytes.as_ref().map(|v| v.value))),
                        ..Default::default()
                    },
                    None,
                )
            }
        };
        let network = usage.network.map(|counters| NetworkUsage {
            timestamp: at_ns,
            default_interface: Some(NetworkInterfaceUsage {
                name: POD_INTERFACE.to_string(),
                rx_bytes: value(counters.rx_bytes),
                rx_errors: value(counters.rx_errors),
                tx_bytes: value(counters.tx_bytes),
                tx_errors: value(counters.tx_errors),
            }),
            interfaces: vec![],
        });
        PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: sandbox.id.to_string(),
                metadata: sandbox.config.metadata.clone(),
                labels: sandbox.config.labels.clone(),
                annotations: sandbox.config.annotations.clone(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: Some(CpuUsage {
                    timestamp: at_ns,
                    usage_core_nano_seconds: value(cpu_usage_core_ns),
                    usage_nano_cores: value(sandbox.cpu_rate.nano_cores(cpu_usage_core_ns, at_ns)),
                }),
                memory: Some(memory),
                network,
                process,
                containers,
            }),
            windows: None,
        }
    }

    pub async fn pod_sandbox_stats(
        self: &Arc<Self>,
        request: PodSandboxStatsRequest,
    ) -> Result<PodSandboxStatsResponse> {
        self.check_initialized()?;
        let sandbox = self.sandboxes.get(&request.pod_sandbox_id)?;
        let containers = self.containers.in_group(&sandbox.id);
        let (metrics, usage) = futures::join!(self.running_tasks_metrics(&containers), self.pod_usage(&sandbox));
        Ok(PodSandboxStatsResponse { stats: Some(self.sandbox_stats(&sandbox, &containers, &metrics, usage)) })
    }

    pub async fn list_pod_sandbox_stats(
        self: &Arc<Self>,
        request: ListPodSandboxStatsRequest,
    ) -> Result<ListPodSandboxStatsResponse> {
        self.check_initialized()?;
        let filter = request.filter.unwrap_or_default();
        // Only READY sandboxes have stats to list, as in containerd; PodSandboxStats still
        // answers for one that is not.
        let filter = PodSandboxFilter {
            id: filter.id,
            state: Some(PodSandboxStateValue { state: PodSandboxState::SandboxReady as i32 }),
            label_selector: filter.label_selector,
        };
        let pods: Vec<(Arc<Sandbox>, Vec<Arc<Container>>)> = self
            .filter_sandboxes(&filter)
            .into_iter()
            .map(|sandbox| {
                let containers = self.containers.in_group(&sandbox.id);
                (sandbox, containers)
            })
            .collect();
        // Every pod's tasks in the same few requests, not a round of requests per pod, while
        // the host's counters are read.
        // Collected before they are streamed: a stream over a borrowing closure does not prove
        // Send to the gRPC layer's generic bounds.
        let reads: Vec<_> = pods.iter().map(|(sandbox, _)| Box::pin(self.pod_usage(sandbox))).collect();
        let usages = futures::stream::iter(reads).buffered(POD_READS_AT_ONCE).collect::<Vec<_>>();
        let (metrics, usages) =
            futures::join!(self.running_tasks_metrics(pods.iter().flat_map(|(_, containers)| containers)), usages);
        let stats = pods
            .iter()
            .zip(usages)
            .map(|((sandbox, containers), usage)| self.sandbox_stats(sandbox, containers, &metrics, usage))
            .collect();
        Ok(ListPodSandboxStatsResponse { stats })
    }
}
