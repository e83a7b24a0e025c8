//! Fast start on the real cluster: the runner delivered as an image volume or by an init
//! container, readiness from the runner itself, and SessionPools whose warm Pods Sessions
//! adopt.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::ResourceExt;
use kubexec::crd::{Execution, ExecutionPhase, Session, SessionPhase, SessionPool};
use kubexec_e2e::{create_session, pod_of, wait_for, wait_gone, wait_until, TestNs, READY_TIMEOUT};
use serde_json::json;

const DONE_TIMEOUT: Duration = Duration::from_secs(120);

/// A namespace whose operator runs with `extra` settings.
async fn namespace_with(prefix: &str, extra: &[(&str, &str)]) -> TestNs {
    let mut ns = TestNs::new(prefix).await;
    if !extra.is_empty() {
        ns.kill_operator();
        ns.start_operator_with(extra);
    }
    ns
}

/// Runs `command` as an Execution in Session `session` and returns its stdout.
async fn run(ns: &TestNs, session: &str, name: &str, command: &str) -> String {
    let execution: Execution = serde_json::from_value(json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "Execution",
        "metadata": {"name": name},
        "spec": {"sessionRef": {"name": session}, "command": command}
    }))
    .expect("execution literal");
    let executions = ns.api::<Execution>();
    executions
        .create(&PostParams::default(), &execution)
        .await
        .expect("create execution");
    let done = wait_for(
        &executions,
        name,
        DONE_TIMEOUT,
        "finished",
        |e: &Execution| {
            matches!(
                e.status.as_ref().and_then(|s| s.phase),
                Some(ExecutionPhase::Succeeded | ExecutionPhase::Failed)
            )
        },
    )
    .await;
    let status = done.status.expect("status");
    assert_eq!(status.phase, Some(ExecutionPhase::Succeeded), "{status:?}");
    assert_eq!(status.exit_code, Some(0), "{status:?}");
    status.stdout.unwrap_or_default()
}

fn ready_reason(s: &Session) -> Option<String> {
    let status = s.status.as_ref()?;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some(ready.reason.clone())
}

#[tokio::test]
async fn both_runner_deliveries_run_an_execution() {
    for (delivery, init_containers) in [("imageVolume", 0), ("initContainer", 1)] {
        let ns = namespace_with(
            &format!("deliver-{}", delivery.to_lowercase()),
            &[("KUBEXEC_RUNNER_DELIVERY", delivery)],
        )
        .await;
        let session = create_session(
            &ns,
            "s",
            json!({"env": [{"name": "GREETING", "value": delivery}]}),
        )
        .await;
        let pod = ns.api::<Pod>().get(&pod_of(&session)).await.expect("pod");
        let spec = pod.spec.expect("spec");
        assert_eq!(
            spec.init_containers.unwrap_or_default().len(),
            init_containers,
            "{delivery}"
        );
        let image_volume = spec
            .volumes
            .unwrap_or_default()
            .iter()
            .any(|v| v.image.is_some());
        assert_eq!(image_volume, delivery == "imageVolume");
        assert_eq!(
            run(&ns, "s", "e", "echo $GREETING").await,
            format!("{delivery}\n")
        );
    }
}

#[tokio::test]
async fn an_empty_runner_volume_fails_the_session_naming_the_chart_value() {
    // The sandbox image has no /kubexec-runner: mounted as the runner image, the volume is
    // "empty" of a runner.
    let ns = namespace_with(
        "runner-missing",
        &[("KUBEXEC_RUNNER_IMAGE", "localhost/kubexec-sandbox:dev")],
    )
    .await;
    let sessions = ns.api::<Session>();
    let session: Session = serde_json::from_value(json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "Session",
        "metadata": {"name": "empty"}, "spec": {}
    }))
    .expect("session literal");
    sessions
        .create(&PostParams::default(), &session)
        .await
        .expect("create");
    let failed = wait_for(
        &sessions,
        "empty",
        READY_TIMEOUT,
        "RunnerMissing",
        |s: &Session| ready_reason(s).as_deref() == Some("RunnerMissing"),
    )
    .await;
    let status = failed.status.expect("status");
    assert_eq!(status.phase, Some(SessionPhase::Failed));
    let message = status.message.unwrap_or_default();
    assert!(message.contains("sandbox.runnerDelivery"), "{message}");
}

