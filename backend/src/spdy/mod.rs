//! SPDY/3.1 sessions, as Kubernetes' streaming protocols use them (remotecommand for exec and
//! attach, portforward) after an HTTP/1.1 upgrade: the client (kubelet, crictl, kubectl through
//! the API server) opens one stream per channel, each with headers that name it, and both
//! sides exchange DATA until FIN.
//!
//! No maintained Rust crate serves this (see the commit that added this module), so the
//! framing is ours: [`frame`] encodes and decodes the frames, [`headers`] the zlib-compressed
//! header blocks, and [`session`] multiplexes streams over one connection with a reader task
//! and a writer task.
//!
//! Flow control follows what the Go client (moby/spdystream) does, which is nothing: it neither
//! sends WINDOW_UPDATE nor honours ours. So we send WINDOW_UPDATEs for what the application
//! consumed (harmless to a peer that ignores them) and honour the peer's windows only once the
//! peer has shown that it keeps them, by sending a WINDOW_UPDATE or an initial-window SETTINGS.
//! Without that, a Go client would stall after the first 64 KiB of a stream.

mod dictionary;
pub mod frame;
pub mod headers;
pub mod session;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use frame::{GoAwayStatus, RstStatus};
pub use headers::Headers;
pub use session::{Incoming, RecvHalf, SendHalf, Session, Stream};

/// Limits and windows of one session.
#[derive(Clone, Debug)]
pub struct Config {
    /// Streams open at once, both directions together; a peer's SYN_STREAM beyond it is
    /// refused with RST_STREAM(REFUSED_STREAM), our `open` beyond it fails.
    pub max_streams: usize,
    /// Our receive window per stream, announced in a SETTINGS frame at the start and
    /// replenished with WINDOW_UPDATEs as the application reads. It also bounds what we buffer
    /// for one stream: past it the reader stops reading the connection until the application
    /// catches up (a peer that ignores windows gets TCP back-pressure instead).
    pub initial_window_bytes: u32,
    /// Closes the session after this long without a frame in either direction.
    pub idle_timeout: Option<Duration>,
    /// Largest frame accepted (length field; the protocol's own limit is 16 MiB - 1). Go
    /// clients write a DATA frame per `Write`, usually 32 KiB from `io.Copy`.
    pub max_frame_bytes: usize,
    /// Largest DATA payload we send in one frame.
    pub max_send_frame_bytes: usize,
    /// Largest decompressed header block accepted.
    pub max_header_block_bytes: usize,
    /// DATA bytes queued for the writer task, all streams together; writers wait beyond it.
    pub max_write_queue_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_streams: 64,
            initial_window_bytes: 64 * 1024,
            idle_timeout: None,
            max_frame_bytes: 1024 * 1024,
            max_send_frame_bytes: 32 * 1024,
            max_header_block_bytes: 64 * 1024,
            max_write_queue_bytes: 1024 * 1024,
        }
    }
}
