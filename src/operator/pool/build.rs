//! Pure builder: a warm sandbox Pod of a SessionPool.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{api::ObjectMeta, Resource, ResourceExt};

use crate::crd::{annotations, labels, validate::ValidationError, SessionPool};
use crate::operator::config::SandboxConfig;
use crate::operator::session::build::{
    pod_shape_hash, sandbox_pod_spec, workspace_claim_spec, WORKSPACE_COMPONENT,
};

/// The label selector of a pool's warm Pods (also the scale subresource's selector).
pub fn warm_selector(pool: &str) -> String {
    format!("{}={pool}", labels::WARM_POOL)
}

/// The selector of every Pod a pool built, warm or adopted.
pub fn built_selector(pool: &str) -> String {
    format!("{}={pool}", labels::FROM_POOL)
}

/// The template's shape hash: a warm Pod carries it, an adopting Session must match it.
pub fn template_hash(pool: &SessionPool) -> String {
    pod_shape_hash(&pool.spec.template.session_spec())
}

/// True when the pool's warm Pods each come with a workspace claim of their own.
pub fn has_claims(pool: &SessionPool) -> bool {
    pool.spec.template.workspace.persistent
}

/// The labels of everything a pool builds and no Session owns yet: kubexec's, the pool's
/// ([`labels::WARM_POOL`], removed by adoption, and [`labels::FROM_POOL`], kept) and the
/// component.
fn warm_labels(pool: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (labels::COMPONENT.to_string(), component.to_string()),
        (labels::WARM_POOL.to_string(), pool.to_string()),
        (labels::FROM_POOL.to_string(), pool.to_string()),
    ])
}

/// The workspace claim of one warm Pod of a pool with a persistent template: named
/// `<pool>-<random>`, owned and labelled like the warm Pods, sized by the template. The
/// Session that adopts the Pod adopts this claim with it.
pub fn build_warm_claim(pool: &SessionPool) -> PersistentVolumeClaim {
    let name = pool.name_any();
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: pool.namespace(),
            labels: Some(warm_labels(&name, WORKSPACE_COMPONENT)),
            owner_references: pool.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(workspace_claim_spec(&pool.spec.template.session_spec())),
        status: None,
    }
}

/// A warm Pod: the sandbox Pod a Session of the template's shape would get, without the
/// Session's env and name, named `<pool>-<random>`, owned by the pool, mounting `claim` when
/// the template's workspace is persistent. It carries the sandbox labels the NetworkPolicies
/// select on (kept through adoption), the pool's labels ([`labels::WARM_POOL`], removed by
/// adoption, and [`labels::FROM_POOL`], kept) and the template's shape hash.
pub fn build_warm_pod(
    pool: &SessionPool,
    claim: Option<&str>,
    config: &SandboxConfig,
) -> Result<Pod, ValidationError> {
    let spec = pool.spec.template.session_spec();
    let name = pool.name_any();
    let mut pod_labels = warm_labels(&name, labels::SANDBOX_COMPONENT);
    pod_labels.insert(
        labels::EGRESS.to_string(),
        spec.network.egress.as_str().to_string(),
    );
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: pool.namespace(),
            labels: Some(pod_labels),
            annotations: Some(BTreeMap::from([(
                annotations::SPEC_HASH.to_string(),
                pod_shape_hash(&spec),
            )])),
            owner_references: pool.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: Some(sandbox_pod_spec(&spec, None, claim, config)?),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{EnvVar, Session, SessionPoolSpec, SessionSpec};
    use crate::operator::session::desired::DesiredPod;

    fn pool() -> SessionPool {
        let mut p = SessionPool::new(
            "fast",
            SessionPoolSpec {
                replicas: 2,
                template: Default::default(),
            },
        );
        p.metadata.namespace = Some("team-a".into());
        p.metadata.uid = Some("pool-uid".into());
        p
    }

    #[test]
    fn a_warm_pod_is_a_generic_sandbox_owned_by_its_pool() {
        let pod = build_warm_pod(&pool(), None, &SandboxConfig::default()).expect("pod");
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("fast-"));
        let l = pod.labels();
        assert_eq!(
            l.get(labels::COMPONENT).map(String::as_str),
            Some("sandbox")
        );
        assert_eq!(l.get(labels::WARM_POOL).map(String::as_str), Some("fast"));
        assert_eq!(l.get(labels::FROM_POOL).map(String::as_str), Some("fast"));
        assert!(l.get(labels::SESSION).is_none(), "no Session yet");
        let owner = &pod.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("SessionPool", "pool-uid")
        );
        let env = pod.spec.as_ref().expect("spec").containers[0]
            .env
            .clone()
            .unwrap_or_default();
        assert!(!env.iter().any(|e| e.name == crate::layout::SESSION_ENV));
    }

    #[test]
    fn a_session_of_the_same_shape_may_adopt_it_whatever_its_env() {
        let mut pod = build_warm_pod(&pool(), None, &SandboxConfig::default()).expect("pod");
        pod.metadata.name = Some("fast-x1".into());
        let mut s = Session::new(
            "demo",
            SessionSpec {
                env: vec![EnvVar::literal("GREETING", "hi")],
                ..SessionSpec::default()
            },
        );
        s.metadata.namespace = Some("team-a".into());
        let desired = DesiredPod::build(&s, &SandboxConfig::default()).expect("valid");
        assert!(desired.can_adopt(&pod, "fast"));
        assert!(!desired.is_outdated(&pod), "adopted, it is not replaced");
        assert!(!desired.can_adopt(&pod, "slow"));
        s.spec.resources.memory = Some("1Gi".into());
        let bigger = DesiredPod::build(&s, &SandboxConfig::default()).expect("valid");
        assert!(
            !bigger.can_adopt(&pod, "fast"),
            "another shape takes the cold path"
        );
    }
}

