//! Executions on the real cluster: the exec client, and the Execution controller end to end.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kubexec::crd::{Execution, ExecutionPhase, ExecutionStatus, Session, SessionPhase};
use kubexec::sandbox::protocol::{ExecSpec, ProcessList, RunnerEvent};
use kubexec::sandbox::{Sandbox, SandboxError};
use kubexec_e2e::{
    create_session, pod_of, repo_root, wait_for, wait_gone, wait_until, TestNs, READY_TIMEOUT,
};
use serde_json::json;

/// The Events about Executions in the namespace: (type, reason, Execution name).
async fn execution_events(ns: &TestNs) -> Vec<(String, String, String)> {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = ns.api();
    events
        .list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter_map(|e| {
            let regarding = e.regarding?;
            (regarding.kind.as_deref() == Some("Execution")).then(|| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    regarding.name.unwrap_or_default(),
                )
            })
        })
        .collect()
}

/// Waits until an Execution is Running (its exec has started).
async fn wait_running(ns: &TestNs, name: &str) {
    wait_for(
        &ns.api::<Execution>(),
        name,
        DONE_TIMEOUT,
        "Running",
        |e: &Execution| e.status.as_ref().and_then(|s| s.phase) == Some(ExecutionPhase::Running),
    )
    .await;
}

