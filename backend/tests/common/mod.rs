//! A CRI client for the real stack (`ci/realstack up`), shared by the integration tests and the
//! `cri` benchmark. It drives either runtime under test through the same gRPC API:
//! - `Cri::crid` starts the `crid` binary on the private containerd, in a containerd namespace
//!   and directories of its own, so several may run at once;
//! - `Cri::reference` connects to containerd's own built-in CRI on the reference containerd.
#![allow(dead_code)] // Each user (test or bench) needs a different part.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

/// Environment of the stack, from `ci/realstack env`.
pub struct Stack {
    pub dir: PathBuf,
    pub containerd_address: String,
    pub cni_bin_dir: String,
    pub cni_conf_dir: String,
    pub registry: String,
    pub registry_config_path: String,
    pub reference_address: String,
    pub reference_ipam_dir: PathBuf,
}

/// The stack's environment; panics, saying what to run, when it is not there (the tests that
/// call it are `#[ignore]`d and run on purpose).
pub fn stack() -> Stack {
    if std::env::var_os("CRID_REALSTACK").is_none() {
        panic!("CRID_REALSTACK is not set: run `eval \"$(ci/realstack up)\"` first");
    }
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("CRID_REALSTACK is set but {name} is not"));
    Stack {
        dir: PathBuf::from(var("CRID_REALSTACK_DIR")),
        containerd_address: var("CRID_CONTAINERD_ADDRESS"),
        cni_bin_dir: var("CRID_CNI_BIN_DIR"),
        cni_conf_dir: var("CRID_CNI_CONF_DIR"),
        registry: var("CRID_REGISTRY"),
        registry_config_path: var("CRID_REGISTRY_CONFIG_PATH"),
        reference_address: var("CRID_REFERENCE_CRI_ADDRESS"),
        reference_ipam_dir: PathBuf::from(var("CRID_REFERENCE_IPAM_DIR")),
    }
}

/// Restarts the stack's containerd (its shims, and so the containers, live on), as an upgrade
/// or a crash of containerd would, and waits until it answers again.
pub fn restart_containerd(stack: &Stack) {
    restart_daemon(stack, "containerd.pid", "containerd/config.toml", "containerd.log", &stack.containerd_address);
}

/// Restarts the reference containerd, and with it containerd's CRI, as above. Returns when
/// the new process was started.
pub fn restart_reference_containerd(stack: &Stack) -> Instant {
    restart_daemon(stack, "ref.pid", "ref/config.toml", "reference-containerd.log", &stack.reference_address)
}

/// SIGTERM to the containerd whose pid is in `pid_file` (under the stack's directory), then a
/// new one with `config`, logging to `log`: returns when the new process was started, once it
/// answers on `address`.
fn restart_daemon(stack: &Stack, pid_file: &str, config: &str, log: &str, address: &str) -> Instant {
    let pid_file = stack.dir.join(pid_file);
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
    let log = std::fs::OpenOptions::new().create(true).append(true).open(stack.dir.join("logs").join(log)).unwrap();
    // setsid: the new containerd must outlive this test process, as the first one did.
    let started = Instant::now();
    #[expect(
        clippy::zombie_processes,
        reason = "the restarted containerd outlives the test; ci/realstack down stops it"
    )]
    let child = Command::new("setsid")
        .arg("containerd")
        .arg("--config")
        .arg(stack.dir.join(config))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("restart containerd");
    std::fs::write(&pid_file, child.id().to_string()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !Command::new("ctr").args(["--address", address, "version"]).output().is_ok_and(|o| o.status.success()) {
        assert!(Instant::now() < deadline, "containerd did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    started
}

/// Which runtime a `Cri` drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Crid,
    /// containerd's built-in CRI plugin, the behaviour crid reproduces.
    Containerd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Crid => "crid",
            Kind::Containerd => "containerd",
        }
    }
}

