//! Faults on the chart-installed deployment (`make up`), under a steady load of REST
//! executions, with invariants checked after each scenario (docs/reliability.md).
//!
//! Each execution appends its id and a token it gets through `env` to `/workspace/ledger` of
//! its session. After a scenario the suite checks that no id is in a ledger twice, that no
//! token is missing, that every request got its result (retries reuse the request's
//! `Idempotency-Key`, so a retry answers the original execution), that every Execution ended,
//! that nothing was left behind, and that the operator and the api are Ready again; then it
//! prints one row of the invariant table.
//!
//! Needs `e2e/deploy/up` and root (faults are signals to the cluster's processes); run one
//! scenario at a time: `cargo test -p kubexec-e2e --test chaos -- --test-threads=1`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use kubexec::crd::{Execution, ExecutionPhase, Session, SessionPhase};
use kubexec_e2e::api::{deployed, kubexec_binary, Http};
use kubexec_e2e::{kubectl, repo_root};
use serde_json::{json, Value};

/// The suite's own tenant (enterprise tier: the demo's free tier would rate-limit the load and
/// cap its sessions at five), and its namespace.
const TENANT_NAME: &str = "chaos";
const TENANT: &str = "kubexec-chaos";
const RELEASE: &str = "kubexec-system";
/// The most a request retries through a fault before it counts as unanswered.
const REQUEST_BOUND: Duration = Duration::from_secs(180);
/// The most the deployment takes to settle after a fault: Executions end, Sessions and the
/// operator and api are Ready again.
const SETTLE_BOUND: Duration = Duration::from_secs(180);

/// What one request of the load got in the end.
#[derive(Debug, Clone)]
enum Answer {
    /// A 200 with the result.
    Result { exit_code: i64, stdout: String },
    /// A documented failure of the run itself (500 `EXECUTION_FAILED`, with its reason).
    Failed { reason: String },
    /// Anything else, or nothing within [`REQUEST_BOUND`]: an invariant broken.
    Broken { last: String },
}

#[derive(Debug, Clone)]
struct Outcome {
    id: String,
    session: String,
    answer: Answer,
    attempts: u32,
}

/// The token an execution writes into the ledger through its env.
fn token_of(id: &str) -> String {
    format!("tok-{id}")
}

