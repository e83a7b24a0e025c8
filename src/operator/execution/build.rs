//! Pure builders: the runner's [`ExecSpec`] from an Execution, and the Execution's status from
//! a phase change or the runner's [`ExecResult`].

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kubexec_runner::protocol::{
    self as wire, ExecResult, ExecSpec, ResultKey, PROTOCOL_VERSION, STAGED_CODE_VERSION,
};

use crate::shared::status_fit::{
    fit_output, FittedResult, STATUS_MESSAGE_CAP_BYTES, STATUS_OUTPUT_CAP_BYTES,
};

use crate::crd::{
    conditions::{COMPLETE, FAILED},
    find_condition, next_condition, Execution, ExecutionPhase, ExecutionStatus, FileEncoding,
    Session,
};

/// Machine-readable reasons in `status.reason` (and the `Failed` condition).
pub mod reasons {
    /// Exited 0.
    pub const COMPLETED: &str = "Completed";
    /// Exited non-zero.
    pub const NON_ZERO_EXIT: &str = "NonZeroExit";
    /// Killed at `timeoutSeconds`.
    pub const TIMED_OUT: &str = "TimedOut";
    /// Killed for exceeding the memory limit.
    pub const OOM_KILLED: &str = "OOMKilled";
    /// The Session does not exist.
    pub const SESSION_NOT_FOUND: &str = crate::crd::conditions::REASON_SESSION_NOT_FOUND;
    /// `workingDir` does not exist in the session: the request's mistake.
    pub const WORKING_DIR_NOT_FOUND: &str = crate::crd::conditions::REASON_WORKING_DIR_NOT_FOUND;
    /// A file path resolves outside the workspace: the request's (or its code's) mistake.
    pub const INVALID_PATH: &str = crate::crd::conditions::REASON_INVALID_PATH;
    /// The Session did not become ready in time, or cannot (expired, failed, deleted).
    pub const SESSION_NOT_READY: &str = "SessionNotReady";
    /// A Secret named by `env` or `envFrom` does not exist (or lacks the key).
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A Secret's content cannot be used as environment variables.
    pub const INVALID_ENV: &str = "InvalidEnv";
    /// The sandbox Pod went away (or the run vanished with it) before a result was stored.
    pub const POD_LOST: &str = "PodLost";
    /// The runner refused or failed the run (bad file path, missing working directory, ...).
    pub const RUNNER_ERROR: &str = "RunnerError";
    /// The operator stopped before the run started, and its inputs (env, timeout) could not
    /// be rebuilt on recovery; it never ran.
    pub const NOT_STARTED: &str = "NotStarted";
    /// No result arrived within `timeoutSeconds` plus a grace period.
    pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
    /// Pending: waiting for the Session to become ready.
    pub const WAITING_FOR_SESSION: &str = "WaitingForSession";
    /// Pending: waiting for a Secret to appear.
    pub const WAITING_FOR_SECRET: &str = "WaitingForSecret";
    /// Running in the sandbox.
    pub const RUNNING: &str = "Running";
    /// The apiserver refused the final status with the result; this smaller one replaces it.
    pub const STATUS_REJECTED: &str = "StatusRejected";
    /// The result the sandbox returned is not the runner's: its MAC or run ID does not match
    /// (user code rewrote the stored result, or forged a frame).
    pub const RESULT_REJECTED: &str = "ResultRejected";
}

/// Environment values resolved from Secrets. Its `Debug` never shows the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Env(pub BTreeMap<String, String>);

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The session's default timeout, if it has one.
pub fn session_default_timeout(session: Option<&Session>) -> Option<i32> {
    session.and_then(|s| s.spec.default_timeout_seconds)
}

/// The runner spec for `execution`: run ID = its UID, the effective timeout and working dir,
/// its files, stdin and the resolved `env`, and the run's `result_key`. Output is not streamed
/// (the operator only needs the result) and is capped for the status. `attach_only`: the runner
/// may replay or attach to the run, never start it (see [`ExecSpec::attach_only`]).
pub fn exec_spec(
    execution: &Execution,
    timeout_seconds: i32,
    env: Env,
    attach_only: bool,
    result_key: Option<ResultKey>,
) -> ExecSpec {
    let spec = &execution.spec;
    ExecSpec {
        version: match spec.staged_code {
            Some(_) => STAGED_CODE_VERSION,
            None => PROTOCOL_VERSION,
        },
        run_id: execution.uid().unwrap_or_default(),
        code: spec.code.clone(),
        command: spec.command.clone(),
        staged_code: spec.staged_code.clone(),
        files: spec
            .files
            .iter()
            .map(|f| wire::FileSpec {
                path: f.path.clone(),
                content: f.content.clone(),
                encoding: match f.encoding {
                    FileEncoding::Utf8 => wire::Encoding::Utf8,
                    FileEncoding::Base64 => wire::Encoding::Base64,
                },
            })
            .collect(),
        env: env.0,
        timeout_seconds: timeout_seconds.max(1) as u32,
        working_dir: Some(spec.effective_working_dir().to_string()),
        stdin: spec.stdin.clone(),
        workspace: wire::DEFAULT_WORKSPACE.into(),
        output_cap_bytes: Some(STATUS_OUTPUT_CAP_BYTES as u64),
        stream: false,
        attach_only,
        result_key,
        name: execution.metadata.name.clone(),
    }
}