/// A runner image whose `kubexec-runner` keeps the container up as `init` but answers nothing.
fn import_mute_runner() -> &'static str {
    let dir = std::env::temp_dir().join(format!("kx-mute-runner-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("image root");
    let script = "#!/bin/sh\nif [ \"$1\" = init ]; then exec sleep 2147483647; fi\nexit 7\n";
    let runner = dir.join("kubexec-runner");
    std::fs::write(&runner, script).expect("script");
    let chmod = |path: &std::path::Path, mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    chmod(&runner, 0o755);
    chmod(&dir, 0o755);
    let out = std::process::Command::new(kubexec_e2e::repo_root().join("e2e/cluster/image"))
        .args(["kubexec-mute-runner:e2e", dir.to_str().expect("utf-8 path")])
        .output()
        .expect("e2e/cluster/image");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "import the mute runner: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    "localhost/kubexec-mute-runner:e2e"
}

#[tokio::test]
async fn a_sandbox_whose_runner_cannot_answer_never_becomes_ready() {
    let image = import_mute_runner();
    let ns = namespace_with("runner-mute", &[("KUBEXEC_RUNNER_IMAGE", image)]).await;
    let sessions = ns.api::<Session>();
    let session: Session = serde_json::from_value(json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "Session",
        "metadata": {"name": "mute"}, "spec": {}
    }))
    .expect("session literal");
    sessions
        .create(&PostParams::default(), &session)
        .await
        .expect("create");
    // The kubelet reports the Pod ready (its container runs), and the runner was pinged.
    wait_for(
        &ns.api::<Pod>(),
        "mute-sandbox",
        READY_TIMEOUT,
        "Pod Ready",
        |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        },
    )
    .await;
    let silent = wait_for(
        &sessions,
        "mute",
        READY_TIMEOUT,
        "a silent runner reported",
        |s: &Session| {
            s.status
                .as_ref()
                .and_then(|st| st.message.as_deref())
                .is_some_and(|m| m.contains("has not answered"))
        },
    )
    .await;
    assert_eq!(
        silent.status.and_then(|s| s.phase),
        Some(SessionPhase::Pending)
    );
}

fn warm_pods_of(pods: &[Pod]) -> BTreeSet<(String, String)> {
    pods.iter()
        .filter(|p| p.labels().contains_key("kubexec.dev/warm-pool"))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}

async fn pool_pods(ns: &TestNs) -> Vec<Pod> {
    ns.api::<Pod>()
        .list(&ListParams::default().labels("kubexec.dev/from-pool=warm"))
        .await
        .expect("list pool pods")
        .items
}

/// Waits until the pool reports `ready` warm Pods and exactly that many exist.
async fn wait_filled(ns: &TestNs, ready: i32) -> SessionPool {
    wait_for(
        &ns.api::<SessionPool>(),
        "warm",
        READY_TIMEOUT,
        &format!("{ready} warm Pods ready"),
        move |p: &SessionPool| {
            p.status
                .as_ref()
                .is_some_and(|s| s.ready_replicas == ready && s.replicas == ready)
        },
    )
    .await
}

