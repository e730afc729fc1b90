//! Builds the `WorkloadSpec` of a sandbox or a container from its CRI config. Pure functions.

use k8s_cri::v1::{ContainerConfig, LinuxContainerResources, NamespaceMode, PodSandboxConfig};

use crate::backend::{ImageConfig, MountSpec, Resources, WorkloadSpec};
use crate::naming::sorted;

/// containerd's default `oom_score_adj` for the pause container.
pub const SANDBOX_OOM_SCORE_ADJ: i32 = -998;

/// Without CAP_SYS_RESOURCE a process cannot go below its own score: raise the request to it
/// (containerd's `restrict_oom_score_adj`).
pub fn clamp_oom_score_adj(requested: i32, own: i32, restrict: bool) -> i32 {
    let requested = requested.clamp(-1000, 1000);
    if restrict && requested < own { own } else { requested }
}

pub fn host_network(config: &PodSandboxConfig) -> bool {
    namespace_mode(config, |o| o.network) == NamespaceMode::Node as i32
}

fn namespace_mode(config: &PodSandboxConfig, pick: impl Fn(&k8s_cri::v1::NamespaceOption) -> i32) -> i32 {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map(&pick)
        .unwrap_or(NamespaceMode::Pod as i32)
}

pub fn resources_from(cri: Option<&LinuxContainerResources>) -> Resources {
    let Some(r) = cri else { return Resources::default() };
    Resources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_bytes: r.memory_limit_in_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        memory_swap_limit_bytes: r.memory_swap_limit_in_bytes,
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| crate::backend::HugepageLimit { page_size: h.page_size.clone(), limit: h.limit })
            .collect(),
        unified: sorted(&r.unified),
    }
}

pub fn resources_to_cri(r: &Resources) -> LinuxContainerResources {
    LinuxContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_bytes,
        oom_score_adj: r.oom_score_adj,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        memory_swap_limit_in_bytes: r.memory_swap_limit_bytes,
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| k8s_cri::v1::HugepageLimit { page_size: h.page_size.clone(), limit: h.limit })
            .collect(),
        unified: r.unified.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

#[cfg(test)]
mod resources_tests {
    use super::*;
    use crate::backend::HugepageLimit;

    fn cri() -> LinuxContainerResources {
        LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 256 << 20,
            oom_score_adj: 3,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![
                k8s_cri::v1::HugepageLimit { page_size: "2MB".into(), limit: 4 << 20 },
                k8s_cri::v1::HugepageLimit { page_size: "1GB".into(), limit: 1 << 30 },
            ],
            unified: [("memory.high".to_string(), "200000000".to_string())].into(),
            memory_swap_limit_in_bytes: 512 << 20,
        }
    }

    #[test]
    fn every_cri_resource_is_kept_and_reported_back() {
        let resources = resources_from(Some(&cri()));
        assert_eq!(resources.memory_swap_limit_bytes, 536_870_912);
        assert_eq!(
            resources.hugepage_limits,
            [
                HugepageLimit { page_size: "2MB".into(), limit: 4_194_304 },
                HugepageLimit { page_size: "1GB".into(), limit: 1_073_741_824 },
            ]
        );
        assert_eq!(resources.unified, [("memory.high".to_string(), "200000000".to_string())].into());
        assert_eq!(resources_to_cri(&resources), cri(), "ContainerStatus reports what was asked for");
        assert_eq!(resources_from(None), Resources::default());
    }

    #[test]
    fn resources_stored_before_the_new_fields_still_read() {
        let old = r#"{"cpu_period":1,"cpu_quota":2,"cpu_shares":3,"memory_limit_bytes":4,"oom_score_adj":5,"cpuset_cpus":"0","cpuset_mems":""}"#;
        let resources: Resources = serde_json::from_str(old).unwrap();
        assert_eq!(resources.memory_limit_bytes, 4);
        assert_eq!(resources.memory_swap_limit_bytes, 0);
        assert!(resources.hugepage_limits.is_empty() && resources.unified.is_empty());
    }
}

