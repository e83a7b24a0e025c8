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
use crate::protocol::{
    validate_run_id, ExecResult, RunList, RunStatus, RunSummary, RunnerError, MAX_FRAME_BYTES,
};

const STARTED: &str = "started";
const RESULT: &str = "result.json";
const ERROR: &str = "error.json";
/// The files that describe a run (its claim and outcome); everything else in a run directory
/// is its output and inputs, which the collector may remove (see [`crate::gc`]).
pub const KEPT_FILES: [&str; 3] = [STARTED, RESULT, ERROR];
/// `.kubexec/runs/`: one directory per run id.
pub const RUNS_DIR: &str = "runs";
/// `.kubexec/names/<name>`: the run id of the Execution called `<name>` (the name index).
pub const NAMES_DIR: &str = "names";

/// The runs directory of a workspace.
pub fn runs_root(workspace_root: &Path) -> PathBuf {
    workspace_root.join(RESERVED_DIR).join(RUNS_DIR)
}

fn names_root(workspace_root: &Path) -> PathBuf {
    workspace_root.join(RESERVED_DIR).join(NAMES_DIR)
}

/// Records that the Execution `name` is run `run_id`. Names follow the run id charset; any
/// other name is not indexed (the run is then found by its id only).
pub fn record_name(workspace_root: &Path, name: &str, run_id: &str) -> Result<()> {
    if validate_run_id(name).is_err() {
        return Ok(());
    }
    let dir = names_root(workspace_root);
    std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
    // Renamed into place whole, but not synced: an entry lost in a crash only makes the run
    // unfindable by name, and every execution would otherwise pay two more fsyncs.
    let aside = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&aside, run_id.as_bytes())
        .and_then(|()| std::fs::rename(&aside, dir.join(name)))
        .context(|| format!("recording the name {name}"))
}

/// The run id recorded for `name`, if any. The index is writable by user code: a caller that
/// must trust the answer checks the run's result against a key bound to the name (see
/// [`crate::protocol::ResultKey::derive`]).
pub fn lookup_name(workspace_root: &Path, name: &str) -> Result<Option<String>> {
    validate_run_id(name)?;
    let path = names_root(workspace_root).join(name);
    let mut text = String::new();
    match std::fs::File::open(&path) {
        Ok(file) => file
            .take(MAX_RUN_ID_BYTES + 1)
            .read_to_string(&mut text)
            .context(|| format!("reading {}", path.display()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                context: format!("reading {}", path.display()),
                source,
            })
        }
    };
    Ok(validate_run_id(text.trim())
        .ok()
        .map(|()| text.trim().to_string()))
}

/// Removes index entries whose run directory is gone; returns how many.
pub fn prune_names(workspace_root: &Path) -> usize {
    let runs = runs_root(workspace_root);
    let Ok(entries) = std::fs::read_dir(names_root(workspace_root)) else {
        return 0;
    };
    let mut pruned = 0;
    for entry in entries.flatten() {
        // The index is writable by user code: nothing larger than a run id is read.
        let small = entry
            .metadata()
            .is_ok_and(|m| m.is_file() && m.len() <= MAX_RUN_ID_BYTES);
        let run = match small {
            true => std::fs::read_to_string(entry.path()).unwrap_or_default(),
            false => String::new(),
        };
        let run = run.trim();
        if validate_run_id(run).is_err() || !runs.join(run).is_dir() {
            pruned += usize::from(std::fs::remove_file(entry.path()).is_ok());
        }
    }
    pruned
}

const MAX_RUN_ID_BYTES: u64 = 128;
/// Most runs `runs` lists.
pub const MAX_LISTED_RUNS: usize = 10_000;

/// The named runs of a workspace, newest first (at most [`MAX_LISTED_RUNS`]).
pub fn list_named(workspace_root: &Path) -> RunList {
    let Ok(entries) = std::fs::read_dir(names_root(workspace_root)) else {
        return RunList::default();
    };
    let mut list = RunList::default();
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if list.runs.len() == MAX_LISTED_RUNS {
            list.truncated = true;
            break;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(Some(run_id)) = lookup_name(workspace_root, &name) else {
            continue;
        };
        let Ok(run) = RunDir::new(workspace_root, &run_id) else {
            continue;
        };
        let modified = std::fs::metadata(run.path())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        let (state, started_at, finished_at, exit_code) = match run.status() {
            Ok(RunStatus::Finished(r)) => (
                "finished",
                r.started_at,
                Some(r.finished_at),
                Some(r.exit_code),
            ),
            Ok(RunStatus::Running { started_at, .. }) => ("running", started_at, None, None),
            Ok(RunStatus::Failed(_)) => ("failed", modified, Some(modified), None),
            Ok(RunStatus::Lost) => ("lost", modified, Some(modified), None),
            Ok(RunStatus::Unknown) | Err(_) => ("unknown", modified, None, None),
        };
        list.runs.push(RunSummary {
            name,
            run_id,
            state: state.into(),
            started_at,
            finished_at,
            exit_code,
        });
    }
    list.runs
        .sort_by(|a, b| (b.started_at, &b.name).cmp(&(a.started_at, &a.name)));
    list
}

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
            dir: runs_root(workspace_root).join(run_id),
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
    fn names_index_runs_and_prune_with_them() {
        let dir = TempDir::new("rundir-names");
        let run = RunDir::new(dir.path(), "uid-1").expect("valid id");
        run.claim(1).expect("claimed");
        record_name(dir.path(), "exe-a", "uid-1").expect("recorded");
        record_name(dir.path(), "not/a name", "uid-1").expect("skipped, not failed");
        assert_eq!(
            lookup_name(dir.path(), "exe-a").ok(),
            Some(Some("uid-1".into()))
        );
        assert_eq!(lookup_name(dir.path(), "exe-b").ok(), Some(None));
        assert!(lookup_name(dir.path(), "../x").is_err());
        let listed = list_named(dir.path());
        assert_eq!(listed.runs.len(), 1);
        assert_eq!(
            (listed.runs[0].name.as_str(), listed.runs[0].state.as_str()),
            ("exe-a", "running")
        );
        assert_eq!(prune_names(dir.path()), 0);
        std::fs::remove_dir_all(run.path()).expect("removed");
        assert_eq!(prune_names(dir.path()), 1);
        assert_eq!(lookup_name(dir.path(), "exe-a").ok(), Some(None));
    }

    #[test]
    fn run_ids_cannot_traverse() {
        assert!(RunDir::new(Path::new("/w"), "../../etc").is_err());
    }
}
