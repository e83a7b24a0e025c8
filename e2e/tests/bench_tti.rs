//! Benchmark (not a test): time to interactive, modelled on the public TTI methodology: from
//! "create a sandbox" to "the first command has returned". Prints p50/p95/p99 per scenario and
//! the pool hit ratio, and writes `docs/benchmarks/tti.csv` and `docs/benchmarks/tti.svg`.
//! Asserts nothing about timing.
//!
//!   cargo test -p kubexec-e2e --test bench_tti -- --nocapture   (or e2e/bench)
//!
//! Scenarios (kubectl = the Kubernetes API, as `kubectl apply` uses it, without kubectl's own
//! start-up; Ready and Succeeded are seen by one watch started before the runs):
//! - `kubectl-pool-seq`: a Session naming a SessionPool, Ready, then an Execution of `true`
//!   Succeeded; `KUBEXEC_BENCH_RUNS` (default 100) one after another.
//! - `kubectl-pool-burst`: 10 such at once, with a pool of 10.
//! - `kubectl-empty-pool`: the pool scaled to 0: the cold path a miss takes.
//! - `kubectl-cold`: Sessions without a pool.
//! - `rest-cold`: `POST /sessions/create` then `POST /execute` of `true`, when
//!   `KUBEXEC_BENCH_REST` is not `0`. Since REST sessions take the tenant's pool
//!   (`kubexec-paid`, `poolSize` 2), the first runs adopt warm Pods and the rest mostly miss
//!   (one run after another outpaces the refill): a mix, not the cold path alone.
//! `test = false` in e2e/Cargo.toml keeps it out of `cargo test` unless named.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use kubexec::crd::{Execution, ExecutionPhase, Session, SessionPhase, SessionPool};
use kubexec_e2e::chart::{ms, percentile_bars, Layout};
use kubexec_e2e::{repo_root, wait_for, TestNs};
use serde_json::json;
use tokio::sync::Notify;

/// The template of the benchmark's pool: requests are the operator's `--request-ratio` (0.1
/// by default, 0.05 in the chart) times these limits, 50m CPU and about 26 MiB per Pod (25m
/// and 13 MiB with the chart), so ten warm Pods hold at most 0.5 CPU of the 2-core node.
const POOL_CPU: &str = "500m";
const POOL_MEMORY: &str = "256Mi";
const BURST: usize = 10;

/// When each object was first seen done by the watch.
#[derive(Clone, Default)]
struct Seen {
    at: Arc<Mutex<HashMap<String, Instant>>>,
    changed: Arc<Notify>,
}

impl Seen {
    fn mark(&self, name: String) {
        let mut at = self.at.lock().expect("lock");
        at.entry(name).or_insert_with(Instant::now);
        self.changed.notify_waiters();
    }

    async fn wait(&self, name: &str) -> Instant {
        loop {
            let notified = self.changed.notified();
            if let Some(at) = self.at.lock().expect("lock").get(name) {
                return *at;
            }
            if tokio::time::timeout(Duration::from_secs(120), notified)
                .await
                .is_err()
            {
                panic!("{name} not done within 120 s");
            }
        }
    }
}

