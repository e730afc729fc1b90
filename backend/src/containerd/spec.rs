//! Turns the core's `WorkloadSpec` into an OCI runtime spec (runc's config.json).
//!
//! The spec is derived, never edited: the container record keeps the `WorkloadSpec` itself (in an
//! extension) and the OCI spec is regenerated from it whenever the record is written.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crid::error::{Error, Result};
use crid::ports::{MountSpec, Resources, WorkloadSpec};
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilities, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResources, LinuxResourcesBuilder, LinuxSeccomp, Mount,
    MountBuilder, Process, Root, Spec, User,
};

/// type_url containerd itself uses for runtime specs in container records.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
pub const RESOURCES_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// The capabilities a non-privileged container gets, as in containerd and Docker.
const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

fn oci_err(e: oci_spec::OciSpecError) -> Error {
    Error::invalid(format!("oci spec: {e}"))
}

fn parse_capability(name: &str) -> Result<Capability> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    serde_json::from_value(serde_json::Value::String(full.clone()))
        .map_err(|_| Error::invalid(format!("unknown capability {name:?}")))
}

/// The effective capability set: defaults (or all, for a privileged container), plus adds,
/// minus drops.
/// "ALL" means every capability crid itself holds, as in containerd (its current set): a
/// capability the daemon lacks cannot be granted, and asking runc for it fails the container.
/// As in containerd, an "ALL" in either list applies first (add, then drop) and the named
/// capabilities after it, so that `drop: [ALL], add: [NET_BIND_SERVICE]` (Kubernetes'
/// restricted profile) keeps the one it names and `add: [ALL], drop: [CHOWN]` loses it.
pub fn capability_set(workload: &WorkloadSpec) -> Result<Capabilities> {
    let all = || -> Result<HashSet<Capability>> {
        // Names this oci-spec does not know (a newer kernel's) are left out, not fatal.
        Ok(crate::os::current_capabilities().iter().filter_map(|c| parse_capability(c).ok()).collect())
    };
    // A privileged pod's pause process keeps the default set, as containerd gives it.
    let mut caps: HashSet<Capability> = if workload.privileged && !workload.sandbox {
        all()?
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| parse_capability(c)).collect::<Result<_>>()?
    };
    let is_all = |name: &String| name.eq_ignore_ascii_case("ALL");
    if workload.add_capabilities.iter().any(is_all) {
        caps = all()?;
    }
    if workload.drop_capabilities.iter().any(is_all) {
        caps.clear();
    }
    for add in workload.add_capabilities.iter().filter(|c| !is_all(c)) {
        caps.insert(parse_capability(add)?);
    }
    for drop in workload.drop_capabilities.iter().filter(|c| !is_all(c)) {
        caps.remove(&parse_capability(drop)?);
    }
    Ok(caps)
}

fn user(workload: &WorkloadSpec) -> Result<User> {
    if let Some(resolved) = &workload.resolved_user {
        let mut user = User::default();
        user.set_uid(resolved.uid);
        user.set_gid(resolved.gid);
        if !resolved.additional_gids.is_empty() {
            user.set_additional_gids(Some(resolved.additional_gids.clone()));
        }
        return Ok(user);
    }
    // A spec without resolved ids (a record of an older crid): the CRI's numeric uid or root.
    let uid = match (workload.run_as_user, workload.run_as_username.as_str()) {
        (Some(uid), _) => u32::try_from(uid).map_err(|_| Error::invalid(format!("invalid uid {uid}")))?,
        (None, "" | "root") => 0,
        (None, name) => match name.split(':').next().unwrap_or_default().parse::<u32>() {
            Ok(uid) => uid,
            // Resolving names needs the image's /etc/passwd, which this backend does not read yet.
            Err(_) => return Err(Error::invalid(format!("user name {name:?} cannot be resolved; use a numeric uid"))),
        },
    };
    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(0);
    Ok(user)
}

