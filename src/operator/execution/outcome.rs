//! Pure: how a run ended, and what follows from it: the final status, the result label of
//! `kubexec_executions_total`, the reason, and the Event.

use jiff::Timestamp;
use kubexec_runner::protocol::ExecResult;

use crate::crd::{Execution, ExecutionStatus};

use super::{
    apply::ExecutionEvent,
    build::{failed_status, reasons, result_status},
    failure::Failure,
};

/// How a run ended. The first four carry the runner's result (the code ran: `exitCode` and the
/// output go into the status); `Failed` means it did not run to an exit.
#[derive(Clone, Debug, PartialEq)]
pub enum RunOutcome {
    /// Exited 0.
    Succeeded(ExecResult),
    /// Exited non-zero.
    NonZeroExit(ExecResult),
    /// Killed at `timeoutSeconds`.
    TimedOut(ExecResult),
    /// Killed for exceeding the memory limit.
    OomKilled(ExecResult),
    /// No result: it could not run, or its run was lost.
    Failed(Failure),
}

impl From<ExecResult> for RunOutcome {
    /// Judges the runner's result. A run killed at its timeout counts as timed out whatever
    /// else happened to it, then one killed for memory.
    fn from(result: ExecResult) -> Self {
        if result.timed_out {
            Self::TimedOut(result)
        } else if result.oom_killed {
            Self::OomKilled(result)
        } else if result.exit_code != 0 {
            Self::NonZeroExit(result)
        } else {
            Self::Succeeded(result)
        }
    }
}

impl RunOutcome {
    /// The runner's result, when the code ran.
    pub fn result(&self) -> Option<&ExecResult> {
        match self {
            Self::Succeeded(result)
            | Self::NonZeroExit(result)
            | Self::TimedOut(result)
            | Self::OomKilled(result) => Some(result),
            Self::Failed(_) => None,
        }
    }

