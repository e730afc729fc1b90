//! Integration tests against the real stack (`ci/realstack up`): the `crid` binary on a private
//! containerd, a local registry and a CNI bridge, driven through a CRI client on crid's socket.
//! The lifecycle test also runs, unchanged, against containerd's own built-in CRI (the
//! reference containerd of the stack): what crid reproduces is checked against the original.
//!
//! They are `#[ignore]`d, so a plain `cargo test` shows them as ignored: the real-stack step runs
//! them with `--ignored` after `eval "$(ci/realstack env)"`, which sets `CRID_REALSTACK` and the
//! paths the client reads; run without it, a test fails and says why. Each crid test
//! uses its own containerd namespace and directories, so crid tests may run in parallel.

mod common;
mod fuzz;
mod inside;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cri, Crictl, Kind, client_from_env, crid_binary, read_log, shell, stack, unique};
use k8s_cri::v1::*;

/// The kubelet-visible lifecycle of a pod with two containers, with the checks that hold for
/// any CRI runtime that behaves like containerd's.
async fn lifecycle(cri: &mut Cri) {
    let who = cri.kind.name();
    let version = cri.runtime.version(VersionRequest { version: "v1".into() }).await.unwrap().into_inner();
    assert_eq!(version.runtime_api_version, "v1", "{who}");
    let status = cri.runtime.status(StatusRequest { verbose: false }).await.unwrap().into_inner().status.unwrap();
    assert!(status.conditions.iter().all(|c| c.status), "{who}: runtime conditions: {:?}", status.conditions);

    let busybox = cri.image("busybox:latest");
    let image_ref = cri.pull(&busybox).await;
    assert!(image_ref.starts_with("sha256:"), "{who}: {image_ref}");
    let listed = cri.images.list_images(ListImagesRequest::default()).await.unwrap().into_inner().images;
    assert!(listed.iter().any(|i| i.id == image_ref && i.repo_tags.contains(&busybox)), "{who}: {listed:?}");

    let pod = cri.pod_config(&unique("web"));
    let pod_id = cri.run_pod(&pod).await;
    let status = cri.pod_status(&pod_id).await;
    assert_eq!(PodSandboxState::try_from(status.state).unwrap(), PodSandboxState::SandboxReady, "{who}");
    let ip = status.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
    assert!(ip.starts_with(cri.ip_prefix), "{who}: pod IP from its own network ({}*), got {ip:?}", cri.ip_prefix);
    assert!(cri.ipam_dir.join(&ip).exists(), "{who}: IP {ip} allocated by host-local in {}", cri.ipam_dir.display());

    let id = cri
        .create_container(
            &pod_id,
            &pod,
            "app",
            &["sh", "-c", "trap '' TERM; echo hello; echo oops >&2; while true; do sleep 1; done"],
        )
        .await;
    assert_eq!(cri.container_state(&id).await.0, ContainerState::ContainerCreated, "{who}");
    cri.start_container(&id).await;
    assert_eq!(cri.container_state(&id).await.0, ContainerState::ContainerRunning, "{who}");
    // The pod's tasks share the pause container's shim (the runc shim groups by the
    // sandbox-id annotation), as under containerd's CRI: one shim per pod, not per container.
    let shims = cri.shim_ids();
    assert_eq!(shims, vec![pod_id.clone()], "{who}: one shim, named for the pod");

    let exec = ExecSyncRequest {
        container_id: id.clone(),
        cmd: vec!["sh".into(), "-c".into(), "echo out; echo err >&2; exit 3".into()],
        timeout: 10,
    };
    let response =
        cri.runtime.exec_sync(exec).await.unwrap_or_else(|e| panic!("{who}: exec: {e}\n{}", cri.log())).into_inner();
    assert_eq!(
        (response.exit_code, response.stdout.as_slice(), response.stderr.as_slice()),
        (3, &b"out\n"[..], &b"err\n"[..]),
        "{who}"
    );

    // The pod network works: the container reaches the bridge, its gateway (host-local gives the
    // subnet's first address to the gateway).
    let gateway = format!("{}0.1", cri.ip_prefix);
    let ping = ExecSyncRequest {
        container_id: id.clone(),
        cmd: ["busybox", "ping", "-c", "1", "-W", "5", &gateway].map(String::from).to_vec(),
        timeout: 15,
    };
    let response =
        cri.runtime.exec_sync(ping).await.unwrap_or_else(|e| panic!("{who}: ping: {e}\n{}", cri.log())).into_inner();
    let output = String::from_utf8_lossy(&response.stdout);
    assert!(
        response.exit_code == 0 && output.contains("1 packets received"),
        "{who}: ping {gateway}: {output} {}",
        String::from_utf8_lossy(&response.stderr)
    );

    // The log file is in the CRI format, both streams.
    let log_path = Path::new(&pod.log_directory).join("app.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(read_log(&log_path).contains("stdout F hello") && read_log(&log_path).contains("stderr F oops")) {
        assert!(Instant::now() < deadline, "{who}: log: {:?}", read_log(&log_path));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stats = cri
        .runtime
        .container_stats(ContainerStatsRequest { container_id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(stats.memory.and_then(|m| m.working_set_bytes).map(|v| v.value).unwrap_or(0) > 0, "{who}: memory stats");
    assert!(stats.cpu.is_some(), "{who}: cpu stats");

    let filter = ContainerFilter {
        pod_sandbox_id: pod_id.clone(),
        state: Some(ContainerStateValue { state: ContainerState::ContainerRunning as i32 }),
        ..Default::default()
    };
    let listed = cri
        .runtime
        .list_containers(ListContainersRequest { filter: Some(filter) })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec![id.as_str()], "{who}");

    // A second container that exits by itself reports its code.
    let short = cri.run_container(&pod_id, &pod, "short", &["sh", "-c", "exit 7"]).await;
    assert_eq!(cri.wait_container_state(&short, ContainerState::ContainerExited).await, 7, "{who}");

    // Timeout 0: straight to SIGKILL (the graceful path has its own test).
    cri.stop_container(&id, 0).await;
    let code = cri.wait_container_state(&id, ContainerState::ContainerExited).await;
    assert_eq!(code, 137, "{who}: killed");

    for c in [&id, &short] {
        cri.remove_container(c).await;
    }
    cri.remove_pod(&pod_id).await;
    let pods = cri.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner().items;
    assert!(pods.iter().all(|p| p.id != pod_id), "{who}: {pods:?}");
    cri.assert_no_leaks();
    // The pod's IP went back to the pool.
    assert!(!cri.ipam_dir.join(&ip).exists(), "{who}: IP {ip} still allocated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn pod_and_container_lifecycle() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "life", crid_binary()).await;
    lifecycle(&mut crid).await;
    let pods = crid.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner().items;
    assert!(pods.is_empty(), "{pods:?}");

    // SIGTERM: clean exit, socket removed.
    let status = crid.terminate();
    assert!(status.success(), "crid exit status {status}\n{}", crid.log());
    assert!(!crid.dir.join("crid.sock").exists());
}

/// Clients we did not write reach crid over its unix socket with their default `:authority`
/// (the socket path, which h2 alone rejects): the stock crictl 1.29 (grpc-go) drives a whole
/// lifecycle, and grpc-python's default `unix:` target gets a Version answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn stock_clients_drive_crid() {
    let stack = stack();
    let python = client_from_env("CRID_GRPC_PYTHON", "a python with grpcio >= 1.57");
    let crid = Cri::crid(&stack, "clients", crid_binary()).await;
    let crictl = Crictl::of(&crid);
    let socket = &crictl.socket;
    let run = |args: &[&str]| crictl.run(args, &crid);

    let version = run(&["version"]);
    assert!(version.contains("RuntimeName:  crid") && version.contains("RuntimeApiVersion:  v1"), "{version}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/grpc_python_version.py");
    let output = Command::new(&python).arg(&script).arg(socket).output().expect("run python");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "grpc-python: {printed}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        printed.lines().any(|l| l == "runtime_name=crid") && printed.lines().any(|l| l == "runtime_api_version=v1"),
        "{printed}"
    );

    let busybox = crid.image("busybox:latest");
    run(&["pull", &busybox]);
    assert!(run(&["images", "-q"]).lines().count() >= 1);

    let pod_name = unique("crictl");
    let pod_json = crid.dir.join("pod.json");
    let pod = serde_json::json!({
        "metadata": {"name": pod_name, "namespace": "default", "uid": unique("uid")},
        "hostname": "crictl-pod",
        "log_directory": crid.dir.join("logs").join(&pod_name),
        "linux": {}
    });
    std::fs::write(&pod_json, pod.to_string()).unwrap();
    let container_json = crid.dir.join("container.json");
    let container = serde_json::json!({
        "metadata": {"name": "app"},
        "image": {"image": busybox},
        "command": ["sh", "-c", "echo hello from crictl; exec sleep 1000"],
        "log_path": "app.log",
        "linux": {}
    });
    std::fs::write(&container_json, container.to_string()).unwrap();
    let (pod_path, container_path) = (pod_json.to_str().unwrap(), container_json.to_str().unwrap());

    let pod_id = run(&["runp", pod_path]).trim().to_string();
    assert_eq!(pod_id.len(), 64, "{pod_id}");
    let id = run(&["create", &pod_id, container_path, pod_path]).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    run(&["start", &id]);
    let listed = run(&["ps", "-q", "--state", "Running"]);
    assert!(listed.lines().any(|l| id.starts_with(l.trim())), "{listed}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = run(&["logs", &id]);
        if logs.contains("hello from crictl") {
            break;
        }
        assert!(Instant::now() < deadline, "crictl logs: {logs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exec = run(&["exec", "--sync", &id, "sh", "-c", "echo $((6 * 7))"]);
    assert_eq!(exec.trim(), "42");
    let inspected: serde_json::Value = serde_json::from_str(&run(&["inspect", &id])).unwrap();
    assert_eq!(inspected["status"]["state"], "CONTAINER_RUNNING", "{inspected}");

    run(&["stop", "--timeout", "1", &id]);
    let inspected: serde_json::Value = serde_json::from_str(&run(&["inspect", &id])).unwrap();
    assert_eq!(inspected["status"]["state"], "CONTAINER_EXITED", "{inspected}");
    run(&["rm", &id]);
    run(&["stopp", &pod_id]);
    run(&["rmp", &pod_id]);
    assert_eq!(run(&["ps", "-a", "-q"]).trim(), "");
    assert_eq!(run(&["pods", "-q"]).trim(), "");
    crid.assert_no_leaks();
}

/// The same lifecycle against containerd's own CRI: the reference crid's behaviour is held to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn reference_lifecycle_on_containerd_cri() {
    let stack = stack();
    let mut reference = Cri::reference(&stack, "life").await;
    lifecycle(&mut reference).await;
}
/// Resource limits reach the container's cgroup (cgroup v1 here), an update changes them on a
/// running container, and a container that outgrows its memory limit is reported as killed by
/// the OOM killer: EXITED, 137, reason OOMKilled.
async fn resources_and_oom(cri: &mut Cri) {
    let who = cri.kind.name();
    let (pod, pod_id) = cri.busybox_pod("limits").await;
    const MIB: i64 = 1 << 20;
    let limited = |cri: &Cri, name: &str, command: &[&str], memory_bytes: i64| {
        let mut config = cri.container_config(name, command);
        let resources = LinuxContainerResources {
            memory_limit_in_bytes: memory_bytes,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            ..Default::default()
        };
        config.linux = Some(LinuxContainerConfig { resources: Some(resources), ..Default::default() });
        config
    };
    let config = limited(cri, "limited", &["sh", "-c", "while true; do sleep 1; done"], 32 * MIB);
    let id = cri.run_container_with(&pod_id, &pod, config).await;
    let memory_file = "/sys/fs/cgroup/memory/memory.limit_in_bytes";
    assert_eq!(
        cri.exec(&id, &["cat", memory_file]).await,
        (0, format!("{}\n", 32 * MIB)),
        "{who}: memory limit applied"
    );
    let quota = cri
        .exec(
            &id,
            &["sh", "-c", "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us || cat /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us"],
        )
        .await;
    assert_eq!(quota, (0, "50000\n".to_string()), "{who}: cpu quota applied");

    let update = UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 48 * MIB,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    cri.runtime
        .update_container_resources(update)
        .await
        .unwrap_or_else(|e| panic!("{who}: update resources: {e}\n{}", cri.log()));
    assert_eq!(
        cri.exec(&id, &["cat", memory_file]).await,
        (0, format!("{}\n", 48 * MIB)),
        "{who}: memory limit updated"
    );

    // A string that doubles until the 16 MiB limit stops it.
    let config = limited(cri, "hog", &["sh", "-c", "x=0123456789abcdef; while true; do x=$x$x; done"], 16 * MIB);
    let hog = cri.run_container_with(&pod_id, &pod, config).await;
    assert_eq!(cri.wait_container_state(&hog, ContainerState::ContainerExited).await, 137, "{who}: killed");
    let status = cri
        .runtime
        .container_status(ContainerStatusRequest { container_id: hog.clone(), verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.reason, "OOMKilled", "{who}: {status:?}");

    cri.remove_pod(&pod_id).await;
    cri.assert_no_leaks();
}

/// A look from inside a real container at what the security context asked for: the user and
/// its groups, RuntimeDefault seccomp (filter mode), no_new_privs off unless asked, a PID
/// namespace of its own in CONTAINER mode, the pod's hostname as HOSTNAME, and the pod's
/// /dev/shm shared between its containers.
async fn security_context_from_inside(cri: &mut Cri) {
    let who = cri.kind.name();
    let (pod, pod_id) = cri.busybox_pod("sec").await;
    let mut config = cri.container_config("confined", &["sleep", "1000"]);
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 }),
            supplemental_groups: vec![1234],
            seccomp: Some(SecurityProfile {
                profile_type: security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            namespace_options: Some(NamespaceOption { pid: NamespaceMode::Container as i32, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = cri.run_container_with(&pod_id, &pod, config).await;
    let (code, identity) = cri.exec(&id, &["id"]).await;
    assert_eq!(code, 0, "{who}: {identity}");
    // busybox's /etc/passwd has no uid 1000: group 0, as containerd does.
    assert!(identity.starts_with("uid=1000 gid=0"), "{who}: {identity}");
    assert!(identity.contains("1234"), "{who}: supplemental group: {identity}");
    let (_, status) = cri.exec(&id, &["cat", "/proc/self/status"]).await;
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or_default().to_string();
    assert_eq!(field("Seccomp:"), "2", "{who}: RuntimeDefault filters syscalls");
    assert_eq!(field("NoNewPrivs:"), "0", "{who}: no_new_privs only when asked");
    let (_, init) = cri.exec(&id, &["cat", "/proc/1/cmdline"]).await;
    assert!(init.starts_with("sleep"), "{who}: PID 1 is the container's own process: {init:?}");
    let (_, hostname) = cri.exec(&id, &["sh", "-c", "echo $HOSTNAME"]).await;
    assert_eq!(hostname.trim(), pod.hostname, "{who}: HOSTNAME is the pod's hostname");
    // The pod's containers share its /dev/shm.
    let other = cri.run_container(&pod_id, &pod, "neighbour", &["sleep", "1000"]).await;
    let (code, out) = cri.exec(&other, &["sh", "-c", "echo shared > /dev/shm/marker"]).await;
    assert_eq!(code, 0, "{who}: {out}");
    let (_, seen) = cri.exec(&id, &["cat", "/dev/shm/marker"]).await;
    assert_eq!(seen.trim(), "shared", "{who}: /dev/shm is the pod's");
    cri.remove_pod(&pod_id).await;
    cri.assert_no_leaks();
}

/// What an image and the CRI put into a container, seen from inside it: the image's USER and
/// its /etc/group memberships, an image VOLUME holding the image's files, a CRI device, the
/// TARGET pid namespace, and a Bidirectional mount whose inner mounts reach the host.
async fn image_and_devices_from_inside(cri: &mut Cri) {
    let who = cri.kind.name();
    let nonroot = cri.image("nonroot:latest");
    cri.pull(&nonroot).await;
    let busybox = cri.image("busybox:latest");
    cri.pull(&busybox).await;
    let mut pod = cri.pod_config(&unique("img"));
    // Privileged, for the mounting container below.
    pod.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext { privileged: true, ..Default::default() }),
        ..Default::default()
    });
    let pod_id = cri.run_pod(&pod).await;

    let mut config = cri.container_config("nonroot", &["sleep", "1000"]);
    config.image = Some(ImageSpec { image: nonroot.clone(), ..Default::default() });
    config.devices = vec![Device {
        container_path: "/dev/crid-null".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    }];
    // A PID namespace of its own, which the debugger below joins.
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption { pid: NamespaceMode::Container as i32, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let app = cri.run_container_with(&pod_id, &pod, config).await;
    let (code, identity) = cri.exec(&app, &["id"]).await;
    assert_eq!(code, 0, "{who}: {identity}");
    assert!(identity.starts_with("uid=1000(app) gid=1000(app)"), "{who}: the image's USER 1000:1000: {identity}");
    // containerd 1.7 takes the memberships of the USER's user part; the 1.6 reference on the
    // stack looks up the whole "1000:1000" and finds none.
    if cri.kind == Kind::Crid {
        assert!(identity.contains("2000(extra)"), "{who}: the image's /etc/group membership: {identity}");
    }
    let (code, seed) = cri.exec(&app, &["cat", "/data/seed"]).await;
    assert_eq!((code, seed.trim()), (0, "seeded by the image"), "{who}: the image VOLUME holds the image's files");
    let (code, _) = cri.exec(&app, &["sh", "-c", "echo written > /data/new"]).await;
    assert_eq!(code, 0, "{who}: the volume keeps the image's owner (1000), so its user may write");
    let (_, device) = cri.exec(&app, &["ls", "-l", "/dev/crid-null"]).await;
    assert!(device.starts_with('c') && device.contains("1,") && device.contains(" 3 "), "{who}: {device}");
    let (code, _) = cri.exec(&app, &["sh", "-c", "echo x > /dev/crid-null"]).await;
    assert_eq!(code, 0, "{who}: the device cgroup lets the container write the device");

    // TARGET: a debug container in the app's own PID namespace sees the app's process as PID 1.
    let mut debug = cri.container_config("debugger", &["sleep", "1001"]);
    debug.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Target as i32,
                target_id: app.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let debugger = cri.run_container_with(&pod_id, &pod, debug).await;
    let (_, init) = cri.exec(&debugger, &["cat", "/proc/1/cmdline"]).await;
    assert_eq!(init.replace('\0', " ").trim(), "sleep 1000", "{who}: TARGET joins the target's PID namespace");

    // Bidirectional: a mount made inside shows up on the host. The host directory must be a
    // shared mount for that, as kubelet's volume directories are.
    let shared = cri.dir.join(unique("shared"));
    std::fs::create_dir_all(&shared).unwrap();
    let shared_text = shared.to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let status = Command::new(args[0]).args(&args[1..]).status().expect("run mount");
        assert!(status.success(), "{args:?}");
    };
    run(&["mount", "--bind", &shared_text, &shared_text]);
    run(&["mount", "--make-shared", &shared_text]);
    let mut privileged = cri.container_config("mounter", &["sleep", "1000"]);
    privileged.mounts = vec![Mount {
        container_path: "/mnt/shared".into(),
        host_path: shared_text.clone(),
        propagation: MountPropagation::PropagationBidirectional as i32,
        ..Default::default()
    }];
    privileged.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext { privileged: true, ..Default::default() }),
        ..Default::default()
    });
    let mounter = cri.run_container_with(&pod_id, &pod, privileged).await;
    let (code, out) = cri
        .exec(
            &mounter,
            &["sh", "-c", "mkdir -p /mnt/shared/inner && busybox mount -t tmpfs crid-inner /mnt/shared/inner"],
        )
        .await;
    assert_eq!(code, 0, "{who}: mount inside: {out}");
    let inner = format!("{shared_text}/inner");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let seen = mountinfo.lines().any(|l| l.split(' ').nth(4) == Some(inner.as_str()));
    run(&["umount", "-l", &inner]);
    cri.remove_pod(&pod_id).await;
    run(&["umount", "-l", &shared_text]);
    assert!(seen, "{who}: the Bidirectional mount made inside reached the host");
    cri.assert_no_leaks();
}