pub fn process(workload: &WorkloadSpec) -> Result<Process> {
    if workload.args.is_empty() {
        return Err(Error::invalid("no command specified"));
    }
    let mut process = Process::default();
    process.set_args(Some(workload.args.clone()));
    process.set_env(Some(workload.env.clone()));
    process.set_cwd(PathBuf::from(if workload.working_dir.is_empty() { "/" } else { &workload.working_dir }));
    process.set_terminal(Some(workload.tty));
    process.set_user(user(workload)?);
    let caps = capability_set(workload)?;
    let mut capabilities = LinuxCapabilities::default();
    capabilities.set_bounding(Some(caps.clone()));
    capabilities.set_effective(Some(caps.clone()));
    capabilities.set_permitted(Some(caps));
    capabilities.set_inheritable(Some(Capabilities::new()));
    capabilities.set_ambient(Some(Capabilities::new()));
    process.set_capabilities(Some(capabilities));
    process.set_no_new_privileges(Some(workload.no_new_privs));
    match workload.apparmor_profile.as_str() {
        "" => {}
        // A profile of our own would have to be generated and loaded into the kernel first.
        "runtime/default" => {
            return Err(Error::precondition(
                "AppArmor RuntimeDefault is not supported by crid on an AppArmor host; set `disable_apparmor = true` or use a localhost profile",
            ));
        }
        profile => {
            process.set_apparmor_profile(Some(profile.trim_start_matches("localhost/").to_string()));
        }
    }
    // The core already clamped this to what this process may set (restrict_oom_score_adj).
    process.set_oom_score_adj(workload.oom_score_adj);
    // No limits of the spec's own: the process inherits the shim's, i.e. containerd's (a
    // service's LimitNOFILE), as containerd's CRI removes its default spec's RLIMIT_NOFILE
    // 1024, which would leave a database or a proxy short of descriptors.
    process.set_rlimits(None);
    Ok(process)
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(destination)
        .typ(kind)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(oci_err)
}

fn base_mounts(workload: &WorkloadSpec) -> Result<Vec<Mount>> {
    // A privileged container gets /sys and its cgroups writable, as containerd's privileged
    // option makes them; the pause container of a privileged pod does not.
    let writable = workload.privileged && !workload.sandbox;
    let sys_options: &[&str] =
        if writable { &["nosuid", "noexec", "nodev"] } else { &["nosuid", "noexec", "nodev", "ro"] };
    let cgroup_options: &[&str] = if writable {
        &["nosuid", "noexec", "nodev", "relatime"]
    } else {
        &["nosuid", "noexec", "nodev", "relatime", "ro"]
    };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", sys_options)?,
        mount("/sys/fs/cgroup", "cgroup", "cgroup", cgroup_options)?,
    ])
}

fn user_mount(spec: &MountSpec) -> Result<Mount> {
    if spec.kind == "volume" && !spec.source.is_empty() {
        // An image volume: the directory of its own that the backend filled from the image.
        let options: Vec<&str> = spec.options.iter().map(String::as_str).collect();
        return mount(&spec.destination, "bind", &spec.source, &options);
    }
    if spec.kind == "volume" {
        // An image volume of a record written before volumes had directories of their own: a
        // private tmpfs stands in, as it did then.
        return mount(&spec.destination, "tmpfs", "tmpfs", &["nosuid", "nodev", "mode=755"]);
    }
    let kind = if spec.kind.is_empty() { "bind" } else { spec.kind.as_str() };
    let mut options: Vec<String> = spec.options.clone();
    if kind == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
        options.insert(0, "rbind".to_string());
    }
    if kind == "bind"
        && !options.iter().any(|o| o.ends_with("private") || o.ends_with("shared") || o.ends_with("slave"))
    {
        options.push("rprivate".to_string());
    }
    MountBuilder::default()
        .destination(spec.destination.as_str())
        .typ(kind)
        .source(spec.source.as_str())
        .options(options)
        .build()
        .map_err(oci_err)
}