/// One runtime under test, with the facts the checks need about where it keeps things.
pub struct Cri {
    pub kind: Kind,
    /// Per-test directory: crid's config, socket, state and log; pod log directories.
    pub dir: PathBuf,
    pub namespace: String,
    pub containerd_address: String,
    /// The first two octets of the pod subnet of this runtime's CNI network.
    pub ip_prefix: &'static str,
    /// host-local's folder for this runtime's network (one file per allocated address).
    pub ipam_dir: PathBuf,
    /// Mount points at or under these prefixes belong to this runtime's pods.
    pub mount_prefixes: Vec<String>,
    /// The reference containerd's log, shown when a reference call fails.
    reference_log: Option<PathBuf>,
    child: Option<Child>,
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

pub async fn connect(path: &Path) -> Channel {
    let socket = path.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
        }))
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()))
}

pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The `crid` binary cargo built for this test or bench.
pub fn crid_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_crid"))
}

/// Removes the pod cgroups under `parent` (`/name`, as a pod's cgroup parent names its place
/// in every hierarchy), what they hold, and `parent` itself, once their containers are gone:
/// kubelet removes its pods' cgroups itself, and neither runtime does. Panics if some are
/// still there after 5 s (a process left inside); see [`cgroups_left_under`].
pub async fn remove_cgroups_under(parent: &str) {
    let left = cgroups_left_under(parent).await;
    assert!(left.is_empty(), "cgroups under {parent} are still there 5 s after their pods were removed: {left:?}");
}

/// Removes what it can of the cgroups under `parent` and `parent` itself, deepest first, for up
/// to 5 s (a shim may still be reaping a container inside), and returns what is left.
pub async fn cgroups_left_under(parent: &str) -> Vec<PathBuf> {
    fn remove_tree(dir: &Path, left: &mut Vec<PathBuf>) {
        for child in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if child.path().is_dir() {
                remove_tree(&child.path(), left);
            }
        }
        if dir.is_dir() && std::fs::remove_dir(dir).is_err() {
            left.push(dir.to_path_buf());
        }
    }
    let relative = parent.trim_start_matches('/');
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return Vec::new() };
    let mut roots: Vec<PathBuf> = hierarchies.flatten().map(|h| h.path().join(relative)).collect();
    // A v2 (unified) mount has the pods' cgroups right under it.
    roots.push(Path::new("/sys/fs/cgroup").join(relative));
    let mut left = Vec::new();
    for _ in 0..50 {
        left.clear();
        for root in &roots {
            remove_tree(root, &mut left);
        }
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    left
}

/// A client binary the real-stack run provides (`ci/test` builds and exports them): a test that
/// needs one fails, never passes, when it is missing.
pub fn client_from_env(var: &str, what: &str) -> PathBuf {
    let path =
        std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| panic!("{var} is not set: the path of {what}"));
    assert!(path.exists(), "{var}={} does not exist", path.display());
    path
}

/// Runs a shell command line (pipes, `script`), returning its stdout; panics unless it succeeds.
pub fn shell(line: &str, cri: &Cri) -> String {
    let output = Command::new("sh").args(["-c", line]).output().expect("run sh");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{line}: {}\nstdout: {stdout}\nstderr: {}\nruntime log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        cri.log()
    );
    stdout
}

/// The stock crictl (`CRID_CRICTL`, built by `ci/critest tools`) pointed at one runtime.
pub struct Crictl {
    pub binary: PathBuf,
    pub socket: PathBuf,
}

impl Crictl {
    /// crictl for `cri`'s socket: crid's own, or the reference containerd's.
    pub fn of(cri: &Cri) -> Crictl {
        let binary = client_from_env("CRID_CRICTL", "the stock crictl 1.29 (ci/critest build)");
        Crictl { binary, socket: cri.socket() }
    }

    fn endpoint_args(&self) -> [String; 6] {
        let endpoint = format!("unix://{}", self.socket.display());
        [
            "--runtime-endpoint".into(),
            endpoint.clone(),
            "--image-endpoint".into(),
            endpoint,
            "--timeout".into(),
            "60s".into(),
        ]
    }