/// The annotations containerd's CRI puts on every OCI spec it creates. Runtimes read them: the
/// runc v2 shim groups a pod's tasks under one shim by `sandbox-id` (one shim per pod instead of
/// one per container), and hooks and tools tell pause containers from workloads by
/// `container-type`.
pub mod annotations {
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    pub const CONTAINER_TYPE_SANDBOX: &str = "sandbox";
    pub const CONTAINER_TYPE_CONTAINER: &str = "container";
    pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
    pub const SANDBOX_LOG_DIRECTORY: &str = "io.kubernetes.cri.sandbox-log-directory";
    pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
}

/// The config's own annotations, then the CRI's, which win on a clash: a pod must not be able to
/// move its containers into another pod's shim.
fn cri_annotations(
    config_annotations: &std::collections::HashMap<String, String>,
    sandbox_id: &str,
    sandbox: &PodSandboxConfig,
) -> std::collections::BTreeMap<String, String> {
    let mut out = sorted(config_annotations);
    let metadata = sandbox.metadata.clone().unwrap_or_default();
    out.insert(annotations::SANDBOX_ID.into(), sandbox_id.into());
    out.insert(annotations::SANDBOX_NAME.into(), metadata.name);
    out.insert(annotations::SANDBOX_NAMESPACE.into(), metadata.namespace);
    out.insert(annotations::SANDBOX_UID.into(), metadata.uid);
    out
}

pub struct SandboxSpecInput<'a> {
    pub id: &'a str,
    pub config: &'a PodSandboxConfig,
    pub image: &'a ImageConfig,
    pub netns_path: String,
    pub own_oom_score_adj: i32,
    pub restrict_oom_score_adj: bool,
    pub root_dir: &'a str,
    pub shm_path: Option<String>,
}

/// The seccomp profile a container asks for, as containerd reads the CRI: the `seccomp` field
/// wins over the deprecated `seccomp_profile_path`; none means unconfined; a privileged
/// container is never confined.
#[expect(deprecated, reason = "kubelets before 1.19 still send seccomp_profile_path")]
fn seccomp_profile(security: Option<&k8s_cri::v1::LinuxContainerSecurityContext>) -> String {
    use k8s_cri::v1::security_profile::ProfileType;
    let Some(security) = security else { return String::new() };
    if security.privileged {
        return String::new();
    }
    match &security.seccomp {
        Some(profile) => match ProfileType::try_from(profile.profile_type) {
            Ok(ProfileType::RuntimeDefault) => "runtime/default".into(),
            Ok(ProfileType::Localhost) => format!("localhost/{}", profile.localhost_ref),
            _ => String::new(),
        },
        None => match security.seccomp_profile_path.as_str() {
            "docker/default" => "runtime/default".into(),
            "unconfined" => String::new(),
            path => path.into(),
        },
    }
}

/// containerd's user string: the CRI's uid, else its user name, else the image's USER; with
/// `:gid` appended when the CRI names a group (validated earlier: never a group alone).
fn user_string(uid: Option<i64>, username: &str, gid: Option<i64>, image_user: &str) -> String {
    let user = match uid {
        Some(uid) => uid.to_string(),
        None => username.to_string(),
    };
    match (user.is_empty(), gid) {
        (true, _) => image_user.to_string(),
        (false, Some(gid)) => format!("{user}:{gid}"),
        (false, None) => user,
    }
}

/// Whose /etc/group memberships count: the CRI's user name, else its uid, else the user part
/// of the image's USER, else root.
fn groups_of(uid: Option<i64>, username: &str, image_user: &str) -> String {
    if !username.is_empty() {
        username.to_string()
    } else if let Some(uid) = uid {
        uid.to_string()
    } else if !image_user.is_empty() {
        image_user.split(':').next().unwrap_or_default().to_string()
    } else {
        "0".into()
    }
}

