//! Bounded run outputs. Every run keeps its full output in `.kubexec/runs/<runId>/`, in the
//! session's workspace, where it counts against the workspace's size. After an execute, the
//! api asks the session's runner to collect (`kubexec-runner gc`, see the runner's `gc`
//! module) with the key's tier limits: finished runs' output past `runOutputMaxAgeSeconds`,
//! the oldest finished runs' output while all of it is over `runOutputBytes`, and whole run
//! directories past twice the result retention. A running run is never touched. What is left
//! is recorded on the Session (annotation [`RUN_OUTPUT_ANNOTATION`]).
//!
//! Why here: the limits are the tier's, which only the api knows (the operator knows no
//! tiers); the work happens where the files are (the runner, one exec); it runs after the
//! response, so no execute waits for it; and at most once per `--run-gc-interval` per session
//! and api replica, so a busy session pays one exec a minute, not one per execution.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Deserialize;

use super::{cluster::Cluster, tiers::TierLimits};

/// Annotation on a Session: bytes of full run output its workspace holds, as last collected.
pub const RUN_OUTPUT_ANNOTATION: &str = "kubexec.dev/run-output-bytes";
/// Most sessions remembered before old entries are dropped.
const MAX_REMEMBERED: usize = 10_000;

/// When each session was last collected, per api replica.
#[derive(Debug, Default)]
pub struct RunGc {
    last: Mutex<HashMap<(String, String), Instant>>,
}

impl RunGc {
    /// True when `namespace/session` is due (and notes it as collected now).
    pub fn due(&self, namespace: &str, session: &str, interval: Duration, now: Instant) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), session.to_string());
        if last
            .get(&key)
            .is_some_and(|at| now.saturating_duration_since(*at) < interval)
        {
            return false;
        }
        if last.len() >= MAX_REMEMBERED {
            last.retain(|_, at| now.saturating_duration_since(*at) < interval);
        }
        last.insert(key, now);
        true
    }
}

/// The runner's `gc` arguments for a tier: run directories themselves are kept twice the
/// result retention (at least an hour more), so a lookup between the two answers 410
/// `EXECUTION_EXPIRED` rather than 404.
pub fn gc_args(limits: &TierLimits, retention: Duration) -> Vec<String> {
    let keep = retention
        .saturating_mul(2)
        .max(retention.saturating_add(Duration::from_secs(3600)));
    vec![
        "gc".into(),
        "--max-age-seconds".into(),
        limits.run_output_max_age_seconds.to_string(),
        "--max-bytes".into(),
        limits.run_output_bytes.to_string(),
        "--keep-seconds".into(),
        keep.as_secs().to_string(),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GcReport {
    runs: usize,
    output_bytes: u64,
    #[serde(default)]
    collected: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
}

/// When and how a session's run directories are collected: the api's settings.
#[derive(Debug, Clone, Copy)]
pub struct Collecting {
    /// `--run-gc-interval`; `None`: never.
    pub interval: Option<Duration>,
    /// `--result-retention`.
    pub retention: Duration,
}

/// Collects the session's run directories in the background, when it is due.
pub fn maybe_collect(
    cluster: &Arc<dyn Cluster>,
    gc: &RunGc,
    collecting: Collecting,
    limits: &TierLimits,
    (namespace, session, pod): (&str, &str, &str),
) {
    let Some(interval) = collecting.interval else {
        return;
    };
    if !gc.due(namespace, session, interval, Instant::now()) {
        return;
    }
    let args = gc_args(limits, collecting.retention);
    let (cluster, namespace, session, pod) = (
        cluster.clone(),
        namespace.to_string(),
        session.to_string(),
        pod.to_string(),
    );
    tokio::spawn(async move {
        let report = cluster
            .helper(&namespace, &pod, args, 64 << 10)
            .await
            .and_then(|o| o.json::<GcReport>());
        match report {
            Ok(report) => {
                tracing::debug!(
                    session,
                    runs = report.runs,
                    output_bytes = report.output_bytes,
                    collected = report.collected.len(),
                    removed = report.removed.len(),
                    "run directories collected"
                );
                let bytes = report.output_bytes.to_string();
                if let Err(e) = cluster
                    .annotate_session(&namespace, &session, RUN_OUTPUT_ANNOTATION, &bytes)
                    .await
                {
                    tracing::debug!(error = %e, session, "could not record the run output size");
                }
            }
            // An older runner without `gc`, or a Pod that went: nothing is lost but space.
            Err(e) => tracing::debug!(error = %e, session, "collecting run directories failed"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_collected_at_most_once_per_interval() {
        let gc = RunGc::default();
        let start = Instant::now();
        let minute = Duration::from_secs(60);
        assert!(gc.due("t", "s", minute, start));
        assert!(!gc.due("t", "s", minute, start + Duration::from_secs(59)));
        assert!(gc.due("t", "other", minute, start));
        assert!(gc.due("t", "s", minute, start + minute));
        assert!(gc.due("t", "s", Duration::ZERO, start + minute));
    }

    #[test]
    fn gc_arguments_follow_the_tier_and_keep_runs_past_the_retention() {
        let args = gc_args(&TierLimits::free(), Duration::from_secs(86_400));
        assert_eq!(
            args,
            [
                "gc",
                "--max-age-seconds",
                "3600",
                "--max-bytes",
                &(64u64 << 20).to_string(),
                "--keep-seconds",
                "172800"
            ]
        );
        let short = gc_args(&TierLimits::free(), Duration::from_secs(5));
        assert_eq!(short.last().map(String::as_str), Some("3605"));
    }
}
