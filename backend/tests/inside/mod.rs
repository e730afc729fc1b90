//! A look from inside real containers, on crid and on containerd's own CRI side by side: the
//! same pod and container configs run on both runtimes, a probe inside each prints what the
//! container got (identity, capabilities, seccomp, environment, limits, mounts, devices,
//! cgroup limits, DNS and hosts files, namespaces), and the two outputs must agree.
//!
//! The other inside tests assert what one field should be; this one asks for no expectation,
//! so it also finds the differences nobody thought to assert. The few that are known to be the
//! reference's version and not crid's (the stack's containerd is 1.6, crid follows 1.7) are
//! listed in [`ACCEPTED`] with the reason, and only for the section and case they concern.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_cri::v1::*;

use crate::common::{Cri, Kind, crid_binary, stack, unique};

/// The probe, run with ExecSync in the container (and, for the pause process, which has no
/// shell, `pause_seen_from_the_host`). Each section starts with `== name`. It looks
/// at PID 1 (the container's own process: every case but the host one has a PID namespace of
/// its own, as kubelet asks by default) and at the exec'd process itself.
const PROBE: &str = r#"
fields='^(Uid|Gid|Groups|Umask|Cap[A-Za-z]+|NoNewPrivs|Seccomp|Seccomp_filters):'
echo '== init status'; grep -E "$fields" /proc/1/status
echo '== exec status'; grep -E "$fields" /proc/self/status
echo '== id'; id
echo '== init args'; busybox tr '\0' ' ' </proc/1/cmdline; echo
echo '== init env'; busybox tr '\0' '\n' </proc/1/environ | busybox sort
echo '== exec env'; env | busybox sort
echo '== cwd'; busybox readlink /proc/1/cwd; busybox pwd
echo '== limits'; cat /proc/1/limits
echo '== oom_score_adj'; cat /proc/1/oom_score_adj
echo '== hostname'; hostname; cat /etc/hostname
echo '== resolv.conf'; cat /etc/resolv.conf
echo '== hosts'; cat /etc/hosts
echo '== mounts'; cat /proc/self/mountinfo
echo '== devices'; busybox find /dev -xdev -exec busybox stat -c '%n %F %a %u:%g %t:%T' {} +
echo '== cgroup'; cat /proc/1/cgroup
echo '== cgroup limits'
for f in devices/devices.list memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes memory/memory.swappiness \
    memory/memory.kmem.limit_in_bytes cpu/cpu.shares cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us \
    pids/pids.max cpuset/cpuset.cpus cpuset/cpuset.mems blkio/blkio.weight; do
    echo "$f: $(cat /sys/fs/cgroup/$f 2>&1)"
done
echo '== sysctls'
for s in net/ipv4/ip_unprivileged_port_start net/ipv4/ping_group_range kernel/shm_rmid_forced; do
    echo "$s: $(cat /proc/sys/$s 2>&1)"
done
echo '== namespaces'; for n in cgroup ipc mnt net pid uts; do echo "$n $(busybox readlink /proc/1/ns/$n)"; done
echo '== links'; busybox ip -o link | busybox awk '{print $2, $3}'
echo '== loopback'; busybox ip -o addr show dev lo | busybox awk '{print $3, $4}'
echo '== rootfs'; if touch /.probe 2>/dev/null; then echo writable; busybox rm /.probe; else echo read-only; fi
echo '== sys'; if touch /sys/fs/cgroup/.probe 2>/dev/null; then echo writable; else echo read-only; fi
"#;

