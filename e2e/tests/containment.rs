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

// ---- The network: the operator's NetworkPolicies, enforced by the local cluster's engine.

/// Runs `script` with `sh -c` in `pod`'s sandbox container and returns its trimmed stdout,
/// whatever the exit code.
fn sh_in(ns: &TestNs, pod: &str, container: &str, script: &str) -> String {
    let out = ns.kubectl(&["exec", pod, "-c", container, "--", "sh", "-c", script]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `open` when a TCP connection from `pod` to `ip:port` succeeds within 2 s, else `closed`.
fn probe(ns: &TestNs, pod: &str, container: &str, ip: &str, port: u16) -> String {
    sh_in(
        ns,
        pod,
        container,
        &format!("timeout 2 bash -c 'exec 3<>/dev/tcp/{ip}/{port}' 2>/dev/null && echo open || echo closed"),
    )
}

/// Polls `check` once a second until it holds, for at most `seconds`: the engine programs a
/// new Pod's rules, or a policy change, within a few seconds. Returns whether it held.
async fn eventually(seconds: u64, mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..seconds {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    check()
}

fn pod_ip(session: &kubexec::crd::Session) -> String {
    session
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("podIP")
}

#[tokio::test]
async fn a_sandbox_reaches_no_other_sandbox_the_apiserver_or_the_node() {
    let tenant_a = TestNs::new("cnt-net-a").await;
    let tenant_b = TestNs::new("cnt-net-b").await;
    let a = create_session(&tenant_a, "a", json!({})).await;
    let b = create_session(&tenant_b, "b", json!({})).await;
    let (a_pod, b_ip) = (pod_of(&a), pod_ip(&b));
    // B serves on the preview port and on another one.
    let servers = "nohup bun -e 'for (const port of [8080, 9090]) Bun.serve({port, fetch: () => new Response(\"b\")})' >/dev/null 2>&1 & \
                   for i in $(seq 1 50); do curl -sf localhost:9090 >/dev/null && exit 0; sleep 0.2; done; exit 1";
    tenant_b.sh(&pod_of(&b), servers);
    // The host (the node) always reaches a sandbox: that is how the api reaches previews.
    let from_host = tokio::net::TcpStream::connect(format!("{b_ip}:8080")).await;
    assert!(
        from_host.is_ok(),
        "the node reaches B's preview port: {from_host:?}"
    );

    // Once A's rules are programmed, every target is closed to it.
    let blocked = eventually(30, || {
        probe(&tenant_a, &a_pod, "sandbox", &b_ip, 9090) == "closed"
    })
    .await;
    assert!(blocked, "A kept reaching B's port 9090");
    let targets = [
        (b_ip.as_str(), 8080, "tenant B's preview port"),
        (b_ip.as_str(), 9090, "another port of tenant B"),
        ("10.96.0.1", 443, "the kubernetes Service"),
        ("10.244.0.1", 6443, "the apiserver on the node"),
        ("10.244.0.1", 10250, "the kubelet"),
    ];
    for (ip, port, what) in targets {
        assert_eq!(
            probe(&tenant_a, &a_pod, "sandbox", ip, port),
            "closed",
            "a sandbox reached {what} ({ip}:{port})"
        );
    }
    for host in kubexec_e2e::host_addresses() {
        let ip = host.trim_end_matches("/32");
        assert_eq!(
            probe(&tenant_a, &a_pod, "sandbox", ip, 10250),
            "closed",
            "a sandbox reached the kubelet on the node address {ip}"
        );
    }

    // Ingress: a Pod that is not the api (here an ordinary Pod in tenant A's namespace) does
    // not get into B, on the preview port or any other.
    let intruder: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "intruder"},
        "spec": {
            "securityContext": {"runAsUser": 1000, "runAsNonRoot": true},
            "containers": [{"name": "main", "image": "localhost/kubexec-sandbox:dev",
                            "imagePullPolicy": "Never", "command": ["sleep", "infinity"]}]
        }
    }))
    .expect("pod literal");
    let pods = tenant_a.api::<k8s_openapi::api::core::v1::Pod>();
    pods.create(&Default::default(), &intruder)
        .await
        .expect("create the intruder");
    kubexec_e2e::wait_for(
        &pods,
        "intruder",
        kubexec_e2e::READY_TIMEOUT,
        "Running",
        |p: &k8s_openapi::api::core::v1::Pod| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        },
    )
    .await;
    for port in [8080, 9090] {
        let refused = eventually(30, || {
            probe(&tenant_a, "intruder", "main", &b_ip, port) == "closed"
        })
        .await;
        assert!(refused, "a Pod other than the api reached B on port {port}");
    }
}

