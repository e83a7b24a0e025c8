//! Adoption (IO): a Session naming a SessionPool takes one of its warm Pods.
//!
//! One write per adoption: a JSON merge patch of the warm Pod that carries the Pod's
//! `resourceVersion` (so the apiserver refuses it with 409 if anyone changed the Pod since it
//! was read: another Session adopted it, or the pool deleted it), removes the pool's label,
//! sets the Session's labels (egress included) and replaces the owner references with the
//! Session's. A Pod is therefore never shared: exactly one patch on one resourceVersion wins.
//! A lost race moves on to the next candidate; no candidate left means the cold path.
//! Nothing is recorded before the patch succeeds, so a failed attempt leaves nothing to undo.
//!
//! A warm Pod of a pool with a persistent workspace mounts a claim of its own. Whoever won the
//! Pod takes that claim in a second write: a JSON Patch that tests that the claim's first
//! owner is still the pool the Pod came from, then makes the Session its only owner and gives
//! it the Session's labels. The Session records the claim in `status.workspaceClaim`, so its
//! later Pods mount it; until that is recorded, every reconcile finishes the move (the test
//! fails once the claim is the Session's, and a read confirms it).

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{
    api::{Patch, PatchParams},
    Api, Resource, ResourceExt,
};
use serde_json::{json, Map, Value};
use tracing::{debug, info, warn};

use crate::crd::{labels, Session};
use crate::operator::{Context, Error, Result};
use crate::shared::kube_status::is_status;

use super::build::{is_owned_by, mounted_claim, owned_labels, WORKSPACE_COMPONENT};
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

/// True when `session` may take a warm Pod instead of starting its own. A Session with a
/// persistent workspace that had a sandbox already (it was Ready once, or it owns a pool's
/// claim) keeps its files on its own claim: its next Pod is a cold one that mounts it.
pub fn may_adopt(session: &Session) -> bool {
    let status = session.status.as_ref();
    !session.spec.workspace.persistent
        || status.is_none_or(|s| s.workspace_claim.is_none() && s.ready_at.is_none())
}

/// The workspace claim of `pod` that `session` still has to take: the pool's Pod mounts one
/// and the Session's status does not record it yet.
pub fn claim_to_adopt<'a>(session: &Session, pod: &'a Pod) -> Option<&'a str> {
    pod.labels().get(labels::FROM_POOL)?;
    let claim = mounted_claim(pod)?;
    let recorded = session
        .status
        .as_ref()
        .and_then(|s| s.workspace_claim.as_deref());
    (recorded != Some(claim)).then_some(claim)
}

/// The controller owner's uid of `object`.
pub fn controller_uid(object: &impl Resource) -> Option<String> {
    object
        .meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

/// The claim's adoption patch (a JSON Patch): test that its first owner is `pool_uid`, then
/// set the Session as its only owner and the Session's labels, keeping where it came from.
pub fn claim_adoption_patch(session: &Session, pool: &str, pool_uid: &str) -> Option<Value> {
    let owner = session.controller_owner_ref(&())?;
    let mut claim_labels = owned_labels(&session.name_any(), WORKSPACE_COMPONENT);
    claim_labels.insert(labels::FROM_POOL.to_string(), pool.to_string());
    Some(json!([
        { "op": "test", "path": "/metadata/ownerReferences/0/uid", "value": pool_uid },
        { "op": "replace", "path": "/metadata/ownerReferences", "value": [owner] },
        { "op": "replace", "path": "/metadata/labels", "value": claim_labels },
    ]))
}

/// A JSON Patch document as kube sends it; `None` when `ops` is not one.
pub fn as_json_patch(ops: Value) -> Option<Patch<()>> {
    serde_json::from_value(ops).ok().map(Patch::Json)
}

/// Makes `session` the owner of `claim`, the workspace claim of the pool Pod it adopted.
/// `pool_uid` is the Pod's former owner when the adoption happened in this reconcile; without
/// it the claim is read first. Returns the claim's name once the Session owns it, `None` when
/// it cannot (gone, or someone else's: the Pod keeps mounting it, the pool deletes it once no
/// Pod does).
pub async fn adopt_claim(
    ctx: &Context,
    namespace: &str,
    session: &Session,
    claim: &str,
    pool_uid: Option<String>,
) -> Result<Option<String>> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let owned = |c: &PersistentVolumeClaim| is_owned_by(c, session);
    let pool_uid = match pool_uid {
        Some(uid) => uid,
        None => match claims
            .get_opt(claim)
            .await
            .map_err(Error::kube("get pool claim"))?
        {
            Some(c) if owned(&c) => return Ok(Some(claim.to_string())),
            Some(c) => match controller_uid(&c) {
                Some(uid) => uid,
                None => return Ok(None),
            },
            None => return Ok(None),
        },
    };
    let pool = session
        .spec
        .pool_ref
        .as_ref()
        .map(|p| p.name.as_str())
        .unwrap_or_default();
    let Some(patch) = claim_adoption_patch(session, pool, &pool_uid) else {
        return Ok(None);
    };
    let Some(patch) = as_json_patch(patch) else {
        return Ok(None);
    };
    match claims.patch(claim, &PatchParams::default(), &patch).await {
        Ok(_) => {
            info!(claim, "adopted the warm Pod's workspace claim");
            Ok(Some(claim.to_string()))
        }
        Err(e) if is_status(&e, 404) => Ok(None),
        // The test failed: the claim is not the pool's any more. Ours already (a status write
        // that was lost), or someone else's.
        Err(e) if is_status(&e, 422) || is_status(&e, 409) => {
            let now = claims
                .get_opt(claim)
                .await
                .map_err(Error::kube("get pool claim"))?;
            if now.as_ref().is_some_and(owned) {
                Ok(Some(claim.to_string()))
            } else {
                warn!(claim, "the adopted Pod's claim belongs to someone else");
                Ok(None)
            }
        }
        Err(e) => Err(Error::kube("adopt pool claim")(e)),
    }
}

