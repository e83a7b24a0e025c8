//! Benchmark (not a test): how long an Execution of `true` takes from `kubectl apply` to the
//! `Complete` condition, next to a raw `kubectl exec <pod> -- true` on the same Pod in the same
//! run; and the same pair through the Kubernetes client (create → watch sees Complete, against
//! a pods/exec of `true`). Prints p50/p99 over 50 runs each; asserts nothing about timing.
//!
//!   cargo test -p kubexec-e2e --test bench_execution -- --nocapture   (or e2e/bench)
//!
//! `test = false` in e2e/Cargo.toml keeps it out of `cargo test` unless named.

use std::{
    collections::HashMap,
    io::Write,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    api::{AttachParams, PostParams},
    runtime::{watcher, WatchStreamExt},
    Api,
};
use kubexec::crd::{Execution, Session, SessionPhase};
use kubexec::sandbox::{protocol::ExecSpec, Sandbox};
use kubexec_e2e::{wait_for, TestNs};
use serde_json::json;
use tokio::sync::Notify;

const RUNS: usize = 50;
const WARMUP: usize = 3;

/// When the watch first saw each Execution Complete.
#[derive(Clone, Default)]
struct Completions {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    changed: Arc<Notify>,
}

impl Completions {
    fn watch(&self, api: Api<Execution>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Ok(Some(e)) = events.try_next().await {
                let complete = e.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Complete" && c.status == "True")
                });
                if complete {
                    let name = e.metadata.name.clone().unwrap_or_default();
                    let mut seen = this.seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.entry(name).or_insert_with(Instant::now);
                    this.changed.notify_waiters();
                }
            }
        });
    }

    async fn wait(&self, name: &str) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let notified = self.changed.notified();
            if let Some(at) = self
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
            {
                return *at;
            }
            assert!(Instant::now() < deadline, "{name} never completed");
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }
}

fn execution(name: &str) -> Execution {
    serde_json::from_value(json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "Execution",
        "metadata": {"name": name},
        "spec": {"sessionRef": {"name": "bench"}, "command": "true", "ttlSecondsAfterFinished": 30}
    }))
    .expect("execution literal")
}

/// The same object as a manifest for `kubectl apply -f -` (JSON is YAML).
fn manifest(name: &str) -> String {
    serde_json::to_string(&execution(name)).expect("serializable")
}

fn kubectl_apply(ns: &str, yaml: &str) {
    let mut child = Command::new("kubectl")
        .args(["-n", ns, "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("kubectl");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(yaml.as_bytes()).expect("write manifest");
    }
    assert!(child.wait().expect("kubectl apply").success());
}

fn stats(label: &str, samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = ms(samples[samples.len() / 2]);
    let p99 = ms(samples[(samples.len() * 99).div_ceil(100) - 1]);
    println!(
        "{label:<44} n={:<3} p50 {p50:>8.1} ms   p99 {p99:>8.1} ms   min {:>7.1} ms",
        samples.len(),
        ms(samples[0])
    );
    (p50, p99)
}

#[tokio::test]
async fn execution_overhead() {
    let ns = TestNs::new("bench").await;
    let session: Session = serde_json::from_value(json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "Session",
        "metadata": {"name": "bench"}, "spec": {}
    }))
    .expect("session literal");
    ns.api::<Session>()
        .create(&PostParams::default(), &session)
        .await
        .expect("create session");
    let session = wait_for(
        &ns.api::<Session>(),
        "bench",
        Duration::from_secs(90),
        "Ready",
        |s: &Session| s.status.as_ref().and_then(|st| st.phase) == Some(SessionPhase::Ready),
    )
    .await;
    let pod = session.status.and_then(|s| s.pod_name).expect("podName");

    let executions = ns.api::<Execution>();
    let completions = Completions::default();
    completions.watch(executions.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut apply_to_complete = Vec::new();
    let mut kubectl_exec = Vec::new();
    let mut create_to_complete = Vec::new();
    let mut client_exec = Vec::new();
    let mut runner_exec = Vec::new();
    let sandbox = Sandbox::new(ns.client.clone(), &ns.name, &pod);
    let pods: Api<Pod> = ns.api();
    let exec_params = AttachParams::default()
        .container("sandbox")
        .stdout(true)
        .stderr(true);

    for i in 0..WARMUP + RUNS {
        // kubectl apply → Complete
        let name = format!("kubectl-{i}");
        let started = Instant::now();
        kubectl_apply(&ns.name, &manifest(&name));
        let took = completions.wait(&name).await - started;

        // raw kubectl exec of `true`
        let started = Instant::now();
        let out = ns.kubectl(&["exec", &pod, "-c", "sandbox", "--", "true"]);
        assert!(out.status.success());
        let raw = started.elapsed();

        // client create → watch sees Complete
        let name = format!("client-{i}");
        let object = execution(&name);
        let started = Instant::now();
        executions
            .create(&PostParams::default(), &object)
            .await
            .expect("create");
        let created = completions.wait(&name).await - started;

        // client pods/exec of `true`
        let started = Instant::now();
        let mut attached = pods.exec(&pod, ["true"], &exec_params).await.expect("exec");
        let status = attached.take_status().expect("status").await;
        assert_eq!(status.and_then(|s| s.status).as_deref(), Some("Success"));
        let direct = started.elapsed();

        // the runner's exec of `true` through the shared client, without the controller
        let mut spec = ExecSpec::new(format!("bench-direct-{i}"));
        spec.command = Some("true".into());
        spec.stream = false;
        let started = Instant::now();
        let result = sandbox
            .exec(&spec)
            .await
            .expect("exec")
            .result(|_| {})
            .await
            .expect("result");
        assert_eq!(result.exit_code, 0);
        let runner = started.elapsed();

        if i >= WARMUP {
            runner_exec.push(runner);
            apply_to_complete.push(took);
            kubectl_exec.push(raw);
            create_to_complete.push(created);
            client_exec.push(direct);
        }
    }

    println!();
    let (a50, a99) = stats("kubectl apply -> Complete (true)", &mut apply_to_complete);
    let (k50, k99) = stats("kubectl exec <pod> -- true", &mut kubectl_exec);
    let (c50, c99) = stats(
        "client create -> watch Complete (true)",
        &mut create_to_complete,
    );
    let (e50, e99) = stats("client pods/exec true", &mut client_exec);
    stats("client kubexec-runner exec (true)", &mut runner_exec);
    println!(
        "ratio kubectl: p50 {:.2}  p99 {:.2}   ratio client: p50 {:.2}  p99 {:.2}",
        a50 / k50,
        a99 / k99,
        c50 / e50,
        c99 / e99
    );
}
