//! A simulated kubelet: per-pod sync loops that drive the CRI as kubelet does — call deadlines
//! (the call is cancelled when one passes), retries with the same names (B12), restarts of exited
//! containers, ExecSync probes, repeated Stop/Remove (B18), event subscribers — and a final
//! drain that stops and removes everything.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crid::naming::normalize_image_ref;
use k8s_cri::v1::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::{Code, Response, Status};

use crate::cri_node::{CriClient, CriConnection};
use crate::invariants::Checker;
use crate::scenario::Scenario;
use crate::trace::{Trace, short};

const RETRY_MAX: Duration = Duration::from_secs(10);
/// The error a call gets when the kubelet's own deadline passed before the reply.
const KUBELET_DEADLINE: &str = "kubelet deadline exceeded";

/// Retries an attempt (an expression evaluated anew each time) until it succeeds, or, when
/// `until_drain`, until the kubelet drains. Backoff 1 s doubling to 10 s.
macro_rules! retry {
    ($kubelet:expr, $until_drain:expr, $attempt:expr) => {{
        let mut backoff = crid::Backoff::new(Duration::from_secs(1), RETRY_MAX);
        loop {
            match $attempt {
                Ok(value) => break Some(value),
                Err(_) if $until_drain && $kubelet.draining() => break None,
                Err(_) => tokio::time::sleep(backoff.next_delay()).await,
            }
        }
    }};
}

pub struct Kubelet {
    scenario: Scenario,
    seed: u64,
    /// The CRI as kubelet reaches it: gRPC, so what it sees are codes and messages.
    cri: CriConnection,
    checker: Arc<Checker>,
    trace: Arc<Trace>,
    draining: AtomicBool,
    pub rpcs_total: AtomicU64,
    pub pods_total: AtomicU64,
    pub events_seen_total: AtomicU64,
    /// ExecSync probes sent, which numbers them.
    probes_total: AtomicU64,
    /// Workers still running.
    active_workers: AtomicU64,
    /// A second lock so that image removal does not race the image's own pulls in one worker.
    image_lock: tokio::sync::Mutex<()>,
    subscribers_alive: Mutex<u32>,
}

fn pod_config(name: &str, uid: &str, host_network: bool, attempt: u32) -> PodSandboxConfig {
    let mode = if host_network { NamespaceMode::Node } else { NamespaceMode::Pod } as i32;
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata { name: name.into(), uid: uid.into(), namespace: "sim".into(), attempt }),
        // As kubelet: a pod on the node's network has the node's hostname, so it names none.
        hostname: if host_network { String::new() } else { name.into() },
        log_directory: format!("/var/log/pods/sim_{name}_{uid}"),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption { network: mode, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The security contexts kubelet sends, varied by container index so that every run covers
/// them: a non-root uid and group with supplemental groups, a PID namespace of the container's
/// own (kubelet's default), and the pod's.
fn security_for(index: u32) -> LinuxContainerConfig {
    let context = match index % 3 {
        0 => LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 1000 + i64::from(index) }),
            run_as_group: Some(Int64Value { value: 3000 }),
            supplemental_groups: vec![4000],
            ..Default::default()
        },
        1 => LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption { pid: NamespaceMode::Container as i32, ..Default::default() }),
            ..Default::default()
        },
        _ => LinuxContainerSecurityContext::default(),
    };
    LinuxContainerConfig { security_context: Some(context), ..Default::default() }
}

impl Kubelet {
    pub fn new(scenario: Scenario, seed: u64, checker: Arc<Checker>, trace: Arc<Trace>) -> Self {
        Kubelet {
            scenario,
            seed,
            cri: CriConnection::default(),
            checker,
            trace,
            draining: AtomicBool::new(false),
            rpcs_total: AtomicU64::new(0),
            pods_total: AtomicU64::new(0),
            events_seen_total: AtomicU64::new(0),
            probes_total: AtomicU64::new(0),
            active_workers: AtomicU64::new(0),
            image_lock: tokio::sync::Mutex::new(()),
            subscribers_alive: Mutex::new(0),
        }
    }

    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn workers_done(&self) -> bool {
        self.active_workers.load(Ordering::SeqCst) == 0
    }

