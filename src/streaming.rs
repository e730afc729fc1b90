//! What a stream URL does once a client connected to it (SPEC §6.5): an interactive exec, an
//! attach to a container's IO, a port-forward into the pod. The protocol layer (SPDY or
//! WebSocket framing, in the backend) hands the core abstract byte streams; everything that
//! decides behaviour is here, so the simulator drives it with in-memory streams:
//!
//! - the exec process is started with the client's streams (a tty with the client's first size,
//!   when it comes at once), resized on request, waited for and always deleted — also when the
//!   client vanishes or stays idle, after a SIGKILL;
//! - an attach feeds the task's stdin and reads its output until the output ends (the task
//!   exited) or the client is gone; a container with `stdin_once` (and no tty, as containerd)
//!   gets its stdin closed when the first attached client's stdin ends;
//! - a session idle for `stream_idle_timeout` (no byte either way) ends as a vanished client does;
//! - at most [`MAX_CONCURRENT_STREAMS`] sessions and forwarded connections run at once: the
//!   next one is refused (ResourceExhausted) rather than queued;
//! - the end of a session becomes the remotecommand error-stream Status ([`SessionStatus`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, ErrorKind, Result};
use crate::ports::clock::Clock;
use crate::ports::{
    ByteReader, ByteWriter, ClientStreams, ExecSpec, ProcessIo, SessionEnd, StreamHandler, StreamRequest, TerminalSize,
};
use crate::service::CriService;
use crate::store::SandboxState;

/// Exec/attach sessions plus forwarded connections served at once; more are refused.
pub const MAX_CONCURRENT_STREAMS: usize = 256;
/// After a kill (client gone, idle), how long to wait for the exec process to go away.
const SESSION_KILL_WAIT: Duration = Duration::from_secs(10);
/// How long a tty exec waits for the client's first terminal size before it starts without
/// one. client-go sends it as soon as its streams exist, so it is there within milliseconds.
const INITIAL_SIZE_WAIT: Duration = Duration::from_millis(500);
const SIGKILL: u32 = 9;

/// Live sessions, bounded.
#[derive(Default)]
pub struct StreamSessions {
    live: Arc<AtomicUsize>,
}

/// One slot of [`StreamSessions`], released on drop.
pub struct SessionPermit {
    live: Arc<AtomicUsize>,
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl StreamSessions {
    fn admit(&self) -> Result<SessionPermit> {
        let admitted = self.live.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |live| {
            (live < MAX_CONCURRENT_STREAMS).then_some(live + 1)
        });
        match admitted {
            Ok(_) => Ok(SessionPermit { live: self.live.clone() }),
            Err(_) => Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!("too many streams: at most {MAX_CONCURRENT_STREAMS} run at once"),
            )),
        }
    }

    /// Sessions and forwarded connections running now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

/// When a session last moved a byte, in clock nanoseconds.
struct Activity {
    clock: Arc<dyn Clock>,
    last_ns: AtomicI64,
}

impl Activity {
    fn new(clock: Arc<dyn Clock>) -> Arc<Activity> {
        let now = clock.now_ns();
        Arc::new(Activity { clock, last_ns: AtomicI64::new(now) })
    }

    fn touch(&self) {
        self.last_ns.store(self.clock.now_ns(), Ordering::Relaxed);
    }

    /// Resolves once no byte moved for `timeout`; never when `timeout` is zero (no limit).
    async fn idle_for(&self, timeout: Duration) {
        if timeout.is_zero() {
            return std::future::pending().await;
        }
        let timeout_ns = i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX);
        loop {
            let idle_ns = self.clock.now_ns().saturating_sub(self.last_ns.load(Ordering::Relaxed));
            if idle_ns >= timeout_ns {
                return;
            }
            self.clock.sleep(Duration::from_nanos((timeout_ns - idle_ns) as u64)).await;
        }
    }
}

/// A stream that records activity on every byte it moves.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn track_reader(reader: ByteReader, activity: &Arc<Activity>) -> ByteReader {
    Box::new(Tracked { inner: reader, activity: activity.clone() })
}

fn track_writer(writer: ByteWriter, activity: &Arc<Activity>) -> ByteWriter {
    Box::new(Tracked { inner: writer, activity: activity.clone() })
}

fn track_io(io: ProcessIo, activity: &Arc<Activity>) -> ProcessIo {
    ProcessIo {
        stdin: io.stdin.map(|r| track_reader(r, activity)),
        stdout: io.stdout.map(|w| track_writer(w, activity)),
        stderr: io.stderr.map(|w| track_writer(w, activity)),
    }
}

