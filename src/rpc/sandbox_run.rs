//! RunPodSandbox: the step list of SPEC §6.1, each step registering its rollback.
//!
//! The operation runs detached from the caller (see `run_named_operation`), so rollbacks always
//! run on a context of their own (B15). A failed *critical* rollback (container delete, netns
//! removal, CNI DEL, task delete) keeps the sandbox in the store as UNKNOWN with its name, so that
//! kubelet's Stop and Remove finish the cleanup instead of leaking an IP (B11, B14).

use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1::{ContainerEventType, PodSandboxConfig, RunPodSandboxRequest, RunPodSandboxResponse};

use crate::error::{Error, Result};
use crate::ids::{SandboxId, TaskId};
use crate::naming::{sandbox_name, sorted, validate_sandbox_metadata};
use crate::ports::{
    ContainerRecord, EXTENSION_SANDBOX_METADATA, KIND_SANDBOX, LABEL_KIND, LeasePurpose, PodNetwork, TaskIo,
};
use crate::service::{CriService, OperationRequest};
use crate::spec::{SandboxSpecInput, host_network, sandbox_spec};
use crate::store::{Sandbox, SandboxMetadata, SandboxState, SandboxStatus, encode_message};

/// Each rollback step gets a fresh budget of its own (containerd's DeferContext).
pub const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound of a whole RunPodSandbox; past it, the steps are abandoned and rolled back, so a
/// hung backend call cannot hold the name forever.
pub const RUN_SANDBOX_TIMEOUT: Duration = Duration::from_secs(240);
pub const SHM_SIZE_BYTES: u64 = 64 * 1024 * 1024;
const HOST_HOSTS_FILE: &str = "/etc/hosts";
const HOST_RESOLV_FILE: &str = "/etc/resolv.conf";
const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// The pod's IP and its other IPs from the addresses of its eth0 (all addresses when the
/// plugin names no interface), by the config's `ip_pref`: the first IPv4 address (the
/// default), the first IPv6 one, or the plugin's order (`cni`); the others in the plugin's
/// order. None when there is no address.
pub fn select_pod_ips(ips: &[crate::ports::IpConfig], preference: &str) -> Option<(String, Vec<String>)> {
    let on_eth0: Vec<&str> = ips.iter().filter(|ip| ip.interface == "eth0").map(|ip| ip.address.as_str()).collect();
    let candidates = if on_eth0.is_empty() { ips.iter().map(|ip| ip.address.as_str()).collect() } else { on_eth0 };
    let is_v6 = |address: &str| address.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_ipv6());
    let chosen = match preference {
        "cni" => 0,
        "ipv6" => candidates.iter().position(|a| is_v6(a)).unwrap_or(0),
        _ => candidates.iter().position(|a| !is_v6(a)).unwrap_or(0),
    };
    let primary = candidates.get(chosen)?.to_string();
    let others = candidates.iter().enumerate().filter(|&(i, _)| i != chosen).map(|(_, a)| a.to_string()).collect();
    Some((primary, others))
}

/// Rollback steps, in the order they were registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Undo {
    ReleaseName,
    RemoveSnapshot,
    DeleteContainer,
    RemoveDirs,
    CleanupFiles,
    RemoveNetns,
    TeardownNetwork,
    DeleteTask,
}

impl Undo {
    /// Critical steps: their failure means something may still hold resources (a still-mounted
    /// /dev/shm pins the sandbox's state directory, too).
    fn is_critical(self) -> bool {
        matches!(
            self,
            Undo::DeleteContainer | Undo::RemoveNetns | Undo::TeardownNetwork | Undo::DeleteTask | Undo::CleanupFiles
        )
    }
    /// Steps skipped once a critical rollback failed: the sandbox is kept for Stop/Remove.
    fn skipped_after_cleanup_failure(self) -> bool {
        matches!(
            self,
            Undo::ReleaseName
                | Undo::DeleteContainer
                | Undo::RemoveSnapshot
                | Undo::RemoveNetns
                | Undo::TeardownNetwork
                | Undo::RemoveDirs
        )
    }
}

struct RunState {
    metadata: SandboxMetadata,
    config: PodSandboxConfig,
    created_at_ns: i64,
    undo: Vec<Undo>,
}

