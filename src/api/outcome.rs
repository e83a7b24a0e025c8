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

/// An Execution that exists, with what was delivered before it.
pub struct Started {
    /// Its name.
    pub name: String,
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
    let mut files_written = streamed_files.to_vec();
    for file in &status.files_written {
        if !files_written.contains(file) {
            files_written.push(file.clone());
        }
    }
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

/// The response for a run's stored result (read from its run directory, its MAC checked by
/// the caller): the same fields as [`outcome`] makes from a status. Output is capped as the
/// operator caps it for the status.
pub fn stored_outcome(
    result: &kubexec_runner::protocol::ExecResult,
    id: String,
) -> ExecuteResponse {
    let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    ExecuteResponse {
        stdout: result.stdout.clone(),
        stderr: result.stderr.clone(),
        exit_code: result.exit_code,
        execution_time: ms(result.execution_time_ms),
        memory_used: ms(result.memory_used_bytes),
        cpu_time: ms(result.cpu_time_ms),
        timed_out: result.timed_out,
        oom_killed: result.oom_killed,
        files_written: result.files_written.clone(),
        files_written_truncated: result.files_written_truncated,
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
}