    /// The command with its endpoints, to add arguments to.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.args(self.endpoint_args());
        command
    }

    /// The command's start as a shell word list, for pipes and `script`.
    pub fn line(&self) -> String {
        format!("{} {}", self.binary.display(), self.endpoint_args().join(" "))
    }

    /// Runs crictl with `args`; panics with its output and the runtime's log unless it succeeds.
    pub fn run(&self, args: &[&str], cri: &Cri) -> String {
        let output = self.command().args(args).output().expect("run crictl");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "crictl {args:?}: {}\nstdout: {stdout}\nstderr: {}\nruntime log:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            cri.log()
        );
        stdout
    }
}

fn unconnected() -> (RuntimeServiceClient<Channel>, ImageServiceClient<Channel>) {
    (
        RuntimeServiceClient::new(Endpoint::from_static("http://unused").connect_lazy()),
        ImageServiceClient::new(Endpoint::from_static("http://unused").connect_lazy()),
    )
}

impl Cri {
    /// Starts a `crid` daemon with its own directories and containerd namespace.
    pub async fn crid(stack: &Stack, name: &str, binary: &Path) -> Cri {
        Cri::crid_with_log(stack, name, binary, "info,crid_backend=debug").await
    }

    /// `crid` with a given `log_level` (a tracing filter).
    pub async fn crid_with_log(stack: &Stack, name: &str, binary: &Path, log_level: &str) -> Cri {
        Cri::crid_with(stack, name, binary, log_level, "", &stack.registry_config_path, None).await
    }

    /// `crid` whose `root_dir` (status checkpoints, pod files) is a tmpfs of `size_bytes`, so a
    /// test can fill it. Dropping the `Cri` unmounts it.
    pub async fn crid_with_small_root_dir(stack: &Stack, name: &str, binary: &Path, size_bytes: u64) -> Cri {
        let hosts = &stack.registry_config_path;
        Cri::crid_with(stack, name, binary, "info,crid_backend=debug", "", hosts, Some(size_bytes)).await
    }

    /// `crid` with TOML lines added to its `[cri]` table (top-level keys of the CRI config).
    pub async fn crid_with_cri_config(stack: &Stack, name: &str, binary: &Path, cri_lines: &str) -> Cri {
        let hosts = &stack.registry_config_path;
        Cri::crid_with(stack, name, binary, "info,crid_backend=debug", cri_lines, hosts, None).await
    }

    /// `crid` reading registry hosts (`<host>/hosts.toml`) from `hosts_dir` instead of the stack's.
    pub async fn crid_with_registry_hosts(stack: &Stack, name: &str, binary: &Path, hosts_dir: &Path) -> Cri {
        let hosts = hosts_dir.to_string_lossy();
        Cri::crid_with(stack, name, binary, "info,crid_backend=debug", "", &hosts, None).await
    }

    async fn crid_with(
        stack: &Stack,
        name: &str,
        binary: &Path,
        log_level: &str,
        cri_lines: &str,
        hosts: &str,
        root_disk_bytes: Option<u64>,
    ) -> Cri {
        // Short base path: the socket path must fit in sun_path.
        let dir = PathBuf::from("/tmp").join(unique(&format!("crid-it-{name}")));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(size_bytes) = root_disk_bytes {
            let root = dir.join("root");
            std::fs::create_dir_all(&root).unwrap();
            let options = format!("size={size_bytes},mode=0700");
            nix::mount::mount(
                Some("crid-root"),
                &root,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(options.as_str()),
            )
            .unwrap_or_else(|e| panic!("mount a tmpfs on {}: {e}", root.display()));
        }
        let namespace = unique(&format!("it-{name}"));
        let config = format!(
            r#"
socket_path = "{dir}/crid.sock"
root_dir = "{dir}/root"
state_dir = "{dir}/state"
log_level = "{log_level}"
[containerd]
address = "{containerd}"
namespace = "{namespace}"
[cri]
sandbox_image = "{registry}/pause:3.8"
restrict_oom_score_adj = true
reconcile_period = 2
# Netns pins under the test dir, so a failed test leaves none in /run/netns.
netns_mounts_under_state_dir = true
{cri_lines}
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
        );
        std::fs::write(dir.join("crid.toml"), config).unwrap();
        let (runtime, images) = unconnected();
        let mut cri = Cri {
            kind: Kind::Crid,
            mount_prefixes: vec![dir.join("state").to_string_lossy().into_owned()],
            dir,
            namespace,
            containerd_address: stack.containerd_address.clone(),
            ip_prefix: "10.99.",
            ipam_dir: stack.dir.join("cni/ipam/crid-net"),
            reference_log: None,
            child: None,
            runtime,
            images,
        };
        cri.spawn(binary).await;
        cri
    }