/// Base mounts first, then the CRI's; a CRI mount replaces a base mount of the same destination
/// (e.g. the sandbox's /dev/shm).
fn mounts(workload: &WorkloadSpec) -> Result<Vec<Mount>> {
    // The pause container's mounts go over the base ones, as containerd adds them; it has no
    // cgroup filesystem.
    let overridden: HashSet<&str> = if workload.sandbox {
        HashSet::new()
    } else {
        workload.mounts.iter().map(|m| m.destination.as_str()).collect()
    };
    let mut mounts: Vec<Mount> = base_mounts(workload)?
        .into_iter()
        .filter(|m| !overridden.contains(m.destination().to_string_lossy().as_ref()))
        .filter(|m| !(workload.sandbox && m.destination() == Path::new("/sys/fs/cgroup")))
        .collect();
    for spec in &workload.mounts {
        mounts.push(user_mount(spec)?);
    }
    Ok(mounts)
}

fn namespace(kind: LinuxNamespaceType, path: Option<String>) -> Result<LinuxNamespace> {
    let builder = LinuxNamespaceBuilder::default().typ(kind);
    let builder = match path {
        Some(path) => builder.path(path),
        None => builder,
    };
    builder.build().map_err(oci_err)
}

/// Sandbox: fresh pid/ipc/uts/mount namespaces and the pinned netns. Container: joins the
/// sandbox task's network, ipc, uts and pid namespaces through /proc/<pid>/ns.
fn namespaces(workload: &WorkloadSpec) -> Result<Vec<LinuxNamespace>> {
    let join = |ns: &str| -> Option<String> {
        (!workload.sandbox && workload.sandbox_pid > 0).then(|| format!("/proc/{}/ns/{ns}", workload.sandbox_pid))
    };
    let mut out = vec![namespace(LinuxNamespaceType::Mount, None)?];
    if !workload.host_network {
        let path = if workload.sandbox {
            (!workload.netns_path.is_empty()).then(|| workload.netns_path.clone())
        } else {
            join("net").or_else(|| (!workload.netns_path.is_empty()).then(|| workload.netns_path.clone()))
        };
        out.push(namespace(LinuxNamespaceType::Network, path)?);
    }
    if !workload.host_ipc {
        out.push(namespace(LinuxNamespaceType::Ipc, join("ipc"))?);
    }
    // A host-network pod has the node's UTS namespace too, as in containerd.
    if !workload.host_network {
        out.push(namespace(LinuxNamespaceType::Uts, join("uts"))?);
    }
    if !workload.host_pid {
        let path = if workload.own_pid_namespace {
            None
        } else if workload.target_pid > 0 {
            Some(format!("/proc/{}/ns/pid", workload.target_pid))
        } else {
            join("pid")
        };
        out.push(namespace(LinuxNamespaceType::Pid, path)?);
    }
    Ok(out)
}

/// Reads a localhost seccomp profile (docker's JSON format, which the OCI spec shares) and
/// checks that it parses; the JSON is kept with the workload.
pub async fn read_seccomp_profile(path: &str) -> Result<String> {
    if !path.starts_with('/') {
        return Err(Error::invalid(format!("seccomp profile {path:?} must be an absolute path")));
    }
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| Error::invalid(format!("seccomp profile {path:?} cannot be read: {e}")))?;
    parse_seccomp(&text).map_err(|e| e.context(format!("seccomp profile {path:?}")))?;
    Ok(text)
}

fn parse_seccomp(json: &str) -> Result<LinuxSeccomp> {
    serde_json::from_str(json).map_err(|e| Error::invalid(format!("not a seccomp profile: {e}")))
}

/// The resources runc applies (and task Update changes), for this host's cgroups.
pub fn linux_resources(resources: &Resources) -> Result<LinuxResources> {
    linux_resources_for(resources, crate::os::CgroupSupport::host())
}

