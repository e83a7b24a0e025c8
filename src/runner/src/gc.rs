//! `kubexec-runner gc`: bounds the run directories of a workspace (`.kubexec/runs/`).
//!
//! A run keeps its full output in its directory, and that counts against the workspace's
//! size. The collector removes the **output** of finished runs older than `max_age`, and of the
//! oldest finished runs while all runs' output together is over `max_bytes`; the run's stored
//! outcome (`result.json`, small and sealed) stays, so the run can still be looked up, and a
//! read of its output answers "collected". Past `keep` the whole run directory goes (and its
//! name in the index). A run that is still running is never touched, whatever its size.
//!
//! [`plan`] decides (pure, clock as an argument); [`collect`] reads the directory and applies it.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::protocol::{validate_run_id, RunStatus};
use crate::run_dir::{prune_names, runs_root, RunDir, KEPT_FILES};

/// A run directory with no claim yet may be a claim in progress; it is left alone this long.
const UNCLAIMED_GRACE: Duration = Duration::from_secs(60);

/// What the collector keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcLimits {
    /// Output of a finished run is kept this long after it ended.
    pub max_age: Duration,
    /// All runs' output together, in bytes; the oldest finished runs' output goes first.
    pub max_bytes: u64,
    /// The run directory itself (its outcome) is kept this long after the run ended.
    pub keep: Duration,
}

/// One run directory, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub run_id: String,
    /// Unix ms when it ended; `None` while it runs (never collected).
    pub ended_at: Option<u64>,
    /// Bytes of its output files (0 once collected).
    pub output_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcAction {
    /// Remove the run's output, keep its outcome.
    CollectOutput(String),
    /// Remove the whole run directory.
    Remove(String),
}

/// What `gc` did, as JSON on stdout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Run directories left.
    pub runs: usize,
    /// Bytes of output left in them (running runs included).
    pub output_bytes: u64,
    /// Runs whose output was collected now.
    pub collected: Vec<String>,
    /// Runs removed now.
    pub removed: Vec<String>,
}

/// Decides what to collect. Running runs count towards the total but are never touched.
pub fn plan(runs: &[RunInfo], limits: GcLimits, now_ms: u64) -> Vec<GcAction> {
    let age = |ended: u64| Duration::from_millis(now_ms.saturating_sub(ended));
    let mut actions = Vec::new();
    let mut total: u64 = 0;
    // Finished runs that still hold output, oldest first: the candidates for the size limit.
    let mut candidates: Vec<&RunInfo> = Vec::new();
    for run in runs {
        match run.ended_at {
            None => total = total.saturating_add(run.output_bytes),
            Some(ended) if age(ended) >= limits.keep => {
                actions.push(GcAction::Remove(run.run_id.clone()))
            }
            Some(ended) if run.output_bytes > 0 && age(ended) >= limits.max_age => {
                actions.push(GcAction::CollectOutput(run.run_id.clone()))
            }
            Some(_) => {
                total = total.saturating_add(run.output_bytes);
                if run.output_bytes > 0 {
                    candidates.push(run);
                }
            }
        }
    }
    candidates.sort_by_key(|run| (run.ended_at, run.run_id.clone()));
    for run in candidates {
        if total <= limits.max_bytes {
            break;
        }
        total -= run.output_bytes;
        actions.push(GcAction::CollectOutput(run.run_id.clone()));
    }
    actions
}

/// Reads the workspace's run directories, applies [`plan`], and reports what is left.
pub fn collect(workspace_root: &Path, limits: GcLimits, now_ms: u64) -> Result<GcReport> {
    let runs = survey(workspace_root, now_ms);
    let actions = plan(&runs, limits, now_ms);
    let mut report = GcReport::default();
    let root = runs_root(workspace_root);
    for action in &actions {
        match action {
            GcAction::Remove(run_id) => {
                if std::fs::remove_dir_all(root.join(run_id)).is_ok() {
                    report.removed.push(run_id.clone());
                }
            }
            GcAction::CollectOutput(run_id) => {
                remove_output(&root.join(run_id));
                report.collected.push(run_id.clone());
            }
        }
    }
    if !report.removed.is_empty() {
        prune_names(workspace_root);
    }
    let left = survey(workspace_root, now_ms);
    report.runs = left.len();
    report.output_bytes = left.iter().map(|r| r.output_bytes).sum();
    Ok(report)
}

