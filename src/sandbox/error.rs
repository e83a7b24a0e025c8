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

    /// A helper exited 0 but its answer never arrived: the stream lost its output (the node
    /// restarted mid-exec). Nothing in the sandbox is wrong; asking again answers.
    #[error("the helper's answer was lost on the way (empty output)")]
    EmptyResponse,

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

/// What the apiserver says in an exec's failure `Status` when it could not reach the kubelet,
/// or the kubelet the container: the node restarting, not anything in the sandbox.
/// The same for a container that is restarting (its PID 1 died): the runtime has no running
/// task to exec into until the kubelet starts it again.
const UNREACHABLE_EXEC: [&str; 10] = [
    "error sending request",
    "unable to upgrade connection",
    "error dialing backend",
    "connection refused",
    "connection reset",
    "i/o timeout",
    "cannot exec in a stopped state",
    "container not created",
    "container not found",
    "no running task",
];

impl SandboxError {
    /// True when the sandbox could not be reached now, not that anything in it failed: the
    /// connection to the apiserver or from it to the kubelet was refused or broke, or the
    /// kubelet did not know the Pod or its container (just restarted). A retry later may pass.
    pub fn is_transient(&self) -> bool {
        match self {
            SandboxError::Connect { source, .. } => {
                crate::shared::kube_status::is_unavailable(source)
            }
            SandboxError::StreamClosed | SandboxError::Stream(_) | SandboxError::EmptyResponse => {
                true
            }
            SandboxError::ExecFailed(message) => {
                UNREACHABLE_EXEC.iter().any(|m| message.contains(m))
            }
            // Killed with its container (SIGKILL, SIGTERM), having said nothing: the sandbox
            // restarted under it.
            SandboxError::HelperFailed { exit_code, stderr } => {
                matches!(exit_code, 137 | 143) && stderr.trim().is_empty()
            }
            _ => false,
        }
    }

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
            SandboxError::EmptyResponse => "empty_response",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A node restarting is retryable; a command the runtime cannot run, or a runner's answer,
    /// is not.
    #[test]
    fn an_unreachable_node_is_transient_and_a_failure_in_the_sandbox_is_not() {
        let transient = [
            "Internal error occurred: error sending request: Post \"https://10.244.0.1:10250/exec/ns/p/sandbox\": dial tcp 10.244.0.1:10250: connect: connection refused",
            "Internal error occurred: unable to upgrade connection: pod does not exist",
            "Internal error occurred: unable to upgrade connection: container not found (\"sandbox\")",
            "failed to create exec \"e4fe\": cannot exec in a stopped state",
            "failed to create exec \"de52\": container not created: not found",
            "failed to exec in container: failed to load task: no running task found: not found",
        ];
        for message in transient {
            assert!(
                SandboxError::ExecFailed(message.into()).is_transient(),
                "{message}"
            );
        }
        assert!(SandboxError::StreamClosed.is_transient());
        let killed = |exit_code, stderr: &str| SandboxError::HelperFailed {
            exit_code,
            stderr: stderr.into(),
        };
        assert!(killed(137, "").is_transient());
        assert!(!killed(137, "{\"code\":\"Internal\"}").is_transient());
        assert!(!killed(1, "").is_transient());
        let lasting = SandboxError::ExecFailed(
            "OCI runtime exec failed: exec: \"/kubexec/bin/kubexec-runner\": no such file or directory".into(),
        );
        assert!(!lasting.is_transient());
        assert!(!SandboxError::Protocol("garbage".into()).is_transient());
        assert!(!SandboxError::PodNotFound { pod: "p".into() }.is_transient());
    }
}
