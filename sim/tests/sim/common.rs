//! Shared helpers for the behaviour tests: a CRI service wired to a fresh `FakeWorld`, request
//! builders, and leak checks. Every test drives the core only through the CRI request/response
//! types; the fakes and `snapshot()` are used to look at the effects.
#![allow(dead_code, unused_imports)]

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crid::{Config, CriService, ErrorKind};
use crid_sim::fakes::{FakeWorld, PAUSE_IMAGE, ScriptedFaults, SnapshotKind};
use k8s_cri::v1::*;

pub use crid_sim::fakes::{BUSYBOX_IMAGE, FaultSite, NGINX_IMAGE};

pub const ROOT_DIR: &str = "/var/lib/crid";

/// Where the service keeps a container's status checkpoint.
pub fn checkpoint_path(id: &str) -> String {
    format!("{ROOT_DIR}/containers/{id}/status")
}
pub const STATE_DIR: &str = "/run/crid";
pub const SNAPSHOTTER: &str = "overlayfs";

/// The configuration every test starts from.
pub fn test_config() -> Config {
    Config {
        sandbox_image: PAUSE_IMAGE.into(),
        root_dir: ROOT_DIR.into(),
        state_dir: STATE_DIR.into(),
        ..Config::default()
    }
}

/// A service, the world it talks to, and the script of faults that world consults.
pub struct Node {
    pub world: Arc<FakeWorld>,
    pub faults: Arc<ScriptedFaults>,
    pub svc: Arc<CriService>,
}

/// A world with the default images in its registry and scripted (initially empty) faults.
pub fn world(seed: u64) -> (Arc<FakeWorld>, Arc<ScriptedFaults>) {
    let faults = Arc::new(ScriptedFaults::new());
    let world = Arc::new(FakeWorld::new(seed, faults.clone()).with_default_images());
    (world, faults)
}

impl Node {
    /// A service on `world` that has not been run: every RPC must be refused.
    pub fn unstarted_on(world: Arc<FakeWorld>, faults: Arc<ScriptedFaults>, config: Config) -> Node {
        let svc = CriService::new(config, world.backends()).expect("valid config");
        Node { world, faults, svc }
    }

    /// A running service on `world` (recovers whatever the world holds).
    pub async fn start_on(world: Arc<FakeWorld>, faults: Arc<ScriptedFaults>, config: Config) -> Node {
        let node = Node::unstarted_on(world, faults, config);
        node.svc.run().await.expect("run");
        node
    }

    /// A running service on a fresh world.
    pub async fn start() -> Node {
        let (world, faults) = world(7);
        Node::start_on(world, faults, test_config()).await
    }

    pub async fn start_with(config: Config) -> Node {
        let (world, faults) = world(7);
        Node::start_on(world, faults, config).await
    }

    // ---- images ----

    pub async fn pull(&self, image: &str) -> String {
        self.svc
            .pull_image(PullImageRequest { image: Some(image_spec(image)), ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("pull {image}: {e}"))
            .image_ref
    }

    // ---- sandboxes ----

    pub async fn run_pod(&self, name: &str) -> String {
        self.run_pod_with(pod_config(name)).await
    }

    pub async fn run_pod_with(&self, config: PodSandboxConfig) -> String {
        self.svc
            .run_pod_sandbox(RunPodSandboxRequest { config: Some(config), ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("run pod: {e}"))
            .pod_sandbox_id
    }

    pub async fn pod_status(&self, id: &str) -> PodSandboxStatus {
        self.svc
            .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false })
            .await
            .unwrap_or_else(|e| panic!("pod status {id}: {e}"))
            .status
            .expect("status is set")
    }

