//! The MCP tools: their names, descriptions and argument types. The JSON schema each tool
//! advertises is generated from its argument type (schemars), so the schema and the parser
//! cannot disagree. Field names are the REST API's, so an error naming a field (`timeout`,
//! `files[0].path`) reads the same over both.

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
};

use rmcp::{
    handler::server::common::schema_for_type,
    model::{Tool, ToolAnnotations},
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::api::model::Encoding;

/// `create_session`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSessionArgs {
    /// Lifetime of the session in seconds (default 86400 = one day, at most 604800). The
    /// sandbox and its files are deleted when it expires.
    pub ttl: Option<i64>,
    /// Free-form labels returned with the session (string values).
    pub metadata: Option<BTreeMap<String, serde_json::Value>>,
    /// Size of the sandbox; each limit is capped by the API key's tier.
    pub resource_limits: Option<ResourceLimitsArgs>,
}

/// Requested sandbox size.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceLimitsArgs {
    /// Memory in MiB (e.g. 512).
    pub memory: Option<u64>,
    /// CPU cores (e.g. 0.5 or 2).
    pub cpu: Option<f64>,
    /// Default timeout of an execution in seconds.
    pub timeout: Option<u32>,
    /// Workspace disk size in MiB.
    pub disk: Option<u64>,
}

/// `list_sessions`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// Tools that need only a session.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionArgs {
    /// The session's id, as `create_session` or `list_sessions` returned it (`ses-...`).
    pub session_id: String,
}

/// Encoding of a file's content.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileEncoding {
    /// Plain text.
    #[default]
    Utf8,
    /// Base64 (standard alphabet), for binary files.
    Base64,
}

impl From<FileEncoding> for Encoding {
    fn from(encoding: FileEncoding) -> Self {
        match encoding {
            FileEncoding::Utf8 => Encoding::Utf8,
            FileEncoding::Base64 => Encoding::Base64,
        }
    }
}

/// A file to write into the session's workspace.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileArg {
    /// Path relative to /workspace (e.g. `src/index.ts`); parent directories are created.
    pub path: String,
    /// The file's content, in `encoding`.
    pub content: String,
    /// `utf8` (default) or `base64`.
    #[serde(default)]
    pub encoding: FileEncoding,
}

/// `execute`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecuteArgs {
    /// The session to run in.
    pub session_id: String,
    /// JavaScript or TypeScript source, run with Bun in the working directory (relative
    /// imports of written files resolve). Give exactly one of `code` and `command`.
    pub code: Option<String>,
    /// A shell command line (sh -c), e.g. `bun run index.ts` or `ls -la`. Give exactly one of
    /// `code` and `command`. End it with `&` to leave a background process running.
    pub command: Option<String>,
    /// Files written (all or none) into the workspace before running.
    #[serde(default)]
    pub files: Vec<FileArg>,
    /// Environment variables of this execution only (values are kept as secrets).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Timeout in seconds (default: the session's, 30 unless set; at most the tier's). On
    /// timeout the process group is killed and `timedOut` is true.
    pub timeout: Option<i64>,
    /// Working directory, absolute below /workspace or relative to it (default /workspace).
    pub working_dir: Option<String>,
}

/// `write_files`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriteFilesArgs {
    /// The session.
    pub session_id: String,
    /// The files, written all or none.
    pub files: Vec<FileArg>,
}

/// `read_file`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadFileArgs {
    /// The session.
    pub session_id: String,
    /// The file, relative to /workspace.
    pub path: String,
    /// `utf8` or `base64`; by default utf8 when the file is valid UTF-8, else base64.
    pub encoding: Option<FileEncoding>,
}

/// `list_files`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListFilesArgs {
    /// The session.
    pub session_id: String,
    /// Directory relative to /workspace (default: the workspace itself).
    pub path: Option<String>,
    /// Also list everything below subdirectories.
    pub recursive: Option<bool>,
}

/// `kill_process`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KillProcessArgs {
    /// The session.
    pub session_id: String,
    /// The process id, as `list_processes` shows it.
    pub pid: i32,
    /// Signal name or number (default `TERM`; `KILL` cannot be caught).
    pub signal: Option<String>,
}

