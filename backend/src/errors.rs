//! Conversions of foreign errors into crid's one error type, in one place.

use crid::error::{Error, ErrorKind};

/// The runtime shim's connection to containerd closed while containerd was talking to it (its
/// last task went, or it was killed). containerd says so only in its message text; this is the
/// one place that reads it, and callers ask for the type (`Error::find_cause`).
#[derive(Debug, thiserror::Error)]
#[error("the shim's connection closed")]
pub struct ShimConnectionClosed(#[source] pub tonic::Status);

/// The text containerd passes on from a shim whose ttrpc connection closed.
const SHIM_CLOSED_TEXT: &str = "ttrpc: closed";

/// What containerd 1.6 answers to a delete of a task that still runs or is frozen: the shim's
/// FailedPrecondition arrives as Unknown (the code is lost between shim and containerd), so
/// only the text tells it from other failures.
/// - The shim's own refusals, of a running and of a paused process.
/// - runc's refusals, passed on when the shim thought the task stopped: a start that
///   containerd's restart interrupted leaves it running; a kill of every process cut off
///   between runc's freeze and thaw leaves the cgroup frozen, and runc then calls the
///   container paused, even when no process is left in it.
///
/// A kill of every process is the answer to each (runc thaws the cgroup after signalling), and
/// the delete that follows succeeds, as containerd's CRI kills before every delete.
const NOT_STOPPED_TEXTS: [&str; 4] = [
    "cannot delete a running process",
    "cannot delete a paused process",
    "that is not stopped: running",
    "that is not stopped: paused",
];

/// Maps a gRPC status from containerd to crid's error kinds, keeping the status as the source.
/// containerd's errdefs travel as gRPC codes, so the code alone carries NotFound, AlreadyExists,
/// FailedPrecondition, Unavailable.
pub fn from_status(status: tonic::Status) -> Error {
    let error = kind_of_status(&status);
    if status.message().contains(SHIM_CLOSED_TEXT) {
        return error.with_source(ShimConnectionClosed(status));
    }
    error.with_source(status)
}

fn kind_of_status(status: &tonic::Status) -> Error {
    use tonic::Code;
    // A status made on this side of the connection (the stream broke: containerd restarted or
    // died mid-call) carries its transport error as source and code Unknown. It says nothing
    // about the object, only that containerd was not there: Unavailable, which the core retries
    // (an exit monitor must not read a broken Wait as the task's exit).
    if status.code() == Code::Unknown && std::error::Error::source(status).is_some() {
        return Error::new(ErrorKind::Unavailable, format!("containerd connection lost: {}", status.message()));
    }
    if status.code() == Code::Unknown && NOT_STOPPED_TEXTS.iter().any(|text| status.message().contains(text)) {
        return Error::new(ErrorKind::FailedPrecondition, format!("containerd: {}", status.message()));
    }
    let kind = match status.code() {
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        Code::Cancelled => ErrorKind::Cancelled,
        Code::InvalidArgument => ErrorKind::InvalidArgument,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        Code::Unimplemented => ErrorKind::Unimplemented,
        Code::Internal | Code::DataLoss => ErrorKind::Internal,
        _ => ErrorKind::Unknown,
    };
    Error::new(kind, format!("containerd: {}", status.message()))
}

/// Maps an I/O error; NotFound and AlreadyExists keep their meaning for the core. A full disk
/// (ENOSPC, EDQUOT) or exhausted memory is ResourceExhausted: the caller's request was fine and
/// may succeed once space returns, which Internal would not tell kubelet.
pub fn from_io(err: std::io::Error, what: impl std::fmt::Display) -> Error {
    use std::io::ErrorKind as Io;
    let kind = match err.kind() {
        Io::NotFound => ErrorKind::NotFound,
        Io::AlreadyExists => ErrorKind::AlreadyExists,
        Io::InvalidInput | Io::InvalidData => ErrorKind::InvalidArgument,
        Io::TimedOut => ErrorKind::DeadlineExceeded,
        Io::StorageFull | Io::QuotaExceeded | Io::OutOfMemory => ErrorKind::ResourceExhausted,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, format!("{what}: {err}")).with_source(err)
}

pub fn from_errno(err: nix::errno::Errno, what: impl std::fmt::Display) -> Error {
    from_io(std::io::Error::from(err), what)
}

/// Extension to turn `std::io::Result` into crid's `Result` with a note of what was done.
pub trait IoContext<T> {
    fn io_context(self, what: impl std::fmt::Display) -> crid::error::Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context(self, what: impl std::fmt::Display) -> crid::error::Result<T> {
        self.map_err(|e| from_io(e, what))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn io_context(self, what: impl std::fmt::Display) -> crid::error::Result<T> {
        self.map_err(|e| from_errno(e, what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_unavailable_but_a_server_error_is_not() {
        let broken =
            tonic::Status::from_error(Box::new(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stream closed")));
        assert_eq!(broken.code(), tonic::Code::Unknown);
        assert_eq!(from_status(broken).kind, ErrorKind::Unavailable);
        let server = tonic::Status::unknown("failed to delete task: ttrpc: closed");
        assert_eq!(from_status(server).kind, ErrorKind::Unknown);
        assert_eq!(from_status(tonic::Status::not_found("task x")).kind, ErrorKind::NotFound);
    }

    #[test]
    fn a_delete_refused_as_not_stopped_is_a_failed_precondition() {
        let status = tonic::Status::unknown("failed to delete task: cannot delete a running process: unknown");
        assert_eq!(from_status(status).kind, ErrorKind::FailedPrecondition);
        let runc = tonic::Status::unknown(
            "failed to delete task: cannot delete container 1790f722 that is not stopped: running: unknown",
        );
        assert_eq!(from_status(runc).kind, ErrorKind::FailedPrecondition);
        // Seen in the soak: a kill of every process cut off by containerd's restart.
        let frozen = tonic::Status::unknown(
            "failed to delete task: cannot delete container 33e98087 that is not stopped: paused: unknown",
        );
        assert_eq!(from_status(frozen).kind, ErrorKind::FailedPrecondition);
        let paused = tonic::Status::unknown("failed to delete task: cannot delete a paused process: unknown");
        assert_eq!(from_status(paused).kind, ErrorKind::FailedPrecondition);
        assert_eq!(from_status(tonic::Status::unknown("something else")).kind, ErrorKind::Unknown);
    }

    #[test]
    fn a_closed_shim_is_a_type_not_a_text_to_match() {
        let closed = from_status(tonic::Status::unknown("ttrpc: closed: unknown"));
        assert!(closed.find_cause::<ShimConnectionClosed>().is_some());
        assert!(closed.find_cause::<tonic::Status>().is_some(), "the status stays reachable");
        let other = from_status(tonic::Status::not_found("task t1 not found"));
        assert!(other.is_not_found() && other.find_cause::<ShimConnectionClosed>().is_none());
        let io = from_io(std::io::Error::from(std::io::ErrorKind::NotFound), "open x");
        assert!(io.is_not_found() && io.find_cause::<std::io::Error>().is_some());
    }

    #[test]
    fn a_full_disk_is_resource_exhausted() {
        for errno in [nix::errno::Errno::ENOSPC, nix::errno::Errno::EDQUOT, nix::errno::Errno::ENOMEM] {
            let error = from_errno(errno, "write /var/lib/crid/containers/c1/status");
            assert_eq!(error.kind, ErrorKind::ResourceExhausted, "{errno}");
            assert!(error.message.starts_with("write /var/lib/crid/containers/c1/status: "), "{}", error.message);
        }
        assert_eq!(from_errno(nix::errno::Errno::EIO, "write x").kind, ErrorKind::Internal);
    }
}