/// Executes `command` in `session` with `Idempotency-Key: id`, retrying what a fault makes
/// retryable (no connection, 502, 503, 504, 429) with the same key, within [`REQUEST_BOUND`].
async fn execute(http: &Http, key: &str, session: &str, id: &str, command: &str) -> Outcome {
    let body = json!({
        "sessionId": session,
        "command": command,
        "env": {"CHAOS_TOKEN": token_of(id)},
        "timeout": 30,
    });
    let body = serde_json::to_vec(&body).expect("json");
    let started = Instant::now();
    let mut attempts = 0;
    let answer = loop {
        attempts += 1;
        let reply = http
            .try_request(
                Method::POST,
                "/execute",
                Some(key),
                &[("idempotency-key", id)],
                body.clone(),
            )
            .await;
        let last = match reply {
            Ok(r) if r.status == StatusCode::OK => {
                let body = r.json();
                let exit_code = body["exitCode"].as_i64().unwrap_or(-1);
                let stdout = body["stdout"].as_str().unwrap_or_default().to_string();
                break Answer::Result { exit_code, stdout };
            }
            Ok(r) if r.json()["error"]["code"] == "EXECUTION_FAILED" => {
                let reason = r.json()["error"]["details"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                break Answer::Failed { reason };
            }
            Ok(r) if retryable(r.status) => format!("{} {}", r.status, r.text()),
            Ok(r) => {
                break Answer::Broken {
                    last: format!("{} {}", r.status, r.text()),
                }
            }
            Err(e) => e,
        };
        if started.elapsed() > REQUEST_BOUND {
            break Answer::Broken { last };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    Outcome {
        id: id.to_string(),
        session: session.to_string(),
        answer,
        attempts,
    }
}

fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// A steady load: `workers` clients, each executing one ledger append after another in the
/// scenario's sessions until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(scenario: &str, http: Http, key: &str, sessions: &[String], workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..workers)
            .map(|w| {
                let (stop, in_flight, outcomes) =
                    (stop.clone(), in_flight.clone(), outcomes.clone());
                let key = key.to_string();
                let session = sessions[w % sessions.len()].clone();
                let prefix = format!("{scenario}-{w}");
                tokio::spawn(async move {
                    for n in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let id = format!("{prefix}-{n}");
                        let command =
                            format!("echo \"{id} $CHAOS_TOKEN\" >> /workspace/ledger; sleep 0.3");
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        let outcome = execute(&http, &key, &session, &id, &command).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        if let Ok(mut all) = outcomes.lock() {
                            all.push(outcome);
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            in_flight,
            outcomes,
            workers: handles,
        }
    }

    /// Requests in flight right now (when a fault hits).
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stops the workers after their current request, and returns every outcome.
    async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            let _ = worker.await;
        }
        self.outcomes.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

/// The scenario's REST sessions, deleted when dropped (also when a check fails).
struct Sessions {
    names: Vec<String>,
}

impl Sessions {
    async fn create(http: &Http, key: &str, count: usize) -> Sessions {
        let mut names = Vec::new();
        for _ in 0..count {
            // A key made moments ago reaches the api through its watch: 401 until then.
            let mut created = http
                .post("/sessions/create", Some(key), &json!({"ttl": 900}))
                .await;
            for _ in 0..60 {
                if created.status.is_success()
                    || !matches!(created.status.as_u16(), 401 | 429 | 503)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                created = http
                    .post("/sessions/create", Some(key), &json!({"ttl": 900}))
                    .await;
            }
            assert!(created.status.is_success(), "{}", created.text());
            let name = created.json()["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string();
            names.push(name);
        }
        // Each session runs once before any fault, so that faults hit a steady state.
        for name in &names {
            let warm = execute(http, key, name, &format!("warm-{name}"), "true").await;
            assert!(
                matches!(warm.answer, Answer::Result { exit_code: 0, .. }),
                "{warm:?}"
            );
        }
        Sessions { names }
    }
}

impl Drop for Sessions {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = kubectl(&["-n", TENANT, "delete", "session", name, "--wait=false"]);
        }
    }
}

/// One row of the invariant table.
struct Row {
    scenario: &'static str,
    faults: String,
    in_flight: Vec<usize>,
    outcomes: Vec<Outcome>,
    violations: Vec<String>,
    settled_in: Duration,
}

impl Row {
    fn print(&self) {
        let results = self
            .outcomes
            .iter()
            .filter(|o| matches!(o.answer, Answer::Result { .. }))
            .count();
        let failed = self
            .outcomes
            .iter()
            .filter(|o| matches!(o.answer, Answer::Failed { .. }))
            .count();
        let retried = self.outcomes.iter().filter(|o| o.attempts > 1).count();
        println!(
            "\n| scenario | faults | in flight at each fault | requests | results | failed (reason) | retried | settled | invariants |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {} | {} | {:?} | {} | {} | {} | {} | {:.1} s | {} |",
            self.scenario,
            self.faults,
            self.in_flight,
            self.outcomes.len(),
            results,
            failed,
            retried,
            self.settled_in.as_secs_f64(),
            if self.violations.is_empty() {
                "all hold".to_string()
            } else {
                format!("{} broken", self.violations.len())
            }
        );
        for v in &self.violations {
            println!("  broken: {v}");
        }
    }
}

/// Polls `check` (which returns what is still wrong) until it returns nothing or `bound`
/// passes; returns what was still wrong, and how long it took.
async fn settle<F, Fut>(bound: Duration, mut check: F) -> (Vec<String>, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<String>>,
{
    let started = Instant::now();
    loop {
        let wrong = check().await;
        if wrong.is_empty() || started.elapsed() > bound {
            return (wrong, started.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Everything the invariants say about the deployment now that is still wrong: Executions not
/// ended, Sessions not in a steady phase, env Secrets without their Execution, sandbox Pods
/// without an owner, and the operator or the api not Ready.
async fn unsettled(client: &Client, sessions: &[String], known: &BTreeSet<String>) -> Vec<String> {
    let mut wrong = Vec::new();
    let executions: Api<Execution> = Api::namespaced(client.clone(), TENANT);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), TENANT);
    let pods: Api<Pod> = Api::namespaced(client.clone(), TENANT);
    let session_api: Api<Session> = Api::namespaced(client.clone(), TENANT);
    let listed = executions.list(&ListParams::default()).await;
    let Ok(listed) = listed else {
        return vec![format!("list Executions: {:?}", listed.err())];
    };
    let names: BTreeSet<String> = listed.items.iter().map(|e| e.name_any()).collect();
    for e in &listed.items {
        let phase = e.status.as_ref().and_then(|s| s.phase.clone());
        if !matches!(
            phase,
            Some(ExecutionPhase::Succeeded | ExecutionPhase::Failed)
        ) {
            wrong.push(format!("Execution {} is {phase:?}", e.name_any()));
        }
    }
    let env_secrets = ListParams::default().labels("kubexec.dev/execution");
    if let Ok(list) = secrets.list(&env_secrets).await {
        for s in list.items {
            let owner = s.labels().get("kubexec.dev/execution").cloned();
            if owner.as_ref().is_some_and(|o| !names.contains(o)) && !known.contains(&s.name_any())
            {
                wrong.push(format!(
                    "env Secret {} outlives its Execution",
                    s.name_any()
                ));
            }
        }
    }
    let sandboxes = ListParams::default().labels("app.kubernetes.io/component=sandbox");
    if let Ok(list) = pods.list(&sandboxes).await {
        for p in list.items {
            let owned = p
                .owner_references()
                .iter()
                .any(|o| o.kind == "Session" || o.kind == "SessionPool");
            if !owned {
                wrong.push(format!(
                    "sandbox Pod {} has no Session or pool",
                    p.name_any()
                ));
            }
        }
    }
    for name in sessions {
        let phase = session_api
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|s| s.status.and_then(|st| st.phase));
        if !matches!(
            phase,
            Some(SessionPhase::Ready | SessionPhase::Sleeping | SessionPhase::Suspended)
        ) {
            wrong.push(format!("Session {name} is {phase:?}"));
        }
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), RELEASE);
    for name in ["kubexec-operator", "kubexec-api"] {
        let d = deployments.get_opt(name).await.ok().flatten();
        let (want, ready) = d
            .and_then(|d| {
                let want = d.spec.and_then(|s| s.replicas).unwrap_or(1);
                d.status.map(|s| (want, s.ready_replicas.unwrap_or(0)))
            })
            .unwrap_or((1, 0));
        if ready < want {
            wrong.push(format!("{name}: {ready}/{want} Ready"));
        }
    }
    wrong
}

/// The ledger lines of `session`: (id, token), read through the api (retried like the load's
/// requests: the tenant's rate limit may still be busy with them).
async fn ledger(http: &Http, key: &str, session: &str) -> Result<Vec<(String, String)>, String> {
    let id = format!(
        "ledger-{session}-{}",
        jiff::Timestamp::now().as_millisecond()
    );
    let read = execute(
        http,
        key,
        session,
        &id,
        "cat /workspace/ledger 2>/dev/null || true",
    )
    .await;
    let Answer::Result {
        exit_code: 0,
        stdout,
    } = read.answer
    else {
        return Err(format!("{id}: {:?}", read.answer));
    };
    Ok(stdout
        .lines()
        .map(|line| {
            let mut fields = line.splitn(2, ' ');
            let id = fields.next().unwrap_or_default().to_string();
            let token = fields.next().unwrap_or_default().to_string();
            (id, token)
        })
        .collect())
}

/// The ledger invariants: no id twice, no token missing or wrong, every answered success in
/// its ledger exactly once, every request answered.
fn ledger_violations(
    outcomes: &[Outcome],
    ledgers: &BTreeMap<String, Vec<(String, String)>>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (session, lines) in ledgers {
        for (id, token) in lines {
            *seen.entry(id.as_str()).or_default() += 1;
            if token.is_empty() || *token != token_of(id) {
                wrong.push(format!("{session}: {id} wrote token {token:?}"));
            }
        }
    }
    for (id, times) in &seen {
        if *times > 1 {
            wrong.push(format!("{id} ran {times} times"));
        }
    }
    for o in outcomes {
        match &o.answer {
            Answer::Result { exit_code: 0, .. } if seen.get(o.id.as_str()) != Some(&1) => {
                wrong.push(format!(
                    "{} answered success but is not in the ledger of {}",
                    o.id, o.session
                ));
            }
            Answer::Result { exit_code, .. } if *exit_code != 0 => {
                wrong.push(format!("{} exited {exit_code}", o.id));
            }
            Answer::Broken { last } => wrong.push(format!("{} unanswered: {last}", o.id)),
            _ => {}
        }
    }
    wrong
}

/// The env Secrets in the tenant namespace now: what an earlier run left is not this
/// scenario's doing.
async fn env_secrets(client: &Client) -> BTreeSet<String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), TENANT);
    let env_secrets = ListParams::default().labels("kubexec.dev/execution");
    secrets
        .list(&env_secrets)
        .await
        .map(|l| l.items.iter().map(|s| s.name_any()).collect())
        .unwrap_or_default()
}

/// A key of the suite's tenant, made once per run as `make up` makes the demo's.
fn chaos_key() -> String {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let out = std::process::Command::new(kubexec_binary())
            .args([
                "keys",
                "create",
                "--tenant",
                TENANT_NAME,
                "--tier",
                "enterprise",
            ])
            .env("KUBEXEC_KEYS_NAMESPACE", RELEASE)
            .output()
            .expect("kubexec keys create");
        assert!(
            out.status.success(),
            "keys create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
    .clone()
}

/// Runs `fault` `times` times under load in fresh sessions, then checks every invariant and
/// prints the scenario's row; panics with the broken invariants.
async fn scenario<F, Fut>(name: &'static str, faults: &str, times: usize, mut fault: F)
where
    F: FnMut(usize, Vec<String>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (http, _) = deployed();
    let key = chaos_key();
    let client = Client::try_default().await.expect("kubeconfig");
    let known = env_secrets(&client).await;
    let sessions = Sessions::create(&http, &key, 2).await;
    // Ids (and so Idempotency-Keys) unique to this run: a cluster kept from an earlier run
    // still has that run's executions.
    let run = format!(
        "{name}-{}",
        jiff::Timestamp::now().as_millisecond() % 100_000_000
    );
    let load = Load::start(&run, http, &key, &sessions.names, 4);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut in_flight = Vec::new();
    for n in 0..times {
        in_flight.push(load.in_flight());
        fault(n, sessions.names.clone()).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let outcomes = load.finish().await;
    let (mut violations, settled_in) =
        settle(SETTLE_BOUND, || unsettled(&client, &sessions.names, &known)).await;
    let mut ledgers = BTreeMap::new();
    for session in &sessions.names {
        match ledger(&http, &key, session).await {
            Ok(lines) => {
                ledgers.insert(session.clone(), lines);
            }
            Err(e) => violations.push(format!("ledger of {session}: {e}")),
        }
    }
    violations.extend(ledger_violations(&outcomes, &ledgers));
    let row = Row {
        scenario: name,
        faults: faults.to_string(),
        in_flight,
        outcomes,
        violations,
        settled_in,
    };
    row.print();
    assert!(row.violations.is_empty(), "{name}: invariants broken");
}

/// Host pids of the processes of Pod `uid` whose command line contains `needle` (the local
/// cluster's containers are host processes; their cgroup path names the Pod).
fn pod_processes(uid: &str, needle: &str) -> Vec<u32> {
    let marks = [format!("pod{uid}"), format!("pod{}", uid.replace('-', "_"))];
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if !marks.iter().any(|m| cgroup.contains(m.as_str())) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(pid);
        }
    }
    found
}

fn sigkill(pids: &[u32]) {
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

/// Restarts a cluster component the way a crash does (`e2e/cluster/restart`).
fn restart(component: &str) {
    let out = std::process::Command::new(repo_root().join("e2e/cluster/restart"))
        .arg(component)
        .output()
        .expect("e2e/cluster/restart");
    assert!(
        out.status.success(),
        "restart {component}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The operator Pod holding the Lease, and its uid.
async fn leader(client: &Client) -> (String, String) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), RELEASE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE);
    for _ in 0..60 {
        let holder = leases
            .get_opt("kubexec-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec.and_then(|s| s.holder_identity));
        if let Some(holder) = holder {
            if let Ok(Some(pod)) = pods.get_opt(&holder).await {
                let uid = pod.uid().unwrap_or_default();
                return (holder, uid);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("no operator holds the Lease");
}

/// 1. The leader operator is SIGKILLed three times during the load: no graceful release of
///    its Lease, so the other replica takes over only once the Lease expires.
#[tokio::test]
async fn a_leader_sigkilled_repeatedly_loses_nothing_and_runs_nothing_twice() {
    let client = Client::try_default().await.expect("kubeconfig");
    scenario(
        "leader-sigkill",
        "SIGKILL of the Lease holder ×3",
        3,
        |_, _| {
            let client = client.clone();
            async move {
                let (pod, uid) = leader(&client).await;
                let pids = pod_processes(&uid, "kubexec operator");
                assert!(!pids.is_empty(), "no operator process of {pod}");
                sigkill(&pids);
                // Wait until a leader is elected again (the same Pod, restarted, may win it).
                let leases: Api<Lease> = Api::namespaced(client.clone(), RELEASE);
                let killed_at = jiff::Timestamp::now();
                for _ in 0..90 {
                    let renewed = leases
                        .get_opt("kubexec-operator")
                        .await
                        .ok()
                        .flatten()
                        .and_then(|l| l.spec.and_then(|s| s.renew_time))
                        .is_some_and(|t| t.0 > killed_at);
                    if renewed {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        },
    )
    .await;
}

/// 3. The apiserver crashes and restarts while executions are in flight.
#[tokio::test]
#[ignore = "finds an open bug (docs/reliability.md): a retry after a first attempt that left its env Secret behind is answered 500 (the Secret exists), and that Secret is orphaned"]
async fn an_apiserver_restart_loses_nothing_and_runs_nothing_twice() {
    scenario(
        "apiserver-restart",
        "SIGKILL + restart of kube-apiserver",
        1,
        |_, _| async { restart("kube-apiserver") },
    )
    .await;
}

/// 6. The kubelet crashes and restarts, then containerd does.
#[tokio::test]
async fn kubelet_and_containerd_restarts_lose_nothing_and_run_nothing_twice() {
    scenario(
        "node-restarts",
        "SIGKILL + restart of the kubelet, then of containerd",
        2,
        |n, _| async move { restart(if n == 0 { "kubelet" } else { "containerd" }) },
    )
    .await;
}

/// 7. The PID 1 of a sandbox is killed: its container restarts in place (the workspace
///    stays); runs in flight there fail with a reason, nothing runs twice, and the session
///    serves again.
#[tokio::test]
#[ignore = "finds an open bug (docs/reliability.md): a retried idempotent execute whose Execution the api's cache does not show yet is answered 500 (name collision)"]
async fn a_sandbox_pid_1_killed_fails_only_its_runs_and_the_session_recovers() {
    let client = Client::try_default().await.expect("kubeconfig");
    scenario(
        "sandbox-pid1",
        "SIGKILL of a sandbox's PID 1 ×2",
        2,
        |_, sessions| {
            let client = client.clone();
            async move {
                let session_api: Api<Session> = Api::namespaced(client.clone(), TENANT);
                let pods: Api<Pod> = Api::namespaced(client, TENANT);
                let session = session_api.get(&sessions[0]).await.expect("session");
                let pod_name = session
                    .status
                    .and_then(|s| s.pod_name)
                    .expect("the session's Pod");
                let pod = pods.get(&pod_name).await.expect("sandbox Pod");
                let pids = pod_processes(&pod.uid().unwrap_or_default(), "kubexec-runner init");
                assert!(!pids.is_empty(), "no PID 1 in {pod_name}");
                sigkill(&pids);
            }
        },
    )
    .await;
}
