//! Conversions of foreign errors into crid's one error type, in one place.

use crid::error::{Error, ErrorKind};

/// Maps a gRPC status from containerd to crid's error kinds. containerd's errdefs travel as gRPC
/// codes, so the code alone carries NotFound, AlreadyExists, FailedPrecondition, Unavailable.
pub fn from_status(status: tonic::Status) -> Error {
    use tonic::Code;
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

/// Maps an I/O error; NotFound and AlreadyExists keep their meaning for the core.
pub fn from_io(err: std::io::Error, what: impl std::fmt::Display) -> Error {
    use std::io::ErrorKind as Io;
    let kind = match err.kind() {
        Io::NotFound => ErrorKind::NotFound,
        Io::AlreadyExists => ErrorKind::AlreadyExists,
        Io::InvalidInput | Io::InvalidData => ErrorKind::InvalidArgument,
        Io::TimedOut => ErrorKind::DeadlineExceeded,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, format!("{what}: {err}"))
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
