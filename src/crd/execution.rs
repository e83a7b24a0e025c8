//! `Execution`: one run of code or a command in a Session.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{EnvVar, SecretReference};

/// Default `timeoutSeconds`.
pub const DEFAULT_TIMEOUT_SECONDS: i32 = 30;
/// Largest `timeoutSeconds`.
pub const MAX_TIMEOUT_SECONDS: i32 = 300;
use crate::layout::WORKING_DIR_RULE;
/// Default `workingDir`.
pub use crate::layout::WORKSPACE_DIR as DEFAULT_WORKING_DIR;
/// Most inline environment variables of one Execution (more can come through `envFrom`).
pub const MAX_ENV: usize = 100;
/// Most inline files of one Execution. Larger file sets go through the streamed path.
pub const MAX_INLINE_FILES: usize = 1000;
/// Longest file path.
pub const MAX_PATH_LENGTH: usize = 4096;
/// Largest inline file content (as written in the spec, so base64 counts encoded).
pub const MAX_INLINE_FILE_BYTES: usize = 65_536;

/// Runs code (with Bun) or a shell command in a Session's sandbox, once. The result (output,
/// exit code, time, memory, CPU) is written to the status. The spec cannot change after creation.
// Several printer columns share a type, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "kubexec.dev",
    version = "v1alpha1",
    kind = "Execution",
    namespaced,
    status = "ExecutionStatus",
    shortname = "exe",
    category = "kubexec",
    derive = "PartialEq",
    cel,
    doc = "One run of code (Bun) or a shell command in a Session. The spec is immutable; the result is in the status.",
    printcolumn(
        name = "Session",
        type_ = "string",
        json_path = ".spec.sessionRef.name"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Exit", type_ = "integer", json_path = ".status.exitCode"),
    printcolumn(
        name = "Duration(ms)",
        type_ = "integer",
        json_path = ".status.executionTimeMs"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self == oldSelf").message("Execution spec is immutable; create a new Execution instead"),
    validation = Rule::new("[has(self.code), has(self.command), has(self.stagedCode)].filter(x, x).size() <= 1")
        .message("set at most one of code, command and stagedCode (none means a files-only write)"),
    validation = Rule::new("has(self.code) || has(self.command) || has(self.stagedCode) || (has(self.files) && size(self.files) > 0)")
        .message("nothing to do: set code, command, or files")
)]
pub struct ExecutionSpec {
    /// The Session to run in (same namespace).
    pub session_ref: SessionReference,

    /// JavaScript or TypeScript source, run with `bun` in `workingDir`. Relative imports resolve
    /// against `workingDir`, so files written by `files` can be imported. Exclusive with
    /// `command`. At most 256 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144))]
    pub code: Option<String>,

    /// Shell command line, run with `/bin/sh -c` in `workingDir`. Exclusive with `code`. At
    /// most 256 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144))]
    pub command: Option<String>,

    /// Code that was too large to ride in this object: the api streamed it into the session's
    /// workspace (`.kubexec/staged/<name>`) before creating the Execution. It runs exactly as
    /// `code` would, and is removed once the run holds its own copy. Exclusive with `code` and
    /// `command`; set by the REST api, rarely by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), regex(pattern = r"^[A-Za-z0-9-]+$"))]
    pub staged_code: Option<String>,

    /// Small files written into the workspace before the code or command runs (each write is
    /// atomic). Larger files are written through the streamed API path and referred to by path.
    /// At most 1000.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub files: Vec<FileSpec>,

    /// Environment variables of this execution, added to the Session's. At most 100 inline;
    /// names unique. Values are secrets: prefer `valueFrom` or `envFrom` to keep them out of
    /// this object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,

    /// Every key of this Secret becomes an environment variable of the execution (keys must be
    /// valid variable names). The api stores request env values this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<EnvFromSource>,

    /// Wall-clock limit in seconds, between 1 and 300. On timeout the process group gets TERM,
    /// then KILL, and the status says `timedOut: true`. Default 30 (or the Session's
    /// `defaultTimeoutSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<i32>,

    /// Directory the code or command runs in: `/workspace` (default) or a directory below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self == '/workspace' || (self.startsWith('/workspace/') && !self.contains('/../') && !self.endsWith('/..'))")
        .message(WORKING_DIR_RULE))]
    pub working_dir: Option<String>,

    /// Text written to the process's standard input, which is then closed. At most 256 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144))]
    pub stdin: Option<String>,

    /// Seconds after completion (success or failure) before this Execution is deleted. Unset:
    /// kept until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 604800))]
    pub ttl_seconds_after_finished: Option<i32>,
}

impl ExecutionSpec {
    /// The effective timeout: the spec's, else the session default, else 30 s.
    pub fn effective_timeout_seconds(&self, session_default: Option<i32>) -> i32 {
        self.timeout_seconds
            .or(session_default)
            .unwrap_or(DEFAULT_TIMEOUT_SECONDS)
    }

