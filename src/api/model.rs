//! Request and response bodies, field for field as the hosted API names them.

use std::{borrow::Cow, collections::BTreeMap};

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `POST /sessions/create`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionRequest {
    /// Lifetime in seconds (default 86400, at most 604800).
    pub ttl: Option<i64>,
    /// Free-form metadata, returned as given, JSON types included.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<BTreeMap<String, serde_json::Value>>,
    /// Resource limits of the sandbox.
    pub resource_limits: Option<ResourceLimitsRequest>,
}

/// Requested limits; each is capped by the key's tier.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceLimitsRequest {
    /// Memory in MB (MiB).
    pub memory: Option<u64>,
    /// CPU cores, e.g. 0.5 or 2.
    pub cpu: Option<f64>,
    /// Default execution timeout in seconds.
    pub timeout: Option<u32>,
    /// Workspace size in MB (MiB).
    pub disk: Option<u64>,
}

/// Limits of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceLimits {
    /// Memory in MB (MiB).
    pub memory: u64,
    /// CPU cores.
    pub cpu: f64,
    /// Default execution timeout in seconds.
    pub timeout: u32,
    /// Workspace size in MB (MiB).
    pub disk: u64,
}

/// A session, as `POST /sessions/create`, `GET /sessions/{id}` and `GET /sessions` return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionResponse {
    /// The session's id.
    pub session_id: String,
    /// `pending`, `ready`, `sleeping`, `suspended`, `expired`, `failed` or `terminating`.
    pub status: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// URL proxying to port 8080 of the sandbox.
    pub preview_url: String,
    /// Its limits.
    pub resource_limits: ResourceLimits,
    /// The metadata given at creation.
    #[schema(value_type = Object)]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// `GET /sessions`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    /// The tenant's sessions, newest first.
    pub sessions: Vec<SessionResponse>,
}

/// `DELETE /sessions/{id}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteSessionResponse {
    /// Always true.
    pub success: bool,
    /// The deleted session.
    pub session_id: String,
}

/// Encoding of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Text.
    #[default]
    Utf8,
    /// Base64 (standard alphabet, padding; whitespace ignored).
    Base64,
}

/// A file to write. Borrows its content from the request body when it can.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileInput<'a> {
    /// Path relative to `/workspace`, or absolute below it.
    pub path: String,
    /// The content, in `encoding`.
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub content: Cow<'a, str>,
    /// `utf8` (default) or `base64`.
    #[serde(default)]
    pub encoding: Encoding,
}

/// `POST /execute`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteRequest<'a> {
    /// The session to run in.
    pub session_id: String,
    /// JavaScript or TypeScript, run with Bun. Exactly one of `code` and `command`.
    pub code: Option<String>,
    /// A shell command, e.g. `bun run index.ts`.
    pub command: Option<String>,
    /// Files written (all or none) before running.
    #[serde(default, borrow, deserialize_with = "crate::api::extract::bounded_seq")]
    pub files: Vec<FileInput<'a>>,
    /// Environment variables of this execution (secrets welcome: they are stored in a Secret).
    #[serde(default, deserialize_with = "crate::api::extract::bounded_map")]
    pub env: BTreeMap<String, String>,
    /// Timeout in seconds (default 30, at most the tier's).
    pub timeout: Option<i64>,
    /// Working directory (default `/workspace`).
    pub working_dir: Option<String>,
    /// Stream output as Server-Sent Events.
    #[serde(default)]
    pub stream: bool,
}

/// The result of `POST /execute` (and the `result` event of a stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteResponse {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit code (0 = success; 128+N when killed by signal N).
    pub exit_code: i32,
    /// Wall time in milliseconds.
    pub execution_time: i64,
    /// Peak memory in bytes.
    pub memory_used: i64,
    /// CPU time (user + system) in milliseconds.
    pub cpu_time: i64,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// Whether the kernel's OOM killer ended it (the session's memory limit); its `exitCode`
    /// is then 137. A kubexec extension.
    pub oom_killed: bool,
    /// Files created or modified under `/workspace` by the execution (and the files sent with
    /// it), relative to `/workspace`, without kubexec's `.kubexec/`; at most 1000.
    pub files_written: Vec<String>,
    /// True when `filesWritten` lists only some of them. A kubexec extension.
    pub files_written_truncated: bool,
    /// The id to find this execution again (`GET /executions/{id}`). A kubexec extension.
    pub execution_id: String,
}