#[cfg(test)]
mod claim_tests {
    use super::*;
    use crate::crd::{Session, SessionPoolSpec, SessionPoolTemplate, SessionSpec, WorkspaceSpec};
    use crate::operator::session::build::mounted_claim;
    use crate::operator::session::desired::DesiredPod;

    fn persistent() -> WorkspaceSpec {
        WorkspaceSpec {
            size: "2Gi".into(),
            persistent: true,
            storage_class_name: None,
        }
    }

    fn pool() -> SessionPool {
        let mut p = SessionPool::new(
            "disk",
            SessionPoolSpec {
                replicas: 1,
                template: SessionPoolTemplate {
                    workspace: persistent(),
                    ..SessionPoolTemplate::default()
                },
            },
        );
        p.metadata.namespace = Some("team-a".into());
        p.metadata.uid = Some("pool-uid".into());
        p
    }

    #[test]
    fn a_persistent_pool_pairs_each_warm_pod_with_a_claim_it_owns() {
        let pool = pool();
        assert!(has_claims(&pool));
        let claim = build_warm_claim(&pool);
        assert_eq!(claim.metadata.generate_name.as_deref(), Some("disk-"));
        assert_eq!(
            claim.labels().get(labels::WARM_POOL).map(String::as_str),
            Some("disk")
        );
        let owner = &claim.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("SessionPool", "pool-uid")
        );
        let size = claim
            .spec
            .and_then(|s| s.resources)
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").cloned());
        assert_eq!(size.map(|q| q.0), Some("2Gi".to_string()));

        let pod =
            build_warm_pod(&pool, Some("disk-abcde"), &SandboxConfig::default()).expect("pod");
        assert_eq!(mounted_claim(&pod), Some("disk-abcde"));
        let mut named = pod.clone();
        named.metadata.name = Some("disk-x".into());
        let mut s = Session::new(
            "demo",
            SessionSpec {
                workspace: persistent(),
                ..SessionSpec::default()
            },
        );
        s.metadata.namespace = Some("team-a".into());
        let desired = DesiredPod::build(&s, &SandboxConfig::default()).expect("valid");
        assert!(
            desired.can_adopt(&named, "disk"),
            "a persistent Session adopts a persistent pool's Pod"
        );
        s.spec.workspace.persistent = false;
        let ephemeral = DesiredPod::build(&s, &SandboxConfig::default()).expect("valid");
        assert!(!ephemeral.can_adopt(&named, "disk"));
    }

    #[test]
    fn an_ephemeral_pool_has_no_claims() {
        let mut pool = pool();
        pool.spec.template.workspace.persistent = false;
        assert!(!has_claims(&pool));
        let pod = build_warm_pod(&pool, Some("ignored"), &SandboxConfig::default()).expect("pod");
        assert_eq!(mounted_claim(&pod), None);
    }
}
