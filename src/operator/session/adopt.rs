//! Adoption (IO): a Session naming a SessionPool takes one of its warm Pods.
//!
//! One write per adoption: a JSON merge patch of the warm Pod that carries the Pod's
//! `resourceVersion` (so the apiserver refuses it with 409 if anyone changed the Pod since it
//! was read: another Session adopted it, or the pool deleted it), removes the pool's label,
//! sets the Session's labels (egress included) and replaces the owner references with the
//! Session's. A Pod is therefore never shared: exactly one patch on one resourceVersion wins.
//! A lost race moves on to the next candidate; no candidate left means the cold path.
//! Nothing is recorded before the patch succeeds, so a failed attempt leaves nothing to undo.

use k8s_openapi::api::core::v1::Pod;
use kube::{
    api::{Patch, PatchParams},
    Api, Resource, ResourceExt,
};
use serde_json::{json, Map, Value};
use tracing::{debug, info};

use crate::crd::{labels, Session};
use crate::operator::{Context, Error, Result};
use crate::shared::kube_status::is_status;

use super::desired::DesiredPod;

/// How many candidates one reconcile tries before it takes the cold path.
pub const MAX_ATTEMPTS: usize = 5;

/// The warm Pods `desired` may adopt, best first: those the kubelet reports ready before
/// those still starting, each group rotated by `spread` so that Sessions adopting at the same
/// moment start from different Pods instead of all racing for the first.
pub fn candidates(desired: &DesiredPod, pool: &str, warm: Vec<Pod>, spread: u64) -> Vec<Pod> {
    let (mut ready, mut starting): (Vec<Pod>, Vec<Pod>) = warm
        .into_iter()
        .filter(|p| desired.can_adopt(p, pool))
        .partition(kubelet_ready);
    for group in [&mut ready, &mut starting] {
        group.sort_by_key(|a| a.name_any());
        if !group.is_empty() {
            let by = (spread % group.len() as u64) as usize;
            group.rotate_left(by);
        }
    }
    ready.extend(starting);
    ready
}

/// A spread key for [`candidates`]: FNV-1a of the Session's uid (or name).
pub fn spread_of(session: &Session) -> u64 {
    let key = session.uid().unwrap_or_else(|| session.name_any());
    key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn kubelet_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The adoption patch of `warm` for `session`: see the module docs. `None` when the Pod has
/// no resourceVersion to lock on (it was not read from the apiserver).
pub fn adoption_patch(warm: &Pod, session: &Session, desired: &DesiredPod) -> Option<Value> {
    let version = warm.resource_version()?;
    let owner = session.controller_owner_ref(&())?;
    let mut set: Map<String, Value> = desired
        .labels()
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    set.insert(labels::WARM_POOL.into(), Value::Null);
    Some(json!({
        "metadata": {
            "resourceVersion": version,
            "labels": set,
            "ownerReferences": [owner],
        }
    }))
}

/// Tries the candidates in order, at most [`MAX_ATTEMPTS`]; returns the adopted Pod as the
/// apiserver wrote it, or `None` (take the cold path).
pub async fn adopt(
    ctx: &Context,
    namespace: &str,
    session: &Session,
    desired: &DesiredPod,
    candidates: Vec<Pod>,
) -> Result<Option<Pod>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    for warm in candidates.into_iter().take(MAX_ATTEMPTS) {
        let Some(patch) = adoption_patch(&warm, session, desired) else {
            continue;
        };
        let name = warm.name_any();
        match pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(adopted) => {
                info!(pod = %name, "adopted a warm Pod");
                return Ok(Some(adopted));
            }
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => {
                debug!(pod = %name, "lost the race for a warm Pod; trying the next");
            }
            Err(e) => return Err(Error::kube("adopt warm pod")(e)),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{annotations, EgressPolicy, SessionSpec};
    use crate::operator::config::SandboxConfig;
    use crate::operator::session::build::pod_shape_hash;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use std::collections::BTreeMap;

    fn session(f: impl FnOnce(&mut SessionSpec)) -> Session {
        let mut spec = SessionSpec::default();
        f(&mut spec);
        let mut s = Session::new("demo", spec);
        s.metadata.namespace = Some("ns".into());
        s.metadata.uid = Some("uid-1".into());
        s
    }

    fn warm(name: &str, pool: &str, shape: &SessionSpec, ready: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.resource_version = Some("42".into());
        pod.metadata.labels = Some(BTreeMap::from([
            (labels::WARM_POOL.to_string(), pool.to_string()),
            (labels::FROM_POOL.to_string(), pool.to_string()),
        ]));
        pod.metadata.annotations = Some(BTreeMap::from([(
            annotations::SPEC_HASH.to_string(),
            pod_shape_hash(shape),
        )]));
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        pod
    }

    fn names(pods: &[Pod]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn only_warm_pods_of_the_same_shape_and_pool_are_candidates_ready_first() {
        let s = session(|spec| spec.env = vec![crate::crd::EnvVar::literal("A", "b")]);
        let desired = DesiredPod::build(&s, &SandboxConfig::default()).expect("valid");
        let shape = SessionSpec::default();
        let bigger = SessionSpec {
            image: Some("other:1".into()),
            ..SessionSpec::default()
        };
        let mut going = warm("p-going", "p", &shape, true);
        going.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let found = candidates(
            &desired,
            "p",
            vec![
                warm("p-starting", "p", &shape, false),
                warm("p-ready", "p", &shape, true),
                warm("p-other-shape", "p", &bigger, true),
                warm("q-ready", "q", &shape, true),
                going,
            ],
            0,
        );
        assert_eq!(
            names(&found),
            ["p-ready", "p-starting"],
            "env is not part of the shape"
        );
    }

    #[test]
    fn concurrent_sessions_start_from_different_pods() {
        let s = session(|_| {});
        let desired = DesiredPod::build(&s, &SandboxConfig::default()).expect("valid");
        let shape = SessionSpec::default();
        let pool = || {
            (0..3)
                .map(|i| warm(&format!("p-{i}"), "p", &shape, true))
                .collect()
        };
        assert_eq!(
            names(&candidates(&desired, "p", pool(), 0)),
            ["p-0", "p-1", "p-2"]
        );
        assert_eq!(
            names(&candidates(&desired, "p", pool(), 4)),
            ["p-1", "p-2", "p-0"]
        );
    }

    #[test]
    fn the_patch_is_locked_and_moves_labels_and_owner_at_once() {
        let s = session(|spec| spec.network.egress = EgressPolicy::Deny);
        let desired = DesiredPod::build(&s, &SandboxConfig::default()).expect("valid");
        let pod = warm("p-0", "p", &SessionSpec::default(), true);
        let patch = adoption_patch(&pod, &s, &desired).expect("patch");
        let meta = &patch["metadata"];
        assert_eq!(meta["resourceVersion"], "42");
        assert_eq!(meta["labels"][labels::WARM_POOL], Value::Null);
        assert_eq!(meta["labels"][labels::SESSION], "demo");
        assert_eq!(meta["labels"][labels::EGRESS], "Deny");
        assert_eq!(meta["labels"][labels::COMPONENT], "sandbox");
        let owners = meta["ownerReferences"].as_array().expect("owners");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0]["kind"], "Session");
        assert_eq!(owners[0]["uid"], "uid-1");
        assert_eq!(owners[0]["controller"], true);
        let mut unread = pod;
        unread.metadata.resource_version = None;
        assert_eq!(
            adoption_patch(&unread, &s, &desired),
            None,
            "never unlocked"
        );
    }
}
