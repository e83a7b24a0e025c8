//! State shared by every reconcile of every controller.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use kube::{
    runtime::events::{Recorder, Reporter},
    Client,
};

use crate::sandbox::ChannelPool;

use super::{
    config::{ExecutionSettings, SandboxConfig},
    execution::{
        admission::RunLimits, observe::Caches, pending::PendingBySession, tracker::TrackerMetrics,
        Tracker,
    },
    metrics::Metrics,
    netpol::build::PolicySet,
};

/// Name under which the operator reports Events and writes with server-side apply.
pub const REPORTER: &str = "kubexec-operator";

/// Shared by reconciles, behind an `Arc`. The Execution controller gets the same Context.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes Kubernetes Events.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: std::sync::Arc<Metrics>,
    /// Sandbox defaults.
    pub config: SandboxConfig,
    /// The NetworkPolicies of every namespace that holds Sessions; `None` when they are off.
    pub network_policies: Option<PolicySet>,
    /// Execution runs started by this process, and those waiting for a slot (see [`Tracker`]).
    pub runs: Tracker,
    /// How executions are run (queue bounds, Events).
    pub executions: ExecutionSettings,
    /// The controllers' caches of Sessions and sandbox Pods, read before a run starts.
    pub caches: Caches,
    /// The runner channels runs go over; `None` with `--exec-transport exec` (one exec per run).
    pub channels: Option<ChannelPool>,
    /// Unfinished Executions by Session, kept by the Execution controller's watch and read by
    /// the Session controller (no Session sleeps, expires or loses its Pod under a run).
    pub executions_by_session: std::sync::Arc<PendingBySession>,
    /// Consecutive failures per object, for error backoff.
    backoff: Backoff,
}

impl Context {
    /// Creates a Context. `instance` names this replica in the Events it reports (in a
    /// cluster, the Pod name from `KUBEXEC_POD_NAME`; see [`reporter`]).
    pub fn new(
        client: Client,
        metrics: std::sync::Arc<Metrics>,
        config: SandboxConfig,
        instance: Option<String>,
    ) -> Self {
        let executions = ExecutionSettings::default();
        Self {
            recorder: Recorder::new(client.clone(), reporter(instance)),
            client,
            runs: tracker(&metrics, executions),
            executions,
            caches: Caches::default(),
            metrics,
            config,
            network_policies: None,
            channels: None,
            executions_by_session: std::sync::Arc::default(),
            backoff: Backoff::default(),
        }
    }

    /// Sets the NetworkPolicies the operator keeps (`None`: it keeps none).
    pub fn with_network_policies(mut self, policies: Option<PolicySet>) -> Self {
        self.network_policies = policies;
        self
    }

    /// Sets how executions are run (queue bounds, Events).
    pub fn with_execution_settings(mut self, settings: ExecutionSettings) -> Self {
        self.runs = tracker(&self.metrics, settings);
        self.executions = settings;
        self
    }

    /// Sets the caches the Execution controller reads Sessions and Pods from.
    pub fn with_caches(mut self, caches: Caches) -> Self {
        self.caches = caches;
        self
    }

    /// Sends runs over `channels` (`None`: one exec per run).
    pub fn with_channels(mut self, channels: Option<ChannelPool>) -> Self {
        self.channels = channels;
        self
    }

    /// Records one more failure of `key` and returns how long to wait before retrying.
    pub fn next_backoff(&self, key: &str) -> Duration {
        self.backoff.fail(key)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn reset_backoff(&self, key: &str) {
        self.backoff.reset(key);
    }
}

fn tracker(metrics: &Metrics, settings: ExecutionSettings) -> Tracker {
    Tracker::new(
        TrackerMetrics {
            in_flight: metrics.executions_in_flight.clone(),
            queued: metrics.execution_queue_depth.clone(),
            queue_wait: metrics.execution_queue_wait.clone(),
        },
        RunLimits {
            per_replica: settings.max_runs,
            per_session: settings.max_runs_per_session,
        },
    )
}

/// Who reports the operator's Events: the controller name, and the replica when known.
pub fn reporter(instance: Option<String>) -> Reporter {
    Reporter {
        controller: REPORTER.into(),
        instance,
    }
}

/// Exponential backoff per object: 1 s, 2 s, 4 s, ... capped at 5 minutes.
#[derive(Default)]
struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    const CAP: Duration = Duration::from_secs(300);

    fn fail(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let exp = (*n - 1).min(16);
        Duration::from_secs(1u64 << exp).min(Self::CAP)
    }

    fn reset(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_resets() {
        let b = Backoff::default();
        assert_eq!(b.fail("a"), Duration::from_secs(1));
        assert_eq!(b.fail("a"), Duration::from_secs(2));
        assert_eq!(b.fail("a"), Duration::from_secs(4));
        for _ in 0..20 {
            b.fail("a");
        }
        assert_eq!(b.fail("a"), Backoff::CAP);
        b.reset("a");
        assert_eq!(b.fail("a"), Duration::from_secs(1));
    }
}
