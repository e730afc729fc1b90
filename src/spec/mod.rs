//! Builds the `WorkloadSpec` of a sandbox or a container from its CRI config. Pure functions.

use k8s_cri::v1::{ContainerConfig, LinuxContainerResources, NamespaceMode, PodSandboxConfig};

use crate::config::{Config, RuntimeConfig};
use crate::error::{Error, Result, quoted};
use crate::naming::sorted;
use crate::ports::{DeviceRequest, ImageConfig, MountSpec, Resources, WorkloadSpec};

pub mod seccomp;
pub mod userdb;

/// What the daemon's configuration and its host decide about every spec of one runtime
/// handler, read once per request.
#[derive(Clone, Debug, Default)]
pub struct SpecPolicy {
    /// The handler's runtime entry (annotation pass-through, devices, runc options).
    pub runtime: RuntimeConfig,
    pub unset_seccomp_profile: String,
    /// The host has AppArmor and the config does not disable it.
    pub apparmor_enabled: bool,
    pub enable_unprivileged_ports: bool,
    pub enable_unprivileged_icmp: bool,
    pub device_ownership_from_security_context: bool,
    pub disable_cgroup: bool,
    pub disable_hugetlb_controller: bool,
}

impl SpecPolicy {
    pub fn new(config: &Config, handler: &str, host_apparmor: bool) -> Result<SpecPolicy> {
        let runtime = config
            .containerd
            .runtimes
            .get(handler)
            .cloned()
            .ok_or_else(|| Error::precondition(format!("runtime handler {handler:?} is not configured")))?;
        Ok(SpecPolicy {
            runtime,
            unset_seccomp_profile: config.unset_seccomp_profile.clone(),
            apparmor_enabled: host_apparmor && !config.disable_apparmor,
            enable_unprivileged_ports: config.enable_unprivileged_ports,
            enable_unprivileged_icmp: config.enable_unprivileged_icmp,
            device_ownership_from_security_context: config.device_ownership_from_security_context,
            disable_cgroup: config.disable_cgroup,
            disable_hugetlb_controller: config.disable_hugetlb_controller,
        })
    }

    /// The runtime-level choices every workload of this handler carries to the backend.
    fn apply_runtime(&self, spec: &mut WorkloadSpec) {
        spec.runtime_path = self.runtime.runtime_path.clone();
        spec.runc_options = self.runtime.options.clone();
        spec.cgroups_disabled = self.disable_cgroup;
        if self.disable_hugetlb_controller {
            spec.resources.hugepage_limits.clear();
        }
    }
}

/// The annotations of `annotations` whose keys match one of `patterns` (names or globs, where
/// `*` stops at `/`, as containerd matches them).
pub fn passthrough_annotations(
    annotations: &std::collections::HashMap<String, String>,
    patterns: &[String],
) -> std::collections::BTreeMap<String, String> {
    let options = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
    let patterns: Vec<glob::Pattern> = patterns.iter().filter_map(|p| glob::Pattern::new(p).ok()).collect();
    let mut out = sorted(annotations);
    out.retain(|key, _| patterns.iter().any(|p| p.matches_with(key, options)));
    out
}

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

/// Checks a pod's or container's user namespace options as containerd reads them (one UID and
/// one GID mapping, only with the POD mode), and refuses the POD mode itself: crid does not
/// make user namespaces yet, and a pod that asked for one (kubelet's `hostUsers: false`) must
/// not run as the node's root instead.
pub fn check_user_namespace(namespaces: Option<&k8s_cri::v1::NamespaceOption>) -> Result<()> {
    let Some(options) = namespaces.and_then(|n| n.userns_options.as_ref()) else { return Ok(()) };
    for (ids, mappings) in [("UID", &options.uids), ("GID", &options.gids)] {
        if mappings.len() > 1 {
            return Err(Error::invalid(format!(
                "user namespace: only one {ids} mapping is supported, got {}",
                mappings.len()
            )));
        }
        if mappings.first().is_some_and(|m| m.length < 1) {
            return Err(Error::invalid(format!("user namespace: a {ids} mapping of length 0")));
        }
    }
    let mapped = !options.uids.is_empty() || !options.gids.is_empty();
    match NamespaceMode::try_from(options.mode) {
        Ok(NamespaceMode::Node) if mapped => {
            Err(Error::invalid("user namespace: the node's user namespace takes no UID or GID mappings"))
        }
        Ok(NamespaceMode::Node) => Ok(()),
        Ok(NamespaceMode::Pod) if options.uids.is_empty() || options.gids.is_empty() => {
            Err(Error::invalid("user namespace: a pod's user namespace needs a UID and a GID mapping"))
        }
        Ok(NamespaceMode::Pod) => Err(Error::unimplemented(
            "user namespaces are not supported: the pod would run in the node's user namespace",
        )),
        _ => Err(Error::invalid(format!("user namespace: unsupported mode {}", options.mode))),
    }
}

/// The lowest and highest `oom_score_adj` the kernel takes.
pub const OOM_SCORE_ADJ_RANGE: std::ops::RangeInclusive<i64> = -1000..=1000;

