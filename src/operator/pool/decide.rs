//! Pure decisions of the SessionPool controller: which warm Pods to start or delete, and the
//! status that results.

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::{PersistentVolumeClaim, Pod},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::ResourceExt;
use std::collections::BTreeSet;

use crate::crd::{
    annotations, conditions::READY, find_condition, labels, next_condition, SessionPool,
    SessionPoolStatus,
};

use super::build::warm_selector;
use crate::operator::session::build::mounted_claim;

/// `Ready` reason: every desired warm Pod is there and ready.
pub const REASON_FILLED: &str = "Filled";
/// `Ready` reason: warm Pods are missing or starting; Sessions take the cold path meanwhile.
pub const REASON_FILLING: &str = "Filling";

/// What a reconcile of a pool does.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolPlan {
    /// How many warm Pods to create.
    pub create: usize,
    /// Warm Pods to delete (name, uid): stopped, of an old template, or beyond `replicas`.
    pub delete: Vec<(String, Option<String>)>,
    /// The status to write, or `None` when unchanged.
    pub status: Option<SessionPoolStatus>,
}

fn is_warm(pod: &Pod, pool: &str) -> bool {
    pod.labels().get(labels::WARM_POOL).map(String::as_str) == Some(pool)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn kubelet_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Plans a reconcile from every Pod the pool built (`built`: warm ones and adopted ones) and
/// the template's shape hash. Pure: `now` is passed in.
pub fn plan(pool: &SessionPool, built: &[Pod], template_hash: &str, now: Timestamp) -> PoolPlan {
    let name = pool.name_any();
    let live: Vec<&Pod> = built
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let adopted = live.iter().filter(|p| !is_warm(p, &name)).count();
    let (keep, mut delete): (Vec<&Pod>, Vec<&Pod>) = live
        .into_iter()
        .filter(|p| is_warm(p, &name))
        .partition(|p| {
            let current = p
                .annotations()
                .get(annotations::SPEC_HASH)
                .is_some_and(|h| h == template_hash);
            current && !matches!(phase(p), "Failed" | "Succeeded")
        });
    let want = usize::try_from(pool.spec.replicas.max(0)).unwrap_or(0);
    let mut keep = keep;
    if keep.len() > want {
        // Starting ones go first, then the newest: the ready, long-warm ones stay.
        keep.sort_by_key(|p| {
            (
                kubelet_ready(p),
                std::cmp::Reverse(p.metadata.creation_timestamp.clone().map(|t| t.0)),
            )
        });
        let extra = keep.len() - want;
        delete.extend(keep.drain(..extra));
    }
    let create = want.saturating_sub(keep.len());
    let ready = keep.iter().filter(|p| kubelet_ready(p)).count();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let current = pool.status.clone().unwrap_or_default();
    let filled = ready >= want;
    let (reason, message) = if filled {
        (REASON_FILLED, format!("{ready} warm Pods ready"))
    } else {
        (
            REASON_FILLING,
            format!("{ready} of {want} warm Pods ready; Sessions take the cold path meanwhile"),
        )
    };
    let previous: Option<&Condition> = find_condition(&current.conditions, READY);
    let condition = next_condition(
        previous,
        READY,
        filled,
        reason,
        &message,
        pool.metadata.generation,
        Time(now),
    );
    let status = SessionPoolStatus {
        replicas: count(keep.len()),
        ready_replicas: count(ready),
        available_replicas: count(ready),
        adopted: count(adopted),
        selector: Some(warm_selector(&name)),
        observed_generation: pool.metadata.generation,
        conditions: vec![condition],
    };
    PoolPlan {
        create,
        delete: delete
            .into_iter()
            .map(|p| (p.name_any(), p.uid()))
            .collect(),
        status: (status != current).then_some(status),
    }
}

/// The warm Pods whose runner channel the pool opens ahead of adoption: warm, running, ready
/// by the kubelet (the container has started), and not on their way out.
pub fn channel_candidates<'a>(
    pool: &str,
    built: &'a [Pod],
    deleting: &[(String, Option<String>)],
) -> Vec<&'a Pod> {
    built
        .iter()
        .filter(|p| is_warm(p, pool) && kubelet_ready(p) && phase(p) == "Running")
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !deleting.iter().any(|(name, _)| *name == p.name_any()))
        .collect()
}