/// The same pods and containers on crid and on containerd's CRI look the same from inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn containers_look_the_same_from_inside_as_on_containerd() {
    inside::inside_matches_containerd().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn image_user_volumes_devices_and_mounts_seen_from_inside() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "img", crid_binary()).await;
    image_and_devices_from_inside(&mut crid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn reference_image_user_volumes_devices_and_mounts_on_containerd_cri() {
    let stack = stack();
    let mut reference = Cri::reference(&stack, "img").await;
    image_and_devices_from_inside(&mut reference).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn security_context_seen_from_inside() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "sec", crid_binary()).await;
    security_context_from_inside(&mut crid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn reference_security_context_seen_from_inside_on_containerd_cri() {
    let stack = stack();
    let mut reference = Cri::reference(&stack, "sec").await;
    security_context_from_inside(&mut reference).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn resource_limits_and_oom_kills() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "oom", crid_binary()).await;
    resources_and_oom(&mut crid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn reference_resource_limits_and_oom_kills_on_containerd_cri() {
    let stack = stack();
    let mut reference = Cri::reference(&stack, "oom").await;
    resources_and_oom(&mut reference).await;
}

/// A registry that wants a username and password (HTTP basic, htpasswd): PullImage fails
/// without credentials or with wrong ones, and succeeds with the CRI's AuthConfig, both as
/// separate fields and as the base64 `auth` field.
async fn private_pull(cri: &mut Cri) {
    let who = cri.kind.name();
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let image = format!("{}/private/busybox:latest", var("CRID_AUTH_REGISTRY"));
    let (user, password) = (var("CRID_AUTH_REGISTRY_USER"), var("CRID_AUTH_REGISTRY_PASSWORD"));
    let pull = |auth: Option<AuthConfig>| PullImageRequest {
        image: Some(ImageSpec { image: image.clone(), ..Default::default() }),
        auth,
        ..Default::default()
    };

    let anonymous = cri.images.pull_image(pull(None)).await.expect_err("an anonymous pull is refused");
    let wrong = AuthConfig { username: user.clone(), password: "wrong".into(), ..Default::default() };
    let wrong = cri.images.pull_image(pull(Some(wrong))).await.expect_err("wrong credentials are refused");
    if cri.kind == Kind::Crid {
        for error in [&anonymous, &wrong] {
            assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
            assert!(error.message().contains("nauthorized") || error.message().contains("401"), "{error:?}");
            assert!(!error.message().contains(&password), "no secret in errors: {error:?}");
        }
    }

    let fields = AuthConfig { username: user.clone(), password: password.clone(), ..Default::default() };
    let id = cri
        .images
        .pull_image(pull(Some(fields)))
        .await
        .unwrap_or_else(|e| panic!("{who}: pull with credentials: {e}\n{}", cri.log()))
        .into_inner()
        .image_ref;
    assert!(id.starts_with("sha256:"), "{who}: {id}");
    cri.remove_image(&image).await;
    let encoded = AuthConfig { auth: base64_of(&format!("{user}:{password}")), ..Default::default() };
    let again = cri
        .images
        .pull_image(pull(Some(encoded)))
        .await
        .unwrap_or_else(|e| panic!("{who}: pull with `auth`: {e}\n{}", cri.log()))
        .into_inner()
        .image_ref;
    assert_eq!(again, id, "{who}");
    cri.remove_image(&image).await;
    if cri.kind == Kind::Crid {
        let log = cri.log();
        assert!(!log.contains(&password), "the password never reaches crid's log");
    }
}

fn base64_of(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// An https registry whose certificate comes from a CA of its own: trusted through the `ca` of
/// its hosts.toml, refused where no hosts.toml names that CA.
async fn tls_pull(cri: &mut Cri) {
    let who = cri.kind.name();
    let registry = std::env::var("CRID_TLS_REGISTRY").expect("CRID_TLS_REGISTRY");
    let image = format!("{registry}/tls/busybox:latest");
    // The refusal below needs a name without any hosts.toml; a `_default` would answer for it.
    let fallback = std::path::Path::new(&stack().registry_config_path).join("_default");
    assert!(!fallback.exists(), "{who}: {} sends unknown registries elsewhere; remove it", fallback.display());
    let id = cri.pull(&image).await;
    assert!(id.starts_with("sha256:"), "{who}: {id}");
    cri.remove_image(&image).await;
    // The same server by a name that has no hosts.toml: the system's roots only.
    let port = registry.rsplit(':').next().unwrap();
    let untrusted = PullImageRequest {
        image: Some(ImageSpec { image: format!("localhost:{port}/tls/busybox:latest"), ..Default::default() }),
        ..Default::default()
    };
    let error = cri.images.pull_image(untrusted).await.expect_err("an unknown CA is refused");
    if cri.kind == Kind::Crid {
        assert!(error.message().contains("certificate") || error.message().contains("Certificate"), "{error:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn registry_ca_from_hosts_toml() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "tls", crid_binary()).await;
    tls_pull(&mut crid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn reference_registry_ca_on_containerd_cri() {
    let stack = stack();
    let mut reference = Cri::reference(&stack, "tls").await;
    tls_pull(&mut reference).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn private_registry_needs_credentials() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "auth", crid_binary()).await;
    private_pull(&mut crid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn reference_private_registry_on_containerd_cri() {
    let stack = stack();
    let mut reference = Cri::reference(&stack, "auth").await;
    private_pull(&mut reference).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn stop_escalates_after_the_grace_period() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "stop", crid_binary()).await;
    let (pod, pod_id) = crid.busybox_pod("stopper").await;
    let id = crid
        .create_container(&pod_id, &pod, "stubborn", &["sh", "-c", "trap '' TERM; while true; do sleep 1; done"])
        .await;
    crid.start_container(&id).await;
    let started = Instant::now();
    crid.stop_container(&id, 2).await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "SIGTERM is ignored: stop waits out the grace period ({:?})",
        started.elapsed()
    );
    assert_eq!(crid.container_state(&id).await, (ContainerState::ContainerExited, 137));
    crid.remove_pod(&pod_id).await;
    crid.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn concurrent_pulls_fetch_each_blob_once() {
    let stack = stack();
    let crid = Cri::crid(&stack, "pull", crid_binary()).await;
    let busybox = crid.image("busybox:latest");
    let mut pulls = Vec::new();
    for _ in 0..10 {
        let mut images = crid.images.clone();
        let busybox = busybox.clone();
        pulls.push(tokio::spawn(async move {
            let request = PullImageRequest {
                image: Some(ImageSpec { image: busybox, ..Default::default() }),
                ..Default::default()
            };
            images.pull_image(request).await.map(|r| r.into_inner().image_ref)
        }));
    }
    let mut refs = Vec::new();
    for pull in pulls {
        refs.push(pull.await.unwrap().unwrap_or_else(|e| panic!("pull: {e}\n{}", crid.log())));
    }
    refs.dedup();
    assert_eq!(refs.len(), 1, "one image id: {refs:?}");
    // Count the layer fetches the backend logged, per digest.
    let log = crid.log();
    let mut fetches: HashMap<String, usize> = HashMap::new();
    for line in log.lines().filter(|l| l.contains("fetching blob") && l.contains("tar+gzip")) {
        let digest = line.split("digest=").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or_default();
        *fetches.entry(digest.to_string()).or_default() += 1;
    }
    assert!(!fetches.is_empty(), "no layer fetch logged:\n{log}");
    assert!(fetches.values().all(|&n| n == 1), "each layer fetched once: {fetches:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn a_repull_downloads_nothing() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "repull", crid_binary()).await;
    let busybox = crid.image("busybox:latest");
    let downloads = |log: &str| {
        let count = |what: &str| log.lines().filter(|line| line.contains(what)).count();
        (count("downloading image config"), count("fetching blob"), count("image config read from the content store"))
    };
    let first = crid.pull(&busybox).await;
    let (configs, blobs, stored) = downloads(&crid.log());
    assert!(configs >= 1 && blobs >= 1, "the first pull downloads: {configs} configs, {blobs} blobs\n{}", crid.log());
    assert_eq!(crid.pull(&busybox).await, first, "the same image");
    let after = downloads(&crid.log());
    assert_eq!((after.0, after.1), (configs, blobs), "the re-pull downloaded:\n{}", crid.log());
    assert_eq!(after.2, stored + 1, "the re-pull read its config from the content store:\n{}", crid.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn state_survives_a_crid_crash() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "crash", crid_binary()).await;
    let (pod, pod_id) = crid.busybox_pod("survivor").await;
    let running =
        crid.create_container(&pod_id, &pod, "running", &["sh", "-c", "while true; do echo tick; sleep 1; done"]).await;
    crid.start_container(&running).await;
    let exited = crid.run_container(&pod_id, &pod, "exited", &["sh", "-c", "exit 4"]).await;
    assert_eq!(crid.wait_container_state(&exited, ContainerState::ContainerExited).await, 4);
    let created = crid.create_container(&pod_id, &pod, "created", &["true"]).await;

    crid.kill9();
    crid.spawn(crid_binary()).await;

    let pods = crid.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner().items;
    assert_eq!(pods.len(), 1);
    assert_eq!(
        (pods[0].id.as_str(), PodSandboxState::try_from(pods[0].state).unwrap()),
        (pod_id.as_str(), PodSandboxState::SandboxReady)
    );
    assert_eq!(crid.container_state(&running).await.0, ContainerState::ContainerRunning);
    assert_eq!(crid.container_state(&exited).await, (ContainerState::ContainerExited, 4));
    assert_eq!(crid.container_state(&created).await.0, ContainerState::ContainerCreated);

    // The recovered container's output keeps reaching its log after the restart.
    let log_path = Path::new(&pod.log_directory).join("running.log");
    let before = read_log(&log_path).lines().count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_log(&log_path).lines().count() <= before + 1 {
        assert!(Instant::now() < deadline, "log stopped growing after restart");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exec = ExecSyncRequest { container_id: running.clone(), cmd: vec!["echo".into(), "alive".into()], timeout: 10 };
    assert_eq!(crid.runtime.exec_sync(exec).await.unwrap().into_inner().stdout, b"alive\n");

    crid.remove_pod(&pod_id).await;
    let containers =
        crid.runtime.list_containers(ListContainersRequest::default()).await.unwrap().into_inner().containers;
    assert!(containers.is_empty(), "RemovePodSandbox removes its containers: {containers:?}");
    crid.assert_no_leaks();
}

/// containerd restarts under a running crid: crid keeps serving, an exit that happens after the
/// restart still reaches ContainerStatus with its code, and new containers start.
/// The init's pid as containerd's task list shows it.
fn task_pid(cri: &Cri, id: &str) -> i32 {
    let tasks = cri.ctr(&["tasks", "ls"]);
    tasks
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(id)).then(|| fields.next().and_then(|pid| pid.parse().ok())).flatten()
        })
        .unwrap_or_else(|| panic!("no task {id} in:\n{tasks}"))
}

/// The file that freezes the cgroup of `pid`: the v1 freezer's state, or v2's cgroup.freeze.
fn freezer_of(pid: i32) -> (PathBuf, &'static str) {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path_of = |controller: &str| {
        cgroups.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            (controllers == controller).then(|| path.trim_start_matches('/').to_string())
        })
    };
    match path_of("freezer") {
        Some(path) => (Path::new("/sys/fs/cgroup/freezer").join(path).join("freezer.state"), "FROZEN"),
        None => (Path::new("/sys/fs/cgroup").join(path_of("").unwrap()).join("cgroup.freeze"), "1"),
    }
}

/// A pod's IP stays reported while its netns is open: after its pause process is killed the
/// pod is NOTREADY and still shows its IP, until StopPodSandbox closes the netns.
async fn ip_reported_while_the_netns_is_open(cri: &mut Cri) {
    let who = cri.kind.name();
    let (_, pod_id) = cri.busybox_pod("ip-open").await;
    let ip = cri.pod_status(&pod_id).await.network.map(|n| n.ip).unwrap_or_default();
    assert!(ip.starts_with(cri.ip_prefix), "{who}: {ip:?}");
    let pause = task_pid(cri, &pod_id);
    let killed = std::process::Command::new("kill").args(["-9", &pause.to_string()]).status().unwrap();
    assert!(killed.success(), "{who}: kill -9 {pause}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while cri.pod_status(&pod_id).await.state != PodSandboxState::SandboxNotready as i32 {
        assert!(Instant::now() < deadline, "{who}: the pod did not become NOTREADY");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = cri.pod_status(&pod_id).await;
    assert_eq!(status.network.map(|n| n.ip), Some(ip), "{who}: the IP of a NOTREADY pod whose netns is open");
    cri.stop_pod(&pod_id).await;
    let status = cri.pod_status(&pod_id).await;
    assert!(status.network.is_none_or(|n| n.ip.is_empty()), "{who}: Stop closed the netns");
    cri.remove_pod_only(&pod_id).await;
    cri.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn a_notready_pod_keeps_its_ip_while_its_netns_is_open() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "ip-open", crid_binary()).await;
    ip_reported_while_the_netns_is_open(&mut crid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn reference_notready_pod_ip_on_containerd_cri() {
    let stack = stack();
    let mut reference = Cri::reference(&stack, "ip-open").await;
    ip_reported_while_the_netns_is_open(&mut reference).await;
}

/// What runc leaves when a kill of every process is cut off between freezing the container's
/// cgroup and thawing it (the shim's call to runc is killed as containerd restarts): the
/// processes are gone but the cgroup stays frozen, so runc reports the container paused and
/// refuses to delete it ("cannot delete container … that is not stopped: paused"), while the
/// shim, which saw the init exit, refuses a resume. The container's exit is served, and its
/// removal still succeeds and leaves nothing behind.
async fn frozen_leftovers_do_not_block_removal(cri: &mut Cri) {
    let (pod, pod_id) = cri.busybox_pod("frozen").await;
    // On a loaded machine the runtime can handle the exit and remove the cgroup between the kill
    // and the freeze: the case did not happen, and it is set up again with a new container.
    const ATTEMPTS: u32 = 5;
    let mut attempt = 0;
    let (id, freezer) = loop {
        attempt += 1;
        // A pid namespace of its own, as kubelet asks by default: the shim then does not kill
        // the rest of the container when the init exits, which would thaw the cgroup.
        let mut config = cri.container_config(&format!("left-{attempt}"), &["sleep", "1000"]);
        let linux = config.linux.get_or_insert_with(Default::default);
        linux.security_context = Some(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption { pid: NamespaceMode::Container as i32, ..Default::default() }),
            ..Default::default()
        });
        let id = cri.run_container_with(&pod_id, &pod, config).await;
        let init = task_pid(cri, &id);
        let (freezer, frozen) = freezer_of(init);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), nix::sys::signal::Signal::SIGKILL).unwrap();
        // Freeze once the init has died (frozen first, it would wait for a thaw to die: another
        // case), microseconds later, long before the exit reaches the runtime and its delete.
        let dead = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
                stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with(['Z', 'X']))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dead(init) {
            assert!(Instant::now() < deadline, "SIGKILL did not end pid {init}");
            std::hint::spin_loop();
        }
        match std::fs::write(&freezer, frozen) {
            Ok(()) => break (id, freezer),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < ATTEMPTS => {
                eprintln!("attempt {attempt}: the task went before the freeze; again");
                assert_eq!(cri.wait_container_state(&id, ContainerState::ContainerExited).await, 137);
                cri.remove_container(&id).await;
            }
            Err(e) => panic!("freeze {}: {e} (the task went first, {attempt} times)", freezer.display()),
        }
    };
    assert_eq!(cri.wait_container_state(&id, ContainerState::ContainerExited).await, 137);
    cri.remove_container(&id).await;
    // crid deletes the task after RemoveContainer's reply (containerd's CRI before it).
    let what = format!("{}: the container's cgroup gone", cri.kind.name());
    eventually(Duration::from_secs(10), &what, cri, || !freezer.exists()).await;
    cri.remove_pod(&pod_id).await;
    cri.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn a_frozen_leftover_does_not_block_removal() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "frozen", crid_binary()).await;
    frozen_leftovers_do_not_block_removal(&mut crid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn reference_frozen_leftover_on_containerd_cri() {
    let stack = stack();
    let mut reference = Cri::reference(&stack, "frozen").await;
    frozen_leftovers_do_not_block_removal(&mut reference).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn survives_a_containerd_restart() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "ctrd", crid_binary()).await;
    let (pod, pod_id) = crid.busybox_pod("steady").await;
    let waiter = crid
        .create_container(&pod_id, &pod, "waiter", &["sh", "-c", "while [ ! -f /tmp/go ]; do sleep 0.2; done; exit 5"])
        .await;
    crid.start_container(&waiter).await;

    common::restart_containerd(&stack);

    assert_eq!(crid.container_state(&waiter).await.0, ContainerState::ContainerRunning);
    assert_eq!(crid.exec(&waiter, &["touch", "/tmp/go"]).await.0, 0);
    assert_eq!(
        crid.wait_container_state(&waiter, ContainerState::ContainerExited).await,
        5,
        "the exit after the restart is seen"
    );
    let after = crid.run_container(&pod_id, &pod, "after", &["sh", "-c", "exit 6"]).await;
    assert_eq!(crid.wait_container_state(&after, ContainerState::ContainerExited).await, 6);
    let status = crid.pod_status(&pod_id).await;
    assert_eq!(PodSandboxState::try_from(status.state).unwrap(), PodSandboxState::SandboxReady);
    crid.remove_pod(&pod_id).await;
    crid.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn refuses_to_start_without_containerd() {
    let _stack = stack();
    let dir = PathBuf::from("/tmp").join(unique("crid-it-nocd"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "socket_path = \"{0}/crid.sock\"\nroot_dir = \"{0}/root\"\nstate_dir = \"{0}/state\"\n[containerd]\naddress = \"{0}/nothing.sock\"\n",
        dir.display()
    );
    std::fs::write(dir.join("crid.toml"), config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_crid")).arg("--config").arg(dir.join("crid.toml")).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("unreachable"), "{stderr}");
    let output =
        Command::new(env!("CARGO_BIN_EXE_crid")).arg("--config").arg(dir.join("missing.toml")).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml"));
    let _ = std::fs::remove_dir_all(&dir);
}

type WebSocket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens a WebSocket to a stream URL, asking for `protocol`; the server must agree to it.
async fn websocket_connect(url: &str, protocol: &str) -> WebSocket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut request = ws_url.as_str().into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", protocol.parse().unwrap());
    let host = ws_url.trim_start_matches("ws://").split('/').next().unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    let (socket, response) = tokio_tungstenite::client_async(request, tcp).await.expect("websocket upgrade");
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), protocol);
    socket
}

/// A WebSocket exec client, as kubectl ≥ 1.30 speaks to a stream URL: each message carries one
/// channel; returns stdout, stderr and the error channel once the server closed.
async fn websocket_exec(url: &str, protocol: &str, stdin: &[u8]) -> (String, String, String) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut socket = websocket_connect(url, protocol).await;
    if !stdin.is_empty() {
        let mut frame = vec![0u8];
        frame.extend_from_slice(stdin);
        socket.send(Message::Binary(frame.into())).await.unwrap();
    }
    // v5's close signal: stdin ends.
    socket.send(Message::Binary(vec![255u8, 0].into())).await.unwrap();
    let (mut stdout, mut stderr, mut error) = (Vec::new(), Vec::new(), Vec::new());
    let deadline = Duration::from_secs(30);
    while let Ok(Some(Ok(message))) = tokio::time::timeout(deadline, socket.next()).await {
        match message {
            Message::Binary(data) if !data.is_empty() => match data[0] {
                1 => stdout.extend_from_slice(&data[1..]),
                2 => stderr.extend_from_slice(&data[1..]),
                3 => error.extend_from_slice(&data[1..]),
                _ => {}
            },
            Message::Close(_) => break,
            _ => {}
        }
    }
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (text(stdout), text(stderr), text(error))
}

