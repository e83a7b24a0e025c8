//! The chart-installed, in-cluster deployment, as `make up` leaves it: the README's `curl`
//! through the forwarded api, the kubectl samples reconciled by the in-cluster operator, and
//! an operator failover in the middle of a running execution.
//!
//! Needs `e2e/deploy/up` first; it reads `KUBEXEC_URL` and `KUBEXEC_API_KEY` as printed there
//! (`e2e/run-all` does both). The other suites run their own operators and must not run at the
//! same time as this one.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use kubexec::crd::{Execution, ExecutionPhase};
use kubexec_e2e::api::deployed;
use kubexec_e2e::{kubectl, repo_root, wait_for};
use serde_json::json;

const RELEASE_NAMESPACE: &str = "kubexec-system";
const TENANT_NAMESPACE: &str = "kubexec-demo";

fn finished(e: &Execution) -> bool {
    matches!(
        e.status.as_ref().and_then(|s| s.phase.clone()),
        Some(ExecutionPhase::Succeeded | ExecutionPhase::Failed)
    )
}

#[tokio::test]
async fn readme_curl_returns_the_sum_through_the_in_cluster_api() {
    let (http, key) = deployed();
    let created = http
        .post(
            "/sessions/create",
            Some(&key),
            &json!({"ttl": 600, "metadata": {"suite": "deployment"}}),
        )
        .await;
    assert!(
        created.status.is_success(),
        "{} {}",
        created.status,
        created.text()
    );
    let session = created.json()["sessionId"]
        .as_str()
        .expect("sessionId")
        .to_string();
    let code = "console.log(`Sum: ${[1, 2, 3, 4, 5].reduce((a, b) => a + b, 0)}`)";
    let reply = http
        .post(
            "/execute",
            Some(&key),
            &json!({"sessionId": session, "code": code}),
        )
        .await;
    assert!(
        reply.status.is_success(),
        "{} {}",
        reply.status,
        reply.text()
    );
    assert_eq!(reply.json()["stdout"], "Sum: 15\n");
    assert_eq!(reply.json()["exitCode"], 0);

    // The api applied the tenant's pool with its own ServiceAccount, and the operator fills it
    // with Pod+claim pairs in the tenant namespace.
    let tenant_client = Client::try_default().await.expect("kubeconfig");
    wait_for(
        &Api::<kubexec::crd::SessionPool>::namespaced(tenant_client, TENANT_NAMESPACE),
        "kubexec-free",
        Duration::from_secs(120),
        "the tenant's pool to fill",
        |p: &kubexec::crd::SessionPool| p.status.as_ref().is_some_and(|s| s.ready_replicas >= 1),
    )
    .await;

    // The preview goes through the in-cluster api's Pod: the sandbox's ingress policy admits
    // it on the preview port (and nothing else, see the containment suite).
    let server = "nohup bun -e 'Bun.serve({port: 8080, fetch: () => new Response(\"preview ok\")})' >/dev/null 2>&1 & \
                  for i in $(seq 1 50); do curl -sf localhost:8080 >/dev/null && exit 0; sleep 0.2; done; exit 1";
    let started = http
        .post(
            "/execute",
            Some(&key),
            &json!({"sessionId": session, "command": server}),
        )
        .await;
    assert_eq!(started.json()["exitCode"], 0, "{}", started.text());
    // Through `make up`'s preview forward, with the link from previewUrl and no key.
    let described = http.get(&format!("/sessions/{session}"), Some(&key)).await;
    let url = described.json()["previewUrl"]
        .as_str()
        .expect("previewUrl")
        .to_string();
    let (mut preview, cookie) = kubexec_e2e::api::open_preview(&url).await;
    let link = kubexec_e2e::api::PreviewLink::parse(&url);
    // The engine may still be programming a new sandbox's rules for a few seconds.
    for _ in 0..20 {
        if preview.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        preview = kubexec_e2e::api::preview_get(&link, "/", Some(&cookie)).await;
    }
    assert_eq!(preview.status, 200, "{}", preview.text());
    assert_eq!(preview.text(), "preview ok");

    // The sandbox does not reach the api's or the operator's metrics (nor their other ports).
    let client = Client::try_default().await.expect("kubeconfig");
    let pods: Api<Pod> = Api::namespaced(client, RELEASE_NAMESPACE);
    let mut targets = Vec::new();
    for (component, port) in [("api", 8080), ("operator", 9464)] {
        let params = kube::api::ListParams::default()
            .labels(&format!("app.kubernetes.io/component={component}"));
        for pod in pods.list(&params).await.expect("list pods").items {
            if let Some(ip) = pod.status.and_then(|s| s.pod_ip) {
                targets.push(format!("{ip}:{port}"));
            }
        }
    }
    assert!(targets.len() >= 2, "api and operator Pods: {targets:?}");
    let probes = targets
        .iter()
        .map(|t| {
            let (ip, port) = t.split_once(':').unwrap_or_default();
            format!("timeout 2 bash -c 'exec 3<>/dev/tcp/{ip}/{port}' 2>/dev/null && echo \"open {t}\" || echo \"closed {t}\"")
        })
        .collect::<Vec<_>>()
        .join("; ");
    // A new sandbox may run a few seconds before the engine has programmed its rules
    // (docs/security.md), so the probe is repeated until every target is closed, bounded.
    let mut stdout = String::new();
    for _ in 0..15 {
        let probed = http
            .post(
                "/execute",
                Some(&key),
                &json!({"sessionId": session, "command": probes}),
            )
            .await;
        stdout = probed.json()["stdout"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !stdout.contains("open") && stdout.matches("closed").count() == targets.len() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        !stdout.contains("open") && stdout.matches("closed").count() == targets.len(),
        "a sandbox reached kubexec's own Pods: {stdout}"
    );
    let deleted = http
        .request(
            hyper::Method::DELETE,
            &format!("/sessions/{session}"),
            Some(&key),
            &[],
            Vec::new(),
        )
        .await;
    assert!(deleted.status.is_success(), "{}", deleted.status);
}

#[tokio::test]
async fn kubectl_samples_complete_with_the_in_cluster_operator() {
    let samples = repo_root().join("manifests/samples");
    for sample in [
        "session.yaml",
        "execution-code.yaml",
        "execution-files.yaml",
    ] {
        let path = samples.join(sample);
        let out = kubectl(&[
            "-n",
            TENANT_NAMESPACE,
            "apply",
            "-f",
            path.to_str().expect("path"),
        ]);
        assert!(
            out.status.success(),
            "{sample}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let client = Client::try_default().await.expect("cluster");
    let executions: Api<Execution> = Api::namespaced(client, TENANT_NAMESPACE);
    for (name, stdout) in [("hello-code", "Sum: 15\n"), ("hello-files", "Result: 8\n")] {
        let done = wait_for(
            &executions,
            name,
            Duration::from_secs(120),
            "finished",
            finished,
        )
        .await;
        let status = done.status.expect("status");
        assert_eq!(
            status.phase,
            Some(ExecutionPhase::Succeeded),
            "{name}: {status:?}"
        );
        assert_eq!(status.stdout.as_deref(), Some(stdout), "{name}");
    }
}

/// Deletes the Lease holder while an execution runs: the other replica takes over and the
/// execution finishes exactly once (its command appends one line per run to a file).
#[tokio::test]
async fn operator_failover_mid_execution_runs_it_exactly_once() {
    let (http, key) = deployed();
    let client = Client::try_default().await.expect("cluster");
    let created = http
        .post("/sessions/create", Some(&key), &json!({"ttl": 600}))
        .await;
    assert!(created.status.is_success(), "{}", created.text());
    let session = created.json()["sessionId"]
        .as_str()
        .expect("sessionId")
        .to_string();
    // Make sure the session is up before timing the failover.
    let warm = http
        .post(
            "/execute",
            Some(&key),
            &json!({"sessionId": session, "command": "true"}),
        )
        .await;
    assert!(warm.status.is_success(), "{}", warm.text());

    let executions: Api<Execution> = Api::namespaced(client.clone(), TENANT_NAMESPACE);
    let execution: Execution = serde_json::from_value(json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "Execution",
        "metadata": {"name": "failover"},
        "spec": {
            "sessionRef": {"name": session},
            "command": "echo run >> /workspace/failover-runs; sleep 6; echo done",
            "timeoutSeconds": 60
        }
    }))
    .expect("execution literal");
    executions
        .create(&PostParams::default(), &execution)
        .await
        .expect("create execution");
    wait_for(
        &executions,
        "failover",
        Duration::from_secs(60),
        "Running",
        |e: &Execution| {
            e.status.as_ref().and_then(|s| s.phase.clone()) == Some(ExecutionPhase::Running)
        },
    )
    .await;

    let leases: Api<Lease> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let holder = leases
        .get("kubexec-operator")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("a leader");
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let deleted_at = Instant::now();
    pods.delete(&holder, &DeleteParams::default())
        .await
        .expect("delete the leader pod");

    let done = wait_for(
        &executions,
        "failover",
        Duration::from_secs(120),
        "finished after failover",
        finished,
    )
    .await;
    let status = done.status.expect("status");
    assert_eq!(status.phase, Some(ExecutionPhase::Succeeded), "{status:?}");
    assert_eq!(status.stdout.as_deref(), Some("done\n"));
    let new_holder = leases
        .get("kubexec-operator")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity);
    assert_ne!(
        new_holder.as_deref(),
        Some(holder.as_str()),
        "another replica holds the lease"
    );
    println!(
        "failover: execution finished {:?} after the leader was deleted",
        deleted_at.elapsed()
    );

    let count = http
        .post(
            "/execute",
            Some(&key),
            &json!({"sessionId": session, "command": "wc -l < /workspace/failover-runs"}),
        )
        .await;
    assert_eq!(
        count.json()["stdout"],
        "1\n",
        "the command ran exactly once"
    );
    executions
        .delete("failover", &DeleteParams::default())
        .await
        .expect("cleanup");
}

