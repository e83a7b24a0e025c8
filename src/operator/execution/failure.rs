//! Pure: why an Execution fails without a result. Both the planner ([`super::decide`]) and
//! the run task ([`super::run`]) reach these verdicts, so they live apart from either.

use k8s_openapi::api::core::v1::Pod;
use kubexec_runner::protocol::ErrorCode;

use crate::shared::deadlines::RESULT_GRACE;

use super::build::reasons;

/// Why an Execution fails without a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// One of [`reasons`].
    pub reason: &'static str,
    /// What happened, for people.
    pub message: String,
}

impl Failure {
    /// A failure for `reason`.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// The runner has no record of the run in `pod_name` (it reported the run `Lost`).
    pub fn run_lost(pod_name: &str) -> Self {
        Self::new(
            reasons::POD_LOST,
            format!(
                "the run left no result in {pod_name}: the sandbox container restarted or the runner was killed"
            ),
        )
    }

    /// The run never started in `pod_name`, and an attach-only recovery refused to start it.
    pub fn not_started(pod_name: &str) -> Self {
        Self::new(
            reasons::NOT_STARTED,
            format!(
                "the run never started in {pod_name}: the operator stopped before it, and its env or timeout could no longer be rebuilt (the Session or a Secret is gone)"
            ),
        )
    }

    /// The runner refused or failed the run. Refusals that the spec caused get their own
    /// reason, so that the api can answer them as the caller's mistake (a 4xx).
    pub fn runner_error(code: ErrorCode, message: &str) -> Self {
        let reason = match code {
            ErrorCode::WorkingDirMissing => reasons::WORKING_DIR_NOT_FOUND,
            ErrorCode::PathEscapesWorkspace => reasons::INVALID_PATH,
            _ => reasons::RUNNER_ERROR,
        };
        Self::new(reason, format!("{code:?}: {message}"))
    }

    /// The sandbox answered with a result that is not the runner's for this run (`why`).
    pub fn result_rejected(pod_name: &str, why: &str) -> Self {
        Self::new(
            reasons::RESULT_REJECTED,
            format!("the result from {pod_name} was rejected: {why}"),
        )
    }

    /// No result key is recorded for a recovered run (a Running status written before result
    /// keys existed), so no result of it can be trusted.
    pub fn no_result_key() -> Self {
        Self::new(
            reasons::RESULT_REJECTED,
            "no result key is recorded for this run, so its result cannot be verified",
        )
    }

    /// The spec is larger than the runner reads (inline code, files and env together).
    pub fn spec_too_large(size: usize, limit: usize) -> Self {
        Self::new(
            reasons::RUNNER_ERROR,
            format!(
                "the run's code, files and env take {size} bytes; the runner reads at most {limit}"
            ),
        )
    }

    /// No result from the runner in `pod_name` before the run's deadline. `timeout_seconds` is
    /// the effective timeout, when known.
    pub fn deadline_exceeded(pod_name: &str, timeout_seconds: Option<i32>) -> Self {
        let within = match timeout_seconds {
            Some(t) => format!(
                "within timeoutSeconds ({t}s) plus {}s",
                RESULT_GRACE.as_secs()
            ),
            None => "in time".into(),
        };
        Self::new(
            reasons::DEADLINE_EXCEEDED,
            format!("no result from the runner in {pod_name} {within}"),
        )
    }
}

/// Why the recorded Pod no longer holds the run, if it does not.
pub fn pod_lost(
    pod: Option<&Pod>,
    pod_name: Option<&str>,
    pod_uid: Option<&str>,
) -> Option<Failure> {
    let name = pod_name.unwrap_or("the sandbox Pod");
    let Some(pod) = pod else {
        return Some(Failure::new(
            reasons::POD_LOST,
            format!("sandbox Pod {name} is gone; the run's result was lost with it"),
        ));
    };
    if let (Some(recorded), Some(current)) = (pod_uid, pod.metadata.uid.as_deref()) {
        if recorded != current {
            return Some(Failure::new(
                reasons::POD_LOST,
                format!(
                    "sandbox Pod {name} was replaced while the execution ran; the run was lost"
                ),
            ));
        }
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Some(Failure::new(
            reasons::POD_LOST,
            format!("sandbox Pod {name} is being deleted; the run was lost"),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(uid: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("demo-sandbox".into());
        p.metadata.uid = Some(uid.into());
        p
    }

    #[test]
    fn the_recorded_pod_holds_the_run_until_it_goes() {
        let name = Some("demo-sandbox");
        assert_eq!(pod_lost(Some(&pod("pod-1")), name, Some("pod-1")), None);
        assert_eq!(pod_lost(Some(&pod("pod-1")), name, None), None);
        assert_eq!(
            pod_lost(None, name, Some("pod-1")),
            Some(Failure::new(
                "PodLost",
                "sandbox Pod demo-sandbox is gone; the run's result was lost with it"
            ))
        );
        assert_eq!(
            pod_lost(Some(&pod("pod-2")), name, Some("pod-1")),
            Some(Failure::new(
                "PodLost",
                "sandbox Pod demo-sandbox was replaced while the execution ran; the run was lost"
            ))
        );
        let mut deleting = pod("pod-1");
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(
            pod_lost(Some(&deleting), name, Some("pod-1")),
            Some(Failure::new(
                "PodLost",
                "sandbox Pod demo-sandbox is being deleted; the run was lost"
            ))
        );
    }

    #[test]
    fn failures_of_the_run_task_say_what_happened() {
        assert_eq!(
            Failure::run_lost("demo-sandbox"),
            Failure::new(
                "PodLost",
                "the run left no result in demo-sandbox: the sandbox container restarted or the runner was killed"
            )
        );
        assert_eq!(
            Failure::runner_error(ErrorCode::WorkingDirMissing, "no such directory"),
            Failure::new("WorkingDirNotFound", "WorkingDirMissing: no such directory")
        );
        assert_eq!(
            Failure::runner_error(ErrorCode::Io, "disk full"),
            Failure::new("RunnerError", "Io: disk full")
        );
        assert_eq!(
            Failure::deadline_exceeded("demo-sandbox", Some(30)),
            Failure::new(
                "DeadlineExceeded",
                "no result from the runner in demo-sandbox within timeoutSeconds (30s) plus 30s"
            )
        );
        assert_eq!(
            Failure::deadline_exceeded("demo-sandbox", None),
            Failure::new(
                "DeadlineExceeded",
                "no result from the runner in demo-sandbox in time"
            )
        );
    }
}
