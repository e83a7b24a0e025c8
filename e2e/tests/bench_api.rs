//! Benchmark (not a test): REST `/execute` of `true` against raw pod exec of `true` on the
//! same Pod, in one run. Prints p50, p99 and their ratio; asserts nothing about timing.
//! REST is measured twice, interleaved: through the api as configured (answering from the
//! runner's sealed result when it comes first) and through a second api on the same tenant
//! with `--answer-from-runner=false` (always the final status), the design before it.
//!
//!   cargo test -p kubexec-e2e --test bench_api -- --nocapture   (or e2e/bench)
//!
//! `test = false` in e2e/Cargo.toml keeps it out of `cargo test` unless named.

use std::time::{Duration, Instant};

use kubexec_e2e::api::{fixture_on_tier, ApiServer};
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

    let status_api = ApiServer::start(&f.ns.name, &["--answer-from-runner=false"]);
    let status_http = status_api.client();
    let body = json!({"sessionId": f.session, "command": "true"});
    // Its key watch syncs after it listens: until then the key is unknown (401).
    let mut warm = status_http.post("/execute", Some(&f.key), &body).await;
    for _ in 0..50 {
        if warm.status != 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        warm = status_http.post("/execute", Some(&f.key), &body).await;
    }
    assert_eq!(warm.status, 200, "{}", warm.text());

    let mut rest = Vec::with_capacity(rounds);
    let mut from_status = Vec::with_capacity(rounds);
    let mut raw = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        // Interleaved, so all three see the same cluster load.
        let start = Instant::now();
        let reply = f.http.post("/execute", Some(&f.key), &body).await;
        rest.push(start.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.text());

        let start = Instant::now();
        let reply = status_http.post("/execute", Some(&f.key), &body).await;
        from_status.push(start.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.text());

        let start = Instant::now();
        let mut attached = pods.exec(&pod, ["true"], &params).await.expect("exec");
        let status = attached.take_status().expect("status").await;
        raw.push(start.elapsed());
        assert_eq!(status.and_then(|s| s.status).as_deref(), Some("Success"));
    }
    rest.sort();
    from_status.sort();
    raw.sort();
    println!(
        "REST /execute of `true`, answered from the status only ({rounds} runs): p50 {:?}, p99 {:?}",
        percentile(&from_status, 0.5),
        percentile(&from_status, 0.99)
    );
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
