//! Dereference (IO): read what exists for a Session.

use k8s_openapi::api::core::v1::Pod;
use kube::{api::ListParams, Api, ResourceExt};

use crate::crd::{labels, Session};
use crate::operator::{Error, Result};

use crate::layout::pod_name;

use super::{build::is_owned_by, pod_state::RunnerAnswer};
use crate::operator::execution::pending::Busy;

/// What the cluster holds for a Session right now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The sandbox Pod, if it exists.
    pub pod: Option<Pod>,
    /// Whether its runner answered a ping (see [`super::probe`]).
    pub runner: RunnerAnswer,
    /// The SessionPool the Pod was adopted from in this reconcile.
    pub adopted_from: Option<String>,
    /// The workspace claim of a pool's Pod that the Session now owns, when the status does
    /// not record it yet.
    pub adopted_claim: Option<String>,
    /// The Session's unfinished Executions, from the Execution controller's watch.
    pub busy: Busy,
}

/// The name of the Session's Pod: the one in its status (an adopted warm Pod has its pool's
/// naming), else `<session>-sandbox`.
pub fn recorded_pod_name(session: &Session) -> String {
    session
        .status
        .as_ref()
        .and_then(|s| s.pod_name.clone())
        .unwrap_or_else(|| pod_name(&session.name_any()))
}

/// Reads the Session's sandbox Pod: by the name in its status, else by its deterministic
/// name. A Session with a pool may own an adopted Pod its status does not name yet (the
/// status write after the adoption was lost): that one is found by its Session label and
/// owner.
pub async fn observe(client: &kube::Client, session: &Session) -> Result<Observed> {
    let namespace = session
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let recorded = recorded_pod_name(session);
    let mut pod = pods
        .get_opt(&recorded)
        .await
        .map_err(Error::kube("get pod"))?
        .filter(|p| recorded == pod_name(&session.name_any()) || is_owned_by(p, session));
    if pod.is_none() && session.spec.pool_ref.is_some() {
        let selector = format!("{}={}", labels::SESSION, session.name_any());
        pod = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::kube("list pods"))?
            .items
            .into_iter()
            .find(|p| is_owned_by(p, session) && p.metadata.deletion_timestamp.is_none());
    }
    Ok(Observed {
        pod,
        runner: RunnerAnswer::NotAsked,
        adopted_from: None,
        adopted_claim: None,
        busy: Busy::default(),
    })
}

/// The warm Pods of SessionPool `pool` in `namespace` (not yet checked for adoption).
pub async fn warm_pods(client: &kube::Client, namespace: &str, pool: &str) -> Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{}={pool}", labels::WARM_POOL);
    Ok(pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube("list warm pods"))?
        .items)
}
