//! The sandbox Pod a Session asks for: validated and built once per reconcile, then read by
//! every decision that needs it and handed to `apply` when it has to be created.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::crd::{
    annotations, labels, validate::validate_session, validate::ValidationError, Session,
};
use crate::operator::config::SandboxConfig;

use crate::crd::quantity::Quantity;

use super::build::{build_pod, pod_shape_hash, pod_spec_hash, sandbox_resources, SandboxResources};

/// The awake and the sleep requests (CPU and memory) of a sandbox with these resources.
fn requests_by_state(
    resources: &SandboxResources,
    config: &SandboxConfig,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let awake: BTreeMap<String, String> = RESIZABLE
        .iter()
        .filter_map(|k| Some((k.to_string(), resources.requests.get(*k)?.clone())))
        .collect();
    let guaranteed = RESIZABLE
        .iter()
        .all(|k| same_quantity(resources.requests.get(*k), resources.limits.get(*k)));
    if guaranteed {
        return (awake.clone(), awake);
    }
    let sleep = awake
        .iter()
        .map(|(key, awake_value)| {
            let configured = if key == "cpu" {
                &config.sleep_cpu
            } else {
                &config.sleep_memory
            };
            let lower = match (Quantity::parse(configured), Quantity::parse(awake_value)) {
                (Ok(sleep), Ok(awake)) if sleep < awake => configured.clone(),
                _ => awake_value.clone(),
            };
            (key.clone(), lower)
        })
        .collect();
    (awake, sleep)
}

/// True when both are the same quantity, however written (`100m` and `0.1`).
pub fn same_quantity(a: Option<&String>, b: Option<&String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => match (Quantity::parse(a), Quantity::parse(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        },
        (None, None) => true,
        _ => false,
    }
}

/// The Pod built from a valid Session spec, with the hash of the spec it was built from.
/// The only way to get one is [`DesiredPod::build`], so holding one means the spec is valid.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredPod {
    pod: Box<Pod>,
    spec_hash: String,
    shape_hash: String,
    awake_requests: BTreeMap<String, String>,
    sleep_requests: BTreeMap<String, String>,
}

/// The requests an in-place resize may change (the kubelet resizes CPU and memory only).
pub const RESIZABLE: [&str; 2] = ["cpu", "memory"];

impl DesiredPod {
    /// Validates the Session's spec and builds its Pod. Either step can reject the spec: the
    /// operator's defaults fill gaps in it, and the Pod builder checks the result.
    pub fn build(session: &Session, config: &SandboxConfig) -> Result<Self, ValidationError> {
        validate_session(&session.name_any(), &session.spec)?;
        let pod = build_pod(session, config)?;
        let resources = sandbox_resources(&session.spec, config)?;
        let (awake_requests, sleep_requests) = requests_by_state(&resources, config);
        Ok(Self {
            pod: Box::new(pod),
            spec_hash: pod_spec_hash(&session.spec),
            shape_hash: pod_shape_hash(&session.spec),
            awake_requests,
            sleep_requests,
        })
    }

    /// The sandbox container's CPU and memory requests while the Session is awake.
    pub fn awake_requests(&self) -> &BTreeMap<String, String> {
        &self.awake_requests
    }

    /// The sandbox container's CPU and memory requests while the Session sleeps: the
    /// operator's sleep values, never above the awake ones. A Guaranteed Pod (requests equal
    /// to limits, `--request-ratio 1`) keeps its requests: lowering them would change its QoS
    /// class, which the apiserver refuses for a running Pod.
    pub fn sleep_requests(&self) -> &BTreeMap<String, String> {
        &self.sleep_requests
    }

    /// The Pod to create.
    pub fn pod(&self) -> &Pod {
        &self.pod
    }

    /// Hands over the Pod to create.
    pub fn into_pod(self) -> Box<Pod> {
        self.pod
    }

    /// The hash this Pod carries in [`annotations::SPEC_HASH`].
    pub fn spec_hash(&self) -> &str {
        &self.spec_hash
    }

    /// True when `existing` was built from another spec and must be replaced. A Pod without
    /// the annotation is left alone: nothing says it is out of date. A Pod adopted from a pool
    /// is compared by its shape only: the Session's env reaches its executions instead.
    pub fn is_outdated(&self, existing: &Pod) -> bool {
        let want = if from_pool(existing).is_some() {
            &self.shape_hash
        } else {
            &self.spec_hash
        };
        spec_hash_of(existing).is_some_and(|hash| hash != want)
    }