fn survey(workspace_root: &Path, now_ms: u64) -> Vec<RunInfo> {
    let Ok(entries) = std::fs::read_dir(runs_root(workspace_root)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let run_id = entry.file_name().into_string().ok()?;
            validate_run_id(&run_id).ok()?;
            let dir = RunDir::new(workspace_root, &run_id).ok()?;
            let modified = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            let ended_at = match dir.status() {
                Ok(RunStatus::Running { .. }) => None,
                Ok(RunStatus::Finished(result)) => Some(result.finished_at.max(1)),
                Ok(RunStatus::Unknown)
                    if Duration::from_millis(now_ms.saturating_sub(modified)) < UNCLAIMED_GRACE =>
                {
                    None
                }
                // Failed, lost, unreadable or long unclaimed: ended when last touched.
                _ => Some(modified.max(1)),
            };
            Some(RunInfo {
                run_id,
                ended_at,
                output_bytes: output_bytes(dir.path()),
            })
        })
        .collect()
}

/// Bytes of everything in a run directory but the files that describe the run.
fn output_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| !is_kept(&e.file_name()))
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn is_kept(name: &std::ffi::OsStr) -> bool {
    KEPT_FILES.iter().any(|kept| name == *kept)
}

fn remove_output(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !is_kept(&entry.file_name()) {
            let path = entry.path();
            let _ = match entry.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ExecResult;
    use crate::testutil::TempDir;

    const HOUR: u64 = 3_600_000;

    fn limits() -> GcLimits {
        GcLimits {
            max_age: Duration::from_secs(3600),
            max_bytes: 100,
            keep: Duration::from_secs(24 * 3600),
        }
    }

    fn run(id: &str, ended_at: Option<u64>, output_bytes: u64) -> RunInfo {
        RunInfo {
            run_id: id.into(),
            ended_at,
            output_bytes,
        }
    }

    #[test]
    fn old_output_goes_and_old_runs_go_whole() {
        let now = 100 * HOUR;
        let runs = [
            run("fresh", Some(now - 1000), 10),
            run("old", Some(now - 2 * HOUR), 10),
            run("ancient", Some(now - 25 * HOUR), 0),
            run("old-empty", Some(now - 2 * HOUR), 0),
        ];
        assert_eq!(
            plan(&runs, limits(), now),
            vec![
                GcAction::CollectOutput("old".into()),
                GcAction::Remove("ancient".into())
            ]
        );
    }

    #[test]
    fn over_the_size_the_oldest_finished_output_goes_first_and_running_runs_never() {
        let now = 100 * HOUR;
        let runs = [
            run("running-huge", None, 1000),
            run("newer", Some(now - 10), 40),
            run("older", Some(now - 20), 40),
            run("oldest", Some(now - 30), 40),
        ];
        // 1120 bytes against 100: every finished run's output goes, the running one stays.
        assert_eq!(
            plan(&runs, limits(), now),
            vec![
                GcAction::CollectOutput("oldest".into()),
                GcAction::CollectOutput("older".into()),
                GcAction::CollectOutput("newer".into()),
            ]
        );
        let small = [
            run("newer", Some(now - 10), 40),
            run("older", Some(now - 20), 40),
            run("oldest", Some(now - 30), 40),
        ];
        assert_eq!(
            plan(&small, limits(), now),
            vec![GcAction::CollectOutput("oldest".into())]
        );
        // A running run is never removed, however old.
        assert!(plan(&[run("r", None, 5)], limits(), u64::MAX).is_empty());
    }

    #[test]
    fn collects_output_but_keeps_the_outcome_and_the_running_run() {
        let ws = TempDir::new("gc");
        let now = 100 * HOUR;
        let finished = RunDir::new(ws.path(), "done-1").expect("id");
        finished.claim(1).expect("claimed");
        std::fs::write(finished.stdout_path(), "x".repeat(200)).expect("stdout");
        finished
            .write_result(&ExecResult {
                run_id: "done-1".into(),
                stdout_bytes: 200,
                finished_at: now - 10,
                ..Default::default()
            })
            .expect("result");
        // Claimed by this living process: running.
        let running = RunDir::new(ws.path(), "live-1").expect("id");
        running.claim(1).expect("claimed");
        std::fs::write(running.stdout_path(), "y".repeat(500)).expect("stdout");

        let report = collect(ws.path(), limits(), now).expect("collected");
        assert_eq!(report.collected, vec!["done-1".to_string()]);
        assert!(report.removed.is_empty());
        assert_eq!(report.runs, 2);
        assert_eq!(report.output_bytes, 500);
        assert!(!finished.stdout_path().exists());
        assert!(matches!(finished.status(), Ok(RunStatus::Finished(_))));
        assert!(running.stdout_path().exists());

        let later = GcLimits {
            keep: Duration::from_millis(5),
            ..limits()
        };
        let report = collect(ws.path(), later, now).expect("collected");
        assert_eq!(report.removed, vec!["done-1".to_string()]);
        assert!(!finished.path().exists() && running.path().exists());
    }
}
