//! Runner channels on the real cluster: many executions over one long-lived
//! `kubexec-runner serve` exec per sandbox (the operator's default `--exec-transport channel`).
//!
//! Exactly-once under load, a channel process killed mid-run (the run is recovered by attach),
//! idle channels closing and reopening, a big workspace, and the fork bomb over a channel.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ListParams, PostParams};
use kubexec::crd::{Execution, ExecutionPhase, ExecutionStatus, Session};
use kubexec::layout::{RUNNER_PATH, SANDBOX_CONTAINER};
use kubexec::sandbox::protocol::{ExecResult, ExecSpec};
use kubexec::sandbox::{ChannelKey, ChannelMetrics, ChannelPool, PoolConfig};
use kubexec_e2e::{create_session, pod_of, repo_root, wait_for, wait_until, TestNs};
use serde_json::json;

const DONE_TIMEOUT: Duration = Duration::from_secs(120);

fn is_done(e: &Execution) -> bool {
    matches!(
        e.status.as_ref().and_then(|s| s.phase),
        Some(ExecutionPhase::Succeeded | ExecutionPhase::Failed)
    )
}

async fn create_execution(ns: &TestNs, name: &str, session: &str, spec: serde_json::Value) {
    let mut spec = spec;
    spec["sessionRef"] = json!({"name": session});
    let execution: Execution = serde_json::from_value(json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "Execution",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("execution literal");
    ns.api::<Execution>()
        .create(&PostParams::default(), &execution)
        .await
        .expect("create execution");
}

async fn run(ns: &TestNs, name: &str, session: &str, spec: serde_json::Value) -> ExecutionStatus {
    create_execution(ns, name, session, spec).await;
    wait_for(
        &ns.api::<Execution>(),
        name,
        DONE_TIMEOUT,
        "Succeeded or Failed",
        is_done,
    )
    .await
    .status
    .expect("status")
}

/// Lines of this test's operator log that contain `text`.
fn operator_log_count(ns: &TestNs, text: &str) -> usize {
    let path = repo_root()
        .join("target/e2e-logs")
        .join(format!("{}-operator.log", ns.name));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(text))
        .count()
}

const OPENED: &str = "runner channel opened";
const CLOSED_IDLE: &str = "closing an idle runner channel";