/// The resources runc applies on a host whose cgroups support `host`, as containerd writes them:
/// swap pinned to the memory limit unless asked for (no swapping by default) where swap is
/// accounted, hugepage limits where the hugetlb controller is (skipped, with a warning,
/// elsewhere), the unified map as given.
pub fn linux_resources_for(resources: &Resources, host: crate::os::CgroupSupport) -> Result<LinuxResources> {
    let mut cpu = LinuxCpuBuilder::default();
    if resources.cpu_shares > 0 {
        cpu = cpu.shares(resources.cpu_shares as u64);
    }
    if resources.cpu_quota > 0 {
        cpu = cpu.quota(resources.cpu_quota);
    }
    if resources.cpu_period > 0 {
        cpu = cpu.period(resources.cpu_period as u64);
    }
    if !resources.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(resources.cpuset_cpus.clone());
    }
    if !resources.cpuset_mems.is_empty() {
        cpu = cpu.mems(resources.cpuset_mems.clone());
    }
    let mut memory = LinuxMemoryBuilder::default();
    if resources.memory_limit_bytes > 0 {
        memory = memory.limit(resources.memory_limit_bytes);
    }
    let swap = match resources.memory_swap_limit_bytes {
        0 if resources.memory_limit_bytes > 0 => resources.memory_limit_bytes,
        asked => asked,
    };
    if swap != 0 && host.swap {
        memory = memory.swap(swap);
    }
    let mut linux =
        LinuxResourcesBuilder::default().cpu(cpu.build().map_err(oci_err)?).memory(memory.build().map_err(oci_err)?);
    if !resources.hugepage_limits.is_empty() {
        if host.hugetlb {
            let limits = resources
                .hugepage_limits
                .iter()
                .map(|h| {
                    let limit = i64::try_from(h.limit).map_err(|_| {
                        Error::invalid(format!("hugepage limit {} for {:?} is out of range", h.limit, h.page_size))
                    })?;
                    oci_spec::runtime::LinuxHugepageLimitBuilder::default()
                        .page_size(h.page_size.clone())
                        .limit(limit)
                        .build()
                        .map_err(oci_err)
                })
                .collect::<Result<Vec<_>>>()?;
            linux = linux.hugepage_limits(limits);
        } else {
            tracing::warn!("hugetlb cgroup controller is absent: skipping huge pages limits");
        }
    }
    if !resources.unified.is_empty() {
        linux = linux.unified(resources.unified.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>());
    }
    linux.build().map_err(oci_err)
}

#[cfg(test)]
mod resources_tests {
    use crid::ports::HugepageLimit;

    use super::*;
    use crate::os::CgroupSupport;

    const EVERYTHING: CgroupSupport = CgroupSupport { swap: true, hugetlb: true };
    const NOTHING: CgroupSupport = CgroupSupport { swap: false, hugetlb: false };

    fn limited(memory: i64, swap: i64) -> Resources {
        Resources { memory_limit_bytes: memory, memory_swap_limit_bytes: swap, ..Default::default() }
    }

    fn swap_of(resources: &Resources, host: CgroupSupport) -> Option<i64> {
        linux_resources_for(resources, host).unwrap().memory().as_ref().and_then(|m| m.swap())
    }

    #[test]
    fn swap_is_pinned_to_the_memory_limit_where_swap_is_accounted() {
        assert_eq!(swap_of(&limited(256 << 20, 0), EVERYTHING), Some(268_435_456), "no swapping by default");
        assert_eq!(swap_of(&limited(256 << 20, 512 << 20), EVERYTHING), Some(536_870_912), "as asked");
        assert_eq!(swap_of(&limited(0, 512 << 20), EVERYTHING), Some(536_870_912));
        assert_eq!(swap_of(&limited(0, 0), EVERYTHING), None, "no limit, no swap limit");
        assert_eq!(swap_of(&limited(256 << 20, 0), NOTHING), None, "runc could not write it");
        assert_eq!(swap_of(&limited(256 << 20, 512 << 20), NOTHING), None);
    }