/// The chart-installed operator's ServiceAccount, as the admission policies see it.
const OPERATOR_USER: &str = "system:serviceaccount:kubexec-system:kubexec-operator";

/// Runs kubectl with `input` on stdin (for `create -f -`).
fn kubectl_with_input(args: &[&str], input: &serde_json::Value) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on PATH (eval \"$(e2e/cluster/env)\")");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("kubectl output")
}

/// `kubectl create --dry-run=server` as `user`: admitted or refused, nothing is left behind.
fn dry_run_create(user: &str, namespace: &str, object: &serde_json::Value) -> (bool, String) {
    let out = kubectl_with_input(
        &[
            "--as",
            user,
            "-n",
            namespace,
            "create",
            "--dry-run=server",
            "-f",
            "-",
        ],
        object,
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A Pod as the operator's builder makes it (src/operator/session/build.rs), with
/// `hostUsers: false` as `make up` turns user namespaces on.
fn hardened_sandbox_pod(name: &str) -> serde_json::Value {
    let container = |name: &str, read_only: bool| {
        json!({
            "name": name,
            "image": "localhost/kubexec-sandbox:dev",
            "command": ["/kubexec/bin/kubexec-runner", "init"],
            "ports": [{"name": "preview", "containerPort": 8080, "protocol": "TCP"}],
            "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}],
            "securityContext": {
                "allowPrivilegeEscalation": false, "privileged": false,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": read_only, "runAsNonRoot": true
            }
        })
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {
            "app.kubernetes.io/managed-by": "kubexec",
            "app.kubernetes.io/component": "sandbox",
            "kubexec.dev/session": name
        }},
        "spec": {
            "initContainers": [container("install-runner", true)],
            "containers": [container("sandbox", false)],
            "volumes": [{"name": "workspace", "emptyDir": {"sizeLimit": "1Gi"}}],
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "hostUsers": false,
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"}
            }
        }
    })
}

