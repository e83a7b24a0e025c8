//! Readiness from the runner (IO): ping the sandbox's runner until it answers.
//!
//! The kubelet reports a started container only at its next relist (up to a second with the
//! generic PLEG), while exec reaches the container as soon as it has started. So a bound Pod
//! is pinged, at a bounded rate, and the first answer makes the Session Ready.
//!
//! With the operator's runner channels (`--exec-transport channel`) a ping opens the sandbox's
//! channel (`kubexec-runner serve` answers with its hello) and leaves it open in the
//! operator's [`ChannelPool`](crate::sandbox::ChannelPool): the first execution finds it warm.
//! Otherwise, or when the sandbox's runner has no channel, the ping is `kubexec-runner
//! version` through exec, which starts the runner binary and touches nothing else.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use tokio::time::{sleep, timeout, Instant};
use tracing::debug;

use crate::layout::SANDBOX_CONTAINER;
use crate::sandbox::{ChannelKey, ChannelPool, Sandbox};

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

/// The key of `pod`'s runner channel. It names the Pod by namespace, name and uid, none of
/// which adoption changes: a channel a SessionPool opened to a warm Pod serves the Session
/// that adopts it.
pub fn channel_key(pod: &Pod) -> ChannelKey {
    ChannelKey {
        namespace: pod.namespace().unwrap_or_default(),
        pod: pod.name_any(),
        pod_uid: pod.uid(),
        container: SANDBOX_CONTAINER,
    }
}

/// Opens (or keeps open) the runner channel of a warm Pod whose container runs, so that the
/// Session adopting it finds its runner answering at once. Failures only mean that the
/// adoption's ping opens the channel itself.
pub async fn open_warm_channel(channels: &ChannelPool, pod: &Pod) {
    let key = channel_key(pod);
    match timeout(PING_DEADLINE, channels.channel(&key)).await {
        Ok(Ok(Some(_))) => debug!(pod = %key.pod, "warm Pod's runner channel open"),
        Ok(Ok(None)) => {
            debug!(pod = %key.pod, "no channel for the warm Pod (pool full or no channel support)")
        }
        Ok(Err(e)) => {
            debug!(pod = %key.pod, error = %e, "could not open the warm Pod's channel yet")
        }
        Err(_) => debug!(pod = %key.pod, "opening the warm Pod's channel timed out"),
    }
}

/// Pings the runner in `pod` until it answers or a [`ROUND`] has passed: through `channels`
/// when the operator has them, else through exec.
pub async fn ping_until_answer(
    client: &kube::Client,
    channels: Option<&ChannelPool>,
    pod: &Pod,
) -> RunnerAnswer {
    let key = channel_key(pod);
    let sandbox =
        Sandbox::new(client.clone(), &key.namespace, &key.pod).in_container(SANDBOX_CONTAINER);
    let started = Instant::now();
    let mut pings = 0u32;
    loop {
        pings += 1;
        let why = match timeout(PING_DEADLINE, ping(&sandbox, channels, &key)).await {
            Ok(Ok(via)) => {
                debug!(pings, via, elapsed = ?started.elapsed(), "the runner answered");
                return RunnerAnswer::Answered;
            }
            Ok(Err(why)) => why,
            Err(_) => format!("no answer within {PING_DEADLINE:?}"),
        };
        let elapsed = started.elapsed();
        if pings == 1 {
            debug!(%why, "the runner did not answer the first ping");
        }
        if elapsed >= ROUND {
            debug!(pings, %why, "the runner stayed silent for a round");
            return RunnerAnswer::Silent { why };
        }
        sleep(gap(elapsed)).await;
    }
}

/// One ping; says how it was answered.
async fn ping(
    sandbox: &Sandbox,
    channels: Option<&ChannelPool>,
    key: &ChannelKey,
) -> Result<&'static str, String> {
    if let Some(pool) = channels {
        // `None`: the pool is full, or this runner has no channel; exec answers then.
        if pool
            .channel(key)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            return Ok("channel");
        }
    }
    let output = sandbox
        .run_helper(&["version"], None, 4096)
        .await
        .map_err(|e| e.to_string())?;
    output.check().map(|_| "exec").map_err(|e| e.to_string())
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
