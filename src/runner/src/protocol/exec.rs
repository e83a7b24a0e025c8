//! The `exec` spec (stdin) and the events the runner reports (stdout).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::{ResultKey, MAX_FRAME_BYTES};

/// Version of [`ExecSpec`] and [`ExecResult`].
pub const PROTOCOL_VERSION: u32 = 1;
/// Version of an [`ExecSpec`] that needs a runner which knows `stagedCode`: a runner older than
/// that refuses the spec ("unsupported version") instead of ignoring the field and running
/// nothing. Specs without staged code keep [`PROTOCOL_VERSION`], so older runners still take
/// them.
pub const STAGED_CODE_VERSION: u32 = 2;
pub const DEFAULT_WORKSPACE: &str = "/workspace";
/// Every setting the runner reads from its own environment starts with this. The operator sets
/// them on the sandbox container; tenants may not set names with this prefix (the CRD validation
/// and the api refuse them), and an [`ExecSpec`]'s env never reaches the runner itself.
pub const RUNNER_ENV_PREFIX: &str = "KUBEXEC_";
/// The session's process limit, enforced on each execution's user process (see
/// [`crate::pids`]).
pub const PIDS_LIMIT_ENV: &str = "KUBEXEC_PIDS_LIMIT";
/// Default `--workspace` of the helpers.
pub const WORKSPACE_ENV: &str = "KUBEXEC_WORKSPACE";
/// Seconds `init` waits for the sandbox's processes after forwarding a terminating signal.
pub const INIT_GRACE_ENV: &str = "KUBEXEC_INIT_GRACE_SECONDS";
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 30;
/// Per stream; the first half and the last half of the output are kept.
pub const DEFAULT_OUTPUT_CAP_BYTES: u64 = 64 * 1024;
const MAX_RUN_ID_LEN: usize = 128;

/// One execution, sent as the single frame on `kubexec-runner exec`'s stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecSpec {
    /// [`PROTOCOL_VERSION`], or [`STAGED_CODE_VERSION`] when `staged_code` is set.
    pub version: u32,
    /// The Execution's UID; names the run directory. Only `[A-Za-z0-9-]`.
    pub run_id: String,
    /// TypeScript/JavaScript run by `bun`. At most one of `code` and `command`; neither means
    /// the execution only writes files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Shell command run by `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The name of code staged in `<workspace>/.kubexec/staged/` by `kubexec-runner stage`, run
    /// exactly as `code` would be. Exclusive with `code` and `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_code: Option<String>,
    /// Written atomically before the code or command runs.
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// Merged over the environment the runner inherited, for the user process only: the runner
    /// reads its own settings (such as [`PIDS_LIMIT_ENV`]) from its own environment, never
    /// from here.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u32,
    /// Absolute, or relative to the workspace. Defaults to the workspace. Must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Fed to the process's stdin; without it stdin is `/dev/null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Root that file paths are confined to and that holds `.kubexec/runs/`.
    #[serde(default = "default_workspace")]
    pub workspace: String,
    /// Cap per stream in the result; defaults to [`DEFAULT_OUTPUT_CAP_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_cap_bytes: Option<u64>,
    /// Emit `stdout`/`stderr` events while the process runs. On by default.
    #[serde(default = "default_stream")]
    pub stream: bool,
    /// Only replay or attach to a run that an earlier exec claimed; never start one. A run
    /// nobody claimed is then claimed as refused ([`ErrorCode::NotStarted`]), so that a late
    /// exec of the same run ID can no longer start it either. The operator sends this when it
    /// recovers a run whose inputs (env, effective timeout) it cannot rebuild: the spec's
    /// other fields are then not the real ones and must never run.
    #[serde(default, skip_serializing_if = "is_false")]
    pub attach_only: bool,
    /// The run's result key: the result is sealed with it (see [`ResultKey`]). Held only in
    /// the runner's memory, never written to the run directory or passed to the user process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_key: Option<ResultKey>,
    /// The Execution's name. The claim records it in the workspace's name index
    /// (`.kubexec/names/<name>`), so that the run can be found by name after the Execution is
    /// gone. Ignored unless it is a valid run id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn is_false(value: &bool) -> bool {
    !value
}

