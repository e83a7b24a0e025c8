//! Admission (pure): which queued runs may start, within the replica's and the Session's
//! bounds. [`super::tracker::Tracker`] keeps the queue and the counts, and asks this.

use std::{collections::HashMap, hash::Hash};

/// How many runs may be in flight at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunLimits {
    /// In this replica.
    pub per_replica: usize,
    /// In one Session.
    pub per_session: usize,
}

/// Which of the queued runs may start now, as indices into `queue`. `queue` lists the Session
/// of each waiting run in arrival order; `in_flight(session)` counts the runs of a Session in
/// flight, `total` all of them. First come, first served: a run starts only if every earlier
/// run that fits starts too; a run whose Session is full does not hold back runs of other
/// Sessions; once the replica is full, nothing else starts.
pub fn admissible<S: Eq + Hash>(
    queue: &[S],
    in_flight: impl Fn(&S) -> usize,
    total: usize,
    limits: RunLimits,
) -> Vec<usize> {
    let mut started: HashMap<&S, usize> = HashMap::new();
    let mut total = total;
    let mut admitted = Vec::new();
    for (index, session) in queue.iter().enumerate() {
        if total >= limits.per_replica {
            break;
        }
        let taken = started.entry(session).or_insert_with(|| in_flight(session));
        if *taken < limits.per_session {
            *taken += 1;
            total += 1;
            admitted.push(index);
        }
    }
    admitted
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RunLimits = RunLimits {
        per_replica: 4,
        per_session: 2,
    };

    #[test]
    fn queued_runs_start_in_order_within_both_limits() {
        let none = |_: &&str| 0;
        // Room for everything: all start, in order.
        assert_eq!(admissible(&["a", "b"], none, 0, LIMITS), vec![0, 1]);
        // A full Session does not hold back the runs of others.
        assert_eq!(
            admissible(&["a", "a", "a", "b"], none, 0, LIMITS),
            vec![0, 1, 3]
        );
        // The replica's bound counts what is in flight already.
        assert_eq!(admissible(&["a", "b", "c"], none, 3, LIMITS), vec![0]);
        assert!(admissible(&["a"], none, 4, LIMITS).is_empty());
        // Runs in flight in a Session count against it.
        let busy_a = |s: &&str| usize::from(*s == "a") * 2;
        assert_eq!(admissible(&["a", "b", "a"], busy_a, 2, LIMITS), vec![1]);
        // Nothing queued, nothing to start.
        assert!(admissible::<&str>(&[], none, 0, LIMITS).is_empty());
    }

    #[test]
    fn a_later_run_never_overtakes_an_earlier_one_of_the_same_session() {
        let one_in_flight = |_: &&str| 1;
        // Session a has one slot left: the first queued run of a takes it.
        assert_eq!(admissible(&["a", "a"], one_in_flight, 1, LIMITS), vec![0]);
    }
}