/// Exec over WebSocket (`v5.channel.k8s.io`): stdin in (its end signalled by v5's close
/// message), stdout and stderr out, and the exit code in the error channel's Status; bad tokens
/// and unknown subprotocols get clear HTTP errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn websocket_exec_streams_and_reports_exit() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "ws", crid_binary()).await;
    let (pod, pod_id) = crid.busybox_pod("ws").await;
    let id = crid.run_container(&pod_id, &pod, "app", &["sleep", "1000"]).await;

    let exec = |cmd: &[&str], stdin: bool| ExecRequest {
        container_id: id.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty: false,
        stdin,
        stdout: true,
        stderr: true,
    };
    let script = ["sh", "-c", "cat; echo to-stderr >&2; exit 3"];
    let url = crid.runtime.exec(exec(&script, true)).await.unwrap().into_inner().url;
    let (stdout, stderr, error) = websocket_exec(&url, "v5.channel.k8s.io", b"hello over websocket\n").await;
    assert_eq!(stdout, "hello over websocket\n", "stderr {stderr:?}, error {error:?}; crid log:\n{}", crid.log());
    assert_eq!(stderr, "to-stderr\n");
    let status: serde_json::Value = serde_json::from_str(&error).unwrap_or_else(|e| panic!("{e}: {error:?}"));
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");

    let url = crid.runtime.exec(exec(&["echo", "ok"], false)).await.unwrap().into_inner().url;
    let (stdout, _, error) = websocket_exec(&url, "v4.channel.k8s.io", b"").await;
    assert_eq!(stdout, "ok\n");
    let status: serde_json::Value = serde_json::from_str(&error).unwrap();
    assert_eq!(status["status"], "Success", "{status}");

    // No exec process is left behind by either session.
    let processes = crid.ctr(&["task", "ps", &id]);
    assert_eq!(processes.lines().count(), 2, "the init process alone (header + 1): {processes}");

    // Clear HTTP errors: a used token, an unknown protocol.
    let http = |url: &str, protocol: &str| {
        let output = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-H",
                "Connection: Upgrade",
                "-H",
                "Upgrade: websocket",
            ])
            .args(["-H", "Sec-WebSocket-Version: 13", "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="])
            .args(["-H", &format!("Sec-WebSocket-Protocol: {protocol}"), url])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(http(&url, "v4.channel.k8s.io"), "404", "a token serves once");
    let url = crid.runtime.exec(exec(&["true"], false)).await.unwrap().into_inner().url;
    assert_eq!(http(&url, "v9.channel.k8s.io"), "400", "an unknown subprotocol");

    crid.stop_pod(&pod_id).await;
    crid.remove_pod(&pod_id).await;
}