/// Shell that lists (or, with `kill -9`, kills) the sandbox's `serve` processes by their exact
/// command line (their `/proc/<pid>/cmdline` stays readable; nothing else of them is).
fn serve_processes(action: &str) -> String {
    format!(
        r#"n=0; for p in /proc/[0-9]*; do
  c=$(tr '\0' ' ' < $p/cmdline 2>/dev/null)
  if [ "$c" = "{RUNNER_PATH} serve " ]; then {action} ${{p#/proc/}}; n=$((n+1)); fi
done; echo $n"#
    )
}

/// The command of load execution `x<i>`: one ledger line, one line of output, exit `i % 7`.
fn ledger_command(i: usize) -> String {
    format!(
        "echo x{i} >> /workspace/ledger; echo out-{i}; exit {}",
        i % 7
    )
}

/// Each load execution's own exit code and output.
fn check_results(results: &[(usize, ExecutionStatus)]) {
    for (i, status) in results {
        assert_eq!(status.exit_code, Some((i % 7) as i32), "x{i}: {status:#?}");
        assert_eq!(
            status.stdout.as_deref(),
            Some(format!("out-{i}\n").as_str()),
            "x{i}"
        );
    }
}

/// The ledgers of `sessions` (load execution `x<i>` runs in session `i % len`) hold each of
/// `total` executions exactly once, each in its own session.
fn check_ledgers(ns: &TestNs, sessions: &[Session], total: usize) {
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for (index, session) in sessions.iter().enumerate() {
        let ledger = ns.sh(&pod_of(session), "cat /workspace/ledger");
        for name in ledger.lines() {
            let i: usize = name.trim_start_matches('x').parse().expect("a ledger line");
            assert_eq!(i % sessions.len(), index, "{name} ran in the wrong session");
            *seen.entry(name.to_string()).or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
    assert_eq!(seen.len(), total, "every execution ran");
}

#[tokio::test]
async fn five_hundred_executions_over_ten_sessions_complete_exactly_once() {
    let ns = TestNs::new("chan-load").await;
    let sessions: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let created = futures::future::join_all(
        sessions
            .iter()
            .map(|name| create_session(&ns, name, json!({}))),
    )
    .await;
    let started = Instant::now();
    let results: Vec<(usize, ExecutionStatus)> = futures::stream::iter(0..500usize)
        .map(|i| {
            let ns = &ns;
            let session = sessions[i % sessions.len()].clone();
            async move {
                let name = format!("x{i}");
                let command = ledger_command(i);
                (
                    i,
                    run(ns, &name, &session, json!({ "command": command })).await,
                )
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let elapsed = started.elapsed();
    println!(
        "500 executions over 10 sessions at concurrency 50: {:.1} s, {:.1}/s",
        elapsed.as_secs_f64(),
        500.0 / elapsed.as_secs_f64()
    );
    check_results(&results);
    let running: Vec<String> = ns
        .api::<Execution>()
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter(|e| !is_done(e))
        .filter_map(|e| e.metadata.name)
        .collect();
    assert!(running.is_empty(), "not finished: {running:?}");

    // The ledgers: every execution ran exactly once, in its own session.
    check_ledgers(&ns, &created, 500);
    assert_eq!(
        operator_log_count(&ns, OPENED),
        10,
        "one channel per session"
    );
}

/// Two operator replicas under leader election. The leader is SIGKILLed (so its Lease is never
/// released) while 300 executions run over 10 sessions at concurrency 30; the standby takes over
/// once the Lease expires. Every execution finishes exactly once: the ledgers prove it.
#[tokio::test]
async fn a_leader_killed_under_load_loses_nothing_and_runs_nothing_twice() {
    const TOTAL: usize = 300;
    const KILL_AFTER: usize = 100;
    let mut ns = TestNs::new("chan-leader").await;
    ns.kill_operator();
    let replica = |id: &'static str| {
        let election = [
            ("KUBEXEC_LEADER_ELECTION", "true"),
            ("KUBEXEC_LEASE_NAMESPACE", ns.name.as_str()),
            ("KUBEXEC_LEASE_DURATION", "6"),
            ("KUBEXEC_POD_NAME", id),
        ];
        ns.spawn_replica(id, &election)
            .expect("this test starts its own replicas (not with an external operator)")
    };
    let mut replicas = [replica("op-a"), replica("op-b")];
    let sessions: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let created = futures::future::join_all(
        sessions
            .iter()
            .map(|name| create_session(&ns, name, json!({}))),
    )
    .await;
    let leases: kube::Api<Lease> = ns.api();
    let holder = || async {
        leases
            .get_opt("kubexec-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    };

    let finished = std::sync::atomic::AtomicUsize::new(0);
    let load = futures::stream::iter(0..TOTAL)
        .map(|i| {
            let (ns, finished) = (&ns, &finished);
            let session = sessions[i % sessions.len()].clone();
            async move {
                let name = format!("x{i}");
                let command = ledger_command(i);
                let status = run(ns, &name, &session, json!({ "command": command })).await;
                finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (i, status)
            }
        })
        .buffer_unordered(30)
        .collect::<Vec<_>>();
    let kill = async {
        wait_until(DONE_TIMEOUT, "the first executions to finish", || async {
            finished.load(std::sync::atomic::Ordering::Relaxed) >= KILL_AFTER
        })
        .await;
        let leader = holder().await.expect("a leader holds the Lease");
        let index = usize::from(leader == "op-b");
        replicas[index].kill();
        let killed_at = Instant::now();
        let at = finished.load(std::sync::atomic::Ordering::Relaxed);
        wait_until(DONE_TIMEOUT, "the standby to take the Lease", || async {
            holder().await.is_some_and(|h| h != leader)
        })
        .await;
        println!(
            "killed leader {leader} after {at} of {TOTAL} executions; the standby took over in {:.1} s",
            killed_at.elapsed().as_secs_f64()
        );
        index
    };
    let (results, killed) = futures::join!(load, kill);
    assert!(
        replicas[1 - killed].pid().is_some(),
        "the new leader still runs"
    );

    check_results(&results);
    check_ledgers(&ns, &created, TOTAL);
}

#[tokio::test]
async fn a_killed_channel_process_is_recovered_by_attach_and_reopened() {
    let ns = TestNs::new("chan-kill").await;
    let session = create_session(&ns, "k", json!({})).await;
    let pod = pod_of(&session);
    let warm = run(&ns, "warm", "k", json!({"command": "true"})).await;
    assert_eq!(warm.exit_code, Some(0), "{warm:#?}");
    assert_eq!(operator_log_count(&ns, OPENED), 1);

    create_execution(
        &ns,
        "long",
        "k",
        json!({"command": "echo once >> /workspace/kill-ledger; echo start; sleep 4; echo end; exit 5"}),
    )
    .await;
    wait_until(Duration::from_secs(60), "the run to start", || async {
        ns.sh(&pod, "cat /workspace/kill-ledger 2>/dev/null || true") == "once"
    })
    .await;
    let killed = ns.sh(&pod, &serve_processes("kill -9"));
    assert_eq!(killed, "1", "one channel process");

    let status = wait_for(
        &ns.api::<Execution>(),
        "long",
        DONE_TIMEOUT,
        "done",
        is_done,
    )
    .await
    .status
    .expect("status");
    assert_eq!(status.exit_code, Some(5), "the real exit code: {status:#?}");
    assert_eq!(
        status.stdout.as_deref(),
        Some("start\nend\n"),
        "{status:#?}"
    );
    assert_eq!(
        ns.sh(&pod, "cat /workspace/kill-ledger"),
        "once",
        "attached, never run again"
    );
    let next = run(&ns, "next", "k", json!({"command": "echo next"})).await;
    assert_eq!(next.stdout.as_deref(), Some("next\n"));
    assert_eq!(operator_log_count(&ns, OPENED), 2, "the channel reopened");
    assert_eq!(ns.sh(&pod, &serve_processes("true")), "1");
}

#[tokio::test]
async fn an_idle_channel_closes_and_the_next_execution_reopens_it() {
    let mut ns = TestNs::new("chan-idle").await;
    ns.kill_operator();
    ns.start_operator_with(&[("KUBEXEC_CHANNEL_IDLE_SECONDS", "2")]);
    let session = create_session(&ns, "i", json!({})).await;
    let pod = pod_of(&session);
    let first = run(&ns, "first", "i", json!({"command": "echo first"})).await;
    assert_eq!(first.stdout.as_deref(), Some("first\n"));
    assert_eq!(operator_log_count(&ns, OPENED), 1);

    wait_until(
        Duration::from_secs(60),
        "the idle channel to close",
        || async {
            operator_log_count(&ns, CLOSED_IDLE) == 1
                && ns.sh(&pod, &serve_processes("true")) == "0"
        },
    )
    .await;
    let second = run(&ns, "second", "i", json!({"command": "echo second"})).await;
    assert_eq!(second.stdout.as_deref(), Some("second\n"));
    assert_eq!(operator_log_count(&ns, OPENED), 2, "reopened on use");
}

#[tokio::test]
async fn true_in_a_workspace_of_ten_thousand_files() {
    let ns = TestNs::new("chan-files").await;
    create_session(&ns, "f", json!({})).await;
    let made = run(
        &ns,
        "make",
        "f",
        json!({"command": "mkdir -p many && cd many && seq 10000 | xargs touch && ls | wc -l"}),
    )
    .await;
    assert_eq!(made.stdout.as_deref(), Some("10000\n"), "{made:#?}");
    let mut took = Vec::new();
    for i in 0..5 {
        let started = Instant::now();
        let status = run(&ns, &format!("t{i}"), "f", json!({"command": "true"})).await;
        took.push(started.elapsed().as_millis());
        assert_eq!(status.exit_code, Some(0), "{status:#?}");
        assert!(status.files_written.is_empty(), "{status:#?}");
    }
    println!("`true` next to 10,000 files, Execution create to done (ms): {took:?}");
}

/// As `containment.rs`'s `run`, over a channel.
async fn run_on(
    channel: &kubexec::sandbox::Channel,
    run_id: &str,
    command: &str,
    timeout_seconds: u32,
) -> ExecResult {
    let mut spec = ExecSpec::new(run_id);
    spec.command = Some(command.into());
    spec.timeout_seconds = timeout_seconds;
    channel
        .exec(&spec)
        .await
        .unwrap_or_else(|e| panic!("exec {run_id}: {e}"))
        .result(|_| {})
        .await
        .unwrap_or_else(|e| panic!("result of {run_id}: {e}"))
}

#[tokio::test]
async fn a_fork_bomb_stays_inside_its_session_over_a_channel() {
    let ns = TestNs::new("chan-forkbomb").await;
    let bombed = create_session(&ns, "bombed", json!({"resources": {"pids": 128}})).await;
    let other = create_session(&ns, "other", json!({})).await;
    let pool = ChannelPool::kube(
        ns.client.clone(),
        PoolConfig::default(),
        ChannelMetrics::default(),
    );
    let channel = |pod: String| {
        let pool = pool.clone();
        let key = ChannelKey {
            namespace: ns.name.clone(),
            pod,
            pod_uid: None,
            container: SANDBOX_CONTAINER,
        };
        async move {
            pool.channel(&key)
                .await
                .expect("opens")
                .expect("the runner has a channel")
        }
    };
    let bombed = channel(pod_of(&bombed)).await;
    let other = channel(pod_of(&other)).await;
    let bomb = tokio::spawn({
        let bombed = bombed.clone();
        async move {
            run_on(
                &bombed,
                "bomb",
                "bash -c ':(){ :|:& };:'; exec sleep 60",
                10,
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let meanwhile = run_on(&other, "meanwhile", "true", 30).await;
    assert_eq!(meanwhile.exit_code, 0, "{meanwhile:?}");
    // The bombed session's channel still takes requests while the bomb runs.
    let alongside = run_on(&bombed, "alongside", "echo alive", 30).await;
    assert_eq!(alongside.stdout, "alive\n", "{alongside:?}");

    let bomb = bomb.await.expect("the bomb's execution ends");
    assert!(bomb.timed_out, "{bomb:?}");
    assert!(
        bomb.stderr.contains("Resource temporarily unavailable") || bomb.stderr.contains("fork"),
        "fork errors inside the session: {bomb:?}"
    );
    let next = run_on(&bombed, "after", "ls / | wc -l", 30).await;
    assert_eq!(next.exit_code, 0, "{next:?}");
    assert_eq!(
        pool.metrics().opens.get(),
        2,
        "one channel per sandbox, kept open"
    );
}

// ---- No cluster: the pool against a local `kubexec-runner serve` (target/debug, built by
// `cargo build -p kubexec-runner`), so the client and the real runner are tested together.

mod local {
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use futures::future::BoxFuture;
    use futures::{FutureExt, StreamExt};
    use kubexec::sandbox::protocol::{ExecSpec, ResultKey};
    use kubexec::sandbox::{
        ChannelKey, ChannelMetrics, ChannelPool, Connect, Connection, PoolConfig, SandboxError,
    };
    use tokio::io::AsyncReadExt;

    /// Starts `serve` with its workspace in a temp dir; remembers each process's pid.
    struct LocalServe {
        workspace: PathBuf,
        pids: Arc<Mutex<Vec<u32>>>,
    }

    impl Connect for LocalServe {
        fn connect(
            &self,
            _key: &ChannelKey,
        ) -> BoxFuture<'static, Result<Connection, SandboxError>> {
            let runner = kubexec_e2e::repo_root().join("target/debug/kubexec-runner");
            let spawned = tokio::process::Command::new(runner)
                .arg("serve")
                .env("KUBEXEC_WORKSPACE", &self.workspace)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn();
            let pids = self.pids.clone();
            async move {
                let mut child = spawned.map_err(SandboxError::Stream)?;
                pids.lock().expect("pids").extend(child.id());
                let input = child.stdin.take().expect("stdin");
                let stdout = child.stdout.take().expect("stdout");
                let output =
                    futures::stream::unfold((stdout, child), |(mut stdout, child)| async move {
                        let mut buffer = vec![0; 64 * 1024];
                        match stdout.read(&mut buffer).await {
                            Ok(0) => None,
                            Ok(n) => {
                                buffer.truncate(n);
                                Some((Ok(bytes::Bytes::from(buffer)), (stdout, child)))
                            }
                            Err(e) => Some((Err(SandboxError::Stream(e)), (stdout, child))),
                        }
                    })
                    .boxed();
                Ok(Connection {
                    input: Box::pin(input),
                    output,
                })
            }
            .boxed()
        }
    }

    fn spec(workspace: &std::path::Path, run_id: &str, command: &str) -> ExecSpec {
        let mut spec = ExecSpec::new(run_id);
        spec.workspace = workspace.display().to_string();
        spec.command = Some(command.into());
        spec.result_key = Some(ResultKey::from_bytes([4; 32]));
        spec
    }

    #[tokio::test]
    async fn the_pool_runs_and_reattaches_over_a_local_serve() {
        let workspace = std::env::temp_dir().join(format!("kx-chan-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&workspace);
        std::fs::create_dir_all(&workspace).expect("workspace");
        let pids = Arc::new(Mutex::new(Vec::new()));
        let pool = ChannelPool::new(
            LocalServe {
                workspace: workspace.clone(),
                pids: pids.clone(),
            },
            PoolConfig::default(),
            ChannelMetrics::default(),
        );
        let key = ChannelKey {
            namespace: "local".into(),
            pod: "local".into(),
            pod_uid: None,
            container: "sandbox",
        };
        let channel = pool.channel(&key).await.expect("opens").expect("a channel");
        let runs = (0..40).map(|i| {
            let channel = channel.clone();
            let spec = spec(
                &workspace,
                &format!("run-{i}"),
                &format!("echo {i}; exit {}", i % 3),
            );
            async move {
                channel
                    .exec(&spec)
                    .await
                    .expect("sent")
                    .result(|_| {})
                    .await
            }
        });
        for (i, result) in futures::future::join_all(runs)
            .await
            .into_iter()
            .enumerate()
        {
            let result = result.expect("a result");
            assert_eq!(result.stdout, format!("{i}\n"));
            assert_eq!(result.exit_code, (i % 3) as i32);
        }

        // The serve process dies mid-run: the request fails as a broken stream would, the run
        // goes on, and the same spec on the reopened channel attaches to it.
        let long = spec(&workspace, "long", "echo start; sleep 1; echo end; exit 5");
        let run = channel.exec(&long).await.expect("sent");
        let started = workspace.join(".kubexec/runs/long/stdout");
        while std::fs::read_to_string(&started)
            .unwrap_or_default()
            .is_empty()
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let pid = pids.lock().expect("pids")[0];
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        assert!(matches!(
            run.result(|_| {}).await,
            Err(SandboxError::StreamClosed)
        ));
        let reopened = pool
            .channel(&key)
            .await
            .expect("reopens")
            .expect("a channel");
        let result = reopened
            .exec(&long)
            .await
            .expect("sent")
            .result(|_| {})
            .await
            .expect("attached");
        assert!(result.recovered, "{result:?}");
        assert_eq!(
            (result.exit_code, result.stdout.as_str()),
            (5, "start\nend\n")
        );
        assert_eq!(pool.metrics().opens.get(), 2);
        let _ = std::fs::remove_dir_all(&workspace);
    }
}