    /// The effective working directory.
    pub fn effective_working_dir(&self) -> &str {
        self.working_dir.as_deref().unwrap_or(DEFAULT_WORKING_DIR)
    }
}

/// Names the Session an Execution runs in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionReference {
    /// Name of the Session, in the Execution's namespace.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// A file to write into the workspace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FileSpec {
    /// Path relative to `/workspace` (e.g. `src/index.ts`), or absolute below `/workspace/`.
    /// `..` segments are refused. Missing directories are created.
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(
        validation = Rule::new("!self.startsWith('/') || self.startsWith('/workspace/')")
            .message("absolute paths must be below /workspace/"),
        validation = Rule::new("!(self == '..' || self.startsWith('../') || self.endsWith('/..') || self.contains('/../'))")
            .message("must stay inside the workspace: '..' path segments are not allowed")
    )]
    pub path: String,

    /// File content, in the given encoding. At most 64 KiB inline; larger files go through the
    /// streamed API path.
    #[serde(default)]
    #[schemars(length(max = 65536))]
    pub content: String,

    /// How `content` is encoded: `utf8` (default) or `base64` (for binary files).
    #[serde(default)]
    pub encoding: FileEncoding,
}

/// Encoding of a file's content.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FileEncoding {
    /// Plain UTF-8 text.
    #[default]
    Utf8,
    /// Base64 (standard alphabet, with padding).
    Base64,
}

/// Environment variables taken from a whole Secret.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromSource {
    /// The Secret whose keys become environment variables.
    pub secret_ref: SecretReference,
}

/// Lifecycle phase of an Execution.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum ExecutionPhase {
    /// Waiting for its Session to be ready.
    #[default]
    Pending,
    /// Running in the sandbox.
    Running,
    /// Ran to the end with exit code 0.
    Succeeded,
    /// Exited non-zero, timed out, was OOM-killed, or could not run; see `reason`, `message`
    /// and `exitCode`.
    Failed,
}

/// Observed state and result of an Execution, written by the operator.
///
/// A finished Execution stays finished: the apiserver refuses any status write that moves it
/// out of Succeeded or Failed. That fences an operator that lost its lease (or one racing a
/// newer leader) without a resourceVersion precondition on every write.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(oldSelf.phase) || !(oldSelf.phase in ['Succeeded', 'Failed']) || (has(self.phase) && self.phase == oldSelf.phase)")
        .message("a finished Execution (Succeeded or Failed) cannot change phase")
)]
pub struct ExecutionStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ExecutionPhase>,

    /// `Complete` (True when it exited 0) or `Failed` (True otherwise: non-zero exit, timeout,
    /// OOM kill, or it could not run), like a Job, so `kubectl wait --for=condition=Complete`
    /// works.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Standard output, capped (head and tail kept); see `stdoutTruncated`. The full output is
    /// kept in the workspace under `.kubexec/runs/<uid>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,

    /// Standard error, capped like `stdout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,

    /// Total bytes written to standard output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_bytes: Option<i64>,

    /// Total bytes written to standard error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_bytes: Option<i64>,

    /// True when `stdout` holds only part of the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_truncated: Option<bool>,

    /// True when `stderr` holds only part of the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_truncated: Option<bool>,

    /// Exit code of the process; 128+N when killed by signal N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,

    /// Wall time of the run, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_time_ms: Option<i64>,

    /// Peak memory of the run, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used_bytes: Option<i64>,

    /// CPU time of the run (user plus system), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_time_ms: Option<i64>,

    /// True when the run hit `timeoutSeconds` and was killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,

    /// True when the run was killed for exceeding the memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_killed: Option<bool>,

    /// Paths (relative to `/workspace`) of the files this execution wrote from `files`. Capped
    /// (so that the status always fits its object); see `filesWrittenTruncated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_written: Vec<String>,

    /// True when `filesWritten` lists only the first of the files written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_written_truncated: Option<bool>,

    /// When the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// Machine-readable reason for the phase, e.g. `SessionNotFound`, `TimedOut`, `PodLost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The Pod the execution ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,

    /// UID of that Pod. A Running execution whose Pod has since been replaced (same name, new
    /// UID) has lost its run and fails with reason `PodLost`.
    #[serde(default, rename = "podUID", skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,

    /// The key (hex) the runner's result for this run must be sealed with (HMAC-SHA256), set
    /// while the execution runs so that an operator that restarts can still verify the result
    /// it recovers from the sandbox; removed when the execution finishes. The sandbox never
    /// sees it: it reaches the runner only in the exec stream, and sandboxes cannot read the
    /// Kubernetes API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_key: Option<String>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