fn kubectl_ok(ns: &TestNs, args: &[&str]) {
    let out = ns.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sessions_adopt_warm_pods_and_the_pool_refills() {
    let ns = TestNs::new("pool").await;
    let pool: SessionPool = serde_json::from_value(json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "SessionPool",
        "metadata": {"name": "warm"},
        "spec": {"replicas": 2, "template": {"resources": {"cpu": "200m", "memory": "128Mi"}}}
    }))
    .expect("pool literal");
    ns.api::<SessionPool>()
        .create(&PostParams::default(), &pool)
        .await
        .expect("create pool");

    // The pool fills.
    let filled = wait_filled(&ns, 2).await;
    assert_eq!(
        filled.status.and_then(|s| s.selector).as_deref(),
        Some("kubexec.dev/warm-pool=warm")
    );
    let warm_before = warm_pods_of(&pool_pods(&ns).await);
    assert_eq!(warm_before.len(), 2);

    // A Session naming it adopts one warm Pod: same Pod (UID), new owner, env per execution.
    let session = create_session(
        &ns,
        "fast",
        json!({
            "poolRef": {"name": "warm"},
            "resources": {"cpu": "200m", "memory": "128Mi"},
            "env": [{"name": "GREETING", "value": "from-the-session"}]
        }),
    )
    .await;
    let adopted_name = pod_of(&session);
    let adopted = ns
        .api::<Pod>()
        .get(&adopted_name)
        .await
        .expect("adopted pod");
    let adopted_uid = adopted.uid().unwrap_or_default();
    assert!(
        warm_before.contains(&(adopted_name.clone(), adopted_uid.clone())),
        "{adopted_name} was one of the warm Pods {warm_before:?}"
    );
    let owners = adopted
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0].kind, "Session");
    assert_eq!(owners[0].uid, session.uid().unwrap_or_default());
    assert_eq!(
        adopted
            .labels()
            .get("kubexec.dev/session")
            .map(String::as_str),
        Some("fast")
    );
    assert!(!adopted.labels().contains_key("kubexec.dev/warm-pool"));
    assert_eq!(
        adopted
            .labels()
            .get("app.kubernetes.io/component")
            .map(String::as_str),
        Some("sandbox"),
        "the NetworkPolicies' selector is unchanged"
    );
    assert_eq!(
        run(&ns, "fast", "greet", "echo $GREETING").await,
        "from-the-session\n"
    );

    // The pool refills, with a new Pod.
    let refilled = wait_filled(&ns, 2).await;
    assert_eq!(refilled.status.map(|s| s.adopted), Some(1));
    let warm_now = warm_pods_of(&pool_pods(&ns).await);
    assert!(!warm_now.iter().any(|(_, uid)| *uid == adopted_uid));

    // Deleting the Session deletes its Pod and no other.
    ns.api::<Session>()
        .delete("fast", &DeleteParams::foreground())
        .await
        .expect("delete session");
    wait_gone(&ns.api::<Pod>(), &adopted_name, READY_TIMEOUT).await;
    let warm_after = warm_pods_of(&pool_pods(&ns).await);
    assert_eq!(warm_after, warm_now, "the warm Pods are untouched");

    // kubectl scale works both ways.
    kubectl_ok(&ns, &["scale", "sessionpool/warm", "--replicas=3"]);
    wait_filled(&ns, 3).await;
    kubectl_ok(&ns, &["scale", "sessionpool/warm", "--replicas=0"]);
    wait_filled(&ns, 0).await;
    wait_until(READY_TIMEOUT, "the warm Pods to go", || async {
        warm_pods_of(&pool_pods(&ns).await).is_empty()
    })
    .await;

    // An exhausted pool: the cold path, which works.
    let cold = create_session(
        &ns,
        "cold",
        json!({"poolRef": {"name": "warm"}, "resources": {"cpu": "200m", "memory": "128Mi"},
               "env": [{"name": "GREETING", "value": "cold"}]}),
    )
    .await;
    assert_eq!(pod_of(&cold), "cold-sandbox");
    assert_eq!(
        run(&ns, "cold", "greet-cold", "echo $GREETING").await,
        "cold\n"
    );
}

/// A pool `name` of persistent sandboxes (64Mi claims) of the shape [`disk_session`] asks for.
fn disk_pool(name: &str, replicas: i32) -> SessionPool {
    serde_json::from_value(json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "SessionPool",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "template": {
            "resources": {"cpu": "200m", "memory": "128Mi"},
            "workspace": {"size": "64Mi", "persistent": true}
        }}
    }))
    .expect("pool literal")
}

fn disk_session(pool: &str) -> serde_json::Value {
    json!({
        "poolRef": {"name": pool},
        "resources": {"cpu": "200m", "memory": "128Mi"},
        "workspace": {"size": "64Mi", "persistent": true}
    })
}

/// The live objects of `kind` built by pool `pool` (warm or adopted), as (name, uid).
async fn built_by<K>(ns: &TestNs, pool: &str) -> BTreeSet<(String, String)>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    <K as kube::Resource>::DynamicType: Default,
{
    ns.api::<K>()
        .list(&ListParams::default().labels(&format!("kubexec.dev/from-pool={pool}")))
        .await
        .expect("list pool objects")
        .items
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(|o| (o.name_any(), o.uid().unwrap_or_default()))
        .collect()
}

async fn wait_pool_ready(ns: &TestNs, pool: &str, ready: i32) {
    wait_for(
        &ns.api::<SessionPool>(),
        pool,
        READY_TIMEOUT,
        &format!("{ready} warm Pods ready"),
        move |p: &SessionPool| {
            p.status
                .as_ref()
                .is_some_and(|s| s.ready_replicas == ready && s.replicas == ready)
        },
    )
    .await;
}

fn claim_of(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .find(|v| v.name == "workspace")?
        .persistent_volume_claim
        .as_ref()
        .map(|c| c.claim_name.clone())
}