fn time(t: Timestamp) -> Time {
    // Status times have second precision; keep them stable across rewrites.
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

fn time_from_unix_ms(ms: u64) -> Option<Time> {
    let ms = i64::try_from(ms).ok().filter(|ms| *ms > 0)?;
    Timestamp::from_millisecond(ms).ok().map(time)
}

/// Pending, with why it waits. `None` when the status already says so.
pub fn pending_status(
    execution: &Execution,
    reason: &str,
    message: String,
) -> Option<ExecutionStatus> {
    let current = execution.status.clone().unwrap_or_default();
    let unchanged = current.phase.unwrap_or_default() == ExecutionPhase::Pending
        && current.reason.as_deref() == Some(reason)
        && current.message.as_deref() == Some(message.as_str());
    (!unchanged).then(|| ExecutionStatus {
        phase: Some(ExecutionPhase::Pending),
        reason: Some(reason.into()),
        message: Some(message),
        observed_generation: execution.metadata.generation,
        ..ExecutionStatus::default()
    })
}

/// Running in `pod` (written before the exec starts), with the run's result key.
pub fn running_status(
    execution: &Execution,
    pod_name: &str,
    pod_uid: Option<String>,
    result_key: &ResultKey,
    now: Timestamp,
) -> ExecutionStatus {
    ExecutionStatus {
        phase: Some(ExecutionPhase::Running),
        reason: Some(reasons::RUNNING.into()),
        message: Some(format!("running in {pod_name}")),
        start_time: Some(time(now)),
        pod_name: Some(pod_name.to_string()),
        pod_uid,
        result_key: Some(result_key.to_hex()),
        observed_generation: execution.metadata.generation,
        ..ExecutionStatus::default()
    }
}

/// The result key recorded in a Running status, if there is a well-formed one.
pub fn recorded_result_key(execution: &Execution) -> Option<ResultKey> {
    execution
        .status
        .as_ref()
        .and_then(|s| s.result_key.as_deref())
        .and_then(ResultKey::from_hex)
}

fn with_terminal_condition(
    execution: &Execution,
    mut status: ExecutionStatus,
    succeeded: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> ExecutionStatus {
    let (message, _) = fit_output(message, STATUS_MESSAGE_CAP_BYTES);
    let message = message.as_str();
    let type_ = if succeeded { COMPLETE } else { FAILED };
    let previous = execution
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, type_));
    status.conditions = vec![next_condition(
        previous,
        type_,
        true,
        reason,
        message,
        execution.metadata.generation,
        time(now),
    )];
    status.phase = Some(if succeeded {
        ExecutionPhase::Succeeded
    } else {
        ExecutionPhase::Failed
    });
    status.reason = Some(reason.into());
    status.message = Some(message.to_string());
    status.observed_generation = execution.metadata.generation;
    status
}