    /// The `info` JSON of a verbose PodSandboxStatus.
    pub async fn pod_verbose_info(&self, id: &str) -> serde_json::Value {
        let status = self
            .svc
            .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true })
            .await
            .unwrap_or_else(|e| panic!("verbose pod status {id}: {e}"));
        serde_json::from_str(&status.info["info"]).expect("info is JSON")
    }

    pub async fn pod_state(&self, id: &str) -> PodSandboxState {
        PodSandboxState::try_from(self.pod_status(id).await.state).expect("valid state")
    }

    pub async fn stop_pod(&self, id: &str) {
        self.svc
            .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.into() })
            .await
            .unwrap_or_else(|e| panic!("stop pod {id}: {e}"));
    }

    pub async fn remove_pod(&self, id: &str) {
        self.svc
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.into() })
            .await
            .unwrap_or_else(|e| panic!("remove pod {id}: {e}"));
    }

    pub async fn list_pods(&self, filter: Option<PodSandboxFilter>) -> Vec<PodSandbox> {
        self.svc.list_pod_sandbox(ListPodSandboxRequest { filter }).await.expect("list pods").items
    }

    // ---- containers ----

    /// Creates container `name` in pod `pod_name` (whose sandbox is `pod_id`) running `command`.
    pub async fn create(&self, pod_id: &str, pod_name: &str, name: &str, image: &str, command: &[&str]) -> String {
        self.create_with(pod_id, pod_name, container_config(name, image, command)).await
    }

    pub async fn create_with(&self, pod_id: &str, pod_name: &str, config: ContainerConfig) -> String {
        self.svc
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config),
                sandbox_config: Some(pod_config(pod_name)),
            })
            .await
            .unwrap_or_else(|e| panic!("create container: {e}"))
            .container_id
    }

    pub async fn start_container(&self, id: &str) {
        self.svc
            .start_container(StartContainerRequest { container_id: id.into() })
            .await
            .unwrap_or_else(|e| panic!("start container {id}: {e}"));
    }

    pub async fn stop_container(&self, id: &str, timeout: i64) {
        self.svc
            .stop_container(StopContainerRequest { container_id: id.into(), timeout })
            .await
            .unwrap_or_else(|e| panic!("stop container {id}: {e}"));
    }

    pub async fn remove_container(&self, id: &str) {
        self.svc
            .remove_container(RemoveContainerRequest { container_id: id.into() })
            .await
            .unwrap_or_else(|e| panic!("remove container {id}: {e}"));
    }

    pub async fn container_status(&self, id: &str) -> ContainerStatus {
        self.svc
            .container_status(ContainerStatusRequest { container_id: id.into(), verbose: false })
            .await
            .unwrap_or_else(|e| panic!("container status {id}: {e}"))
            .status
            .expect("status is set")
    }

    pub async fn container_state(&self, id: &str) -> ContainerState {
        ContainerState::try_from(self.container_status(id).await.state).expect("valid state")
    }

    pub async fn list_containers(&self, filter: Option<ContainerFilter>) -> Vec<Container> {
        self.svc.list_containers(ListContainersRequest { filter }).await.expect("list containers").containers
    }

    /// A READY pod `pod_name` with the busybox image pulled and one running container.
    pub async fn pod_with_running(&self, pod_name: &str, command: &[&str]) -> (String, String) {
        self.pull(BUSYBOX_IMAGE).await;
        let pod = self.run_pod(pod_name).await;
        let container = self.create(&pod, pod_name, "app", BUSYBOX_IMAGE, command).await;
        self.start_container(&container).await;
        (pod, container)
    }

    pub async fn verbose_status_info(&self) -> HashMap<String, String> {
        self.svc.status(StatusRequest { verbose: true }).await.expect("status").info
    }

    /// Waits until every acknowledged container removal has deleted what follows its reply
    /// (the task, the containerd container, the dirs); fails after a simulated minute.
    pub async fn removals_settled(&self) {
        for _ in 0..600 {
            if self.svc.snapshot().container_removals_pending == 0 {
                return;
            }
            sleep(Duration::from_millis(100)).await;
        }
        panic!("container removals still pending after 60 s: {}", self.svc.snapshot().container_removals_pending);
    }

    // ---- leak checks ----

    /// Everything a sandbox or container id can hold outside the CRI process, for ids that
    /// must be gone. Each entry names the leak.
    pub fn leaks_of(&self, id: &str) -> Vec<String> {
        let mut leaks = vec![];
        let world = &self.world;
        if world.containerd.containers().contains_key(id) {
            leaks.push(format!("containerd container {id}"));
        }
        if world.containerd.tasks().contains_key(id) {
            leaks.push(format!("task {id}"));
        }
        if world.containerd.shims().contains(id) {
            leaks.push(format!("shim {id}"));
        }
        if world.containerd.snapshots(SNAPSHOTTER).contains_key(id) {
            leaks.push(format!("snapshot {id}"));
        }
        if let Some(ip) = world.cni.allocations().get(id) {
            leaks.push(format!("IP {ip} of {id}"));
        }
        for netns in world.os.netns_list().iter() {
            if netns.contains(id) {
                leaks.push(format!("netns {netns}"));
            }
        }
        for mount in world.os.mounts().keys() {
            if mount.contains(id) {
                leaks.push(format!("mount {mount}"));
            }
        }
        for dir in world.os.dirs() {
            if dir.contains(id) {
                leaks.push(format!("dir {dir}"));
            }
        }
        for file in world.os.files().keys() {
            if file.contains(id) {
                leaks.push(format!("file {file}"));
            }
        }
        leaks
    }

    /// Asserts that nothing at all is left of any sandbox: no store entry, no name, no IP, no
    /// netns, no mount, no pod dir, no containerd container, task or active snapshot.
    pub fn assert_no_sandbox_leftovers(&self, context: &str) {
        let snapshot = self.svc.snapshot();
        assert!(snapshot.sandboxes.is_empty(), "{context}: sandboxes left in the store: {:?}", snapshot.sandboxes);
        assert!(snapshot.sandbox_names.is_empty(), "{context}: names still reserved: {:?}", snapshot.sandbox_names);
        assert!(snapshot.operations.is_empty(), "{context}: operations left: {:?}", snapshot.operations);
        let world = &self.world;
        assert!(world.cni.allocations().is_empty(), "{context}: IPs leaked: {:?}", world.cni.allocations());
        assert!(world.os.netns_list().is_empty(), "{context}: netns leaked: {:?}", world.os.netns_list());
        assert!(world.os.mounts().is_empty(), "{context}: mounts leaked: {:?}", world.os.mounts());
        assert!(world.containerd.tasks().is_empty(), "{context}: tasks leaked: {:?}", world.containerd.tasks().keys());
        assert!(world.containerd.shims().is_empty(), "{context}: shims leaked: {:?}", world.containerd.shims());
        assert!(
            world.containerd.containers().is_empty(),
            "{context}: containerd containers leaked: {:?}",
            world.containerd.containers().keys()
        );
        let active: Vec<String> = world
            .containerd
            .snapshots(SNAPSHOTTER)
            .into_iter()
            .filter(|(_, info)| info.kind == SnapshotKind::Active)
            .map(|(key, _)| key)
            .collect();
        assert!(active.is_empty(), "{context}: active snapshots leaked: {active:?}");
        let pod_paths: Vec<String> = world
            .os
            .dirs()
            .into_iter()
            .chain(world.os.files().into_keys())
            .filter(|path| path.contains("/sandboxes/") || path.contains("/netns/"))
            .collect();
        assert!(pod_paths.is_empty(), "{context}: pod dirs or files leaked: {pod_paths:?}");
    }
}

