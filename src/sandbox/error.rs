//! The exec client's error type.

use kubexec_runner::protocol::{ErrorCode, RunnerError};
use thiserror::Error;

/// What can go wrong while running `kubexec-runner` in a sandbox Pod.
#[derive(Debug, Error)]
pub enum SandboxError {
    /// The Pod does not exist (404 on the exec request).
    #[error("sandbox Pod {pod} not found")]
    PodNotFound {
        /// Name of the Pod.
        pod: String,
    },

    /// The apiserver refused or failed the exec request (Pod not running yet, container not
    /// ready, no permission, network failure, ...).
    #[error("exec into {pod} failed: {source}")]
    Connect {
        /// Name of the Pod.
        pod: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },

    /// The exec started, but the container runtime could not run the command (missing binary,
    /// container gone mid-run), or reported a failure that is not an exit code.
    #[error("exec failed: {0}")]
    ExecFailed(String),

    /// The exec stream ended without an exit status: the connection broke, or the Pod or the
    /// container went away.
    #[error("the exec stream ended without an exit status")]
    StreamClosed,

    /// Reading from or writing to the exec stream failed.
    #[error("exec stream: {0}")]
    Stream(#[source] std::io::Error),

    /// The runner's output did not follow the protocol.
    #[error("runner protocol: {0}")]
    Protocol(String),

    /// A helper printed more than the caller accepts.
    #[error("helper output exceeds {limit} bytes")]
    TooLarge {
        /// The caller's limit.
        limit: usize,
    },

    /// The spec frame is larger than the runner reads ([`MAX_SPEC_FRAME_BYTES`]); it was not
    /// sent.
    ///
    /// [`MAX_SPEC_FRAME_BYTES`]: kubexec_runner::protocol::MAX_SPEC_FRAME_BYTES
    #[error("the spec is {size} bytes; the runner reads at most {limit}")]
    SpecTooLarge {
        /// The frame's size.
        size: usize,
        /// The runner's limit.
        limit: usize,
    },

    /// The stream carried a result, but not one the runner sealed for the run that was asked
    /// for (wrong run ID, missing or wrong MAC), and no genuine one followed.
    #[error("result rejected: {0}")]
    ResultRejected(String),

    /// The runner reported an error (a helper's stderr, or an `exec` error event).
    #[error("runner error {code:?}: {message}")]
    Runner {
        /// Machine-readable code.
        code: ErrorCode,
        /// What happened.
        message: String,
    },

    /// A helper did not finish within its deadline (it read a FIFO or a device, or walked a
    /// huge directory); its exec stream was abandoned.
    #[error("the helper did not finish within {after_secs} s")]
    DeadlineExceeded {
        /// The deadline, in seconds.
        after_secs: u64,
    },

    /// A helper exited non-zero without a runner error document.
    #[error("helper exited with {exit_code}: {stderr}")]
    HelperFailed {
        /// Its exit code.
        exit_code: i32,
        /// Its standard error (lossy UTF-8, capped).
        stderr: String,
    },
}

impl SandboxError {
    /// True when the Pod is not there (any more).
    pub fn is_pod_not_found(&self) -> bool {
        matches!(self, SandboxError::PodNotFound { .. })
    }

    /// A short, bounded label for metrics and status reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            SandboxError::PodNotFound { .. } => "pod_not_found",
            SandboxError::Connect { .. } => "connect",
            SandboxError::ExecFailed(_) => "exec_failed",
            SandboxError::StreamClosed => "stream_closed",
            SandboxError::Stream(_) => "stream",
            SandboxError::Protocol(_) => "protocol",
            SandboxError::TooLarge { .. } => "too_large",
            SandboxError::SpecTooLarge { .. } => "spec_too_large",
            SandboxError::ResultRejected(_) => "result_rejected",
            SandboxError::Runner { .. } => "runner",
            SandboxError::DeadlineExceeded { .. } => "deadline_exceeded",
            SandboxError::HelperFailed { .. } => "helper_failed",
        }
    }
}

impl From<RunnerError> for SandboxError {
    fn from(error: RunnerError) -> Self {
        SandboxError::Runner {
            code: error.code,
            message: error.message,
        }
    }
}
