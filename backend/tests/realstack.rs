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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cri, Kind, read_log, stack, unique};
use k8s_cri::v1::*;

fn crid_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_crid"))
}

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
    let short = cri.create_container(&pod_id, &pod, "short", &["sh", "-c", "exit 7"]).await;
    cri.start_container(&short).await;
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

/// A client binary the real-stack run provides (`ci/test` builds and exports them): a test that
/// needs one fails, never passes, when it is missing.
fn client_from_env(var: &str, what: &str) -> PathBuf {
    let path =
        std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| panic!("{var} is not set: the path of {what}"));
    assert!(path.exists(), "{var}={} does not exist", path.display());
    path
}

/// Runs the stock crictl against `socket`; panics with its output unless it succeeds.
fn crictl(crictl: &Path, socket: &Path, args: &[&str], cri: &Cri) -> String {
    let endpoint = format!("unix://{}", socket.display());
    let output = Command::new(crictl)
        .args(["--runtime-endpoint", &endpoint, "--image-endpoint", &endpoint, "--timeout", "60s"])
        .args(args)
        .output()
        .expect("run crictl");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "crictl {args:?}: {}\nstdout: {stdout}\nstderr: {}\ncrid log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        cri.log()
    );
    stdout
}

/// Clients we did not write reach crid over its unix socket with their default `:authority`
/// (the socket path, which h2 alone rejects): the stock crictl 1.29 (grpc-go) drives a whole
/// lifecycle, and grpc-python's default `unix:` target gets a Version answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn stock_clients_drive_crid() {
    let stack = stack();
    let crictl_bin = client_from_env("CRID_CRICTL", "the stock crictl 1.29 (ci/critest build)");
    let python = client_from_env("CRID_GRPC_PYTHON", "a python with grpcio >= 1.57");
    let crid = Cri::crid(&stack, "clients", crid_binary()).await;
    let socket = crid.dir.join("crid.sock");
    let run = |args: &[&str]| crictl(&crictl_bin, &socket, args, &crid);

    let version = run(&["version"]);
    assert!(version.contains("RuntimeName:  crid") && version.contains("RuntimeApiVersion:  v1"), "{version}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/grpc_python_version.py");
    let output = Command::new(&python).arg(&script).arg(&socket).output().expect("run python");
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
    let busybox = cri.image("busybox:latest");
    cri.pull(&busybox).await;
    let pod = cri.pod_config(&unique("limits"));
    let pod_id = cri.run_pod(&pod).await;
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
    let id = cri.create_container_with(&pod_id, &pod, config).await;
    cri.start_container(&id).await;
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
    let hog = cri.create_container_with(&pod_id, &pod, config).await;
    cri.start_container(&hog).await;
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
    let busybox = cri.image("busybox:latest");
    cri.pull(&busybox).await;
    let pod = cri.pod_config(&unique("sec"));
    let pod_id = cri.run_pod(&pod).await;
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
    let id = cri.create_container_with(&pod_id, &pod, config).await;
    cri.start_container(&id).await;
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
    let other = cri.create_container(&pod_id, &pod, "neighbour", &["sleep", "1000"]).await;
    cri.start_container(&other).await;
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
    let app = cri.create_container_with(&pod_id, &pod, config).await;
    cri.start_container(&app).await;
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
    let debugger = cri.create_container_with(&pod_id, &pod, debug).await;
    cri.start_container(&debugger).await;
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
    let mounter = cri.create_container_with(&pod_id, &pod, privileged).await;
    cri.start_container(&mounter).await;
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
    let busybox = crid.image("busybox:latest");
    crid.pull(&busybox).await;
    let pod = crid.pod_config("stopper");
    let pod_id = crid.run_pod(&pod).await;
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
async fn state_survives_a_crid_crash() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "crash", crid_binary()).await;
    let busybox = crid.image("busybox:latest");
    crid.pull(&busybox).await;
    let pod = crid.pod_config("survivor");
    let pod_id = crid.run_pod(&pod).await;
    let running =
        crid.create_container(&pod_id, &pod, "running", &["sh", "-c", "while true; do echo tick; sleep 1; done"]).await;
    crid.start_container(&running).await;
    let exited = crid.create_container(&pod_id, &pod, "exited", &["sh", "-c", "exit 4"]).await;
    crid.start_container(&exited).await;
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

