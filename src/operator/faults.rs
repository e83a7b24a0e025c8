//! Fault points: let the end-to-end suite stop the production binary at a chosen step, so that
//! recovery from that exact window is tested without a test-only build. Each is an environment
//! variable that the chart never sets; unset (as in every deployment), nothing changes.

use std::sync::LazyLock;

use tracing::error;

/// `1`: the process exits right after it records an Execution as Running, before the exec
/// starts. The next operator then finds a Running run that the runner never claimed.
pub const EXIT_AFTER_RUNNING_ENV: &str = "KUBEXEC_FAULT_EXIT_AFTER_RUNNING";

/// The exit status of a process stopped by a fault point.
pub const FAULT_EXIT_STATUS: i32 = 86;

static EXIT_AFTER_RUNNING: LazyLock<bool> =
    LazyLock::new(|| std::env::var(EXIT_AFTER_RUNNING_ENV).is_ok_and(|v| v == "1"));

/// Exits the process when [`EXIT_AFTER_RUNNING_ENV`] is set; called just after Running is
/// recorded.
pub fn after_running_recorded(execution: &str) {
    if *EXIT_AFTER_RUNNING {
        error!(
            execution,
            "fault point {EXIT_AFTER_RUNNING_ENV}: exiting after recording Running"
        );
        std::process::exit(FAULT_EXIT_STATUS);
    }
}