/// The next terminal size; pending forever once there is no resize stream (or it ended).
async fn next_size(resize: &mut Option<mpsc::Receiver<TerminalSize>>) -> Option<TerminalSize> {
    match resize {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Why a session stopped waiting for its process.
enum Interrupted {
    ClientGone,
    Idle,
}

impl Interrupted {
    fn error(&self, idle: Duration) -> Error {
        match self {
            Interrupted::ClientGone => Error::new(ErrorKind::Cancelled, "the client went away"),
            Interrupted::Idle => Error::deadline(format!("stream idle for {idle:?}")),
        }
    }
}

impl CriService {
    /// `stream_idle_timeout`; zero means none. Validated with the config.
    fn stream_idle_timeout(&self) -> Duration {
        self.config.stream_idle_timeout
    }

    /// Serves an exec or attach session to its end (see the module comment).
    pub async fn serve_stream_session(
        self: &Arc<Self>,
        request: StreamRequest,
        client: ClientStreams,
    ) -> Result<SessionEnd> {
        self.check_initialized()?;
        let permit = self.streams.admit()?;
        let service = self.clone();
        // Detached: the exec process is deleted (and a stdin_once stdin closed) even when the
        // connection's task is dropped mid-session.
        self.detached(async move {
            let _permit = permit;
            match request {
                StreamRequest::Exec { container_id, cmd, tty, .. } => {
                    service.exec_session(&container_id, cmd, tty, client).await
                }
                StreamRequest::Attach { container_id, .. } => service.attach_session(&container_id, client).await,
                StreamRequest::PortForward { .. } => {
                    Err(Error::invalid("a port-forward request has no exec or attach session"))
                }
            }
        })
        .await
    }

    async fn exec_session(
        self: Arc<Self>,
        container_id: &str,
        cmd: Vec<String>,
        tty: bool,
        client: ClientStreams,
    ) -> Result<SessionEnd> {
        if cmd.is_empty() {
            return Err(Error::invalid("exec command must not be empty"));
        }
        let id = self.running_container(container_id)?;
        let ClientStreams { io, mut resize, mut gone } = client;
        // A tty process starts with the client's size when the client sent one at once: resized
        // only after its start, a program that reads the size first would see 0x0.
        let console_size = if tty { self.first_size(&mut resize).await } else { None };
        let mut suffix = [0u8; 8];
        self.backends.os.random_bytes(&mut suffix);
        let spec = ExecSpec {
            exec_id: format!("exec-{}", hex::encode(suffix)),
            args: cmd,
            tty,
            output_limit_bytes: 0,
            console_size,
        };
        let activity = Activity::new(self.backends.clock.clone());
        let containerd = self.backends.containerd.clone();
        containerd
            .exec_start_streaming(&id, &spec, track_io(io, &activity))
            .await
            .map_err(|e| e.context("failed to start exec"))?;
        let idle = self.stream_idle_timeout();
        let exec_id = spec.exec_id.as_str();
        let wait = containerd.exec_wait(&id, exec_id);
        tokio::pin!(wait);
        let idle_expired = activity.idle_for(idle);
        tokio::pin!(idle_expired);
        let waited = loop {
            tokio::select! {
                biased;
                exit = &mut wait => break Ok(exit),
                size = next_size(&mut resize) => match size {
                    Some(size) => {
                        if let Err(error) = containerd.resize_pty(&id, exec_id, size).await {
                            tracing::debug!(id, exec_id, %error, "exec resize failed");
                        }
                    }
                    None => resize = None,
                },
                _ = &mut gone => break Err(Interrupted::ClientGone),
                _ = &mut idle_expired => break Err(Interrupted::Idle),
            }
        };
        if let Ok(Ok(_)) = &waited {
            // The client gets the output up to its end (or the drain bound) before the exit.
            tokio::select! {
                biased;
                drained = self.drain_exec_output(&id, exec_id) => {
                    if let Err(error) = drained {
                        tracing::warn!(id = %id, exec_id, %error, "exec output not drained");
                    }
                }
                _ = &mut gone => {}
            }
        }
        let result = match waited {
            Ok(Ok(exit)) => Ok(SessionEnd::Exited { exit_code: exit.exit_code as i32 }),
            Ok(Err(error)) => Err(error.context("failed to wait for exec")),
            Err(why) => {
                let _ = containerd.exec_kill(&id, exec_id, SIGKILL).await;
                let _ = self.with_timeout(SESSION_KILL_WAIT, "exec kill", containerd.exec_wait(&id, exec_id)).await;
                Err(why.error(idle))
            }
        };
        match containerd.exec_delete(&id, exec_id).await {
            Ok(()) => {}
            Err(error) if error.is_not_found() => {}
            Err(error) => tracing::warn!(id, exec_id, %error, "failed to delete exec process"),
        }
        result
    }

    /// The client's first terminal size, if it comes within [`INITIAL_SIZE_WAIT`].
    async fn first_size(&self, resize: &mut Option<mpsc::Receiver<TerminalSize>>) -> Option<TerminalSize> {
        let receiver = resize.as_mut()?;
        match crate::ports::timeout(self.backends.clock.as_ref(), INITIAL_SIZE_WAIT, receiver.recv()).await {
            Ok(Some(size)) => Some(size),
            Ok(None) => {
                *resize = None;
                None
            }
            Err(_) => None,
        }
    }

    async fn attach_session(self: Arc<Self>, container_id: &str, client: ClientStreams) -> Result<SessionEnd> {
        let id = self.running_container(container_id)?;
        let config = self.containers.get(&id)?.config.clone();
        let activity = Activity::new(self.backends.clock.clone());
        let ClientStreams { io, mut resize, mut gone } = client;
        let io = track_io(io, &activity);
        let containerd = self.backends.containerd.clone();
        // The client's stdin only reaches a container created with one.
        let stdin = match io.stdin {
            Some(reader) if config.stdin => {
                let writer = containerd.open_task_stdin(&id).await.map_err(|e| e.context("failed to attach stdin"))?;
                Some((reader, writer))
            }
            _ => None,
        };
        let feeds_stdin = stdin.is_some();
        let stdin_copy = async {
            match stdin {
                Some((mut reader, mut writer)) => {
                    let copied = tokio::io::copy(&mut reader, &mut writer).await;
                    let _ = writer.shutdown().await;
                    copied.map(|_| ())
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stdin_copy);
        let mut stdin_open = feeds_stdin;
        let output = containerd.attach_task_output(&id, io.stdout, io.stderr);
        tokio::pin!(output);
        let idle = self.stream_idle_timeout();
        let idle_expired = activity.idle_for(idle);
        tokio::pin!(idle_expired);
        let ended = loop {
            tokio::select! {
                biased;
                attached = &mut output => break Ok(attached),
                copied = &mut stdin_copy, if stdin_open => {
                    stdin_open = false;
                    if let Err(error) = copied {
                        tracing::debug!(id, %error, "attach stdin copy ended");
                    }
                    // containerd closes a stdin_once container's stdin when the first attached
                    // stdin ends, except with a tty (kubectl#1199); the output decides the end.
                    if config.stdin_once && !config.tty {
                        self.close_stdin_once(&id).await;
                    }
                }
                size = next_size(&mut resize) => match size {
                    Some(size) => {
                        if let Err(error) = containerd.resize_pty(&id, "", size).await {
                            tracing::debug!(id, %error, "attach resize failed");
                        }
                    }
                    None => resize = None,
                },
                _ = &mut gone => break Err(Interrupted::ClientGone),
                _ = &mut idle_expired => break Err(Interrupted::Idle),
            }
        };
        // A stdin_once stdin is closed after the first attach, however it ended.
        if stdin_open && config.stdin_once && !config.tty {
            self.close_stdin_once(&id).await;
        }
        match ended {
            Ok(Ok(())) => Ok(SessionEnd::Detached),
            Ok(Err(error)) => Err(error.context("failed to attach")),
            Err(why) => Err(why.error(idle)),
        }
    }

    async fn close_stdin_once(&self, id: &str) {
        match self.backends.containerd.close_task_stdin(id).await {
            Ok(()) => {}
            Err(error) if error.is_not_found() => {}
            Err(error) => tracing::warn!(id, %error, "failed to close stdin after the first attach"),
        }
    }

    /// Serves one forwarded connection of a port-forward URL (see the module comment).
    pub async fn serve_port_forward(
        self: &Arc<Self>,
        sandbox_id: &str,
        port: u16,
        from_client: ByteReader,
        to_client: ByteWriter,
        gone: oneshot::Receiver<()>,
    ) -> Result<()> {
        self.check_initialized()?;
        let permit = self.streams.admit()?;
        let sandbox = self.sandboxes.get(sandbox_id)?;
        if sandbox.status().state != SandboxState::Ready {
            return Err(Error::precondition(format!("sandbox {:?} is not ready", sandbox.id)));
        }
        if port == 0 {
            return Err(Error::invalid("port 0 cannot be forwarded"));
        }
        // A host-network pod's ports are the host's.
        let netns = if sandbox.metadata.host_network { String::new() } else { sandbox.metadata.netns_path.clone() };
        let (upstream_reader, upstream_writer) = self
            .backends
            .os
            .dial_port(&netns, port)
            .await
            .map_err(|e| e.context(format!("failed to connect to port {port} in pod {sandbox_id}")))?;
        let activity = Activity::new(self.backends.clock.clone());
        let idle = self.stream_idle_timeout();
        let from_client = track_reader(from_client, &activity);
        let to_client = track_writer(to_client, &activity);
        self.detached(async move {
            let _permit = permit;
            let copy = pump(from_client, upstream_writer, upstream_reader, to_client);
            let mut gone = gone;
            tokio::select! {
                biased;
                copied = copy => copied,
                _ = &mut gone => Err(Interrupted::ClientGone.error(idle)),
                _ = activity.idle_for(idle) => Err(Interrupted::Idle.error(idle)),
            }
        })
        .await
    }

    /// Sessions and forwarded connections running now (for the invariants and Status).
    pub fn live_stream_sessions(&self) -> usize {
        self.streams.live()
    }
}

/// Copies both directions until each has ended, shutting each writer down at its reader's end.
async fn pump(
    mut from_client: ByteReader,
    mut upstream_writer: ByteWriter,
    mut upstream_reader: ByteReader,
    mut to_client: ByteWriter,
) -> Result<()> {
    let up = async {
        let copied = tokio::io::copy(&mut from_client, &mut upstream_writer).await;
        let _ = upstream_writer.shutdown().await;
        copied
    };
    let down = async {
        let copied = tokio::io::copy(&mut upstream_reader, &mut to_client).await;
        let _ = to_client.shutdown().await;
        copied
    };
    let (up, down) = tokio::join!(up, down);
    up.and(down).map(|_| ()).map_err(|e| Error::unavailable(format!("port-forward copy failed: {e}")))
}

#[async_trait::async_trait]
impl StreamHandler for Arc<CriService> {
    async fn serve_session(&self, request: StreamRequest, client: ClientStreams) -> Result<SessionEnd> {
        self.serve_stream_session(request, client).await
    }

    async fn forward_port(
        &self,
        sandbox_id: &str,
        port: u16,
        from_client: ByteReader,
        to_client: ByteWriter,
        gone: oneshot::Receiver<()>,
    ) -> Result<()> {
        self.serve_port_forward(sandbox_id, port, from_client, to_client, gone).await
    }
}

/// What the client's error stream reports at the end of a session: kubelet's remotecommand
/// status, success or a failure with its reason (and, for a non-zero exit, the code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionStatus {
    Success,
    NonZeroExit { exit_code: i32 },
    Failure { message: String },
}

impl SessionStatus {
    pub fn of(end: &Result<SessionEnd>) -> SessionStatus {
        match end {
            Ok(SessionEnd::Exited { exit_code: 0 }) | Ok(SessionEnd::Detached) => SessionStatus::Success,
            Ok(SessionEnd::Exited { exit_code }) => SessionStatus::NonZeroExit { exit_code: *exit_code },
            Err(error) => SessionStatus::Failure { message: error.message.clone() },
        }
    }

    fn message(&self) -> String {
        match self {
            SessionStatus::Success => String::new(),
            SessionStatus::NonZeroExit { exit_code } => {
                format!("command terminated with non-zero exit code: exit status {exit_code}")
            }
            SessionStatus::Failure { message } => message.clone(),
        }
    }

    /// The `v4.channel.k8s.io` (and later) error stream: a JSON `metav1.Status`. A non-zero exit
    /// is reason `NonZeroExitCode` with an `ExitCode` cause whose message is the code, which is
    /// what the client turns into the exit code it reports.
    pub fn v4_json(&self) -> Vec<u8> {
        let status = match self {
            SessionStatus::Success => json!({"metadata": {}, "status": "Success"}),
            SessionStatus::NonZeroExit { exit_code } => json!({
                "metadata": {},
                "status": "Failure",
                "message": self.message(),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": exit_code.to_string()}]},
            }),
            SessionStatus::Failure { message } => json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "InternalError",
                "details": {"causes": [{"message": message}]},
                "code": 500,
            }),
        };
        serde_json::to_vec(&status).expect("a JSON value serialises")
    }

    /// The v1–v3 error stream: the failure's text, nothing on success.
    pub fn text(&self) -> Vec<u8> {
        self.message().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_status_follows_kubelet() {
        let ok = SessionStatus::of(&Ok(SessionEnd::Exited { exit_code: 0 }));
        assert_eq!(ok, SessionStatus::Success);
        assert!(ok.text().is_empty());
        let value: serde_json::Value = serde_json::from_slice(&ok.v4_json()).unwrap();
        assert_eq!(value["status"], "Success");
        let failed = SessionStatus::of(&Ok(SessionEnd::Exited { exit_code: 3 }));
        let value: serde_json::Value = serde_json::from_slice(&failed.v4_json()).unwrap();
        assert_eq!(value["status"], "Failure");
        assert_eq!(value["reason"], "NonZeroExitCode");
        assert_eq!(value["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(value["details"]["causes"][0]["message"], "3");
        let error = SessionStatus::of(&Err(Error::precondition("container \"c\" is not running")));
        let value: serde_json::Value = serde_json::from_slice(&error.v4_json()).unwrap();
        assert_eq!(value["message"], "container \"c\" is not running");
        assert_eq!(error.text(), b"container \"c\" is not running");
    }
}