/// Kubelet's default masked and read-only paths, which it sends for every unprivileged
/// container (and nothing for a privileged one).
const MASKED_PATHS: [&str; 10] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Differences that are known and accepted: lines of a section (in one case, or in every case
/// when none is named) that contain a pattern are left out of the comparison, with the reason.
/// The stack's reference is containerd 1.6; crid reproduces 1.7.
const ACCEPTED: [(Option<&str>, &str, &str, &str); 4] = [
    // containerd 1.6 looks up the image USER "1000:1000" whole in /etc/group and finds no
    // memberships; 1.7 looks up its user part and adds the user's groups (2000 here).
    (Some("image user"), "id", "groups=", "1.6 misses the image user's /etc/group memberships"),
    (Some("image user"), "init status", "Groups:", "1.6 misses the image user's /etc/group memberships"),
    (Some("image user"), "exec status", "Groups:", "1.6 misses the image user's /etc/group memberships"),
    // The pause process of a pod with supplemental groups: 1.6 sets the pod's user after its
    // groups and so drops them; crid keeps them. The pause process opens no files.
    (Some("restricted"), "pause status", "Groups:", "1.6 drops the pod's supplemental groups from the pause process"),
];

/// One pod and container, as kubelet would send them.
struct Case {
    name: &'static str,
    pod: fn(&mut PodSandboxConfig),
    container: fn(&mut ContainerConfig, &Path),
}

fn kubelet_security(security: &mut LinuxContainerSecurityContext) {
    security.masked_paths = MASKED_PATHS.iter().map(|p| p.to_string()).collect();
    security.readonly_paths = READONLY_PATHS.iter().map(|p| p.to_string()).collect();
    security.namespace_options.get_or_insert_with(Default::default).pid = NamespaceMode::Container as i32;
}

fn security(config: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    config.linux.get_or_insert_with(Default::default).security_context.get_or_insert_with(Default::default)
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "defaults",
            pod: |_| {},
            container: |config, _| {
                kubelet_security(security(config));
                config.envs = vec![KeyValue { key: "GREETING".into(), value: "hello world".into() }];
            },
        },
        Case {
            name: "restricted",
            pod: |pod| {
                pod.dns_config = Some(DnsConfig {
                    servers: vec!["10.96.0.10".into()],
                    searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
                    options: vec!["ndots:5".into()],
                });
                let linux = pod.linux.get_or_insert_with(Default::default);
                linux.sysctls = [("net.ipv4.ip_unprivileged_port_start".to_string(), "0".to_string())].into();
                let pod_security = linux.security_context.get_or_insert_with(Default::default);
                pod_security.run_as_user = Some(Int64Value { value: 1000 });
                pod_security.supplemental_groups = vec![4000];
            },
            container: |config, host_dir| {
                let security = security(config);
                kubelet_security(security);
                security.run_as_user = Some(Int64Value { value: 1000 });
                security.run_as_group = Some(Int64Value { value: 3000 });
                security.supplemental_groups = vec![4000];
                security.capabilities = Some(Capability {
                    add_capabilities: vec!["NET_BIND_SERVICE".into()],
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                });
                security.no_new_privs = true;
                security.readonly_rootfs = true;
                security.seccomp = Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                });
                let linux = config.linux.get_or_insert_with(Default::default);
                linux.resources = Some(LinuxContainerResources {
                    memory_limit_in_bytes: 64 << 20,
                    cpu_period: 100_000,
                    cpu_quota: 50_000,
                    cpu_shares: 512,
                    oom_score_adj: 900,
                    ..Default::default()
                });
                config.working_dir = "/tmp".into();
                config.envs = vec![KeyValue { key: "MODE".into(), value: "restricted".into() }];
                let host_path = host_dir.to_string_lossy().into_owned();
                config.mounts = vec![
                    Mount {
                        container_path: "/config".into(),
                        host_path: host_path.clone(),
                        readonly: true,
                        ..Default::default()
                    },
                    Mount {
                        container_path: "/scratch".into(),
                        host_path,
                        propagation: MountPropagation::PropagationHostToContainer as i32,
                        ..Default::default()
                    },
                    // A host path that does not exist yet: crid, which runs first, creates it.
                    Mount {
                        container_path: "/created".into(),
                        host_path: format!("{}/created", host_dir.display()),
                        ..Default::default()
                    },
                ];
            },
        },
        Case {
            name: "privileged",
            pod: |pod| {
                let linux = pod.linux.get_or_insert_with(Default::default);
                linux.security_context.get_or_insert_with(Default::default).privileged = true;
            },
            container: |config, _| {
                let security = security(config);
                security.privileged = true;
                security.namespace_options.get_or_insert_with(Default::default).pid = NamespaceMode::Container as i32;
            },
        },
        Case {
            name: "host namespaces",
            pod: |pod| {
                // kubelet leaves the hostname empty for a pod on the node's network.
                pod.hostname = String::new();
                let linux = pod.linux.get_or_insert_with(Default::default);
                linux.security_context.get_or_insert_with(Default::default).namespace_options = Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Node as i32,
                    ipc: NamespaceMode::Node as i32,
                    ..Default::default()
                });
            },
            container: |config, _| {
                let security = security(config);
                kubelet_security(security);
                security.namespace_options = Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Node as i32,
                    ipc: NamespaceMode::Node as i32,
                    ..Default::default()
                });
            },
        },
        Case {
            name: "tty and a shared PID namespace",
            pod: |_| {},
            container: |config, _| {
                let security = security(config);
                kubelet_security(security);
                // The pod's PID namespace: PID 1 is the pause process.
                security.namespace_options.get_or_insert_with(Default::default).pid = NamespaceMode::Pod as i32;
                config.tty = true;
                config.stdin = true;
            },
        },
        Case {
            name: "named user and a device",
            pod: |_| {},
            container: |config, _| {
                let security = security(config);
                kubelet_security(security);
                security.run_as_username = "app".into();
                security.run_as_group = Some(Int64Value { value: 2000 });
                let image = config.image.as_mut().expect("the image");
                image.image = image.image.replace("/busybox:latest", "/nonroot:latest");
                config.devices = vec![Device {
                    container_path: "/dev/crid-null".into(),
                    host_path: "/dev/null".into(),
                    permissions: "r".into(),
                }];
            },
        },
        Case {
            name: "image user",
            pod: |_| {},
            container: |config, _| {
                kubelet_security(security(config));
                let image = config.image.as_mut().expect("the image");
                image.image = image.image.replace("/busybox:latest", "/nonroot:latest");
            },
        },
    ]
}