/// The stock crictl's interactive commands over crid's stream server (SPDY): `exec -i` with
/// stdin piped in, `exec -it` under a pseudo-terminal whose size reaches the container,
/// and `port-forward` with an HTTP request through it. (Attach: `crictl_attach_through_crid`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn crictl_streams_through_crid() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "crictl-streams", crid_binary()).await;
    let crictl = Crictl::of(&crid);
    let crictl_line = crictl.line();
    let (pod, pod_id) = crid.busybox_pod("streams").await;
    let web = "mkdir -p /www && echo hello-through-port-forward > /www/index.html && exec httpd -f -p 8080 -h /www";
    let id = crid.run_container(&pod_id, &pod, "web", &["sh", "-c", web]).await;

    // exec -i: stdin piped in, its end ends `cat`; stdout back.
    let echoed = shell(&format!("printf 'one\\ntwo\\n' | {crictl_line} exec -i {id} cat"), &crid);
    assert_eq!(echoed, "one\ntwo\n");
    // exec -it under a pseudo-terminal of 123x45: crictl sends the size on the resize stream,
    // and the process starts with it (containerd's would still be 0x0 here: it resizes only
    // after the start). A later size (the terminal resized while crictl runs in the background
    // of the same process group, so it gets the SIGWINCH) is a resize.
    for _ in 0..3 {
        let size = shell(
            &format!("script -qec \"stty cols 123 rows 45; {crictl_line} exec -it {id} busybox stty size\" /dev/null"),
            &crid,
        );
        // (`script` shows the pseudo-terminal's own echo, e.g. a NUL as `^@`, around the output.)
        assert!(size.lines().any(|line| line.trim_end().ends_with("45 123")), "{size:?}");
    }
    let resized = shell(
        &format!(
            "script -qec \"stty cols 123 rows 45; {crictl_line} exec -it {id} sh -c 'sleep 2; busybox stty size' < /dev/tty & sleep 1; stty cols 90 rows 30; wait\" /dev/null"
        ),
        &crid,
    );
    assert!(resized.lines().any(|line| line.trim_end().ends_with("30 90")), "{resized:?}");
    // A non-zero exit comes back through the v4 Status's ExitCode cause: client-go reports
    // "command terminated with exit code 7" (crictl 1.29 then exits 1).
    let failed = Command::new("sh")
        .args(["-c", &format!("{crictl_line} exec {id} sh -c 'exit 7'")])
        .output()
        .expect("run crictl");
    let said = String::from_utf8_lossy(&failed.stderr).into_owned() + &String::from_utf8_lossy(&failed.stdout);
    assert!(!failed.status.success() && said.contains("command terminated with exit code 7"), "{said}");

    // port-forward: a local port reaches the pod's httpd.
    let local_port = 20000 + (std::process::id() % 10000) as u16;
    let mut forward = crictl
        .command()
        .args(["port-forward", &pod_id, &format!("{local_port}:8080")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("crictl port-forward");
    let url = format!("http://127.0.0.1:{local_port}/index.html");
    let deadline = Instant::now() + Duration::from_secs(20);
    let page = loop {
        let output = Command::new("curl").args(["-s", "--max-time", "5", &url]).output().expect("curl");
        let page = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() && !page.is_empty() {
            break page;
        }
        assert!(Instant::now() < deadline, "no page through port-forward: {page:?}\n{}", crid.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = forward.kill();
    let _ = forward.wait();
    assert_eq!(page, "hello-through-port-forward\n");

    // No exec process outlives its session.
    let processes = crid.ctr(&["task", "ps", &id]);
    assert_eq!(processes.lines().count(), 2, "header and httpd (sh exec'd it), no exec left: {processes}");

    crid.stop_pod(&pod_id).await;
    crid.remove_pod(&pod_id).await;
}

/// The stock `crictl events` (grpc-go decoding with the Go protobuf types, printing through
/// jsonpb) follows a pod through its life on crid: each id's events in lifecycle order, each
/// carrying its pod's status and every container's as of sending (docs/behaviour.md §4.4).
/// containerd 1.6 answers GetContainerEvents Unimplemented (1.7 added it), so there is no
/// reference run: what is expected is containerd 1.7's sequence and content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn crictl_events_follow_a_pod_through_crid() {
    let stack = stack();
    let mut crid =
        Cri::crid_with_log(&stack, "crictl-events", crid_binary(), "info,crid_backend=debug,crid_grpc=debug").await;
    let crictl = Crictl::of(&crid);
    let busybox = crid.image("busybox:latest");
    crid.pull(&busybox).await;
    let printed = crid.dir.join("crictl-events.json");
    let mut events = crictl
        .command()
        .args(["events", "--output", "json"])
        .stdout(std::fs::File::create(&printed).expect("create the events file"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("crictl events");
    // An event sent before the stream is set up is not replayed: wait until crid has
    // subscribed it (logged once the subscription exists).
    eventually(Duration::from_secs(20), "crictl events reaching crid", &crid, || {
        crid.log().contains("rpc=\"get_container_events\"")
    })
    .await;

    let pod = crid.pod_config(&unique("events"));
    let pod_id = crid.run_pod(&pod).await;
    let id = crid.run_container(&pod_id, &pod, "quits", &["sh", "-c", "sleep 1; exit 3"]).await;
    assert_eq!(crid.wait_container_state(&id, ContainerState::ContainerExited).await, 3);
    crid.remove_container(&id).await;
    crid.remove_pod(&pod_id).await;

    // Every event as crictl printed it, in order: one JSON object each.
    let read = || -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&printed).unwrap_or_default();
        serde_json::Deserializer::from_str(&text).into_iter().map_while(Result::ok).collect()
    };
    let kind = |event: &serde_json::Value| event["containerEventType"].as_str().unwrap_or_default().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let received = loop {
        let received = read();
        if received.iter().any(|e| e["containerId"] == pod_id.as_str() && kind(e) == "CONTAINER_DELETED_EVENT") {
            break received;
        }
        assert!(Instant::now() < deadline, "no DELETED event for the pod: {received:#?}\n{}", crid.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = events.kill();
    let _ = events.wait();

    let of =
        |object: &str| -> Vec<&serde_json::Value> { received.iter().filter(|e| e["containerId"] == object).collect() };
    let lifecycle =
        ["CONTAINER_CREATED_EVENT", "CONTAINER_STARTED_EVENT", "CONTAINER_STOPPED_EVENT", "CONTAINER_DELETED_EVENT"];
    for object in [&pod_id, &id] {
        let kinds: Vec<String> = of(object).into_iter().map(kind).collect();
        assert_eq!(kinds, lifecycle, "events of {object}: {received:#?}");
    }
    // jsonpb prints an int64 as a string; the events' times never go back.
    let nanos = |value: &serde_json::Value| value.as_str().and_then(|s| s.parse::<i64>().ok()).unwrap_or(0);
    let times: Vec<i64> = received.iter().map(|e| nanos(&e["createdAt"])).collect();
    assert!(times.iter().all(|t| *t > 0) && times.windows(2).all(|w| w[0] <= w[1]), "event times {times:?}");

    let status_in = |event: &serde_json::Value| -> serde_json::Value {
        let statuses = event["containersStatuses"].as_array().cloned().unwrap_or_default();
        statuses
            .into_iter()
            .find(|s| s["id"] == id.as_str())
            .unwrap_or_else(|| panic!("no status of {id} in {event:#}"))
    };
    let container_events = of(&id);
    let created = status_in(container_events[0]);
    assert_eq!(created["state"], "CONTAINER_CREATED", "{created:#}");
    let started = status_in(container_events[1]);
    assert_eq!(started["state"], "CONTAINER_RUNNING", "{started:#}");
    assert!(nanos(&started["startedAt"]) > 0, "{started:#}");
    // STOPPED: the exit as ContainerStatus reports it, with everything the container was made with.
    let stopped_event = container_events[2];
    let stopped = status_in(stopped_event);
    assert_eq!(stopped["state"], "CONTAINER_EXITED", "{stopped:#}");
    assert_eq!(stopped["exitCode"], 3, "{stopped:#}");
    assert_eq!(stopped["reason"], "Error", "containerd names a non-zero exit without a reason Error: {stopped:#}");
    assert!(nanos(&stopped["finishedAt"]) >= nanos(&stopped["startedAt"]), "{stopped:#}");
    assert_eq!(stopped["metadata"]["name"], "quits", "{stopped:#}");
    assert!(stopped["logPath"].as_str().is_some_and(|p| p.ends_with("quits.log")), "{stopped:#}");
    assert!(stopped["imageRef"].as_str().is_some_and(|r| r.contains("sha256:")), "{stopped:#}");
    assert!(stopped["image"]["image"].as_str().is_some_and(|i| !i.is_empty()), "{stopped:#}");
    let pod_status = &stopped_event["podSandboxStatus"];
    assert_eq!(pod_status["id"], pod_id.as_str(), "{stopped_event:#}");
    assert_eq!(pod_status["state"], "SANDBOX_READY", "{stopped_event:#}");
    assert_eq!(pod_status["metadata"]["name"], pod.metadata.as_ref().unwrap().name.as_str(), "{stopped_event:#}");
    assert!(pod_status["network"]["ip"].as_str().is_some_and(|ip| !ip.is_empty()), "{stopped_event:#}");
    // The pod's own STOPPED: its sandbox no longer ready.
    let pod_stopped = of(&pod_id)[2];
    assert_eq!(pod_stopped["podSandboxStatus"]["state"], "SANDBOX_NOTREADY", "{pod_stopped:#}");
}

/// Runs a shell command line: (exit code, stdout, stderr).
fn shell_output(line: &str) -> (Option<i32>, String, String) {
    let output = Command::new("sh").args(["-c", line]).output().expect("run sh");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

/// The stock `crictl attach` to containers created with stdin, stdin_once and tty, as kubectl
/// attach and run -it use them: what the container writes reaches the client (stdout and
/// stderr apart without a tty), the client's stdin reaches the container, the end of a
/// stdin_once stdin ends the container, and a tty attach carries the client's terminal size.
async fn crictl_attach(cri: &mut Cri) {
    let who = cri.kind.name();
    let crictl = Crictl::of(cri);
    let line = crictl.line();
    let (pod, pod_id) = cri.busybox_pod("attach").await;

    // Output only: a container that keeps writing to both streams; the attach goes on until
    // the client leaves.
    let mut config = cri.container_config(
        "ticker",
        &["sh", "-c", "i=0; while true; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 0.2; done"],
    );
    config.stdin = true;
    let ticker = cri.run_container_with(&pod_id, &pod, config).await;
    let (code, stdout, stderr) = shell_output(&format!("timeout 3 {line} attach {ticker}"));
    assert_eq!(code, Some(124), "{who}: the attach lasts until the client goes; {stdout:?} {stderr:?}");
    assert!(stdout.lines().filter(|l| l.starts_with("tick ")).count() >= 3, "{who}: stdout {stdout:?}");
    assert!(stderr.lines().filter(|l| l.starts_with("tock ")).count() >= 3, "{who}: stderr {stderr:?}");
    assert!(!stdout.contains("tock"), "{who}: stderr kept apart: {stdout:?}");

    // stdin in, both streams out; the end of the client's stdin closes a stdin_once stdin, so
    // the shell reaches its end and the attach ends with it.
    let mut config = cri.container_config("shell", &["sh"]);
    (config.stdin, config.stdin_once) = (true, true);
    let shell_id = cri.run_container_with(&pod_id, &pod, config).await;
    let (code, stdout, stderr) = shell_output(&format!(
        "(sleep 1; printf 'echo hello from attach\\necho to-stderr >&2\\n') | timeout 30 {line} attach -i {shell_id}"
    ));
    assert_eq!(code, Some(0), "{who}: {stdout:?} {stderr:?}\n{}", cri.log());
    assert_eq!(stdout, "hello from attach\n", "{who}: stderr {stderr:?}");
    assert!(stderr.contains("to-stderr"), "{who}: {stderr:?}");
    assert_eq!(cri.wait_container_state(&shell_id, ContainerState::ContainerExited).await, 0, "{who}");

    // A tty: under a pseudo-terminal of 77x22 whose size crictl sends on the resize stream;
    // `exit` ends the shell and the attach.
    let mut config = cri.container_config("terminal", &["sh"]);
    (config.stdin, config.stdin_once, config.tty) = (true, true, true);
    let terminal = cri.run_container_with(&pod_id, &pod, config).await;
    let typed = "(sleep 2; printf 'busybox stty size\\r'; sleep 1; printf 'echo $((6*7))\\r'; sleep 1; printf 'exit\\r'; sleep 5)";
    let (code, output, _) = shell_output(&format!(
        "{typed} | timeout 30 script -qec \"stty cols 77 rows 22; {line} attach -it {terminal}\" /dev/null"
    ));
    assert_eq!(code, Some(0), "{who}: {output:?}\n{}", cri.log());
    let lines: Vec<&str> = output.lines().map(str::trim_end).collect();
    assert!(lines.contains(&"22 77"), "{who}: the terminal size reached the container: {output:?}");
    assert!(lines.contains(&"42"), "{who}: {output:?}");
    assert_eq!(cri.wait_container_state(&terminal, ContainerState::ContainerExited).await, 0, "{who}");

    cri.remove_pod(&pod_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn crictl_attach_through_crid() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "attach", crid_binary()).await;
    crictl_attach(&mut crid).await;
    crid.assert_no_leaks();
}

/// The same attach against containerd's own CRI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn reference_crictl_attach_on_containerd_cri() {
    let stack = stack();
    let mut reference = Cri::reference(&stack, "attach").await;
    crictl_attach(&mut reference).await;
}

/// The next binary message of a WebSocket as (channel, payload); None once the server closed
/// (or after 30 s of silence).
async fn next_channel_message(socket: &mut WebSocket) -> Option<(u8, Vec<u8>)> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) if !data.is_empty() => return Some((data[0], data[1..].to_vec())),
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Port-forward over WebSocket, as kubelet frames it (`v4.channel.k8s.io`): the URL's `?port=`
/// names the ports, port i gets data channel 2i and error channel 2i+1, each first carrying
/// the port number (little-endian). An HTTP request to busybox httpd in the pod goes through
/// the data channel; a port nobody listens on answers on its error channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn websocket_port_forward_reaches_the_pod() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let stack = stack();
    let mut crid = Cri::crid(&stack, "ws-pf", crid_binary()).await;
    let (pod, pod_id) = crid.busybox_pod("ws-pf").await;
    let web = "mkdir -p /www && echo hello-through-websocket > /www/index.html && exec httpd -f -p 8080 -h /www";
    let web_id = crid.run_container(&pod_id, &pod, "web", &["sh", "-c", web]).await;
    let forward_url = |crid: &mut Cri| {
        let mut runtime = crid.runtime.clone();
        let pod_id = pod_id.clone();
        async move {
            let request = PortForwardRequest { pod_sandbox_id: pod_id, port: vec![] };
            runtime.port_forward(request).await.unwrap().into_inner().url
        }
    };

    // httpd is up once a request from inside the pod gets the page.
    let deadline = Instant::now() + Duration::from_secs(20);
    while crid.exec(&web_id, &["busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"]).await.0 != 0 {
        assert!(Instant::now() < deadline, "httpd did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = forward_url(&mut crid).await;
    let mut socket = websocket_connect(&format!("{url}?port=8080"), "v4.channel.k8s.io").await;
    assert_eq!(next_channel_message(&mut socket).await, Some((0, 8080u16.to_le_bytes().to_vec())));
    assert_eq!(next_channel_message(&mut socket).await, Some((1, 8080u16.to_le_bytes().to_vec())));
    let mut request = vec![0u8];
    request.extend_from_slice(b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n");
    socket.send(Message::Binary(request.into())).await.unwrap();
    let mut response = Vec::new();
    while !String::from_utf8_lossy(&response).contains("hello-through-websocket\n") {
        match next_channel_message(&mut socket).await {
            Some((0, data)) => response.extend_from_slice(&data),
            Some((1, error)) => panic!("error channel: {}", String::from_utf8_lossy(&error)),
            Some(_) => {}
            None => {
                panic!("the connection ended before the page: {:?}\n{}", String::from_utf8_lossy(&response), crid.log())
            }
        }
        assert!(Instant::now() < deadline, "no page: {:?}", String::from_utf8_lossy(&response));
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response:?}");
    socket.close(None).await.unwrap();

    // Nothing listens on port 9: the reason comes on port 0's error channel, channel 1.
    let url = forward_url(&mut crid).await;
    let mut socket = websocket_connect(&format!("{url}?port=9"), "v4.channel.k8s.io").await;
    let mut error = Vec::new();
    while let Some((channel, data)) = next_channel_message(&mut socket).await {
        if channel == 1 && data != 9u16.to_le_bytes() {
            error = data;
            break;
        }
    }
    let error = String::from_utf8_lossy(&error).into_owned();
    assert!(error.contains("error forwarding port 9") && error.contains(&pod_id), "{error:?}");
    drop(socket);

    // A port-forward URL without a port is refused.
    let url = forward_url(&mut crid).await;
    let output = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-H", "Connection: Upgrade", "-H", "Upgrade: websocket"])
        .args(["-H", "Sec-WebSocket-Version: 13", "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="])
        .args(["-H", "Sec-WebSocket-Protocol: v4.channel.k8s.io", &url])
        .output()
        .expect("curl");
    let answer = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(answer.ends_with("\n400") && answer.contains("?port="), "{answer:?}");

    crid.remove_pod(&pod_id).await;
    crid.assert_no_leaks();
}

/// `enable_tls_streaming`: the stream URLs are https. With no key pair the server makes a
/// self-signed certificate (the stock crictl, which does not verify it, as kubelet's proxy,
/// streams an exec through it); with `x509_key_pair_streaming` it serves that certificate (curl
/// verifies it against the file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn streams_over_tls() {
    let stack = stack();
    let mut crid = Cri::crid_with_cri_config(&stack, "tls-self", crid_binary(), "enable_tls_streaming = true").await;
    let crictl = Crictl::of(&crid);
    let (pod, pod_id) = crid.busybox_pod("tls").await;
    let id = crid.run_container(&pod_id, &pod, "app", &["sleep", "1000"]).await;
    let request =
        ExecRequest { container_id: id.clone(), cmd: vec!["true".into()], stdout: true, ..Default::default() };
    let url = crid.runtime.exec(request).await.unwrap().into_inner().url;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let echoed = shell(&format!("printf 'over tls\\n' | {} exec -i {id} cat", crictl.line()), &crid);
    assert_eq!(echoed, "over tls\n");
    let failed = crictl.command().args(["exec", &id, "sh", "-c", "exit 4"]).output().expect("run crictl");
    let said = String::from_utf8_lossy(&failed.stderr).into_owned();
    assert!(!failed.status.success() && said.contains("command terminated with exit code 4"), "{said}");
    // A client that verifies refuses the self-signed certificate; plain http gets no answer.
    let base = url.split("/exec/").next().unwrap().to_string();
    let curl = |args: &[&str]| {
        let output = Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]).args(args).output();
        String::from_utf8_lossy(&output.expect("curl").stdout).into_owned()
    };
    assert_eq!(curl(&["-k", &format!("{base}/exec/unknown")]), "400", "no upgrade asked for");
    assert_eq!(curl(&[&format!("{base}/exec/unknown")]), "000", "self-signed: not trusted");
    assert_eq!(curl(&[&format!("{}/exec/unknown", base.replacen("https", "http", 1))]), "000");
    crid.remove_pod(&pod_id).await;
    drop(crid);

    // A configured key pair, made with openssl for 127.0.0.1.
    let dir = PathBuf::from("/tmp").join(unique("crid-it-tls-pair"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=crid-stream"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let lines = format!(
        "enable_tls_streaming = true\n[cri.x509_key_pair_streaming]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        cert.display(),
        key.display()
    );
    let mut crid = Cri::crid_with_cri_config(&stack, "tls-pair", crid_binary(), &lines).await;
    let crictl = Crictl::of(&crid);
    let (pod, pod_id) = crid.busybox_pod("tls-pair").await;
    let id = crid.run_container(&pod_id, &pod, "app", &["sleep", "1000"]).await;
    let echoed = shell(&format!("printf 'with our key\\n' | {} exec -i {id} cat", crictl.line()), &crid);
    assert_eq!(echoed, "with our key\n");
    let request = ExecRequest { container_id: id, cmd: vec!["true".into()], stdout: true, ..Default::default() };
    let url = crid.runtime.exec(request).await.unwrap().into_inner().url;
    let cacert = cert.to_string_lossy().into_owned();
    assert_eq!(curl(&["--cacert", &cacert, &url]), "400", "the configured certificate is served: {url}");
    crid.remove_pod(&pod_id).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The rows `ctr <store> ls` prints for crid's namespace (without its header line).
fn store_rows(cri: &Cri, store: &str) -> Vec<String> {
    cri.ctr(&[store, "ls"]).lines().skip(1).filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

/// The first column of each row: a digest, a snapshot key or a lease id.
fn store_ids(cri: &Cri, store: &str) -> Vec<String> {
    store_rows(cri, store).iter().filter_map(|row| row.split_whitespace().next().map(str::to_string)).collect()
}

/// ImageFsInfo's used bytes (the snapshot usage crid last sampled).
async fn image_fs_used_bytes(cri: &mut Cri) -> u64 {
    let response = cri.images.image_fs_info(ImageFsInfoRequest {}).await.unwrap().into_inner();
    response.image_filesystems.iter().filter_map(|fs| fs.used_bytes.as_ref()).map(|used| used.value).sum()
}

/// Polls `check` every 100 ms until it holds, for at most `within`; panics with `what` otherwise.
async fn eventually<F: FnMut() -> bool>(within: Duration, what: &str, cri: &Cri, mut check: F) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "{what} not within {within:?}\nruntime log:\n{}", cri.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// Waits until ImageFsInfo reports `want` bytes (it follows the reconciler's usage refresh).
async fn image_fs_becomes(cri: &mut Cri, within: Duration, what: &str, want: impl Fn(u64) -> bool) -> u64 {
    let started = Instant::now();
    loop {
        let used = image_fs_used_bytes(cri).await;
        if want(used) {
            return used;
        }
        assert!(started.elapsed() < within, "{what}: ImageFsInfo still says {used} bytes after {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// RemoveImage gives the disk back: once an image's last reference goes, its blobs and
/// snapshots leave containerd's stores (garbage collection runs before the reply), and
/// ImageFsInfo drops to what it said before the pull. No lease outlives its pull. With two
/// images that share a layer, the shared layer stays until the second image goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn remove_image_frees_content_and_snapshots() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "gc", crid_binary()).await;
    let used_before = image_fs_used_bytes(&mut crid).await;
    assert!(store_rows(&crid, "content").is_empty() && store_rows(&crid, "snapshots").is_empty(), "a fresh namespace");

    let busybox = crid.image("busybox:latest");
    crid.pull(&busybox).await;
    let blobs = store_ids(&crid, "content");
    let snapshots = store_ids(&crid, "snapshots");
    assert!(blobs.len() >= 3 && !snapshots.is_empty(), "a pull stores blobs {blobs:?} and snapshots {snapshots:?}");
    assert_eq!(store_rows(&crid, "leases"), Vec::<String>::new(), "the pull's lease is gone once the pull is done");
    let used_pulled =
        image_fs_becomes(&mut crid, Duration::from_secs(10), "after the pull", |used| used > used_before).await;
    crid.remove_image(&busybox).await;
    let freed_after = eventually(Duration::from_secs(3), "empty content and snapshot stores", &crid, || {
        store_rows(&crid, "content").is_empty() && store_rows(&crid, "snapshots").is_empty()
    })
    .await;
    let used_after =
        image_fs_becomes(&mut crid, Duration::from_secs(10), "after RemoveImage", |used| used == used_before).await;
    eprintln!(
        "one image: {} blobs, {} snapshots, ImageFsInfo {used_before} -> {used_pulled} -> {used_after} bytes; \
         stores empty {freed_after:?} after RemoveImage",
        blobs.len(),
        snapshots.len()
    );

    // Two images sharing their base layer.
    let nonroot = crid.image("nonroot:latest");
    crid.pull(&busybox).await;
    // Pulled again after its blobs were collected: the config written anew is labelled with
    // its snapshot again (crid remembers which configs it labelled, and a blob written again
    // drops what it remembered), else the next collection would take the unpacked snapshot.
    let labelled: Vec<String> = store_rows(&crid, "content")
        .into_iter()
        .filter(|row| row.contains("containerd.io/gc.ref.snapshot.overlayfs="))
        .collect();
    assert_eq!(labelled.len(), 1, "one config holds the snapshot: {:?}", store_rows(&crid, "content"));
    let busybox_blobs = store_ids(&crid, "content");
    let busybox_snapshots = store_ids(&crid, "snapshots");
    crid.pull(&nonroot).await;
    let both_blobs = store_ids(&crid, "content");
    let both_snapshots = store_ids(&crid, "snapshots");
    assert_eq!(busybox_snapshots.len(), 1, "busybox has one layer: {busybox_snapshots:?}");
    assert!(both_snapshots.contains(&busybox_snapshots[0]) && both_snapshots.len() == 2, "{both_snapshots:?}");
    assert_eq!(both_blobs.len(), busybox_blobs.len() + 3, "nonroot adds a manifest, a config and one layer");
    let used_both = image_fs_becomes(&mut crid, Duration::from_secs(10), "two images", |used| used > used_pulled).await;

    crid.remove_image(&busybox).await;
    // What only busybox used (its manifest and config) goes; the shared layer and its snapshot
    // stay for nonroot.
    let left_blobs = store_ids(&crid, "content");
    let kept_of_busybox: Vec<&String> = busybox_blobs.iter().filter(|b| left_blobs.contains(b)).collect();
    assert_eq!(left_blobs.len(), both_blobs.len() - 2, "busybox's manifest and config go: {left_blobs:?}");
    assert_eq!(kept_of_busybox.len(), 1, "busybox's layer stays, shared with nonroot: {kept_of_busybox:?}");
    assert!(left_blobs.iter().all(|b| both_blobs.contains(b)));
    assert_eq!(store_ids(&crid, "snapshots"), both_snapshots, "both snapshots are nonroot's chain");
    crid.remove_image(&nonroot).await;
    eventually(Duration::from_secs(3), "empty content and snapshot stores after the second image", &crid, || {
        store_rows(&crid, "content").is_empty() && store_rows(&crid, "snapshots").is_empty()
    })
    .await;
    let used_end = image_fs_becomes(&mut crid, Duration::from_secs(10), "after both", |used| used == used_before).await;
    eprintln!(
        "two images: {} blobs, {} snapshots, ImageFsInfo {used_both} bytes; after removing busybox {} blobs, {} \
         snapshots; after both {used_end} bytes",
        both_blobs.len(),
        both_snapshots.len(),
        left_blobs.len(),
        both_snapshots.len()
    );
    assert_eq!(store_rows(&crid, "leases"), Vec::<String>::new());
}

/// A blob or snapshot a pull finds already there is held by the pull's lease from then on, as
/// containerd's own content writer and unpacker hold what they find: containerd collects
/// unreferenced content in the background, some time after the delete that left it so, and a
/// pull that skipped the fetch of a blob it only saw failed to unpack it ("content digest …:
/// not found"), which the lease churn above once hit. Here the image's record goes, a
/// synchronous collection runs, and only what the probe lease holds is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn what_a_pull_finds_is_held_by_its_lease() {
    use crid::ports::Containerd;
    let stack = stack();
    let mut crid = Cri::crid(&stack, "hold", crid_binary()).await;
    let content =
        |crid: &Cri| -> std::collections::BTreeSet<String> { store_ids(crid, "content").into_iter().collect() };
    // `ctr snapshots ls`: KEY, PARENT (empty for a base layer), KIND.
    let committed = |crid: &Cri| -> std::collections::BTreeSet<String> {
        crid.ctr(&["snapshots", "ls"])
            .lines()
            .skip(1)
            .filter(|l| l.split_whitespace().last() == Some("Committed"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };
    let (before, chains_before) = (content(&crid), committed(&crid));
    let busybox = crid.image("busybox:latest");
    crid.pull(&busybox).await;
    let pulled: Vec<String> = content(&crid).difference(&before).cloned().collect();
    assert!(pulled.len() >= 3, "a manifest, a config and a layer: {pulled:?}");
    let chain_id = committed(&crid).difference(&chains_before).next().expect("the pull unpacked a layer").clone();

    let fifo_dir = std::env::temp_dir().join(unique("hold-fifos"));
    let containerd = crid_backend::containerd::RealContainerd::new(crid_backend::containerd::ContainerdOptions {
        socket_path: crid.containerd_address.clone(),
        namespace: crid.namespace.clone(),
        fifo_dir,
        registry_config_path: None,
        default_snapshotter: "overlayfs".into(),
        max_log_line_bytes: 0,
    })
    .expect("a client of the test's containerd");
    containerd.create_lease("probe", &Default::default(), Duration::from_secs(600)).await.unwrap();
    // A layer: the manifest would hold the config and layers through its GC labels.
    let held = store_rows(&crid, "content")
        .iter()
        .filter(|row| !row.contains("containerd.io/gc.ref."))
        .filter_map(|row| row.split_whitespace().next())
        .find(|digest| pulled.iter().any(|blob| blob == digest))
        .expect("a pulled blob that references nothing: a layer")
        .to_string();
    assert!(containerd.content_exists(&held, "probe").await.unwrap());
    assert!(containerd.snapshot_exists("overlayfs", &chain_id, "probe").await.unwrap());
    // A blob found must be held, and cannot be by a lease that does not exist; an absent one
    // needs no lease (its fetch's commit holds it).
    let missing = containerd.content_exists(&held, "no-such-lease").await.unwrap_err();
    assert_eq!(missing.kind, crid::ErrorKind::NotFound, "{missing}");
    assert!(!containerd.content_exists(&format!("sha256:{}", "0".repeat(64)), "no-such-lease").await.unwrap());

    crid.remove_image(&busybox).await;
    // A lease created and deleted with --sync runs a whole collection before it answers.
    crid.ctr(&["leases", "create", "--id", "trigger"]);
    crid.ctr(&["leases", "rm", "--sync", "trigger"]);
    let left = content(&crid);
    assert!(left.contains(&held), "the probe lease holds {held}: {left:?}");
    assert!(pulled.iter().any(|blob| !left.contains(blob)), "the collection ran and took the rest: {left:?}");
    assert!(crid.ctr(&["snapshots", "ls"]).contains(&chain_id), "the probe lease holds snapshot {chain_id}");

    crid.ctr(&["leases", "rm", "--sync", "probe"]);
    assert!(!content(&crid).contains(&held), "once the lease goes, so does what only it held");
}

/// Leases deleted behind crid's back (an operator, or containerd's state lost) break nothing
/// for long: while something deletes every lease it sees, pulls and creations may fail, but
/// once it stops the next pull and the next container creation succeed (no lease id is
/// cached). No lease outlives its operation, and recovery deletes the leases of a crid that
/// died mid-pull (crid's label), leaving others' alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn leases_deleted_behind_crids_back() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "lease", crid_binary()).await;
    let (pod, pod_id) = crid.busybox_pod("lease").await;
    let first = crid.create_container(&pod_id, &pod, "first", &["sleep", "60"]).await;
    assert_eq!(store_rows(&crid, "leases"), Vec::<String>::new(), "no lease outlives its pull or creation");

    // A deleter that removes every lease of crid's namespace it sees, for three seconds.
    let (address, namespace) = (crid.containerd_address.clone(), crid.namespace.clone());
    let deleter = std::thread::spawn(move || {
        let ctr = |args: &[&str]| {
            let output = Command::new("ctr").args(["--address", &address, "-n", &namespace]).args(args).output();
            String::from_utf8_lossy(&output.expect("run ctr").stdout).into_owned()
        };
        let (started, mut deleted) = (Instant::now(), 0);
        while started.elapsed() < Duration::from_secs(3) {
            for lease in ctr(&["leases", "ls", "-q"]).lines().filter(|l| !l.trim().is_empty()) {
                ctr(&["leases", "rm", lease.trim()]);
                deleted += 1;
            }
        }
        deleted
    });
    let nonroot = crid.image("nonroot:latest");
    let (started, mut pulls, mut failed_pulls, mut creates, mut failed_creates) = (Instant::now(), 0, 0, 0, 0);
    while started.elapsed() < Duration::from_secs(3) {
        crid.remove_image(&nonroot).await;
        let request = PullImageRequest {
            image: Some(ImageSpec { image: nonroot.clone(), ..Default::default() }),
            ..Default::default()
        };
        pulls += 1;
        failed_pulls += usize::from(crid.images.pull_image(request).await.is_err());
        let config = crid.container_config(&unique("churn"), &["true"]);
        let request = CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        };
        creates += 1;
        match crid.runtime.create_container(request).await {
            Ok(response) => crid.remove_container(&response.into_inner().container_id).await,
            Err(_) => failed_creates += 1,
        }
    }
    let deleted = deleter.join().unwrap();
    eprintln!(
        "while leases were deleted behind crid's back: {deleted} deleted, {failed_pulls}/{pulls} pulls and \
         {failed_creates}/{creates} creations failed"
    );
    crid.pull(&nonroot).await;
    let second = crid.create_container(&pod_id, &pod, "second", &["sleep", "60"]).await;
    crid.start_container(&second).await;
    assert_eq!(store_rows(&crid, "leases"), Vec::<String>::new(), "no lease outlives its operation");

    // A pull lease left by a crid that died mid-pull, and a lease that is not crid's.
    crid.ctr(&["leases", "create", "--id", "crid-pull-leftover", "io.crid.lease=pull"]);
    crid.ctr(&["leases", "create", "--id", "someone-else", "owner=other"]);
    crid.kill9();
    crid.spawn(crid_binary()).await;
    assert_eq!(store_ids(&crid, "leases"), vec!["someone-else".to_string()], "recovery deletes crid's leftover leases");
    crid.ctr(&["leases", "rm", "someone-else"]);

    crid.remove_container(&first).await;
    crid.remove_pod(&pod_id).await;
    crid.assert_no_leaks();
}

/// A loopback HTTP server standing in for a registry mirror: it answers every request with 401
/// and a Basic challenge (so a client holding credentials would retry with them, and one
/// without moves on to the next endpoint), and records each request's Authorization header.
struct RecordingMirror {
    port: u16,
    /// One entry per request: its Authorization header, empty when it had none.
    authorizations: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RecordingMirror {
    async fn start() -> RecordingMirror {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let authorizations = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = authorizations.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 << 10 {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let authorization = head
                        .lines()
                        .filter_map(|line| line.split_once(':'))
                        .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
                        .map(|(_, value)| value.trim().to_string())
                        .unwrap_or_default();
                    seen.lock().unwrap().push(authorization);
                    let answer = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"mirror\"\r\n\
                                  Content-Length: 0\r\nConnection: close\r\n\r\n";
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        RecordingMirror { port, authorizations }
    }

    fn requests(&self) -> Vec<String> {
        self.authorizations.lock().unwrap().clone()
    }
}

/// Credentials go only to the host they are for: a mirror listed ahead of the credentialed
/// registry in its hosts.toml is asked (and asks for credentials) but never receives them,
/// whether the AuthConfig names its `server_address` or leaves it empty; and credentials whose
/// `server_address` names the mirror are not sent to the registry either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn credentials_never_reach_another_host() {
    let stack = stack();
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let registry = var("CRID_AUTH_REGISTRY");
    let (user, password) = (var("CRID_AUTH_REGISTRY_USER"), var("CRID_AUTH_REGISTRY_PASSWORD"));
    let mirror = RecordingMirror::start().await;
    let mirror_host = format!("127.0.0.1:{}", mirror.port);
    let hosts = PathBuf::from("/tmp").join(unique("crid-it-hosts"));
    std::fs::create_dir_all(hosts.join(&registry)).unwrap();
    std::fs::write(
        hosts.join(&registry).join("hosts.toml"),
        format!(
            "server = \"http://{registry}\"\n\
             [host.\"http://{mirror_host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\
             [host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
    let mut crid = Cri::crid_with_registry_hosts(&stack, "secrets", crid_binary(), &hosts).await;
    let image = format!("{registry}/private/busybox:latest");
    let pull = |server_address: &str| PullImageRequest {
        image: Some(ImageSpec { image: image.clone(), ..Default::default() }),
        auth: Some(AuthConfig {
            username: user.clone(),
            password: password.clone(),
            server_address: server_address.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    for server_address in ["", registry.as_str(), &format!("http://{registry}/v2/")] {
        let before = mirror.requests().len();
        let id = crid
            .images
            .pull_image(pull(server_address))
            .await
            .unwrap_or_else(|e| panic!("pull with server_address {server_address:?}: {e}\n{}", crid.log()))
            .into_inner()
            .image_ref;
        assert!(id.starts_with("sha256:"), "{id}");
        let requests = mirror.requests();
        let asked = &requests[before..];
        assert!(!asked.is_empty(), "the mirror comes first in hosts.toml, so it is asked");
        assert!(asked.iter().all(|a| a.is_empty()), "{server_address:?}: the mirror got credentials: {asked:?}");
        crid.remove_image(&image).await;
    }
    let error = crid
        .images
        .pull_image(pull(&format!("http://{mirror_host}")))
        .await
        .expect_err("credentials for the mirror do not open the registry");
    assert_eq!(error.code(), tonic::Code::FailedPrecondition, "{error:?}");
    let sent: Vec<String> = mirror.requests().into_iter().filter(|a| !a.is_empty()).collect();
    assert!(!sent.is_empty(), "the credentials meant for the mirror reach it: {:?}", mirror.requests());
    assert!(!crid.log().contains(&password), "the password never reaches crid's log");
    eprintln!("mirror asked {} times, {} of them with its own credentials", mirror.requests().len(), sent.len());
    crid.assert_no_leaks();
    let _ = std::fs::remove_dir_all(&hosts);
}

/// Bad input is refused with InvalidArgument before anything is made, and nothing is written
/// outside the directories crid owns: log paths that climb out of the pod's log directory,
/// mounts over the root or with relative paths, devices that are missing or no device, resource
/// values no runtime honours, names with path separators; error messages quote a bounded
/// prefix of a huge input. crid still serves afterwards and holds no half-made container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn bad_input_is_refused_and_nothing_escapes() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "refuse", crid_binary()).await;
    let (pod, pod_id) = crid.busybox_pod("refuse").await;
    let escape = PathBuf::from("/tmp").join(unique("crid-escape")).with_extension("log");
    let escape_name = escape.file_name().unwrap().to_string_lossy().into_owned();
    let base = crid.container_config("c", &["sleep", "60"]);
    let mount = |host: &str, container: &str| Mount {
        host_path: host.into(),
        container_path: container.into(),
        ..Default::default()
    };
    let device =
        |host: &str| Device { host_path: host.into(), container_path: "/dev/x".into(), permissions: "rw".into() };
    let resources = |r: LinuxContainerResources| LinuxContainerConfig { resources: Some(r), ..Default::default() };
    let not_a_device = crid.dir.join("crid.toml").to_string_lossy().into_owned();
    let cases: Vec<(&str, ContainerConfig)> = vec![
        (
            "log path climbing out",
            ContainerConfig { log_path: format!("../../../../../../../../tmp/{escape_name}"), ..base.clone() },
        ),
        ("absolute log path", ContainerConfig { log_path: escape.to_string_lossy().into_owned(), ..base.clone() }),
        ("mount over the root", ContainerConfig { mounts: vec![mount("/", "../../")], ..base.clone() }),
        ("mount cleaned to the root", ContainerConfig { mounts: vec![mount("/", "/x/../..")], ..base.clone() }),
        ("relative mount", ContainerConfig { mounts: vec![mount("/tmp", "data")], ..base.clone() }),
        ("empty mount host path", ContainerConfig { mounts: vec![mount("", "/data")], ..base.clone() }),
        ("missing device", ContainerConfig { devices: vec![device("/dev/crid-no-such-device")], ..base.clone() }),
        ("file as a device", ContainerConfig { devices: vec![device(&not_a_device)], ..base.clone() }),
        (
            "negative cpu shares",
            ContainerConfig {
                linux: Some(resources(LinuxContainerResources { cpu_shares: -2, ..Default::default() })),
                ..base.clone()
            },
        ),
        (
            "oom_score_adj out of range",
            ContainerConfig {
                linux: Some(resources(LinuxContainerResources { oom_score_adj: 5000, ..Default::default() })),
                ..base.clone()
            },
        ),
        (
            "name with a path separator",
            ContainerConfig { metadata: Some(ContainerMetadata { name: "../x".into(), attempt: 0 }), ..base.clone() },
        ),
        // containerd's store answers an empty label key with an error that has no code.
        ("label with an empty key", ContainerConfig { labels: [(String::new(), "v".into())].into(), ..base.clone() }),
    ];
    for (what, config) in cases {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        };
        let error = crid.runtime.create_container(request).await.expect_err(what);
        assert_eq!(error.code(), tonic::Code::InvalidArgument, "{what}: {error:?}");
        crid.runtime.version(VersionRequest::default()).await.unwrap_or_else(|e| panic!("after {what}: {e}"));
    }
    assert!(!escape.exists(), "nothing written outside the pod's log directory");
    let containers = crid.runtime.list_containers(ListContainersRequest::default()).await.unwrap().into_inner();
    assert!(containers.containers.is_empty(), "no half-made container: {:?}", containers.containers);

    let mut bad_pod = crid.pod_config("bad");
    bad_pod.metadata.as_mut().unwrap().name = "a/../../b".into();
    let request = RunPodSandboxRequest { config: Some(bad_pod), runtime_handler: String::new() };
    let error = crid.runtime.run_pod_sandbox(request).await.expect_err("a pod name with a separator");
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    let mut bad_pod = crid.pod_config("bad-label");
    bad_pod.labels.insert(String::new(), "v".into());
    let request = RunPodSandboxRequest { config: Some(bad_pod), runtime_handler: String::new() };
    let error = crid.runtime.run_pod_sandbox(request).await.expect_err("a pod label with an empty key");
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");

    // A running container's resources cannot be updated to values no runtime honours either.
    let id = crid.run_container(&pod_id, &pod, "ok", &["sleep", "60"]).await;
    let update = UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(LinuxContainerResources { cpu_period: -5, ..Default::default() }),
        ..Default::default()
    };
    let error = crid.runtime.update_container_resources(update).await.expect_err("a negative period");
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");

    let huge = format!("{}/x:{}", "a".repeat(5000), "t".repeat(10));
    let pull =
        PullImageRequest { image: Some(ImageSpec { image: huge.clone(), ..Default::default() }), ..Default::default() };
    let error = crid.images.pull_image(pull).await.expect_err("a 5,000-character reference");
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    let mut huge_image = crid.container_config("huge", &["true"]);
    huge_image.image = Some(ImageSpec { image: huge.clone(), ..Default::default() });
    let request = CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config: Some(huge_image),
        sandbox_config: Some(pod.clone()),
    };
    let not_found = crid.runtime.create_container(request).await.expect_err("an image that is not there");
    let status = crid.runtime.container_status(ContainerStatusRequest { container_id: huge.clone(), verbose: false });
    let unknown = status.await.expect_err("an id that is not there");
    for error in [&error, &not_found, &unknown] {
        assert!(error.message().len() < 1024, "{} bytes: {}", error.message().len(), error.message());
    }
    eprintln!(
        "messages for a {}-byte input: {}, {} and {} bytes",
        huge.len(),
        error.message().len(),
        not_found.message().len(),
        unknown.message().len()
    );

    crid.stop_container(&id, 0).await;
    crid.remove_container(&id).await;
    crid.remove_pod(&pod_id).await;
    crid.assert_no_leaks();
}

/// What crid exposes: its CRI socket with mode 0660 by default, and on TCP only the stream
/// server, on the loopback address it is configured with by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn only_the_socket_and_a_loopback_stream_server_are_exposed() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let stack = stack();
    let crid = Cri::crid(&stack, "expose", crid_binary()).await;
    let meta = std::fs::metadata(crid.dir.join("crid.sock")).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o7777, 0o660, "the CRI socket is for root and its group only");

    let pid = crid.pid().expect("crid runs");
    let own_sockets: std::collections::BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    // (local address in /proc's hex form, family) of every TCP socket of crid that listens.
    let mut listening = Vec::new();
    for (table, family) in [("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1, st (0A = LISTEN) field 3, inode field 9.
            if fields.len() > 9 && fields[3] == "0A" && own_sockets.contains(fields[9]) {
                listening.push((fields[1].to_string(), family));
            }
        }
    }
    assert_eq!(listening.len(), 1, "one TCP listener, the stream server's: {listening:?}");
    let (address, family) = &listening[0];
    assert_eq!(*family, 4);
    assert!(address.starts_with("0100007F:"), "bound to 127.0.0.1, not {address}");
    eprintln!("crid listens on TCP at {address} only (127.0.0.1, the stream server)");
}

/// Every RPC with generated and malformed fields (see `fuzz/mod.rs`); `CRID_FUZZ_CASES` and
/// `CRID_FUZZ_SEED` choose how many cases and which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn fuzzed_rpcs_get_typed_answers() {
    fuzz::fuzz_every_rpc().await;
}

/// The size of the tmpfs the full-disk test gives crid's `root_dir`: room for a few pods'
/// files and checkpoints, small enough to fill in a moment.
const SMALL_ROOT_DIR_BYTES: u64 = 4 << 20;

/// Writes `path` until the filesystem refuses (ENOSPC); returns how many bytes went in.
fn fill_until_full(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let mut written = 0u64;
    // Large chunks first, then single pages, so that no free page is left over.
    for chunk in [vec![0xa5u8; 256 << 10], vec![0x5au8; 4 << 10]] {
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("fill {}: {e}", path.display()),
            }
        }
    }
    written
}

/// The gRPC code of a reply (Ok for a success).
fn code_of<T>(reply: &Result<tonic::Response<T>, tonic::Status>) -> tonic::Code {
    reply.as_ref().map_or_else(|status| status.code(), |_| tonic::Code::Ok)
}

/// What verbose Status lists as quarantined (objects recovery could not load).
async fn quarantined(cri: &mut Cri) -> Vec<serde_json::Value> {
    let info = cri.runtime.status(StatusRequest { verbose: true }).await.unwrap().into_inner().info;
    let text = info.get("quarantine").expect("verbose Status has a quarantine entry");
    serde_json::from_str(text).unwrap()
}

/// Files under `dir` whose name says they are an unfinished atomic write.
fn temp_files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(temp_files_under(&path));
        } else if entry.file_name().to_string_lossy().contains(".tmp-") {
            found.push(path);
        }
    }
    found
}