// ---- request builders ----

pub fn image_spec(image: &str) -> ImageSpec {
    ImageSpec { image: image.into(), ..Default::default() }
}

pub fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A pod config named `name` in namespace "default", uid `uid-<name>`, attempt 0, labelled
/// `app=<name>`.
pub fn pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: format!("/var/log/pods/default_{name}"),
        labels: labels(&[("app", name)]),
        ..Default::default()
    }
}

pub fn container_config(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(image_spec(image)),
        command: command.iter().map(|s| s.to_string()).collect(),
        labels: labels(&[("container", name)]),
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

pub fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

/// The error kind of a result that must be an error.
pub fn err_kind<T: std::fmt::Debug>(result: crid::Result<T>) -> ErrorKind {
    match result {
        Ok(value) => panic!("expected an error, got Ok({value:?})"),
        Err(error) => error.kind,
    }
}

pub fn sorted_ids<I: IntoIterator<Item = String>>(ids: I) -> Vec<String> {
    let set: BTreeSet<String> = ids.into_iter().collect();
    set.into_iter().collect()
}

pub async fn sleep(duration: Duration) {
    tokio::time::sleep(duration).await;
}

/// Runs `life` on a fresh simulated node and kills the node once it returns: every task the
/// service spawned there (monitors, loops, detached operations) dies with it, as a crashed CRI
/// process would. The world (containerd, CNI, host) survives.
#[cfg(madsim)]
pub async fn in_process<T, F, Fut>(world: Arc<FakeWorld>, faults: Arc<ScriptedFaults>, life: F) -> T
where
    T: Send + 'static,
    F: FnOnce(Node) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let handle = madsim::runtime::Handle::current();
    let process = handle.create_node().name("cri").build();
    let result = process
        .spawn(async move {
            let node = Node::start_on(world, faults, test_config()).await;
            life(node).await
        })
        .await
        .expect("the CRI process panicked");
    handle.kill(process.id());
    result
}
