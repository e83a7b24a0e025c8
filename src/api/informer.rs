//! One long-lived watch of the Executions kubexec manages, shared by every request that waits
//! for one. A watch per request would pay a LIST, a WATCH and (since a cancelled watch closes
//! its connection) a new TLS handshake every time; this way waiting costs nothing extra.
//!
//! A request subscribes *before* it creates its Execution, so every version of it reaches the
//! request and nothing it created is read back: the final version carries the whole status
//! (output included). Versions are slimmed ([`slim_for_waiters`]: no code, no inline files, no
//! field managers), and only versions somebody waits for are kept, one per waiter: the memory
//! follows the requests in flight (bounded by the tenants' quotas), not the Executions.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures::StreamExt;
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client, ResourceExt,
};
use tokio::sync::watch;

use crate::{
    crd::{labels, Execution},
    shared::cache::slim_execution,
};

/// What a waiter needs of an Execution: its metadata and its whole status (the response is
/// made from it). The spec's payload (code, command, inline files, stdin) and the field
/// managers go.
pub fn slim_for_waiters(execution: &mut Execution) {
    let status = execution.status.take();
    slim_execution(execution);
    execution.status = status;
    let spec = &mut execution.spec;
    spec.code = None;
    spec.command = None;
    spec.files = Vec::new();
    spec.stdin = None;
}

type Key = (String, String);

/// Executions being waited for, by namespace and name.
#[derive(Default)]
pub struct ExecutionWaiters {
    senders: Mutex<HashMap<Key, watch::Sender<Option<Arc<Execution>>>>>,
    synced: AtomicBool,
}

/// A subscription to one Execution; unsubscribes when dropped.
pub struct Subscription {
    waiters: Arc<ExecutionWaiters>,
    key: Key,
    receiver: Option<watch::Receiver<Option<Arc<Execution>>>>,
}

impl Subscription {
    /// Waits until the watch delivers a version for which `done` holds.
    pub async fn until(&mut self, done: impl Fn(&Execution) -> bool) -> Option<Arc<Execution>> {
        let receiver = self.receiver.as_mut()?;
        let seen = receiver
            .wait_for(|latest| latest.as_deref().is_some_and(&done))
            .await
            .ok()?;
        seen.clone()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut senders = self
            .waiters
            .senders
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if senders
            .get(&self.key)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            senders.remove(&self.key);
        }
    }
}

impl ExecutionWaiters {
    /// Subscribes to an Execution's versions from now on (before it is created, so that none is
    /// missed).
    pub fn subscribe(self: &Arc<Self>, namespace: &str, name: &str) -> Subscription {
        let key = (namespace.to_string(), name.to_string());
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = senders
            .entry(key.clone())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        Subscription {
            waiters: self.clone(),
            key,
            receiver: Some(receiver),
        }
    }

    /// True while the shared watch is established (else callers watch on their own).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Hands a new version to its waiters, if any.
    pub fn publish(&self, execution: Execution) {
        let key = (
            execution.namespace().unwrap_or_default(),
            execution.name_any(),
        );
        let senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = senders.get(&key) {
            sender.send_replace(Some(Arc::new(execution)));
        }
    }

    /// Feeds the waiters from a watch of every kubexec-managed Execution, forever.
    pub async fn run(self: Arc<Self>, client: Client) {
        let executions: Api<Execution> = Api::all(client);
        let config = watcher::Config::default()
            .labels(labels::MANAGED_SELECTOR)
            .timeout(290);
        let mut events = watcher(executions, config)
            .default_backoff()
            .modify(slim_for_waiters)
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(execution) | watcher::Event::InitApply(execution)) => {
                    self.publish(execution)
                }
                Ok(watcher::Event::InitDone) => self.synced.store(true, Ordering::Relaxed),
                Ok(_) => {}
                Err(e) => {
                    self.synced.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, "watching executions");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ExecutionPhase, ExecutionSpec, ExecutionStatus};

    fn execution(phase: ExecutionPhase) -> Execution {
        let mut e = Execution::new("exe-1", ExecutionSpec::default());
        e.metadata.namespace = Some("ns".into());
        e.status = Some(ExecutionStatus {
            phase: Some(phase),
            ..Default::default()
        });
        e
    }

    #[test]
    fn waiters_get_the_whole_status_without_the_payload() {
        let mut e = execution(ExecutionPhase::Succeeded);
        e.spec.code = Some("x".repeat(200_000));
        e.metadata.managed_fields = Some(vec![Default::default(); 10]);
        if let Some(status) = e.status.as_mut() {
            status.stdout = Some("y".repeat(1000));
            status.files_written = vec!["a.txt".into()];
        }
        slim_for_waiters(&mut e);
        assert!(e.spec.code.is_none() && e.metadata.managed_fields.is_none());
        let status = e.status.expect("status");
        assert_eq!(status.phase, Some(ExecutionPhase::Succeeded));
        assert_eq!(status.stdout.map(|s| s.len()), Some(1000));
        assert_eq!(status.files_written, vec!["a.txt".to_string()]);
    }

    #[tokio::test]
    async fn a_subscription_taken_before_the_create_sees_the_first_version() {
        let waiters = Arc::new(ExecutionWaiters::default());
        let mut subscription = waiters.subscribe("ns", "exe-1");
        // The watch delivers the create, then the final status, before the waiter looks.
        waiters.publish(execution(ExecutionPhase::Pending));
        waiters.publish(execution(ExecutionPhase::Succeeded));
        let done = subscription
            .until(|e| e.status.as_ref().and_then(|s| s.phase) == Some(ExecutionPhase::Succeeded))
            .await;
        assert!(done.is_some());
    }

    #[tokio::test]
    async fn waiters_see_versions_until_done_and_then_unsubscribe() {
        let waiters = Arc::new(ExecutionWaiters::default());
        let mut subscription = waiters.subscribe("ns", "exe-1");
        let publisher = waiters.clone();
        tokio::spawn(async move {
            publisher.publish(execution(ExecutionPhase::Running));
            tokio::time::sleep(Duration::from_millis(10)).await;
            publisher.publish(execution(ExecutionPhase::Succeeded));
        });
        let done = subscription
            .until(|e| e.status.as_ref().and_then(|s| s.phase) == Some(ExecutionPhase::Succeeded))
            .await;
        assert!(done.is_some());
        drop(subscription);
        assert!(waiters.senders.lock().expect("lock").is_empty());
    }
}
