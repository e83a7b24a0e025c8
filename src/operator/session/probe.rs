//! Readiness from the runner (IO): ping the sandbox's runner through exec until it answers.
//!
//! The kubelet reports a started container only at its next relist (up to a second with the
//! generic PLEG), while exec reaches the container as soon as it has started. So a bound Pod
//! is pinged right away, at a bounded rate, and the first answer makes the Session Ready.
//! The ping is `kubexec-runner version`: it starts the runner binary in the sandbox container
//! and touches nothing else.

use std::time::Duration;

use tokio::time::{sleep, timeout, Instant};

use crate::sandbox::Sandbox;

use super::pod_state::RunnerAnswer;

/// How long one round of pings lasts; a runner silent for that long is reported and pinged
/// again on the next reconcile ([`super::decide::SILENT_RUNNER_RETRY`]).
pub const ROUND: Duration = Duration::from_secs(5);
/// The gap between pings while a container usually starts (the first [`FAST_FOR`]): at most
/// 20 execs a second for one sandbox.
pub const FAST_GAP: Duration = Duration::from_millis(50);
/// How long pings come [`FAST_GAP`] apart.
pub const FAST_FOR: Duration = Duration::from_secs(2);
/// The gap after that: at most 4 execs a second.
pub const SLOW_GAP: Duration = Duration::from_millis(250);
/// One ping may take this long.
pub const PING_DEADLINE: Duration = Duration::from_secs(2);

/// The gap before the next ping, `elapsed` into a round.
pub fn gap(elapsed: Duration) -> Duration {
    if elapsed < FAST_FOR {
        FAST_GAP
    } else {
        SLOW_GAP
    }
}

/// Pings the runner in `pod` until it answers or a [`ROUND`] has passed.
pub async fn ping_until_answer(client: &kube::Client, namespace: &str, pod: &str) -> RunnerAnswer {
    let sandbox = Sandbox::new(client.clone(), namespace, pod);
    let started = Instant::now();
    loop {
        let why = match timeout(PING_DEADLINE, ping(&sandbox)).await {
            Ok(Ok(())) => return RunnerAnswer::Answered,
            Ok(Err(why)) => why,
            Err(_) => format!("no answer within {PING_DEADLINE:?}"),
        };
        let elapsed = started.elapsed();
        if elapsed >= ROUND {
            return RunnerAnswer::Silent { why };
        }
        sleep(gap(elapsed)).await;
    }
}

async fn ping(sandbox: &Sandbox) -> Result<(), String> {
    let output = sandbox
        .run_helper(&["version"], None, 4096)
        .await
        .map_err(|e| e.to_string())?;
    output.check().map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_are_fast_first_then_slow_and_bounded() {
        assert_eq!(gap(Duration::ZERO), FAST_GAP);
        assert_eq!(gap(FAST_FOR), SLOW_GAP);
        assert!(FAST_GAP >= Duration::from_millis(50), "at most 20 a second");
        assert!(PING_DEADLINE < ROUND);
    }
}