    /// Connects to containerd's built-in CRI on the reference containerd. Its objects live in
    /// containerd's `k8s.io` namespace and its netns pins in /run/netns, so only one reference
    /// `Cri` should check for leaks at a time.
    pub async fn reference(stack: &Stack, name: &str) -> Cri {
        let dir = PathBuf::from("/tmp").join(unique(&format!("crid-ref-{name}")));
        std::fs::create_dir_all(&dir).unwrap();
        let channel = connect(Path::new(&stack.reference_address)).await;
        Cri {
            kind: Kind::Containerd,
            dir,
            namespace: "k8s.io".into(),
            containerd_address: stack.reference_address.clone(),
            ip_prefix: "10.98.",
            ipam_dir: stack.reference_ipam_dir.clone(),
            mount_prefixes: vec![stack.dir.join("ref/state").to_string_lossy().into_owned(), "/run/netns/cni-".into()],
            reference_log: Some(stack.dir.join("logs/reference-containerd.log")),
            child: None,
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            images: ImageServiceClient::new(channel),
        }
    }

    /// Starts (or restarts) the crid daemon and waits until its socket answers.
    pub async fn spawn(&mut self, binary: &Path) {
        self.spawn_within(binary, Duration::from_secs(30)).await;
    }

    /// Starts (or restarts) the crid daemon and waits up to `within` until its socket answers.
    pub async fn spawn_within(&mut self, binary: &Path, within: Duration) {
        assert_eq!(self.kind, Kind::Crid);
        let socket = self.dir.join("crid.sock");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("crid.log")).unwrap();
        let child = Command::new(binary)
            .arg("--config")
            .arg(self.dir.join("crid.toml"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn crid");
        self.child = Some(child);
        let deadline = Instant::now() + within;
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

    /// The runtime's log: crid's whole log, or the reference containerd's last lines.
    pub fn log(&self) -> String {
        match &self.reference_log {
            None => read_log(&self.dir.join("crid.log")),
            Some(path) => {
                let log = read_log(path);
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(60)..].join("\n")
            }
        }
    }

    /// The crid daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: the daemon must exit cleanly and remove its socket.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "crid ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The CRI socket: crid's own, or the reference containerd's.
    /// The processes that serve this runtime: crid and the containerd it drives, or the
    /// containerd whose CRI plugin is the reference (found by the `--config` ci/realstack starts
    /// it with, next to its socket).
    pub fn daemon_pids(&self) -> Vec<u32> {
        let config = Path::new(&self.containerd_address).with_file_name("config.toml");
        let wanted = format!("--config\0{}\0", config.display());
        let containerd = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.ends_with(wanted.as_bytes())));
        self.child.as_ref().map(Child::id).into_iter().chain(containerd).collect()
    }

    pub fn socket(&self) -> PathBuf {
        match self.kind {
            Kind::Crid => self.dir.join("crid.sock"),
            Kind::Containerd => PathBuf::from(&self.containerd_address),
        }
    }

    pub fn ctr(&self, args: &[&str]) -> String {
        let output = Command::new("ctr")
            .args(["--address", &self.containerd_address, "-n", &self.namespace])
            .args(args)
            .output()
            .expect("run ctr");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn image(&self, name: &str) -> String {
        format!("{}/{name}", std::env::var("CRID_REGISTRY").unwrap())
    }

    pub async fn pull(&mut self, image: &str) -> String {
        let request = PullImageRequest {
            image: Some(ImageSpec { image: image.into(), ..Default::default() }),
            ..Default::default()
        };
        self.images
            .pull_image(request)
            .await
            .unwrap_or_else(|e| panic!("{}: pull {image}: {e}\n{}", self.kind.name(), self.log()))
            .into_inner()
            .image_ref
    }

    pub async fn remove_image(&mut self, image: &str) {
        let request = RemoveImageRequest { image: Some(ImageSpec { image: image.into(), ..Default::default() }) };
        self.images
            .remove_image(request)
            .await
            .unwrap_or_else(|e| panic!("{}: remove image {image}: {e}\n{}", self.kind.name(), self.log()));
    }

    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: unique("uid"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: self.dir.join("logs").join(name).to_string_lossy().into_owned(),
            linux: Some(LinuxPodSandboxConfig::default()),
            ..Default::default()
        }
    }

    pub async fn run_pod(&mut self, config: &PodSandboxConfig) -> String {
        let request = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        self.runtime
            .run_pod_sandbox(request)
            .await
            .unwrap_or_else(|e| panic!("{}: run pod: {e}\n{}", self.kind.name(), self.log()))
            .into_inner()
            .pod_sandbox_id
    }

    /// Pulls busybox and runs a pod named `<prefix>-<unique>`: its config and id.
    pub async fn busybox_pod(&mut self, prefix: &str) -> (PodSandboxConfig, String) {
        let busybox = self.image("busybox:latest");
        self.pull(&busybox).await;
        let pod = self.pod_config(&unique(prefix));
        let pod_id = self.run_pod(&pod).await;
        (pod, pod_id)
    }

    /// Creates and starts a busybox container running `command`.
    pub async fn run_container(
        &mut self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        name: &str,
        command: &[&str],
    ) -> String {
        let config = self.container_config(name, command);
        self.run_container_with(pod_id, pod, config).await
    }

    /// Creates and starts a container.
    pub async fn run_container_with(
        &mut self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> String {
        let id = self.create_container_with(pod_id, pod, config).await;
        self.start_container(&id).await;
        id
    }

    /// A busybox container config running `command`, logging to `<name>.log`.
    pub fn container_config(&self, name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(ImageSpec { image: self.image("busybox:latest"), ..Default::default() }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        }
    }

    pub async fn create_container(
        &mut self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        name: &str,
        command: &[&str],
    ) -> String {
        let config = self.container_config(name, command);
        self.create_container_with(pod_id, pod, config).await
    }

    pub async fn create_container_with(
        &mut self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> String {
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let request = CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        };
        self.runtime
            .create_container(request)
            .await
            .unwrap_or_else(|e| panic!("{}: create {name}: {e}\n{}", self.kind.name(), self.log()))
            .into_inner()
            .container_id
    }

    /// ExecSync of `cmd`: (exit code, stdout as text).
    pub async fn exec(&mut self, id: &str, cmd: &[&str]) -> (i32, String) {
        let request =
            ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout: 10 };
        let response = self
            .runtime
            .exec_sync(request)
            .await
            .unwrap_or_else(|e| panic!("{}: exec {cmd:?}: {e}\n{}", self.kind.name(), self.log()))
            .into_inner();
        (response.exit_code, String::from_utf8_lossy(&response.stdout).into_owned())
    }

    pub async fn start_container(&mut self, id: &str) {
        let request = StartContainerRequest { container_id: id.into() };
        self.runtime
            .start_container(request)
            .await
            .unwrap_or_else(|e| panic!("{}: start {id}: {e}\n{}", self.kind.name(), self.log()));
    }

    pub async fn stop_container(&mut self, id: &str, timeout_s: i64) {
        let request = StopContainerRequest { container_id: id.into(), timeout: timeout_s };
        self.runtime
            .stop_container(request)
            .await
            .unwrap_or_else(|e| panic!("{}: stop {id}: {e}\n{}", self.kind.name(), self.log()));
    }

    pub async fn remove_container(&mut self, id: &str) {
        let request = RemoveContainerRequest { container_id: id.into() };
        self.runtime
            .remove_container(request)
            .await
            .unwrap_or_else(|e| panic!("{}: remove {id}: {e}\n{}", self.kind.name(), self.log()));
    }

    pub async fn container_state(&mut self, id: &str) -> (ContainerState, i32) {
        let request = ContainerStatusRequest { container_id: id.into(), verbose: false };
        let status = self.runtime.container_status(request).await.unwrap().into_inner().status.unwrap();
        (ContainerState::try_from(status.state).unwrap(), status.exit_code)
    }

    pub async fn wait_container_state(&mut self, id: &str, want: ContainerState) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (state, code) = self.container_state(id).await;
            if state == want {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "{}: container {id} stuck in {state:?}, wanted {want:?}; containerd tasks:\n{}\n{}\n{}",
                self.kind.name(),
                self.ctr(&["tasks", "ls"]),
                self.ctr(&["tasks", "ps", id]),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn pod_status(&mut self, id: &str) -> PodSandboxStatus {
        let request = PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false };
        self.runtime.pod_sandbox_status(request).await.unwrap().into_inner().status.unwrap()
    }

    pub async fn stop_pod(&mut self, id: &str) {
        let request = StopPodSandboxRequest { pod_sandbox_id: id.into() };
        self.runtime
            .stop_pod_sandbox(request)
            .await
            .unwrap_or_else(|e| panic!("{}: stop pod: {e}\n{}", self.kind.name(), self.log()));
    }

    pub async fn remove_pod_only(&mut self, id: &str) {
        let request = RemovePodSandboxRequest { pod_sandbox_id: id.into() };
        self.runtime
            .remove_pod_sandbox(request)
            .await
            .unwrap_or_else(|e| panic!("{}: remove pod: {e}\n{}", self.kind.name(), self.log()));
    }

    /// StopPodSandbox then RemovePodSandbox, as kubelet does.
    pub async fn remove_pod(&mut self, id: &str) {
        self.stop_pod(id).await;
        self.remove_pod_only(id).await;
    }

    /// The `-id` of every runc shim serving this runtime's containerd namespace.
    pub fn shim_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let args: Vec<String> =
                cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
            let is_shim = args.first().is_some_and(|a| a.ends_with("containerd-shim-runc-v2"));
            if is_shim
                && value("-namespace").as_deref() == Some(self.namespace.as_str())
                && value("-address").as_deref() == Some(self.containerd_address.as_str())
            {
                ids.extend(value("-id"));
            }
        }
        ids.sort();
        ids
    }

    /// The mount points of this runtime's pods that exist now.
    pub fn pod_mounts(&self) -> Vec<String> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|point| self.mount_prefixes.iter().any(|prefix| point.starts_with(prefix.as_str())))
            .map(str::to_string)
            .collect()
    }

    /// Nothing of this runtime's pods is left in containerd or on the host.
    pub fn assert_no_leaks(&self) {
        let who = self.kind.name();
        assert_eq!(self.ctr(&["containers", "ls", "-q"]).trim(), "", "{who}: containers leaked");
        assert_eq!(self.ctr(&["tasks", "ls", "-q"]).trim(), "", "{who}: tasks leaked");
        let leaked = self.pod_mounts();
        assert!(leaked.is_empty(), "{who}: mounts leaked: {leaked:#?}");
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        if self.kind == Kind::Containerd {
            // The reference's objects are containerd's CRI's to clean; `ci/realstack down`
            // removes whatever a failed test left there.
            if !std::thread::panicking() {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
            return;
        }
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
        let mut points: Vec<&str> =
            mounts.lines().filter_map(|l| l.split(' ').nth(4)).filter(|p| p.starts_with(&prefix)).collect();
        points.sort_by(|a, b| b.cmp(a));
        for point in points {
            let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