    #[test]
    fn hugepages_and_unified_reach_the_spec() {
        let resources = Resources {
            hugepage_limits: vec![
                HugepageLimit { page_size: "2MB".into(), limit: 4 << 20 },
                HugepageLimit { page_size: "1GB".into(), limit: 1 << 30 },
            ],
            unified: [("memory.high".to_string(), "200000000".to_string())].into(),
            ..Default::default()
        };
        let linux = linux_resources_for(&resources, EVERYTHING).unwrap();
        let json = serde_json::to_value(&linux).unwrap();
        assert_eq!(
            json["hugepageLimits"],
            serde_json::json!([{"pageSize": "2MB", "limit": 4_194_304}, {"pageSize": "1GB", "limit": 1_073_741_824}])
        );
        assert_eq!(json["unified"], serde_json::json!({"memory.high": "200000000"}));

        let without_hugetlb = serde_json::to_value(linux_resources_for(&resources, NOTHING).unwrap()).unwrap();
        assert!(without_hugetlb.get("hugepageLimits").is_none(), "{without_hugetlb}");
        assert_eq!(without_hugetlb["unified"], json["unified"], "unified is written as given");
        let plain = serde_json::to_value(linux_resources_for(&Resources::default(), EVERYTHING).unwrap()).unwrap();
        assert!(plain.get("hugepageLimits").is_none() && plain.get("unified").is_none(), "{plain}");

        let huge = Resources {
            hugepage_limits: vec![HugepageLimit { page_size: "2MB".into(), limit: u64::MAX }],
            ..Default::default()
        };
        let error = linux_resources_for(&huge, EVERYTHING).unwrap_err();
        assert_eq!(error.kind, crid::ErrorKind::InvalidArgument);
        assert!(error.message.contains("out of range"), "{error}");
    }
}

/// The cgroup path runc creates. cgroupfs: `<cgroup_parent>/<id>`, or under `/crid` without a
/// parent. systemd: `<parent slice>:<prefix>:<id>`, the form runc's systemd driver reads, with
/// containerd's prefix so that tools that know containerd's units recognise ours.
fn cgroups_path(id: &str, workload: &WorkloadSpec) -> Result<String> {
    if workload.runc_options.systemd_cgroup {
        let slice = crate::cgroup::parent_slice(&workload.cgroup_parent);
        let slice = if slice.is_empty() { "system.slice" } else { slice };
        if !slice.ends_with(".slice") {
            return Err(Error::invalid(format!(
                "cgroup parent {:?} is not a systemd slice (the runtime handler uses SystemdCgroup)",
                workload.cgroup_parent
            )));
        }
        return Ok(format!("{slice}:cri-containerd:{id}"));
    }
    Ok(cgroupfs_path(id, workload))
}

fn cgroupfs_path(id: &str, workload: &WorkloadSpec) -> String {
    let parent = if workload.cgroup_parent.is_empty() { "/crid" } else { workload.cgroup_parent.trim_end_matches('/') };
    let parent = if parent.starts_with('/') { parent.to_string() } else { format!("/{parent}") };
    format!("{parent}/{id}")
}

