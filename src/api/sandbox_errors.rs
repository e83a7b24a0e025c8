//! Turning exec and runner failures into API errors.

use kubexec_runner::protocol::ErrorCode;

use super::errors::{codes, ApiError};
use crate::sandbox::SandboxError;

/// Maps a failure of a runner helper. `not_found_code` names what a runner `NotFound` means in
/// the caller's context (a file or a process).
pub fn from_sandbox(error: SandboxError, not_found_code: &'static str) -> ApiError {
    match error {
        SandboxError::Runner { code, message } => match code {
            ErrorCode::NotFound => ApiError::NotFound {
                code: not_found_code,
                message,
            },
            ErrorCode::PathEscapesWorkspace => {
                ApiError::invalid_with(codes::INVALID_PATH, "path", message)
            }
            ErrorCode::LimitExceeded => ApiError::TooLarge {
                code: codes::FILE_TOO_LARGE,
                field: None,
                message,
                limit: 0,
            },
            ErrorCode::NotAFile => ApiError::invalid_with(codes::NOT_A_FILE, "path", message),
            ErrorCode::WorkingDirMissing => {
                ApiError::invalid_with(codes::WORKING_DIR_NOT_FOUND, "workingDir", message)
            }
            ErrorCode::Usage | ErrorCode::InvalidSpec => ApiError::invalid("request", message),
            _ => ApiError::internal("runner helper", message),
        },
        SandboxError::DeadlineExceeded { after_secs } => ApiError::Unprocessable {
            code: codes::OPERATION_TIMED_OUT,
            message: format!(
                "the sandbox did not finish this within {after_secs} s; is the path a FIFO, a \
                 device or a very large directory?"
            ),
        },
        SandboxError::TooLarge { limit } => ApiError::TooLarge {
            code: codes::RESPONSE_TOO_LARGE,
            field: None,
            message: format!(
                "the answer is larger than {limit} bytes; ask for less (a smaller directory, \
                 not recursive)"
            ),
            limit: limit as u64,
        },
        SandboxError::PodNotFound { .. } => ApiError::SessionNotReady {
            session: String::new(),
            phase: "PodMissing".into(),
        },
        other if other.is_transient() => ApiError::cluster_unavailable("sandbox exec", &other),
        other => ApiError::internal("sandbox exec", other),
    }
}
