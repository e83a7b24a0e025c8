//! Containment on the real cluster: each sandbox runs in its own user namespace, and a
//! session's process limit holds (a fork bomb ends in fork errors inside that session, while
//! its next execution and other sessions keep working). The network half lives here too.
//!
//! The per-test operators run with the local cluster's settings (`e2e/src/lib.rs`
//! `operator_env`: user namespaces on, `--max-pids` below the kubelet's `podPidsLimit`).

use kubexec::sandbox::protocol::{ExecResult, ExecSpec};
use kubexec::sandbox::Sandbox;
use kubexec_e2e::{create_session, pod_of, TestNs};
use serde_json::json;

/// Runs `command` in `sandbox` as one execution with `timeout_seconds`, and returns its result.
async fn run(sandbox: &Sandbox, run_id: &str, command: &str, timeout_seconds: u32) -> ExecResult {
    let mut spec = ExecSpec::new(run_id);
    spec.command = Some(command.into());
    spec.timeout_seconds = timeout_seconds;
    sandbox
        .exec(&spec)
        .await
        .unwrap_or_else(|e| panic!("exec {run_id}: {e}"))
        .result(|_| {})
        .await
        .unwrap_or_else(|e| panic!("result of {run_id}: {e}"))
}

/// The host UID that uid 0 of this sandbox maps to, from `/proc/self/uid_map`.
fn uid_base(uid_map: &str) -> u64 {
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "one mapping line: {uid_map:?}");
    assert_eq!(fields[0], "0", "{uid_map:?}");
    fields[1].parse().expect("a number")
}

#[tokio::test]
async fn each_sandbox_has_its_own_user_namespace_and_process_limit() {
    let ns = TestNs::new("cnt-userns").await;
    let a = create_session(&ns, "a", json!({"resources": {"pids": 64}})).await;
    let b = create_session(&ns, "b", json!({})).await;
    let mut bases = Vec::new();
    for (session, limit) in [(&a, 64), (&b, 512)] {
        let sandbox = Sandbox::new(ns.client.clone(), &ns.name, &pod_of(session));
        let out = run(
            &sandbox,
            "ids",
            "cat /proc/self/uid_map; id -u; grep '^Max processes' /proc/self/limits",
            30,
        )
        .await;
        assert_eq!(out.exit_code, 0, "{out:?}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{out:?}");
        let base = uid_base(lines[0]);
        assert_ne!(base, 0, "uid 0 of a sandbox is not host root: {}", lines[0]);
        bases.push(base);
        assert_eq!(lines[1], "1000");
        let limits: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            limits.get(2..4),
            Some(&[limit.to_string().as_str(), limit.to_string().as_str()][..]),
            "{}",
            lines[2]
        );
    }
    assert_ne!(bases[0], bases[1], "two sandboxes share a host UID range");
}

#[tokio::test]
async fn a_fork_bomb_stays_inside_its_session() {
    let ns = TestNs::new("cnt-forkbomb").await;
    let bombed = create_session(&ns, "bombed", json!({"resources": {"pids": 128}})).await;
    let other = create_session(&ns, "other", json!({})).await;
    let bombed = Sandbox::new(ns.client.clone(), &ns.name, &pod_of(&bombed));
    let other = Sandbox::new(ns.client.clone(), &ns.name, &pod_of(&other));

    // The classic bomb, in bash (dash refuses ':' as a function name); the execution then
    // waits, so its timeout ends it with the bomb still trying to fork.
    let bomb = tokio::spawn({
        let bombed = bombed.clone();
        async move {
            run(
                &bombed,
                "bomb",
                "bash -c ':(){ :|:& };:'; exec sleep 60",
                10,
            )
            .await
        }
    });
    // While the bomb runs: another session runs, and the bombed one still answers.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let meanwhile = run(&other, "meanwhile", "true", 30).await;
    assert_eq!(meanwhile.exit_code, 0, "{meanwhile:?}");

    let bomb = bomb.await.expect("the bomb's execution ends");
    assert!(bomb.timed_out, "{bomb:?}");
    assert!(
        bomb.stderr.contains("Resource temporarily unavailable") || bomb.stderr.contains("fork"),
        "fork errors inside the session: {bomb:?}"
    );
    // The runner killed and reaped the bomb's group: the session's next execution forks.
    let next = run(&bombed, "after", "ls / | wc -l", 30).await;
    assert_eq!(next.exit_code, 0, "{next:?}");
    let after = run(&other, "after", "true", 30).await;
    assert_eq!(after.exit_code, 0, "{after:?}");
}

#[tokio::test]
async fn background_processes_are_refused_past_the_limit() {
    let ns = TestNs::new("cnt-sleeps").await;
    let session = create_session(&ns, "sleeps", json!({})).await;
    let sandbox = Sandbox::new(ns.client.clone(), &ns.name, &pod_of(&session));
    // sh, not bash: bash retries a failed fork for about 14 s.
    let script =
        "( i=0; while [ $i -lt 1500 ]; do sleep 600 & i=$((i+1)); echo $i > .started; done ); \
                  echo \"rc=$?\"; exec sleep 600";
    let flood = run(&sandbox, "flood", script, 5).await;
    assert!(
        flood.stderr.contains("fork") || flood.stderr.contains("Resource temporarily unavailable"),
        "{flood:?}"
    );
    let started = run(&sandbox, "count", "cat .started", 30).await;
    assert_eq!(started.exit_code, 0, "{started:?}");
    let count: u32 = started.stdout.trim().parse().expect("a count");
    assert!(
        count < 512,
        "{count} background processes started past the limit of 512"
    );
}