pub fn sandbox_spec(input: SandboxSpecInput<'_>) -> WorkloadSpec {
    let config = input.config;
    let linux = config.linux.as_ref();
    let security = linux.and_then(|l| l.security_context.as_ref());
    let privileged = security.is_some_and(|s| s.privileged);
    let mut args = input.image.entrypoint.clone();
    args.extend(input.image.cmd.iter().cloned());
    let mut mounts = vec![
        bind(&format!("{}/hostname", input.root_dir), "/etc/hostname", true),
        bind(&format!("{}/hosts", input.root_dir), "/etc/hosts", true),
        bind(&format!("{}/resolv.conf", input.root_dir), "/etc/resolv.conf", true),
    ];
    if let Some(shm) = input.shm_path {
        mounts.push(bind(&shm, "/dev/shm", false));
    }
    WorkloadSpec {
        sandbox: true,
        args,
        env: input.image.env.clone(),
        working_dir: input.image.working_dir.clone(),
        hostname: config.hostname.clone(),
        netns_path: input.netns_path,
        sysctls: linux.map(|l| sorted(&l.sysctls)).unwrap_or_default(),
        host_network: host_network(config),
        host_pid: namespace_mode(config, |o| o.pid) == NamespaceMode::Node as i32,
        host_ipc: namespace_mode(config, |o| o.ipc) == NamespaceMode::Node as i32,
        cgroup_parent: linux.map(|l| l.cgroup_parent.clone()).unwrap_or_default(),
        oom_score_adj: clamp_oom_score_adj(
            SANDBOX_OOM_SCORE_ADJ,
            input.own_oom_score_adj,
            input.restrict_oom_score_adj,
        ),
        privileged,
        user: user_string(
            security.and_then(|s| s.run_as_user.as_ref()).map(|u| u.value),
            "",
            security.and_then(|s| s.run_as_group.as_ref()).map(|g| g.value),
            &input.image.user,
        ),
        supplemental_groups: security
            .map(|s| s.supplemental_groups.iter().map(|&g| g as u32).collect())
            .unwrap_or_default(),
        // The pause process never needs to gain privileges; a privileged pod's may.
        no_new_privs: !privileged,
        readonly_rootfs: true,
        mounts,
        labels: sorted(&config.labels),
        annotations: {
            let mut a = cri_annotations(&config.annotations, input.id, config);
            a.insert(annotations::CONTAINER_TYPE.into(), annotations::CONTAINER_TYPE_SANDBOX.into());
            a.insert(annotations::SANDBOX_LOG_DIRECTORY.into(), config.log_directory.clone());
            a
        },
        ..Default::default()
    }
}

fn bind(source: &str, destination: &str, readonly: bool) -> MountSpec {
    let mut options = vec!["rbind".to_string()];
    options.push(if readonly { "ro" } else { "rw" }.to_string());
    MountSpec { destination: destination.to_string(), source: source.to_string(), kind: "bind".into(), options }
}

/// The PATH a container gets when its image sets none, as in containerd's default spec.
pub const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct ContainerSpecInput<'a> {
    pub sandbox_id: &'a str,
    pub config: &'a ContainerConfig,
    pub sandbox_config: &'a PodSandboxConfig,
    pub image: &'a ImageConfig,
    pub netns_path: String,
    pub sandbox_pid: u32,
    pub sandbox_root_dir: &'a str,
    pub own_oom_score_adj: i32,
    pub restrict_oom_score_adj: bool,
    pub ignore_image_volumes: bool,
    /// The node's host name: `HOSTNAME` for pods that name none.
    pub node_hostname: String,
    /// The pod's /dev/shm (a tmpfs the sandbox mounted), which its containers share.
    pub sandbox_shm_dir: String,
}