/// The tools' names.
pub mod names {
    /// Creates a sandbox session.
    pub const CREATE_SESSION: &str = "create_session";
    /// Lists the key's sessions.
    pub const LIST_SESSIONS: &str = "list_sessions";
    /// Deletes a session.
    pub const DELETE_SESSION: &str = "delete_session";
    /// Runs code or a command.
    pub const EXECUTE: &str = "execute";
    /// Writes files.
    pub const WRITE_FILES: &str = "write_files";
    /// Reads a file.
    pub const READ_FILE: &str = "read_file";
    /// Lists files.
    pub const LIST_FILES: &str = "list_files";
    /// Lists processes.
    pub const LIST_PROCESSES: &str = "list_processes";
    /// Signals a process.
    pub const KILL_PROCESS: &str = "kill_process";
}

fn tool<T: JsonSchema + 'static>(
    name: &'static str,
    description: &'static str,
    read_only: bool,
    destructive: bool,
) -> Tool {
    Tool::new(name, description, schema_for_type::<T>()).with_annotations(
        ToolAnnotations::new()
            .read_only(read_only)
            .destructive(destructive),
    )
}

/// Every tool, as `tools/list` describes it (built once: the server is made per request).
pub fn all() -> Arc<Vec<Tool>> {
    static TOOLS: LazyLock<Arc<Vec<Tool>>> = LazyLock::new(build);
    TOOLS.clone()
}

fn build() -> Arc<Vec<Tool>> {
    Arc::new(vec![
        tool::<CreateSessionArgs>(
            names::CREATE_SESSION,
            "Create an isolated Linux sandbox session with Bun and a persistent /workspace. \
             Returns its sessionId (pass it to the other tools), expiresAt and resourceLimits. \
             Files and background processes persist between executions until the session is \
             deleted or expires.",
            false,
            false,
        ),
        tool::<NoArgs>(
            names::LIST_SESSIONS,
            "List this API key's live sessions, newest first, with their status \
             (pending, ready, suspended, ...) and expiry.",
            true,
            false,
        ),
        tool::<SessionArgs>(
            names::DELETE_SESSION,
            "Delete a session: its sandbox, processes and workspace files are removed for good.",
            false,
            true,
        ),
        tool::<ExecuteArgs>(
            names::EXECUTE,
            "Run JavaScript/TypeScript (`code`, run with Bun) or a shell `command` in a \
             session, optionally writing `files` first, and wait for it to finish. Returns \
             stdout, stderr, exitCode, executionTime (ms), memoryUsed (bytes), cpuTime (ms), \
             timedOut and filesWritten. With a progressToken, output arrives as progress \
             notifications while it runs (stderr chunks prefixed with `[stderr] `).",
            false,
            false,
        ),
        tool::<WriteFilesArgs>(
            names::WRITE_FILES,
            "Write files into the session's /workspace (all or none); returns the paths written.",
            false,
            false,
        ),
        tool::<ReadFileArgs>(
            names::READ_FILE,
            "Read one file of the session's /workspace; returns path, content, encoding and size.",
            true,
            false,
        ),
        tool::<ListFilesArgs>(
            names::LIST_FILES,
            "List a directory of the session's /workspace: path, size, modified time and type \
             of each entry.",
            true,
            false,
        ),
        tool::<SessionArgs>(
            names::LIST_PROCESSES,
            "List the processes running in the session, including background ones left by \
             earlier executions: pid, ppid, command, startedAt, memory, state.",
            true,
            false,
        ),
        tool::<KillProcessArgs>(
            names::KILL_PROCESS,
            "Send a signal (default TERM) to a process of the session, e.g. a background \
             server started by an earlier execution.",
            false,
            true,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_documents_its_arguments() {
        let tools = all();
        assert_eq!(tools.len(), 9);
        for tool in tools.iter() {
            assert!(
                tool.description.as_ref().is_some_and(|d| d.len() > 40),
                "{} has a description an agent can act on",
                tool.name
            );
            assert_eq!(tool.input_schema.get("type"), Some(&"object".into()));
        }
        let execute = tools
            .iter()
            .find(|t| t.name == names::EXECUTE)
            .expect("execute");
        let properties = execute.input_schema["properties"]
            .as_object()
            .expect("properties");
        for field in [
            "sessionId",
            "code",
            "command",
            "files",
            "env",
            "timeout",
            "workingDir",
        ] {
            let description = properties[field]["description"].as_str().unwrap_or("");
            assert!(!description.is_empty(), "execute.{field} is described");
        }
        assert_eq!(
            execute.input_schema["required"],
            serde_json::json!(["sessionId"])
        );
    }
}
