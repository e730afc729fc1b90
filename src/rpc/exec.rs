//! ExecSync, and the streaming RPCs Exec, Attach and PortForward (SPEC §6.5).

use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1::{
    AttachRequest, AttachResponse, ExecRequest, ExecResponse, ExecSyncRequest, ExecSyncResponse, PortForwardRequest,
    PortForwardResponse,
};

use crate::error::{Error, Result};
use crate::ports::{ExecSpec, StreamRequest};
use crate::service::CriService;
use crate::store::{ContainerState, SandboxState};

/// Each of stdout and stderr of an ExecSync keeps at most this much; the rest is dropped.
pub const EXEC_SYNC_OUTPUT_LIMIT_BYTES: usize = 16 * 1024 * 1024;
/// After a timeout kill, how long to wait for the exec process to go away.
const EXEC_KILL_WAIT: Duration = Duration::from_secs(10);
const SIGKILL: u32 = 9;

impl CriService {
    pub async fn exec_sync(self: &Arc<Self>, request: ExecSyncRequest) -> Result<ExecSyncResponse> {
        self.check_initialized()?;
        if request.cmd.is_empty() {
            return Err(Error::invalid("exec command must not be empty"));
        }
        if request.timeout < 0 {
            return Err(Error::invalid("exec timeout must not be negative"));
        }
        let container = self.containers.get(&request.container_id)?;
        if container.status().state() != ContainerState::Running {
            return Err(Error::precondition(format!("container {:?} is not running", container.id)));
        }
        let mut suffix = [0u8; 8];
        self.backends.os.random_bytes(&mut suffix);
        let spec = ExecSpec {
            exec_id: format!("exec-{}", hex::encode(suffix)),
            args: request.cmd,
            tty: false,
            output_limit_bytes: EXEC_SYNC_OUTPUT_LIMIT_BYTES,
            console_size: None,
        };
        let service = self.clone();
        let id = container.id.clone();
        // Dropped with this future: a caller that goes away (a cancelled gRPC call) ends the exec
        // as a timeout would.
        let (_caller_alive, caller_gone) = tokio::sync::oneshot::channel::<()>();
        // Detached: the process and its IO are cleaned up even if the caller goes away (B25).
        self.detached(async move { service.exec_sync_inner(id.as_str(), spec, request.timeout, caller_gone).await })
            .await
    }

