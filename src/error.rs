//! One error type for the core and the backends. Its kind maps to a gRPC code in one place
//! (`grpc::status_from`); the message is what the caller reads.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    Unavailable,
    DeadlineExceeded,
    Cancelled,
    ResourceExhausted,
    Unimplemented,
    Internal,
    /// Stored data is unreadable (a corrupt or torn file).
    DataLoss,
    Unknown,
}

/// What went wrong (`kind`, which callers branch on), what the caller reads (`message`), and
/// the error it came from, when there was one (`source`): a backend keeps the transport's or
/// the OS's error there, and typed causes of its own, so that nothing needs to match message
/// text. Equality and serialisation look at kind and message only.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    #[serde(skip)]
    pub source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), source: None }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    pub fn deadline(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::DeadlineExceeded, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unimplemented, message)
    }
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
    pub fn is_already_exists(&self) -> bool {
        self.kind == ErrorKind::AlreadyExists
    }
    /// Prefixes the message with what was being done, keeping the kind.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error { kind: self.kind, message: format!("{what}: {}", self.message), source: self.source }
    }
    /// Keeps `source` as the cause of this error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(std::sync::Arc::new(source));
        self
    }
    /// The first error of type `E` in the chain of causes, if any.
    pub fn find_cause<E: std::error::Error + 'static>(&self) -> Option<&E> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(error) = cause {
            if let Some(found) = error.downcast_ref::<E>() {
                return Some(found);
            }
            cause = error.source();
        }
        None
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The most characters of a request's text that an error message quotes: a request may carry
/// megabytes, an error (and the log line it becomes) should not.
pub const QUOTED_INPUT_MAX_CHARS: usize = 256;

/// `text` as an error message quotes it: Debug-quoted (control characters and NULs escaped),
/// and, past [`QUOTED_INPUT_MAX_CHARS`] characters, cut with `…` and the full length in bytes.
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_INPUT_MAX_CHARS) {
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
        None => format!("{text:?}"),
    }
}

/// Adds context to a `Result`'s error.
pub trait ResultExt<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the disk said no")]
    struct DiskRefused;

    #[test]
    fn quoted_input_is_bounded() {
        assert_eq!(quoted("a/b"), "\"a/b\"");
        assert_eq!(quoted("nul\0"), "\"nul\\0\"");
        let huge = "é".repeat(5000);
        let message = quoted(&huge);
        assert!(message.ends_with("… (10000 bytes)"), "{message}");
        assert_eq!(message.chars().filter(|&c| c == 'é').count(), QUOTED_INPUT_MAX_CHARS);
        let exact = "x".repeat(QUOTED_INPUT_MAX_CHARS);
        assert_eq!(quoted(&exact), format!("{exact:?}"), "nothing is cut at the limit");
    }

    #[test]
    fn the_source_survives_context_and_is_found_by_type() {
        let error = Error::internal("write failed").with_source(DiskRefused).context("checkpoint c1");
        assert_eq!(error.message, "checkpoint c1: write failed");
        assert!(error.find_cause::<DiskRefused>().is_some());
        assert!(Error::internal("plain").find_cause::<DiskRefused>().is_none());
        assert_eq!(error, Error::internal("checkpoint c1: write failed"), "equality ignores the source");
    }
}