impl CriService {
    pub async fn run_pod_sandbox(self: &Arc<Self>, request: RunPodSandboxRequest) -> Result<RunPodSandboxResponse> {
        self.check_initialized()?;
        let config = request.config.ok_or_else(|| Error::invalid("sandbox config is required"))?;
        let name = sandbox_name(validate_sandbox_metadata(config.metadata.as_ref())?);
        crate::naming::check_labels("sandbox config labels", &config.labels)?;
        // Container log paths are joined to it: a relative one would put them wherever crid's
        // working directory happens to be.
        if !config.log_directory.is_empty() && !config.log_directory.starts_with('/') {
            return Err(Error::invalid(format!(
                "sandbox config log_directory {} must be absolute",
                crate::error::quoted(&config.log_directory)
            )));
        }
        crate::spec::check_user_namespace(
            config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.as_ref()),
        )?;
        // A pod on the node's network shares the node's UTS namespace too, where a hostname
        // cannot be set: containerd's runc refuses it at the pause task's create ("unable to
        // set hostname without a private UTS namespace"); kubelet never sends one.
        if host_network(&config) && !config.hostname.is_empty() {
            return Err(Error::invalid(format!(
                "sandbox config hostname {} cannot be set for a pod on the node's network: it shares the node's UTS namespace",
                crate::error::quoted(&config.hostname)
            )));
        }
        let requested = request.runtime_handler;
        let handler =
            if requested.is_empty() { self.config.containerd.default_runtime_name.clone() } else { requested.clone() };
        if !self.config.containerd.runtimes.contains_key(&handler) {
            return Err(Error::invalid(format!("no runtime for {} is configured", crate::error::quoted(&handler))));
        }
        let service = self.clone();
        let operation_name = format!("sandbox/{name}");
        let run_name = name.clone();
        let asked = OperationRequest::Sandbox { config: Box::new(config.clone()), runtime_handler: handler.clone() };
        let id = self
            .run_named_operation(operation_name, asked, async move {
                service.run_sandbox(run_name, config, handler, requested).await
            })
            .await?;
        Ok(RunPodSandboxResponse { pod_sandbox_id: id })
    }

    async fn run_sandbox(
        self: Arc<Self>,
        name: String,
        config: PodSandboxConfig,
        handler: String,
        requested_handler: String,
    ) -> Result<String> {
        let id = SandboxId::generate(&*self.backends.os);
        self.sandbox_names.reserve(&name, &id).map_err(|e| {
            Error::already_exists(format!(
                "failed to reserve sandbox name {}: {}",
                crate::error::quoted(&name),
                e.message
            ))
        })?;
        let host_network = host_network(&config);
        // The netns path is known before the netns exists, and so is that the pod's network
        // will be set up: both are persisted with the first metadata write, the container
        // record's create, so that a crash right after creating the netns or during the ADD
        // leaks neither, and no metadata write stands between the netns and the ADD.
        let metadata = SandboxMetadata {
            version: "v1".into(),
            id: id.clone(),
            name: name.clone(),
            config: encode_message(&config),
            netns_path: if host_network { String::new() } else { self.netns_path(&id) },
            ip: String::new(),
            additional_ips: vec![],
            runtime_handler: handler,
            requested_runtime_handler: Some(requested_handler),
            cni_result: None,
            network_setup_attempted: !host_network,
            host_network,
        };
        let mut state = RunState { metadata, config, created_at_ns: self.now_ns(), undo: vec![Undo::ReleaseName] };
        let outcome =
            self.with_timeout(RUN_SANDBOX_TIMEOUT, "run pod sandbox", self.run_sandbox_steps(&mut state)).await;
        match outcome {
            Ok(()) => Ok(id.into()),
            Err(error) => {
                tracing::warn!(%id, name, %error, "RunPodSandbox failed; rolling back");
                self.roll_back_run(&state).await;
                Err(error)
            }
        }
    }

    async fn run_sandbox_steps(self: &Arc<Self>, state: &mut RunState) -> Result<()> {
        let id = state.metadata.id.clone();
        let containerd = self.backends.containerd.clone();
        let image = self
            .ensure_image_exists(&self.config.sandbox_image)
            .await
            .map_err(|e| e.context(format!("failed to get sandbox image {:?}", self.config.sandbox_image)))?;
        let snapshotter = self.config.snapshotter_for(&state.metadata.runtime_handler);
        let runtime = self.config.runtime_type_for(&state.metadata.runtime_handler)?;

        let policy = crate::spec::SpecPolicy::new(
            &self.config,
            &state.metadata.runtime_handler,
            self.backends.os.apparmor_enabled(),
        )?;
        let root_dir = self.sandbox_root(&id);
        let state_dir = self.sandbox_state_dir(&id);
        let host_ipc = crate::spec::sandbox_spec(SandboxSpecInput {
            id: id.as_str(),
            config: &state.config,
            image: &image.config,
            netns_path: String::new(),
            own_oom_score_adj: 0,
            restrict_oom_score_adj: false,
            root_dir: &root_dir,
            shm_path: None,
            policy: &policy,
        })
        .host_ipc;
        let shm_path = (!host_ipc).then(|| self.sandbox_shm_dir(&id));
        let spec_for = |netns_path: String| {
            sandbox_spec(SandboxSpecInput {
                id: id.as_str(),
                config: &state.config,
                image: &image.config,
                netns_path,
                own_oom_score_adj: self.backends.os.own_oom_score_adj(),
                restrict_oom_score_adj: self.config.restrict_oom_score_adj,
                root_dir: &root_dir,
                shm_path: shm_path.clone(),
                policy: &policy,
            })
        };
        let mut spec = spec_for(state.metadata.netns_path.clone());

        // The rootfs snapshot is held by a lease of its own until the container record
        // references it (§5.4).
        let lease = self.hold_lease(LeasePurpose::Rootfs).await?;
        let created = async {
            state.undo.push(Undo::RemoveSnapshot);
            self.prepare_fresh_snapshot(&snapshotter, id.as_str(), &image.chain_id, lease.id())
                .await
                .map_err(|e| e.context("failed to prepare sandbox rootfs"))?;
            crate::spec::userdb::resolve_user(&*containerd, &snapshotter, id.as_str(), &mut spec).await?;
            let record = ContainerRecord {
                id: id.to_string(),
                labels: [(LABEL_KIND.to_string(), KIND_SANDBOX.to_string())]
                    .into_iter()
                    .chain(sorted(&state.config.labels))
                    .collect(),
                image: image.references.iter().next().cloned().unwrap_or_else(|| image.id.clone()),
                runtime,
                snapshotter: snapshotter.clone(),
                snapshot_key: id.to_string(),
                spec,
                extensions: [(
                    EXTENSION_SANDBOX_METADATA.to_string(),
                    serde_json::to_vec(&state.metadata).expect("serialises"),
                )]
                .into(),
                created_at_ns: 0,
            };
            state.undo.push(Undo::DeleteContainer);
            let created = self
                .create_fresh_container(record.clone())
                .await
                .map_err(|e| e.context("failed to create containerd container"))?;
            Ok::<_, Error>((record, created))
        }
        .await;
        lease.release_detached(self.clone());
        let (mut record, created) = created?;
        state.created_at_ns = created.created_at_ns;

        state.undo.push(Undo::RemoveDirs);
        self.backends.os.mkdir_all(&root_dir).await?;
        self.backends.os.mkdir_all(&state_dir).await?;

        state.undo.push(Undo::CleanupFiles);
        self.setup_sandbox_files(&state.config, &root_dir, shm_path.as_deref()).await?;

        if !state.metadata.host_network {
            let netns_path = state.metadata.netns_path.clone();
            state.undo.push(Undo::RemoveNetns);
            self.backends
                .os
                .netns_create(&netns_path)
                .await
                .map_err(|e| e.context("failed to create network namespace"))?;
            // DEL is registered before ADD: a failed ADD can still have allocated an IP (B16).
            state.undo.push(Undo::TeardownNetwork);
        }

        // The pause task needs only the netns to exist, not its interfaces, so the task's create
        // and start (a shim, runc) run while the CNI plugins set the network up: the call takes
        // the longer of the two rather than their sum. Both run to their end before either
        // result is looked at, so that a rollback never races a create still in flight.
        // A crash before the network's result is persisted leaves a running task with no IP,
        // which recovery loads as UNKNOWN, for Stop and Remove to finish.
        state.undo.push(Undo::DeleteTask);
        let network = async {
            if state.metadata.host_network {
                return Ok(None);
            }
            let result = self
                .backends
                .cni
                .setup(&self.pod_network(&state.metadata, &state.config))
                .await
                .map_err(|e| e.context("failed to setup network for sandbox"))?;
            let Some((primary, additional)) = select_pod_ips(&result.ips, &self.config.cni.ip_pref) else {
                return Err(Error::internal("CNI result has no IP address for eth0"));
            };
            Ok(Some((result, primary, additional)))
        };
        let task = async {
            self.create_fresh_task(id.as_str(), &TaskIo::default())
                .await
                .map_err(|e| e.context("failed to create sandbox task"))?;
            containerd.start_task(id.as_str()).await.map_err(|e| e.context("failed to start sandbox task"))
        };
        let (network, pid) = futures::join!(network, task);
        if let Some((result, primary, additional)) = network? {
            state.metadata.ip = primary;
            state.metadata.additional_ips = additional;
            state.metadata.cni_result = Some(result);
        }
        let pid = pid?;
        if !state.metadata.host_network {
            self.persist_sandbox_metadata(&mut record, &state.metadata).await?;
        }

        let sandbox = Arc::new(Sandbox::new(
            state.metadata.clone(),
            state.config.clone(),
            SandboxStatus {
                state: SandboxState::Ready,
                pid,
                created_at_ns: state.created_at_ns,
                exited_at_ns: 0,
                exit_code: 0,
            },
        ));
        self.sandboxes.add(&id, sandbox)?;
        self.send_container_event(id.as_str(), &id, ContainerEventType::ContainerCreatedEvent);
        self.send_container_event(id.as_str(), &id, ContainerEventType::ContainerStartedEvent);
        // After the store add and after STARTED: an instant exit is neither lost nor reordered.
        self.start_exit_monitor(TaskId::Sandbox(id));
        Ok(())
    }

    async fn persist_sandbox_metadata(&self, record: &mut ContainerRecord, metadata: &SandboxMetadata) -> Result<()> {
        record
            .extensions
            .insert(EXTENSION_SANDBOX_METADATA.to_string(), serde_json::to_vec(metadata).expect("serialises"));
        self.backends
            .containerd
            .update_container(record)
            .await
            .map_err(|e| e.context("failed to persist sandbox metadata"))
    }

    pub(crate) fn pod_network(&self, metadata: &SandboxMetadata, config: &PodSandboxConfig) -> PodNetwork {
        let pod = config.metadata.clone().unwrap_or_default();
        PodNetwork {
            sandbox_id: metadata.id.to_string(),
            netns_path: metadata.netns_path.clone(),
            interface_name: crate::rpc::sandbox_stats::POD_INTERFACE.into(),
            args: [
                ("K8S_POD_NAMESPACE".to_string(), pod.namespace),
                ("K8S_POD_NAME".to_string(), pod.name),
                ("K8S_POD_INFRA_CONTAINER_ID".to_string(), metadata.id.to_string()),
                ("K8S_POD_UID".to_string(), pod.uid),
            ]
            .into(),
            port_mappings: config
                .port_mappings
                .iter()
                .filter(|p| p.host_port > 0)
                .map(|p| crate::ports::PortMapping {
                    protocol: match p.protocol {
                        1 => "udp".into(),
                        2 => "sctp".into(),
                        _ => "tcp".into(),
                    },
                    container_port: p.container_port,
                    host_port: p.host_port,
                    host_ip: p.host_ip.clone(),
                })
                .collect(),
            annotations: crate::naming::sorted(&config.annotations),
        }
    }

    async fn setup_sandbox_files(
        &self,
        config: &PodSandboxConfig,
        root_dir: &str,
        shm_path: Option<&str>,
    ) -> Result<()> {
        let os = &self.backends.os;
        // A pod that names no hostname (host network) has the node's, as in containerd.
        let hostname = if config.hostname.is_empty() { os.hostname() } else { config.hostname.clone() };
        os.write_file(&format!("{root_dir}/hostname"), format!("{hostname}\n").as_bytes()).await?;
        // The node's /etc/hosts, as containerd copies it (kubelet mounts its own over it for
        // pods it manages); a node without one gets the loopback names.
        let hosts = match os.read_file(HOST_HOSTS_FILE).await {
            Ok(hosts) => hosts,
            Err(e) if e.is_not_found() => DEFAULT_HOSTS.as_bytes().to_vec(),
            Err(e) => return Err(e.context(format!("failed to read {HOST_HOSTS_FILE}"))),
        };
        os.write_file(&format!("{root_dir}/hosts"), &hosts).await?;
        let mut resolv = String::new();
        if let Some(dns) = &config.dns_config {
            // In containerd's order: search, the name servers, options.
            if !dns.searches.is_empty() {
                resolv.push_str(&format!("search {}\n", dns.searches.join(" ")));
            }
            for server in &dns.servers {
                resolv.push_str(&format!("nameserver {server}\n"));
            }
            if !dns.options.is_empty() {
                resolv.push_str(&format!("options {}\n", dns.options.join(" ")));
            }
        }
        // No DNS settings (or none that say anything): the node's resolv.conf, as containerd
        // copies it; a node without one gets an empty file, as for hosts above it gets the
        // loopback names rather than a failed sandbox.
        let resolv = if resolv.is_empty() {
            match os.read_file(HOST_RESOLV_FILE).await {
                Ok(host) => host,
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => return Err(e.context(format!("failed to read {HOST_RESOLV_FILE}"))),
            }
        } else {
            resolv.into_bytes()
        };
        os.write_file(&format!("{root_dir}/resolv.conf"), &resolv).await?;
        if let Some(shm) = shm_path {
            os.mkdir_all(shm).await?;
            os.mount_shm(shm, SHM_SIZE_BYTES).await.map_err(|e| e.context("failed to mount sandbox shm"))?;
        }
        Ok(())
    }

    pub(crate) async fn cleanup_sandbox_files(&self, id: &SandboxId) -> Result<()> {
        let shm = self.sandbox_shm_dir(id);
        self.backends.os.unmount(&shm).await.map_err(|e| e.context("failed to unmount sandbox shm"))
    }

    /// Runs the registered rollbacks in reverse, each with its own timeout.
    async fn roll_back_run(self: &Arc<Self>, state: &RunState) {
        let id = state.metadata.id.clone();
        let snapshotter = self.config.snapshotter_for(&state.metadata.runtime_handler);
        let mut cleanup_failed = false;
        let mut netns_removed = false;
        for step in state.undo.iter().rev().copied() {
            if cleanup_failed && step.skipped_after_cleanup_failure() {
                continue;
            }
            let result = self
                .with_timeout(ROLLBACK_TIMEOUT, "rollback", async {
                    match step {
                        Undo::ReleaseName => {
                            self.sandbox_names.release_by_key(&id);
                            Ok(())
                        }
                        Undo::RemoveSnapshot => {
                            ignore_not_found(self.backends.containerd.remove_snapshot(&snapshotter, id.as_str()).await)
                        }
                        Undo::DeleteContainer => {
                            ignore_not_found(self.backends.containerd.delete_container(id.as_str(), true).await)
                        }
                        Undo::RemoveDirs => {
                            self.remove_dirs_or_retry([self.sandbox_root(&id), self.sandbox_state_dir(&id)]).await;
                            Ok(())
                        }
                        Undo::CleanupFiles => self.cleanup_sandbox_files(&id).await,
                        Undo::RemoveNetns => self.backends.os.netns_remove(&state.metadata.netns_path).await,
                        Undo::TeardownNetwork => {
                            self.backends.cni.teardown(&self.pod_network(&state.metadata, &state.config)).await
                        }
                        Undo::DeleteTask => {
                            ignore_not_found(self.backends.containerd.delete_task(id.as_str()).await.map(|_| ()))
                        }
                    }
                })
                .await;
            netns_removed |= matches!(step, Undo::RemoveNetns) && result.is_ok();
            if let Err(error) = result {
                tracing::error!(%id, ?step, %error, "RunPodSandbox rollback step failed");
                if step.is_critical() {
                    cleanup_failed = true;
                }
            }
        }
        if cleanup_failed {
            // Keep the sandbox, with its name, so Stop and Remove can finish the cleanup.
            let sandbox = Sandbox::new(
                state.metadata.clone(),
                state.config.clone(),
                SandboxStatus {
                    state: SandboxState::Unknown,
                    pid: 0,
                    created_at_ns: state.created_at_ns.max(1),
                    exited_at_ns: 0,
                    exit_code: 0,
                },
            );
            if netns_removed {
                sandbox.mark_netns_gone();
            }
            if let Err(error) = self.sandboxes.add(&id, Arc::new(sandbox)) {
                tracing::error!(%id, %error, "could not keep the half-created sandbox");
            }
        }
    }
}

