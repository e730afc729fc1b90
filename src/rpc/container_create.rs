//! CreateContainer and StartContainer (SPEC §6.3).

use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1::{
    ContainerConfig, ContainerEventType, CreateContainerRequest, CreateContainerResponse, StartContainerRequest,
    StartContainerResponse,
};

use crate::error::{Error, Result, quoted};
use crate::ids::{ContainerId, TaskId};
use crate::naming::{container_name, sorted};
use crate::ports::{
    ContainerRecord, EXTENSION_CONTAINER_METADATA, ExitStatus, KIND_CONTAINER, LABEL_KIND, LeasePurpose, TaskIo,
};
use crate::rpc::sandbox_run::{ROLLBACK_TIMEOUT, ignore_not_found};
use crate::service::{CriService, OperationRequest};
use crate::spec::{ContainerSpecInput, SpecPolicy, container_spec};
use crate::store::container::{EXIT_CODE_START_ERROR, REASON_START_ERROR};
use crate::store::{
    Container, ContainerMetadata, ContainerState, ContainerStatus, Sandbox, SandboxState, encode_message,
};

/// Upper bound of one CreateContainer; past it the steps are rolled back and the name freed.
pub const CREATE_CONTAINER_TIMEOUT: Duration = Duration::from_secs(240);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Undo {
    ReleaseName,
    RemoveDirs,
    RemoveSnapshot,
    DeleteContainer,
    DeleteCheckpoint,
}

/// Upper bound of a whole StartContainer; past it, the start is abandoned and rolled back (the
/// task deleted, the container EXITED with a start error), as for RUN_SANDBOX_TIMEOUT.
pub const START_CONTAINER_TIMEOUT: Duration = Duration::from_secs(240);

