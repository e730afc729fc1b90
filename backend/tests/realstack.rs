//! Integration tests against the real stack (`ci/realstack up`): the `crid` binary on a private
//! containerd, a local registry and a CNI bridge, driven through a CRI client on crid's socket.
//!
//! They run only when `CRID_REALSTACK` is set (`eval "$(ci/realstack env)"` sets it and the paths
//! below); otherwise each test prints why it is skipped and passes. Each test uses its own
//! containerd namespace and directories, so tests may run in parallel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

/// Environment of the stack, from `ci/realstack env`.
struct Stack {
    containerd_address: String,
    cni_bin_dir: String,
    cni_conf_dir: String,
    registry: String,
    registry_config_path: String,
}

fn stack() -> Option<Stack> {
    if std::env::var_os("CRID_REALSTACK").is_none() {
        // Written to stderr directly: the test harness captures eprintln! but not this.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: CRID_REALSTACK is not set; run `eval \"$(ci/realstack up)\"` to run the real-stack tests"
        );
        return None;
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("CRID_REALSTACK is set but {name} is not"));
    Some(Stack {
        containerd_address: var("CRID_CONTAINERD_ADDRESS"),
        cni_bin_dir: var("CRID_CNI_BIN_DIR"),
        cni_conf_dir: var("CRID_CNI_CONF_DIR"),
        registry: var("CRID_REGISTRY"),
        registry_config_path: var("CRID_REGISTRY_CONFIG_PATH"),
    })
}

/// One crid daemon with its own directories and containerd namespace.
struct Crid {
    dir: PathBuf,
    namespace: String,
    containerd_address: String,
    child: Option<Child>,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

async fn connect(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
        }))
        .await
        .expect("connect to crid")
}

impl Crid {
    async fn start(stack: &Stack, name: &str) -> Crid {
        // Short base path: the socket path must fit in sun_path.
        let dir = PathBuf::from("/tmp").join(unique(&format!("crid-it-{name}")));
        std::fs::create_dir_all(&dir).unwrap();
        let namespace = unique(&format!("it-{name}"));
        let config = format!(
            r#"
socket_path = "{dir}/crid.sock"
root_dir = "{dir}/root"
state_dir = "{dir}/state"
log_level = "info,crid_backend=debug"
[containerd]
address = "{containerd}"
namespace = "{namespace}"
[cri]
sandbox_image = "{registry}/pause:3.8"
restrict_oom_score_adj = true
reconcile_period = 2
# Netns pins under the test dir, so a failed test leaves none in /run/netns.
netns_mounts_under_state_dir = true
[cri.cni]
bin_dir = "{bin}"
conf_dir = "{conf}"
[cri.registry]
config_path = "{hosts}"
"#,
            dir = dir.display(),
            containerd = stack.containerd_address,
            registry = stack.registry,
            bin = stack.cni_bin_dir,
            conf = stack.cni_conf_dir,
            hosts = stack.registry_config_path,
        );
        std::fs::write(dir.join("crid.toml"), config).unwrap();
        let mut crid = Crid {
            dir: dir.clone(),
            namespace,
            containerd_address: stack.containerd_address.clone(),
            child: None,
            runtime: RuntimeServiceClient::new(Endpoint::from_static("http://unused").connect_lazy()),
            images: ImageServiceClient::new(Endpoint::from_static("http://unused").connect_lazy()),
        };
        crid.spawn().await;
        crid
    }

    /// Starts (or restarts) the daemon and waits until its socket answers.
    async fn spawn(&mut self) {
        let socket = self.dir.join("crid.sock");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("crid.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_crid"))
            .arg("--config")
            .arg(self.dir.join("crid.toml"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn crid");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("crid exited early with {status}; log:\n{}", self.log());
            }
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "crid did not open its socket; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let channel = connect(&socket).await;
        self.runtime = RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
        self.images = ImageServiceClient::new(channel);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("crid.log")).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: the daemon must exit cleanly and remove its socket.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "crid ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ctr(&self, args: &[&str]) -> String {
        let output = Command::new("ctr")
            .args(["--address", &self.containerd_address, "-n", &self.namespace])
            .args(args)
            .output()
            .expect("run ctr");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn image(&self, name: &str) -> String {
        format!("{}/{name}", std::env::var("CRID_REGISTRY").unwrap())
    }