/// One watch per kind, started once: Sessions Ready, Executions Succeeded.
fn watch_done(ns: &TestNs) -> (Seen, Seen) {
    let ready = Seen::default();
    let succeeded = Seen::default();
    let sessions: Api<Session> = ns.api();
    let seen = ready.clone();
    tokio::spawn(async move {
        let mut stream = watcher(sessions, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Ok(Some(s)) = stream.try_next().await {
            if s.status.as_ref().and_then(|st| st.phase) == Some(SessionPhase::Ready) {
                seen.mark(s.name_any());
            }
        }
    });
    let executions: Api<Execution> = ns.api();
    let seen = succeeded.clone();
    tokio::spawn(async move {
        let mut stream = watcher(executions, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Ok(Some(e)) = stream.try_next().await {
            let phase = e.status.as_ref().and_then(|st| st.phase);
            if matches!(
                phase,
                Some(ExecutionPhase::Succeeded | ExecutionPhase::Failed)
            ) {
                seen.mark(e.name_any());
            }
        }
    });
    (ready, succeeded)
}

/// One sample: create → Ready, create → first command returned, and whether a warm Pod served.
#[derive(Clone, Debug)]
struct Sample {
    scenario: &'static str,
    ready: Duration,
    tti: Duration,
    hit: Option<bool>,
}

struct Bench {
    ns: TestNs,
    ready: Seen,
    succeeded: Seen,
}

impl Bench {
    /// Session (with `pool`, or cold) → Ready → Execution of `true` → Succeeded.
    async fn kubectl_run(&self, scenario: &'static str, name: String, pool: bool) -> Sample {
        let mut spec = json!({"resources": {"cpu": POOL_CPU, "memory": POOL_MEMORY}});
        if pool {
            spec["poolRef"] = json!({"name": "bench"});
        }
        let session: Session = serde_json::from_value(json!({
            "apiVersion": "kubexec.dev/v1alpha1", "kind": "Session",
            "metadata": {"name": name}, "spec": spec
        }))
        .expect("session literal");
        let execution: Execution = serde_json::from_value(json!({
            "apiVersion": "kubexec.dev/v1alpha1", "kind": "Execution",
            "metadata": {"name": format!("{name}-true")},
            "spec": {"sessionRef": {"name": name}, "command": "true"}
        }))
        .expect("execution literal");
        let sessions: Api<Session> = self.ns.api();
        let executions: Api<Execution> = self.ns.api();
        let started = Instant::now();
        sessions
            .create(&PostParams::default(), &session)
            .await
            .expect("create session");
        let ready = self.ready.wait(&name).await - started;
        executions
            .create(&PostParams::default(), &execution)
            .await
            .expect("create execution");
        let done = self.succeeded.wait(&format!("{name}-true")).await - started;
        let hit = if pool {
            let s = sessions.get(&name).await.expect("session");
            let pod = s.status.and_then(|st| st.pod_name).unwrap_or_default();
            Some(pod != format!("{name}-sandbox"))
        } else {
            None
        };
        let _ = sessions.delete(&name, &DeleteParams::background()).await;
        Sample {
            scenario,
            ready,
            tti: done,
            hit,
        }
    }

    async fn scale(&self, replicas: i32) {
        let out = self.ns.kubectl(&[
            "scale",
            "sessionpool/bench",
            &format!("--replicas={replicas}"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for(
            &self.ns.api::<SessionPool>(),
            "bench",
            Duration::from_secs(180),
            "pool filled",
            move |p: &SessionPool| {
                p.status.as_ref().is_some_and(|s| {
                    s.replicas == replicas
                        && s.ready_replicas == replicas
                        && s.observed_generation == p.metadata.generation
                })
            },
        )
        .await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// p50, p95, p99 of a set of durations.
fn stats(mut values: Vec<Duration>) -> [Duration; 3] {
    values.sort();
    [
        percentile(&values, 0.5),
        percentile(&values, 0.95),
        percentile(&values, 0.99),
    ]
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
async fn bench_time_to_interactive() {
    let runs = env_count("KUBEXEC_BENCH_RUNS", 100);
    let cold_runs = env_count("KUBEXEC_BENCH_COLD_RUNS", 20);
    let ns = TestNs::new("bench-tti").await;
    let (ready, succeeded) = watch_done(&ns);
    let bench = Bench {
        ns,
        ready,
        succeeded,
    };
    let pool: SessionPool = serde_json::from_value(json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "SessionPool",
        "metadata": {"name": "bench"},
        "spec": {"replicas": BURST, "template": {"resources": {"cpu": POOL_CPU, "memory": POOL_MEMORY}}}
    }))
    .expect("pool literal");
    bench
        .ns
        .api::<SessionPool>()
        .create(&PostParams::default(), &pool)
        .await
        .expect("create pool");
    bench.scale(BURST as i32).await;

    let mut samples = Vec::new();
    // Warm-up: the first run pays for the operator's caches and connections.
    bench.kubectl_run("warmup", "warmup".into(), true).await;
    bench.scale(BURST as i32).await;
    for i in 0..runs {
        samples.push(
            bench
                .kubectl_run("kubectl-pool-seq", format!("seq-{i}"), true)
                .await,
        );
    }

    bench.scale(BURST as i32).await;
    let burst = futures::future::join_all(
        (0..BURST).map(|i| bench.kubectl_run("kubectl-pool-burst", format!("burst-{i}"), true)),
    )
    .await;
    samples.extend(burst);

    bench.scale(0).await;
    for i in 0..cold_runs {
        samples.push(
            bench
                .kubectl_run("kubectl-empty-pool", format!("empty-{i}"), true)
                .await,
        );
    }
    for i in 0..cold_runs {
        samples.push(
            bench
                .kubectl_run("kubectl-cold", format!("cold-{i}"), false)
                .await,
        );
    }
    if std::env::var("KUBEXEC_BENCH_REST").map_or(true, |v| v != "0") {
        samples.extend(rest_cold(cold_runs).await);
    }
    report(&samples, runs);
}

/// REST: `POST /sessions/create` (returns once the session is Ready), then `POST /execute` of
/// `true`, on a local api with a paid-tier key.
async fn rest_cold(runs: usize) -> Vec<Sample> {
    let ns = TestNs::new("bench-tti-rest").await;
    let api = kubexec_e2e::api::ApiServer::start(&ns.name, &[]);
    let key = api.create_key(&ns.name, "paid").await;
    let http = api.client();
    let mut samples = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let created = http.post("/sessions/create", Some(&key), &json!({})).await;
        assert_eq!(created.status, 201, "{}", created.text());
        let ready = started.elapsed();
        let id = created.json()["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        let reply = http
            .post(
                "/execute",
                Some(&key),
                &json!({"sessionId": id, "command": "true"}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        samples.push(Sample {
            scenario: "rest-cold",
            ready,
            tti: started.elapsed(),
            hit: None,
        });
        let _ = http
            .request(
                hyper::Method::DELETE,
                &format!("/sessions/{id}"),
                Some(&key),
                &[],
                Vec::new(),
            )
            .await;
    }
    samples
}

fn report(samples: &[Sample], runs: usize) {
    let scenarios = [
        "kubectl-pool-seq",
        "kubectl-pool-burst",
        "kubectl-empty-pool",
        "kubectl-cold",
        "rest-cold",
    ];
    let mut csv = String::from("scenario,run,ready_ms,tti_ms,pool_hit\n");
    let mut rows = Vec::new();
    println!(
        "TTI over {runs} sequential runs; burst of {BURST}; pool template {POOL_CPU}/{POOL_MEMORY}"
    );
    println!("| scenario | n | Ready p50 | Ready p99 | TTI p50 | TTI p95 | TTI p99 | pool hits |");
    println!("|---|---|---|---|---|---|---|---|");
    for scenario in scenarios {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.scenario == scenario).collect();
        if mine.is_empty() {
            continue;
        }
        for (i, s) in mine.iter().enumerate() {
            let hit = s.hit.map_or(String::new(), |h| h.to_string());
            csv.push_str(&format!(
                "{scenario},{i},{:.1},{:.1},{hit}\n",
                ms(s.ready),
                ms(s.tti)
            ));
        }
        let r = stats(mine.iter().map(|s| s.ready).collect());
        let t = stats(mine.iter().map(|s| s.tti).collect());
        let hits = mine.iter().filter(|s| s.hit == Some(true)).count();
        let hit_text = if mine.iter().any(|s| s.hit.is_some()) {
            format!("{hits}/{}", mine.len())
        } else {
            "-".into()
        };
        println!(
            "| {scenario} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {hit_text} |",
            mine.len(),
            ms(r[0]),
            ms(r[2]),
            ms(t[0]),
            ms(t[1]),
            ms(t[2])
        );
        rows.push((scenario, t));
        // Misses of a pool scenario are reported apart.
        let misses: Vec<Duration> = mine
            .iter()
            .filter(|s| s.hit == Some(false))
            .map(|s| s.tti)
            .collect();
        if !misses.is_empty() && scenario.contains("pool-") {
            let m = stats(misses.clone());
            println!(
                "|   {scenario} misses | {} | | | {:.0} ms | {:.0} ms | {:.0} ms | |",
                misses.len(),
                ms(m[0]),
                ms(m[1]),
                ms(m[2])
            );
        }
    }
    let dir = repo_root().join("docs/benchmarks");
    std::fs::create_dir_all(&dir).expect("docs/benchmarks");
    std::fs::write(dir.join("tti.csv"), csv).expect("write tti.csv");
    std::fs::write(
        dir.join("tti.svg"),
        percentile_bars(
            "kubexec time to interactive (create → first command returned), log scale",
            Layout {
                left: 170.0,
                width: 560.0,
            },
            &rows,
            &[(150.0, "150 ms"), (1000.0, "1 s")],
        ),
    )
    .expect("write tti.svg");
    println!("wrote docs/benchmarks/tti.csv and docs/benchmarks/tti.svg");
}