impl CriService {
    pub async fn create_container(
        self: &Arc<Self>,
        request: CreateContainerRequest,
    ) -> Result<CreateContainerResponse> {
        self.check_initialized()?;
        let config = request.config.ok_or_else(|| Error::invalid("container config is required"))?;
        let metadata =
            config.metadata.clone().ok_or_else(|| Error::invalid("container config must include metadata"))?;
        crate::naming::check_name_part("container config metadata.name", &metadata.name)?;
        crate::naming::check_labels("container config labels", &config.labels)?;
        if config.image.as_ref().is_none_or(|i| i.image.is_empty()) {
            return Err(Error::invalid("container config must name an image"));
        }
        // A group alone says nothing about who runs: containerd refuses it, and so do we.
        if let Some(security) = config.linux.as_ref().and_then(|l| l.security_context.as_ref())
            && security.run_as_group.is_some()
            && security.run_as_user.is_none()
            && security.run_as_username.is_empty()
        {
            return Err(Error::invalid("run_as_group is set without run_as_user or run_as_username"));
        }
        if let Some(resources) = config.linux.as_ref().and_then(|l| l.resources.as_ref()) {
            crate::spec::check_resources(resources)?;
        }
        crate::spec::check_user_namespace(
            config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.as_ref()),
        )?;
        let sandbox = self.sandboxes.get(&request.pod_sandbox_id).map_err(|e| e.context("failed to find sandbox"))?;
        if sandbox.status().state != SandboxState::Ready {
            return Err(Error::precondition(format!("sandbox {:?} is not ready", sandbox.id)));
        }
        let pod = sandbox.config.metadata.clone().unwrap_or_default();
        let name = container_name(&metadata, &pod);
        let service = self.clone();
        let create_name = name.clone();
        let asked = OperationRequest::Container {
            sandbox_id: request.pod_sandbox_id.clone(),
            config: Box::new(config.clone()),
        };
        let id = self
            .run_named_operation(format!("container/{name}"), asked, async move {
                service.create_container_steps(sandbox, create_name, config).await
            })
            .await?;
        Ok(CreateContainerResponse { container_id: id })
    }

    async fn create_container_steps(
        self: Arc<Self>,
        sandbox: Arc<Sandbox>,
        name: String,
        config: ContainerConfig,
    ) -> Result<String> {
        let id = ContainerId::generate(&*self.backends.os);
        self.container_names.reserve(&name, &id).map_err(|e| {
            Error::already_exists(format!("failed to reserve container name {}: {}", quoted(&name), e.message))
        })?;
        let mut undo = vec![Undo::ReleaseName];
        let mut metadata = None;
        let outcome = self
            .with_timeout(
                CREATE_CONTAINER_TIMEOUT,
                "create container",
                self.create_container_inner(&sandbox, &id, &name, &config, &mut undo, &mut metadata),
            )
            .await;
        match outcome {
            Ok(()) => Ok(id.into()),
            Err(error) => {
                tracing::warn!(%id, name, %error, "CreateContainer failed; rolling back");
                let snapshotter = self.config.snapshotter_for(&sandbox.metadata.runtime_handler);
                // Set when the containerd container could not be deleted: it is then kept in
                // the store, with its name, so that kubelet sees it and removes it.
                let mut kept = false;
                for step in undo.iter().rev() {
                    if kept && matches!(step, Undo::ReleaseName | Undo::RemoveSnapshot) {
                        continue;
                    }
                    let result = self
                        .with_timeout(ROLLBACK_TIMEOUT, "rollback", async {
                            match step {
                                Undo::ReleaseName => {
                                    self.container_names.release_by_key(&id);
                                    Ok(())
                                }
                                Undo::RemoveDirs => {
                                    let dirs = [self.container_root(&id), self.container_state_dir(&id)];
                                    self.remove_dirs_or_retry(dirs).await;
                                    Ok(())
                                }
                                Undo::RemoveSnapshot => ignore_not_found(
                                    self.backends.containerd.remove_snapshot(&snapshotter, id.as_str()).await,
                                ),
                                Undo::DeleteContainer => {
                                    ignore_not_found(self.backends.containerd.delete_container(id.as_str(), true).await)
                                }
                                Undo::DeleteCheckpoint => {
                                    self.delete_checkpoint_or_retry(&id).await;
                                    Ok(())
                                }
                            }
                        })
                        .await;
                    if let Err(rollback_error) = result {
                        tracing::error!(%id, ?step, %rollback_error, "CreateContainer rollback step failed");
                        kept |= matches!(step, Undo::DeleteContainer);
                    }
                }
                if let (true, Some(metadata)) = (kept, metadata) {
                    let status = ContainerStatus { created_at_ns: self.now_ns(), ..ContainerStatus::unknown_status() };
                    if let Err(add_error) = self.containers.add(&id, Arc::new(Container::new(metadata, config, status)))
                    {
                        tracing::error!(%id, %add_error, "could not keep the half-created container");
                    }
                }
                Err(error)
            }
        }
    }

    /// The CRI mounts' host paths, prepared as containerd prepares them before it builds the
    /// spec: a missing one is created as a directory (kubelet leaves that to the runtime for a
    /// hostPath volume of no type), its symbolic links are resolved, and a mount whose
    /// propagation needs it must lie on a shared (Bidirectional) or a shared or slave
    /// (HostToContainer) mount of the host: else the propagation asked for could not happen,
    /// and the container would run without it, silently. The config returned is the one the
    /// spec is built from; the container keeps the config as asked.
    async fn prepare_host_paths(&self, config: &ContainerConfig) -> Result<ContainerConfig> {
        use k8s_cri::v1::MountPropagation;
        let mut mounted = config.clone();
        for mount in &mut mounted.mounts {
            // A relative path is refused by the spec, with its reason.
            if !mount.host_path.starts_with('/') {
                continue;
            }
            let os = &self.backends.os;
            let path = mount.host_path.clone();
            let look = || async {
                os.host_path(&path).await.map_err(|e| e.context(format!("failed to resolve symlink {}", quoted(&path))))
            };
            let host = match look().await? {
                Some(host) => host,
                None => {
                    os.mkdir_all(&path).await.map_err(|e| e.context(format!("failed to mkdir {}", quoted(&path))))?;
                    look()
                        .await?
                        .ok_or_else(|| Error::internal(format!("{} is gone just after its mkdir", quoted(&path))))?
                }
            };
            let needs = match MountPropagation::try_from(mount.propagation) {
                Ok(MountPropagation::PropagationBidirectional) if !host.shared => Some("a shared"),
                Ok(MountPropagation::PropagationHostToContainer) if !host.shared && !host.slave => {
                    Some("a shared or slave")
                }
                _ => None,
            };
            if let Some(kind) = needs {
                return Err(Error::precondition(format!(
                    "path {} is mounted on {} but it is not {kind} mount",
                    quoted(&path),
                    quoted(&host.mount_point)
                )));
            }
            mount.host_path = host.resolved;
        }
        Ok(mounted)
    }

    async fn create_container_inner(
        self: &Arc<Self>,
        sandbox: &Sandbox,
        id: &ContainerId,
        name: &str,
        config: &ContainerConfig,
        undo: &mut Vec<Undo>,
        kept_metadata: &mut Option<ContainerMetadata>,
    ) -> Result<()> {
        let image_name = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        let image = self
            .local_resolve(&image_name)
            .map_err(|e| e.context(format!("failed to resolve image {}", quoted(&image_name))))?;
        let snapshotter = self.config.snapshotter_for(&sandbox.metadata.runtime_handler);
        // Before any side effect: the sandbox's handler may have left the config since a restart.
        let runtime = self.config.runtime_type_for(&sandbox.metadata.runtime_handler)?;
        let log_path = crate::spec::log_file_path(&sandbox.config.log_directory, &config.log_path)?;
        let root_dir = self.container_root(id);
        undo.push(Undo::RemoveDirs);
        self.backends.os.mkdir_all(&root_dir).await?;
        self.backends.os.mkdir_all(&self.container_state_dir(id)).await?;

        let policy =
            SpecPolicy::new(&self.config, &sandbox.metadata.runtime_handler, self.backends.os.apparmor_enabled())?;
        let target_pid = self.target_pid(config)?;
        let mounted = self.prepare_host_paths(config).await?;
        let mut spec = container_spec(ContainerSpecInput {
            sandbox_id: sandbox.id.as_str(),
            config: &mounted,
            sandbox_config: &sandbox.config,
            image: &image.config,
            netns_path: sandbox.metadata.netns_path.clone(),
            sandbox_pid: sandbox.status().pid,
            sandbox_root_dir: &self.sandbox_root(&sandbox.id),
            own_oom_score_adj: self.backends.os.own_oom_score_adj(),
            restrict_oom_score_adj: self.config.restrict_oom_score_adj,
            ignore_image_volumes: self.config.ignore_image_defined_volumes,
            node_hostname: self.backends.os.hostname(),
            sandbox_shm_dir: self.sandbox_shm_dir(&sandbox.id),
            container_root_dir: &root_dir,
            target_pid,
            policy: &policy,
        })?;
        let metadata = ContainerMetadata {
            version: "v1".into(),
            id: id.clone(),
            name: name.to_string(),
            sandbox_id: sandbox.id.clone(),
            config: encode_message(config),
            image_ref: image.id.clone(),
            log_path: log_path.clone(),
            stop_signal: image.config.stop_signal.clone(),
        };
        *kept_metadata = Some(metadata.clone());
        let status = ContainerStatus {
            created_at_ns: self.now_ns(),
            // As applied, and reported even when the config has none (all zero), as containerd
            // reports them.
            resources: Some(crate::spec::resources_as_applied(
                config.linux.as_ref().and_then(|l| l.resources.as_ref()),
                self.backends.os.swap_accounted(),
            )),
            ..Default::default()
        };
        // The checkpoint is written while containerd prepares the rootfs and records the
        // container: neither reads the other, and the write's fsync is a few ms of the call.
        // A crash in between leaves what recovery already handles: a checkpoint without a
        // containerd record is an orphan dir, which it removes; a record without a checkpoint
        // is an UNKNOWN container, which kubelet removes (as when the write came second).
        undo.push(Undo::DeleteCheckpoint);
        let checkpointed = self.write_checkpoint(id, &status);
        let created = async {
            // The rootfs snapshot is held by a lease of its own until the container record
            // references it (§5.4).
            let lease = self.hold_lease(LeasePurpose::Rootfs).await?;
            let created = async {
                undo.push(Undo::RemoveSnapshot);
                self.prepare_fresh_snapshot(&snapshotter, id.as_str(), &image.chain_id, lease.id())
                    .await
                    .map_err(|e| e.context("failed to prepare container rootfs"))?;
                crate::spec::userdb::resolve_user(&*self.backends.containerd, &snapshotter, id.as_str(), &mut spec)
                    .await?;
                let record = ContainerRecord {
                    id: id.to_string(),
                    labels: [(LABEL_KIND.to_string(), KIND_CONTAINER.to_string())]
                        .into_iter()
                        .chain(sorted(&config.labels))
                        .collect(),
                    image: image.references.iter().next().cloned().unwrap_or_else(|| image.id.clone()),
                    runtime,
                    snapshotter,
                    snapshot_key: id.to_string(),
                    spec,
                    extensions: [(
                        EXTENSION_CONTAINER_METADATA.to_string(),
                        serde_json::to_vec(&metadata).expect("serialises"),
                    )]
                    .into(),
                    created_at_ns: 0,
                };
                undo.push(Undo::DeleteContainer);
                self.create_fresh_container(record)
                    .await
                    .map_err(|e| e.context("failed to create containerd container"))?;
                Ok::<(), Error>(())
            }
            .await;
            lease.release_detached(self.clone());
            created
        };
        let (created, checkpointed) = futures::join!(created, checkpointed);
        created?;
        checkpointed?;
        let container = Arc::new(Container::new(metadata, config.clone(), status));
        self.containers.add(id, container)?;
        self.send_container_event(id.as_str(), &sandbox.id, ContainerEventType::ContainerCreatedEvent);
        Ok(())
    }

    /// The task pid of the container whose PID namespace a TARGET-mode container joins; 0 when
    /// the mode is not TARGET. The target must exist and run, as in containerd.
    fn target_pid(&self, config: &ContainerConfig) -> Result<u32> {
        let options =
            config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.as_ref());
        let Some(options) = options.filter(|o| o.pid == k8s_cri::v1::NamespaceMode::Target as i32) else {
            return Ok(0);
        };
        let target = self
            .containers
            .get(&options.target_id)
            .map_err(|e| e.context("failed to find the target of the TARGET pid namespace mode"))?;
        let status = target.status();
        if status.state() != ContainerState::Running || status.pid == 0 {
            return Err(Error::precondition(format!(
                "target container {:?} of the TARGET pid namespace mode is not running",
                target.id
            )));
        }
        Ok(status.pid)
    }

    pub async fn start_container(self: &Arc<Self>, request: StartContainerRequest) -> Result<StartContainerResponse> {
        self.check_initialized()?;
        let container = self.containers.get(&request.container_id)?;
        let service = self.clone();
        self.detached(async move { service.start_container_inner(container).await }).await?;
        Ok(StartContainerResponse {})
    }

    async fn start_container_inner(self: Arc<Self>, container: Arc<Container>) -> Result<()> {
        self.update_container_memory(&container, |status| {
            let state = status.state();
            if state != ContainerState::Created || status.removing || status.starting {
                let why = if status.removing {
                    "being removed"
                } else if status.starting {
                    "already starting"
                } else {
                    "not created"
                };
                return Err(Error::precondition(format!(
                    "container {:?} is in {} state ({why})",
                    container.id,
                    state_name(state)
                )));
            }
            status.starting = true;
            Ok(())
        })
        .await?;
        // Bounded, as RunPodSandbox is: the start runs detached from its caller, so a hung
        // containerd call would otherwise keep the container "starting" (unremovable) for good.
        let steps = self.start_container_steps(&container);
        let result = self.with_timeout(START_CONTAINER_TIMEOUT, "start container", steps).await;
        if let Err(error) = &result {
            tracing::warn!(id = %container.id, %error, "StartContainer failed");
            let rollback = self
                .with_timeout(ROLLBACK_TIMEOUT, "rollback", async {
                    ignore_not_found(self.backends.containerd.delete_task(container.id.as_str()).await.map(|_| ()))
                })
                .await;
            let message = error.message.clone();
            let now = self.now_ns();
            let recorded = self
                .update_container_status(&container, |status| {
                    status.starting = false;
                    status.start_requested = false;
                    status.finished_at_ns = now;
                    status.exit_code = EXIT_CODE_START_ERROR;
                    status.reason = REASON_START_ERROR.to_string();
                    status.message = message;
                    true
                })
                .await;
            if let Err(checkpoint_error) = recorded {
                tracing::error!(id = %container.id, %checkpoint_error, "could not record the start failure");
                let _ = self
                    .update_container_memory(&container, |status| {
                        status.starting = false;
                        Ok(())
                    })
                    .await;
            }
            container.mark_stopped();
            if let Err(rollback_error) = rollback {
                // The start may have happened although its reply was an error (containerd went
                // away mid-call): a task left running under an EXITED container would run for
                // good, since nothing watches it. The exit path's retries delete it (killing it
                // first if it runs), with the events' backoff, until containerd answers.
                cov_mark::hit!(start_rollback_task_delete_retried);
                tracing::warn!(id = %container.id, %rollback_error, "could not delete the failed start's task; retrying");
                let task = TaskId::Container(container.id.clone());
                let exit = ExitStatus::new(EXIT_CODE_START_ERROR as u32, now);
                self.monitor.push(&task, crate::events::PendingEvent::Exit(exit), self.now_ns());
            }
            return result;
        }
        self.send_container_event(
            container.id.as_str(),
            &container.metadata.sandbox_id,
            ContainerEventType::ContainerStartedEvent,
        );
        self.start_exit_monitor(TaskId::Container(container.id.clone()));
        Ok(())
    }

    async fn start_container_steps(&self, container: &Container) -> Result<()> {
        let sandbox = self
            .sandboxes
            .get(container.metadata.sandbox_id.as_str())
            .map_err(|e| e.context("sandbox of the container"))?;
        if sandbox.status().state != SandboxState::Ready {
            return Err(Error::precondition(format!("sandbox container {:?} is not running", sandbox.id)));
        }
        // Persist the intent before the task starts: a restart between here and the started
        // checkpoint then resolves to EXITED(StartError), never to a silent CREATED (B8). The
        // write runs while the task is created (runc's create, about 100 ms on the real
        // stack, hides the fsync): a task that exists but never started is a StartError at
        // recovery whether or not the intent reached the disk, and no task without the intent
        // is a CREATED container that never began to start.
        let intent = self.update_container_status(container, |status| {
            status.start_requested = true;
            true
        });
        let created = async {
            self.apply_updated_resources(container).await?;
            let io = TaskIo {
                log_path: container.metadata.log_path.clone(),
                stdin: container.config.stdin,
                tty: container.config.tty,
            };
            self.create_fresh_task(container.id.as_str(), &io)
                .await
                .map_err(|e| e.context("failed to create containerd task"))
        };
        let (intent, created) = futures::join!(intent, created);
        intent?;
        created?;
        let pid = self
            .backends
            .containerd
            .start_task(container.id.as_str())
            .await
            .map_err(|e| e.context("failed to start containerd task"))?;
        let now = self.now_ns();
        self.update_container_status(container, |status| {
            status.pid = pid;
            status.started_at_ns = now;
            status.starting = false;
            status.start_requested = false;
            true
        })
        .await
        .map(|_| ())
    }
}

impl CriService {
    /// The task takes its limits from the container's spec. An update writes them there, but
    /// the checkpoint is the source of truth: a crash between the two leaves the spec behind,
    /// so the checkpoint's go into the spec before the task is created, and the task starts
    /// with them.
    async fn apply_updated_resources(&self, container: &Container) -> Result<()> {
        let created_with = crate::spec::resources_as_applied(
            container.config.linux.as_ref().and_then(|l| l.resources.as_ref()),
            self.backends.os.swap_accounted(),
        );
        let Some(resources) = container.status().resources.filter(|r| *r != created_with) else {
            return Ok(());
        };
        self.write_spec_resources(container.id.as_str(), &self.config.runtime_resources(&resources)).await.map(|_| ())
    }
}

pub(crate) fn state_name(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Created => "CONTAINER_CREATED",
        ContainerState::Running => "CONTAINER_RUNNING",
        ContainerState::Exited => "CONTAINER_EXITED",
        ContainerState::Unknown => "CONTAINER_UNKNOWN",
    }
}