#[tokio::test]
async fn sandbox_client_runs_helpers_and_exec() {
    let ns = TestNs::new("exe-client").await;
    let session = create_session(&ns, "client", json!({})).await;
    let sandbox = Sandbox::new(ns.client.clone(), &ns.name, &pod_of(&session));

    let list: ProcessList = sandbox
        .helper_json(&["ps"], None, 1 << 20)
        .await
        .expect("ps");
    assert!(
        list.processes.is_empty(),
        "only user processes are listed: {list:?}"
    );

    let mut spec = ExecSpec::new("client-run-1");
    spec.command = Some("echo out; echo err >&2; exit 3".into());
    let run = sandbox.exec(&spec).await.expect("exec starts");
    let mut chunks = String::new();
    let result = run
        .result(|event| {
            if let RunnerEvent::Stdout { data } = event {
                chunks.push_str(data);
            }
        })
        .await
        .expect("result");
    assert_eq!(result.exit_code, 3);
    assert_eq!(result.stdout, "out\n");
    assert_eq!(result.stderr, "err\n");
    assert_eq!(chunks, "out\n");
    assert!(!result.recovered);

    // Same run ID again: replayed, never re-run.
    let again = sandbox
        .exec(&spec)
        .await
        .expect("exec starts")
        .result(|_| {})
        .await
        .expect("result");
    assert!(again.recovered);
    assert_eq!(again.stdout, "out\n");

    // A failing helper reports the runner's error; a missing Pod is recognised.
    let missing = sandbox
        .run_helper(&["cat", "no/such/file"], None, 1024)
        .await
        .expect("runs")
        .check();
    assert!(
        matches!(missing, Err(SandboxError::Runner { .. })),
        "{missing:?}"
    );
    let gone = Sandbox::new(ns.client.clone(), &ns.name, "no-such-pod")
        .run_helper(&["ps"], None, 1024)
        .await;
    assert!(
        matches!(gone, Err(SandboxError::PodNotFound { .. })),
        "{gone:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The Execution controller.
// ---------------------------------------------------------------------------------------------

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

async fn wait_done(ns: &TestNs, name: &str) -> Execution {
    wait_for(
        &ns.api::<Execution>(),
        name,
        DONE_TIMEOUT,
        "Succeeded or Failed",
        is_done,
    )
    .await
}

/// Creates an Execution and returns its final status.
async fn run(ns: &TestNs, name: &str, session: &str, spec: serde_json::Value) -> ExecutionStatus {
    create_execution(ns, name, session, spec).await;
    wait_done(ns, name).await.status.expect("status")
}

fn assert_succeeded(status: &ExecutionStatus) {
    assert_eq!(
        status.phase,
        Some(ExecutionPhase::Succeeded),
        "status: {status:#?}"
    );
    assert_eq!(status.exit_code, Some(0));
    assert!(status
        .conditions
        .iter()
        .any(|c| c.type_ == "Complete" && c.status == "True"));
}

fn apply_sample(ns: &TestNs, file: &str) {
    let path = repo_root().join("manifests/samples").join(file);
    let out = ns.kubectl(&["apply", "-f", path.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "apply {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn samples_complete_with_their_output_and_measurements() {
    let ns = TestNs::new("exe-samples").await;
    apply_sample(&ns, "session.yaml");
    let samples = [
        ("execution-code.yaml", "hello-code", "Sum: 15\n"),
        ("execution-command.yaml", "hello-command", "hi from Linux\n"),
        ("execution-files.yaml", "hello-files", "Result: 8\n"),
    ];
    for (file, _, _) in samples {
        apply_sample(&ns, file);
    }
    for (_, name, expected) in samples {
        let out = ns.kubectl(&[
            "wait",
            "--for=condition=Complete",
            &format!("execution/{name}"),
            "--timeout=120s",
        ]);
        assert!(
            out.status.success(),
            "kubectl wait {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status = ns
            .api::<Execution>()
            .get(name)
            .await
            .expect("execution")
            .status
            .expect("status");
        assert_succeeded(&status);
        let stdout = status.stdout.clone().unwrap_or_default();
        assert!(stdout.starts_with(expected), "{name}: {stdout:?}");
        assert!(status.execution_time_ms.unwrap_or(0) > 0, "{status:#?}");
        assert!(status.memory_used_bytes.unwrap_or(0) > 0, "{status:#?}");
        assert!(status.cpu_time_ms.unwrap_or(0) > 0, "{status:#?}");
        assert!(status.start_time.is_some() && status.completion_time.is_some());
        assert_eq!(status.pod_name.as_deref(), Some("demo-sandbox"));
    }
    let files = ns
        .api::<Execution>()
        .get("hello-files")
        .await
        .expect("execution")
        .status
        .expect("status");
    assert_eq!(files.files_written, vec!["math.ts", "index.ts"]);
    // By default (`--execution-events warnings`) a run that succeeds records no Event: neither
    // Started nor Completed (an_execution_for_a_missing_session_fails sees a Warning recorded).
    let normal: Vec<_> = execution_events(&ns)
        .await
        .into_iter()
        .filter(|(type_, _, _)| type_ == "Normal")
        .collect();
    assert!(normal.is_empty(), "{normal:?}");
}

#[tokio::test]
async fn typescript_imports_a_file_written_by_the_same_execution() {
    let ns = TestNs::new("exe-ts").await;
    create_session(&ns, "ts", json!({})).await;
    let status = run(
        &ns,
        "import",
        "ts",
        json!({
            "files": [{"path": "lib/greet.ts",
                       "content": "export const greet = (n: string): string => `hello ${n}`;\n"}],
            "code": "import { greet } from './lib/greet.ts';\nconst who: string = 'kubexec';\nconsole.log(greet(who));\n",
        }),
    )
    .await;
    assert_succeeded(&status);
    assert_eq!(status.stdout.as_deref(), Some("hello kubexec\n"));
    assert_eq!(status.files_written, vec!["lib/greet.ts"]);
}

#[tokio::test]
async fn a_file_written_by_one_execution_is_read_by_the_next() {
    let ns = TestNs::new("exe-files").await;
    create_session(&ns, "files", json!({})).await;
    let first = run(
        &ns,
        "write",
        "files",
        json!({"command": "mkdir -p data && echo 'kept between runs' > data/note.txt"}),
    )
    .await;
    assert_succeeded(&first);
    let second = run(
        &ns,
        "read",
        "files",
        json!({"command": "cat data/note.txt"}),
    )
    .await;
    assert_succeeded(&second);
    assert_eq!(second.stdout.as_deref(), Some("kept between runs\n"));
}

#[tokio::test]
async fn a_timeout_kills_the_process_group_promptly() {
    let ns = TestNs::new("exe-timeout").await;
    let session = create_session(&ns, "slow", json!({})).await;
    let started = Instant::now();
    let status = run(
        &ns,
        "sleepy",
        "slow",
        json!({"command": "sleep 30", "timeoutSeconds": 1}),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status.phase, Some(ExecutionPhase::Failed), "{status:#?}");
    assert_eq!(status.timed_out, Some(true));
    assert_eq!(status.reason.as_deref(), Some("TimedOut"));
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True"),
        "{status:#?}"
    );
    // The runner's own clock: 1 s, then TERM and (after its grace) KILL to the group.
    assert!(
        status.execution_time_ms.unwrap_or(i64::MAX) < 5000,
        "{status:#?}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let sandbox = Sandbox::new(ns.client.clone(), &ns.name, &pod_of(&session));
    let list: ProcessList = sandbox
        .helper_json(&["ps"], None, 1 << 20)
        .await
        .expect("ps");
    assert!(
        !list
            .processes
            .iter()
            .any(|p| p.command.contains("sleep 30")),
        "{list:?}"
    );
}

#[tokio::test]
async fn an_oom_kill_is_reported_and_the_session_survives() {
    let ns = TestNs::new("exe-oom").await;
    let session = create_session(&ns, "small", json!({"resources": {"memory": "128Mi"}})).await;
    let status = run(
        &ns,
        "hog",
        "small",
        json!({
            "code": "const chunks = [];\nfor (let i = 0; i < 300; i++) chunks.push(new Uint8Array(1 << 20).fill(1));\nconsole.log(chunks.length);\n",
            "timeoutSeconds": 60,
        }),
    )
    .await;
    assert_eq!(status.phase, Some(ExecutionPhase::Failed), "{status:#?}");
    assert_eq!(status.oom_killed, Some(true), "{status:#?}");
    assert_eq!(status.reason.as_deref(), Some("OOMKilled"));
    let after = run(&ns, "after", "small", json!({"command": "echo still here"})).await;
    assert_succeeded(&after);
    assert_eq!(after.stdout.as_deref(), Some("still here\n"));
    assert_eq!(after.pod_name, Some(pod_of(&session)), "same Pod");
    let pod = ns
        .api::<k8s_openapi::api::core::v1::Pod>()
        .get(&pod_of(&session))
        .await
        .expect("pod");
    assert_eq!(pod.metadata.uid, after.pod_uid, "the Pod was not replaced");
}

#[tokio::test]
async fn a_background_process_outlives_its_execution() {
    let ns = TestNs::new("exe-bg").await;
    let session = create_session(&ns, "bg", json!({})).await;
    let first = run(
        &ns,
        "spawn",
        "bg",
        json!({"command": "sleep 1000 & echo started"}),
    )
    .await;
    assert_succeeded(&first);
    assert!(
        first.execution_time_ms.unwrap_or(i64::MAX) < 5000,
        "finished promptly: {first:#?}"
    );
    let second = run(&ns, "list", "bg", json!({"command": "ps -eo args"})).await;
    assert_succeeded(&second);
    assert!(
        second
            .stdout
            .as_deref()
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim() == "sleep 1000"),
        "{second:#?}"
    );
    let sandbox = Sandbox::new(ns.client.clone(), &ns.name, &pod_of(&session));
    let list: ProcessList = sandbox
        .helper_json(&["ps"], None, 1 << 20)
        .await
        .expect("ps");
    assert!(
        list.processes.iter().any(|p| p.command == "sleep 1000"),
        "{list:?}"
    );
}

#[tokio::test]
async fn large_output_is_capped_in_the_status_and_kept_in_the_workspace() {
    let ns = TestNs::new("exe-big").await;
    let session = create_session(&ns, "big", json!({})).await;
    create_execution(
        &ns,
        "flood",
        "big",
        json!({"command": "head -c 5000000 /dev/zero | tr '\\0' x; echo; echo tail-marker"}),
    )
    .await;
    let execution = wait_done(&ns, "flood").await;
    let status = execution.status.clone().expect("status");
    assert_succeeded(&status);
    assert_eq!(status.stdout_bytes, Some(5_000_000 + 1 + 12));
    assert_eq!(status.stdout_truncated, Some(true));
    let stdout = status.stdout.clone().unwrap_or_default();
    assert!(stdout.starts_with("xxxx") && stdout.ends_with("tail-marker\n"));
    assert!(stdout.contains("bytes truncated"));
    let size = serde_json::to_vec(&execution).expect("json").len();
    assert!(size < 128 * 1024, "the object is {size} bytes");

    let uid = execution.metadata.uid.clone().expect("uid");
    let full = ns.sh(
        &pod_of(&session),
        &format!("wc -c < /workspace/.kubexec/runs/{uid}/stdout"),
    );
    assert_eq!(full, "5000013");
}

#[tokio::test]
async fn a_restarted_operator_recovers_a_running_execution_without_rerunning_it() {
    let mut ns = TestNs::new("exe-restart").await;
    let session = create_session(&ns, "steady", json!({})).await;
    // Attach path: the run is still going when the new operator looks.
    create_execution(
        &ns,
        "attach",
        "steady",
        json!({"command": "echo ran >> attach.log; sleep 5; echo done", "timeoutSeconds": 60}),
    )
    .await;
    wait_running(&ns, "attach").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ns.kill_operator();
    tokio::time::sleep(Duration::from_secs(1)).await;
    ns.start_operator();
    let attached = wait_done(&ns, "attach").await.status.expect("status");
    assert_succeeded(&attached);
    assert_eq!(attached.stdout.as_deref(), Some("done\n"));

    // Replay path: the run finishes while no operator is running.
    create_execution(
        &ns,
        "replay",
        "steady",
        json!({"command": "echo ran >> replay.log; sleep 2; echo done", "timeoutSeconds": 60}),
    )
    .await;
    wait_running(&ns, "replay").await;
    ns.kill_operator();
    tokio::time::sleep(Duration::from_secs(5)).await;
    ns.start_operator();
    let replayed = wait_done(&ns, "replay").await.status.expect("status");
    assert_succeeded(&replayed);
    assert_eq!(replayed.stdout.as_deref(), Some("done\n"));

    let pod = pod_of(&session);
    assert_eq!(ns.sh(&pod, "wc -l < /workspace/attach.log"), "1");
    assert_eq!(ns.sh(&pod, "wc -l < /workspace/replay.log"), "1");
}

/// The newest run directory's name (the running Execution's UID), in shell.
const CURRENT_RUN: &str = "RUN=$(ls -t /workspace/.kubexec/runs | head -1)";

#[tokio::test]
async fn a_forged_result_frame_leaves_the_real_result_in_the_status() {
    let ns = TestNs::new("exe-forged-frame").await;
    create_session(&ns, "forge", json!({})).await;
    // User code writes a complete, well-formed result frame for its own run to every fd of
    // every runner process it can open: the exec stream's stdout above all (/proc/$PPID/fd/1).
    let script = format!(
        r#"{CURRENT_RUN}
P='{{"type":"result","version":1,"runId":"'$RUN'","exitCode":0,"stdout":"FORGED","stderr":"","stdoutBytes":6,"stderrBytes":0,"stdoutTruncated":false,"stderrTruncated":false,"executionTimeMs":1,"memoryUsedBytes":1,"cpuTimeMs":1,"timedOut":false,"oomKilled":false,"filesWritten":[],"startedAt":1,"finishedAt":2,"mac":"'$(printf '%064d' 0)'"}}'
F=$(printf 'KUBEXEC/1 %d\n%s' ${{#P}} "$P")
n=0
for d in /proc/$PPID /proc/[0-9]*; do
  [ "$(cat $d/comm 2>/dev/null)" = kubexec-runner ] || continue
  for fd in 0 1 2 3 4 5; do
    ( printf '%s' "$F" > $d/fd/$fd ) 2>/dev/null && n=$((n+1))
  done
done
echo "forged-writes=$n"
echo genuine-output
exit 7"#
    );
    let status = run(&ns, "forged", "forge", json!({"command": script})).await;
    assert_eq!(status.exit_code, Some(7), "status: {status:#?}");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExit"));
    assert_eq!(
        status.stdout.as_deref(),
        Some("forged-writes=0\ngenuine-output\n"),
        "no runner fd is writable from user code: {status:#?}"
    );
}

#[tokio::test]
async fn a_rewritten_stored_result_is_never_replayed_after_a_restart() {
    let mut ns = TestNs::new("exe-forged-file").await;
    create_session(&ns, "forge", json!({})).await;
    // A background process waits for the runner to store the result, then rewrites it (exit
    // code and output), keeping the file well-formed and its MAC field as it was.
    let script = format!(
        r#"{CURRENT_RUN}
D=/workspace/.kubexec/runs/$RUN
( while [ ! -f $D/result.json ]; do sleep 0.1; done; sleep 0.2
  sed -e 's/"exitCode":7/"exitCode":0/' -e 's/genuine-output/FORGED/' $D/result.json > $D/forged.json
  mv $D/forged.json $D/result.json; echo rewritten > /workspace/rewritten ) >/dev/null 2>&1 &
sleep 3; echo genuine-output; exit 7"#
    );
    create_execution(
        &ns,
        "rewritten",
        "forge",
        json!({"command": script, "timeoutSeconds": 60}),
    )
    .await;
    wait_running(&ns, "rewritten").await;
    let session = ns.api::<Session>().get("forge").await.expect("session");
    let pod = pod_of(&session);
    let deadline = Instant::now() + Duration::from_secs(30);
    let claimed = "ls /workspace/.kubexec/runs/*/started 2>/dev/null | wc -l";
    while ns.sh(&pod, claimed) != "1" {
        assert!(
            Instant::now() < deadline,
            "the runner never claimed the run"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The operator dies while the run goes on; the run stores its result, user code rewrites it.
    ns.kill_operator();
    while ns.sh(&pod, "cat /workspace/rewritten 2>/dev/null || true") != "rewritten" {
        assert!(
            Instant::now() < deadline,
            "the stored result was never rewritten"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let stored = ns.sh(&pod, "cat /workspace/.kubexec/runs/*/result.json");
    assert!(stored.contains("FORGED"), "{stored}");

    // The next operator replays the stored result: it does not verify, so it is refused.
    ns.start_operator();
    let status = wait_done(&ns, "rewritten").await.status.expect("status");
    assert_eq!(
        status.phase,
        Some(ExecutionPhase::Failed),
        "status: {status:#?}"
    );
    assert_eq!(
        status.reason.as_deref(),
        Some("ResultRejected"),
        "status: {status:#?}"
    );
    assert_ne!(status.exit_code, Some(0), "status: {status:#?}");
    assert!(
        !status.stdout.unwrap_or_default().contains("FORGED"),
        "the forged output never reaches the status"
    );
    assert!(
        status.message.as_deref().is_some_and(|m| m.contains("MAC")),
        "the reason is clear: {:?}",
        status.message
    );
    assert_eq!(
        status.result_key, None,
        "the key leaves the status with the run"
    );
}

#[tokio::test]
async fn ten_executions_across_two_sessions_run_at_once() {
    let ns = TestNs::new("exe-many").await;
    let (a, b) = tokio::join!(
        create_session(&ns, "left", json!({})),
        create_session(&ns, "right", json!({}))
    );
    let names: Vec<(String, &str)> = (0..10)
        .map(|i| {
            (
                format!("par-{i}"),
                if i % 2 == 0 { "left" } else { "right" },
            )
        })
        .collect();
    futures::future::join_all(names.iter().enumerate().map(|(i, (name, session))| {
        create_execution(
            &ns,
            name,
            session,
            json!({"command": format!("sleep 1; echo n={i} in $KUBEXEC_SESSION")}),
        )
    }))
    .await;
    let done = futures::future::join_all(names.iter().map(|(name, _)| wait_done(&ns, name))).await;
    for (i, execution) in done.iter().enumerate() {
        let status = execution.status.clone().expect("status");
        assert_succeeded(&status);
        let session = names[i].1;
        assert_eq!(
            status.stdout.as_deref(),
            Some(format!("n={i} in {session}\n").as_str())
        );
        let pod = if session == "left" {
            pod_of(&a)
        } else {
            pod_of(&b)
        };
        assert_eq!(status.pod_name, Some(pod));
    }
}

#[tokio::test]
async fn an_execution_for_a_missing_session_fails() {
    let ns = TestNs::new("exe-nosession").await;
    let status = run(&ns, "orphan", "no-such-session", json!({"command": "true"})).await;
    assert_eq!(status.phase, Some(ExecutionPhase::Failed));
    assert_eq!(status.reason.as_deref(), Some("SessionNotFound"));
    assert!(status
        .message
        .as_deref()
        .unwrap_or_default()
        .contains("no-such-session"));
    assert!(status
        .conditions
        .iter()
        .any(|c| c.type_ == "Failed" && c.status == "True"));
    assert_eq!(status.exit_code, None);
    // Warning Events stay, whatever --execution-events says.
    wait_until(Duration::from_secs(30), "the Warning Event", || async {
        execution_events(&ns)
            .await
            .iter()
            .any(|(type_, reason, name)| {
                type_ == "Warning" && reason == "SessionNotFound" && name == "orphan"
            })
    })
    .await;
}

#[tokio::test]
async fn env_comes_from_secrets_and_stays_out_of_the_object() {
    let ns = TestNs::new("exe-env").await;
    create_session(&ns, "env", json!({})).await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "exe-env"},
        "stringData": {"API_TOKEN": "tok-51f0", "REGION": "eu-1"}
    }))
    .expect("secret literal");
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let status = run(
        &ns,
        "uses-env",
        "env",
        json!({
            // Prints the token without its prefix, so the full value never reaches the status.
            "command": "echo \"${API_TOKEN#tok-} $REGION $ONLY_HERE $PICKED\"",
            "envFrom": {"secretRef": {"name": "exe-env"}},
            "env": [
                {"name": "ONLY_HERE", "value": "plain"},
                {"name": "PICKED", "valueFrom": {"secretKeyRef": {"name": "exe-env", "key": "REGION"}}}
            ],
        }),
    )
    .await;
    assert_succeeded(&status);
    assert_eq!(status.stdout.as_deref(), Some("51f0 eu-1 plain eu-1\n"));
    let object = ns.kubectl(&["get", "execution", "uses-env", "-o", "yaml"]);
    let events = ns.kubectl(&["get", "events", "-o", "yaml"]);
    for out in [object, events] {
        assert!(!String::from_utf8_lossy(&out.stdout).contains("tok-51f0"));
    }

    // A Secret that never appears fails the Execution after a short grace period.
    let status = run(
        &ns,
        "no-secret",
        "env",
        json!({"command": "true", "envFrom": {"secretRef": {"name": "missing"}}}),
    )
    .await;
    assert_eq!(
        status.reason.as_deref(),
        Some("SecretNotFound"),
        "{status:#?}"
    );
}

#[tokio::test]
async fn an_execution_resumes_a_suspended_session() {
    let ns = TestNs::new("exe-resume").await;
    create_session(&ns, "sleepy", json!({})).await;
    ns.api::<Session>()
        .patch(
            "sleepy",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .expect("suspend");
    wait_for(
        &ns.api::<Session>(),
        "sleepy",
        READY_TIMEOUT,
        "Suspended",
        |s: &Session| s.status.as_ref().and_then(|st| st.phase) == Some(SessionPhase::Suspended),
    )
    .await;
    let status = run(&ns, "wake", "sleepy", json!({"command": "echo awake"})).await;
    assert_succeeded(&status);
    assert_eq!(status.stdout.as_deref(), Some("awake\n"));
    let session = ns.api::<Session>().get("sleepy").await.expect("session");
    assert!(!session.spec.suspend);
    assert!(session.status.and_then(|s| s.last_activity_at).is_some());
}

#[tokio::test]
async fn a_pod_lost_mid_run_fails_the_execution_with_pod_lost() {
    let ns = TestNs::new("exe-podlost").await;
    let session = create_session(&ns, "fragile", json!({})).await;
    create_execution(
        &ns,
        "doomed",
        "fragile",
        json!({"command": "sleep 60", "timeoutSeconds": 120}),
    )
    .await;
    wait_running(&ns, "doomed").await;
    ns.api::<k8s_openapi::api::core::v1::Pod>()
        .delete(&pod_of(&session), &Default::default())
        .await
        .expect("delete pod");
    let status = wait_done(&ns, "doomed").await.status.expect("status");
    assert_eq!(status.phase, Some(ExecutionPhase::Failed));
    assert_eq!(status.reason.as_deref(), Some("PodLost"), "{status:#?}");
}

#[tokio::test]
async fn finished_executions_are_deleted_after_their_ttl() {
    let ns = TestNs::new("exe-ttl").await;
    create_session(&ns, "ttl", json!({})).await;
    let status = run(
        &ns,
        "brief",
        "ttl",
        json!({"command": "true", "ttlSecondsAfterFinished": 2}),
    )
    .await;
    assert_succeeded(&status);
    wait_gone(&ns.api::<Execution>(), "brief", Duration::from_secs(30)).await;
}

/// The Running window: an operator that stops right after recording Running (before the
/// exec; with random result keys, Running is always stored first) leaves a run that the runner
/// never claimed. The next operator must run it with its
/// real env and its Session's default timeout, not with no env and the longest timeout.
#[tokio::test]
async fn a_run_never_started_before_an_operator_stopped_gets_its_real_env_and_timeout() {
    use kubexec::operator::faults::{EXIT_AFTER_RUNNING_ENV, FAULT_EXIT_STATUS};
    let mut ns = TestNs::new("exe-window").await;
    let session = create_session(&ns, "window", json!({"defaultTimeoutSeconds": 2})).await;
    ns.kill_operator();
    // Without the result secret (an empty one is ignored), keys are random and Running is
    // stored before the spec leaves: the window this test stops in.
    ns.start_operator_with(&[
        (EXIT_AFTER_RUNNING_ENV, "1"),
        (kubexec::shared::result_secret::RESULT_SECRET_ENV, ""),
    ]);
    create_execution(
        &ns,
        "inputs",
        "window",
        json!({
            "command": "echo \"greeting=$GREETING\"; sleep 60; echo late",
            "env": [{"name": "GREETING", "value": "from-env"}],
        }),
    )
    .await;
    wait_running(&ns, "inputs").await;
    assert_eq!(
        ns.wait_operator_exit(Duration::from_secs(60)).await,
        Some(FAULT_EXIT_STATUS),
        "the fault point stopped the operator"
    );
    let uid = ns
        .api::<Execution>()
        .get("inputs")
        .await
        .expect("execution")
        .metadata
        .uid
        .expect("uid");
    assert_eq!(
        ns.sh(
            &pod_of(&session),
            &format!("test -e /workspace/.kubexec/runs/{uid} && echo claimed || echo unclaimed")
        ),
        "unclaimed",
        "the operator stopped inside the window: Running recorded, nothing exec'd"
    );

    ns.start_operator();
    let status = wait_done(&ns, "inputs").await.status.expect("status");
    assert_eq!(
        status.stdout.as_deref(),
        Some("greeting=from-env\n"),
        "{status:#?}"
    );
    assert_eq!(
        status.timed_out,
        Some(true),
        "the Session's 2 s: {status:#?}"
    );
    assert_eq!(status.reason.as_deref(), Some("TimedOut"));
}

/// Fencing: whatever an operator that lost its lease still writes, the apiserver keeps a
/// finished Execution finished (a CEL transition rule on the status).
#[tokio::test]
async fn a_finished_execution_cannot_be_moved_back_to_running() {
    let ns = TestNs::new("exe-fence").await;
    // No Session: it fails at once, with no Pod to wait for.
    let status = run(&ns, "done", "absent", json!({"command": "true"})).await;
    assert_eq!(status.phase, Some(ExecutionPhase::Failed), "{status:#?}");
    let executions = ns.api::<Execution>();
    let regress = json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "Execution",
        "metadata": {"name": "done"},
        "status": {"phase": "Running", "reason": "Running"}
    });
    // As a deposed operator would: a forced apply under the operator's own field manager.
    let manager = kubexec::operator::execution::FIELD_MANAGER;
    let refused = executions
        .patch_status(
            "done",
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&regress),
        )
        .await
        .expect_err("the regression is refused");
    let kube::Error::Api(response) = &refused else {
        panic!("{refused:?}");
    };
    assert_eq!(response.code, 422, "{response:?}");
    assert!(
        response.message.contains("cannot change phase"),
        "{response:?}"
    );
    let merge = executions
        .patch_status("done", &PatchParams::default(), &Patch::Merge(&regress))
        .await;
    assert!(merge.is_err(), "a merge patch is refused too: {merge:?}");
    let after = executions.get("done").await.expect("execution");
    assert_eq!(
        after.status.and_then(|s| s.phase),
        Some(ExecutionPhase::Failed)
    );
}