pub fn container_spec(input: ContainerSpecInput<'_>) -> WorkloadSpec {
    let config = input.config;
    // Kubernetes semantics: `command` replaces the entrypoint and drops the image cmd; `args`
    // replaces the cmd.
    let mut args = if config.command.is_empty() { input.image.entrypoint.clone() } else { config.command.clone() };
    if !config.args.is_empty() {
        args.extend(config.args.iter().cloned());
    } else if config.command.is_empty() {
        args.extend(input.image.cmd.iter().cloned());
    }
    // As containerd builds it: a default PATH and HOSTNAME (the pod's, else the node's), then
    // the image's variables, then the CRI's; a later one replaces an earlier one of its name.
    let hostname = if input.sandbox_config.hostname.is_empty() {
        input.node_hostname.clone()
    } else {
        input.sandbox_config.hostname.clone()
    };
    let mut env = vec![DEFAULT_PATH_ENV.to_string(), format!("HOSTNAME={hostname}")];
    let entries =
        input.image.env.iter().cloned().chain(config.envs.iter().map(|kv| format!("{}={}", kv.key, kv.value)));
    for entry in entries {
        let key = entry.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(entry);
    }
    let linux = config.linux.as_ref();
    let security = linux.and_then(|l| l.security_context.as_ref());
    let resources = resources_from(linux.and_then(|l| l.resources.as_ref()));
    let requested_oom = resources.oom_score_adj as i32;
    let mut mounts: Vec<MountSpec> = config
        .mounts
        .iter()
        .map(|m| {
            let mut mount = bind(&m.host_path, &m.container_path, m.readonly);
            if m.selinux_relabel {
                mount.options.push("relabel".into());
            }
            // The CRI's propagation, as containerd maps it; the runtime then makes the rootfs
            // rslave or rshared so that the propagation can reach the mount.
            use k8s_cri::v1::MountPropagation;
            mount.options.push(
                match MountPropagation::try_from(m.propagation) {
                    Ok(MountPropagation::PropagationHostToContainer) => "rslave",
                    Ok(MountPropagation::PropagationBidirectional) => "rshared",
                    _ => "rprivate",
                }
                .into(),
            );
            mount
        })
        .collect();
    // The pod's /dev/shm, shared by its containers (the host's for a host-IPC pod), unless the
    // CRI mounts one itself; as in containerd.
    if !mounts.iter().any(|m| m.destination == "/dev/shm") {
        let host_ipc = namespace_mode(input.sandbox_config, |o| o.ipc) == NamespaceMode::Node as i32;
        let source = if host_ipc { "/dev/shm" } else { input.sandbox_shm_dir.as_str() };
        mounts.push(bind(source, "/dev/shm", false));
    }
    for file in ["hostname", "hosts", "resolv.conf"] {
        let destination = format!("/etc/{file}");
        if !mounts.iter().any(|m| m.destination == destination) {
            mounts.push(bind(&format!("{}/{file}", input.sandbox_root_dir), &destination, false));
        }
    }
    if !input.ignore_image_volumes {
        for volume in &input.image.volumes {
            if !mounts.iter().any(|m| &m.destination == volume) {
                mounts.push(MountSpec {
                    destination: volume.clone(),
                    source: String::new(),
                    kind: "volume".into(),
                    options: vec![],
                });
            }
        }
    }
    let add_capabilities =
        security.and_then(|s| s.capabilities.as_ref()).map(|c| c.add_capabilities.clone()).unwrap_or_default();
    let seccomp = seccomp_profile(security);
    let container_pid_mode =
        security.and_then(|s| s.namespace_options.as_ref()).map_or(NamespaceMode::Pod as i32, |o| o.pid);
    WorkloadSpec {
        sandbox: false,
        args,
        env,
        working_dir: if config.working_dir.is_empty() {
            input.image.working_dir.clone()
        } else {
            config.working_dir.clone()
        },
        hostname: input.sandbox_config.hostname.clone(),
        netns_path: input.netns_path,
        sandbox_pid: input.sandbox_pid,
        // The container's own namespace options, as kubelet sets them: NODE shares the host's
        // PID namespace, CONTAINER gets its own, POD (and TARGET, not supported yet) the pod's.
        host_pid: container_pid_mode == NamespaceMode::Node as i32,
        own_pid_namespace: container_pid_mode == NamespaceMode::Container as i32,
        host_network: host_network(input.sandbox_config),
        cgroup_parent: input.sandbox_config.linux.as_ref().map(|l| l.cgroup_parent.clone()).unwrap_or_default(),
        oom_score_adj: clamp_oom_score_adj(requested_oom, input.own_oom_score_adj, input.restrict_oom_score_adj),
        privileged: security.is_some_and(|s| s.privileged),
        sysctls: input.sandbox_config.linux.as_ref().map(|l| sorted(&l.sysctls)).unwrap_or_default(),
        masked_paths: security.map(|s| s.masked_paths.clone()).unwrap_or_default(),
        readonly_paths: security.map(|s| s.readonly_paths.clone()).unwrap_or_default(),
        // RuntimeDefault is decided here, whole; a localhost profile is read by the backend.
        resolved_seccomp: (seccomp == "runtime/default")
            .then(|| crate::seccomp::runtime_default_profile(&add_capabilities)),
        seccomp_profile: seccomp,
        no_new_privs: security.is_some_and(|s| s.no_new_privs),
        readonly_rootfs: security.is_some_and(|s| s.readonly_rootfs),
        run_as_user: security.and_then(|s| s.run_as_user.as_ref()).map(|u| u.value),
        run_as_username: security.map(|s| s.run_as_username.clone()).unwrap_or_default(),
        user: user_string(
            security.and_then(|s| s.run_as_user.as_ref()).map(|u| u.value),
            security.map(|s| s.run_as_username.as_str()).unwrap_or_default(),
            security.and_then(|s| s.run_as_group.as_ref()).map(|g| g.value),
            &input.image.user,
        ),
        groups_of: groups_of(
            security.and_then(|s| s.run_as_user.as_ref()).map(|u| u.value),
            security.map(|s| s.run_as_username.as_str()).unwrap_or_default(),
            &input.image.user,
        ),
        supplemental_groups: security
            .map(|s| s.supplemental_groups.iter().map(|&g| g as u32).collect())
            .unwrap_or_default(),
        add_capabilities,
        drop_capabilities: security
            .and_then(|s| s.capabilities.as_ref())
            .map(|c| c.drop_capabilities.clone())
            .unwrap_or_default(),
        mounts,
        resources,
        labels: sorted(&config.labels),
        annotations: {
            let mut a = cri_annotations(&config.annotations, input.sandbox_id, input.sandbox_config);
            a.insert(annotations::CONTAINER_TYPE.into(), annotations::CONTAINER_TYPE_CONTAINER.into());
            a.insert(
                annotations::CONTAINER_NAME.into(),
                config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
            );
            a.insert(
                annotations::IMAGE_NAME.into(),
                config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
            );
            a
        },
        tty: config.tty,
        stdin: config.stdin,
        ..Default::default()
    }
}