/// Failed without a result (it could not run, or its run was lost). Keeps what the Running
/// status recorded (start time, Pod).
pub fn failed_status(
    execution: &Execution,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> ExecutionStatus {
    let current = execution.status.clone().unwrap_or_default();
    let base = ExecutionStatus {
        start_time: current.start_time,
        pod_name: current.pod_name,
        pod_uid: current.pod_uid,
        completion_time: Some(time(now)),
        ..ExecutionStatus::default()
    };
    with_terminal_condition(execution, base, false, reason, message, now)
}

/// The final status from the runner's result, with the verdict on it: `succeeded`, its reason
/// and message (see [`super::outcome::RunOutcome`]).
pub fn result_status(
    execution: &Execution,
    result: &ExecResult,
    succeeded: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> ExecutionStatus {
    let current = execution.status.clone().unwrap_or_default();
    let fitted = FittedResult::of(result);
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let base = ExecutionStatus {
        stdout: Some(fitted.stdout),
        stderr: Some(fitted.stderr),
        stdout_bytes: Some(as_i64(result.stdout_bytes)),
        stderr_bytes: Some(as_i64(result.stderr_bytes)),
        stdout_truncated: Some(fitted.stdout_truncated),
        stderr_truncated: Some(fitted.stderr_truncated),
        exit_code: Some(result.exit_code),
        execution_time_ms: Some(as_i64(result.execution_time_ms)),
        memory_used_bytes: Some(as_i64(result.memory_used_bytes)),
        cpu_time_ms: Some(as_i64(result.cpu_time_ms)),
        timed_out: Some(result.timed_out),
        oom_killed: Some(result.oom_killed),
        files_written_truncated: Some(fitted.files_written_truncated),
        files_written: fitted.files_written,
        start_time: current
            .start_time
            .or_else(|| time_from_unix_ms(result.started_at)),
        completion_time: time_from_unix_ms(result.finished_at).or_else(|| Some(time(now))),
        pod_name: current.pod_name,
        pod_uid: current.pod_uid,
        ..ExecutionStatus::default()
    };
    with_terminal_condition(execution, base, succeeded, reason, message, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{EnvVar, ExecutionSpec, FileSpec, SessionReference};
    use crate::shared::status_fit::STATUS_FILES_WRITTEN_CAP;

    fn execution() -> Execution {
        let mut e = Execution::new(
            "run",
            ExecutionSpec {
                session_ref: SessionReference {
                    name: "demo".into(),
                },
                command: Some("echo hi".into()),
                files: vec![FileSpec {
                    path: "bin/x".into(),
                    content: "eA==".into(),
                    encoding: FileEncoding::Base64,
                }],
                env: vec![EnvVar::literal("A", "1")],
                stdin: Some("input".into()),
                ..ExecutionSpec::default()
            },
        );
        e.metadata.uid = Some("0b5e-uid".into());
        e.metadata.generation = Some(1);
        e
    }

    #[test]
    fn exec_spec_carries_the_execution() {
        let env = Env(BTreeMap::from([("A".to_string(), "1".to_string())]));
        let spec = exec_spec(
            &execution(),
            7,
            env,
            false,
            Some(ResultKey::from_bytes([1; 32])),
        );
        assert_eq!(spec.run_id, "0b5e-uid");
        assert_eq!(spec.command.as_deref(), Some("echo hi"));
        assert_eq!(spec.code, None);
        assert_eq!(spec.timeout_seconds, 7);
        assert_eq!(spec.working_dir.as_deref(), Some("/workspace"));
        assert_eq!(spec.stdin.as_deref(), Some("input"));
        assert_eq!(spec.files[0].encoding, wire::Encoding::Base64);
        assert_eq!(spec.env.get("A").map(String::as_str), Some("1"));
        assert!(!spec.stream && spec.result_key.is_some());
        assert_eq!(spec.output_cap_bytes, Some(STATUS_OUTPUT_CAP_BYTES as u64));
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn env_debug_hides_values() {
        let env = Env(BTreeMap::from([(
            "TOKEN".to_string(),
            "s3cr3t".to_string(),
        )]));
        let shown = format!("{env:?}");
        assert!(
            shown.contains("TOKEN") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }

    #[test]
    fn a_hundred_thousand_files_written_end_in_a_capped_status() {
        let result = ExecResult {
            run_id: "0b5e-uid".into(),
            exit_code: 0,
            files_written: (0..100_000)
                .map(|i| format!("deep/dir/file-{i:06}.txt"))
                .collect(),
            stdout: "\u{1}".repeat(1 << 20),
            ..Default::default()
        };
        let message = "m".repeat(1 << 20);
        let status = result_status(
            &execution(),
            &result,
            true,
            reasons::COMPLETED,
            &message,
            Timestamp::UNIX_EPOCH,
        );
        assert!(status.files_written.len() <= STATUS_FILES_WRITTEN_CAP);
        assert!(!status.files_written.is_empty());
        assert_eq!(status.files_written[0], "deep/dir/file-000000.txt");
        assert_eq!(status.files_written_truncated, Some(true));
        assert_eq!(status.stdout_truncated, Some(true));
        let size = serde_json::to_vec(&status).map_or(usize::MAX, |json| json.len());
        assert!(size < 128 * 1024, "the whole status is {size} bytes");
    }

    #[test]
    fn the_running_status_records_the_result_key() {
        let key = ResultKey::from_bytes([9; 32]);
        let mut e = execution();
        e.status = Some(running_status(&e, "pod", None, &key, Timestamp::UNIX_EPOCH));
        assert_eq!(recorded_result_key(&e), Some(key));
        // The final status leaves it out: server-side apply then removes it.
        let done = failed_status(&e, reasons::POD_LOST, "gone", Timestamp::UNIX_EPOCH);
        assert_eq!(done.result_key, None);
    }

    #[test]
    fn pending_status_is_written_only_on_change() {
        let mut e = execution();
        let first = pending_status(&e, reasons::WAITING_FOR_SESSION, "waiting".into());
        assert!(first.is_some());
        e.status = first;
        assert!(pending_status(&e, reasons::WAITING_FOR_SESSION, "waiting".into()).is_none());
        assert!(pending_status(&e, reasons::WAITING_FOR_SECRET, "secret".into()).is_some());
    }
}