    /// True when a Session wanting this Pod may adopt `warm`, a Pod of SessionPool `pool`:
    /// it is still warm (labelled for the pool), of the same shape, and neither going nor
    /// stopped.
    pub fn can_adopt(&self, warm: &Pod, pool: &str) -> bool {
        let phase = warm.status.as_ref().and_then(|s| s.phase.as_deref());
        warm.labels().get(labels::WARM_POOL).map(String::as_str) == Some(pool)
            && from_pool(warm) == Some(pool)
            && spec_hash_of(warm) == Some(self.shape_hash.as_str())
            && warm.metadata.deletion_timestamp.is_none()
            && !matches!(phase, Some("Failed" | "Succeeded"))
    }

    /// The labels an adopted Pod gets in the adoption write: this Session's, the egress
    /// included.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.pod.labels()
    }

    /// The labels of this Pod that `existing` lacks or holds with another value: a changed
    /// `spec.network.egress`, or a label someone removed. The NetworkPolicies select sandboxes
    /// by these labels, so they are patched back onto the running Pod, never left to drift.
    pub fn labels_to_restore(&self, existing: &Pod) -> BTreeMap<String, String> {
        let current = existing.labels();
        self.pod
            .labels()
            .iter()
            .filter(|(key, value)| current.get(*key) != Some(*value))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }
}

fn from_pool(pod: &Pod) -> Option<&str> {
    pod.labels().get(labels::FROM_POOL).map(String::as_str)
}

fn spec_hash_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(annotations::SPEC_HASH)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{EgressPolicy, SessionSpec};

    fn session(f: impl FnOnce(&mut SessionSpec)) -> Session {
        let mut spec = SessionSpec {
            ttl_seconds: 3600,
            ..SessionSpec::default()
        };
        f(&mut spec);
        let mut s = Session::new("demo", spec);
        s.metadata.namespace = Some("ns".into());
        s.metadata.uid = Some("uid-1".into());
        s
    }

    #[test]
    fn it_is_the_built_pod_with_its_spec_hash() {
        let s = session(|_| {});
        let config = SandboxConfig::default();
        let desired = DesiredPod::build(&s, &config).expect("valid");
        assert_eq!(desired.pod(), &build_pod(&s, &config).expect("pod"));
        assert_eq!(desired.spec_hash(), pod_spec_hash(&s.spec));
        assert_eq!(spec_hash_of(desired.pod()), Some(desired.spec_hash()));
    }

    #[test]
    fn the_spec_is_validated_before_the_pod_is_built() {
        let s = session(|spec| spec.image = Some(" ".into()));
        let err = DesiredPod::build(&s, &SandboxConfig::default()).expect_err("invalid");
        assert_eq!(err.field, "spec.image");
        assert!(build_pod(&s, &SandboxConfig::default()).is_ok());
    }

    #[test]
    fn the_operator_defaults_can_make_a_spec_invalid() {
        let config = SandboxConfig {
            default_memory: "lots".into(),
            ..SandboxConfig::default()
        };
        let err = DesiredPod::build(&session(|_| {}), &config).expect_err("invalid");
        assert_eq!(err.field, "spec.resources.memory");
    }

    #[test]
    fn only_a_pod_from_another_spec_is_outdated() {
        let s = session(|_| {});
        let desired = DesiredPod::build(&s, &SandboxConfig::default()).expect("valid");
        let mut existing = desired.pod().clone();
        assert!(!desired.is_outdated(&existing), "the same spec");

        let mut older = s.clone();
        older.spec.image = Some("other:1".into());
        let older = DesiredPod::build(&older, &SandboxConfig::default()).expect("valid");
        assert!(desired.is_outdated(older.pod()), "another image");

        existing.metadata.annotations = None;
        assert!(!desired.is_outdated(&existing), "no hash to compare");
    }

    #[test]
    fn a_changed_egress_is_a_label_to_restore_not_a_new_pod() {
        let allow = session(|_| {});
        let running = DesiredPod::build(&allow, &SandboxConfig::default()).expect("valid");
        assert!(running.labels_to_restore(running.pod()).is_empty());

        let deny = session(|spec| spec.network.egress = EgressPolicy::Deny);
        let desired = DesiredPod::build(&deny, &SandboxConfig::default()).expect("valid");
        assert!(!desired.is_outdated(running.pod()), "same Pod");
        assert_eq!(
            desired.labels_to_restore(running.pod()),
            BTreeMap::from([(labels::EGRESS.to_string(), "Deny".to_string())])
        );

        let mut stripped = desired.pod().clone();
        if let Some(l) = stripped.metadata.labels.as_mut() {
            l.remove(labels::COMPONENT);
        }
        assert_eq!(
            desired.labels_to_restore(&stripped),
            BTreeMap::from([(labels::COMPONENT.to_string(), "sandbox".to_string())])
        );
    }
}