/// crid's `root_dir` (its status checkpoints and pod files) is a small tmpfs that fills up while
/// pods run. Calls that must persist are refused with ResourceExhausted, and nothing is left
/// half-done; calls that only read or remove keep working; a container that exits meanwhile
/// keeps its acknowledged state until its exit can be recorded. crid neither panics nor wedges,
/// a restart (SIGKILL) on the full disk recovers everything, and once space returns the refused
/// calls succeed and a last restart finds every acknowledged object, nothing quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn a_full_state_disk_refuses_typed_and_recovers() {
    let stack = stack();
    let mut crid = Cri::crid_with_small_root_dir(&stack, "disk", crid_binary(), SMALL_ROOT_DIR_BYTES).await;
    let root = crid.dir.join("root");
    let (pod, pod_id) = crid.busybox_pod("full").await;
    let waiter = crid
        .run_container(&pod_id, &pod, "waiter", &["sh", "-c", "while [ ! -f /tmp/go ]; do sleep 0.2; done; exit 5"])
        .await;
    let stopped = crid
        .run_container(&pod_id, &pod, "stopped", &["sh", "-c", "trap 'exit 7' TERM; while true; do sleep 0.2; done"])
        .await;
    let created = crid.create_container(&pod_id, &pod, "created", &["sh", "-c", "exit 3"]).await;
    let doomed = crid.create_container(&pod_id, &pod, "doomed", &["true"]).await;

    let filler = root.join("filler");
    let filled = fill_until_full(&filler);
    let free = nix::sys::statvfs::statvfs(&root).unwrap();
    eprintln!("filled crid's root_dir with {filled} bytes; {} blocks free", free.blocks_available());

    // Calls that must persist are refused, typed, and leave nothing behind.
    let containerd_before = crid.ctr(&["containers", "ls", "-q"]);
    let run =
        RunPodSandboxRequest { config: Some(crid.pod_config(&unique("refused"))), runtime_handler: String::new() };
    let refused_pod = crid.runtime.run_pod_sandbox(run.clone()).await;
    assert_eq!(code_of(&refused_pod), tonic::Code::ResourceExhausted, "RunPodSandbox on a full disk: {refused_pod:?}");
    let create = CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config: Some(crid.container_config("refused", &["sh", "-c", "exit 9"])),
        sandbox_config: Some(pod.clone()),
    };
    let refused_create = crid.runtime.create_container(create.clone()).await;
    assert_eq!(
        code_of(&refused_create),
        tonic::Code::ResourceExhausted,
        "CreateContainer on a full disk: {refused_create:?}"
    );
    let start = StartContainerRequest { container_id: created.clone() };
    let refused_start = crid.runtime.start_container(start.clone()).await;
    assert_eq!(
        code_of(&refused_start),
        tonic::Code::ResourceExhausted,
        "StartContainer on a full disk: {refused_start:?}"
    );
    eprintln!(
        "refused on the full disk: RunPodSandbox {:?}; CreateContainer {:?}; StartContainer {:?}",
        refused_pod.unwrap_err().message(),
        refused_create.unwrap_err().message(),
        refused_start.unwrap_err().message()
    );
    assert_eq!(crid.ctr(&["containers", "ls", "-q"]), containerd_before, "a refused call leaves no containerd object");
    assert_eq!(
        crid.container_state(&created).await.0,
        ContainerState::ContainerCreated,
        "a refused start changes nothing"
    );
    // Removal needs no space, and frees some (its dirs go after the reply): fill that again.
    crid.remove_container(&doomed).await;
    let (doomed_dir, doomed_mark) =
        (root.join("containers").join(&doomed), root.join("containers").join(format!("{doomed}.removed")));
    eventually(Duration::from_secs(10), "the removed container's dir and mark gone", &crid, || {
        !doomed_dir.exists() && !doomed_mark.exists()
    })
    .await;
    fill_until_full(&root.join("filler2"));

    // The waiter exits while its exit cannot be recorded: it stays as acknowledged (RUNNING),
    // never a state that a restart could contradict.
    assert_eq!(crid.exec(&waiter, &["touch", "/tmp/go"]).await.0, 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        crid.container_state(&waiter).await.0,
        ContainerState::ContainerRunning,
        "an exit not yet persisted is not served"
    );
    // Stop on the full disk: the container exits on SIGTERM, its exit cannot be recorded, and
    // Stop says so, typed, once the grace period is over, rather than DeadlineExceeded after
    // the 30 s wait for an exit after SIGKILL. The container stays as acknowledged.
    let asked = Instant::now();
    let stop = StopContainerRequest { container_id: stopped.clone(), timeout: 2 };
    let refused_stop = crid.runtime.stop_container(stop.clone()).await;
    let stop_took = asked.elapsed();
    assert_eq!(
        code_of(&refused_stop),
        tonic::Code::ResourceExhausted,
        "StopContainer on a full disk: {refused_stop:?}"
    );
    assert!(stop_took < Duration::from_secs(10), "StopContainer (timeout 2 s) on a full disk took {stop_took:?}");
    eprintln!("refused on the full disk after {stop_took:?}: StopContainer {:?}", refused_stop.unwrap_err().message());
    assert_eq!(
        crid.container_state(&stopped).await.0,
        ContainerState::ContainerRunning,
        "an exit a refused Stop could not persist is not served"
    );

    // A crash on the full disk: recovery finds every acknowledged object.
    crid.kill9();
    crid.spawn(crid_binary()).await;
    let ids = |items: Vec<Container>| -> Vec<String> {
        let mut ids: Vec<String> = items.into_iter().map(|c| c.id).collect();
        ids.sort();
        ids
    };
    let mut want = vec![waiter.clone(), stopped.clone(), created.clone()];
    want.sort();
    let listed = crid.runtime.list_containers(ListContainersRequest::default()).await.unwrap().into_inner().containers;
    assert_eq!(ids(listed), want, "containers after a restart on the full disk");
    assert_eq!(crid.container_state(&created).await.0, ContainerState::ContainerCreated);
    let pods = crid.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner().items;
    assert_eq!(pods.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), vec![pod_id.as_str()]);
    assert_eq!(quarantined(&mut crid).await, Vec::<serde_json::Value>::new(), "nothing quarantined on the full disk");
    // Recovery reads the exit from the stopped task, which stays until the exit is persisted:
    // a later restart decides the same.
    assert_eq!(crid.container_state(&waiter).await, (ContainerState::ContainerExited, 5), "the exit, from the task");
    assert_eq!(
        crid.container_state(&stopped).await,
        (ContainerState::ContainerExited, 7),
        "the stop's exit, from the task"
    );
    assert!(crid.pid().is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()), "crid still runs");

    // Space returns: the refused calls succeed, and the exit is recorded with its code.
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(root.join("filler2")).unwrap();
    let new_pod = crid.runtime.run_pod_sandbox(run).await.unwrap().into_inner().pod_sandbox_id;
    let new_container = crid.runtime.create_container(create).await.unwrap().into_inner().container_id;
    crid.start_container(&new_container).await;
    crid.start_container(&created).await;
    crid.runtime.stop_container(stop).await.unwrap();
    assert_eq!(crid.container_state(&stopped).await, (ContainerState::ContainerExited, 7));
    assert_eq!(crid.wait_container_state(&created, ContainerState::ContainerExited).await, 3);
    assert_eq!(crid.wait_container_state(&new_container, ContainerState::ContainerExited).await, 9);

    // A last crash: everything acknowledged comes back as it was, nothing quarantined, no
    // unfinished write left in the state directory.
    crid.kill9();
    crid.spawn(crid_binary()).await;
    let mut want = vec![waiter.clone(), stopped.clone(), created.clone(), new_container.clone()];
    want.sort();
    let listed = crid.runtime.list_containers(ListContainersRequest::default()).await.unwrap().into_inner().containers;
    assert_eq!(ids(listed), want, "containers after space returned and a restart");
    assert_eq!(crid.container_state(&waiter).await, (ContainerState::ContainerExited, 5));
    assert_eq!(crid.container_state(&stopped).await, (ContainerState::ContainerExited, 7));
    assert_eq!(crid.container_state(&created).await, (ContainerState::ContainerExited, 3));
    assert_eq!(crid.container_state(&new_container).await, (ContainerState::ContainerExited, 9));
    let mut pods: Vec<String> = crid
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    pods.sort();
    let mut want_pods = vec![pod_id.clone(), new_pod.clone()];
    want_pods.sort();
    assert_eq!(pods, want_pods);
    assert_eq!(quarantined(&mut crid).await, Vec::<serde_json::Value>::new(), "nothing quarantined");
    assert_eq!(temp_files_under(&root), Vec::<PathBuf>::new(), "no unfinished write left behind");
    let log = crid.log();
    assert!(!log.contains("panicked"), "crid panicked:\n{log}");

    crid.remove_pod(&pod_id).await;
    crid.remove_pod(&new_pod).await;
    crid.assert_no_leaks();
}