/// Refuses resource values no runtime can honour, before anything is created or changed.
/// containerd 1.7 passes them on unchecked: a negative period or shares is cast to a huge
/// unsigned number and an out-of-range `oom_score_adj` is written as is, so the task fails to
/// start (or the update fails) with the runtime's words, or, for values the backend only sets
/// when positive, the limit is silently not applied. Refusing at the call says which field is
/// wrong and leaves nothing half-made. `-1` stays accepted for the quota and the memory and swap
/// limits: it is runc's "unlimited", the same as not setting them.
pub fn check_resources(r: &LinuxContainerResources) -> Result<()> {
    let at_least = |field: &str, value: i64, min: i64| {
        if value < min {
            Err(Error::invalid(format!("resources: {field} {value} must be at least {min}")))
        } else {
            Ok(())
        }
    };
    at_least("cpu_period", r.cpu_period, 0)?;
    at_least("cpu_shares", r.cpu_shares, 0)?;
    at_least("cpu_quota", r.cpu_quota, -1)?;
    at_least("memory_limit_in_bytes", r.memory_limit_in_bytes, -1)?;
    at_least("memory_swap_limit_in_bytes", r.memory_swap_limit_in_bytes, -1)?;
    if !OOM_SCORE_ADJ_RANGE.contains(&r.oom_score_adj) {
        return Err(Error::invalid(format!(
            "resources: oom_score_adj {} must be within {}..={}",
            r.oom_score_adj,
            OOM_SCORE_ADJ_RANGE.start(),
            OOM_SCORE_ADJ_RANGE.end()
        )));
    }
    // Unified keys are file names in the container's cgroup directory (as runc writes them).
    let bad_key = sorted(&r.unified)
        .into_keys()
        .find(|key| key.is_empty() || key == "." || key == ".." || key.contains(['/', '\0']));
    if let Some(key) = bad_key {
        return Err(Error::invalid(format!("resources: unified key {} must be a cgroup file name", quoted(&key))));
    }
    Ok(())
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
            .map(|h| crate::ports::HugepageLimit { page_size: h.page_size.clone(), limit: h.limit })
            .collect(),
        unified: sorted(&r.unified),
    }
}

