//! An Execution the api created, as the api watches it: when it has started and when it has
//! finished, and the response (and metric label) its final status makes. Both answers of
//! `POST /execute` read it: the plain JSON response ([`super::routes::execute`]) and the SSE
//! stream ([`super::stream`]), so the two cannot drift apart.

use std::time::Duration;

use super::{
    cluster::ExecutionWatch,
    errors::{codes, ApiError, ApiResult},
    model::ExecuteResponse,
};

use crate::crd::{conditions, find_condition, Execution, ExecutionPhase};
use crate::shared::status_fit::FittedResult;

/// An Execution that exists, with what was delivered before it.
pub struct Started {
    /// Its name.
    pub name: String,
    /// Its namespace (the tenant's).
    pub namespace: String,
    /// Files streamed before it was created.
    pub streamed_files: Vec<String>,
    /// The sandbox Pod of its session.
    pub pod: String,
    /// How long to wait for its result.
    pub result_timeout: Duration,
    /// Its entry in the tenant's quota ledger: settled when it is seen finished.
    pub charge: super::quota::Charge,
    /// Its versions, subscribed to before it was created.
    pub watch: tokio::sync::Mutex<Box<dyn ExecutionWatch>>,
    /// What lets the api take its result straight from the runner, when it can verify it.
    pub sealed: Option<SealedRun>,
}

/// A run whose result the api can take from the runner itself, without waiting for the
/// operator to store it in the status: its id (the Execution's uid, known from the create),
/// the key the runner seals its result with (derived from the cluster's result secret, which
/// the sandbox never sees), and the REST id of its execution.
pub struct SealedRun {
    /// The run id.
    pub run_id: String,
    /// The key its result must verify under.
    pub key: kubexec_runner::protocol::ResultKey,
    /// The REST execution id of the response.
    pub id: String,
}

impl SealedRun {
    /// The sealed run of the Execution `namespace/name` of `session` with uid `uid`; `None`
    /// without the cluster's result secret.
    pub fn of(namespace: &str, name: &str, session: &str, uid: Option<&str>) -> Option<Self> {
        let run_id = uid?;
        Some(Self {
            key: crate::shared::result_secret::derived_key(namespace, name, run_id)?,
            run_id: run_id.to_string(),
            id: execution_id(name, session),
        })
    }

    /// The response for the runner's `result`, when it is this run's and its seal verifies;
    /// the files streamed before the run are listed first, as in [`outcome`].
    pub fn answer(
        &self,
        result: &kubexec_runner::protocol::ExecResult,
        streamed_files: &[String],
    ) -> Option<ExecuteResponse> {
        if result.run_id != self.run_id || !self.key.verify(result) {
            tracing::warn!(execution = %self.id, "a followed result failed its MAC check; answering from the status");
            return None;
        }
        let mut response = stored_outcome(result, self.id.clone());
        response.files_written = with_streamed(streamed_files, response.files_written);
        Some(response)
    }
}

/// `streamed` first, then the run's own paths that are not among them.
fn with_streamed(streamed: &[String], written: Vec<String>) -> Vec<String> {
    let mut files = streamed.to_vec();
    for file in written {
        if !files.contains(&file) {
            files.push(file);
        }
    }
    files
}

impl Started {
    /// Waits up to the result timeout until `done` holds; returns the last version seen.
    pub async fn wait(&self, done: fn(&Execution) -> bool) -> ApiResult<Option<Execution>> {
        self.watch
            .lock()
            .await
            .until(self.result_timeout, done)
            .await
    }
}

/// True once the Execution has its final status.
pub fn is_finished(execution: &Execution) -> bool {
    let Some(status) = &execution.status else {
        return false;
    };
    let condition_true =
        |type_| find_condition(&status.conditions, type_).is_some_and(|c| c.status == "True");
    condition_true(conditions::COMPLETE)
        || condition_true(conditions::FAILED)
        || matches!(
            status.phase,
            Some(ExecutionPhase::Succeeded | ExecutionPhase::Failed)
        )
}

/// True once the Execution runs (or has finished).
pub fn is_started(execution: &Execution) -> bool {
    is_finished(execution)
        || execution
            .status
            .as_ref()
            .is_some_and(|s| s.phase == Some(ExecutionPhase::Running))
}

