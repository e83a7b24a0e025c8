//! In-memory record of the runs this process has started, so that a re-reconcile never starts
//! a second exec for the same Execution, and a stale cache entry (our own final status not yet
//! seen by the watch) is not taken for an orphaned run.
//!
//! It is also the replica's admission queue: at most [`RunLimits::per_replica`] runs are in
//! flight, and at most [`RunLimits::per_session`] of one Session. A run over either bound waits
//! in a first-come, first-served queue ([`super::admission::admissible`] picks who starts); its
//! reconcile returns a requeue, not an error, and a run that ends wakes the next ones through
//! [`Tracker::take_wakeups`]. Overload then raises latency, while the exec streams, tasks and
//! memory of the replica stay bounded.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use kube::runtime::reflector::ObjectRef;
use prometheus_client::metrics::{gauge::Gauge, histogram::Histogram};
use tokio::sync::mpsc;

use crate::crd::Execution;

use super::admission::{admissible, RunLimits};

/// How long a finished run is remembered: long enough for the watch to deliver the final status.
const REMEMBER_FINISHED: Duration = Duration::from_secs(300);
/// A queued run whose reconcile has not come back for this long is dropped from the queue (it
/// was deleted, or its reconcile found nothing to run); if it still waits, it queues again.
const FORGET_WAITER: Duration = Duration::from_secs(30);

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

/// Whether a run may start now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// There is room for it.
    Now,
    /// It waits in the queue; it is woken when room frees.
    Queued,
}

/// The answer to [`Tracker::claim`].
pub enum Claim {
    /// Claimed: the run may start; the guard releases its slot.
    Granted(RunGuard),
    /// A run of it is in flight here or just finished here.
    Busy,
    /// No room: it waits in the queue.
    Queued,
}

/// The metrics the tracker keeps current.
#[derive(Clone, Debug)]
pub struct TrackerMetrics {
    /// Runs in flight.
    pub in_flight: Gauge,
    /// Runs waiting.
    pub queued: Gauge,
    /// How long runs that had to wait waited.
    pub queue_wait: Histogram,
}

impl Default for TrackerMetrics {
    fn default() -> Self {
        Self {
            in_flight: Gauge::default(),
            queued: Gauge::default(),
            queue_wait: Histogram::new([0.1, 1.0, 10.0]),
        }
    }
}

#[derive(Clone, Debug)]
enum Entry {
    InFlight(String),
    Finished(Instant),
}

/// A run waiting for a slot.
struct Waiter {
    uid: String,
    session: String,
    reference: ObjectRef<Execution>,
    queued_at: Instant,
    seen_at: Instant,
    /// It was told to wait at least once.
    waited: bool,
}

#[derive(Default)]
struct State {
    runs: HashMap<String, Entry>,
    /// Runs in flight per Session (`namespace/name`).
    per_session: HashMap<String, usize>,
    in_flight: usize,
    queue: VecDeque<Waiter>,
}

impl State {
    /// Indices of the queued runs that may start now (stale waiters dropped first).
    fn admissible(&mut self, limits: RunLimits, now: Instant) -> Vec<usize> {
        self.queue
            .retain(|w| now.duration_since(w.seen_at) < FORGET_WAITER);
        let sessions: Vec<&str> = self.queue.iter().map(|w| w.session.as_str()).collect();
        admissible(
            &sessions,
            |session| self.per_session.get(*session).copied().unwrap_or(0),
            self.in_flight,
            limits,
        )
    }

    /// Puts `uid` in the queue (at the end) unless it is there; notes that it came back.
    fn enqueue(
        &mut self,
        uid: &str,
        session: &str,
        reference: &ObjectRef<Execution>,
        now: Instant,
    ) -> usize {
        if let Some(index) = self.queue.iter().position(|w| w.uid == uid) {
            self.queue[index].seen_at = now;
            return index;
        }
        self.queue.push_back(Waiter {
            uid: uid.to_string(),
            session: session.to_string(),
            reference: reference.clone(),
            queued_at: now,
            seen_at: now,
            waited: false,
        });
        self.queue.len() - 1
    }
}

/// Runs by Execution UID, the queue of runs waiting for a slot, and when activity was last
/// recorded per Session. Cheap to clone.
#[derive(Clone)]
pub struct Tracker {
    state: Arc<Mutex<State>>,
    activity: Arc<Mutex<HashMap<String, Instant>>>,
    limits: RunLimits,
    metrics: TrackerMetrics,
    wake: mpsc::UnboundedSender<ObjectRef<Execution>>,
    wakeups: Arc<Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<Execution>>>>>,
}

impl Default for Tracker {
    fn default() -> Self {
        let settings = crate::operator::config::ExecutionSettings::default();
        Self::new(
            TrackerMetrics::default(),
            RunLimits {
                per_replica: settings.max_runs,
                per_session: settings.max_runs_per_session,
            },
        )
    }
}