/// The resources as the runtime applies them, which a container status reports: the CRI's,
/// with the swap limit pinned to the memory limit where the host accounts swap and the CRI
/// names none, as containerd writes it into the spec (no swap beyond the memory limit).
pub fn resources_as_applied(cri: Option<&LinuxContainerResources>, swap_accounted: bool) -> Resources {
    let mut resources = resources_from(cri);
    if swap_accounted && resources.memory_limit_bytes > 0 && resources.memory_swap_limit_bytes == 0 {
        resources.memory_swap_limit_bytes = resources.memory_limit_bytes;
    }
    resources
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
    use crate::ports::HugepageLimit;

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
    fn resources_no_runtime_can_honour_are_refused() {
        check_resources(&cri()).unwrap();
        let unlimited = LinuxContainerResources {
            cpu_quota: -1,
            memory_limit_in_bytes: -1,
            memory_swap_limit_in_bytes: -1,
            oom_score_adj: -1000,
            ..Default::default()
        };
        check_resources(&unlimited).unwrap();
        check_resources(&LinuxContainerResources { oom_score_adj: 1000, ..Default::default() }).unwrap();
        let cases: Vec<(&str, LinuxContainerResources)> = vec![
            ("cpu_period -1", LinuxContainerResources { cpu_period: -1, ..Default::default() }),
            ("cpu_shares -2", LinuxContainerResources { cpu_shares: -2, ..Default::default() }),
            ("cpu_quota -2", LinuxContainerResources { cpu_quota: -2, ..Default::default() }),
            ("memory_limit_in_bytes -5", LinuxContainerResources { memory_limit_in_bytes: -5, ..Default::default() }),
            (
                "memory_swap_limit_in_bytes -2",
                LinuxContainerResources { memory_swap_limit_in_bytes: -2, ..Default::default() },
            ),
            ("oom_score_adj 1001", LinuxContainerResources { oom_score_adj: 1001, ..Default::default() }),
            ("oom_score_adj -1001", LinuxContainerResources { oom_score_adj: -1001, ..Default::default() }),
            (
                "unified key \"../memory.max\"",
                LinuxContainerResources {
                    unified: [("../memory.max".to_string(), "1".to_string())].into(),
                    ..Default::default()
                },
            ),
        ];
        for (why, resources) in cases {
            let error = check_resources(&resources).unwrap_err();
            assert_eq!(error.kind, crate::ErrorKind::InvalidArgument, "{why}");
            assert!(error.message.contains(why), "{why}: {error}");
        }
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

/// The pod's (and the container's) annotations that the runtime handler lets through, then the
/// CRI's own, which win on a clash: a pod must not be able to move its containers into another
/// pod's shim.
fn cri_annotations(
    passthrough: std::collections::BTreeMap<String, String>,
    sandbox_id: &str,
    sandbox: &PodSandboxConfig,
) -> std::collections::BTreeMap<String, String> {
    let mut out = passthrough;
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
    pub policy: &'a SpecPolicy,
}

/// The seccomp profile a container asks for, as containerd reads the CRI: the `seccomp` field
/// wins over the deprecated `seccomp_profile_path`; none means unconfined; a privileged
/// container is never confined.
/// A request that names no profile gets the config's `unset_seccomp_profile`.
#[expect(deprecated, reason = "kubelets before 1.19 still send seccomp_profile_path")]
fn seccomp_profile(security: Option<&k8s_cri::v1::LinuxContainerSecurityContext>, unset: &str) -> String {
    use k8s_cri::v1::security_profile::ProfileType;
    if security.is_some_and(|s| s.privileged) {
        return String::new();
    }
    let named = match security {
        None => "",
        Some(security) => match &security.seccomp {
            Some(profile) => match ProfileType::try_from(profile.profile_type) {
                Ok(ProfileType::RuntimeDefault) => return "runtime/default".into(),
                Ok(ProfileType::Localhost) => return format!("localhost/{}", profile.localhost_ref),
                _ => return String::new(),
            },
            None => security.seccomp_profile_path.as_str(),
        },
    };
    match if named.is_empty() { unset } else { named } {
        "docker/default" | "runtime/default" => "runtime/default".into(),
        "unconfined" => String::new(),
        path => path.into(),
    }
}

/// The AppArmor profile a container runs under, as containerd decides it. Without AppArmor on
/// the host (or with `disable_apparmor`) nothing is applied, but a profile the request names
/// explicitly is refused rather than silently dropped; RuntimeDefault is then a no-op, as in
/// containerd.
#[expect(deprecated, reason = "kubelets before 1.30 send apparmor_profile")]
pub fn apparmor_profile(
    security: Option<&k8s_cri::v1::LinuxContainerSecurityContext>,
    apparmor_enabled: bool,
) -> Result<String> {
    use k8s_cri::v1::security_profile::ProfileType;
    let Some(security) = security else { return Ok(String::new()) };
    let named = match &security.apparmor {
        Some(profile) => match ProfileType::try_from(profile.profile_type) {
            Ok(ProfileType::Localhost) => format!("localhost/{}", profile.localhost_ref),
            Ok(ProfileType::Unconfined) => "unconfined".into(),
            _ => "runtime/default".into(),
        },
        None if security.apparmor_profile.is_empty() => String::new(),
        None => security.apparmor_profile.clone(),
    };
    if !apparmor_enabled {
        return match named.as_str() {
            "" | "unconfined" | "runtime/default" => Ok(String::new()),
            other => {
                Err(Error::invalid(format!("apparmor is not supported on this node; cannot apply profile {other:?}")))
            }
        };
    }
    Ok(match named.as_str() {
        "unconfined" => String::new(),
        // Privileged containers are not confined by default.
        "" | "runtime/default" if security.privileged => String::new(),
        "" | "runtime/default" => "runtime/default".into(),
        other => other.to_string(),
    })
}

/// The CRI's devices, checked: absolute paths, permissions drawn from `rwm`.
fn device_requests(config: &ContainerConfig) -> Result<Vec<DeviceRequest>> {
    config
        .devices
        .iter()
        .map(|d| {
            if !d.host_path.starts_with('/') {
                return Err(Error::invalid(format!("device host path {} must be absolute", quoted(&d.host_path))));
            }
            let container_path =
                if d.container_path.is_empty() { d.host_path.clone() } else { d.container_path.clone() };
            if !container_path.starts_with('/') || container_path.split('/').any(|part| part == "..") {
                return Err(Error::invalid(format!(
                    "device container path {} must be absolute and stay under /",
                    quoted(&container_path)
                )));
            }
            let permissions = if d.permissions.is_empty() { "rwm".to_string() } else { d.permissions.clone() };
            if !permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
                return Err(Error::invalid(format!(
                    "device {}: permissions {} must be drawn from \"rwm\"",
                    quoted(&d.host_path),
                    quoted(&permissions)
                )));
            }
            Ok(DeviceRequest { host_path: d.host_path.clone(), container_path, permissions })
        })
        .collect()
}

/// A CRI mount's place in the container: absolute, and cleaned lexically (`.`, `..` and
/// repeated slashes resolved) so that no later join can climb out of the rootfs; the root itself
/// is refused, since a mount over it would replace the image.
fn mount_destination(container_path: &str) -> Result<String> {
    if !container_path.starts_with('/') {
        return Err(Error::invalid(format!("mount container path {} must be absolute", quoted(container_path))));
    }
    let cleaned = clean_absolute(container_path);
    if cleaned == "/" {
        return Err(Error::invalid(format!(
            "mount container path {} would replace the container's root",
            quoted(container_path)
        )));
    }
    Ok(cleaned)
}

/// Lexical cleaning of an absolute path, as Go's `filepath.Clean` does: `..` at the root stays
/// at the root.
pub(crate) fn clean_absolute(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A container's log file under its pod's log directory: `log_path` must be relative and stay
/// below the directory once cleaned (kubelet sends `<name>/<attempt>.log`); anything else could
/// write, and later remove, files anywhere on the host.
pub fn log_file_path(log_directory: &str, log_path: &str) -> Result<String> {
    if log_directory.is_empty() || log_path.is_empty() {
        return Ok(String::new());
    }
    let escapes = log_path.starts_with('/') || {
        let mut depth = 0i32;
        log_path.split('/').any(|part| {
            match part {
                "" | "." => {}
                ".." => depth -= 1,
                _ => depth += 1,
            }
            depth < 0
        })
    };
    if escapes || clean_absolute(&format!("/{log_path}")) == "/" {
        return Err(Error::invalid(format!(
            "log path {} must be a file below the pod's log directory",
            quoted(log_path)
        )));
    }
    Ok(format!("{}{}", log_directory.trim_end_matches('/'), clean_absolute(&format!("/{log_path}"))))
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
    // As containerd mounts them for the pause: the pod's /dev/shm (the host's for a host-IPC
    // pod) over the default one, and its resolv.conf, both read-only; the pause process reads
    // neither its hostname nor its hosts file.
    let shm = input.shm_path.unwrap_or_else(|| "/dev/shm".to_string());
    let mounts =
        vec![bind(&shm, "/dev/shm", true), bind(&format!("{}/resolv.conf", input.root_dir), "/etc/resolv.conf", true)];
    let mut sysctls = linux.map(|l| sorted(&l.sysctls)).unwrap_or_default();
    if !host_network(config) {
        // Only within the pod's own network namespace, and never over the pod's own choice.
        if input.policy.enable_unprivileged_ports {
            sysctls.entry("net.ipv4.ip_unprivileged_port_start".into()).or_insert_with(|| "0".into());
        }
        if input.policy.enable_unprivileged_icmp {
            sysctls.entry("net.ipv4.ping_group_range".into()).or_insert_with(|| "0 2147483647".into());
        }
    }
    let mut spec = WorkloadSpec {
        sandbox: true,
        args,
        env: input.image.env.clone(),
        working_dir: input.image.working_dir.clone(),
        hostname: config.hostname.clone(),
        netns_path: input.netns_path,
        sysctls,
        host_network: host_network(config),
        host_pid: namespace_mode(config, |o| o.pid) == NamespaceMode::Node as i32,
        host_ipc: namespace_mode(config, |o| o.ipc) == NamespaceMode::Node as i32,
        cgroup_parent: linux.map(|l| l.cgroup_parent.clone()).unwrap_or_default(),
        oom_score_adj: Some(clamp_oom_score_adj(
            SANDBOX_OOM_SCORE_ADJ,
            input.own_oom_score_adj,
            input.restrict_oom_score_adj,
        )),
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
        // The pause process never needs to gain privileges, nor, in a privileged pod, more
        // capabilities than the default ones, as in containerd.
        no_new_privs: true,
        readonly_rootfs: true,
        mounts,
        labels: sorted(&config.labels),
        annotations: {
            let passthrough = passthrough_annotations(&config.annotations, &input.policy.runtime.pod_annotations);
            let mut a = cri_annotations(passthrough, input.id, config);
            a.insert(annotations::CONTAINER_TYPE.into(), annotations::CONTAINER_TYPE_SANDBOX.into());
            a.insert(annotations::SANDBOX_LOG_DIRECTORY.into(), config.log_directory.clone());
            a
        },
        ..Default::default()
    };
    input.policy.apply_runtime(&mut spec);
    spec
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
    /// The container's own directory: its image volumes live under `volumes/`.
    pub container_root_dir: &'a str,
    /// For the CRI's TARGET pid mode: the running target container's task pid.
    pub target_pid: u32,
    pub policy: &'a SpecPolicy,
}

/// Where the `index`th image volume of a container lives on the host.
pub fn volume_dir(container_root_dir: &str, index: usize) -> String {
    format!("{container_root_dir}/volumes/{index}")
}

pub fn container_spec(input: ContainerSpecInput<'_>) -> Result<WorkloadSpec> {
    let config = input.config;
    // Kubernetes semantics: `command` replaces the entrypoint and drops the image cmd; `args`
    // replaces the cmd.
    let mut args = if config.command.is_empty() { input.image.entrypoint.clone() } else { config.command.clone() };
    if !config.args.is_empty() {
        args.extend(config.args.iter().cloned());
    } else if config.command.is_empty() {
        args.extend(input.image.cmd.iter().cloned());
    }
    // As containerd builds it: a default PATH, TERM=xterm for a terminal, HOSTNAME (the pod's,
    // else the node's), then the image's variables, then the CRI's; a later one takes the
    // place of an earlier one of its name.
    let hostname = if input.sandbox_config.hostname.is_empty() {
        input.node_hostname.clone()
    } else {
        input.sandbox_config.hostname.clone()
    };
    let mut env = vec![DEFAULT_PATH_ENV.to_string()];
    if config.tty {
        env.push("TERM=xterm".to_string());
    }
    let entries = std::iter::once(format!("HOSTNAME={hostname}"))
        .chain(input.image.env.iter().cloned())
        .chain(config.envs.iter().map(|kv| format!("{}={}", kv.key, kv.value)));
    for entry in entries {
        let key = entry.split('=').next().unwrap_or_default();
        match env.iter().position(|e| e.split('=').next() == Some(key)) {
            Some(index) => env[index] = entry,
            None => env.push(entry),
        }
    }
    let linux = config.linux.as_ref();
    let security = linux.and_then(|l| l.security_context.as_ref());
    let resources = resources_from(linux.and_then(|l| l.resources.as_ref()));
    let requested_oom = resources.oom_score_adj as i32;
    let mut mounts: Vec<MountSpec> = config
        .mounts
        .iter()
        .map(|m| {
            let container_path = mount_destination(&m.container_path)?;
            if !m.host_path.starts_with('/') {
                return Err(Error::invalid(format!("mount host path {} must be absolute", quoted(&m.host_path))));
            }
            let mut mount = bind(&m.host_path, &container_path, m.readonly);
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
            Ok(mount)
        })
        .collect::<Result<_>>()?;
    // The pod's hostname, hosts and resolv.conf (read-only with a read-only rootfs), then its
    // /dev/shm, shared by its containers (the host's for a host-IPC pod), each unless the CRI
    // mounts one there itself; as in containerd, and in its order.
    let readonly_rootfs = security.is_some_and(|s| s.readonly_rootfs);
    for file in ["hostname", "hosts", "resolv.conf"] {
        let destination = format!("/etc/{file}");
        if !mounts.iter().any(|m| m.destination == destination) {
            mounts.push(bind(&format!("{}/{file}", input.sandbox_root_dir), &destination, readonly_rootfs));
        }
    }
    if !mounts.iter().any(|m| m.destination == "/dev/shm") {
        let host_ipc = namespace_mode(input.sandbox_config, |o| o.ipc) == NamespaceMode::Node as i32;
        let source = if host_ipc { "/dev/shm" } else { input.sandbox_shm_dir.as_str() };
        mounts.push(bind(source, "/dev/shm", false));
    }
    if !input.ignore_image_volumes {
        // Each image VOLUME becomes a directory of the container's own, which the backend fills
        // with the image's content at that path before the container first runs, as containerd
        // does; a CRI mount at the same place wins.
        for (index, volume) in input.image.volumes.iter().enumerate() {
            if !mounts.iter().any(|m| &m.destination == volume) {
                mounts.push(MountSpec {
                    destination: volume.clone(),
                    source: volume_dir(input.container_root_dir, index),
                    kind: "volume".into(),
                    options: vec!["rbind".into(), "rw".into(), "rprivate".into()],
                });
            }
        }
    }
    // A mount over a deeper one must come after it: containerd orders the CRI's and its own
    // mounts by depth, keeping the order above among mounts of one depth.
    mounts.sort_by_key(|m| std::path::Path::new(&m.destination).components().count());
    let add_capabilities =
        security.and_then(|s| s.capabilities.as_ref()).map(|c| c.add_capabilities.clone()).unwrap_or_default();
    let seccomp = seccomp_profile(security, &input.policy.unset_seccomp_profile);
    let apparmor = apparmor_profile(security, input.policy.apparmor_enabled)?;
    let container_pid_mode =
        security.and_then(|s| s.namespace_options.as_ref()).map_or(NamespaceMode::Pod as i32, |o| o.pid);
    if container_pid_mode == NamespaceMode::Target as i32 && input.target_pid == 0 {
        return Err(Error::precondition("TARGET pid namespace mode needs a running target container"));
    }
    let privileged = security.is_some_and(|s| s.privileged);
    let sandbox_privileged =
        input.sandbox_config.linux.as_ref().and_then(|l| l.security_context.as_ref()).is_some_and(|s| s.privileged);
    if privileged && !sandbox_privileged {
        // A privileged container would hold more than the pod it lives in, as containerd refuses.
        return Err(Error::invalid("no privileged container allowed in sandbox"));
    }
    let runtime = &input.policy.runtime;
    // As containerd: the CRI's own numbers (not names) when the config asks for it.
    let device_owner = input.policy.device_ownership_from_security_context.then(|| {
        let uid = security.and_then(|s| s.run_as_user.as_ref()).map_or(0, |u| u.value as u32);
        let gid = security.and_then(|s| s.run_as_group.as_ref()).map_or(0, |g| g.value as u32);
        (uid, gid)
    });
    let mut spec = WorkloadSpec {
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
        // PID namespace, CONTAINER gets its own, TARGET joins the target container's, POD the pod's.
        host_pid: container_pid_mode == NamespaceMode::Node as i32,
        own_pid_namespace: container_pid_mode == NamespaceMode::Container as i32,
        target_pid: if container_pid_mode == NamespaceMode::Target as i32 { input.target_pid } else { 0 },
        devices: device_requests(config)?,
        device_owner,
        // Privileged containers see the host's devices and may use any, unless the runtime
        // handler keeps them away (e.g. a VM-based runtime).
        host_devices: privileged && !runtime.privileged_without_host_devices,
        all_devices_allowed: privileged
            && (!runtime.privileged_without_host_devices
                || runtime.privileged_without_host_devices_all_devices_allowed),
        apparmor_profile: apparmor,
        host_network: host_network(input.sandbox_config),
        cgroup_parent: input.sandbox_config.linux.as_ref().map(|l| l.cgroup_parent.clone()).unwrap_or_default(),
        // Only a config with resources sets a score; without, the process keeps the shim's.
        oom_score_adj: linux
            .and_then(|l| l.resources.as_ref())
            .map(|_| clamp_oom_score_adj(requested_oom, input.own_oom_score_adj, input.restrict_oom_score_adj)),
        privileged,
        sysctls: input.sandbox_config.linux.as_ref().map(|l| sorted(&l.sysctls)).unwrap_or_default(),
        masked_paths: security.map(|s| s.masked_paths.clone()).unwrap_or_default(),
        readonly_paths: security.map(|s| s.readonly_paths.clone()).unwrap_or_default(),
        // RuntimeDefault is decided here, whole; a localhost profile is read by the backend.
        resolved_seccomp: (seccomp == "runtime/default")
            .then(|| crate::spec::seccomp::runtime_default_profile(&add_capabilities)),
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
            let mut passthrough = passthrough_annotations(&input.sandbox_config.annotations, &runtime.pod_annotations);
            passthrough.extend(passthrough_annotations(&config.annotations, &runtime.container_annotations));
            let mut a = cri_annotations(passthrough, input.sandbox_id, input.sandbox_config);
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
    };
    input.policy.apply_runtime(&mut spec);
    Ok(spec)
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

    /// A status reports the swap limit the runtime applies: the memory limit where swap is
    /// accounted and the CRI names none; else what the CRI says.
    #[test]
    fn swap_is_pinned_to_the_memory_limit_only_where_swap_is_accounted() {
        let limited = |memory: i64, swap: i64| LinuxContainerResources {
            memory_limit_in_bytes: memory,
            memory_swap_limit_in_bytes: swap,
            ..Default::default()
        };
        let swap_of = |r: LinuxContainerResources, accounted: bool| {
            resources_as_applied(Some(&r), accounted).memory_swap_limit_bytes
        };
        assert_eq!(swap_of(limited(64, 0), true), 64);
        assert_eq!(swap_of(limited(64, 0), false), 0);
        assert_eq!(swap_of(limited(64, 128), true), 128, "the CRI's own swap limit stays");
        assert_eq!(swap_of(limited(0, 0), true), 0, "no memory limit, no swap limit");
        assert_eq!(resources_as_applied(None, true), Resources::default());
    }

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
        container_spec_with(config, sandbox, image, &SpecPolicy::default()).unwrap()
    }

    fn container_spec_with(
        config: &ContainerConfig,
        sandbox: &PodSandboxConfig,
        image: &ImageConfig,
        policy: &SpecPolicy,
    ) -> Result<WorkloadSpec> {
        container_spec_targeting(config, sandbox, image, policy, 0)
    }

    /// As `container_spec_with`, with the pid of the TARGET pid mode's running container.
    fn container_spec_targeting(
        config: &ContainerConfig,
        sandbox: &PodSandboxConfig,
        image: &ImageConfig,
        policy: &SpecPolicy,
        target_pid: u32,
    ) -> Result<WorkloadSpec> {
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
            container_root_dir: "/root/containers/c1",
            target_pid,
            policy,
        })
    }

    fn sandbox_spec_with(sandbox: &PodSandboxConfig, policy: &SpecPolicy) -> WorkloadSpec {
        sandbox_spec(SandboxSpecInput {
            id: "s1",
            config: sandbox,
            image: &ImageConfig::default(),
            netns_path: String::new(),
            own_oom_score_adj: 0,
            restrict_oom_score_adj: false,
            root_dir: "/r",
            shm_path: None,
            policy,
        })
    }

    fn with_security(security: k8s_cri::v1::LinuxContainerSecurityContext) -> ContainerConfig {
        ContainerConfig {
            linux: Some(k8s_cri::v1::LinuxContainerConfig { security_context: Some(security), ..Default::default() }),
            ..Default::default()
        }
    }

    fn privileged_pod() -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(k8s_cri::v1::LinuxPodSandboxConfig {
                security_context: Some(k8s_cri::v1::LinuxSandboxSecurityContext {
                    privileged: true,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn privileged_containers_need_a_privileged_pod() {
        use k8s_cri::v1::LinuxContainerSecurityContext;
        let privileged = with_security(LinuxContainerSecurityContext { privileged: true, ..Default::default() });
        let image = ImageConfig::default();
        let error =
            container_spec_with(&privileged, &PodSandboxConfig::default(), &image, &SpecPolicy::default()).unwrap_err();
        assert_eq!(error.kind, crate::ErrorKind::InvalidArgument);
        assert!(
            container_spec_with(&privileged, &privileged_pod(), &image, &SpecPolicy::default()).unwrap().privileged
        );
    }

    fn host_network_pod() -> PodSandboxConfig {
        use k8s_cri::v1::{LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceOption};
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Annotations reach the runtime only when the handler lets them through, by name or by
    /// glob (`*` stopping at `/`), as containerd's pod_annotations and container_annotations.
    #[test]
    fn only_the_handlers_annotations_pass_through() {
        let sandbox = PodSandboxConfig {
            annotations: [("io.kata/vcpus", "2"), ("io.kata/sub/deep", "x"), ("team", "a")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let config = ContainerConfig {
            annotations: [("c.example/debug", "1"), ("other", "2")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        let none = test_container_spec(&config, &sandbox, &ImageConfig::default());
        assert!(!none.annotations.contains_key("team") && !none.annotations.contains_key("other"));
        let mut policy = SpecPolicy::default();
        policy.runtime.pod_annotations = vec!["io.kata/*".into()];
        policy.runtime.container_annotations = vec!["c.example/debug".into()];
        let spec = container_spec_with(&config, &sandbox, &ImageConfig::default(), &policy).unwrap();
        let passed: Vec<&str> =
            spec.annotations.keys().map(String::as_str).filter(|k| !k.starts_with("io.kubernetes.cri.")).collect();
        assert_eq!(passed, ["c.example/debug", "io.kata/vcpus"]);
        let pause = sandbox_spec_with(&sandbox, &policy);
        assert!(pause.annotations.contains_key("io.kata/vcpus") && !pause.annotations.contains_key("c.example/debug"));
    }

    #[test]
    fn unprivileged_ports_and_icmp_only_in_the_pods_own_network() {
        let policy =
            SpecPolicy { enable_unprivileged_ports: true, enable_unprivileged_icmp: true, ..Default::default() };
        let pod = sandbox_spec_with(&PodSandboxConfig::default(), &policy);
        assert_eq!(pod.sysctls["net.ipv4.ip_unprivileged_port_start"], "0");
        assert_eq!(pod.sysctls["net.ipv4.ping_group_range"], "0 2147483647");
        assert!(sandbox_spec_with(&host_network_pod(), &policy).sysctls.is_empty());
        let own = PodSandboxConfig {
            linux: Some(k8s_cri::v1::LinuxPodSandboxConfig {
                sysctls: [("net.ipv4.ip_unprivileged_port_start".to_string(), "80".to_string())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(sandbox_spec_with(&own, &policy).sysctls["net.ipv4.ip_unprivileged_port_start"], "80");
        assert!(sandbox_spec_with(&PodSandboxConfig::default(), &SpecPolicy::default()).sysctls.is_empty());
    }

    /// containerd's choices: the request's profile, else `unset_seccomp_profile`; privileged
    /// containers unconfined.
    #[test]
    fn seccomp_falls_back_to_the_unset_profile() {
        use k8s_cri::v1::{LinuxContainerSecurityContext, SecurityProfile, security_profile::ProfileType};
        let policy = SpecPolicy { unset_seccomp_profile: "runtime/default".into(), ..Default::default() };
        let sandbox = PodSandboxConfig::default();
        let image = ImageConfig::default();
        let profile = |config: &ContainerConfig, policy: &SpecPolicy| {
            container_spec_with(config, &sandbox, &image, policy).unwrap().seccomp_profile
        };
        assert_eq!(profile(&ContainerConfig::default(), &policy), "runtime/default");
        assert_eq!(profile(&ContainerConfig::default(), &SpecPolicy::default()), "");
        let unconfined = with_security(LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile { profile_type: ProfileType::Unconfined as i32, ..Default::default() }),
            ..Default::default()
        });
        assert_eq!(profile(&unconfined, &policy), "");
        let privileged = with_security(LinuxContainerSecurityContext { privileged: true, ..Default::default() });
        let pod = privileged_pod();
        assert_eq!(container_spec_with(&privileged, &pod, &image, &policy).unwrap().seccomp_profile, "");
    }

    /// Without AppArmor on the node, RuntimeDefault and unconfined are no-ops and a named
    /// profile is refused (never dropped).
    #[test]
    fn apparmor_follows_the_host() {
        use k8s_cri::v1::{LinuxContainerSecurityContext, SecurityProfile, security_profile::ProfileType};
        let named = LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: "my-profile".into(),
            }),
            ..Default::default()
        };
        let default = LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile { profile_type: ProfileType::RuntimeDefault as i32, ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(apparmor_profile(Some(&default), false).unwrap(), "");
        let error = apparmor_profile(Some(&named), false).unwrap_err();
        assert!(error.message.contains("apparmor is not supported"), "{error}");
        assert_eq!(apparmor_profile(Some(&named), true).unwrap(), "localhost/my-profile");
        assert_eq!(apparmor_profile(Some(&default), true).unwrap(), "runtime/default");
        let privileged = LinuxContainerSecurityContext { privileged: true, ..Default::default() };
        assert_eq!(apparmor_profile(Some(&privileged), true).unwrap(), "");
    }

    #[test]
    fn devices_are_checked_and_privileged_ones_follow_the_handler() {
        use k8s_cri::v1::{Device, LinuxContainerSecurityContext};
        let sandbox = PodSandboxConfig::default();
        let image = ImageConfig::default();
        let mut config = ContainerConfig {
            devices: vec![Device {
                host_path: "/dev/fuse".into(),
                container_path: String::new(),
                permissions: "".into(),
            }],
            ..Default::default()
        };
        let spec = test_container_spec(&config, &sandbox, &image);
        assert_eq!(
            spec.devices,
            [DeviceRequest {
                host_path: "/dev/fuse".into(),
                container_path: "/dev/fuse".into(),
                permissions: "rwm".into()
            }]
        );
        assert!(!spec.host_devices && !spec.all_devices_allowed);
        for (host, container, permissions) in
            [("dev/fuse", "/dev/fuse", "rw"), ("/dev/fuse", "/../etc/x", "rw"), ("/dev/fuse", "/dev/f", "rwx")]
        {
            config.devices[0] =
                Device { host_path: host.into(), container_path: container.into(), permissions: permissions.into() };
            let error = container_spec_with(&config, &sandbox, &image, &SpecPolicy::default()).unwrap_err();
            assert_eq!(error.kind, crate::ErrorKind::InvalidArgument, "{host} {container} {permissions}");
        }
        let privileged = with_security(LinuxContainerSecurityContext {
            privileged: true,
            run_as_user: Some(k8s_cri::v1::Int64Value { value: 1000 }),
            ..Default::default()
        });
        let sandbox = privileged_pod();
        let spec = test_container_spec(&privileged, &sandbox, &image);
        assert!(spec.host_devices && spec.all_devices_allowed && spec.device_owner.is_none());
        let mut policy = SpecPolicy { device_ownership_from_security_context: true, ..Default::default() };
        policy.runtime.privileged_without_host_devices = true;
        let spec = container_spec_with(&privileged, &sandbox, &image, &policy).unwrap();
        assert!(!spec.host_devices && !spec.all_devices_allowed);
        assert_eq!(spec.device_owner, Some((1000, 0)));
        policy.runtime.privileged_without_host_devices_all_devices_allowed = true;
        let spec = container_spec_with(&privileged, &sandbox, &image, &policy).unwrap();
        assert!(!spec.host_devices && spec.all_devices_allowed);
    }

    #[test]
    fn image_volumes_get_directories_of_the_container() {
        let image = ImageConfig { volumes: vec!["/data".into(), "/cache".into()], ..Default::default() };
        let config = ContainerConfig {
            mounts: vec![k8s_cri::v1::Mount {
                container_path: "/cache".into(),
                host_path: "/host/cache".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let spec = test_container_spec(&config, &PodSandboxConfig::default(), &image);
        let volumes: Vec<(&str, &str)> = spec
            .mounts
            .iter()
            .filter(|m| m.kind == "volume")
            .map(|m| (m.destination.as_str(), m.source.as_str()))
            .collect();
        assert_eq!(volumes, [("/data", "/root/containers/c1/volumes/0")]);
    }

    #[test]
    fn target_pid_mode_needs_a_running_target() {
        use k8s_cri::v1::{LinuxContainerSecurityContext, NamespaceOption};
        let config = with_security(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Target as i32,
                target_id: "c0".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let error =
            container_spec_with(&config, &PodSandboxConfig::default(), &ImageConfig::default(), &SpecPolicy::default())
                .unwrap_err();
        assert_eq!(error.kind, crate::ErrorKind::FailedPrecondition);
        let spec = container_spec_targeting(
            &config,
            &PodSandboxConfig::default(),
            &ImageConfig::default(),
            &SpecPolicy::default(),
            4242,
        )
        .unwrap();
        assert_eq!((spec.target_pid, spec.own_pid_namespace, spec.host_pid), (4242, false, false));
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
            policy: &SpecPolicy::default(),
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
            // Not passed through: the default handler lets no pod annotation reach the runtime.
            assert!(!spec.annotations.contains_key("team"));
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

    /// containerd's environment: default PATH, TERM for a terminal, HOSTNAME, the image's, then
    /// the CRI's, each taking the place of an earlier variable of its name.
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
        assert_eq!(spec.env, [DEFAULT_PATH_ENV, "HOSTNAME=pod-host", "A=cri", "B=2", "C=3"]);
        let image_path = ImageConfig { env: vec!["PATH=/bin".into()], ..Default::default() };
        let host_network = PodSandboxConfig::default();
        let spec = test_container_spec(&ContainerConfig::default(), &host_network, &image_path);
        assert_eq!(spec.env, ["PATH=/bin", "HOSTNAME=node-1"]);
        let terminal = ContainerConfig { tty: true, ..Default::default() };
        let spec = test_container_spec(&terminal, &named, &ImageConfig::default());
        assert_eq!(spec.env, [DEFAULT_PATH_ENV, "TERM=xterm", "HOSTNAME=pod-host"]);
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

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn log_paths_stay_below_the_pod_log_directory() {
        assert_eq!(log_file_path("/logs/p", "c/0.log").unwrap(), "/logs/p/c/0.log");
        assert_eq!(log_file_path("/logs/p/", "./c//0.log").unwrap(), "/logs/p/c/0.log");
        assert_eq!(log_file_path("/logs/p", "c/../d.log").unwrap(), "/logs/p/d.log");
        assert_eq!(log_file_path("", "c/0.log").unwrap(), "");
        assert_eq!(log_file_path("/logs/p", "").unwrap(), "");
        for bad in ["../../../../tmp/escape.log", "/tmp/x.log", "c/../../x", ".", "c/.."] {
            let error = log_file_path("/logs/p", bad).unwrap_err();
            assert_eq!(error.kind, crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn mount_destinations_are_absolute_clean_and_not_the_root() {
        assert_eq!(mount_destination("/data/../cache//x/").unwrap(), "/cache/x");
        assert_eq!(mount_destination("/../../etc").unwrap(), "/etc");
        for bad in ["../../", "data", "", "/", "/a/..", "/../.."] {
            assert_eq!(mount_destination(bad).unwrap_err().kind, crate::ErrorKind::InvalidArgument, "{bad:?}");
        }
        let long = format!("{}x", "a/".repeat(5000));
        let message = mount_destination(&long).unwrap_err().message;
        assert!(message.len() < 400, "the message quotes a bounded prefix: {} bytes", message.len());
    }
}