    async fn pull(&mut self, image: &str) -> String {
        let request = PullImageRequest { image: Some(ImageSpec { image: image.into(), ..Default::default() }), ..Default::default() };
        self.images.pull_image(request).await.unwrap_or_else(|e| panic!("pull {image}: {e}\n{}", self.log())).into_inner().image_ref
    }

    fn pod_config(&self, name: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata { name: name.into(), uid: unique("uid"), namespace: "default".into(), attempt: 0 }),
            hostname: name.into(),
            log_directory: self.dir.join("logs").join(name).to_string_lossy().into_owned(),
            linux: Some(LinuxPodSandboxConfig::default()),
            ..Default::default()
        }
    }

    async fn run_pod(&mut self, config: &PodSandboxConfig) -> String {
        let request = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        self.runtime.run_pod_sandbox(request).await.unwrap_or_else(|e| panic!("run pod: {e}\n{}", self.log())).into_inner().pod_sandbox_id
    }

    async fn create_container(&mut self, pod_id: &str, pod: &PodSandboxConfig, name: &str, command: &[&str]) -> String {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(ImageSpec { image: self.image("busybox:latest"), ..Default::default() }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        };
        let request = CreateContainerRequest { pod_sandbox_id: pod_id.into(), config: Some(config), sandbox_config: Some(pod.clone()) };
        self.runtime.create_container(request).await.unwrap_or_else(|e| panic!("create {name}: {e}\n{}", self.log())).into_inner().container_id
    }

    async fn start_container(&mut self, id: &str) {
        let request = StartContainerRequest { container_id: id.into() };
        self.runtime.start_container(request).await.unwrap_or_else(|e| panic!("start {id}: {e}\n{}", self.log()));
    }

    async fn container_state(&mut self, id: &str) -> (ContainerState, i32) {
        let request = ContainerStatusRequest { container_id: id.into(), verbose: false };
        let status = self.runtime.container_status(request).await.unwrap().into_inner().status.unwrap();
        (ContainerState::try_from(status.state).unwrap(), status.exit_code)
    }

    async fn wait_container_state(&mut self, id: &str, want: ContainerState) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (state, code) = self.container_state(id).await;
            if state == want {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} stuck in {state:?}, wanted {want:?}; containerd tasks:\n{}\n{}\n{}",
                self.ctr(&["tasks", "ls"]),
                self.ctr(&["tasks", "ps", id]),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn pod_status(&mut self, id: &str) -> PodSandboxStatus {
        let request = PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false };
        self.runtime.pod_sandbox_status(request).await.unwrap().into_inner().status.unwrap()
    }

    async fn remove_pod(&mut self, id: &str) {
        self.runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.unwrap_or_else(|e| panic!("stop pod: {e}\n{}", self.log()));
        self.runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.unwrap_or_else(|e| panic!("remove pod: {e}\n{}", self.log()));
    }

    /// Nothing of this crid is left in containerd or on the host.
    fn assert_no_leaks(&self) {
        assert_eq!(self.ctr(&["containers", "ls", "-q"]).trim(), "", "containers leaked");
        assert_eq!(self.ctr(&["tasks", "ls", "-q"]).trim(), "", "tasks leaked");
        let netns_dir = self.dir.join("state");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(netns_dir.to_string_lossy().as_ref())).collect();
        assert!(leaked.is_empty(), "mounts leaked: {leaked:#?}");
    }
}

