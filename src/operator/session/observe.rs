//! Dereference (IO): read what exists for a Session.

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};

use crate::crd::Session;
use crate::operator::{Error, Result};

use crate::layout::pod_name;

/// What the cluster holds for a Session right now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The sandbox Pod, if it exists.
    pub pod: Option<Pod>,
}

/// Reads the Session's sandbox Pod (by its deterministic name).
pub async fn observe(client: &kube::Client, session: &Session) -> Result<Observed> {
    let namespace = session
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pod = pods
        .get_opt(&pod_name(&session.name_any()))
        .await
        .map_err(Error::kube("get pod"))?;
    Ok(Observed { pod })
}