/// Runs `case` on `cri` and returns the probe's sections, normalised so that what differs
/// between any two runs (ids, addresses, paths of the runtime's own state) does not count.
async fn look_inside(cri: &mut Cri, case: &Case, host_dir: &Path, host: &HostFacts) -> BTreeMap<String, String> {
    let who = cri.kind.name();
    cri.pull(&cri.image("busybox:latest")).await;
    cri.pull(&cri.image("nonroot:latest")).await;
    let mut pod = cri.pod_config(&unique("inside"));
    pod.hostname = "inside-probe".into();
    // As kubelet gives every pod a cgroup parent (cgroupfs driver here, as on the stack).
    pod.linux.get_or_insert_with(Default::default).cgroup_parent = format!("/crid-inside/{}", unique("pod"));
    (case.pod)(&mut pod);
    let pod_id = cri.run_pod(&pod).await;
    let mut config = cri.container_config("probe", &["sleep", "1000"]);
    (case.container)(&mut config, host_dir);
    let id = cri.run_container_with(&pod_id, &pod, config).await;
    let (code, mut output) = cri.exec(&id, &["sh", "-c", PROBE]).await;
    assert_eq!(code, 0, "{who}: {}: the probe failed: {output}", case.name);
    output.push_str(&pause_seen_from_the_host(cri, &pod_id).await);
    output.push_str(&what_kubelet_reads(cri, &pod_id, &id).await);
    cri.remove_pod(&pod_id).await;
    let mut sections = BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    let parent = pod.linux.as_ref().map(|l| l.cgroup_parent.clone()).unwrap_or_default();
    for line in output.lines() {
        let line = &line
            .replace(&parent, "<parent>")
            .replace(&pod.log_directory, "<log directory>")
            .replace(&pod.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default(), "<pod name>")
            .replace(&pod.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default(), "<pod uid>");
        if let Some(name) = line.strip_prefix("== ") {
            sections.extend(current.take().map(|(n, lines)| (n, lines.join("\n"))));
            current = Some((name.to_string(), Vec::new()));
        } else if let Some((name, lines)) = current.as_mut() {
            lines.push(normalise_line(name, line, &[&id, &pod_id], host));
        }
    }
    sections.extend(current.map(|(n, lines)| (n, lines.join("\n"))));
    sections
}

