//! Benchmark (not a test): REST `/execute` of `true` against raw pod exec of `true` on the
//! same Pod, in one run. Prints p50, p99 and their ratio; asserts nothing about timing.
//!
//!   cargo test -p kubexec-e2e --test bench_api -- --nocapture   (or e2e/bench)
//!
//! `test = false` in e2e/Cargo.toml keeps it out of `cargo test` unless named.

use std::time::{Duration, Instant};

use kubexec_e2e::api::fixture_on_tier;
use serde_json::json;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// REST `/execute` of `true` against raw pod exec of `true` on the same Pod, in one run.
/// Prints p50, p99 and their ratio; asserts no timing.
#[tokio::test]
async fn bench_rest_execute_against_raw_exec() {
    let rounds: usize = std::env::var("KUBEXEC_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100);
    // Paid: the free tier's request rate would throttle the loop.
    let f = fixture_on_tier("api-bench", "paid").await;
    f.execute(json!({"command": "true"})).await;
    let session: kubexec::crd::Session =
        f.ns.api::<kubexec::crd::Session>()
            .get(&f.session)
            .await
            .expect("session");
    let pod = session.status.and_then(|s| s.pod_name).expect("pod");
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = f.ns.api();
    let params = kube::api::AttachParams::default()
        .container("sandbox")
        .stdin(false)
        .stdout(true)
        .stderr(true);

    let mut rest = Vec::with_capacity(rounds);
    let mut raw = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        // Interleaved, so both see the same cluster load.
        let start = Instant::now();
        let reply = f
            .http
            .post(
                "/execute",
                Some(&f.key),
                &json!({"sessionId": f.session, "command": "true"}),
            )
            .await;
        rest.push(start.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.text());

        let start = Instant::now();
        let mut attached = pods.exec(&pod, ["true"], &params).await.expect("exec");
        let status = attached.take_status().expect("status").await;
        raw.push(start.elapsed());
        assert_eq!(status.and_then(|s| s.status).as_deref(), Some("Success"));
    }
    rest.sort();
    raw.sort();
    let (rest50, rest99) = (percentile(&rest, 0.5), percentile(&rest, 0.99));
    let (raw50, raw99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
    println!("REST /execute of `true` ({rounds} runs): p50 {rest50:?}, p99 {rest99:?}");
    println!("raw pod exec of `true` ({rounds} runs):  p50 {raw50:?}, p99 {raw99:?}");
    println!(
        "ratio REST/raw: p50 {:.2}, p99 {:.2}",
        rest50.as_secs_f64() / raw50.as_secs_f64(),
        rest99.as_secs_f64() / raw99.as_secs_f64()
    );
    let _ = &f.api;
}