pub fn build(id: &str, workload: &WorkloadSpec) -> Result<Spec> {
    let mut spec = Spec::default();
    spec.set_process(Some(process(workload)?));
    let mut root = Root::default();
    root.set_path(PathBuf::from("rootfs"));
    root.set_readonly(Some(workload.readonly_rootfs));
    spec.set_root(Some(root));
    // Only a UTS namespace of the pod's own can take a hostname.
    spec.set_hostname((!workload.hostname.is_empty() && !workload.host_network).then(|| workload.hostname.clone()));
    spec.set_mounts(Some(mounts(workload)?));
    let annotations: HashMap<String, String> = workload.annotations.clone().into_iter().collect();
    spec.set_annotations(Some(annotations));

    let mut resources = linux_resources(&workload.resources)?;
    // Deny all devices by default (runc still creates and allows its standard set: null,
    // zero…), or allow all (privileged); then allow each device the container was given.
    let mut rules = vec![
        oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
            .allow(workload.all_devices_allowed || (workload.privileged && workload.resolved_devices.is_none()))
            .access("rwm")
            .build()
            .map_err(oci_err)?,
    ];
    let devices = workload.resolved_devices.clone().unwrap_or_default();
    for device in &devices {
        rules.push(
            oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(device_type(device.kind)?)
                .major(device.major)
                .minor(device.minor)
                .access(device.permissions.clone())
                .build()
                .map_err(oci_err)?,
        );
    }
    resources.set_devices(Some(rules));
    let mut linux = LinuxBuilder::default().namespaces(namespaces(workload)?);
    if !workload.cgroups_disabled {
        linux = linux.resources(resources).cgroups_path(cgroups_path(id, workload)?);
    }
    if !devices.is_empty() {
        let nodes = devices
            .iter()
            .map(|device| {
                oci_spec::runtime::LinuxDeviceBuilder::default()
                    .path(device.container_path.clone())
                    .typ(device_type(device.kind)?)
                    .major(device.major)
                    .minor(device.minor)
                    .file_mode(device.file_mode)
                    .uid(device.uid)
                    .gid(device.gid)
                    .build()
                    .map_err(oci_err)
            })
            .collect::<Result<Vec<_>>>()?;
        linux = linux.devices(nodes);
    }
    if let Some(profile) = &workload.resolved_seccomp {
        linux = linux.seccomp(parse_seccomp(profile)?);
    }
    if !workload.sysctls.is_empty() {
        linux = linux.sysctl(workload.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>());
    }
    // A mount that receives (rslave) or also sends (rshared) propagation needs a rootfs that
    // does too, as containerd sets it; otherwise runc's default (rprivate) cuts it off.
    let has = |option: &str| workload.mounts.iter().any(|m| m.options.iter().any(|o| o == option));
    if has("rshared") {
        linux = linux.rootfs_propagation("rshared");
    } else if has("rslave") {
        linux = linux.rootfs_propagation("rslave");
    }
    // A container gets only what the CRI asks for, and nothing when privileged, as containerd
    // clears its default spec's lists for it; the pause container keeps those defaults.
    let (masked, readonly) = if workload.sandbox {
        let default = oci_spec::runtime::Linux::default();
        (default.masked_paths().clone().unwrap_or_default(), default.readonly_paths().clone().unwrap_or_default())
    } else if workload.privileged {
        (Vec::new(), Vec::new())
    } else {
        (workload.masked_paths.clone(), workload.readonly_paths.clone())
    };
    linux = linux.masked_paths(masked).readonly_paths(readonly);
    let mut linux = linux.build().map_err(oci_err)?;
    if workload.cgroups_disabled {
        // The builder's defaults hold an empty resources section; runc would still create a
        // cgroup for it.
        linux.set_resources(None);
        linux.set_cgroups_path(None);
    }
    spec.set_linux(Some(linux));
    Ok(spec)
}

fn device_type(kind: char) -> Result<oci_spec::runtime::LinuxDeviceType> {
    match kind {
        'c' => Ok(oci_spec::runtime::LinuxDeviceType::C),
        'b' => Ok(oci_spec::runtime::LinuxDeviceType::B),
        other => Err(Error::invalid(format!("unknown device type {other:?}"))),
    }
}