/// Tries the candidates in order, at most [`MAX_ATTEMPTS`]; returns the adopted Pod as the
/// apiserver wrote it with its former owner's uid (the pool's), or `None` (take the cold path).
pub async fn adopt(
    ctx: &Context,
    namespace: &str,
    session: &Session,
    desired: &DesiredPod,
    candidates: Vec<Pod>,
) -> Result<Option<(Pod, Option<String>)>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    for warm in candidates.into_iter().take(MAX_ATTEMPTS) {
        let Some(patch) = adoption_patch(&warm, session, desired) else {
            continue;
        };
        let name = warm.name_any();
        let pool_uid = controller_uid(&warm);
        match pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(adopted) => {
                info!(pod = %name, "adopted a warm Pod");
                return Ok(Some((adopted, pool_uid)));
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

    #[test]
    fn the_claim_follows_the_pod_once_and_only_from_its_pool() {
        use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, PodSpec, Volume};
        let s =
            session(|spec| spec.pool_ref = Some(crate::crd::PoolReference { name: "p".into() }));
        let mut pod = warm("p-0", "p", &SessionSpec::default(), true);
        assert_eq!(claim_to_adopt(&s, &pod), None, "an emptyDir workspace");
        pod.spec = Some(PodSpec {
            volumes: Some(vec![Volume {
                name: "workspace".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: "p-c1".into(),
                    read_only: None,
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        });
        assert_eq!(claim_to_adopt(&s, &pod), Some("p-c1"));
        let mut recorded = s.clone();
        recorded.status = Some(crate::crd::SessionStatus {
            workspace_claim: Some("p-c1".into()),
            ..Default::default()
        });
        assert_eq!(claim_to_adopt(&recorded, &pod), None, "already moved");

        let patch = claim_adoption_patch(&s, "p", "pool-uid").expect("patch");
        let ops = patch.as_array().expect("ops");
        assert_eq!(ops[0]["op"], "test", "locked on the pool's ownership");
        assert_eq!(ops[0]["value"], "pool-uid");
        assert_eq!(ops[1]["value"][0]["uid"], "uid-1");
        assert_eq!(ops[1]["value"][0]["kind"], "Session");
        let claim_labels = &ops[2]["value"];
        assert_eq!(claim_labels[labels::SESSION], "demo");
        assert_eq!(claim_labels[labels::FROM_POOL], "p");
        assert!(claim_labels.get(labels::WARM_POOL).is_none());
        assert!(as_json_patch(patch).is_some(), "a valid JSON Patch");
    }

    #[test]
    fn a_persistent_session_adopts_only_before_it_has_files() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let fresh = session(|spec| spec.workspace.persistent = true);
        assert!(may_adopt(&fresh));
        let mut was_ready = fresh.clone();
        was_ready.status = Some(crate::crd::SessionStatus {
            ready_at: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            ..Default::default()
        });
        assert!(!may_adopt(&was_ready), "its files are on its own claim");
        let mut adopted = fresh.clone();
        adopted.status = Some(crate::crd::SessionStatus {
            workspace_claim: Some("p-c1".into()),
            ..Default::default()
        });
        assert!(!may_adopt(&adopted), "its files are on the adopted claim");
        let mut ephemeral = was_ready;
        ephemeral.spec.workspace.persistent = false;
        assert!(may_adopt(&ephemeral), "an emptyDir has nothing to keep");
    }
}