/// Pods (each with one running container) the memory test runs and removes;
/// `CRID_BURST_PODS` overrides it.
const BURST_PODS: usize = 40;
/// How many of them are in flight at once, as kubelet's workers would be;
/// `CRID_BURST_CONCURRENCY` overrides it.
const BURST_CONCURRENCY: usize = 8;
/// The ExecSync output each pod of the burst asks for, in MiB, so that reply buffers are part
/// of the load; `CRID_BURST_EXEC_MIB` overrides it.
const BURST_EXEC_OUTPUT_MIB: usize = 1;
/// How far above its level before the burst crid's resident memory may stay once every pod
/// of the burst is gone.
const RSS_RETURN_BOUND_KIB: u64 = 30 * 1024;

/// A field of /proc/PID/status in KiB: `VmRSS` (resident memory) or `RssAnon` (its part that
/// is not mapped from files: the heap, stacks).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.split(':').next() == Some(field)).expect("the field in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |text| text.parse().unwrap_or_else(|_| panic!("{name}={text}")))
}

/// One pod of the burst: runs it with a container, execs in it (a line, then
/// BURST_EXEC_OUTPUT_MIB of output), then stops and removes it.
async fn burst_pod(
    cri: &Cri,
    mut runtime: runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    name: String,
) {
    let pod = cri.pod_config(&name);
    let request = RunPodSandboxRequest { config: Some(pod.clone()), runtime_handler: String::new() };
    let pod_id = runtime.run_pod_sandbox(request).await.unwrap().into_inner().pod_sandbox_id;
    let create = CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config: Some(cri.container_config("app", &["sh", "-c", "while true; do echo tick; sleep 1; done"])),
        sandbox_config: Some(pod),
    };
    let id = runtime.create_container(create).await.unwrap().into_inner().container_id;
    runtime.start_container(StartContainerRequest { container_id: id.clone() }).await.unwrap();
    let exec = ExecSyncRequest { container_id: id.clone(), cmd: vec!["echo".into(), "hi".into()], timeout: 10 };
    assert_eq!(runtime.exec_sync(exec).await.unwrap().into_inner().stdout, b"hi\n");
    let output_mib = env_usize("CRID_BURST_EXEC_MIB", BURST_EXEC_OUTPUT_MIB);
    if output_mib > 0 {
        let dd = format!("dd if=/dev/zero bs=1048576 count={output_mib} 2>/dev/null");
        let exec = ExecSyncRequest { container_id: id, cmd: vec!["sh".into(), "-c".into(), dd], timeout: 30 };
        assert_eq!(runtime.exec_sync(exec).await.unwrap().into_inner().stdout.len(), output_mib << 20);
    }
    runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod_id.clone() }).await.unwrap();
    runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod_id }).await.unwrap();
}