/// kubexec's own Pods run in a namespace that enforces Pod Security `restricted`, and the
/// apiserver enforces it there; both components have a PodDisruptionBudget.
#[tokio::test]
async fn kubexec_pods_run_under_pod_security_restricted() {
    let client = Client::try_default().await.expect("cluster");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = namespaces.get(RELEASE_NAMESPACE).await.expect("namespace");
    let labels = ns.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted"),
        "{labels:?}"
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    for component in ["operator", "api"] {
        let params = kube::api::ListParams::default().labels(&format!(
            "app.kubernetes.io/name=kubexec,app.kubernetes.io/component={component}"
        ));
        let running: Vec<_> = pods
            .list(&params)
            .await
            .expect("list pods")
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        assert!(!running.is_empty(), "no Running {component} Pod");
    }
    // The label is enforced: a root Pod is refused in the install namespace.
    let root = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "e2e-root"},
        "spec": {"containers": [{"name": "c", "image": "localhost/kubexec-sandbox:dev"}]}
    });
    let out = kubectl_with_input(
        &[
            "-n",
            RELEASE_NAMESPACE,
            "create",
            "--dry-run=server",
            "-f",
            "-",
        ],
        &root,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a root Pod was admitted");
    assert!(stderr.contains("PodSecurity \"restricted"), "{stderr}");
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(client, RELEASE_NAMESPACE);
    for name in ["kubexec-operator", "kubexec-api"] {
        let pdb = pdbs.get(name).await.expect("PodDisruptionBudget");
        let max = pdb.spec.and_then(|s| s.max_unavailable);
        assert_eq!(
            max,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)),
            "{name}"
        );
    }
}