/// The response for a finished Execution: the run's result when it ran (whatever its exit
/// code, timeout or OOM), an error when it could not run.
pub fn outcome(execution: &Execution, streamed_files: &[String]) -> ApiResult<ExecuteResponse> {
    let status = execution.status.clone().unwrap_or_default();
    let ran = status.exit_code.is_some() || status.timed_out == Some(true);
    if !ran {
        let reason = status.reason.clone().unwrap_or_else(|| "Unknown".into());
        let message = status.message.clone().unwrap_or_default();
        // Failures the request caused are the caller's mistake: named 4xx, never 500.
        match reason.as_str() {
            conditions::REASON_SESSION_NOT_FOUND => {
                return Err(ApiError::SessionNotFound(
                    execution.spec.session_ref.name.clone(),
                ))
            }
            conditions::REASON_WORKING_DIR_NOT_FOUND => {
                return Err(ApiError::invalid_with(
                    codes::WORKING_DIR_NOT_FOUND,
                    "workingDir",
                    format!(
                        "{} does not exist in the session or is not a directory",
                        execution
                            .spec
                            .working_dir
                            .as_deref()
                            .unwrap_or("the directory")
                    ),
                ))
            }
            conditions::REASON_INVALID_PATH => {
                return Err(ApiError::invalid_with(
                    codes::INVALID_PATH,
                    "files",
                    message,
                ))
            }
            _ => {}
        }
        return Err(ApiError::ExecutionFailed {
            reason,
            message: status
                .message
                .clone()
                .unwrap_or_else(|| "the execution did not run".into()),
        });
    }
    let files_written = with_streamed(streamed_files, status.files_written.clone());
    Ok(ExecuteResponse {
        stdout: status.stdout.unwrap_or_default(),
        stderr: status.stderr.unwrap_or_default(),
        exit_code: status.exit_code.unwrap_or(-1),
        execution_time: status.execution_time_ms.unwrap_or(0),
        memory_used: status.memory_used_bytes.unwrap_or(0),
        cpu_time: status.cpu_time_ms.unwrap_or(0),
        timed_out: status.timed_out.unwrap_or(false),
        oom_killed: status.oom_killed.unwrap_or(false),
        files_written,
        files_written_truncated: status.files_written_truncated.unwrap_or(false),
        execution_id: execution_id(
            &execution.metadata.name.clone().unwrap_or_default(),
            &execution.spec.session_ref.name,
        ),
    })
}

/// The REST id of an Execution: `<name>.<session>`. The session is part of it because the
/// run's stored result lives in that session's workspace, which is where a lookup goes once
/// the Execution object is gone. Execution names made by the api never hold a dot.
pub fn execution_id(name: &str, session: &str) -> String {
    format!("{name}.{session}")
}

/// The (Execution name, session) of a REST execution id; `None` when it is not one.
pub fn parse_execution_id(id: &str) -> Option<(&str, &str)> {
    let (name, session) = id.split_once('.')?;
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    (label(name) && label(session)).then_some((name, session))
}

/// The response for a run's result as the runner reported it (read from its run directory, or
/// from a follow of the run; its MAC checked by the caller): the same fields, cut the same way,
/// as [`outcome`] makes from the status the operator writes for it.
pub fn stored_outcome(
    result: &kubexec_runner::protocol::ExecResult,
    id: String,
) -> ExecuteResponse {
    let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let fitted = FittedResult::of(result);
    ExecuteResponse {
        stdout: fitted.stdout,
        stderr: fitted.stderr,
        exit_code: result.exit_code,
        execution_time: ms(result.execution_time_ms),
        memory_used: ms(result.memory_used_bytes),
        cpu_time: ms(result.cpu_time_ms),
        timed_out: result.timed_out,
        oom_killed: result.oom_killed,
        files_written: fitted.files_written,
        files_written_truncated: fitted.files_written_truncated,
        execution_id: id,
    }
}

/// Metric label of an outcome.
pub fn outcome_label(result: &ApiResult<ExecuteResponse>) -> &'static str {
    match result {
        Ok(r) if r.timed_out => "timed_out",
        Ok(_) => "ok",
        Err(ApiError::ExecutionFailed { .. }) => "failed",
        Err(_) => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_ids_round_trip_and_refuse_anything_else() {
        let id = execution_id("exe-abc", "ses-1");
        assert_eq!(id, "exe-abc.ses-1");
        assert_eq!(parse_execution_id(&id), Some(("exe-abc", "ses-1")));
        for bad in [
            "exe-abc",
            ".ses",
            "exe.",
            "EXE.ses",
            "exe/x.ses",
            "exe.ses.x",
            "-a.b",
        ] {
            assert_eq!(parse_execution_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_followed_result_answers_only_when_it_is_the_runs_and_its_seal_verifies() {
        use kubexec_runner::protocol::{ExecResult, ResultKey};
        let key = ResultKey::derive(&[7; 32], "t", "exe-a", "uid-1").expect("key");
        let sealed = SealedRun {
            run_id: "uid-1".into(),
            key: key.clone(),
            id: execution_id("exe-a", "ses-1"),
        };
        let mut result = ExecResult {
            run_id: "uid-1".into(),
            exit_code: 3,
            stdout: "x".repeat(200 * 1024),
            files_written: vec!["out.txt".into(), "in.txt".into()],
            ..Default::default()
        };
        key.seal(&mut result);
        let answer = sealed
            .answer(&result, &["in.txt".to_string()])
            .expect("verified");
        assert_eq!(answer.exit_code, 3);
        assert_eq!(answer.execution_id, "exe-a.ses-1");
        // Streamed files first, each path once; output cut as the status cuts it.
        assert_eq!(answer.files_written, ["in.txt", "out.txt"]);
        assert!(answer.stdout.len() < 64 * 1024, "{}", answer.stdout.len());

        // User code that rewrites its result, or points the run at another one's, is refused.
        let mut forged = result.clone();
        forged.exit_code = 0;
        assert!(sealed.answer(&forged, &[]).is_none());
        let mut other = result.clone();
        other.run_id = "uid-2".into();
        key.seal(&mut other);
        assert!(sealed.answer(&other, &[]).is_none());
        let stranger = ResultKey::derive(&[8; 32], "t", "exe-a", "uid-1").expect("key");
        let mut unsealed = result.clone();
        stranger.seal(&mut unsealed);
        assert!(sealed.answer(&unsealed, &[]).is_none());
    }
}