#[tokio::test]
async fn a_persistent_session_adopts_a_pod_and_its_claim_and_keeps_the_claim() {
    let ns = TestNs::new("pool-disk").await;
    for pool in [disk_pool("disk", 1), disk_pool("spare", 1)] {
        ns.api::<SessionPool>()
            .create(&PostParams::default(), &pool)
            .await
            .expect("create pool");
    }
    wait_pool_ready(&ns, "disk", 1).await;
    wait_pool_ready(&ns, "spare", 1).await;
    let warm = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("kubexec.dev/warm-pool=disk"))
        .await
        .expect("warm pods")
        .items;
    assert_eq!(warm.len(), 1);
    let warm_claim = claim_of(&warm[0]).expect("a warm Pod of a persistent pool mounts a claim");
    let claims = ns.api::<PersistentVolumeClaim>();
    let claim_before = claims.get(&warm_claim).await.expect("warm claim");
    assert_eq!(
        claim_before.owner_references()[0].kind,
        "SessionPool",
        "owned by the pool until adopted"
    );
    let spare = (
        built_by::<Pod>(&ns, "spare").await,
        built_by::<PersistentVolumeClaim>(&ns, "spare").await,
    );
    assert_eq!((spare.0.len(), spare.1.len()), (1, 1));

    // Adoption takes the Pod and its claim: same UIDs, the Session owns both.
    let session = create_session(&ns, "keep", disk_session("disk")).await;
    let session_uid = session.uid().unwrap_or_default();
    assert_eq!(pod_of(&session), warm[0].name_any());
    let pods = ns.api::<Pod>();
    let adopted = pods.get(&pod_of(&session)).await.expect("adopted pod");
    assert_eq!(adopted.uid(), warm[0].uid(), "the same Pod");
    assert_eq!(adopted.owner_references()[0].uid, session_uid);
    let recorded = session
        .status
        .as_ref()
        .and_then(|s| s.workspace_claim.clone());
    assert_eq!(recorded.as_deref(), Some(warm_claim.as_str()));
    let claim = claims.get(&warm_claim).await.expect("adopted claim");
    assert_eq!(claim.uid(), claim_before.uid(), "the same claim");
    let owners = claim.owner_references();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].uid.as_str()),
        ("Session", session_uid.as_str())
    );
    assert_eq!(
        claim
            .labels()
            .get("kubexec.dev/session")
            .map(String::as_str),
        Some("keep")
    );
    assert!(!claim.labels().contains_key("kubexec.dev/warm-pool"));
    run(&ns, "keep", "write", "echo kept > /workspace/f.txt").await;

    // The Pod is lost: the next one mounts the adopted claim, and the file is there.
    pods.delete(&adopted.name_any(), &DeleteParams::default())
        .await
        .expect("delete pod");
    let again = wait_for(
        &ns.api::<Session>(),
        "keep",
        READY_TIMEOUT,
        "Ready on a new Pod",
        |s: &Session| kubexec_e2e::session_ready(s) && pod_of(s) == "keep-sandbox",
    )
    .await;
    let replacement = pods.get(&pod_of(&again)).await.expect("new pod");
    assert_eq!(claim_of(&replacement).as_deref(), Some(warm_claim.as_str()));
    assert_eq!(
        run(&ns, "keep", "read", "cat /workspace/f.txt").await,
        "kept\n"
    );

    // Deleting the Session deletes its Pod and its claim, and nothing of another pool's.
    wait_pool_ready(&ns, "disk", 1).await;
    let refill = (
        built_by::<Pod>(&ns, "disk").await,
        built_by::<PersistentVolumeClaim>(&ns, "disk").await,
    );
    ns.api::<Session>()
        .delete("keep", &DeleteParams::foreground())
        .await
        .expect("delete session");
    wait_gone(&claims, &warm_claim, READY_TIMEOUT).await;
    wait_gone(&pods, "keep-sandbox", READY_TIMEOUT).await;
    assert_eq!(
        (
            built_by::<Pod>(&ns, "spare").await,
            built_by::<PersistentVolumeClaim>(&ns, "spare").await,
        ),
        spare,
        "the other pool's Pod and claim are untouched"
    );
    let mut refill_claims = refill.1;
    refill_claims.retain(|(name, _)| *name != warm_claim);
    assert_eq!(refill_claims.len(), 1, "the refill's claim");
    assert!(refill_claims.is_subset(&built_by::<PersistentVolumeClaim>(&ns, "disk").await));

    // Scaling the pool down deletes its unadopted claims with their Pods.
    kubectl_ok(&ns, &["scale", "sessionpool/disk", "--replicas=0"]);
    wait_until(
        READY_TIMEOUT,
        "the disk pool's Pods and claims to go",
        || async {
            built_by::<Pod>(&ns, "disk").await.is_empty()
                && built_by::<PersistentVolumeClaim>(&ns, "disk")
                    .await
                    .is_empty()
        },
    )
    .await;
}