fn default_timeout_seconds() -> u32 {
    DEFAULT_TIMEOUT_SECONDS
}
fn default_workspace() -> String {
    DEFAULT_WORKSPACE.into()
}
fn default_stream() -> bool {
    true
}

impl ExecSpec {
    /// A spec with defaults, mainly for building one in code and tests.
    pub fn new(run_id: impl Into<String>) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            run_id: run_id.into(),
            code: None,
            command: None,
            staged_code: None,
            files: Vec::new(),
            env: BTreeMap::new(),
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            working_dir: None,
            stdin: None,
            workspace: DEFAULT_WORKSPACE.into(),
            output_cap_bytes: None,
            stream: true,
            attach_only: false,
            result_key: None,
            name: None,
        }
    }

    /// The complete stdin payload for `kubexec-runner exec`: this spec as one frame.
    pub fn to_frame(&self) -> Vec<u8> {
        super::encode_frame(&serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn output_cap_bytes(&self) -> u64 {
        self.output_cap_bytes.unwrap_or(DEFAULT_OUTPUT_CAP_BYTES)
    }

    /// Checks what can be checked without touching the filesystem.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::InvalidSpec(message));
        if !(PROTOCOL_VERSION..=STAGED_CODE_VERSION).contains(&self.version) {
            return invalid(format!(
                "unsupported version {} (this runner speaks {PROTOCOL_VERSION} to {STAGED_CODE_VERSION})",
                self.version
            ));
        }
        validate_run_id(&self.run_id)?;
        let programs = [
            self.code.is_some(),
            self.command.is_some(),
            self.staged_code.is_some(),
        ];
        if programs.into_iter().filter(|set| *set).count() > 1 {
            return invalid("set at most one of code, command and stagedCode".into());
        }
        if let Some(name) = &self.staged_code {
            validate_run_id(name)?;
            if self.version < STAGED_CODE_VERSION {
                return invalid(format!(
                    "stagedCode needs spec version {STAGED_CODE_VERSION}, got {}",
                    self.version
                ));
            }
        }
        if self.timeout_seconds == 0 {
            return invalid("timeoutSeconds must be at least 1".into());
        }
        if !self.workspace.starts_with('/') {
            return invalid(format!(
                "workspace {:?} must be an absolute path",
                self.workspace
            ));
        }
        // The kernel takes C strings: a NUL would silently cut a value short.
        let texts = [&self.code, &self.command, &self.working_dir]
            .into_iter()
            .flatten()
            .chain(self.env.values())
            .chain(self.files.iter().map(|file| &file.path));
        if texts.into_iter().any(|text| text.contains('\0')) {
            return invalid(
                "code, command, workingDir, env values and file paths must not contain NUL".into(),
            );
        }
        if let Some(key) = self
            .env
            .keys()
            .find(|key| key.is_empty() || key.contains(['=', '\0']))
        {
            return invalid(format!(
                "env name {key:?} must be non-empty without '=' or NUL"
            ));
        }
        Ok(())
    }
}

