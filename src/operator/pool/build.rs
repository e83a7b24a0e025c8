//! Pure builder: a warm sandbox Pod of a SessionPool.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::{api::ObjectMeta, Resource, ResourceExt};

use crate::crd::{annotations, labels, validate::ValidationError, SessionPool};
use crate::operator::config::SandboxConfig;
use crate::operator::session::build::{pod_shape_hash, sandbox_pod_spec};

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

/// A warm Pod: the sandbox Pod a Session of the template's shape would get, without the
/// Session's env and name, named `<pool>-<random>`, owned by the pool. It carries the
/// sandbox labels the NetworkPolicies select on (kept through adoption), the pool's labels
/// ([`labels::WARM_POOL`], removed by adoption, and [`labels::FROM_POOL`], kept) and the
/// template's shape hash.
pub fn build_warm_pod(pool: &SessionPool, config: &SandboxConfig) -> Result<Pod, ValidationError> {
    let spec = pool.spec.template.session_spec();
    let name = pool.name_any();
    let pod_labels = BTreeMap::from([
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (
            labels::COMPONENT.to_string(),
            labels::SANDBOX_COMPONENT.to_string(),
        ),
        (
            labels::EGRESS.to_string(),
            spec.network.egress.as_str().to_string(),
        ),
        (labels::WARM_POOL.to_string(), name.clone()),
        (labels::FROM_POOL.to_string(), name.clone()),
    ]);
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
        spec: Some(sandbox_pod_spec(&spec, None, config)?),
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
        let pod = build_warm_pod(&pool(), &SandboxConfig::default()).expect("pod");
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
        let mut pod = build_warm_pod(&pool(), &SandboxConfig::default()).expect("pod");
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
