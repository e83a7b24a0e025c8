//! Harness of the end-to-end suites. Every test gets a fresh namespace and, unless the
//! operator is deployed in the cluster (`KUBEXEC_E2E_OPERATOR=external`), its own
//! `kubexec operator --namespace <ns>` process, so tests run in parallel without sharing
//! state and a test may kill and restart "its" operator.
//!
//! The suites need a running cluster: `e2e/cluster/up`, then `eval "$(e2e/cluster/env)"`.

pub mod api;
pub mod browser;
pub mod chart;
pub mod proxy;

use std::fmt::Debug;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, Resource};
use serde_json::json;

/// Root of the repository (the e2e crate lives in `e2e/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn operator_binary() -> PathBuf {
    std::env::var_os("KUBEXEC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/kubexec"))
}

fn external_operator() -> bool {
    std::env::var("KUBEXEC_E2E_OPERATOR").is_ok_and(|v| v == "external")
}

/// The local cluster's sandbox settings, as `e2e/deploy/up` installs them with the chart: user
/// namespaces on, and the process limit capped below the kubelet's `podPidsLimit` (4096).
/// Its NetworkPolicy settings too: the Pod and Service ranges, and the host's own addresses as
/// the node's (DNS resolvers default to the host's `/etc/resolv.conf`, which the local
/// cluster's Pods use).
pub fn operator_env() -> Vec<(&'static str, String)> {
    vec![
        ("KUBEXEC_USER_NAMESPACES", "true".into()),
        ("KUBEXEC_MAX_PIDS", "4032".into()),
        ("KUBEXEC_POD_CIDRS", "10.244.0.0/24".into()),
        ("KUBEXEC_SERVICE_CIDRS", "10.96.0.0/24".into()),
        ("KUBEXEC_NODE_CIDRS", host_addresses().join(",")),
        (
            kubexec::shared::result_secret::RESULT_SECRET_ENV,
            E2E_RESULT_SECRET.into(),
        ),
    ]
}

/// The result secret the tests' operators and apis share (as the chart's Secret does), so
/// that results outlive their Executions.
pub const E2E_RESULT_SECRET: &str = "kubexec-e2e-result-secret-0123456789abcdef";

/// The host's global IPv4 addresses as /32s (`ip -4 -o addr show scope global`).
pub fn host_addresses() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip on PATH");
    let mut found: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next())
        .map(|ip| format!("{ip}/32"))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// One test's namespace, and the operator serving it.
pub struct TestNs {
    pub client: Client,
    pub name: String,
    operator: Option<Child>,
}

