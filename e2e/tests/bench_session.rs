//! Benchmark (not a test): Session create → Ready on the local cluster with the images present,
//! p50/p99 over 10 sequential runs. Prints numbers; asserts nothing about timing.
//!
//!   cargo test -p kubexec-e2e --test bench_session -- --nocapture   (or e2e/bench)
//!
//! `test = false` in e2e/Cargo.toml keeps it out of `cargo test` unless named.

use std::time::{Duration, Instant};

use kube::api::{DeleteParams, PostParams};
use kubexec::crd::{Session, SessionPhase};
use kubexec_e2e::{wait_for, TestNs};
use serde_json::json;

#[tokio::test]
async fn session_create_to_ready() {
    let ns = TestNs::new("bench-ses").await;
    let sessions = ns.api::<Session>();
    let mut samples = Vec::new();
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
        // The first round warms the runner image's layers and the operator's caches.
        if round > 0 {
            samples.push(took);
        }
        sessions
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "session create -> Ready over {} runs: p50 {:?}, p99 {:?}, min {:?}, max {:?}",
        samples.len(),
        pick(0.5),
        pick(0.99),
        samples[0],
        samples[samples.len() - 1]
    );
}