    async fn exec_sync_inner(
        self: Arc<Self>,
        id: &str,
        spec: ExecSpec,
        timeout_s: i64,
        caller_gone: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<ExecSyncResponse> {
        let containerd = self.backends.containerd.clone();
        let exec_id = spec.exec_id.clone();
        if let Err(error) = containerd.exec_start(id, &spec).await {
            // A start that failed may still have started the process: a reply lost to a
            // deadline or a broken connection, a retry answered AlreadyExists. Killed and
            // deleted like one that timed out, it is gone when ExecSync returns (B25).
            cov_mark::hit!(exec_start_failed_cleaned_up);
            self.kill_exec(id, &exec_id).await;
            self.delete_exec(id, &exec_id).await;
            return Err(error.context("failed to start exec"));
        }
        let wait = async {
            if timeout_s > 0 {
                crate::ports::timeout(
                    &*self.backends.clock,
                    Duration::from_secs(timeout_s as u64),
                    containerd.exec_wait(id, &exec_id),
                )
                .await
                .ok()
            } else {
                Some(containerd.exec_wait(id, &exec_id).await)
            }
        };
        tokio::pin!(caller_gone);
        let waited = tokio::select! {
            biased;
            waited = wait => waited,
            _ = &mut caller_gone => None,
        };
        let mut drained = Ok(());
        if let Some(Ok(_)) = waited {
            // The process exited; its output may still be held open by a child it left behind.
            tokio::select! {
                biased;
                result = self.drain_exec_output(id, &exec_id) => drained = result,
                _ = &mut caller_gone => {}
            }
        }
        let result = match waited {
            // Output cut short is no answer, as in containerd: the exec's delete below frees
            // the pipes the child holds.
            Some(Ok(_)) if drained.is_err() => drained.map(|()| ExecSyncResponse::default()),
            Some(Ok(exit)) => match containerd.exec_output(id, &exec_id).await {
                Ok(output) => {
                    assert!(
                        output.stdout.len() <= spec.output_limit_bytes
                            && output.stderr.len() <= spec.output_limit_bytes,
                        "exec output over its cap"
                    );
                    Ok(ExecSyncResponse {
                        stdout: output.stdout,
                        stderr: output.stderr,
                        exit_code: exit.exit_code as i32,
                    })
                }
                Err(error) => Err(error.context("failed to read exec output")),
            },
            Some(Err(error)) => {
                // A failed wait is not an exit: the process may still run, and the delete below
                // may fail too. Killed first, it is gone whatever the delete does (B25).
                self.kill_exec(id, &exec_id).await;
                Err(error.context("failed to wait for exec"))
            }
            None => {
                self.kill_exec(id, &exec_id).await;
                Err(Error::deadline(format!("timeout {timeout_s}s exceeded")))
            }
        };
        self.delete_exec(id, &exec_id).await;
        result
    }

    async fn delete_exec(&self, id: &str, exec_id: &str) {
        match self.backends.containerd.exec_delete(id, exec_id).await {
            Ok(()) => {}
            Err(error) if error.is_not_found() => {}
            Err(error) => tracing::warn!(id, exec_id, %error, "failed to delete exec process"),
        }
    }

    /// Waits for the output of an exec whose process exited to end, for at most
    /// `drain_exec_sync_io_timeout` (zero: until it ends, as containerd): a child the process
    /// left in the background can hold its pipes open for good. Past the bound it fails, as
    /// containerd's does, and the exec's delete frees the pipes. A failure to watch the
    /// output is logged only: what was read is then the output.
    pub(crate) async fn drain_exec_output(&self, id: &str, exec_id: &str) -> Result<()> {
        let closed = self.backends.containerd.exec_output_closed(id, exec_id);
        let bound = self.config.drain_exec_sync_io_timeout;
        let watched = if bound.is_zero() {
            closed.await
        } else {
            match crate::ports::timeout(&*self.backends.clock, bound, closed).await {
                Ok(watched) => watched,
                Err(_) => {
                    cov_mark::hit!(exec_output_drain_bounded);
                    return Err(Error::new(
                        crate::ErrorKind::Unknown,
                        format!(
                            "failed to drain exec process {exec_id:?} io in {bound:?} because io is still held by other processes"
                        ),
                    ));
                }
            }
        };
        if let Err(error) = watched {
            tracing::warn!(id, exec_id, %error, "exec output not watched to its end");
        }
        Ok(())
    }

    /// SIGKILLs an exec process that has not been seen to exit and waits, bounded, for it to go.
    async fn kill_exec(&self, id: &str, exec_id: &str) {
        let containerd = &self.backends.containerd;
        let _ = containerd.exec_kill(id, exec_id, SIGKILL).await;
        let _ = self.with_timeout(EXEC_KILL_WAIT, "exec kill", containerd.exec_wait(id, exec_id)).await;
    }

    pub async fn exec(self: &Arc<Self>, request: ExecRequest) -> Result<ExecResponse> {
        self.check_initialized()?;
        if request.cmd.is_empty() {
            return Err(Error::invalid("exec command must not be empty"));
        }
        if !(request.stdin || request.stdout || request.stderr) {
            return Err(Error::invalid("one of stdin, stdout, or stderr must be set"));
        }
        if request.tty && request.stderr {
            return Err(Error::invalid("tty and stderr cannot both be true"));
        }
        let container = self.running_container(&request.container_id)?;
        let url = self
            .backends
            .stream
            .register(StreamRequest::Exec {
                container_id: container,
                cmd: request.cmd,
                tty: request.tty,
                stdin: request.stdin,
                stdout: request.stdout,
                stderr: request.stderr,
            })
            .await?;
        Ok(ExecResponse { url })
    }

    pub async fn attach(self: &Arc<Self>, request: AttachRequest) -> Result<AttachResponse> {
        self.check_initialized()?;
        if !(request.stdin || request.stdout || request.stderr) {
            return Err(Error::invalid("one of stdin, stdout, or stderr must be set"));
        }
        let container = self.running_container(&request.container_id)?;
        let url = self
            .backends
            .stream
            .register(StreamRequest::Attach {
                container_id: container,
                tty: request.tty,
                stdin: request.stdin,
                stdout: request.stdout,
                stderr: request.stderr,
            })
            .await?;
        Ok(AttachResponse { url })
    }

    pub async fn port_forward(self: &Arc<Self>, request: PortForwardRequest) -> Result<PortForwardResponse> {
        self.check_initialized()?;
        let sandbox = self.sandboxes.get(&request.pod_sandbox_id)?;
        if sandbox.status().state != SandboxState::Ready {
            return Err(Error::precondition(format!("sandbox {:?} is not ready", sandbox.id)));
        }
        if request.port.iter().any(|p| !(1..=65535).contains(p)) {
            return Err(Error::invalid("ports must be in 1..65535"));
        }
        let url = self
            .backends
            .stream
            .register(StreamRequest::PortForward { sandbox_id: sandbox.id.to_string(), ports: request.port })
            .await?;
        Ok(PortForwardResponse { url })
    }

    pub(crate) fn running_container(&self, id: &str) -> Result<String> {
        let container = self.containers.get(id)?;
        if container.status().state() != ContainerState::Running {
            return Err(Error::precondition(format!("container {:?} is not running", container.id)));
        }
        Ok(container.id.to_string())
    }
}