pub fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::internal(format!("encode oci spec: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crid::ports::ResolvedDevice;

    fn container() -> WorkloadSpec {
        WorkloadSpec {
            args: vec!["sh".into()],
            sandbox_pid: 42,
            netns_path: "/run/netns/x".into(),
            oom_score_adj: Some(5),
            drop_capabilities: vec!["NET_RAW".into()],
            mounts: vec![MountSpec {
                destination: "/etc/hosts".into(),
                source: "/s/hosts".into(),
                kind: String::new(),
                options: vec!["ro".into()],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn container_joins_sandbox_namespaces() {
        let spec = build("c1", &container()).unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        let nss = json["linux"]["namespaces"].as_array().unwrap();
        assert!(nss.iter().any(|n| n["type"] == "network" && n["path"] == "/proc/42/ns/net"));
        assert!(nss.iter().any(|n| n["type"] == "ipc" && n["path"] == "/proc/42/ns/ipc"));
        assert_eq!(json["linux"]["cgroupsPath"], "/crid/c1");
        assert_eq!(json["process"]["oomScoreAdj"], 5);
        let caps = json["process"]["capabilities"]["effective"].as_array().unwrap();
        assert!(!caps.iter().any(|c| c == "CAP_NET_RAW"));
        assert!(caps.iter().any(|c| c == "CAP_CHOWN"));
        let hosts = json["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/etc/hosts").unwrap();
        assert_eq!(hosts["options"], serde_json::json!(["rbind", "ro", "rprivate"]));
    }

    /// "ALL" in either list applies before the named capabilities, whatever the lists' order,
    /// as in containerd: Kubernetes' restricted profile drops ALL and adds NET_BIND_SERVICE.
    #[test]
    fn named_capabilities_apply_after_all() {
        let set = |add: &[&str], drop: &[&str]| -> std::collections::BTreeSet<String> {
            let workload = WorkloadSpec {
                add_capabilities: add.iter().map(|c| c.to_string()).collect(),
                drop_capabilities: drop.iter().map(|c| c.to_string()).collect(),
                ..container()
            };
            let json = serde_json::to_value(build("c1", &workload).unwrap()).unwrap();
            json["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect()
        };
        let only = |c: &str| std::collections::BTreeSet::from([c.to_string()]);
        assert_eq!(set(&["NET_BIND_SERVICE"], &["ALL"]), only("CAP_NET_BIND_SERVICE"));
        assert_eq!(set(&["net_raw"], &["all"]), only("CAP_NET_RAW"));
        assert!(set(&[], &["ALL"]).is_empty());
        let all_but_chown = set(&["ALL"], &["CHOWN"]);
        assert!(!all_but_chown.contains("CAP_CHOWN"));
        // Dropping ALL wins over adding ALL; the named add still applies after both.
        assert_eq!(set(&["ALL", "KILL"], &["ALL"]), only("CAP_KILL"));
    }

    /// Privileged and "ALL" mean what the daemon holds, never a fixed list: runc refuses to
    /// grant a capability its caller lacks.
    #[test]
    fn all_capabilities_are_the_daemons_own() {
        let held: std::collections::BTreeSet<String> = crate::os::current_capabilities().into_iter().collect();
        for workload in [
            WorkloadSpec { privileged: true, drop_capabilities: vec![], ..container() },
            WorkloadSpec { add_capabilities: vec!["ALL".into()], drop_capabilities: vec![], ..container() },
        ] {
            let json = serde_json::to_value(build("c1", &workload).unwrap()).unwrap();
            let granted: std::collections::BTreeSet<String> = json["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_string())
                .collect();
            assert_eq!(granted, held);
        }
    }

    #[test]
    fn devices_become_nodes_and_cgroup_rules() {
        let null = ResolvedDevice {
            container_path: "/dev/x".into(),
            kind: 'c',
            major: 1,
            minor: 3,
            file_mode: 0o666,
            uid: 7,
            gid: 8,
            permissions: "rw".into(),
        };
        let workload = WorkloadSpec { resolved_devices: Some(vec![null]), ..container() };
        let json = serde_json::to_value(build("c1", &workload).unwrap()).unwrap();
        let node = &json["linux"]["devices"][0];
        assert_eq!(
            (&node["path"], &node["type"], &node["major"], &node["minor"], &node["uid"], &node["gid"]),
            (&"/dev/x".into(), &"c".into(), &1.into(), &3.into(), &7.into(), &8.into())
        );
        let rules = json["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules[0]["allow"], false, "everything else stays denied");
        assert_eq!(
            (&rules[1]["allow"], &rules[1]["access"], &rules[1]["major"]),
            (&true.into(), &"rw".into(), &1.into())
        );
        let all = WorkloadSpec { all_devices_allowed: true, resolved_devices: Some(vec![]), ..container() };
        let json = serde_json::to_value(build("c1", &all).unwrap()).unwrap();
        assert_eq!(json["linux"]["resources"]["devices"][0]["allow"], true);
    }

    #[test]
    fn cgroup_paths_follow_the_driver_and_can_be_disabled() {
        let mut workload = container();
        workload.cgroup_parent = "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice".into();
        workload.runc_options.systemd_cgroup = true;
        let json = serde_json::to_value(build("c1", &workload).unwrap()).unwrap();
        assert_eq!(json["linux"]["cgroupsPath"], "kubepods-besteffort-pod1.slice:cri-containerd:c1");
        workload.cgroup_parent = "/kubepods/besteffort".into();
        let error = build("c1", &workload).unwrap_err();
        assert!(error.message.contains("not a systemd slice"), "{error}");
        let disabled = WorkloadSpec { cgroups_disabled: true, ..container() };
        let json = serde_json::to_value(build("c1", &disabled).unwrap()).unwrap();
        assert!(json["linux"].get("cgroupsPath").is_none() && json["linux"].get("resources").is_none(), "{json}");
    }

    #[test]
    fn host_network_pods_keep_the_nodes_uts_namespace() {
        let workload = WorkloadSpec { host_network: true, sandbox: true, hostname: "node-1".into(), ..container() };
        let json = serde_json::to_value(build("s1", &workload).unwrap()).unwrap();
        let nss = json["linux"]["namespaces"].as_array().unwrap();
        assert!(!nss.iter().any(|n| n["type"] == "uts" || n["type"] == "network"), "{nss:?}");
        assert!(json.get("hostname").is_none());
        let own = serde_json::to_value(build("s1", &WorkloadSpec { hostname: "pod".into(), ..container() }).unwrap())
            .unwrap();
        assert_eq!(own["hostname"], "pod");
    }

    #[test]
    fn target_pid_mode_joins_the_targets_namespace() {
        let workload = WorkloadSpec { target_pid: 77, ..container() };
        let json = serde_json::to_value(build("c1", &workload).unwrap()).unwrap();
        let nss = json["linux"]["namespaces"].as_array().unwrap();
        assert!(nss.iter().any(|n| n["type"] == "pid" && n["path"] == "/proc/77/ns/pid"), "{nss:?}");
    }

    #[test]
    fn runc_options_reach_the_shim_only_when_set() {
        assert!(super::super::convert::runc_options(&container()).is_none());
        let mut workload = container();
        workload.runc_options.binary_name = "/usr/local/sbin/runc".into();
        workload.runc_options.systemd_cgroup = true;
        let any = super::super::convert::runc_options(&workload).unwrap();
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        let decoded: super::super::convert::RuncOptionsProto = prost::Message::decode(any.value.as_slice()).unwrap();
        assert_eq!((decoded.binary_name.as_str(), decoded.systemd_cgroup), ("/usr/local/sbin/runc", true));
    }

    #[test]
    fn no_new_privileges_only_when_asked() {
        let json = serde_json::to_value(build("c1", &container()).unwrap()).unwrap();
        assert_eq!(json["process"]["noNewPrivileges"], false);
        let asked = WorkloadSpec { no_new_privs: true, ..container() };
        let json = serde_json::to_value(build("c1", &asked).unwrap()).unwrap();
        assert_eq!(json["process"]["noNewPrivileges"], true);
    }

    #[test]
    fn sandbox_uses_its_netns_path() {
        let mut w = container();
        w.sandbox = true;
        w.sandbox_pid = 0;
        let json = serde_json::to_value(build("s1", &w).unwrap()).unwrap();
        let nss = json["linux"]["namespaces"].as_array().unwrap();
        assert!(nss.iter().any(|n| n["type"] == "network" && n["path"] == "/run/netns/x"));
        assert!(nss.iter().any(|n| n["type"] == "pid" && n.get("path").is_none()));
    }
}