/// After a burst of pods is created and removed, crid's resident memory comes back to within
/// RSS_RETURN_BOUND_KIB of its level before the burst: nothing per pod stays behind, and what
/// the allocator keeps for reuse is bounded. `CRID_BURST_PODS`, `CRID_BURST_CONCURRENCY` and
/// `CRID_BURST_EXEC_MIB` make the burst larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn memory_returns_after_a_burst() {
    let stack = stack();
    let mut crid = Cri::crid_with_log(&stack, "rss", crid_binary(), "info").await;
    let pid = crid.pid().unwrap();
    let busybox = crid.image("busybox:latest");
    crid.pull(&busybox).await;
    // One pod first, so that what is allocated once (the sandbox image, CNI, the stream server)
    // counts in the level before the burst.
    burst_pod(&crid, crid.runtime.clone(), unique("warm")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kib = rss_kib(pid);
    let anon_before_kib = proc_status_kib(pid, "RssAnon");
    let (burst_pods, concurrency) =
        (env_usize("CRID_BURST_PODS", BURST_PODS), env_usize("CRID_BURST_CONCURRENCY", BURST_CONCURRENCY));

    let crid = std::sync::Arc::new(crid);
    let started = Instant::now();
    let mut peak_kib = before_kib;
    for wave in 0..burst_pods.div_ceil(concurrency) {
        let mut pods = Vec::new();
        for n in 0..concurrency.min(burst_pods - wave * concurrency) {
            let crid = crid.clone();
            let name = unique(&format!("burst{wave}x{n}"));
            pods.push(tokio::spawn(async move { burst_pod(&crid, crid.runtime.clone(), name).await }));
        }
        for pod in pods {
            pod.await.unwrap();
        }
        peak_kib = peak_kib.max(rss_kib(pid));
    }
    let burst = started.elapsed();
    let mut crid = std::sync::Arc::into_inner(crid).unwrap();
    let pods = crid.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner().items;
    assert!(pods.is_empty(), "the burst's pods are gone: {pods:?}");
    // A few reconcile periods (2 s) for what runs after a removal.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after_kib = rss_kib(pid);
    let anon_after_kib = proc_status_kib(pid, "RssAnon");
    eprintln!(
        "crid RSS: {before_kib} KiB before {burst_pods} pods ({concurrency} at a time, {burst:.1?}), peak \
         {peak_kib} KiB, {after_kib} KiB after they were removed (anonymous: {anon_before_kib} -> {anon_after_kib} KiB)"
    );
    assert!(
        after_kib <= before_kib + RSS_RETURN_BOUND_KIB,
        "crid's RSS stays at {after_kib} KiB after the burst, {before_kib} KiB before it"
    );
    crid.assert_no_leaks();
}