/// Restarts the stack's containerd (its shims, and so the containers, live on), as an upgrade
/// or a crash of containerd would, and waits until it answers again.
fn restart_containerd(stack: &common::Stack) {
    let pid_file = stack.dir.join("containerd.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Gone, or a zombie that its parent has not reaped: either way it serves no more.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(Instant::now() < deadline, "containerd ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(stack.dir.join("logs/containerd.log")).unwrap();
    // setsid: the new containerd must outlive this test process, as the first one did.
    #[expect(
        clippy::zombie_processes,
        reason = "the restarted containerd outlives the test; ci/realstack down stops it"
    )]
    let child = Command::new("setsid")
        .arg("containerd")
        .arg("--config")
        .arg(stack.dir.join("containerd/config.toml"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("restart containerd");
    std::fs::write(&pid_file, child.id().to_string()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !Command::new("ctr")
        .args(["--address", &stack.containerd_address, "version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(Instant::now() < deadline, "containerd did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// containerd restarts under a running crid: crid keeps serving, an exit that happens after the
/// restart still reaches ContainerStatus with its code, and new containers start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn survives_a_containerd_restart() {
    let stack = stack();
    let mut crid = Cri::crid(&stack, "ctrd", crid_binary()).await;
    let busybox = crid.image("busybox:latest");
    crid.pull(&busybox).await;
    let pod = crid.pod_config("steady");
    let pod_id = crid.run_pod(&pod).await;
    let waiter = crid
        .create_container(&pod_id, &pod, "waiter", &["sh", "-c", "while [ ! -f /tmp/go ]; do sleep 0.2; done; exit 5"])
        .await;
    crid.start_container(&waiter).await;

    restart_containerd(&stack);

    assert_eq!(crid.container_state(&waiter).await.0, ContainerState::ContainerRunning);
    assert_eq!(crid.exec(&waiter, &["touch", "/tmp/go"]).await.0, 0);
    assert_eq!(
        crid.wait_container_state(&waiter, ContainerState::ContainerExited).await,
        5,
        "the exit after the restart is seen"
    );
    let after = crid.create_container(&pod_id, &pod, "after", &["sh", "-c", "exit 6"]).await;
    crid.start_container(&after).await;
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

/// A WebSocket exec client, as kubectl ≥ 1.30 speaks to a stream URL: each message carries one
/// channel; returns stdout, stderr and the error channel once the server closed.
async fn websocket_exec(url: &str, protocol: &str, stdin: &[u8]) -> (String, String, String) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut request = ws_url.as_str().into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", protocol.parse().unwrap());
    let host = ws_url.trim_start_matches("ws://").split('/').next().unwrap().to_string();
    let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
    let (mut socket, response) = tokio_tungstenite::client_async(request, tcp).await.expect("websocket upgrade");
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), protocol);
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
    let busybox = crid.image("busybox:latest");
    crid.pull(&busybox).await;
    let pod = crid.pod_config(&unique("ws"));
    let pod_id = crid.run_pod(&pod).await;
    let id = crid.create_container(&pod_id, &pod, "app", &["sleep", "1000"]).await;
    crid.start_container(&id).await;

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

/// Runs a shell command line (pipes, `script`), returning its stdout; panics unless it succeeds.
fn shell(line: &str, cri: &Cri) -> String {
    let output = Command::new("sh").args(["-c", line]).output().expect("run sh");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{line}: {}\nstdout: {stdout}\nstderr: {}\ncrid log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        cri.log()
    );
    stdout
}

/// The stock crictl's interactive commands over crid's stream server (SPDY): `exec -i` with
/// stdin piped in, `exec -it` under a pseudo-terminal whose size reaches the container,
/// and `port-forward` with an HTTP request through it. (Attach is covered by critest's attach
/// spec; a crictl attach test is still to come.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real stack: eval \"$(ci/realstack up)\", then cargo test -p crid-backend --test realstack -- --ignored"]
async fn crictl_streams_through_crid() {
    let stack = stack();
    let crictl_bin = client_from_env("CRID_CRICTL", "the stock crictl 1.29 (ci/critest build)");
    let mut crid = Cri::crid(&stack, "crictl-streams", crid_binary()).await;
    let socket = crid.dir.join("crid.sock");
    let crictl_line = format!(
        "{} --runtime-endpoint unix://{} --image-endpoint unix://{} --timeout 60s",
        crictl_bin.display(),
        socket.display(),
        socket.display()
    );
    let busybox = crid.image("busybox:latest");
    crid.pull(&busybox).await;
    let pod = crid.pod_config(&unique("streams"));
    let pod_id = crid.run_pod(&pod).await;
    let web = "mkdir -p /www && echo hello-through-port-forward > /www/index.html && exec httpd -f -p 8080 -h /www";
    let id = crid.create_container(&pod_id, &pod, "web", &["sh", "-c", web]).await;
    crid.start_container(&id).await;

    // exec -i: stdin piped in, its end ends `cat`; stdout back.
    let echoed = shell(&format!("printf 'one\\ntwo\\n' | {crictl_line} exec -i {id} cat"), &crid);
    assert_eq!(echoed, "one\ntwo\n");
    // exec -it under a pseudo-terminal of 123x45: crictl sends the size on the resize stream.
    let size = shell(
        &format!(
            "script -qec \"stty cols 123 rows 45; {crictl_line} exec -it {id} sh -c 'sleep 1; busybox stty size'\" /dev/null"
        ),
        &crid,
    );
    // (`script` shows the pseudo-terminal's own echo, e.g. a NUL as `^@`, around the output.)
    assert!(size.lines().any(|line| line.trim_end().ends_with("45 123")), "{size:?}");
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
    let mut forward = Command::new(&crictl_bin)
        .args(["--runtime-endpoint", &format!("unix://{}", socket.display())])
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