#[tokio::test]
async fn egress_deny_blocks_dns_and_flipping_to_allow_keeps_the_pod() {
    let ns = TestNs::new("cnt-egress").await;
    let session = create_session(&ns, "flip", json!({"network": {"egress": "Deny"}})).await;
    let pod = pod_of(&session);
    let pods = ns.api::<k8s_openapi::api::core::v1::Pod>();
    let uid = pods.get(&pod).await.expect("pod").metadata.uid;
    ns.sh(
        &pod,
        "nohup sleep 3600 >/dev/null 2>&1 & echo $! > /workspace/bg.pid",
    );
    let resolves = || {
        sh_in(
            &ns,
            &pod,
            "sandbox",
            "getent hosts registry.npmjs.org >/dev/null && echo yes || echo no",
        ) == "yes"
    };
    assert!(
        eventually(30, || !resolves()).await,
        "DNS resolves with egress Deny"
    );
    let install = "cd /workspace && timeout 60 bun -e \"import isNumber from 'is-number'; console.log(isNumber(5))\" 2>&1";
    assert_ne!(
        sh_in(&ns, &pod, "sandbox", install),
        "true",
        "Bun auto-install worked with egress Deny"
    );

    let out = ns.kubectl(&[
        "patch",
        "session",
        "flip",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"network":{"egress":"Allow"}}}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        eventually(30, resolves).await,
        "DNS does not resolve after egress Allow"
    );
    assert_eq!(
        sh_in(&ns, &pod, "sandbox", install).lines().last(),
        Some("true")
    );
    // The same Pod, with its processes: the policy changed, not the sandbox.
    assert_eq!(pods.get(&pod).await.expect("pod").metadata.uid, uid);
    assert_eq!(
        sh_in(
            &ns,
            &pod,
            "sandbox",
            "kill -0 $(cat /workspace/bg.pid) && echo alive"
        ),
        "alive"
    );
}

#[tokio::test]
async fn a_deleted_network_policy_comes_back() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let ns = TestNs::new("cnt-restore").await;
    create_session(&ns, "s", json!({})).await;
    let policies = ns.api::<NetworkPolicy>();
    let names = [
        "kubexec-sandbox-ingress",
        "kubexec-sandbox-egress-deny",
        "kubexec-sandbox-egress-allow",
    ];
    for name in names {
        kubexec_e2e::wait_for(
            &policies,
            name,
            kubexec_e2e::READY_TIMEOUT,
            "created",
            |_| true,
        )
        .await;
    }
    // Applied by the policy controller and again before the sandbox Pod was made: an apply of
    // an unchanged policy must change nothing, or the controller's own watch wakes it for the
    // next apply, without end.
    for name in names {
        let policy = policies.get(name).await.expect("policy");
        assert_eq!(
            policy.metadata.generation,
            Some(1),
            "{name} changed by re-applying it"
        );
    }
    let before = policies
        .get("kubexec-sandbox-egress-deny")
        .await
        .expect("policy")
        .metadata
        .uid;
    policies
        .delete("kubexec-sandbox-egress-deny", &Default::default())
        .await
        .expect("delete the policy");
    let back = kubexec_e2e::wait_for(
        &policies,
        "kubexec-sandbox-egress-deny",
        std::time::Duration::from_secs(30),
        "recreated",
        |p: &NetworkPolicy| p.metadata.uid != before,
    )
    .await;
    assert!(back.metadata.deletion_timestamp.is_none());
}
