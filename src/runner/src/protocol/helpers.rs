//! Requests and responses of the helper subcommands (`write-files`, `ls`, `ps`, `kill`,
//! `result`, `install`). Responses are one JSON document on stdout; failures are one
//! [`RunnerError`] JSON document on stderr with a non-zero exit status.

use serde::{Deserialize, Serialize};

use super::{ExecResult, RunnerError};

/// One frame on `write-files`' stdin.
///
/// The stream is: for each file a `file` frame, immediately followed by exactly `size` raw bytes
/// (not framed: the size already delimits them); then one `end` frame. Nothing is renamed into
/// place until `end` arrives and every file was received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum WriteFilesFrame {
    File {
        path: String,
        size: u64,
        /// Permission bits, e.g. 420 (0o644) or 493 (0o755). Default 0o644.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    End,
}

impl WriteFilesFrame {
    /// This header as a frame; for `File`, the caller sends `size` raw bytes right after it.
    pub fn to_frame(&self) -> Vec<u8> {
        super::encode_frame(&serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Output of `stage`: the staged code's name and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Staged {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilesWritten {
    pub files_written: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Relative to the workspace.
    pub path: String,
    pub size: u64,
    /// Unix milliseconds.
    pub modified: u64,
    #[serde(rename = "type")]
    pub kind: FileKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessList {
    pub processes: Vec<ProcessInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    /// The command line joined by spaces; `[comm]` when the process has none (zombies).
    pub command: String,
    /// Unix milliseconds.
    pub started_at: u64,
    pub rss_bytes: u64,
    /// One-letter state from /proc (R, S, D, Z, T, ...).
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Signalled {
    pub pid: i32,
    pub signal: i32,
    /// Whether the whole process group `pid` was signalled.
    pub group: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub installed: String,
}

/// What `result <runId>` knows about a run, tagged by `state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum RunStatus {
    /// `result.json` exists; its fields follow the tag.
    Finished(ExecResult),
    /// The runner failed after claiming the run (bad file path, missing working dir, ...).
    Failed(RunnerError),
    /// A runner claimed the run and is still alive.
    #[serde(rename_all = "camelCase")]
    Running { pid: i32, started_at: u64 },
    /// A runner claimed the run, is gone, and left no result.
    Lost,
    /// No runner ever claimed this run in this workspace.
    Unknown,
}

/// What `result --name <name>` knows: the run the name index points at, and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedRun {
    /// `None` when the name is not in the index.
    pub run_id: Option<String>,
    pub status: RunStatus,
}

/// One run of `runs`: a named run of the workspace and how it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The Execution's name (from the name index).
    pub name: String,
    pub run_id: String,
    /// `finished`, `failed`, `running`, `lost` or `unknown`, as [`RunStatus`]'s tag.
    pub state: String,
    /// Unix ms; 0 when unknown.
    pub started_at: u64,
    /// Unix ms; absent until it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// What `runs` prints: the named runs of the workspace, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunList {
    pub runs: Vec<RunSummary>,
    /// True when there were more than the list holds.
    #[serde(default)]
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes() {
        let frame = WriteFilesFrame::File {
            path: "a".into(),
            size: 3,
            mode: None,
        };
        assert_eq!(
            serde_json::to_string(&frame).unwrap_or_default(),
            r#"{"type":"file","path":"a","size":3}"#
        );
        assert_eq!(
            serde_json::to_string(&WriteFilesFrame::End).unwrap_or_default(),
            r#"{"type":"end"}"#
        );

        let running = RunStatus::Running {
            pid: 7,
            started_at: 1,
        };
        assert_eq!(
            serde_json::to_string(&running).unwrap_or_default(),
            r#"{"state":"running","pid":7,"startedAt":1}"#
        );
        let finished =
            serde_json::to_value(RunStatus::Finished(ExecResult::default())).unwrap_or_default();
        assert_eq!(finished["state"], "finished");
        assert_eq!(finished["exitCode"], 0);
    }
}
