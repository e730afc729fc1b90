//! The streaming server: the URLs Exec/Attach/PortForward hand out, and the byte streams a
//! client's connection turns into once the protocol layer (SPDY, WebSocket) has negotiated them.
//!
//! The protocol layer owns framing only. What a stream does — start the exec process, attach to
//! a task, dial a port in the pod, close stdin, report the exit, time out when idle — is the
//! core's [`StreamHandler`], reached through the abstract streams below, so the simulator drives
//! the same code with in-memory streams.

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use crate::error::Result;

/// A request that the stream server serves once, under a single-use token.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamRequest {
    Exec { container_id: String, cmd: Vec<String>, tty: bool, stdin: bool, stdout: bool, stderr: bool },
    Attach { container_id: String, tty: bool, stdin: bool, stdout: bool, stderr: bool },
    PortForward { sandbox_id: String, ports: Vec<i32> },
}

#[async_trait]
pub trait StreamServer: Send + Sync + 'static {
    /// Caches the request under a fresh token and returns the URL that serves it.
    /// Fails with ResourceExhausted when too many requests are in flight.
    async fn register(&self, request: StreamRequest) -> Result<String>;
}

/// Bytes from the client (stdin, a forwarded connection's upstream half).
pub type ByteReader = Box<dyn AsyncRead + Send + Unpin>;
/// Bytes to the client (stdout, stderr, a forwarded connection's downstream half). Shutting it
/// down tells the client that this stream ended.
pub type ByteWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A terminal size as the client's resize stream sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// The standard streams of a process as a client sees them; None for a stream not asked for.
#[derive(Default)]
pub struct ProcessIo {
    pub stdin: Option<ByteReader>,
    pub stdout: Option<ByteWriter>,
    pub stderr: Option<ByteWriter>,
}

impl std::fmt::Debug for ProcessIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .finish()
    }
}

/// What a client's exec or attach connection delivers to the core.
pub struct ClientStreams {
    pub io: ProcessIo,
    /// Terminal sizes, in order (tty sessions); None when the client sent no resize stream.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    /// Resolves (its sender dropped) when the client's connection is gone.
    pub gone: oneshot::Receiver<()>,
}

/// How an exec or attach session ended, for the client's error stream.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEnd {
    /// The exec process exited with this code.
    Exited { exit_code: i32 },
    /// The attach ended: the client's stdin closed, or the container's output did.
    Detached,
}

/// The core's side of the stream server: the protocol layer calls it once it has negotiated a
/// connection's streams, and reports the result on the client's error stream.
#[async_trait]
pub trait StreamHandler: Send + Sync + 'static {
    /// Runs an exec (`request` is a [`StreamRequest::Exec`]) or an attach to its end.
    async fn serve_session(&self, request: StreamRequest, client: ClientStreams) -> Result<SessionEnd>;
    /// Connects one forwarded connection to `port` inside the pod `sandbox_id` and copies bytes
    /// both ways until both directions ended (or the client is gone).
    async fn forward_port(
        &self,
        sandbox_id: &str,
        port: u16,
        from_client: ByteReader,
        to_client: ByteWriter,
        gone: oneshot::Receiver<()>,
    ) -> Result<()>;
}