impl CriService {
    /// Creates a containerd container under a fresh id. AlreadyExists can then only mean that
    /// this very create was applied before its reply was lost (a retry answered it): the
    /// record is read back, and the create succeeded. Passed on, containerd's AlreadyExists
    /// would reach kubelet as a name conflict of RunPodSandbox or CreateContainer.
    pub(crate) async fn create_fresh_container(&self, record: ContainerRecord) -> Result<ContainerRecord> {
        let containerd = &self.backends.containerd;
        let id = record.id.clone();
        match containerd.create_container(record).await {
            Err(error) if error.is_already_exists() => {
                cov_mark::hit!(container_create_applied_before);
                containerd.get_container(&id).await.map_err(|e| e.context("read back the created container"))
            }
            other => other,
        }
    }

    /// Prepares the rootfs snapshot of a fresh id. As for the container, AlreadyExists can only
    /// mean that this prepare was applied before its reply was lost: the key is the object's own
    /// new id, the parent and the lease the same. Passed on, it would fail RunPodSandbox or
    /// CreateContainer with an AlreadyExists that kubelet reads as a name conflict.
    pub(crate) async fn prepare_fresh_snapshot(
        &self,
        snapshotter: &str,
        key: &str,
        parent_chain_id: &str,
        lease: &str,
    ) -> Result<()> {
        match self.backends.containerd.prepare_snapshot(snapshotter, key, parent_chain_id, lease).await {
            Err(error) if error.is_already_exists() => {
                cov_mark::hit!(snapshot_prepare_applied_before);
                Ok(())
            }
            other => other,
        }
    }