/// As the operator's ServiceAccount, a hardened sandbox Pod is admitted in a user's namespace,
/// but every weakening of it, and any Pod in kube-system, is refused by the chart's policy.
#[tokio::test]
async fn operator_service_account_creates_only_hardened_sandboxes() {
    // A namespace of its own, without a Pod Security label, so that only the policy refuses.
    const NS: &str = "e2e-operator-admission";
    for object in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "e2e-admission", "namespace": NS}}),
        // Enabled for sandboxes, so that RBAC lets the operator in and the policy decides.
        operator_binding(NS),
    ] {
        let out = kubectl_with_input(&["apply", "-f", "-"], &object);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pod = hardened_sandbox_pod("e2e-admission");
    let (admitted, stderr) = dry_run_create(OPERATOR_USER, NS, &pod);
    assert!(admitted, "a hardened sandbox was refused: {stderr}");

    // Each weakening, and (a fragment of) the policy's message for it. Pods sharing the
    // host's namespaces or privileged ones also leave the user namespace, which Pod validation
    // requires.
    type Weaken = fn(&mut serde_json::Value);
    let weakened: Vec<(&str, &str, Weaken)> = vec![
        ("privileged", "not be privileged", |p| {
            p["spec"]["containers"][0]["securityContext"] =
                json!({"privileged": true, "capabilities": {"drop": ["ALL"]}});
            p["spec"]["hostUsers"] = json!(null);
        }),
        (
            "capability added",
            "drop ALL capabilities and add none",
            |p| {
                p["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] =
                    json!(["SYS_ADMIN"]);
            },
        ),
        (
            "init container may escalate",
            "allowPrivilegeEscalation: false",
            |p| {
                p["spec"]["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] =
                    json!(true);
            },
        ),
        ("root", "must run as non-root", |p| {
            p["spec"]["securityContext"]["runAsUser"] = json!(0);
            p["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
            p["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = json!(false);
            p["spec"]["initContainers"][0]["securityContext"]["runAsNonRoot"] = json!(false);
        }),
        ("hostPath", "no hostPath", |p| {
            p["spec"]["volumes"][0] = json!({"name": "workspace", "hostPath": {"path": "/"}});
        }),
        ("hostNetwork", "no host namespace", |p| {
            p["spec"]["hostNetwork"] = json!(true);
            p["spec"]["hostUsers"] = json!(null);
        }),
        ("hostPID", "no host namespace", |p| {
            p["spec"]["hostPID"] = json!(true);
            p["spec"]["hostUsers"] = json!(null);
        }),
        ("hostPort", "no hostPort", |p| {
            p["spec"]["containers"][0]["ports"][0]["hostPort"] = json!(8080);
        }),
        ("token", "kubexec admission", |p| {
            p["spec"]["automountServiceAccountToken"] = json!(true);
        }),
        ("service account", "the default ServiceAccount", |p| {
            p["spec"]["serviceAccountName"] = json!("e2e-admission");
        }),
        ("host users", "user namespace of its own", |p| {
            p["spec"]["hostUsers"] = json!(true);
        }),
        ("not a sandbox", "only kubexec sandbox Pods", |p| {
            p["metadata"]["labels"]["app.kubernetes.io/component"] = json!("other");
        }),
    ];
    for (what, message, weaken) in weakened {
        let mut pod = hardened_sandbox_pod("e2e-admission");
        weaken(&mut pod);
        let (admitted, stderr) = dry_run_create(OPERATOR_USER, NS, &pod);
        assert!(!admitted, "{what}: admitted");
        assert!(
            stderr.contains("kubexec-operator-pods") && stderr.contains(message),
            "{what}: {stderr}"
        );
    }

    // The hardened Pod itself, in kube-system or the install namespace.
    for namespace in ["kube-system", RELEASE_NAMESPACE] {
        let (admitted, stderr) = dry_run_create(OPERATOR_USER, namespace, &pod);
        assert!(!admitted, "{namespace}: admitted");
        assert!(
            stderr.contains(&format!("may not create Pods in namespace {namespace}"))
                // Once the operator's RBAC no longer reaches the namespace, RBAC refuses first.
                || stderr.contains("cannot create resource \"pods\""),
            "{namespace}: {stderr}"
        );
    }
    let _ = kubectl(&["delete", "namespace", NS, "--wait=false"]);
}

/// A user who may create Sessions and Executions but not read a Secret cannot have the
/// operator read it for them: env from it is refused at admission, for Executions (valueFrom
/// and envFrom) and Sessions. Env from a Secret they may get, or no Secret env, is admitted,
/// and the api's own env Secrets keep working.
#[tokio::test]
async fn env_only_from_secrets_the_creator_may_get() {
    const USER: &str = "e2e-deputy-user";
    let apply = |object: serde_json::Value| {
        let out = kubectl_with_input(&["-n", TENANT_NAMESPACE, "apply", "-f", "-"], &object);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for secret in ["e2e-deputy-hidden", "e2e-deputy-readable"] {
        apply(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret},
            "stringData": {"TOKEN": "e2e-deputy-value"}
        }));
    }
    apply(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "e2e-deputy"},
        "rules": [
            {"apiGroups": ["kubexec.dev"], "resources": ["sessions", "executions"],
             "verbs": ["get", "list", "create"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
             "resourceNames": ["e2e-deputy-readable"]}
        ]
    }));
    apply(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "e2e-deputy"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "e2e-deputy"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}]
    }));

    let execution = |env: serde_json::Value, env_from: Option<&str>| {
        let mut spec = json!({"sessionRef": {"name": "e2e-deputy"}, "command": "env", "env": env});
        if let Some(secret) = env_from {
            spec["envFrom"] = json!({"secretRef": {"name": secret}});
        }
        json!({"apiVersion": "kubexec.dev/v1alpha1", "kind": "Execution",
               "metadata": {"name": "e2e-deputy"}, "spec": spec})
    };
    let session = |env: serde_json::Value| {
        json!({"apiVersion": "kubexec.dev/v1alpha1", "kind": "Session",
               "metadata": {"name": "e2e-deputy"}, "spec": {"env": env}})
    };
    let from = |secret: &str| json!([{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "TOKEN"}}}]);
    let refused_again = || {
        [
            (
                "execution valueFrom",
                execution(from("e2e-deputy-hidden"), None),
            ),
            (
                "execution envFrom",
                execution(json!([]), Some("e2e-deputy-hidden")),
            ),
            ("session valueFrom", session(from("e2e-deputy-hidden"))),
        ]
    };
    for (what, object) in refused_again() {
        let (admitted, stderr) = dry_run_create(USER, TENANT_NAMESPACE, &object);
        assert!(!admitted, "{what}: admitted");
        assert!(
            stderr.contains("kubexec-secret-references")
                && stderr.contains(&format!(
                    "{USER} may not get every one of secret(s) e2e-deputy-hidden in namespace {TENANT_NAMESPACE}"
                )),
            "{what}: {stderr}"
        );
        assert!(!stderr.contains("e2e-deputy-value"), "{what}: {stderr}");
    }
    // Refused for real, not only in a dry run: nothing is created, and the value appears in no
    // object, Event or operator log (so no sandbox environment can hold it either).
    for (_, object) in refused_again() {
        let out = kubectl_with_input(
            &["--as", USER, "-n", TENANT_NAMESPACE, "create", "-f", "-"],
            &object,
        );
        assert!(!out.status.success(), "created: {object}");
    }
    for kind in ["executions.kubexec.dev", "sessions.kubexec.dev"] {
        let got = kubectl(&[
            "-n",
            TENANT_NAMESPACE,
            "get",
            kind,
            "e2e-deputy",
            "--ignore-not-found",
            "-o",
            "name",
        ]);
        assert!(
            String::from_utf8_lossy(&got.stdout).trim().is_empty(),
            "{kind} e2e-deputy exists"
        );
    }
    let events = kubectl(&["-n", TENANT_NAMESPACE, "get", "events", "-o", "json"]);
    assert!(
        !String::from_utf8_lossy(&events.stdout).contains("e2e-deputy-value"),
        "the refused value is in an Event"
    );
    // Every running operator replica's log (Pods that are gone have none to read).
    let running = kubectl(&[
        "-n",
        RELEASE_NAMESPACE,
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/component=operator",
        "--field-selector=status.phase=Running",
        "-o",
        "name",
    ]);
    let running = String::from_utf8_lossy(&running.stdout).into_owned();
    assert!(!running.trim().is_empty(), "no running operator Pod");
    for pod in running.lines() {
        let logs = kubectl(&["-n", RELEASE_NAMESPACE, "logs", pod, "--tail=-1"]);
        assert!(
            logs.status.success(),
            "{pod}: {}",
            String::from_utf8_lossy(&logs.stderr)
        );
        assert!(
            !String::from_utf8_lossy(&logs.stdout).contains("e2e-deputy-value"),
            "the refused value is in the log of {pod}"
        );
    }

    // The api keeps request env in Secrets it creates and may read: still admitted.
    let (http, key) = deployed();
    let created = http
        .post("/sessions/create", Some(&key), &json!({"ttl": 300}))
        .await;
    assert!(created.status.is_success(), "{}", created.text());
    let session_id = created.json()["sessionId"]
        .as_str()
        .expect("sessionId")
        .to_string();
    let executed = http
        .post(
            "/execute",
            Some(&key),
            &json!({"sessionId": session_id, "command": "echo \"$GREETING\"", "env": {"GREETING": "from a Secret"}}),
        )
        .await;
    assert!(executed.status.is_success(), "{}", executed.text());
    assert_eq!(
        executed.json()["stdout"],
        "from a Secret\n",
        "{}",
        executed.text()
    );
    let _ = http
        .request(
            hyper::Method::DELETE,
            &format!("/sessions/{session_id}"),
            Some(&key),
            &[],
            Vec::new(),
        )
        .await;
}