/// `GET /executions/{id}`: an execution's result in the shape of `POST /execute`'s response,
/// with its session and state; `202` and empty result fields while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRecord {
    /// `running` or `finished`.
    pub status: String,
    /// Its session.
    pub session_id: String,
    /// The result (empty while it runs).
    #[serde(flatten)]
    pub result: ExecuteResponse,
}

/// `GET /executions` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListExecutionsQuery {
    /// The session.
    pub session_id: String,
    /// Most entries per page (1 to 100, default 20).
    pub limit: Option<usize>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// One entry of `GET /executions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSummary {
    /// Its id.
    pub execution_id: String,
    /// `running`, `finished`, `failed`, `lost` or `unknown`.
    pub status: String,
    /// When it started (RFC 3339), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it finished (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Its exit code, once finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// The result of `GET /executions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionList {
    /// Newest first.
    pub executions: Vec<ExecutionSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /executions/{id}/output` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// `stdout` (default) or `stderr`.
    pub stream: Option<String>,
}

/// `POST /files/write`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteFilesRequest<'a> {
    /// The session.
    pub session_id: String,
    /// The files, written all or none.
    #[serde(borrow, deserialize_with = "crate::api::extract::bounded_seq")]
    pub files: Vec<FileInput<'a>>,
}

/// The result of `POST /files/write`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteFilesResponse {
    /// Always true.
    pub success: bool,
    /// Paths written, relative to `/workspace`.
    pub files_written: Vec<String>,
}

/// `GET /files/list` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListFilesQuery {
    /// The session.
    pub session_id: String,
    /// Directory, relative to `/workspace` (default: the workspace).
    pub path: Option<String>,
    /// List subdirectories too.
    pub recursive: Option<bool>,
}

/// One entry of `GET /files/list`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    /// Path relative to `/workspace`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification (RFC 3339).
    pub modified: String,
    /// `file`, `directory`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// The result of `GET /files/list`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FileListResponse {
    /// The entries.
    pub files: Vec<FileInfo>,
}

/// `GET /files/read` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ReadFileQuery {
    /// The session.
    pub session_id: String,
    /// The file, relative to `/workspace`.
    pub path: String,
    /// `utf8` or `base64`; default: utf8 when the file is valid UTF-8, else base64.
    pub encoding: Option<Encoding>,
}

/// The result of `GET /files/read`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileContent {
    /// The file, relative to `/workspace`.
    pub path: String,
    /// Its content, in `encoding`.
    pub content: String,
    /// How `content` is encoded.
    pub encoding: Encoding,
    /// Size in bytes.
    pub size: u64,
}

/// `GET /processes/list` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct SessionQuery {
    /// The session.
    pub session_id: String,
}

/// One process of a session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessResponse {
    /// Process id.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// Command line.
    pub command: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Resident memory in bytes.
    pub memory: u64,
    /// State letter (R, S, D, Z, T, ...).
    pub state: String,
}

/// The result of `GET /processes/list`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProcessListResponse {
    /// The session's processes (the sandbox's PID 1 and helpers excluded).
    pub processes: Vec<ProcessResponse>,
}

/// `POST /processes/kill`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KillProcessRequest {
    /// The session.
    pub session_id: String,
    /// The process.
    pub pid: i32,
    /// Signal name or number (default `TERM`).
    pub signal: Option<String>,
}

/// The result of `POST /processes/kill`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KillProcessResponse {
    /// Always true.
    pub success: bool,
    /// The process signalled.
    pub pid: i32,
    /// The signal number sent.
    pub signal: i32,
}

/// `GET /readyz` and `GET /healthz`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`, or what is not ready.
    pub status: String,
}