impl TestNs {
    /// Creates `kx-<prefix>-<suffix>` and starts an operator for it.
    pub async fn new(prefix: &str) -> TestNs {
        let client = Client::try_default()
            .await
            .expect("no cluster: run e2e/cluster/up and eval \"$(e2e/cluster/env)\"");
        let suffix = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() % 0xffff_ffff)
                .unwrap_or_default()
        );
        let name = format!("kx-{prefix}-{suffix}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubexec.dev/e2e": "true"}}
        }))
        .expect("namespace literal");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        // Pods are refused until the namespace's default ServiceAccount exists.
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_until(
            Duration::from_secs(30),
            "default ServiceAccount",
            || async { accounts.get_opt("default").await.ok().flatten().is_some() },
        )
        .await;
        let mut test_ns = TestNs {
            client,
            name,
            operator: None,
        };
        test_ns.start_operator();
        test_ns
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Starts this namespace's operator (a no-op with an external operator).
    pub fn start_operator(&mut self) {
        self.start_operator_with(&[]);
    }

    /// Starts this namespace's operator with `extra` environment variables, such as a fault
    /// point (a no-op with an external operator).
    pub fn start_operator_with(&mut self, extra: &[(&str, &str)]) {
        if external_operator() || self.operator.is_some() {
            return;
        }
        self.operator = Some(spawn_operator(&self.name, "operator", extra));
    }

    /// Starts one more operator process for this namespace (a replica under leader election,
    /// say), logging to `target/e2e-logs/<ns>-<log_name>.log`; it is killed when dropped.
    /// `None` with an external operator.
    pub fn spawn_replica(&self, log_name: &str, extra: &[(&str, &str)]) -> Option<Replica> {
        (!external_operator()).then(|| Replica(spawn_operator(&self.name, log_name, extra)))
    }

    /// Waits until the operator exits on its own (a fault point stops it), and returns its exit
    /// code; panics after `timeout`.
    pub async fn wait_operator_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.operator.as_mut().expect("an operator of this test");
            if let Some(status) = child.try_wait().expect("operator status") {
                self.operator = None;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "the operator still runs after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The process id of this namespace's operator, while it runs (`None` with an external
    /// operator, or once it exited).
    pub fn operator_pid(&mut self) -> Option<u32> {
        let child = self.operator.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    /// Kills the operator abruptly (SIGKILL), as a crash or a node loss would.
    pub fn kill_operator(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `sh -c script` in a sandbox Pod's `sandbox` container; asserts success and returns
    /// the trimmed stdout.
    pub fn sh(&self, pod: &str, script: &str) -> String {
        let out = self.kubectl(&["exec", pod, "-c", "sandbox", "--", "sh", "-c", script]);
        assert!(
            out.status.success(),
            "exec {script:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs kubectl against this namespace.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        kubectl(&[&["-n", &self.name], args].concat())
    }
}

/// An operator process started by [`TestNs::spawn_replica`]; killed (SIGKILL) when dropped.
pub struct Replica(Child);

impl Replica {
    /// The process id, while it runs.
    pub fn pid(&mut self) -> Option<u32> {
        matches!(self.0.try_wait(), Ok(None)).then(|| self.0.id())
    }

    /// Kills the process abruptly (SIGKILL), as a crash or a node loss would.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `kubexec operator --namespace <ns>` with the local cluster's settings and `extra`
/// environment, logging to `target/e2e-logs/<ns>-<log_name>.log`.
fn spawn_operator(namespace: &str, log_name: &str, extra: &[(&str, &str)]) -> Child {
    let logs = repo_root().join("target/e2e-logs");
    let _ = std::fs::create_dir_all(&logs);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{namespace}-{log_name}.log")))
        .expect("operator log file");
    let err = log.try_clone().expect("operator log file");
    Command::new(operator_binary())
        .args([
            "operator",
            "--namespace",
            namespace,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .envs(operator_env())
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {:?}: {e} (cargo build first)", operator_binary()))
}

impl Drop for TestNs {
    fn drop(&mut self) {
        self.kill_operator();
        if std::env::var_os("KUBEXEC_E2E_KEEP").is_none() {
            let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
        }
    }
}

/// A process's resident memory from `/proc/<pid>/status`: (current `VmRSS`, peak `VmHWM`), in
/// bytes.
pub fn rss_bytes(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The local cluster's etcd database size in bytes, as `etcdctl endpoint status` reports it
/// (the same Maintenance/Status call, through etcd's JSON gateway on its client port): the
/// file's size (`dbSize`), and the part of it in use (`dbSizeInUse`; the file grows only once
/// the pages freed by compaction are used up).
pub async fn etcd_db_size() -> (u64, u64) {
    let addr: std::net::SocketAddr = "127.0.0.1:2379".parse().expect("etcd address");
    let reply = api::Http::at(addr)
        .request(
            hyper::Method::POST,
            "/v3/maintenance/status",
            None,
            &[],
            b"{}".to_vec(),
        )
        .await;
    assert!(reply.status.is_success(), "etcd status: {}", reply.text());
    let status = reply.json();
    let size = |name: &str| {
        status[name]
            .as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| status[name].as_u64())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    (size("dbSize"), size("dbSizeInUse"))
}

/// Runs kubectl (the one on PATH, which `e2e/cluster/env` puts first).
pub fn kubectl(args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl on PATH (eval \"$(e2e/cluster/env)\")")
}

/// Polls `check` until it returns true; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Watches one object until `cond` holds, and returns it; panics after `timeout` with the
/// object's last state.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&K) -> bool,
) -> K
where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let watched = await_condition(api.clone(), name, move |obj: Option<&K>| {
        obj.is_some_and(&cond)
    });
    match tokio::time::timeout(timeout, watched).await {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("{name} was deleted while waiting for {what}"),
        Ok(Err(e)) => panic!("watch of {name} failed while waiting for {what}: {e}"),
        Err(_) => {
            let mut last = api.get_opt(name).await.ok().flatten();
            let namespace = last.as_ref().and_then(|o| o.meta().namespace.clone());
            if let Some(obj) = last.as_mut() {
                // Field ownership is noise here and long enough to hide the status.
                obj.meta_mut().managed_fields = None;
            }
            let around = namespace
                .map(|ns| namespace_report(&ns))
                .unwrap_or_default();
            panic!(
                "timed out after {timeout:?} waiting for {name}: {what}; last state: {last:#?}\n{around}"
            )
        }
    }
}

/// The host's free disk, memory and process count, and its load.
fn host_report() -> String {
    let out = Command::new("sh")
        .args(["-c", "df -h / | tail -1; free -m | sed -n 2p; echo processes $(ls /proc | grep -c '^[0-9]'); cat /proc/loadavg"])
        .output();
    out.map(|o| format!("$ host\n{}", String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default()
}

/// What a failed wait prints about its namespace: its Pods (with their conditions and
/// container states), its newest Events, the node's conditions and the tail of each operator
/// log of this namespace, so that a CI log alone explains a timeout.
pub fn namespace_report(namespace: &str) -> String {
    let run = |args: &[&str]| {
        let out = kubectl(args);
        format!(
            "$ kubectl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let pods = "{range .items[*]}{.metadata.name} phase={.status.phase} ip={.status.podIP} \
                conditions={range .status.conditions[*]}{.type}={.status}({.reason}) {end} \
                containers={range .status.containerStatuses[*]}{.name}:{.state} {end}{\"\\n\"}{end}";
    let node = "{range .items[*].status.conditions[*]}{.type}={.status} {end}";
    let mut report = [
        run(&[
            "-n",
            namespace,
            "get",
            "pods",
            "-o",
            &format!("jsonpath={pods}"),
        ]),
        run(&["-n", namespace, "get", "events", "--sort-by=.lastTimestamp"]),
        run(&["get", "nodes", "-o", &format!("jsonpath={node}")]),
        run(&["get", "pods", "--all-namespaces", "--no-headers"]),
        host_report(),
    ]
    .join("\n");
    let logs = repo_root().join("target/e2e-logs");
    let ours = std::fs::read_dir(&logs).into_iter().flatten().flatten();
    for entry in ours.filter(|e| e.file_name().to_string_lossy().starts_with(namespace)) {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        report.push_str(&format!(
            "\n--- {} (last 40 lines)\n{tail}\n",
            entry.path().display()
        ));
    }
    report
}

/// Waits until an object is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + 'static,
{
    wait_until(timeout, &format!("{name} to be deleted"), || async {
        matches!(api.get_opt(name).await, Ok(None))
    })
    .await;
}

/// How long a test waits for a Session to become Ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether a Session is Ready with a Pod.
pub fn session_ready(s: &kubexec::crd::Session) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.phase == Some(kubexec::crd::SessionPhase::Ready) && st.pod_name.is_some()
    })
}

/// Creates a Session with `spec` in the test's namespace and waits until it is Ready.
pub async fn create_session(
    ns: &TestNs,
    name: &str,
    spec: serde_json::Value,
) -> kubexec::crd::Session {
    let session: kubexec::crd::Session = serde_json::from_value(json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "Session",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("session literal");
    let sessions = ns.api::<kubexec::crd::Session>();
    sessions
        .create(&PostParams::default(), &session)
        .await
        .expect("create session");
    wait_for(&sessions, name, READY_TIMEOUT, "Ready", session_ready).await
}

/// The name of a Session's Pod, from its status.
pub fn pod_of(s: &kubexec::crd::Session) -> String {
    s.status
        .as_ref()
        .and_then(|st| st.pod_name.clone())
        .expect("podName")
}