/// The pod's pause process, which has no shell to probe with, read from the host's /proc: the
/// same sections as the probe's, under `pause …`.
async fn pause_seen_from_the_host(cri: &mut Cri, pod_id: &str) -> String {
    let request = PodSandboxStatusRequest { pod_sandbox_id: pod_id.into(), verbose: true };
    let status = cri.runtime.pod_sandbox_status(request).await.expect("pod status").into_inner();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).expect("verbose info is JSON");
    let pid = info["pid"].as_u64().expect("the pause pid");
    let read =
        |file: &str| std::fs::read(format!("/proc/{pid}/{file}")).map(|b| String::from_utf8_lossy(&b).into_owned());
    let status_text = read("status").expect("the pause's status");
    let fields = ["Uid", "Gid", "Groups", "Umask", "NoNewPrivs", "Seccomp", "Seccomp_filters"];
    let mut out = String::from("== pause status\n");
    for line in status_text.lines() {
        let name = line.split(':').next().unwrap_or_default();
        if fields.contains(&name) || name.starts_with("Cap") {
            out.push_str(line);
            out.push('\n');
        }
    }
    let nul_lines = |text: String| text.split('\0').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("\n");
    out.push_str(&format!("== pause args\n{}\n", nul_lines(read("cmdline").unwrap_or_default())));
    let mut env: Vec<String> = nul_lines(read("environ").unwrap_or_default()).lines().map(str::to_string).collect();
    env.sort();
    out.push_str(&format!("== pause env\n{}\n", env.join("\n")));
    for (section, file) in [
        ("pause limits", "limits"),
        ("pause oom_score_adj", "oom_score_adj"),
        ("pause cgroup", "cgroup"),
        ("pause mounts", "mountinfo"),
    ] {
        out.push_str(&format!("== {section}\n{}", read(file).unwrap_or_default()));
    }
    out
}

