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
            ErrorCode::Usage | ErrorCode::InvalidSpec => ApiError::invalid("request", message),
            _ => ApiError::internal("runner helper", message),
        },
        SandboxError::PodNotFound { .. } => ApiError::SessionNotReady {
            session: String::new(),
            phase: "PodMissing".into(),
        },
        other => ApiError::internal("sandbox exec", other),
    }
}