    /// One CRI call under the kubelet's deadline, traced, followed by the safety checks.
    async fn call<R, F, Fut>(&self, rpc: &str, what: &str, handler: F) -> Result<R, Status>
    where
        R: Send + 'static,
        F: FnOnce(CriClient) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        self.call_then(rpc, what, handler, |_| {}).await
    }

    /// A call whose success is recorded in the oracle (`ack`) before the safety checks run.
    async fn call_then<R, F, Fut>(&self, rpc: &str, what: &str, handler: F, ack: impl FnOnce(&R)) -> Result<R, Status>
    where
        R: Send + 'static,
        F: FnOnce(CriClient) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        self.create_call(rpc, what, handler, ack, &mut None).await.0
    }

    /// A create (RunPodSandbox, CreateContainer), which kubelet retries with the same name.
    /// `abandoned` follows the calls of one name: the CRI incarnation a call was sent to when
    /// the kubelet's deadline cut it, `None` once a call was answered. The second value is true
    /// when this call retried an abandoned one and no CRI restart came in between: its original
    /// operation is then still there to join or to collect (invariant 28, B12).
    async fn create_call<R, F, Fut>(
        &self,
        rpc: &str,
        what: &str,
        handler: F,
        ack: impl FnOnce(&R),
        abandoned: &mut Option<u64>,
    ) -> (Result<R, Status>, bool)
    where
        R: Send + 'static,
        F: FnOnce(CriClient) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let sent_to = self.checker.incarnation();
        let answer = self.send(rpc, handler).await;
        let retried_abandoned = abandoned.is_some_and(|original| original == self.checker.incarnation());
        *abandoned = if answer.is_none() { Some(sent_to) } else { None };
        let result = answer.unwrap_or_else(|| Err(Status::deadline_exceeded(KUBELET_DEADLINE)));
        self.after_call(rpc, what, &result, |result| {
            if let Ok(response) = result {
                ack(response);
            }
        });
        (result, retried_abandoned)
    }

    /// Sends one call under the kubelet's deadline. `None` when the deadline passed first: the
    /// call was cancelled, and the service may still be working on it.
    async fn send<R, F, Fut>(&self, rpc: &str, handler: F) -> Option<Result<R, Status>>
    where
        R: Send + 'static,
        F: FnOnce(CriClient) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        self.rpcs_total.fetch_add(1, Ordering::Relaxed);
        // kubelet's runtime client adds the call's own budget to its request timeout: the grace
        // period for StopContainer, the command's timeout for ExecSync. Without it a grace
        // period longer than the deadline makes every Stop of a container that ignores SIGTERM
        // time out, forever.
        let k = &self.scenario.kubelet;
        let budget_s = match rpc {
            "StopContainer" => k.stop_timeout_s.max(0) as u64,
            "ExecSync" => k.exec_timeout_s.max(0) as u64,
            _ => 0,
        };
        let deadline = Duration::from_secs(k.deadline_s + budget_s);
        // The call's stream stays open while the kubelet waits; dropped at the deadline, it
        // resets, and the CRI drops the call's handler.
        let (client, _stream) = self.cri.open_call();
        // Boxed: a call's future is large (a CreateContainer's about 20 KB, its request and
        // madsim-tonic's layers), and each async layer around it would hold and copy it again.
        let call = Box::pin(handler(client));
        let answer = tokio::time::timeout(deadline, call).await.ok();
        answer.map(|result| result.map(Response::into_inner))
    }

    /// Traces a call's outcome, runs the call's own check on it, then the safety checks.
    fn after_call<R>(&self, rpc: &str, what: &str, result: &Result<R, Status>, check: impl FnOnce(&Result<R, Status>)) {
        match result {
            Ok(_) => self.trace.log("kubelet", format!("{rpc} {what} -> ok")),
            Err(error) => self
                .trace
                .log("kubelet", format!("{rpc} {what} -> {:?}: {}", error.code(), first_line(error.message()))),
        }
        check(result);
        self.checker.check_safety();
    }

    pub async fn run_workload(self: Arc<Self>) {
        let workers = self.scenario.workload.pods;
        self.active_workers.store(workers as u64, Ordering::SeqCst);
        let mut handles = vec![];
        for subscriber in 0..self.scenario.kubelet.event_subscribers {
            let kubelet = self.clone();
            tokio::spawn(async move { kubelet.subscribe_events(subscriber).await });
        }
        for worker in 0..workers {
            let kubelet = self.clone();
            handles.push(tokio::spawn(async move {
                kubelet.pod_worker(worker).await;
                kubelet.active_workers.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for handle in handles {
            let _ = handle.await;
        }
        self.garbage_collect().await;
    }

    async fn pod_worker(self: &Arc<Self>, worker: u32) {
        let mut rng = SmallRng::seed_from_u64(self.seed ^ (0x5EED_0000 + worker as u64));
        // Spread the start a little, except for pull-first scenarios that want a thundering herd.
        if !self.scenario.workload.pull_first {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..2_000))).await;
        }
        let mut generation = 0;
        while !self.draining() {
            self.run_pod(worker, generation, &mut rng).await;
            generation += 1;
        }
    }

    async fn ensure_images(&self, rng: &mut SmallRng) -> bool {
        let _serialised = self.image_lock.lock().await;
        for image in self.scenario.workload.images.clone() {
            let reference = image.clone();
            let pulled = retry!(self, true, {
                let reference = reference.clone();
                let normalized = normalize_image_ref(&reference).unwrap();
                let result = self
                    .call_then(
                        "PullImage",
                        &reference.clone(),
                        move |mut c| async move {
                            c.image
                                .pull_image(PullImageRequest {
                                    image: Some(ImageSpec { image: reference, ..Default::default() }),
                                    ..Default::default()
                                })
                                .await
                        },
                        |r| self.checker.oracle.pulled_image(&normalized, &r.image_ref),
                    )
                    .await;
                // A reference that exists already is a successful pull, never an error (kubelet
                // would report the pod's image as failed).
                if let Err(error) = &result
                    && error.code() == Code::AlreadyExists
                {
                    self.checker.fail("26 PullImage never AlreadyExists", &format!("image {image}"), error.message());
                }
                result
            });
            if pulled.is_none() {
                return false;
            }
        }
        let _ = rng;
        true
    }

    async fn run_pod(self: &Arc<Self>, worker: u32, generation: u32, rng: &mut SmallRng) {
        self.pods_total.fetch_add(1, Ordering::Relaxed);
        let name = format!("pod-{worker}-{generation}");
        let uid = format!("uid-{worker}-{generation}");
        let host_network = rng.gen_bool(self.scenario.workload.host_network_fraction);
        let lifetime = Duration::from_secs(
            rng.gen_range(self.scenario.workload.pod_lifetime_s.0..=self.scenario.workload.pod_lifetime_s.1),
        );
        if !self.ensure_images(rng).await {
            return;
        }
        let Some((sandbox_id, config)) = self.run_sandbox(&name, &uid, host_network).await else { return };
        let started_ms = self.trace.elapsed_ms();
        let mut containers: BTreeMap<u32, (String, u32)> = BTreeMap::new();
        let mut restarts = 0;
        for index in 0..self.scenario.workload.containers_per_pod {
            let command =
                self.scenario.workload.commands[rng.gen_range(0..self.scenario.workload.commands.len())].clone();
            if let Some(id) = self.create_and_start(&sandbox_id, &config, index, 0, &command).await {
                containers.insert(index, (id, 0));
            }
        }
        // The pod's sync loop.
        while !self.draining() && (self.trace.elapsed_ms() - started_ms) < lifetime.as_millis() as u64 {
            tokio::time::sleep(Duration::from_secs(self.scenario.kubelet.sync_period_s)).await;
            for (index, (id, attempt)) in containers.clone() {
                let status_id = id.clone();
                let status = self
                    .call("ContainerStatus", short(&id), move |mut c| async move {
                        c.runtime
                            .container_status(ContainerStatusRequest { container_id: status_id, verbose: false })
                            .await
                    })
                    .await;
                let Ok(status) = status else { continue };
                let state = status.status.map(|s| s.state).unwrap_or_default();
                if state == ContainerState::ContainerRunning as i32
                    && rng.gen_bool(self.scenario.workload.exec_probability)
                {
                    self.exec_probe(&id, rng).await;
                }
                if state == ContainerState::ContainerExited as i32
                    && restarts < self.scenario.workload.max_restarts
                    && !self.draining()
                {
                    restarts += 1;
                    if self.remove_container(&id).await {
                        let command = self.scenario.workload.commands
                            [rng.gen_range(0..self.scenario.workload.commands.len())]
                        .clone();
                        match self.create_and_start(&sandbox_id, &config, index, attempt + 1, &command).await {
                            Some(new_id) => {
                                containers.insert(index, (new_id, attempt + 1));
                            }
                            None => {
                                containers.remove(&index);
                            }
                        }
                    }
                }
            }
        }
        for (id, _) in containers.values() {
            self.stop_container(id).await;
        }
        self.stop_and_remove_pod(&sandbox_id).await;
        if rng.gen_bool(self.scenario.workload.remove_image_probability) {
            self.remove_image(&self.scenario.workload.images[0].clone()).await;
        }
    }

    /// RunPodSandbox until it succeeds. A name held by an earlier attempt — recovered after a
    /// crash, or created by a call whose reply was lost — is handled as kubelet does: a READY
    /// sandbox of the pod is adopted, dead ones are removed and the next attempt is made.
    async fn run_sandbox(&self, name: &str, uid: &str, host_network: bool) -> Option<(String, PodSandboxConfig)> {
        let mut attempt = 0;
        let mut backoff = crid::Backoff::new(Duration::from_secs(1), RETRY_MAX);
        let mut abandoned = None;
        loop {
            if self.draining() {
                return None;
            }
            let config = pod_config(name, uid, host_network, attempt);
            let request = config.clone();
            let what = format!("{name}.{attempt}");
            let (result, retried_abandoned) = self
                .create_call(
                    "RunPodSandbox",
                    &what,
                    move |mut c| async move {
                        c.runtime
                            .run_pod_sandbox(RunPodSandboxRequest {
                                config: Some(request),
                                runtime_handler: String::new(),
                            })
                            .await
                    },
                    |r| self.checker.oracle.ran_sandbox(&r.pod_sandbox_id),
                    &mut abandoned,
                )
                .await;
            match result {
                Ok(response) => return Some((response.pod_sandbox_id, config)),
                Err(error) if error.code() == Code::AlreadyExists => {
                    let selector = HashMap::from([("app".to_string(), name.to_string())]);
                    let listed = self
                        .call("ListPodSandbox", name, move |mut c| async move {
                            c.runtime
                                .list_pod_sandbox(ListPodSandboxRequest {
                                    filter: Some(PodSandboxFilter { label_selector: selector, ..Default::default() }),
                                })
                                .await
                        })
                        .await;
                    let Ok(listed) = listed else { continue };
                    if retried_abandoned {
                        // Only a sandbox the original call failed to create, kept for Stop and
                        // Remove, may hold the name; a READY one is the original's own result.
                        let holder = listed
                            .items
                            .iter()
                            .find(|s| s.metadata.as_ref().is_some_and(|m| m.name == name && m.attempt == attempt));
                        if holder.is_none_or(|s| s.state == PodSandboxState::SandboxReady as i32) {
                            self.checker.fail(
                                "28 retry after a deadline gets the original",
                                &format!("sandbox {what}"),
                                format!(
                                    "the retry got {:?}; the name is held by {}",
                                    first_line(error.message()),
                                    holder.map_or("no listed sandbox".into(), |s| format!("READY {}", short(&s.id)))
                                ),
                            );
                        }
                    }
                    if let Some(ready) = listed.items.iter().find(|s| s.state == PodSandboxState::SandboxReady as i32) {
                        self.trace.log("kubelet", format!("adopting READY sandbox {} of {name}", short(&ready.id)));
                        self.checker.oracle.ran_sandbox(&ready.id);
                        let adopted =
                            pod_config(name, uid, host_network, ready.metadata.as_ref().map_or(attempt, |m| m.attempt));
                        return Some((ready.id.clone(), adopted));
                    }
                    for dead in &listed.items {
                        self.stop_and_remove_pod(&dead.id).await;
                    }
                    attempt += 1;
                }
                Err(_) => tokio::time::sleep(backoff.next_delay()).await,
            }
        }
    }

    async fn create_and_start(
        &self,
        sandbox_id: &str,
        pod: &PodSandboxConfig,
        index: u32,
        attempt: u32,
        command: &[String],
    ) -> Option<String> {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata { name: format!("c{index}"), attempt }),
            image: Some(ImageSpec {
                image: self.scenario.workload.images[index as usize % self.scenario.workload.images.len()].clone(),
                ..Default::default()
            }),
            command: command.to_vec(),
            log_path: format!("c{index}/{attempt}.log"),
            labels: HashMap::from([("container".to_string(), format!("c{index}"))]),
            linux: Some(security_for(index)),
            mounts: vec![Mount {
                container_path: "/data".into(),
                host_path: format!("{}/volumes/data", pod.log_directory),
                readonly: index % 2 == 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let what = format!("c{index}.{attempt} in {}", short(sandbox_id));
        let mut abandoned = None;
        let created = retry!(self, true, {
            let (sent, pod, sandbox) = (config.clone(), pod.clone(), sandbox_id.to_string());
            let (result, retried_abandoned) = self
                .create_call(
                    "CreateContainer",
                    &what,
                    move |mut c| async move {
                        c.runtime
                            .create_container(CreateContainerRequest {
                                pod_sandbox_id: sandbox,
                                config: Some(sent),
                                sandbox_config: Some(pod),
                            })
                            .await
                    },
                    |r| {
                        self.checker.oracle.created_container(&r.container_id, sandbox_id);
                        self.checker.check_container_spec(&r.container_id, &config);
                    },
                    &mut abandoned,
                )
                .await;
            match result {
                // The sandbox died or was stopped meanwhile: no point retrying.
                Err(error) if matches!(error.code(), Code::FailedPrecondition | Code::NotFound) => Ok(None),
                // A container of an earlier call holds the name (kept after a failed
                // rollback, or recovered): remove it, as kubelet's GC would, then retry.
                Err(error) if error.code() == Code::AlreadyExists => {
                    let listed = self.remove_stale_containers(sandbox_id, index).await;
                    if let (true, Some(listed)) = (retried_abandoned, listed) {
                        // Only a container the original call failed to create, kept UNKNOWN for
                        // Remove, may hold the name; a CREATED one is the original's own result.
                        let holder = listed.iter().find(|c| {
                            c.metadata.as_ref().is_some_and(|m| m.name == format!("c{index}") && m.attempt == attempt)
                        });
                        let live = [ContainerState::ContainerCreated as i32, ContainerState::ContainerRunning as i32];
                        if holder.is_none_or(|c| live.contains(&c.state)) {
                            self.checker.fail(
                                "28 retry after a deadline gets the original",
                                &format!("container {what}"),
                                format!(
                                    "the retry got {:?}; the name is held by {}",
                                    first_line(error.message()),
                                    holder.map_or("no listed container".into(), |c| format!(
                                        "{} in state {}",
                                        short(&c.id),
                                        c.state
                                    ))
                                ),
                            );
                        }
                    }
                    Err(error)
                }
                other => other.map(Some),
            }
        })
        .flatten()?;
        let id = created.container_id;
        let start_id = id.clone();
        let _ = self
            .call_then(
                "StartContainer",
                short(&id),
                move |mut c| async move {
                    c.runtime.start_container(StartContainerRequest { container_id: start_id }).await
                },
                |_| self.checker.oracle.started_container(&id),
            )
            .await;
        Some(id)
    }

    /// Removes the containers of slot `index` that do not run; returns what was listed (`None`
    /// when the listing failed).
    async fn remove_stale_containers(&self, sandbox_id: &str, index: u32) -> Option<Vec<Container>> {
        let filter = ContainerFilter {
            pod_sandbox_id: sandbox_id.to_string(),
            label_selector: HashMap::from([("container".to_string(), format!("c{index}"))]),
            ..Default::default()
        };
        let listed = self
            .call("ListContainers", &format!("c{index}"), move |mut c| async move {
                c.runtime.list_containers(ListContainersRequest { filter: Some(filter) }).await
            })
            .await;
        let listed = listed.ok()?.containers;
        for container in &listed {
            if container.state != ContainerState::ContainerRunning as i32 {
                self.remove_container(&container.id).await;
            }
        }
        Some(listed)
    }

    /// An ExecSync probe. Its command carries a word of its own (`probe-N`), so that its exec
    /// process can be told apart from those of earlier probes that timed out.
    async fn exec_probe(&self, id: &str, rng: &mut SmallRng) {
        let timeout = self.scenario.kubelet.exec_timeout_s;
        let commands = &self.scenario.kubelet.exec_commands;
        // No draw with a single command: the seed's stream stays as it was before the choice.
        let pick = if commands.len() > 1 { rng.gen_range(0..commands.len()) } else { 0 };
        let mut cmd = commands[pick].clone();
        cmd.push(format!("probe-{}", self.probes_total.fetch_add(1, Ordering::Relaxed)));
        let (exec_id, sent) = (id.to_string(), cmd.clone());
        let answer = self
            .send("ExecSync", move |mut c| async move {
                c.runtime.exec_sync(ExecSyncRequest { container_id: exec_id, cmd: sent, timeout }).await
            })
            .await;
        let answered = answer.is_some();
        let result = answer.unwrap_or_else(|| Err(Status::deadline_exceeded(KUBELET_DEADLINE)));
        self.after_call("ExecSync", short(id), &result, |result| {
            // The service answered (not the kubelet's deadline, not a lost connection): the
            // call is over, and so is its exec process, whatever the outcome (B25).
            let lost = matches!(result, Err(error) if error.code() == Code::Unavailable);
            if answered && !lost {
                self.checker.check_exec_ended(id, &cmd);
            }
        });
    }

    async fn stop_container(&self, id: &str) {
        let timeout = self.scenario.kubelet.stop_timeout_s;
        let container_id = id;
        retry!(self, false, {
            let id = id.to_string();
            self.call_then(
                "StopContainer",
                short(&id.clone()),
                move |mut c| async move {
                    c.runtime.stop_container(StopContainerRequest { container_id: id, timeout }).await
                },
                |_| self.checker.oracle.stopped_container(container_id),
            )
            .await
        });
    }

    async fn remove_container(&self, id: &str) -> bool {
        let container_id = id;
        self.checker.oracle.removing_container(id);
        retry!(self, false, {
            let id = id.to_string();
            self.call_then(
                "RemoveContainer",
                short(&id.clone()),
                move |mut c| async move { c.runtime.remove_container(RemoveContainerRequest { container_id: id }).await },
                |_| self.checker.oracle.removed_container(container_id),
            )
            .await
        })
        .is_some()
    }

    async fn stop_and_remove_pod(&self, sandbox_id: &str) {
        let repeat = self.scenario.kubelet.repeat_probability > 0.0
            && (self.seed ^ sandbox_id.len() as u64 ^ self.rpcs_total.load(Ordering::Relaxed)) % 100
                < (self.scenario.kubelet.repeat_probability * 100.0) as u64;
        for round in 0..if repeat { 2 } else { 1 } {
            retry!(self, false, {
                let id = sandbox_id.to_string();
                self.call_then(
                    "StopPodSandbox",
                    short(&id.clone()),
                    move |mut c| async move {
                        c.runtime.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id }).await
                    },
                    |_| self.checker.oracle.stopped_sandbox(sandbox_id),
                )
                .await
            });
            self.checker.oracle.removing_sandbox(sandbox_id);
            retry!(self, false, {
                let id = sandbox_id.to_string();
                self.call_then(
                    "RemovePodSandbox",
                    short(&id.clone()),
                    move |mut c| async move {
                        c.runtime.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }).await
                    },
                    |_| self.checker.oracle.removed_sandbox(sandbox_id),
                )
                .await
            });
            if round == 1 {
                self.trace.log("kubelet", format!("repeated Stop/Remove of {} (idempotence)", short(sandbox_id)));
            }
        }
    }

    async fn remove_image(&self, image: &str) {
        let _serialised = self.image_lock.lock().await;
        let normalized = normalize_image_ref(image).unwrap();
        self.checker.oracle.removing_image(&normalized);
        let reference = image.to_string();
        retry!(self, false, {
            let reference = reference.clone();
            self.checker.image_removals_in_flight.fetch_add(1, Ordering::SeqCst);
            let result = self
                .call("RemoveImage", &reference.clone(), move |mut c| async move {
                    c.image
                        .remove_image(RemoveImageRequest {
                            image: Some(ImageSpec { image: reference, ..Default::default() }),
                        })
                        .await
                })
                .await;
            self.checker.image_removals_in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        });
    }

    /// Kubelet's garbage collection after the drain: whatever the CRI still lists (half-created
    /// pods, results of calls that timed out) is stopped and removed.
    /// Returns true when there was nothing to collect.
    pub async fn garbage_collect(&self) -> bool {
        let Some(sandboxes) = retry!(
            self,
            false,
            self.call("ListPodSandbox", "all", |mut c| async move {
                c.runtime.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await
            })
            .await
        ) else {
            return false;
        };
        let mut clean = sandboxes.items.is_empty();
        for sandbox in sandboxes.items {
            self.stop_and_remove_pod(&sandbox.id).await;
        }
        let Some(containers) = retry!(
            self,
            false,
            self.call("ListContainers", "all", |mut c| async move {
                c.runtime.list_containers(ListContainersRequest { filter: None }).await
            })
            .await
        ) else {
            return false;
        };
        clean &= containers.containers.is_empty();
        for container in containers.containers {
            self.stop_container(&container.id).await;
            self.remove_container(&container.id).await;
        }
        clean
    }

    /// A GetContainerEvents subscriber: checks per-object event order (SPEC §10 inv. 10) and
    /// re-subscribes after a CRI restart.
    async fn subscribe_events(self: Arc<Self>, subscriber: u32) {
        *self.subscribers_alive.lock().unwrap() += 1;
        while !self.draining() {
            let (mut client, _stream) = self.cri.open_call();
            let Ok(events) = client.runtime.get_container_events(GetEventsRequest {}).await else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let mut events = events.into_inner();
            let mut rank_by_id: BTreeMap<String, i32> = BTreeMap::new();
            // The stream ends with an error when the CRI process dies.
            while let Ok(Some(event)) = events.message().await {
                self.events_seen_total.fetch_add(1, Ordering::Relaxed);
                let rank = event.container_event_type;
                let last = rank_by_id.get(&event.container_id).copied().unwrap_or(-1);
                if rank <= last {
                    self.checker.fail(
                        "10 event order",
                        &format!("object {}", short(&event.container_id)),
                        format!("subscriber {subscriber}: event {rank} after {last} (CREATED=0 STARTED=1 STOPPED=2 DELETED=3)"),
                    );
                }
                rank_by_id.insert(event.container_id.clone(), rank.max(last));
            }
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}