impl Tracker {
    /// A tracker that admits runs within `limits` and keeps `metrics` current.
    pub fn new(metrics: TrackerMetrics, limits: RunLimits) -> Self {
        let (wake, wakeups) = mpsc::unbounded_channel();
        Self {
            state: Arc::default(),
            activity: Arc::default(),
            limits,
            metrics,
            wake,
            wakeups: Arc::new(Mutex::new(Some(wakeups))),
        }
    }

    /// The Executions to reconcile because a slot freed for them (once; the controller takes
    /// it).
    pub fn take_wakeups(&self) -> Option<mpsc::UnboundedReceiver<ObjectRef<Execution>>> {
        self.wakeups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
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

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is known about `uid`.
    pub fn state(&self, uid: &str) -> RunState {
        match self.lock().runs.get(uid) {
            None => RunState::Unknown,
            Some(Entry::InFlight(_)) => RunState::InFlight,
            Some(Entry::Finished(at)) if at.elapsed() < REMEMBER_FINISHED => RunState::Finished,
            Some(Entry::Finished(_)) => RunState::Unknown,
        }
    }

    /// Whether the run of `uid` (in `session`, `namespace/name`) could start now. When it
    /// could not, it is queued. Nothing is claimed: [`Tracker::claim`] decides again.
    pub fn admit(&self, uid: &str, session: &str, reference: &ObjectRef<Execution>) -> Admission {
        let now = Instant::now();
        let mut state = self.lock();
        let index = state.enqueue(uid, session, reference, now);
        let admission = if state.admissible(self.limits, now).contains(&index) {
            Admission::Now
        } else {
            if let Some(waiter) = state.queue.iter_mut().find(|w| w.uid == uid) {
                waiter.waited = true;
            }
            Admission::Queued
        };
        self.metrics.queued.set(state.queue.len() as i64);
        admission
    }

    /// Claims `uid` for a run when there is room; otherwise queues it.
    pub fn claim(&self, uid: &str, session: &str, reference: &ObjectRef<Execution>) -> Claim {
        let now = Instant::now();
        let mut state = self.lock();
        state.runs.retain(|_, entry| match entry {
            Entry::Finished(at) => at.elapsed() < REMEMBER_FINISHED,
            Entry::InFlight(_) => true,
        });
        if state.runs.contains_key(uid) {
            state.queue.retain(|w| w.uid != uid);
            return Claim::Busy;
        }
        let index = state.enqueue(uid, session, reference, now);
        // Recomputed after `enqueue`, which may have dropped stale waiters ahead of it.
        let index = state
            .queue
            .iter()
            .position(|w| w.uid == uid)
            .unwrap_or(index);
        if !state.admissible(self.limits, now).contains(&index) {
            if let Some(waiter) = state.queue.get_mut(index) {
                waiter.waited = true;
            }
            self.metrics.queued.set(state.queue.len() as i64);
            return Claim::Queued;
        }
        if let Some(waiter) = state.queue.remove(index) {
            if waiter.waited {
                self.metrics
                    .queue_wait
                    .observe(now.duration_since(waiter.queued_at).as_secs_f64());
            }
        }
        state
            .runs
            .insert(uid.to_string(), Entry::InFlight(session.to_string()));
        *state.per_session.entry(session.to_string()).or_insert(0) += 1;
        state.in_flight += 1;
        self.metrics.in_flight.set(state.in_flight as i64);
        self.metrics.queued.set(state.queue.len() as i64);
        Claim::Granted(RunGuard {
            tracker: self.clone(),
            uid: uid.to_string(),
            finished: false,
        })
    }

    /// Takes `uid` out of the queue: its reconcile found nothing to run (or it is gone).
    pub fn leave_queue(&self, uid: &str) {
        let mut state = self.lock();
        let before = state.queue.len();
        state.queue.retain(|w| w.uid != uid);
        if state.queue.len() != before {
            self.metrics.queued.set(state.queue.len() as i64);
            self.wake_admissible(&mut state);
        }
    }

    /// Wakes the queued runs that may start now.
    fn wake_admissible(&self, state: &mut State) {
        for index in state.admissible(self.limits, Instant::now()) {
            if let Some(waiter) = state.queue.get(index) {
                // The controller may be gone (shutdown); nothing to wake then.
                let _ = self.wake.send(waiter.reference.clone());
            }
        }
        self.metrics.queued.set(state.queue.len() as i64);
    }

    /// Number of runs in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// Number of runs waiting.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    fn release(&self, uid: &str, finished: bool) {
        let mut state = self.lock();
        let entry = if finished {
            state
                .runs
                .insert(uid.to_string(), Entry::Finished(Instant::now()))
        } else {
            state.runs.remove(uid)
        };
        if let Some(Entry::InFlight(session)) = entry {
            if let Some(count) = state.per_session.get_mut(&session) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    state.per_session.remove(&session);
                }
            }
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        self.metrics.in_flight.set(state.in_flight as i64);
        self.wake_admissible(&mut state);
    }
}

