//! `SessionPool`: warm, generic sandbox Pods that Sessions naming the pool adopt.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{NetworkSpec, SessionResources, SessionSpec, WorkspaceSpec};

/// Most warm Pods one pool keeps.
pub const MAX_POOL_REPLICAS: i32 = 100;

/// Keeps `replicas` warm sandbox Pods, shaped by `template`, started and with their runner
/// answering. A Session with `spec.poolRef` naming the pool adopts one of them, which then
/// belongs to that Session alone, and the pool starts another. A Session whose Pod shape
/// (image, resources, workspace) differs from the template, or that finds the pool empty,
/// starts a Pod of its own instead (the cold path): a pool makes Sessions faster, never
/// fail. `kubectl scale sessionpool/<name> --replicas=N` (and an HPA) resize it.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kubexec.dev",
    version = "v1alpha1",
    kind = "SessionPool",
    namespaced,
    status = "SessionPoolStatus",
    shortname = "sespool",
    category = "kubexec",
    derive = "PartialEq",
    cel,
    doc = "Warm sandbox Pods that Sessions naming the pool (spec.poolRef) adopt instead of starting one.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Warm", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Adopted", type_ = "integer", json_path = ".status.adopted"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SessionPoolSpec {
    /// How many warm Pods to keep, between 0 and 100. Each one holds its requests on a node
    /// while it waits (the operator's `--request-ratio` times the template's limits). Default 1.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,

    /// The shape of the warm Pods: the Session fields that make a Pod. A Session adopts a Pod
    /// only when its own image, resources and workspace resolve to the same.
    #[serde(default)]
    pub template: SessionPoolTemplate,
}

fn default_replicas() -> i32 {
    1
}

/// The Session fields that shape a sandbox Pod.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionPoolTemplate {
    /// Container image of the warm sandboxes. Default: the operator's sandbox image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,

    /// Resource limits, as in a Session; fields left out take the operator's defaults.
    #[serde(default)]
    pub resources: SessionResources,

    /// The `/workspace`: an emptyDir of this size, or with `persistent: true` a
    /// PersistentVolumeClaim per warm Pod (named `<pool>-<random>`, owned by the pool until a
    /// Session adopts the Pod, then by that Session, whose later Pods mount the same claim).
    #[serde(default)]
    pub workspace: WorkspaceSpec,

    /// Egress of the warm Pods before adoption. A Session with another egress adopts one too:
    /// the Pod's egress label is set in the same write that adopts it.
    #[serde(default)]
    pub network: NetworkSpec,
}

impl SessionPoolTemplate {
    /// The Session spec a warm Pod is built from: the template's fields, defaults elsewhere
    /// (no env: a Session's env reaches its executions with each one).
    pub fn session_spec(&self) -> SessionSpec {
        SessionSpec {
            image: self.image.clone(),
            resources: self.resources.clone(),
            workspace: self.workspace.clone(),
            network: self.network.clone(),
            ..SessionSpec::default()
        }
    }
}

/// Observed state of a SessionPool, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionPoolStatus {
    /// Warm Pods that exist and are not being deleted (adopted ones no longer count).
    #[serde(default)]
    pub replicas: i32,

    /// Warm Pods whose sandbox container runs and is ready: a Session adopting one is Ready
    /// as soon as its runner answers.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Warm Pods a Session can adopt now: ready, and built from the current template.
    #[serde(default)]
    pub available_replicas: i32,

    /// Pods of this pool that Sessions adopted and that still run (they belong to their
    /// Sessions now; the pool has replaced them).
    #[serde(default)]
    pub adopted: i32,

    /// The label selector of the warm Pods, for the scale subresource (and an HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready`: True when every desired warm Pod is available.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Names the SessionPool (in the Session's namespace) whose warm Pods a Session adopts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PoolReference {
    /// Name of the SessionPool.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}
