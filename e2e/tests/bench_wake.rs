//! Benchmark (not a test): how long a request waits for a sleeping session. Measured as the
//! hosted API promises it: "`POST /execute` of `true` on an idle session → the response", from
//! each state, over REST with the tier's idle policy shortened (sleep after 2 s, deep sleep
//! after 6 s). Prints p50/p95/p99 per state and writes `docs/benchmarks/wake.csv` and
//! `docs/benchmarks/wake.svg`. Asserts nothing about timing.
//!
//!   cargo test -p kubexec-e2e --test bench_wake -- --nocapture   (or e2e/bench)
//!
//! States:
//! - `ready`: the session is awake (the baseline every wake adds to).
//! - `sleep`: phase Sleeping and the kubelet reports the lowered requests; the wake restores
//!   them in place and waits for the kubelet to report them applied.
//! - `deep-sleep`: phase Suspended (reason Idle), the Pod deleted; the wake is a cold start of
//!   a new Pod that mounts the session's workspace claim (every REST session has one).
//!
//! `KUBEXEC_BENCH_WAKE_RUNS` (default 20) runs per state. `test = false` in e2e/Cargo.toml keeps
//! it out of `cargo test` unless named.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kubexec::crd::{find_condition, Session, SessionPhase};
use kubexec_e2e::api::{ApiServer, Http};
use kubexec_e2e::chart::{ms, percentile_bars, Layout};
use kubexec_e2e::{repo_root, wait_for, TestNs};
use serde_json::json;

const SLEEP_AFTER: u64 = 2;
const DEEP_SLEEP_AFTER: u64 = 6;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn stats(mut values: Vec<Duration>) -> [Duration; 3] {
    values.sort();
    [
        percentile(&values, 0.5),
        percentile(&values, 0.95),
        percentile(&values, 0.99),
    ]
}

/// The sandbox container's requests as the kubelet reports them, lowered to the sleep values.
fn reports_sleep_requests(pod: &Pod) -> bool {
    let sleep_cpu = kubexec::crd::quantity::Quantity::parse("10m").ok();
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "sandbox"))
        .and_then(|c| c.resources.as_ref()?.requests.as_ref()?.get("cpu").cloned())
        .and_then(|q| kubexec::crd::quantity::Quantity::parse(&q.0).ok())
        == sleep_cpu
}

async fn execute_true(http: &Http, key: &str, session: &str) -> Duration {
    let started = Instant::now();
    let reply = http
        .post(
            "/execute",
            Some(key),
            &json!({"sessionId": session, "command": "true"}),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.text());
    took
}

#[tokio::test]
async fn bench_wake() {
    let runs = env_count("KUBEXEC_BENCH_WAKE_RUNS", 20);
    let ns = TestNs::new("bench-wake").await;
    let tiers = repo_root().join(format!("target/bench-wake-tiers-{}.yaml", ns.name));
    std::fs::write(
        &tiers,
        format!(
            "free:\n  sleepAfterSeconds: {SLEEP_AFTER}\n  deepSleepAfterSeconds: {DEEP_SLEEP_AFTER}\n"
        ),
    )
    .expect("tiers file");
    let tiers_path = tiers.to_string_lossy().to_string();
    let api = ApiServer::start(&ns.name, &["--tiers-file", &tiers_path]);
    let key = api.create_key(&ns.name, "free").await;
    let http = api.client();
    let created = http.post("/sessions/create", Some(&key), &json!({})).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["sessionId"]
        .as_str()
        .expect("sessionId")
        .to_string();
    let sessions = ns.api::<Session>();
    let pods = ns.api::<Pod>();
    let spec = sessions.get(&id).await.expect("session").spec;
    assert_eq!(
        (spec.sleep_after_seconds, spec.idle_timeout_seconds),
        (Some(SLEEP_AFTER as i64), Some(DEEP_SLEEP_AFTER as i64)),
        "the tier's idle policy"
    );
    execute_true(&http, &key, &id).await;

    let mut samples: Vec<(&str, Duration)> = Vec::new();
    for _ in 0..runs {
        samples.push(("ready", execute_true(&http, &key, &id).await));
    }
    for _ in 0..runs {
        let asleep = wait_for(
            &sessions,
            &id,
            Duration::from_secs(60),
            "Sleeping",
            |s: &Session| s.status.as_ref().and_then(|st| st.phase) == Some(SessionPhase::Sleeping),
        )
        .await;
        let pod = asleep
            .status
            .and_then(|s| s.pod_name)
            .expect("a sleeping session keeps its Pod");
        wait_for(
            &pods,
            &pod,
            Duration::from_secs(60),
            "sleep requests applied",
            reports_sleep_requests,
        )
        .await;
        samples.push(("sleep", execute_true(&http, &key, &id).await));
    }
    for _ in 0..runs {
        wait_for(
            &sessions,
            &id,
            Duration::from_secs(60),
            "deep sleep",
            |s: &Session| {
                let status = s.status.as_ref();
                status.and_then(|st| st.phase) == Some(SessionPhase::Suspended)
                    && status
                        .and_then(|st| find_condition(&st.conditions, "Ready"))
                        .is_some_and(|c| c.reason == "Idle")
            },
        )
        .await;
        samples.push(("deep-sleep", execute_true(&http, &key, &id).await));
    }
    report(&samples, runs);
    let _ = std::fs::remove_file(&tiers);
}

fn report(samples: &[(&str, Duration)], runs: usize) {
    let mut csv = String::from("state,run,wake_ms\n");
    let mut rows = Vec::new();
    println!(
        "wake: POST /execute of `true` on an idle REST session, {runs} runs per state (sleep after {SLEEP_AFTER}s, deep sleep after {DEEP_SLEEP_AFTER}s)"
    );
    println!("| state | n | p50 | p95 | p99 |");
    println!("|---|---|---|---|---|");
    for state in ["ready", "sleep", "deep-sleep"] {
        let mine: Vec<Duration> = samples
            .iter()
            .filter(|(s, _)| *s == state)
            .map(|(_, d)| *d)
            .collect();
        if mine.is_empty() {
            continue;
        }
        for (i, d) in mine.iter().enumerate() {
            csv.push_str(&format!("{state},{i},{:.1}\n", ms(*d)));
        }
        let s = stats(mine.clone());
        println!(
            "| {state} | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
            mine.len(),
            ms(s[0]),
            ms(s[1]),
            ms(s[2])
        );
        rows.push((state, s));
    }
    let dir = repo_root().join("docs/benchmarks");
    std::fs::create_dir_all(&dir).expect("docs/benchmarks");
    std::fs::write(dir.join("wake.csv"), csv).expect("write wake.csv");
    std::fs::write(
        dir.join("wake.svg"),
        percentile_bars(
            "kubexec wake: POST /execute `true` on an idle session → response, log scale",
            Layout {
                left: 120.0,
                width: 600.0,
            },
            &rows,
            &[(3000.0, "3 s")],
        ),
    )
    .expect("write wake.svg");
    println!("wrote docs/benchmarks/wake.csv and docs/benchmarks/wake.svg");
}
