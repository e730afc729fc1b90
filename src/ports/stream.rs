//! The streaming server (exec, attach, port-forward URLs).

use async_trait::async_trait;

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
