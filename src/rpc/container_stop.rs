//! StopContainer and RemoveContainer (SPEC §6.4). Both are idempotent: a missing container is
//! OK (B18).

use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1::{RemoveContainerRequest, RemoveContainerResponse, StopContainerRequest, StopContainerResponse};

use crate::error::{Error, Result};
use crate::events::HANDLE_EVENT_TIMEOUT;
use crate::ids::TaskId;
use crate::ports::ExitStatus;
use crate::rpc::container_create::state_name;
use crate::service::CriService;
use crate::spec::parse_signal;
use crate::store::container::EXIT_CODE_UNKNOWN;
use crate::store::{Container, ContainerState};

/// After SIGKILL, how long Stop waits for the exit before returning a typed error.
pub const CONTAINER_KILL_WAIT: Duration = Duration::from_secs(30);
/// Bound of what RemoveContainer does before its reply (the removal's mark), as CreateContainer's
/// and StartContainer's steps are bounded: the removal runs detached from its caller, so a call
/// that hangs would otherwise keep the container "being removed", refusing every retry, until
/// crid restarts. What follows the reply is bounded per attempt (`removal.rs`).
pub const REMOVE_CONTAINER_TIMEOUT: Duration = Duration::from_secs(240);
const SIGKILL: u32 = 9;
const SIGTERM: u32 = 15;

impl CriService {
    pub async fn stop_container(self: &Arc<Self>, request: StopContainerRequest) -> Result<StopContainerResponse> {
        self.check_initialized()?;
        if request.timeout < 0 {
            return Err(Error::invalid("stop timeout must not be negative"));
        }
        let container = match self.containers.get(&request.container_id) {
            Ok(container) => container,
            Err(error) if error.is_not_found() => return Ok(StopContainerResponse {}),
            Err(error) => return Err(error),
        };
        self.stop_container_inner(&container, request.timeout).await?;
        Ok(StopContainerResponse {})
    }

    pub(crate) async fn stop_container_inner(
        self: &Arc<Self>,
        container: &Arc<Container>,
        timeout_s: i64,
    ) -> Result<()> {
        let id = container.id.clone();
        let state = container.status().state();
        if !matches!(state, ContainerState::Running | ContainerState::Unknown) {
            return Ok(());
        }
        let containerd = &self.backends.containerd;
        let task = TaskId::Container(id.clone());
        if state == ContainerState::Unknown {
            if self.record_exit_if_task_gone(&task).await? {
                return Ok(());
            }
            // An UNKNOWN container has no monitor; this one reports the exit of this stop.
            let service = self.clone();
            let monitored = id.clone();
            tokio::spawn(async move {
                if let Ok(exit) = service.backends.containerd.wait_task(monitored.as_str()).await {
                    service.handle_monitored_exit(&TaskId::Container(monitored), exit).await;
                }
            });
        }
        // A RUNNING container's task is killed without asking for it first (one round trip
        // less on every stop); only a kill that finds no process asks whether the task is gone.
        if timeout_s > 0 {
            if container.take_stop_signal() {
                let signal = self.stop_signal_of(container);
                match containerd.kill_task(id.as_str(), signal, false).await {
                    Ok(()) => {}
                    Err(error) if error.is_not_found() => {
                        if self.record_exit_if_task_gone(&task).await? {
                            return Ok(());
                        }
                    }
                    Err(error) => return Err(error.context(format!("failed to stop container {id:?}"))),
                }
            }
            let graceful = crate::ports::timeout(
                &*self.backends.clock,
                Duration::from_secs(timeout_s as u64),
                container.wait_stopped(),
            )
            .await;
            if graceful.is_ok() {
                return Ok(());
            }
        }
        match containerd.kill_task(id.as_str(), SIGKILL, true).await {
            Ok(()) => {}
            Err(error) if error.is_not_found() => {
                if self.record_exit_if_task_gone(&task).await? {
                    return Ok(());
                }
            }
            Err(error) => return Err(error.context(format!("failed to kill container {id:?}"))),
        }
        self.wait_exit_handled(&task, CONTAINER_KILL_WAIT, || container.is_stopped(), container.wait_stopped()).await
    }

    /// When the task does not exist, nothing will ever report its exit: it is recorded here,
    /// as unknown, and true is returned. A task that exists (running, or stopped with its exit
    /// on the way to the monitor) returns false. The handling has the exit monitor's bound:
    /// a RemoveContainer runs this detached from its caller, and a containerd call that never
    /// answered would otherwise hold it (and the container's task delete lock) for good.
    pub(crate) async fn record_exit_if_task_gone(self: &Arc<Self>, task: &TaskId) -> Result<bool> {
        match self.backends.containerd.task_info(task.as_str()).await {
            Err(error) if error.is_not_found() => {
                let exit = ExitStatus::new(EXIT_CODE_UNKNOWN as u32, self.now_ns());
                self.with_timeout(HANDLE_EVENT_TIMEOUT, "handle exit", self.handle_exit(task, exit)).await?;
                Ok(true)
            }
            Err(error) => Err(error.context(match task {
                TaskId::Container(_) => "failed to get task",
                TaskId::Sandbox(_) => "failed to get sandbox task",
            })),
            Ok(_) => Ok(false),
        }
    }

    /// The stored STOPSIGNAL, else SIGTERM.
    fn stop_signal_of(&self, container: &Container) -> u32 {
        let signal = &container.metadata.stop_signal;
        if signal.is_empty() {
            return SIGTERM;
        }
        parse_signal(signal).unwrap_or_else(|| {
            tracing::warn!(id = %container.id, signal, "unknown stop signal; using SIGTERM");
            SIGTERM
        })
    }

    pub async fn remove_container(
        self: &Arc<Self>,
        request: RemoveContainerRequest,
    ) -> Result<RemoveContainerResponse> {
        self.check_initialized()?;
        let container = match self.containers.get(&request.container_id) {
            Ok(container) => container,
            Err(error) if error.is_not_found() => return Ok(RemoveContainerResponse {}),
            Err(error) => return Err(error),
        };
        let service = self.clone();
        self.detached(async move { service.remove_container_inner(&container).await }).await?;
        Ok(RemoveContainerResponse {})
    }

    pub(crate) async fn remove_container_inner(self: &Arc<Self>, container: &Arc<Container>) -> Result<()> {
        let id = container.id.clone();
        if matches!(container.status().state(), ContainerState::Running | ContainerState::Unknown) {
            self.stop_container_inner(container, 0)
                .await
                .map_err(|e| e.context(format!("failed to forcibly stop container {id:?}")))?;
        }
        self.update_container_memory(container, |status| {
            let state = status.state();
            if matches!(state, ContainerState::Running | ContainerState::Unknown) || status.starting || status.removing
            {
                return Err(Error::precondition(format!(
                    "container {id:?} is in {} state{}",
                    state_name(state),
                    if status.starting {
                        " and starting"
                    } else if status.removing {
                        " and already being removed"
                    } else {
                        ""
                    }
                )));
            }
            status.removing = true;
            Ok(())
        })
        .await?;
        // What must precede the reply is the removal's mark, durable; the rest follows it
        // (`removal.rs`).
        let result = self
            .with_timeout(REMOVE_CONTAINER_TIMEOUT, "remove container", self.acknowledge_container_removal(container))
            .await;
        if result.is_err() {
            let _ = self
                .update_container_memory(container, |status| {
                    status.removing = false;
                    Ok(())
                })
                .await;
        }
        result
    }
}
