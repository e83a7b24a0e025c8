//! The run directory `<workspace>/.kubexec/runs/<runId>/`: the at-most-once claim, the full
//! output, and the stored outcome that a later exec or the operator recovers from.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::files::{write_atomically, PendingFile};
use crate::paths::RESERVED_DIR;
use crate::procfs;
use crate::protocol::{validate_run_id, ExecResult, RunStatus, RunnerError, MAX_FRAME_BYTES};

const STARTED: &str = "started";
const RESULT: &str = "result.json";
const ERROR: &str = "error.json";

/// Contents of the `started` marker: identifies the runner process that owns the run, so a
/// later exec can tell "still running" from "runner died" even if the pid was reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartedMarker {
    pid: i32,
    start_ticks: u64,
    started_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This process owns the run and must execute it.
    Claimed,
    /// Some runner claimed it before; never execute again.
    AlreadyClaimed,
}

#[derive(Debug, Clone)]
pub struct RunDir {
    dir: PathBuf,
}

impl RunDir {
    pub fn new(workspace_root: &Path, run_id: &str) -> Result<Self> {
        validate_run_id(run_id)?;
        Ok(Self {
            dir: workspace_root.join(RESERVED_DIR).join("runs").join(run_id),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.dir.join("stdout")
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.dir.join("stderr")
    }

    pub fn stdin_path(&self) -> PathBuf {
        self.dir.join("stdin")
    }

    pub fn code_path(&self) -> PathBuf {
        self.dir.join("main.ts")
    }

    /// Atomically claims the run for this process. The marker is complete before it becomes
    /// visible (written aside, then hard-linked into place, which fails if it exists).
    pub fn claim(&self, started_at: u64) -> Result<Claim> {
        std::fs::create_dir_all(&self.dir)
            .context(|| format!("creating {}", self.dir.display()))?;
        if self.dir.join(RESULT).exists() || self.dir.join(ERROR).exists() {
            return Ok(Claim::AlreadyClaimed);
        }
        let marker = StartedMarker {
            pid: std::process::id() as i32,
            start_ticks: procfs::own_start_ticks().unwrap_or(0),
            started_at,
        };
        let content = serde_json::to_vec(&marker).unwrap_or_default();
        let started = self.dir.join(STARTED);

        let mut aside = PendingFile::create(&started, 0o644)?;
        aside
            .writer()
            .write_all(&content)
            .context(|| "writing the started marker".into())?;
        aside
            .writer()
            .sync_all()
            .context(|| "syncing the started marker".into())?;
        match std::fs::hard_link(aside.path(), &started) {
            Ok(()) => Ok(Claim::Claimed),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Claim::AlreadyClaimed),
            // Some volume types lack hard links; exclusive create is the next best claim.
            Err(_) => match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&started)
            {
                Ok(mut file) => {
                    file.write_all(&content)
                        .and_then(|()| file.sync_all())
                        .context(|| "writing the started marker".into())?;
                    Ok(Claim::Claimed)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Claim::AlreadyClaimed),
                Err(source) => Err(Error::Io {
                    context: "claiming the run".into(),
                    source,
                }),
            },
        }
    }

    pub fn write_result(&self, result: &ExecResult) -> Result<()> {
        let json = serde_json::to_vec(result).unwrap_or_default();
        write_atomically(&self.dir.join(RESULT), &json, 0o644)
    }

    /// Records why a claimed run produced no result, so it is replayed instead of reported lost.
    pub fn write_error(&self, error: &RunnerError) -> Result<()> {
        let json = serde_json::to_vec(error).unwrap_or_default();
        write_atomically(&self.dir.join(ERROR), &json, 0o644)
    }

    /// What is known about this run right now.
    pub fn status(&self) -> Result<RunStatus> {
        if let Some(outcome) = self.stored_outcome()? {
            return Ok(outcome);
        }
        let Some(marker) = self.read_marker()? else {
            return Ok(RunStatus::Unknown);
        };
        if let Some(owner) = marker.filter(|m| procfs::is_alive(m.pid, m.start_ticks)) {
            return Ok(RunStatus::Running {
                pid: owner.pid,
                started_at: owner.started_at,
            });
        }
        // The runner may have stored its outcome and exited since the first look.
        Ok(self.stored_outcome()?.unwrap_or(RunStatus::Lost))
    }

