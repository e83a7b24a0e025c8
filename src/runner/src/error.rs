//! The crate's one error type, and its mapping onto the wire error codes.

use std::io;

use crate::protocol::{ErrorCode, RunnerError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    #[error("path {0:?} escapes the workspace")]
    PathEscapesWorkspace(String),

    #[error("working directory {0:?} does not exist or is not a directory")]
    WorkingDirMissing(String),

    #[error("could not start {program}: {source}")]
    SpawnFailed { program: String, source: io::Error },

    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },

    #[error("not found: {0}")]
    NotFound(String),

    #[error("{0} is not a regular file")]
    NotAFile(String),

    #[error("limit exceeded: {0}")]
    LimitExceeded(String),

    #[error("{0}")]
    Usage(String),

    #[error("run {0} was started by a runner that is gone and left no result")]
    Lost(String),

    #[error("run {0} was never started, and this exec only attaches to a started run")]
    NotStarted(String),

    /// An error another runner process stored for the same run; replayed as is.
    #[error("{}", .0.message)]
    Recorded(RunnerError),
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidSpec(_) => ErrorCode::InvalidSpec,
            Error::PathEscapesWorkspace(_) => ErrorCode::PathEscapesWorkspace,
            Error::WorkingDirMissing(_) => ErrorCode::WorkingDirMissing,
            Error::SpawnFailed { .. } => ErrorCode::SpawnFailed,
            Error::Io { .. } => ErrorCode::Io,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::NotAFile(_) => ErrorCode::NotAFile,
            Error::LimitExceeded(_) => ErrorCode::LimitExceeded,
            Error::Usage(_) => ErrorCode::Usage,
            Error::Lost(_) => ErrorCode::Lost,
            Error::NotStarted(_) => ErrorCode::NotStarted,
            Error::Recorded(recorded) => recorded.code,
        }
    }

    pub fn to_wire(&self) -> RunnerError {
        RunnerError {
            code: self.code(),
            message: self.to_string(),
        }
    }

    /// Exit status of the CLI: 2 for a wrong invocation, 1 for everything else.
    pub fn exit_status(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Attaches what the runner was doing to an `io::Error`, so messages name the file involved.
pub trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
