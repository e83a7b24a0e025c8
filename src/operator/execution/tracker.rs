//! In-memory record of the runs this process has started, so that a re-reconcile never starts
//! a second exec for the same Execution, and a stale cache entry (our own final status not yet
//! seen by the watch) is not taken for an orphaned run.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::metrics::gauge::Gauge;

/// How long a finished run is remembered: long enough for the watch to deliver the final status.
const REMEMBER_FINISHED: Duration = Duration::from_secs(300);

/// What this process knows about an Execution's run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// No run of it in this process: nothing started, or a previous process started it.
    Unknown,
    /// A task of this process is running it.
    InFlight,
    /// A task of this process finished it and wrote the final status.
    Finished,
}

#[derive(Clone, Copy, Debug)]
enum Entry {
    InFlight,
    Finished(Instant),
}

/// Runs by Execution UID, and when activity was last recorded per Session. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tracker {
    runs: Arc<Mutex<HashMap<String, Entry>>>,
    activity: Arc<Mutex<HashMap<String, Instant>>>,
    in_flight: Gauge,
}

impl Tracker {
    /// A tracker that keeps `in_flight` equal to the number of runs in flight.
    pub fn new(in_flight: Gauge) -> Self {
        Self {
            runs: Arc::default(),
            activity: Arc::default(),
            in_flight,
        }
    }

    /// True (and noted) when activity of `session` was not recorded in the last `interval`:
    /// busy Sessions then cost one write per interval instead of two per execution.
    pub fn activity_due(&self, session: &str, interval: Duration) -> bool {
        let mut activity = self.activity.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        activity.retain(|_, at| now.duration_since(*at) < interval);
        if activity.contains_key(session) {
            return false;
        }
        activity.insert(session.to_string(), now);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is known about `uid`.
    pub fn state(&self, uid: &str) -> RunState {
        match self.lock().get(uid) {
            None => RunState::Unknown,
            Some(Entry::InFlight) => RunState::InFlight,
            Some(Entry::Finished(at)) if at.elapsed() < REMEMBER_FINISHED => RunState::Finished,
            Some(Entry::Finished(_)) => RunState::Unknown,
        }
    }

    /// Claims `uid` for a run. `None` when a run of it is in flight or just finished here.
    pub fn claim(&self, uid: &str) -> Option<RunGuard> {
        let mut runs = self.lock();
        runs.retain(|_, entry| match entry {
            Entry::Finished(at) => at.elapsed() < REMEMBER_FINISHED,
            Entry::InFlight => true,
        });
        if runs.contains_key(uid) {
            return None;
        }
        runs.insert(uid.to_string(), Entry::InFlight);
        self.in_flight.inc();
        Some(RunGuard {
            tracker: self.clone(),
            uid: uid.to_string(),
            finished: false,
        })
    }

    /// Number of runs in flight.
    pub fn in_flight(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| matches!(e, Entry::InFlight))
            .count()
    }
}

/// A claimed run. [`finished`](RunGuard::finished) records that its final status was written;
/// dropping it otherwise forgets the run, so a later reconcile recovers it.
pub struct RunGuard {
    tracker: Tracker,
    uid: String,
    finished: bool,
}

impl RunGuard {
    /// The final status is written.
    pub fn finished(mut self) {
        self.finished = true;
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        let mut runs = self.tracker.lock();
        if self.finished {
            runs.insert(self.uid.clone(), Entry::Finished(Instant::now()));
        } else {
            runs.remove(&self.uid);
        }
        self.tracker.in_flight.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_claimed_once() {
        let tracker = Tracker::default();
        let guard = tracker.claim("a").expect("first claim");
        assert!(tracker.claim("a").is_none());
        assert_eq!(tracker.state("a"), RunState::InFlight);
        assert_eq!(tracker.in_flight.get(), 1);
        guard.finished();
        assert_eq!(tracker.state("a"), RunState::Finished);
        assert!(
            tracker.claim("a").is_none(),
            "finished runs are not restarted"
        );
        assert_eq!(tracker.in_flight.get(), 0);
    }

    #[test]
    fn activity_is_recorded_at_most_once_per_interval() {
        let tracker = Tracker::default();
        let interval = Duration::from_secs(60);
        assert!(tracker.activity_due("ns/a", interval));
        assert!(!tracker.activity_due("ns/a", interval));
        assert!(tracker.activity_due("ns/b", interval));
        assert!(tracker.activity_due("ns/a", Duration::ZERO));
    }

    #[test]
    fn an_abandoned_run_is_forgotten() {
        let tracker = Tracker::default();
        drop(tracker.claim("a"));
        assert_eq!(tracker.state("a"), RunState::Unknown);
        assert!(tracker.claim("a").is_some());
    }
}