/// The pod stats of a node through the stock crictl, as kubelet's stats provider reads them:
/// `crictl stats` (ListContainerStats) shows every running container with its CPU and memory
/// usage, and `crictl statsp` (ListPodSandboxStats) every pod with its container's. The pods
/// have cgroups of their own, as kubelet's do (containerd's CRI refuses a pod's stats without).
async fn crictl_stats(cri: &mut Cri) {
    let who = cri.kind.name();
    let crictl = Crictl::of(cri);
    let parent = format!("/{}", unique("crid-stats"));
    cri.pull(&cri.image("busybox:latest")).await;
    let mut running = HashMap::new();
    for n in 0..3 {
        let mut pod = cri.pod_config(&unique(&format!("stats{n}")));
        let name = pod.metadata.as_ref().unwrap().name.clone();
        pod.linux.get_or_insert_default().cgroup_parent = format!("{parent}/{name}");
        let pod_id = cri.run_pod(&pod).await;
        let id = cri.run_container(&pod_id, &pod, "app", &["sleep", "3600"]).await;
        running.insert(pod_id, id);
    }
    let value = |v: &serde_json::Value| v["value"].as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);

    let listed: serde_json::Value = serde_json::from_str(&crictl.run(&["stats", "-o", "json"], cri)).unwrap();
    let stats = listed["stats"].as_array().unwrap_or_else(|| panic!("{who}: crictl stats: {listed}"));
    let mut seen: Vec<&str> = stats.iter().filter_map(|s| s["attributes"]["id"].as_str()).collect();
    seen.sort_unstable();
    let mut want: Vec<&str> = running.values().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(seen, want, "{who}: crictl stats shows every running container: {listed}");
    for stat in stats {
        assert!(value(&stat["cpu"]["usageCoreNanoSeconds"]) > 0, "{who}: CPU usage: {stat}");
        assert!(value(&stat["memory"]["workingSetBytes"]) > 0, "{who}: memory usage: {stat}");
        // The rate kubelet reads as current use: 0 on a first read (and for a sleeping
        // container), but there.
        assert!(stat["cpu"]["usageNanoCores"]["value"].is_string(), "{who}: CPU rate: {stat}");
    }
    // What each pod's interface counted so far, as the container sees it in its own sysfs:
    // read before the pod stats, so the stats count at least as much.
    let mut counted = HashMap::new();
    for (pod_id, id) in &running {
        let mut bytes = Vec::new();
        for direction in ["rx", "tx"] {
            let path = format!("/sys/class/net/eth0/statistics/{direction}_bytes");
            let (code, out) = cri.exec(id, &["cat", &path]).await;
            assert_eq!(code, 0, "{who}: {direction} bytes inside the container: {out}");
            bytes.push(out.trim().parse::<u64>().unwrap_or_else(|_| panic!("{who}: {path}: {out:?}")));
        }
        counted.insert(pod_id.clone(), (bytes[0], bytes[1]));
    }

    let listed: serde_json::Value = serde_json::from_str(&crictl.run(&["statsp", "-o", "json"], cri)).unwrap();
    let pods = listed["stats"].as_array().unwrap_or_else(|| panic!("{who}: crictl statsp: {listed}"));
    assert_eq!(pods.len(), running.len(), "{who}: crictl statsp shows every pod: {listed}");
    for pod in pods {
        let pod_id = pod["attributes"]["id"].as_str().unwrap_or_default();
        let container = running.get(pod_id).unwrap_or_else(|| panic!("{who}: a pod of the node: {pod}"));
        let containers = pod["linux"]["containers"].as_array().unwrap_or_else(|| panic!("{who}: {pod}"));
        assert_eq!(containers.len(), 1, "{who}: the pod's container: {pod}");
        assert_eq!(containers[0]["attributes"]["id"].as_str(), Some(container.as_str()), "{who}: {pod}");
        assert!(value(&containers[0]["cpu"]["usageCoreNanoSeconds"]) > 0, "{who}: {pod}");
        assert!(value(&pod["linux"]["cpu"]["usageCoreNanoSeconds"]) > 0, "{who}: the pod's CPU usage: {pod}");
        assert!(value(&pod["linux"]["memory"]["workingSetBytes"]) > 0, "{who}: the pod's memory usage: {pod}");
        // The pod's usage is its cgroup's, which holds the pause process besides the container
        // (and counts the exec above): more than the container's own.
        assert!(
            value(&pod["linux"]["cpu"]["usageCoreNanoSeconds"]) > value(&containers[0]["cpu"]["usageCoreNanoSeconds"]),
            "{who}: the pod's CPU time counts its pause process: {pod}"
        );
        assert!(pod["linux"]["cpu"]["usageNanoCores"]["value"].is_string(), "{who}: the pod's CPU rate: {pod}");
        assert!(value(&pod["linux"]["process"]["processCount"]) >= 1, "{who}: the pod's processes: {pod}");
        let interface = &pod["linux"]["network"]["defaultInterface"];
        assert_eq!(interface["name"].as_str(), Some("eth0"), "{who}: the pod's interface: {pod}");
        let (rx, tx) = counted[pod_id];
        assert!(
            value(&interface["rxBytes"]) >= rx && value(&interface["txBytes"]) >= tx,
            "{who}: the pod's network usage counts what its interface did ({rx} bytes in, {tx} out): {pod}"
        );
    }

    for pod_id in running.keys() {
        cri.remove_pod(pod_id).await;
    }
    common::remove_cgroups_under(&parent).await;
}

/// The CPU rate a runtime reports agrees with what a container does: a container that spins
/// uses most of a core between two reads a couple of seconds apart, and so does its pod; an
/// idle one next to it uses next to none.
async fn cpu_rate_of_a_busy_container(cri: &mut Cri) {
    let who = cri.kind.name();
    let parent = format!("/{}", unique("crid-rate"));
    cri.pull(&cri.image("busybox:latest")).await;
    let mut pod = cri.pod_config(&unique("rate"));
    let name = pod.metadata.as_ref().unwrap().name.clone();
    pod.linux.get_or_insert_default().cgroup_parent = format!("{parent}/{name}");
    let pod_id = cri.run_pod(&pod).await;
    let busy = cri.run_container(&pod_id, &pod, "busy", &["sh", "-c", "while :; do :; done"]).await;
    let idle = cri.run_container(&pod_id, &pod, "idle", &["sleep", "3600"]).await;

    let rates = || {
        let mut runtime = cri.runtime.clone();
        let (pod_id, busy, idle) = (pod_id.clone(), busy.clone(), idle.clone());
        async move {
            let container = |id: String| ContainerStatsRequest { container_id: id };
            let cores = |stats: Option<ContainerStats>| {
                stats.and_then(|s| s.cpu).and_then(|cpu| cpu.usage_nano_cores).map(|v| v.value)
            };
            let busy = cores(runtime.container_stats(container(busy)).await.unwrap().into_inner().stats);
            let idle = cores(runtime.container_stats(container(idle)).await.unwrap().into_inner().stats);
            let pod = runtime.pod_sandbox_stats(PodSandboxStatsRequest { pod_sandbox_id: pod_id }).await.unwrap();
            let pod = pod.into_inner().stats.and_then(|s| s.linux).and_then(|l| l.cpu);
            (busy, idle, pod.and_then(|cpu| cpu.usage_nano_cores).map(|v| v.value))
        }
    };
    rates().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (busy_rate, idle_rate, pod_rate) = rates().await;
    // One busy loop on a 2-CPU machine gets most of a CPU, less what the other work here takes.
    let most_of_a_core = 400_000_000..=1_100_000_000;
    assert!(
        busy_rate.is_some_and(|rate| most_of_a_core.contains(&rate)),
        "{who}: a spinning container uses most of a core: {busy_rate:?} billionths"
    );
    assert!(
        idle_rate.is_some_and(|rate| rate < 50_000_000),
        "{who}: an idle container uses next to none: {idle_rate:?}"
    );
    assert!(
        pod_rate.is_some_and(|rate| most_of_a_core.contains(&rate)),
        "{who}: the pod's rate is its spinning container's: {pod_rate:?}"
    );
    cri.remove_pod(&pod_id).await;
    common::remove_cgroups_under(&parent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn cpu_rate_through_crid() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "rate", crid_binary()).await;
    cpu_rate_of_a_busy_container(&mut crid).await;
    crid.assert_no_leaks();
}

/// The same rates from containerd's own CRI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn reference_cpu_rate_on_containerd_cri() {
    let stack = stack();
    let mut reference = Cri::reference(&stack, "rate").await;
    cpu_rate_of_a_busy_container(&mut reference).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn crictl_stats_through_crid() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "stats", crid_binary()).await;
    crictl_stats(&mut crid).await;
    crid.assert_no_leaks();
}

/// The same stats from containerd's own CRI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn reference_crictl_stats_on_containerd_cri() {
    let stack = stack();
    let mut reference = Cri::reference(&stack, "stats").await;
    crictl_stats(&mut reference).await;
}