/// Run IDs name a directory, so only a charset that cannot traverse or hide is accepted.
pub fn validate_run_id(run_id: &str) -> Result<()> {
    let charset_ok = run_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if run_id.is_empty() || run_id.len() > MAX_RUN_ID_LEN || !charset_ok {
        return Err(Error::InvalidSpec(format!(
            "runId {run_id:?} must be 1-{MAX_RUN_ID_LEN} characters of [A-Za-z0-9-]"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileSpec {
    /// Relative to the workspace, or absolute inside it.
    pub path: String,
    pub content: String,
    #[serde(default)]
    pub encoding: Encoding,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
}

/// The outcome of one execution, stored as `result.json` in the run directory and sent as the
/// final `result` event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    pub version: u32,
    pub run_id: String,
    /// The process's exit code, or 128 + N when signal N killed it.
    pub exit_code: i32,
    /// Capped: head and tail kept, with a marker between them when truncated.
    pub stdout: String,
    pub stderr: String,
    /// Total bytes produced, including what the cap dropped.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub execution_time_ms: u64,
    /// Peak resident memory of the process tree the runner waited for.
    pub memory_used_bytes: u64,
    /// User + system CPU time of that tree.
    pub cpu_time_ms: u64,
    pub timed_out: bool,
    pub oom_killed: bool,
    /// Normalized paths relative to the workspace; see `files_written_truncated`.
    pub files_written: Vec<String>,
    /// True when `files_written` lists only some of the files (the result must fit a frame).
    #[serde(default)]
    pub files_written_truncated: bool,
    /// Unix milliseconds.
    pub started_at: u64,
    pub finished_at: u64,
    /// True when this result was read back from an earlier run of the same runId rather than
    /// produced by running now (at most once). Not covered by `mac`.
    #[serde(default)]
    pub recovered: bool,
    /// HMAC-SHA256 (hex) of the result under the spec's `resultKey`; absent when the spec had
    /// none. See [`ResultKey`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// Room kept in a result frame for the event tag, the MAC and `recovered`.
const RESULT_FRAME_SLACK: usize = 512;

impl ExecResult {
    /// Shrinks the result until its `result` event fits a frame ([`MAX_FRAME_BYTES`]), with
    /// room for the MAC: first the list of files written (flagged), then the longer of the two
    /// outputs (flagged as truncated, its head kept). A no-op for any ordinary result.
    pub fn fit_frame(&mut self) {
        let budget = MAX_FRAME_BYTES - RESULT_FRAME_SLACK;
        let size = |r: &Self| serde_json::to_vec(r).map_or(usize::MAX, |json| json.len());
        while size(self) > budget {
            if !self.files_written.is_empty() {
                let keep = self.files_written.len() / 2;
                self.files_written.truncate(keep);
                self.files_written_truncated = true;
            } else {
                let (text, truncated) = if self.stdout.len() >= self.stderr.len() {
                    (&mut self.stdout, &mut self.stdout_truncated)
                } else {
                    (&mut self.stderr, &mut self.stderr_truncated)
                };
                let mut keep = text.len() / 2;
                while !text.is_char_boundary(keep) {
                    keep -= 1;
                }
                text.truncate(keep);
                *truncated = true;
            }
        }
    }
}

/// One frame on the runner's stdout. Only the runner writes there: user output goes to files,
/// so it cannot forge an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum RunnerEvent {
    /// Live output, UTF-8 (lossy). Chunks never split a character.
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    /// Last event of a successful exec.
    Result(ExecResult),
    /// Last event when the runner itself failed; the user's process did not produce a result.
    Error(RunnerError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    InvalidSpec,
    PathEscapesWorkspace,
    WorkingDirMissing,
    SpawnFailed,
    Io,
    /// A runner started this run earlier, is gone, and left no result.
    Lost,
    /// An attach-only exec found the run never started, and refused to start it.
    NotStarted,
    NotFound,
    LimitExceeded,
    Usage,
    /// A helper was asked to read something that is not a regular file (a FIFO, a device, a
    /// directory), which could block or never end.
    NotAFile,
    /// A code from a newer runner.
    #[serde(other)]
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_defaults_apply_to_a_minimal_spec() {
        let spec: ExecSpec =
            serde_json::from_str(r#"{"version":1,"runId":"abc-1","command":"true"}"#)
                .expect("minimal spec parses");
        assert_eq!(spec.timeout_seconds, DEFAULT_TIMEOUT_SECONDS);
        assert_eq!(spec.workspace, "/workspace");
        assert_eq!(spec.output_cap_bytes(), 64 * 1024);
        assert!(spec.stream && spec.files.is_empty() && spec.env.is_empty());
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn spec_fields_are_camel_case() {
        let json = r#"{"version":1,"runId":"r","code":"1","files":[{"path":"a","content":"eA==","encoding":"base64"}],
            "env":{"A":"b"},"timeoutSeconds":5,"workingDir":"/tmp","stdin":"in","workspace":"/w","outputCapBytes":10,
            "language":"typescript"}"#;
        let spec: ExecSpec = serde_json::from_str(json).expect("full spec parses");
        assert_eq!(spec.files[0].encoding, Encoding::Base64);
        assert_eq!(spec.working_dir.as_deref(), Some("/tmp"));
        assert_eq!(spec.output_cap_bytes, Some(10));
    }

    #[test]
    fn validation_rejects_bad_specs() {
        let base = || {
            let mut spec = ExecSpec::new("run-1");
            spec.command = Some("true".into());
            spec
        };
        type Mutation = fn(&mut ExecSpec);
        let cases: Vec<(&str, Mutation)> = vec![
            ("version", |s| s.version = STAGED_CODE_VERSION + 1),
            ("staged code in a version 1 spec", |s| {
                s.command = None;
                s.staged_code = Some("exe-1".into());
            }),
            ("staged code and command", |s| {
                s.version = STAGED_CODE_VERSION;
                s.staged_code = Some("exe-1".into());
            }),
            ("traversing staged code", |s| {
                s.version = STAGED_CODE_VERSION;
                s.command = None;
                s.staged_code = Some("../x".into());
            }),
            ("empty runId", |s| s.run_id.clear()),
            ("traversing runId", |s| s.run_id = "../x".into()),
            ("dotted runId", |s| s.run_id = "a.b".into()),
            ("code and command", |s| s.code = Some("1".into())),
            ("zero timeout", |s| s.timeout_seconds = 0),
            ("relative workspace", |s| s.workspace = "ws".into()),
            ("NUL in command", |s| s.command = Some("a\0b".into())),
            ("= in env name", |s| {
                drop(s.env.insert("A=B".into(), "1".into()))
            }),
        ];
        assert!(base().validate().is_ok());
        let mut staged = base();
        staged.command = None;
        staged.version = STAGED_CODE_VERSION;
        staged.staged_code = Some("exe-1".into());
        assert!(staged.validate().is_ok());
        for (name, mutate) in cases {
            let mut spec = base();
            mutate(&mut spec);
            assert!(
                matches!(spec.validate(), Err(Error::InvalidSpec(_))),
                "{name}"
            );
        }
    }

    #[test]
    fn events_are_tagged_by_type() {
        let out =
            serde_json::to_string(&RunnerEvent::Stdout { data: "x".into() }).unwrap_or_default();
        assert_eq!(out, r#"{"type":"stdout","data":"x"}"#);

        let error = RunnerEvent::Error(RunnerError {
            code: ErrorCode::SpawnFailed,
            message: "m".into(),
        });
        let out = serde_json::to_string(&error).unwrap_or_default();
        assert_eq!(
            out,
            r#"{"type":"error","code":"SpawnFailed","message":"m"}"#
        );

        let result = RunnerEvent::Result(ExecResult {
            exit_code: 3,
            run_id: "r".into(),
            ..Default::default()
        });
        let out = serde_json::to_value(&result).unwrap_or_default();
        assert_eq!(out["type"], "result");
        assert_eq!(out["exitCode"], 3);
        assert_eq!(out["runId"], "r");
        assert_eq!(
            serde_json::from_value::<RunnerEvent>(out).ok(),
            Some(result)
        );
    }

    #[test]
    fn any_result_fits_a_frame() {
        let mut result = ExecResult {
            run_id: "r".into(),
            // Control characters take six bytes each in JSON.
            stdout: "\u{1}".repeat(MAX_FRAME_BYTES),
            stderr: "é".repeat(1000),
            files_written: (0..100_000).map(|i| format!("dir/file-{i}.txt")).collect(),
            ..Default::default()
        };
        result.fit_frame();
        let event = serde_json::to_vec(&RunnerEvent::Result(result.clone())).unwrap_or_default();
        assert!(event.len() <= MAX_FRAME_BYTES - 256, "{}", event.len());
        assert!(result.files_written.is_empty() && result.files_written_truncated);
        assert!(result.stdout_truncated && !result.stderr_truncated);
        assert_eq!(result.stderr.len(), 2000);

        let small = ExecResult {
            files_written: vec!["a".into()],
            ..Default::default()
        };
        let mut fitted = small.clone();
        fitted.fit_frame();
        assert_eq!(fitted, small);
    }

    #[test]
    fn unknown_error_codes_still_decode() {
        let event: RunnerEvent =
            serde_json::from_str(r#"{"type":"error","code":"FromTheFuture","message":"m"}"#)
                .expect("decodes");
        assert!(matches!(
            event,
            RunnerEvent::Error(RunnerError {
                code: ErrorCode::Unknown,
                ..
            })
        ));
    }
}
