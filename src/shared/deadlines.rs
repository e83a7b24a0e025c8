//! How long a run may take before its result is given up on. The operator stops waiting for the
//! runner at [`run_deadline`]; the api waits for the Execution's status a little longer, so
//! that it always sees the operator's verdict (a result, or `DeadlineExceeded`) rather than
//! timing out first.

use std::time::Duration;

/// Beyond an execution's own timeout (which the runner enforces, TERM then KILL), how long the
/// operator waits for its result before giving up on the runner or the stream.
pub const RESULT_GRACE: Duration = Duration::from_secs(30);

/// After the operator's deadline, how long the api still waits for the final status to be
/// written and to reach its watch.
pub const STATUS_LAG: Duration = Duration::from_secs(30);

/// When the operator gives up on a run of `timeout_seconds`, counted from its start.
pub fn run_deadline(timeout_seconds: u64) -> Duration {
    Duration::from_secs(timeout_seconds.max(1)) + RESULT_GRACE
}

/// How long the api waits for the result of a run of `timeout_seconds`: always longer than
/// [`run_deadline`].
pub fn result_wait(timeout_seconds: u64) -> Duration {
    run_deadline(timeout_seconds) + STATUS_LAG
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_outwaits_the_operator() {
        for timeout in [0, 1, 30, 300, 3600] {
            assert!(result_wait(timeout) > run_deadline(timeout));
            assert!(run_deadline(timeout) > Duration::from_secs(timeout));
        }
        assert_eq!(result_wait(30), Duration::from_secs(90));
    }
}