/// A claimed run. [`finished`](RunGuard::finished) records that its final status was written;
/// dropping it otherwise forgets the run, so a later reconcile recovers it. Either way its
/// slot frees, and the next queued runs are woken.
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
        self.tracker.release(&self.uid, self.finished);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str) -> ObjectRef<Execution> {
        ObjectRef::new(name).within("ns")
    }

    fn claim(tracker: &Tracker, uid: &str, session: &str) -> Claim {
        tracker.claim(uid, session, &reference(uid))
    }

    fn granted(claim: Claim) -> RunGuard {
        match claim {
            Claim::Granted(guard) => guard,
            Claim::Busy => panic!("busy"),
            Claim::Queued => panic!("queued"),
        }
    }

    fn limited(per_replica: usize, per_session: usize) -> Tracker {
        Tracker::new(
            TrackerMetrics::default(),
            RunLimits {
                per_replica,
                per_session,
            },
        )
    }

    #[test]
    fn a_run_is_claimed_once() {
        let tracker = Tracker::default();
        let guard = granted(claim(&tracker, "a", "ns/s"));
        assert!(matches!(claim(&tracker, "a", "ns/s"), Claim::Busy));
        assert_eq!(tracker.state("a"), RunState::InFlight);
        assert_eq!(tracker.metrics.in_flight.get(), 1);
        guard.finished();
        assert_eq!(tracker.state("a"), RunState::Finished);
        assert!(
            matches!(claim(&tracker, "a", "ns/s"), Claim::Busy),
            "finished runs are not restarted"
        );
        assert_eq!(tracker.metrics.in_flight.get(), 0);
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
        drop(claim(&tracker, "a", "ns/s"));
        assert_eq!(tracker.state("a"), RunState::Unknown);
        assert!(matches!(claim(&tracker, "a", "ns/s"), Claim::Granted(_)));
    }

    #[test]
    fn runs_over_the_session_bound_wait_and_are_woken_in_order() {
        let tracker = limited(10, 1);
        let mut wakeups = tracker.take_wakeups().expect("wakeups");
        let first = granted(claim(&tracker, "a", "ns/s"));
        assert!(matches!(claim(&tracker, "b", "ns/s"), Claim::Queued));
        assert_eq!(
            tracker.admit("c", "ns/s", &reference("c")),
            Admission::Queued
        );
        // Another Session is not held back.
        let other = granted(claim(&tracker, "d", "ns/t"));
        assert_eq!((tracker.in_flight(), tracker.queued()), (2, 2));
        assert_eq!(tracker.metrics.queued.get(), 2);

        // The slot frees: the first waiter is woken, and only it may take the slot.
        first.finished();
        assert_eq!(wakeups.try_recv().ok(), Some(reference("b")));
        assert!(wakeups.try_recv().is_err());
        assert!(matches!(claim(&tracker, "c", "ns/s"), Claim::Queued));
        assert_eq!(tracker.admit("b", "ns/s", &reference("b")), Admission::Now);
        let second = granted(claim(&tracker, "b", "ns/s"));
        assert_eq!(tracker.queued(), 1);
        drop((second, other));
        assert_eq!(wakeups.try_recv().ok(), Some(reference("c")));
    }

    #[test]
    fn the_replica_bound_holds_across_sessions() {
        let tracker = limited(2, 10);
        let _a = granted(claim(&tracker, "a", "ns/1"));
        let b = granted(claim(&tracker, "b", "ns/2"));
        assert!(matches!(claim(&tracker, "c", "ns/3"), Claim::Queued));
        assert_eq!(tracker.metrics.in_flight.get(), 2);
        drop(b);
        assert!(matches!(claim(&tracker, "c", "ns/3"), Claim::Granted(_)));
    }

    #[test]
    fn a_waiter_that_leaves_lets_the_next_one_start() {
        let tracker = limited(1, 1);
        let mut wakeups = tracker.take_wakeups().expect("wakeups");
        let _a = granted(claim(&tracker, "a", "ns/s"));
        assert!(matches!(claim(&tracker, "b", "ns/t"), Claim::Queued));
        assert!(matches!(claim(&tracker, "c", "ns/t"), Claim::Queued));
        tracker.leave_queue("b");
        assert_eq!(tracker.queued(), 1);
        // Still no room: nothing is woken.
        assert!(wakeups.try_recv().is_err());
    }
}