impl Drop for Crid {
    fn drop(&mut self) {
        self.kill9();
        // Best-effort cleanup of what a failed test left in its namespace.
        for id in self.ctr(&["tasks", "ls", "-q"]).lines() {
            self.ctr(&["tasks", "kill", "-s", "SIGKILL", "-a", id]);
        }
        std::thread::sleep(Duration::from_millis(200));
        for id in self.ctr(&["tasks", "ls", "-q"]).lines() {
            self.ctr(&["tasks", "delete", "-f", id]);
        }
        for id in self.ctr(&["containers", "ls", "-q"]).lines() {
            self.ctr(&["containers", "delete", id]);
        }
        // Netns pins and shm mounts of a failed test; its directory (with crid.log) is kept.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.dir.to_string_lossy().into_owned();
        let mut points: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| p.starts_with(&prefix)).collect();
        points.sort_by(|a, b| b.cmp(a));
        for point in points {
            let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_and_container_lifecycle() {
    let Some(stack) = stack() else { return };
    let mut crid = Crid::start(&stack, "life").await;

    let version = crid.runtime.version(VersionRequest { version: "v1".into() }).await.unwrap().into_inner();
    assert_eq!(version.runtime_api_version, "v1");
    let status = crid.runtime.status(StatusRequest { verbose: false }).await.unwrap().into_inner().status.unwrap();
    assert!(status.conditions.iter().all(|c| c.status), "runtime conditions: {:?}", status.conditions);

    let busybox = crid.image("busybox:latest");
    let image_ref = crid.pull(&busybox).await;
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let listed = crid.images.list_images(ListImagesRequest::default()).await.unwrap().into_inner().images;
    assert!(listed.iter().any(|i| i.id == image_ref && i.repo_tags.contains(&busybox)), "{listed:?}");

    let pod = crid.pod_config("web");
    let pod_id = crid.run_pod(&pod).await;
    let status = crid.pod_status(&pod_id).await;
    assert_eq!(PodSandboxState::try_from(status.state).unwrap(), PodSandboxState::SandboxReady);
    let ip = status.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
    assert!(ip.starts_with("10.99."), "pod IP from the realstack network, got {ip:?}");

    let id = crid.create_container(&pod_id, &pod, "app", &["sh", "-c", "trap '' TERM; echo hello; echo oops >&2; while true; do sleep 1; done"]).await;
    assert_eq!(crid.container_state(&id).await.0, ContainerState::ContainerCreated);
    crid.start_container(&id).await;
    assert_eq!(crid.container_state(&id).await.0, ContainerState::ContainerRunning);

    let exec = ExecSyncRequest { container_id: id.clone(), cmd: vec!["sh".into(), "-c".into(), "echo out; echo err >&2; exit 3".into()], timeout: 10 };
    let response = crid.runtime.exec_sync(exec).await.unwrap_or_else(|e| panic!("exec: {e}\n{}", crid.log())).into_inner();
    assert_eq!((response.exit_code, response.stdout.as_slice(), response.stderr.as_slice()), (3, &b"out\n"[..], &b"err\n"[..]));

    // The log file is in the CRI format, both streams.
    let log_path = Path::new(&pod.log_directory).join("app.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(read_log(&log_path).contains("stdout F hello") && read_log(&log_path).contains("stderr F oops")) {
        assert!(Instant::now() < deadline, "log: {:?}", read_log(&log_path));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stats = crid.runtime.container_stats(ContainerStatsRequest { container_id: id.clone() }).await.unwrap().into_inner().stats.unwrap();
    assert!(stats.memory.and_then(|m| m.working_set_bytes).map(|v| v.value).unwrap_or(0) > 0, "memory stats");
    assert!(stats.cpu.is_some(), "cpu stats");

    let filter = ContainerFilter {
        pod_sandbox_id: pod_id.clone(),
        state: Some(ContainerStateValue { state: ContainerState::ContainerRunning as i32 }),
        ..Default::default()
    };
    let listed = crid.runtime.list_containers(ListContainersRequest { filter: Some(filter) }).await.unwrap().into_inner().containers;
    assert_eq!(listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec![id.as_str()]);

    // A second container that exits by itself reports its code.
    let short = crid.create_container(&pod_id, &pod, "short", &["sh", "-c", "exit 7"]).await;
    crid.start_container(&short).await;
    assert_eq!(crid.wait_container_state(&short, ContainerState::ContainerExited).await, 7);

    // Timeout 0: straight to SIGKILL (the graceful path has its own test below).
    crid.runtime.stop_container(StopContainerRequest { container_id: id.clone(), timeout: 0 }).await.unwrap();
    let code = crid.wait_container_state(&id, ContainerState::ContainerExited).await;
    assert_eq!(code, 137, "killed");

    for c in [&id, &short] {
        crid.runtime.remove_container(RemoveContainerRequest { container_id: c.to_string() }).await.unwrap();
    }
    crid.remove_pod(&pod_id).await;
    let pods = crid.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner().items;
    assert!(pods.is_empty(), "{pods:?}");
    crid.assert_no_leaks();
    // The pod's IP went back to the pool (host-local keeps one file per allocated address).
    let ipam = Path::new(&std::env::var("CRID_REALSTACK_DIR").unwrap()).join("cni/ipam/crid-net").join(&ip);
    assert!(!ipam.exists(), "IP {ip} still allocated");

    // SIGTERM: clean exit, socket removed.
    let status = crid.terminate();
    assert!(status.success(), "crid exit status {status}\n{}", crid.log());
    assert!(!crid.dir.join("crid.sock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_escalates_after_the_grace_period() {
    let Some(stack) = stack() else { return };
    let mut crid = Crid::start(&stack, "stop").await;
    let busybox = crid.image("busybox:latest");
    crid.pull(&busybox).await;
    let pod = crid.pod_config("stopper");
    let pod_id = crid.run_pod(&pod).await;
    let id = crid.create_container(&pod_id, &pod, "stubborn", &["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]).await;
    crid.start_container(&id).await;
    let started = Instant::now();
    crid.runtime.stop_container(StopContainerRequest { container_id: id.clone(), timeout: 2 }).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2), "SIGTERM is ignored: stop waits out the grace period ({:?})", started.elapsed());
    assert_eq!(crid.container_state(&id).await, (ContainerState::ContainerExited, 137));
    crid.remove_pod(&pod_id).await;
    crid.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_fetch_each_blob_once() {
    let Some(stack) = stack() else { return };
    let crid = Crid::start(&stack, "pull").await;
    let busybox = crid.image("busybox:latest");
    let mut pulls = Vec::new();
    for _ in 0..10 {
        let mut images = crid.images.clone();
        let busybox = busybox.clone();
        pulls.push(tokio::spawn(async move {
            let request = PullImageRequest { image: Some(ImageSpec { image: busybox, ..Default::default() }), ..Default::default() };
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
async fn state_survives_a_crid_crash() {
    let Some(stack) = stack() else { return };
    let mut crid = Crid::start(&stack, "crash").await;
    let busybox = crid.image("busybox:latest");
    crid.pull(&busybox).await;
    let pod = crid.pod_config("survivor");
    let pod_id = crid.run_pod(&pod).await;
    let running = crid.create_container(&pod_id, &pod, "running", &["sh", "-c", "while true; do echo tick; sleep 1; done"]).await;
    crid.start_container(&running).await;
    let exited = crid.create_container(&pod_id, &pod, "exited", &["sh", "-c", "exit 4"]).await;
    crid.start_container(&exited).await;
    assert_eq!(crid.wait_container_state(&exited, ContainerState::ContainerExited).await, 4);
    let created = crid.create_container(&pod_id, &pod, "created", &["true"]).await;

    crid.kill9();
    crid.spawn().await;

    let pods = crid.runtime.list_pod_sandbox(ListPodSandboxRequest::default()).await.unwrap().into_inner().items;
    assert_eq!(pods.len(), 1);
    assert_eq!((pods[0].id.as_str(), PodSandboxState::try_from(pods[0].state).unwrap()), (pod_id.as_str(), PodSandboxState::SandboxReady));
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
    let containers = crid.runtime.list_containers(ListContainersRequest::default()).await.unwrap().into_inner().containers;
    assert!(containers.is_empty(), "RemovePodSandbox removes its containers: {containers:?}");
    crid.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_without_containerd() {
    let Some(_stack) = stack() else { return };
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
    let output = Command::new(env!("CARGO_BIN_EXE_crid")).arg("--config").arg(dir.join("missing.toml")).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing.toml"));
    let _ = std::fs::remove_dir_all(&dir);
}