/// Parses a stop signal name (`SIGTERM`, `TERM`) or number; None when unknown.
pub fn parse_signal(text: &str) -> Option<u32> {
    if let Ok(number) = text.parse::<u32>() {
        return (1..=64).contains(&number).then_some(number);
    }
    let name = text.trim_start_matches("SIG");
    Some(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "STOP" => 19,
        "WINCH" => 28,
        "PWR" => 30,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_score_adj_is_clamped_only_when_restricted() {
        assert_eq!(clamp_oom_score_adj(-998, 0, true), 0);
        assert_eq!(clamp_oom_score_adj(-998, 0, false), -998);
        assert_eq!(clamp_oom_score_adj(500, 0, true), 500);
        assert_eq!(clamp_oom_score_adj(-5000, -1000, true), -1000);
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("KILL"), Some(9));
        assert_eq!(parse_signal("2"), Some(2));
        assert_eq!(parse_signal("SIGBOGUS"), None);
        assert_eq!(parse_signal("99"), None);
    }

    /// A container of sandbox "s1" with everything else at its plainest.
    fn test_container_spec(config: &ContainerConfig, sandbox: &PodSandboxConfig, image: &ImageConfig) -> WorkloadSpec {
        container_spec(ContainerSpecInput {
            sandbox_id: "s1",
            config,
            sandbox_config: sandbox,
            image,
            netns_path: String::new(),
            sandbox_pid: 1,
            sandbox_root_dir: "/r",
            own_oom_score_adj: 0,
            restrict_oom_score_adj: false,
            ignore_image_volumes: false,
            node_hostname: "node-1".into(),
            sandbox_shm_dir: "/state/sandboxes/s1/shm".into(),
        })
    }

    #[test]
    fn command_and_args_follow_kubernetes_rules() {
        let image = ImageConfig { entrypoint: vec!["/ep".into()], cmd: vec!["c".into()], ..Default::default() };
        let sandbox = PodSandboxConfig::default();
        let spec_for = |command: Vec<String>, args: Vec<String>| {
            let config = ContainerConfig { command, args, ..Default::default() };
            test_container_spec(&config, &sandbox, &image).args
        };
        assert_eq!(spec_for(vec![], vec![]), vec!["/ep", "c"]);
        assert_eq!(spec_for(vec![], vec!["a".into()]), vec!["/ep", "a"]);
        assert_eq!(spec_for(vec!["x".into()], vec![]), vec!["x"]);
    }

    #[test]
    fn cri_annotations_group_a_pod_and_cannot_be_forged() {
        use k8s_cri::v1::{ContainerMetadata, ImageSpec, PodSandboxMetadata};
        let forged = std::collections::HashMap::from([
            (annotations::SANDBOX_ID.to_string(), "other".to_string()),
            ("team".to_string(), "a".to_string()),
        ]);
        let sandbox = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            log_directory: "/logs/web".into(),
            annotations: forged.clone(),
            ..Default::default()
        };
        let image = ImageConfig::default();
        let pause = sandbox_spec(SandboxSpecInput {
            id: "s1",
            config: &sandbox,
            image: &image,
            netns_path: String::new(),
            own_oom_score_adj: 0,
            restrict_oom_score_adj: false,
            root_dir: "/r",
            shm_path: None,
        });
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata { name: "app".into(), attempt: 0 }),
            image: Some(ImageSpec { image: "busybox".into(), ..Default::default() }),
            annotations: forged,
            ..Default::default()
        };
        let app = test_container_spec(&config, &sandbox, &image);
        for spec in [&pause, &app] {
            assert_eq!(spec.annotations[annotations::SANDBOX_ID], "s1");
            assert_eq!(spec.annotations["team"], "a");
            assert_eq!(
                (
                    spec.annotations[annotations::SANDBOX_NAME].as_str(),
                    spec.annotations[annotations::SANDBOX_NAMESPACE].as_str()
                ),
                ("web", "ns")
            );
        }
        assert_eq!(pause.annotations[annotations::CONTAINER_TYPE], "sandbox");
        assert_eq!(pause.annotations[annotations::SANDBOX_LOG_DIRECTORY], "/logs/web");
        assert_eq!(app.annotations[annotations::CONTAINER_TYPE], "container");
        assert_eq!(
            (app.annotations[annotations::CONTAINER_NAME].as_str(), app.annotations[annotations::IMAGE_NAME].as_str()),
            ("app", "busybox")
        );
    }

    /// containerd's environment: default PATH, HOSTNAME, the image's, then the CRI's, each
    /// replacing an earlier variable of its name.
    #[test]
    fn environment_layers_like_containerd() {
        let config = ContainerConfig {
            envs: vec![
                k8s_cri::v1::KeyValue { key: "A".into(), value: "cri".into() },
                k8s_cri::v1::KeyValue { key: "C".into(), value: "3".into() },
            ],
            ..Default::default()
        };
        let image = ImageConfig { env: vec!["A=image".into(), "B=2".into()], ..Default::default() };
        let named = PodSandboxConfig { hostname: "pod-host".into(), ..Default::default() };
        let spec = test_container_spec(&config, &named, &image);
        assert_eq!(spec.env, [DEFAULT_PATH_ENV, "HOSTNAME=pod-host", "B=2", "A=cri", "C=3"]);
        let image_path = ImageConfig { env: vec!["PATH=/bin".into()], ..Default::default() };
        let host_network = PodSandboxConfig::default();
        let spec = test_container_spec(&ContainerConfig::default(), &host_network, &image_path);
        assert_eq!(spec.env, ["HOSTNAME=node-1", "PATH=/bin"]);
    }

    #[test]
    fn containers_share_the_pods_shm() {
        let spec =
            test_container_spec(&ContainerConfig::default(), &PodSandboxConfig::default(), &ImageConfig::default());
        let shm = spec.mounts.iter().find(|m| m.destination == "/dev/shm").unwrap();
        assert_eq!((shm.source.as_str(), shm.kind.as_str()), ("/state/sandboxes/s1/shm", "bind"));
        let host_ipc = PodSandboxConfig {
            linux: Some(k8s_cri::v1::LinuxPodSandboxConfig {
                security_context: Some(k8s_cri::v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(k8s_cri::v1::NamespaceOption {
                        ipc: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = test_container_spec(&ContainerConfig::default(), &host_ipc, &ImageConfig::default());
        assert_eq!(spec.mounts.iter().find(|m| m.destination == "/dev/shm").unwrap().source, "/dev/shm");
    }
}