/// The unadopted claims (`warm_claims`: those still labelled for the pool) to delete: every
/// one that no Pod of the pool mounts, except Pods on their way out (`deleting`, this plan's
/// deletions, or already terminating). So a scale-down deletes a warm Pod's claim with it, a
/// claim whose Pod could not be created goes, and the claim of a Pod a Session is adopting
/// (adopted Pod, claim not yet moved) stays.
pub fn claims_to_delete(
    built: &[Pod],
    deleting: &[(String, Option<String>)],
    warm_claims: &[PersistentVolumeClaim],
) -> Vec<String> {
    let mounted: BTreeSet<&str> = built
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !deleting.iter().any(|(name, _)| *name == p.name_any()))
        .filter_map(mounted_claim)
        .collect();
    warm_claims
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(ResourceExt::name_any)
        .filter(|name| !mounted.contains(name.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SessionPoolSpec;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use std::collections::BTreeMap;

    fn pool(replicas: i32) -> SessionPool {
        let mut p = SessionPool::new(
            "fast",
            SessionPoolSpec {
                replicas,
                template: Default::default(),
            },
        );
        p.metadata.namespace = Some("ns".into());
        p.metadata.generation = Some(1);
        p
    }

    fn pod(name: &str, warm: bool, hash: &str, ready: bool) -> Pod {
        let mut labels = BTreeMap::from([(labels::FROM_POOL.to_string(), "fast".to_string())]);
        if warm {
            labels.insert(labels::WARM_POOL.to_string(), "fast".to_string());
        }
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(format!("{name}-uid"));
        p.metadata.labels = Some(labels);
        p.metadata.annotations = Some(BTreeMap::from([(
            annotations::SPEC_HASH.to_string(),
            hash.to_string(),
        )]));
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        p
    }

    fn now() -> Timestamp {
        Timestamp::from_second(100).expect("valid")
    }

    #[test]
    fn an_empty_pool_fills_and_says_so() {
        let p = plan(&pool(3), &[], "h", now());
        assert_eq!(p.create, 3);
        assert!(p.delete.is_empty());
        let status = p.status.expect("status");
        assert_eq!(status.replicas, 0);
        assert_eq!(
            status.selector.as_deref(),
            Some("kubexec.dev/warm-pool=fast")
        );
        assert_eq!(status.conditions[0].reason, REASON_FILLING);
    }

    #[test]
    fn adopted_pods_do_not_count_and_are_refilled() {
        let built = [pod("a", true, "h", true), pod("b", false, "h", true)];
        let p = plan(&pool(2), &built, "h", now());
        assert_eq!(p.create, 1, "the adopted one is replaced");
        let status = p.status.expect("status");
        assert_eq!(
            (status.replicas, status.ready_replicas, status.adopted),
            (1, 1, 1)
        );
    }

    #[test]
    fn scaling_down_deletes_starting_pods_first() {
        let built = [
            pod("ready", true, "h", true),
            pod("starting", true, "h", false),
        ];
        let p = plan(&pool(1), &built, "h", now());
        assert_eq!(p.create, 0);
        assert_eq!(
            p.delete,
            [("starting".to_string(), Some("starting-uid".to_string()))]
        );
    }

    #[test]
    fn an_old_template_is_rolled() {
        let p = plan(&pool(1), &[pod("old", true, "old-hash", true)], "h", now());
        assert_eq!(p.create, 1);
        assert_eq!(p.delete.len(), 1);
    }

    #[test]
    fn a_full_pool_writes_nothing_twice() {
        let built = [pod("a", true, "h", true)];
        let mut full = pool(1);
        let first = plan(&full, &built, "h", now());
        assert_eq!(first.create, 0);
        full.status = first.status;
        assert_eq!(
            full.status
                .as_ref()
                .map(|s| s.conditions[0].reason.as_str()),
            Some(REASON_FILLED)
        );
        let again = plan(
            &full,
            &built,
            "h",
            Timestamp::from_second(200).expect("valid"),
        );
        assert_eq!(again.status, None);
    }

    fn mounting(mut pod: Pod, claim: &str) -> Pod {
        use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, PodSpec, Volume};
        pod.spec = Some(PodSpec {
            volumes: Some(vec![Volume {
                name: "workspace".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.into(),
                    read_only: None,
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        });
        pod
    }

    fn claim(name: &str) -> PersistentVolumeClaim {
        let mut c = PersistentVolumeClaim::default();
        c.metadata.name = Some(name.into());
        c
    }

    #[test]
    fn a_claim_goes_with_its_warm_pod_or_without_one_and_stays_while_mounted() {
        let built = vec![
            mounting(pod("fast-keep", true, "h", true), "fast-c1"),
            mounting(pod("fast-extra", true, "h", true), "fast-c2"),
            mounting(pod("fast-adopting", false, "h", true), "fast-c3"),
        ];
        let deleting = vec![("fast-extra".to_string(), Some("fast-extra-uid".to_string()))];
        let claims = ["fast-c1", "fast-c2", "fast-c3", "fast-orphan"].map(claim);
        assert_eq!(
            claims_to_delete(&built, &deleting, &claims),
            ["fast-c2", "fast-orphan"]
        );
        assert_eq!(
            claims_to_delete(&built, &[], &claims[..1]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn channels_open_to_ready_warm_pods_only() {
        let mut going = pod("fast-going", true, "h", true);
        going.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let built = vec![
            pod("fast-ready", true, "h", true),
            pod("fast-starting", true, "h", false),
            pod("fast-adopted", false, "h", true),
            pod("fast-extra", true, "h", true),
            going,
        ];
        let deleting = vec![("fast-extra".to_string(), None)];
        let names: Vec<String> = channel_candidates("fast", &built, &deleting)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(names, ["fast-ready"]);
    }
}