    /// The `result` label of `kubexec_executions_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Succeeded(_) => "succeeded",
            Self::NonZeroExit(_) => "failed",
            Self::TimedOut(_) => "timed_out",
            Self::OomKilled(_) => "oom_killed",
            Self::Failed(_) => "error",
        }
    }

    /// `status.reason`: one of [`reasons`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Succeeded(_) => reasons::COMPLETED,
            Self::NonZeroExit(_) => reasons::NON_ZERO_EXIT,
            Self::TimedOut(_) => reasons::TIMED_OUT,
            Self::OomKilled(_) => reasons::OOM_KILLED,
            Self::Failed(failure) => failure.reason,
        }
    }

    /// Run time in seconds as the runner measured it, when the code ran.
    pub fn run_seconds(&self) -> Option<f64> {
        self.result()
            .map(|result| result.execution_time_ms as f64 / 1000.0)
    }

    /// `status.message`. `timeout_seconds` is the effective timeout, when known.
    fn message(&self, timeout_seconds: Option<i32>) -> String {
        match self {
            Self::Succeeded(_) => "exited with code 0".to_string(),
            Self::NonZeroExit(result) => format!("exited with code {}", result.exit_code),
            Self::TimedOut(result) => match timeout_seconds {
                Some(t) => format!(
                    "timed out after {t}s and was killed (exit code {})",
                    result.exit_code
                ),
                None => format!("timed out and was killed (exit code {})", result.exit_code),
            },
            Self::OomKilled(_) => "killed for exceeding the Session's memory limit".to_string(),
            Self::Failed(failure) => failure.message.clone(),
        }
    }

    /// The final status: `Succeeded` or `Failed` with the reason and message, the result when
    /// there is one, and what the Running status recorded.
    pub fn status(
        &self,
        execution: &Execution,
        timeout_seconds: Option<i32>,
        now: Timestamp,
    ) -> ExecutionStatus {
        let message = self.message(timeout_seconds);
        match self.result() {
            Some(result) => result_status(
                execution,
                result,
                matches!(self, Self::Succeeded(_)),
                self.reason(),
                &message,
                now,
            ),
            None => failed_status(execution, self.reason(), &message, now),
        }
    }

    /// The Event: `Completed`, or a Warning named after the reason.
    pub fn event(&self) -> ExecutionEvent {
        let Some(result) = self.result() else {
            return ExecutionEvent::Failed {
                reason: self.reason().into(),
                message: self.message(None),
            };
        };
        let message = format!(
            "exit code {} after {} ms",
            result.exit_code, result.execution_time_ms
        );
        match self {
            Self::Succeeded(_) => ExecutionEvent::Completed { message },
            _ => ExecutionEvent::Failed {
                reason: self.reason().into(),
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ExecutionPhase, ExecutionSpec, SessionReference};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::super::build::running_status;

    fn execution() -> Execution {
        let mut e = Execution::new(
            "run",
            ExecutionSpec {
                session_ref: SessionReference {
                    name: "demo".into(),
                },
                command: Some("echo hi".into()),
                ..ExecutionSpec::default()
            },
        );
        e.metadata.uid = Some("0b5e-uid".into());
        e.metadata.generation = Some(1);
        e
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    fn time(secs: i64) -> Time {
        Time(at(secs))
    }

    fn result(exit_code: i32) -> ExecResult {
        ExecResult {
            version: 1,
            run_id: "0b5e-uid".into(),
            exit_code,
            stdout: "out\n".into(),
            stdout_bytes: 4,
            execution_time_ms: 12,
            memory_used_bytes: 1 << 20,
            cpu_time_ms: 3,
            files_written: vec!["bin/x".into()],
            started_at: 1_700_000_000_000,
            finished_at: 1_700_000_001_500,
            ..ExecResult::default()
        }
    }

    fn running(e: &Execution) -> Execution {
        let mut e = e.clone();
        e.status = Some(running_status(
            &e,
            "demo-sandbox",
            Some("pod-uid".into()),
            &kubexec_runner::protocol::ResultKey::from_bytes([1; 32]),
            at(1_700_000_000),
        ));
        e
    }

    fn timed_out(exit_code: i32) -> ExecResult {
        ExecResult {
            timed_out: true,
            ..result(exit_code)
        }
    }

    fn oom_killed(exit_code: i32) -> ExecResult {
        ExecResult {
            oom_killed: true,
            ..result(exit_code)
        }
    }

    #[test]
    fn a_result_is_judged_timeout_first_then_memory_then_exit_code() {
        assert_eq!(
            RunOutcome::from(result(0)),
            RunOutcome::Succeeded(result(0))
        );
        assert_eq!(
            RunOutcome::from(result(3)),
            RunOutcome::NonZeroExit(result(3))
        );
        assert_eq!(
            RunOutcome::from(timed_out(0)),
            RunOutcome::TimedOut(timed_out(0))
        );
        let both = ExecResult {
            oom_killed: true,
            ..timed_out(137)
        };
        assert_eq!(RunOutcome::from(both.clone()), RunOutcome::TimedOut(both));
        assert_eq!(
            RunOutcome::from(oom_killed(0)),
            RunOutcome::OomKilled(oom_killed(0))
        );
    }

    #[test]
    fn each_outcome_has_its_label_reason_and_event() {
        let lost = Failure::new("PodLost", "gone");
        let cases = [
            (
                RunOutcome::from(result(0)),
                "succeeded",
                "Completed",
                ExecutionEvent::Completed {
                    message: "exit code 0 after 12 ms".into(),
                },
            ),
            (
                RunOutcome::from(result(3)),
                "failed",
                "NonZeroExit",
                ExecutionEvent::Failed {
                    reason: "NonZeroExit".into(),
                    message: "exit code 3 after 12 ms".into(),
                },
            ),
            (
                RunOutcome::from(timed_out(143)),
                "timed_out",
                "TimedOut",
                ExecutionEvent::Failed {
                    reason: "TimedOut".into(),
                    message: "exit code 143 after 12 ms".into(),
                },
            ),
            (
                RunOutcome::from(oom_killed(137)),
                "oom_killed",
                "OOMKilled",
                ExecutionEvent::Failed {
                    reason: "OOMKilled".into(),
                    message: "exit code 137 after 12 ms".into(),
                },
            ),
            (
                RunOutcome::Failed(lost),
                "error",
                "PodLost",
                ExecutionEvent::Failed {
                    reason: "PodLost".into(),
                    message: "gone".into(),
                },
            ),
        ];
        for (outcome, label, reason, event) in cases {
            assert_eq!(outcome.metric_label(), label, "{outcome:?}");
            assert_eq!(outcome.reason(), reason, "{outcome:?}");
            assert_eq!(outcome.event(), event, "{outcome:?}");
            let status = outcome.status(&running(&execution()), Some(30), at(1_700_000_002));
            assert_eq!(status.reason.as_deref(), Some(reason), "{outcome:?}");
            assert_eq!(
                outcome.run_seconds(),
                outcome.result().map(|_| 0.012),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn exit_zero_is_complete() {
        let e = running(&execution());
        let status = RunOutcome::from(result(0)).status(&e, Some(30), at(1_700_000_002));
        assert_eq!(status.phase, Some(ExecutionPhase::Succeeded));
        assert_eq!(status.reason.as_deref(), Some("Completed"));
        assert_eq!(status.message.as_deref(), Some("exited with code 0"));
        assert_eq!(status.conditions.len(), 1);
        assert_eq!(status.conditions[0].type_, "Complete");
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(status.exit_code, Some(0));
        assert_eq!(status.stdout.as_deref(), Some("out\n"));
        assert_eq!(status.stdout_truncated, Some(false));
        assert_eq!(status.memory_used_bytes, Some(1 << 20));
        assert_eq!(status.files_written, vec!["bin/x".to_string()]);
        assert_eq!(status.start_time, Some(time(1_700_000_000)));
        assert_eq!(status.completion_time, Some(time(1_700_000_001)));
        assert_eq!(
            status.pod_uid.as_deref(),
            Some("pod-uid"),
            "kept from Running"
        );
    }

    #[test]
    fn failures_have_a_reason_and_a_failed_condition() {
        let e = running(&execution());
        let now = at(1_700_000_002);
        let non_zero = RunOutcome::from(result(3)).status(&e, Some(30), now);
        assert_eq!(non_zero.phase, Some(ExecutionPhase::Failed));
        assert_eq!(non_zero.reason.as_deref(), Some("NonZeroExit"));
        assert_eq!(non_zero.message.as_deref(), Some("exited with code 3"));
        assert_eq!(non_zero.exit_code, Some(3));
        assert_eq!(non_zero.conditions[0].type_, "Failed");

        let status = RunOutcome::from(timed_out(143)).status(&e, Some(1), now);
        assert_eq!(status.reason.as_deref(), Some("TimedOut"));
        assert_eq!(status.timed_out, Some(true));
        assert!(status.message.unwrap_or_default().contains("1s"));
        let status = RunOutcome::from(timed_out(143)).status(&e, None, now);
        assert_eq!(
            status.message.as_deref(),
            Some("timed out and was killed (exit code 143)")
        );

        let status = RunOutcome::from(oom_killed(137)).status(&e, Some(30), now);
        assert_eq!(status.reason.as_deref(), Some("OOMKilled"));
        assert_eq!(status.oom_killed, Some(true));
        assert_eq!(
            status.message.as_deref(),
            Some("killed for exceeding the Session's memory limit")
        );

        let lost =
            RunOutcome::Failed(Failure::new(reasons::POD_LOST, "gone")).status(&e, Some(30), now);
        assert_eq!(lost, failed_status(&e, reasons::POD_LOST, "gone", now));
        assert_eq!(lost.phase, Some(ExecutionPhase::Failed));
        assert_eq!(lost.message.as_deref(), Some("gone"));
        assert_eq!(
            lost.exit_code, None,
            "no exit code when nothing ran to the end"
        );
        assert_eq!(lost.pod_name.as_deref(), Some("demo-sandbox"));
        assert!(lost.completion_time.is_some() && lost.start_time.is_some());
    }

    #[test]
    fn truncation_is_flagged_and_the_status_stays_small() {
        let e = running(&execution());
        let mut big = result(0);
        // Control characters take six bytes each in JSON.
        big.stdout = "\u{1}".repeat(60 * 1024);
        big.stderr = "é".repeat(40 * 1024);
        big.stdout_truncated = false;
        let status = RunOutcome::from(big).status(&e, Some(30), at(1_700_000_002));
        assert_eq!(status.stdout_truncated, Some(true));
        assert_eq!(status.stderr_truncated, Some(true));
        let size = serde_json::to_vec(&status).map(|v| v.len()).unwrap_or(0);
        assert!(size < 128 * 1024, "status is {size} bytes");
        let stdout = status.stdout.unwrap_or_default();
        assert!(stdout.contains("bytes truncated"));
    }
}