    fn stored_outcome(&self) -> Result<Option<RunStatus>> {
        if let Some(result) = read_json::<ExecResult>(&self.dir.join(RESULT))? {
            return Ok(Some(RunStatus::Finished(result)));
        }
        Ok(read_json::<RunnerError>(&self.dir.join(ERROR))?.map(RunStatus::Failed))
    }

    /// `None` if there is no marker; `Some(None)` if it stays unreadable (a runner that died
    /// while writing it in the non-atomic fallback).
    fn read_marker(&self) -> Result<Option<Option<StartedMarker>>> {
        let path = self.dir.join(STARTED);
        for _ in 0..5 {
            match std::fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(marker) => return Ok(Some(Some(marker))),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(source) => {
                    return Err(Error::Io {
                        context: format!("reading {}", path.display()),
                        source,
                    })
                }
            }
        }
        Ok(Some(None))
    }
}

/// Reads a stored outcome. The run directory is writable by user code, so the file is read
/// only up to a frame's size: anything larger is not the runner's and is refused unread. (What
/// it says is checked by whoever receives it: a result must carry the run's MAC.)
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let invalid = |message: String| Error::Io {
        context: format!("parsing {}", path.display()),
        source: io::Error::new(io::ErrorKind::InvalidData, message),
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                context: format!("reading {}", path.display()),
                source,
            })
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_FRAME_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .context(|| format!("reading {}", path.display()))?;
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(invalid(format!("larger than {MAX_FRAME_BYTES} bytes")));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;
    use crate::testutil::TempDir;

    #[test]
    fn claims_once_and_reports_status() {
        let dir = TempDir::new("rundir");
        let run = RunDir::new(dir.path(), "run-1").expect("valid id");
        assert_eq!(run.status().ok(), Some(RunStatus::Unknown));
        assert_eq!(run.claim(5).ok(), Some(Claim::Claimed));
        assert_eq!(run.claim(6).ok(), Some(Claim::AlreadyClaimed));
        let running = RunStatus::Running {
            pid: std::process::id() as i32,
            started_at: 5,
        };
        assert_eq!(run.status().ok(), Some(running));

        let result = ExecResult {
            run_id: "run-1".into(),
            exit_code: 4,
            ..Default::default()
        };
        run.write_result(&result).expect("stored");
        assert_eq!(run.status().ok(), Some(RunStatus::Finished(result)));
        let names: Vec<_> = std::fs::read_dir(run.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "only the marker and the result remain: {names:?}"
        );
    }

    #[test]
    fn a_dead_owner_without_result_is_lost() {
        let dir = TempDir::new("rundir-lost");
        let run = RunDir::new(dir.path(), "run-2").expect("valid id");
        std::fs::create_dir_all(run.path()).expect("dir");
        let dead = StartedMarker {
            pid: i32::MAX,
            start_ticks: 1,
            started_at: 1,
        };
        std::fs::write(
            run.path().join(STARTED),
            serde_json::to_vec(&dead).unwrap_or_default(),
        )
        .expect("marker");
        assert_eq!(run.status().ok(), Some(RunStatus::Lost));

        let error = RunnerError {
            code: ErrorCode::WorkingDirMissing,
            message: "m".into(),
        };
        run.write_error(&error).expect("stored");
        assert_eq!(run.status().ok(), Some(RunStatus::Failed(error)));
        assert_eq!(run.claim(2).ok(), Some(Claim::AlreadyClaimed));
    }

    #[test]
    fn an_oversized_stored_result_is_refused_unread() {
        let dir = TempDir::new("rundir-huge");
        let run = RunDir::new(dir.path(), "run-3").expect("valid id");
        std::fs::create_dir_all(run.path()).expect("dir");
        let mut huge = b"{\"stdout\":\"".to_vec();
        huge.resize(MAX_FRAME_BYTES + 10, b'x');
        std::fs::write(run.path().join(RESULT), huge).expect("result");
        assert!(matches!(run.status(), Err(Error::Io { .. })));
    }

    #[test]
    fn run_ids_cannot_traverse() {
        assert!(RunDir::new(Path::new("/w"), "../../etc").is_err());
    }
}