/// `kubectl auth can-i` as a kubexec ServiceAccount: `yes` or `no`.
fn can_i(account: &str, args: &[&str]) -> bool {
    let user = format!("system:serviceaccount:{RELEASE_NAMESPACE}:{account}");
    let out = kubectl(&[&["auth", "can-i", "--as", &user], args].concat());
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "can-i {args:?} as {account}: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answer == "yes"
}

/// Least privilege: no kubexec ServiceAccount lists or watches Secrets in kube-system or
/// cluster-wide, gets them there, makes Pods or execs in kube-system. The operator works only
/// in namespaces enabled for sandboxes (here the demo tenant's, by `kubexec keys create`).
#[tokio::test]
async fn service_accounts_hold_least_privilege() {
    let mut refused = Vec::new();
    for account in ["kubexec-operator", "kubexec-api"] {
        let mut asks: Vec<Vec<&str>> = vec![
            vec!["list", "secrets", "-n", "kube-system"],
            vec!["watch", "secrets", "-n", "kube-system"],
            vec!["list", "secrets", "--all-namespaces"],
            vec!["watch", "secrets", "--all-namespaces"],
        ];
        asks.push(vec!["create", "pods", "-n", "kube-system"]);
        asks.push(vec![
            "create",
            "pods",
            "--subresource=exec",
            "-n",
            "kube-system",
        ]);
        asks.push(vec![
            "get",
            "pods",
            "--subresource=exec",
            "-n",
            "kube-system",
        ]);
        asks.push(vec!["get", "secrets", "-n", "kube-system"]);
        asks.push(vec!["get", "secrets", "--all-namespaces"]);
        asks.push(vec!["create", "pods", "--all-namespaces"]);
        asks.push(vec!["create", "pods", "-n", "default"]);
        if account == "kubexec-api" {
            asks.push(vec!["create", "sessions.kubexec.dev", "-n", "kube-system"]);
            asks.push(vec!["create", "secrets", "-n", "default"]);
        }
        for ask in asks {
            if can_i(account, &ask) {
                refused.push(format!("{account} may {ask:?}"));
            }
        }
    }
    assert!(refused.is_empty(), "too much privilege: {refused:#?}");

    // The api: keys only in its own namespace; tenant work only where `keys create` bound it.
    assert!(can_i(
        "kubexec-api",
        &["list", "secrets", "-n", RELEASE_NAMESPACE]
    ));
    assert!(can_i(
        "kubexec-api",
        &["create", "sessions.kubexec.dev", "-n", TENANT_NAMESPACE]
    ));
    assert!(can_i(
        "kubexec-api",
        &[
            "create",
            "pods",
            "--subresource=exec",
            "-n",
            TENANT_NAMESPACE
        ]
    ));
    // It keeps each tenant's SessionPool (server-side apply), in tenant namespaces only.
    assert!(can_i(
        "kubexec-api",
        &["patch", "sessionpools.kubexec.dev", "-n", TENANT_NAMESPACE]
    ));
    assert!(!can_i(
        "kubexec-api",
        &["patch", "sessionpools.kubexec.dev", "-n", "default"]
    ));
    // It may get Secrets in its tenants' namespaces only: the admission policy against
    // confused deputies lets a creator reference only Secrets it may get, and the api
    // references the env Secrets it makes.
    assert!(can_i(
        "kubexec-api",
        &["get", "secrets", "-n", TENANT_NAMESPACE]
    ));
    // The operator: no verb it never calls.
    for ask in [
        ["update", "sessions.kubexec.dev"],
        ["update", "executions.kubexec.dev"],
        ["delete", "persistentvolumeclaims"],
        ["delete", "networkpolicies.networking.k8s.io"],
        ["create", "secrets"],
    ] {
        assert!(
            !can_i("kubexec-operator", &[ask[0], ask[1], "--all-namespaces"]),
            "the operator may {ask:?}"
        );
    }
    // The operator: sandboxes, exec and env Secrets in the enabled tenant namespace.
    for ask in [
        ["create", "pods", "--subresource="],
        ["create", "pods", "--subresource=exec"],
        ["get", "secrets", "--subresource="],
        // Pool claims: deleted with their warm Pods, moved to the adopting Session.
        ["delete", "persistentvolumeclaims", "--subresource="],
        ["patch", "persistentvolumeclaims", "--subresource="],
    ] {
        assert!(
            can_i(
                "kubexec-operator",
                &[&ask[..], &["-n", TENANT_NAMESPACE]].concat()
            ),
            "the operator may not {ask:?} in {TENANT_NAMESPACE}"
        );
    }
}

