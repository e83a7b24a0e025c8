//! Sessions on the real cluster: a Session becomes a hardened, limited Pod with a workspace,
//! survives Pod loss, suspends and resumes, expires, and is garbage-collected.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, Patch, PatchParams};
use kubexec::crd::quantity::Quantity;
use kubexec::crd::{Session, SessionPhase};
use kubexec_e2e::{
    create_session, pod_of, repo_root, session_ready as is_ready, wait_for, wait_gone, TestNs,
    READY_TIMEOUT,
};
use serde_json::json;

fn phase(s: &Session) -> Option<SessionPhase> {
    s.status.as_ref().and_then(|st| st.phase)
}

#[tokio::test]
async fn sample_session_becomes_ready_with_limits_and_security() {
    let ns = TestNs::new("ses-ready").await;
    let out = ns.kubectl(&[
        "apply",
        "-f",
        repo_root()
            .join("manifests/samples/session.yaml")
            .to_str()
            .unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let session = wait_for(
        &ns.api::<Session>(),
        "demo",
        READY_TIMEOUT,
        "Ready",
        is_ready,
    )
    .await;
    let status = session.status.clone().expect("status");
    assert!(status.ready_at.is_some() && status.expires_at.is_some() && status.pod_ip.is_some());
    assert!(status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True"));

    let pod = ns.api::<Pod>().get(&pod_of(&session)).await.expect("pod");
    let spec = pod.spec.expect("pod spec");
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.enable_service_links, Some(false));
    let psc = spec.security_context.expect("pod security context");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.map(|p| p.type_),
        Some("RuntimeDefault".into())
    );
    let sandbox = spec
        .containers
        .iter()
        .find(|c| c.name == "sandbox")
        .expect("sandbox container");
    let limits = sandbox
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .expect("limits");
    let limit = |name: &str| {
        limits
            .get(name)
            .map(|q| Quantity::parse(&q.0).expect("quantity"))
    };
    assert_eq!(limit("cpu"), Quantity::parse("500m").ok());
    assert_eq!(limit("memory"), Quantity::parse("256Mi").ok());
    assert_eq!(limit("ephemeral-storage"), Quantity::parse("1Gi").ok());
    let csc = sandbox
        .security_context
        .clone()
        .expect("container security context");
    assert_eq!(csc.allow_privilege_escalation, Some(false));
    assert_eq!(
        csc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    assert!(pod
        .metadata
        .owner_references
        .unwrap_or_default()
        .iter()
        .any(|o| o.kind == "Session"));

    // The runner is PID 1 and the process runs as the sandbox user, with the session env.
    let pod_name = pod_of(&session);
    assert_eq!(ns.sh(&pod_name, "id -u"), "1000");
    assert!(ns
        .sh(&pod_name, "cat /proc/1/cmdline | tr '\\0' ' '")
        .contains("kubexec-runner init"));
    assert_eq!(ns.sh(&pod_name, "echo $GREETING"), "hello");
}

#[tokio::test]
async fn persistent_workspace_survives_pod_loss_and_suspension() {
    let ns = TestNs::new("ses-persist").await;
    let spec = json!({"workspace": {"persistent": true, "size": "64Mi"}});
    let session = create_session(&ns, "keep", spec).await;
    let first_pod = pod_of(&session);
    ns.sh(&first_pod, "echo kept > /workspace/note.txt");

    // A lost Pod comes back, with the file.
    let pods = ns.api::<Pod>();
    let old_uid = pods.get(&first_pod).await.expect("pod").metadata.uid;
    pods.delete(&first_pod, &DeleteParams::default())
        .await
        .expect("delete pod");
    let sessions = ns.api::<Session>();
    wait_for(
        &pods,
        &first_pod,
        READY_TIMEOUT,
        "a new Ready pod",
        |p: &Pod| {
            p.metadata.uid != old_uid
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        },
    )
    .await;
    let session = wait_for(&sessions, "keep", READY_TIMEOUT, "Ready again", is_ready).await;
    assert_eq!(ns.sh(&pod_of(&session), "cat /workspace/note.txt"), "kept");

    // Suspend: the Pod goes away, the claim stays.
    let patch = |suspend: bool| Patch::Merge(json!({"spec": {"suspend": suspend}}));
    sessions
        .patch("keep", &PatchParams::default(), &patch(true))
        .await
        .expect("suspend");
    wait_for(&sessions, "keep", READY_TIMEOUT, "Suspended", |s| {
        phase(s) == Some(SessionPhase::Suspended)
    })
    .await;
    wait_gone(&pods, &first_pod, READY_TIMEOUT).await;
    let claims = ns.api::<PersistentVolumeClaim>();
    assert!(
        claims
            .get_opt("keep-workspace")
            .await
            .expect("get pvc")
            .is_some(),
        "workspace kept while suspended"
    );

    // Resume: a new Pod with the same file.
    sessions
        .patch("keep", &PatchParams::default(), &patch(false))
        .await
        .expect("resume");
    let session = wait_for(
        &sessions,
        "keep",
        READY_TIMEOUT,
        "Ready after resume",
        is_ready,
    )
    .await;
    assert_eq!(ns.sh(&pod_of(&session), "cat /workspace/note.txt"), "kept");
}

#[tokio::test]
async fn ttl_expiry_deletes_the_session() {
    let ns = TestNs::new("ses-ttl").await;
    // Not waiting for Ready: on a busy node the 5 s may pass before the Pod is up, and the
    // Session is then (rightly) gone before anyone saw it Ready.
    let session: Session = serde_json::from_value(json!({
        "apiVersion": "kubexec.dev/v1alpha1",
        "kind": "Session",
        "metadata": {"name": "brief"},
        "spec": {"ttlSeconds": 5},
    }))
    .expect("session");
    ns.api::<Session>()
        .create(&Default::default(), &session)
        .await
        .expect("create session");
    wait_gone(&ns.api::<Session>(), "brief", Duration::from_secs(90)).await;
}

#[tokio::test]
async fn deleting_a_session_collects_its_pod_and_claim() {
    let ns = TestNs::new("ses-gc").await;
    let session = create_session(
        &ns,
        "gone",
        json!({"workspace": {"persistent": true, "size": "64Mi"}}),
    )
    .await;
    let pod = pod_of(&session);
    ns.api::<Session>()
        .delete("gone", &DeleteParams::default())
        .await
        .expect("delete session");
    wait_gone(&ns.api::<Pod>(), &pod, Duration::from_secs(60)).await;
    wait_gone(
        &ns.api::<PersistentVolumeClaim>(),
        "gone-workspace",
        Duration::from_secs(60),
    )
    .await;
}

#[tokio::test]
async fn invalid_manifests_are_refused_with_readable_messages() {
    let ns = TestNs::new("ses-invalid").await;
    let dir = repo_root().join("e2e/fixtures/invalid");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures") {
        let path = entry.expect("fixture").path();
        let text = std::fs::read_to_string(&path).expect("fixture text");
        // Each fixture states the message its rejection must contain: `# expected error: ...`.
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expected error:"))
            .map(|s| s.trim().to_string())
            .collect();
        assert!(
            !expected.is_empty(),
            "{path:?} has no `# expected error:` line"
        );
        let out = ns.kubectl(&["apply", "-f", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{path:?} was accepted");
        for want in &expected {
            assert!(
                stderr.contains(want.as_str()),
                "{path:?}: {stderr:?} does not contain {want:?}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} invalid fixtures");
}

/// Activity once went under one field manager for every writer; each writer now has its own.
/// On the real apiserver, a Session whose `lastActivityAt` the old manager owns is still
/// updated by both new writers, and the field changes hands instead of conflicting.
#[tokio::test]
async fn activity_last_written_under_the_old_field_manager_is_still_updated() {
    use kubexec::shared::activity::ActivityWriter;

    let mut ns = TestNs::new("ses-activity").await;
    ns.kill_operator(); // only the activity writers touch this Session
    let sessions = ns.api::<Session>();
    let session: Session = serde_json::from_value(json!({
        "apiVersion": "kubexec.dev/v1alpha1", "kind": "Session",
        "metadata": {"name": "old-owner"}, "spec": {}
    }))
    .expect("session literal");
    sessions
        .create(&Default::default(), &session)
        .await
        .expect("create session");
    let at = |s: i64| jiff::Timestamp::from_second(s).expect("valid time");
    sessions
        .patch_status(
            "old-owner",
            &PatchParams::apply(ActivityWriter::LEGACY_FIELD_MANAGER).force(),
            &Patch::Apply(kubexec::shared::activity::activity_patch(at(1_700_000_000))),
        )
        .await
        .expect("write under the old manager");

    let owners = |s: &Session| -> Vec<String> {
        s.metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|f| {
                f.fields_v1
                    .as_ref()
                    .is_some_and(|v| v.0.to_string().contains("f:lastActivityAt"))
            })
            .filter_map(|f| f.manager.clone())
            .collect()
    };
    for (writer, second) in [
        (ActivityWriter::OPERATOR, 1_700_000_100),
        (ActivityWriter::API, 1_700_000_200),
    ] {
        writer
            .record(&ns.client, &ns.name, "old-owner", at(second))
            .await
            .expect("record activity");
        let now = sessions.get("old-owner").await.expect("get session");
        let recorded = now
            .status
            .as_ref()
            .and_then(|s| s.last_activity_at.as_ref())
            .map(|t| t.0);
        assert_eq!(recorded, Some(at(second)));
        assert_eq!(owners(&now), vec![writer.field_manager().to_string()]);
    }
}