    /// Creates the task of a container; AlreadyExists means, as for the container, that this
    /// create was applied before (a task is only ever created once per container): its pid is
    /// read back.
    pub(crate) async fn create_fresh_task(&self, id: &str, io: &TaskIo) -> Result<u32> {
        let containerd = &self.backends.containerd;
        match containerd.create_task(id, io).await {
            Err(error) if error.is_already_exists() => {
                cov_mark::hit!(task_create_applied_before);
                containerd.task_info(id).await.map(|info| info.pid).map_err(|e| e.context("read back the created task"))
            }
            other => other,
        }
    }
}

pub(crate) fn ignore_not_found(result: Result<()>) -> Result<()> {
    match result {
        Err(error) if error.is_not_found() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::select_pod_ips;
    use crate::ports::IpConfig;

    fn ip(interface: &str, address: &str) -> IpConfig {
        IpConfig { interface: interface.into(), address: address.into(), gateway: String::new() }
    }

    /// containerd's `ip_pref`: IPv4 first by default, IPv6 first on request, the plugin's
    /// order for `cni`; only eth0's addresses count when the plugin names interfaces.
    #[test]
    fn pod_ips_follow_the_preference() {
        let ips = [ip("eth0", "fd00::5"), ip("eth0", "10.0.0.5"), ip("net1", "192.168.0.9")];
        let pick = |pref: &str| select_pod_ips(&ips, pref).unwrap();
        assert_eq!(pick(""), ("10.0.0.5".to_string(), vec!["fd00::5".to_string()]));
        assert_eq!(pick("ipv4"), pick(""));
        assert_eq!(pick("ipv6"), ("fd00::5".to_string(), vec!["10.0.0.5".to_string()]));
        assert_eq!(pick("cni"), pick("ipv6"));
        let unnamed = [ip("", "fd00::7")];
        assert_eq!(select_pod_ips(&unnamed, "ipv4").unwrap(), ("fd00::7".to_string(), vec![]));
        assert_eq!(select_pod_ips(&[], ""), None);
    }
}
