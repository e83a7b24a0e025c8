//! Benchmark (not a test): Session create → Ready on the local cluster with the images present,
//! p50/p99 over 10 sequential runs. Prints numbers; asserts nothing about timing.
//!
//!   cargo test -p kubexec-e2e --test bench_session -- --nocapture   (or e2e/bench)
//!
//! Beside the total it prints where the time goes, from one Pod watch started before the
//! runs: create → Pod bound to a node (the scheduler), → the kubelet reports the sandbox
//! container running, and create → Session Ready. Readiness comes from a runner ping, so Ready
//! may come before the kubelet's report.
//!
//! `test = false` in e2e/Cargo.toml keeps it out of `cargo test` unless named.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use kubexec::crd::{Session, SessionPhase};
use kubexec_e2e::{wait_for, TestNs};
use serde_json::json;

/// When the Pod watch first saw each Pod bound, and its sandbox container running.
#[derive(Clone, Default)]
struct PodTimes {
    bound: Arc<Mutex<HashMap<String, Instant>>>,
    running: Arc<Mutex<HashMap<String, Instant>>>,
}

impl PodTimes {
    fn watch(&self, pods: Api<Pod>) {
        let times = self.clone();
        tokio::spawn(async move {
            let mut stream = watcher(pods, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Ok(Some(pod)) = stream.try_next().await {
                let now = Instant::now();
                let name = pod.name_any();
                if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
                    let mut bound = times.bound.lock().expect("lock");
                    bound.entry(name.clone()).or_insert(now);
                }
                let running = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
                    });
                if running {
                    let mut seen = times.running.lock().expect("lock");
                    seen.entry(name).or_insert(now);
                }
            }
        });
    }

    fn since(&self, started: Instant, pod: &str) -> (Option<Duration>, Option<Duration>) {
        let at = |map: &Mutex<HashMap<String, Instant>>| {
            map.lock()
                .expect("lock")
                .get(pod)
                .map(|t| t.saturating_duration_since(started))
        };
        (at(&self.bound), at(&self.running))
    }
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "p50 {:?}, p99 {:?}, min {:?}, max {:?}",
        pick(0.5),
        pick(0.99),
        samples[0],
        samples[samples.len() - 1]
    )
}

#[tokio::test]
async fn session_create_to_ready() {
    let ns = TestNs::new("bench-ses").await;
    let sessions = ns.api::<Session>();
    let times = PodTimes::default();
    times.watch(ns.api::<Pod>());
    let (mut ready, mut bound, mut running) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..11 {
        let name = format!("bench-{round}");
        let session: Session = serde_json::from_value(json!({
            "apiVersion": "kubexec.dev/v1alpha1", "kind": "Session",
            "metadata": {"name": name}, "spec": {}
        }))
        .expect("session literal");
        let started = Instant::now();
        sessions
            .create(&PostParams::default(), &session)
            .await
            .expect("create");
        wait_for(
            &sessions,
            &name,
            Duration::from_secs(60),
            "Ready",
            |s: &Session| {
                s.status.as_ref().and_then(|st| st.phase.clone()) == Some(SessionPhase::Ready)
            },
        )
        .await;
        let took = started.elapsed();
        // Let the Pod watch catch up with the kubelet's report before reading it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (to_bound, to_running) = times.since(started, &format!("{name}-sandbox"));
        println!(
            "round {round}: Ready {took:?}, Pod bound {to_bound:?}, container running per kubelet {to_running:?}"
        );
        // The first round warms the runner image's layers and the operator's caches.
        if round > 0 {
            ready.push(took);
            bound.extend(to_bound);
            running.extend(to_running);
        }
        sessions
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    println!(
        "session create -> Ready over {} runs: {}",
        ready.len(),
        percentiles(ready)
    );
    println!("session create -> Pod bound: {}", percentiles(bound));
    println!(
        "session create -> sandbox container running (kubelet report): {}",
        percentiles(running)
    );
}