/// The statuses kubelet reads of the pod, the container and its image, as their protobuf
/// text: the same fields must be set, to the same values, on both runtimes. Times only say
/// whether they are set, and the pod's address which network it is on.
async fn what_kubelet_reads(cri: &mut Cri, pod_id: &str, id: &str) -> String {
    let request = ContainerStatusRequest { container_id: id.into(), verbose: false };
    let container = cri.runtime.container_status(request).await.expect("container status").into_inner().status;
    let request = PodSandboxStatusRequest { pod_sandbox_id: pod_id.into(), verbose: false };
    let pod = cri.runtime.pod_sandbox_status(request).await.expect("pod status").into_inner().status;
    let image_name = container.as_ref().and_then(|c| c.image.as_ref()).map(|i| i.image.clone()).unwrap_or_default();
    let request =
        ImageStatusRequest { image: Some(ImageSpec { image: image_name, ..Default::default() }), verbose: false };
    let image = cri.images.image_status(request).await.expect("image status").into_inner().image;
    let filter = ContainerFilter { pod_sandbox_id: pod_id.into(), ..Default::default() };
    let request = ListContainersRequest { filter: Some(filter) };
    let listed = cri.runtime.list_containers(request).await.expect("list containers").into_inner().containers;
    let text = |value: &dyn std::fmt::Debug| {
        format!("{value:#?}")
            .lines()
            .map(|line| {
                let trimmed = line.trim_start();
                let time = ["created_at: ", "started_at: ", "finished_at: "].iter().find(|f| trimmed.starts_with(**f));
                match time {
                    Some(field) if !trimmed.starts_with(&format!("{field}0,")) => format!("{field}<set>"),
                    // A pod's address is its network's: only whether it has one counts.
                    _ if trimmed.starts_with("ip: \"") && trimmed != "ip: \"\"," => "ip: <pod address>".to_string(),
                    _ => line.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "== container status\n{}\n== pod status\n{}\n== image status\n{}\n== listed containers\n{}\n",
        text(&container),
        text(&pod),
        text(&image),
        text(&listed)
    )
}

/// What the host's own namespaces are, so a namespace shown inside reads `host` or `own`.
struct HostFacts {
    namespaces: BTreeMap<String, String>,
}

impl HostFacts {
    fn read() -> HostFacts {
        let namespaces = ["cgroup", "ipc", "mnt", "net", "pid", "uts"]
            .iter()
            .map(|n| {
                let link = std::fs::read_link(format!("/proc/self/ns/{n}")).expect("read a namespace link");
                (n.to_string(), link.to_string_lossy().into_owned())
            })
            .collect();
        HostFacts { namespaces }
    }
}

fn normalise_line(section: &str, line: &str, ids: &[&str], host: &HostFacts) -> String {
    let mut line = line.to_string();
    for id in ids {
        line = line.replace(id, "<id>");
    }
    match section {
        "mounts" | "pause mounts" => normalise_mount(&line),
        "namespaces" => {
            let (name, link) = line.split_once(' ').unwrap_or((&line, ""));
            let whose = if host.namespaces.get(name).map(String::as_str) == Some(link) { "host" } else { "own" };
            format!("{name} {whose}")
        }
        // A pod's address is its network's; what matters is which links it has and whether
        // they are up, not whether a host bridge has a port plugged in at that moment.
        "links" => line.split('@').next().unwrap_or_default().replace("NO-CARRIER,", "").replace(",LOWER_UP", ""),
        _ => line,
    }
}

/// A mountinfo line without what names the runtime's own files: the mount point, its options,
/// its propagation, the filesystem type, and the filesystem's options except an overlay's
/// layer paths.
fn normalise_mount(line: &str) -> String {
    let Some((left, right)) = line.split_once(" - ") else { return line.to_string() };
    let left: Vec<&str> = left.split(' ').collect();
    let right: Vec<&str> = right.split(' ').collect();
    let point = left.get(4).copied().unwrap_or_default();
    let options = left.get(5).copied().unwrap_or_default();
    let propagation: Vec<&str> = left.iter().skip(6).map(|field| field.split(':').next().unwrap_or_default()).collect();
    let fstype = right.first().copied().unwrap_or_default();
    let super_options = if fstype == "overlay" { "<layers>" } else { right.get(2).copied().unwrap_or_default() };
    format!("{point} {options} [{}] {fstype} {super_options}", propagation.join(","))
}

/// The lines only crid printed (`-`) and only containerd printed (`+`); when both printed the
/// same lines, the two texts in full, as only their order differs.
fn line_diff(ours: &str, theirs: &str) -> String {
    let (ours_lines, theirs_lines): (Vec<&str>, Vec<&str>) = (ours.lines().collect(), theirs.lines().collect());
    let only_ours: Vec<String> =
        ours_lines.iter().filter(|l| !theirs_lines.contains(l)).map(|l| format!("- {l}")).collect();
    let only_theirs: Vec<String> =
        theirs_lines.iter().filter(|l| !ours_lines.contains(l)).map(|l| format!("+ {l}")).collect();
    if only_ours.is_empty() && only_theirs.is_empty() {
        return format!(
            "(the same lines in another order)\n--- {}\n{ours}\n--- {}\n{theirs}",
            Kind::Crid.name(),
            Kind::Containerd.name()
        );
    }
    [only_ours, only_theirs].concat().join("\n")
}

fn run(args: &[&str]) {
    let status = std::process::Command::new(args[0]).args(&args[1..]).status().expect("run a host command");
    assert!(status.success(), "{args:?}: {status}");
}

/// CreateContainer's error for a HostToContainer mount of `host_dir`.
async fn refuses_host_to_container_from(cri: &mut Cri, host_dir: &Path) -> String {
    let mut pod = cri.pod_config(&unique("inside-private"));
    pod.hostname = "inside-probe".into();
    let pod_id = cri.run_pod(&pod).await;
    let mut config = cri.container_config("probe", &["sleep", "1000"]);
    config.mounts = vec![Mount {
        container_path: "/private".into(),
        host_path: host_dir.to_string_lossy().into_owned(),
        propagation: MountPropagation::PropagationHostToContainer as i32,
        ..Default::default()
    }];
    let request =
        CreateContainerRequest { pod_sandbox_id: pod_id.clone(), config: Some(config), sandbox_config: Some(pod) };
    let refused = cri.runtime.create_container(request).await;
    cri.remove_pod(&pod_id).await;
    match refused {
        Ok(created) => panic!("{}: created {}", cri.kind.name(), created.into_inner().container_id),
        Err(status) => status.message().to_string(),
    }
}

/// For every case, crid's inside and containerd's agree, section by section.
pub async fn inside_matches_containerd() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "inside", crid_binary()).await;
    let mut reference = Cri::reference(&stack, "inside").await;
    let host = HostFacts::read();
    let host_dir = std::env::temp_dir().join(unique("crid-inside-volume"));
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("setting"), "on\n").unwrap();
    // A HostToContainer mount needs its source on a shared or slave mount, as kubelet's
    // volume directories are.
    let host_dir_text = host_dir.to_string_lossy().into_owned();
    run(&["mount", "--bind", &host_dir_text, &host_dir_text]);
    run(&["mount", "--make-shared", &host_dir_text]);
    let mut differences = Vec::new();
    let mut compared = 0;
    for case in cases() {
        let ours = look_inside(&mut crid, &case, &host_dir, &host).await;
        let theirs = look_inside(&mut reference, &case, &host_dir, &host).await;
        if std::env::var_os("CRID_INSIDE_SHOW").is_some() {
            for (section, text) in &ours {
                println!("=== {} / {section}\n{text}", case.name);
            }
        }
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{}: the probe printed other sections",
            case.name
        );
        for (section, text) in &ours {
            compared += 1;
            let other = &theirs[section];
            if text == other {
                continue;
            }
            let accepted: Vec<_> =
                ACCEPTED.iter().filter(|(c, s, _, _)| c.is_none_or(|c| c == case.name) && s == section).collect();
            let without = |text: &str| {
                text.lines()
                    .filter(|line| !accepted.iter().any(|(_, _, pattern, _)| line.contains(pattern)))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            if !accepted.is_empty() && without(text) == without(other) {
                for (_, _, _, why) in &accepted {
                    println!("{}: {section}: accepted difference: {why}", case.name);
                }
                continue;
            }
            differences.push(format!("{} / {section}:\n{}", case.name, line_diff(text, other)));
        }
    }
    // A HostToContainer mount from a private mount could not receive anything: both refuse it.
    let private_dir = host_dir.join("private");
    let private_text = private_dir.to_string_lossy().into_owned();
    std::fs::create_dir_all(&private_dir).unwrap();
    run(&["mount", "--bind", &private_text, &private_text]);
    run(&["mount", "--make-private", &private_text]);
    for cri in [&mut crid, &mut reference] {
        let refused = refuses_host_to_container_from(cri, &private_dir).await;
        assert!(refused.contains("is not a shared or slave mount"), "{}: {refused}", cri.kind.name());
    }
    run(&["umount", "-l", &private_text]);
    run(&["umount", "-l", &host_dir_text]);
    let _ = std::fs::remove_dir_all(&host_dir);
    crid.assert_no_leaks();
    reference.assert_no_leaks();
    println!("compared {compared} sections in {} cases; {} differ", cases().len(), differences.len());
    assert!(differences.is_empty(), "crid's containers differ from containerd's:\n\n{}", differences.join("\n\n"));
}