/// The RoleBinding that enables `namespace` for sandboxes (what `kubexec keys create` makes in a
/// tenant namespace, and the chart's `operator.sandboxNamespaces` elsewhere).
fn operator_binding(namespace: &str) -> serde_json::Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "kubexec-operator", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "kubexec-operator-sandboxes"},
        "subjects": [{"kind": "ServiceAccount", "name": "kubexec-operator",
                      "namespace": RELEASE_NAMESPACE}],
    })
}

fn ready_reason(session: &kubexec::crd::Session) -> Option<String> {
    let status = session.status.as_ref()?;
    kubexec::crd::find_condition(&status.conditions, "Ready").map(|c| c.reason.clone())
}

/// A Session in a namespace that is not enabled for sandboxes gets no Pod: it stays Pending
/// with reason NamespaceNotEnabled, a Warning Event, and the command that enables the
/// namespace. Running that very command makes it Ready.
#[tokio::test]
async fn a_namespace_not_enabled_gets_no_sandbox_until_it_is() {
    let ns = format!(
        "e2e-not-enabled-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    );
    let session = json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "Session",
        "metadata": {"name": "probe", "namespace": ns},
        "spec": {"ttlSeconds": 600},
    });
    for object in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        session,
    ] {
        let out = kubectl_with_input(&["apply", "-f", "-"], &object);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let client = Client::try_default().await.expect("cluster");
    let sessions: Api<kubexec::crd::Session> = Api::namespaced(client.clone(), &ns);
    let refused = wait_for(
        &sessions,
        "probe",
        Duration::from_secs(60),
        "reason NamespaceNotEnabled",
        |s| ready_reason(s).as_deref() == Some("NamespaceNotEnabled"),
    )
    .await;
    let status = refused.status.expect("status");
    assert_eq!(status.phase, Some(kubexec::crd::SessionPhase::Pending));
    let message = status.message.unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    assert!(
        pods.list(&Default::default())
            .await
            .expect("pods")
            .items
            .is_empty(),
        "a sandbox started in a namespace that is not enabled"
    );
    let events = kubectl(&[
        "-n",
        &ns,
        "get",
        "events",
        "--field-selector",
        "reason=NamespaceNotEnabled",
        "-o",
        "name",
    ]);
    assert!(
        !String::from_utf8_lossy(&events.stdout).trim().is_empty(),
        "no NamespaceNotEnabled Event"
    );

    // The status names the fix; run it as written.
    let command = message
        .split_once("Enable it with: ")
        .map(|(_, c)| c.trim().to_string())
        .unwrap_or_else(|| panic!("no command in {message:?}"));
    let args: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(args.first(), Some(&"kubectl"), "{command}");
    let out = kubectl(&args[1..]);
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        &sessions,
        "probe",
        Duration::from_secs(180),
        "Ready once enabled",
        |s| ready_reason(s).as_deref() == Some("PodReady"),
    )
    .await;
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}
