//! `Session`: an isolated, resource-limited sandbox Pod with a `/workspace`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{EnvVar, PoolReference};

/// Default `ttlSeconds`: one day.
pub const DEFAULT_TTL_SECONDS: i64 = 86_400;
/// Largest `ttlSeconds`: one week.
pub const MAX_TTL_SECONDS: i64 = 604_800;
/// Default workspace size.
pub const DEFAULT_WORKSPACE_SIZE: &str = "1Gi";
/// Largest total size of `spec.metadata` (keys plus values), in bytes.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest Session name: the name is used as a label value on its Pod.
pub const MAX_SESSION_NAME: usize = 63;

/// A code-execution sandbox: one Pod running the session image with `kubexec-runner init` as
/// PID 1, and a `/workspace` that persists between executions. Executions (`kubectl get exe`)
/// run in it.
// Several printer columns share a type, which clippy takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kubexec.dev",
    version = "v1alpha1",
    kind = "Session",
    namespaced,
    status = "SessionStatus",
    shortname = "ses",
    category = "kubexec",
    derive = "PartialEq",
    cel,
    doc = "A code-execution sandbox: a hardened, resource-limited Pod with a /workspace. Executions run in it.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Pod", type_ = "string", json_path = ".status.podName"),
    printcolumn(name = "Active", type_ = "date", json_path = ".status.lastActivityAt"),
    printcolumn(name = "Expires", type_ = "date", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 63")
        .message("Session names are at most 63 characters long (the name is used as a label value)"),
    validation = Rule::new("!has(self.spec.sleepAfterSeconds) || !has(self.spec.idleTimeoutSeconds) || self.spec.sleepAfterSeconds < self.spec.idleTimeoutSeconds")
        .message("spec.sleepAfterSeconds must be less than spec.idleTimeoutSeconds (sleep comes before deep sleep)")
)]
#[serde(rename_all = "camelCase")]
pub struct SessionSpec {
    /// Container image of the sandbox. It needs a shell; code mode also needs `bun` on the PATH.
    /// Default: the operator's configured sandbox image (`--sandbox-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,

    /// Resource limits of the sandbox container. Fields left out take the operator's defaults,
    /// so a sandbox always runs with limits.
    #[serde(default)]
    pub resources: SessionResources,

    /// The `/workspace` volume: an emptyDir (default) or a PersistentVolumeClaim.
    #[serde(default)]
    pub workspace: WorkspaceSpec,

    /// Environment variables of the sandbox container, visible to every execution. At most 100,
    /// names unique. Executions can add their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,

    /// Lifetime in seconds, counted from the Session's creation. When it has passed the Session
    /// is marked `Expired` and deleted, together with its Pod and workspace. Default 86400 (one
    /// day), between 1 and 604800 (one week).
    #[serde(default = "default_ttl_seconds")]
    #[schemars(range(min = 1, max = 604800))]
    pub ttl_seconds: i64,

    /// Put the Session to sleep after this many seconds without activity (no execution
    /// running, started or finished, no api request): the Pod and its processes are kept, and
    /// its CPU and memory requests are lowered in place (limits unchanged), so the node's
    /// reserved compute is given back. The next request wakes it: the requests are restored.
    /// Less than `idleTimeoutSeconds`. Unset: never sleeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub sleep_after_seconds: Option<i64>,

    /// Deep sleep: suspend the Session after this many seconds without activity (no execution
    /// running, started or finished, no api request): the Pod is deleted and the workspace
    /// kept (files survive only in a persistent workspace). The next request resumes it with
    /// a new Pod. Unset: never deep-sleeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub idle_timeout_seconds: Option<i64>,

    /// Timeout in seconds for executions that set none, between 1 and 300. Unset: 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub default_timeout_seconds: Option<i32>,

    /// When true the Pod is deleted and the workspace kept (a persistent workspace survives;
    /// an emptyDir does not). Setting it back to false starts a new Pod. Default false.
    #[serde(default)]
    pub suspend: bool,

    /// Network access of the sandbox, enforced by the NetworkPolicies the operator keeps in
    /// the Session's namespace (the cluster must enforce NetworkPolicy). Changing it takes
    /// effect on the running Pod: same Pod, same processes, same workspace.
    #[serde(default)]
    pub network: NetworkSpec,

    /// Free-form key/value metadata for the Session's owner; kubexec does not interpret it. At
    /// most 64 entries and 16 KiB in total (keys plus values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 256 && size(self[k]) <= 16384) && self.map(k, size(k) + size(self[k])).sum() <= 16384")
        .message("metadata is limited to 16 KiB in total (keys plus values)"))]
    pub metadata: BTreeMap<String, String>,

    /// A SessionPool in this namespace to take a warm Pod from: the Session adopts one (Ready
    /// in milliseconds) when its image, resources and workspace match the pool's template,
    /// and starts its own Pod otherwise, or when the pool is empty. The env reaches every
    /// execution either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_ref: Option<PoolReference>,
}

impl Default for SessionSpec {
    /// The spec of `spec: {}`: every field at its documented default.
    fn default() -> Self {
        Self {
            image: None,
            resources: SessionResources::default(),
            workspace: WorkspaceSpec::default(),
            env: Vec::new(),
            ttl_seconds: DEFAULT_TTL_SECONDS,
            sleep_after_seconds: None,
            idle_timeout_seconds: None,
            default_timeout_seconds: None,
            suspend: false,
            network: NetworkSpec::default(),
            metadata: BTreeMap::new(),
            pool_ref: None,
        }
    }
}

fn default_ttl_seconds() -> i64 {
    DEFAULT_TTL_SECONDS
}

/// Resource limits of the sandbox container, as Kubernetes quantities.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionResources {
    /// CPU limit, e.g. `500m` or `2`. Default: the operator's `--default-cpu` (1). The request
    /// is this times the operator's `--request-ratio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
        .message("must be a positive Kubernetes quantity such as 500m or 2"))]
    pub cpu: Option<String>,

    /// Memory limit, e.g. `512Mi` or `2Gi`. The sandbox is OOM-killed above it. Default: the
    /// operator's `--default-memory` (512Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
        .message("must be a positive Kubernetes quantity such as 512Mi or 2Gi"))]
    pub memory: Option<String>,

    /// Ephemeral-storage limit of the container (its writable layer and logs; an emptyDir
    /// workspace is limited by `workspace.size`). Default: the operator's `--default-storage` (1Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
        .message("must be a positive Kubernetes quantity such as 1Gi"))]
    pub ephemeral_storage: Option<String>,

    /// Most processes (and threads) the sandbox may run at once, between 16 and 32768: its
    /// processes, background ones and unreaped zombies included. Past it, fork fails with
    /// EAGAIN in this session only; the runner is not held to it, so the next execution still
    /// starts and a timed-out one is still stopped. Enforced where sandboxes run in user
    /// namespaces (the operator's `--user-namespaces`); elsewhere the kubelet's `podPidsLimit`
    /// is the only bound. Default: the operator's `--default-pids` (512); never more than its
    /// `--max-pids`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 16, max = 32768))]
    pub pids: Option<i64>,
}

/// The `/workspace` volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// Size of the workspace, e.g. `1Gi`: the PersistentVolumeClaim's request, or the emptyDir's
    /// `sizeLimit`. Default 1Gi.
    #[serde(default = "default_workspace_size")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
        .message("must be a positive Kubernetes quantity such as 1Gi"))]
    pub size: String,

    /// true: a PersistentVolumeClaim `<session>-workspace` (ReadWriteOnce; or the claim adopted
    /// with a SessionPool's warm Pod, see `status.workspaceClaim`) that survives Pod loss and
    /// suspension. false (default): an emptyDir that lives as long as the Pod.
    #[serde(default)]
    pub persistent: bool,

    /// StorageClass of the PersistentVolumeClaim. Unset: the cluster's default class. Ignored
    /// when `persistent` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

impl Default for WorkspaceSpec {
    fn default() -> Self {
        Self {
            size: default_workspace_size(),
            persistent: false,
            storage_class_name: None,
        }
    }
}

fn default_workspace_size() -> String {
    DEFAULT_WORKSPACE_SIZE.to_string()
}

/// Network access of the sandbox. Inbound traffic is never up to the Session: only the kubexec
/// api reaches a sandbox, and only on its preview ports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    /// Outbound traffic from the sandbox. `Allow` (default; needed for Bun's auto-install from a
    /// package registry): DNS to the cluster's resolvers and the public internet, never private
    /// ranges (RFC 1918, 100.64.0.0/10), link-local addresses (cloud metadata), the cluster's
    /// Pod and Service ranges or its nodes. `Deny`: nothing at all, DNS included. A change
    /// applies to the running sandbox without restarting it; connections already open when it
    /// switches to `Deny` may survive.
    #[serde(default)]
    pub egress: EgressPolicy,
}

/// Outbound traffic policy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EgressPolicy {
    /// DNS and the public internet.
    #[default]
    Allow,
    /// No outbound connections at all.
    Deny,
}

impl EgressPolicy {
    /// The policy as written in the spec, and as the value of the sandbox Pod's
    /// [`EGRESS`](super::labels::EGRESS) label.
    pub fn as_str(self) -> &'static str {
        match self {
            EgressPolicy::Allow => "Allow",
            EgressPolicy::Deny => "Deny",
        }
    }
}

/// Lifecycle phase of a Session.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum SessionPhase {
    /// The Pod is being created or is starting.
    #[default]
    Pending,
    /// The Pod is ready; executions can run.
    Ready,
    /// Asleep after `sleepAfterSeconds` without activity: the Pod and its processes are kept,
    /// its requests lowered. The next request wakes it (`Ready` reason Sleeping, then Waking).
    Sleeping,
    /// The Pod was deleted (by `spec.suspend`, or deep sleep after `idleTimeoutSeconds`);
    /// the workspace is kept.
    Suspended,
    /// The TTL has passed; the Session is being deleted.
    Expired,
    /// The spec cannot be turned into a running Pod; see `message`.
    Failed,
    /// The Session is being deleted.
    Terminating,
}

impl SessionPhase {
    /// Every phase, for metrics that report a value per phase.
    pub const ALL: [SessionPhase; 7] = [
        SessionPhase::Pending,
        SessionPhase::Ready,
        SessionPhase::Sleeping,
        SessionPhase::Suspended,
        SessionPhase::Expired,
        SessionPhase::Failed,
        SessionPhase::Terminating,
    ];

    /// The phase as written in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionPhase::Pending => "Pending",
            SessionPhase::Ready => "Ready",
            SessionPhase::Sleeping => "Sleeping",
            SessionPhase::Suspended => "Suspended",
            SessionPhase::Expired => "Expired",
            SessionPhase::Failed => "Failed",
            SessionPhase::Terminating => "Terminating",
        }
    }
}

/// Observed state of a Session, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    /// Pending, Ready, Sleeping, Suspended, Expired, Failed or Terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,

    /// `Ready` is True while executions can run; its reason says why not otherwise
    /// (PodStarting, Sleeping, Waking, WaitingForExecutions, Suspended, Idle, Expired,
    /// InvalidSpec).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Name of the sandbox Pod, while there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,

    /// IP address of the sandbox Pod, while it is running.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,

    /// When the Session last became Ready: its current Pod's runner answered, or it woke from
    /// sleep. The idle clock counts from the later of this and `lastActivityAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<Time>,

    /// When an execution last started or finished in this Session, or the api last used it.
    /// Written by the execution controller and the api; bumping it also wakes a sleeping
    /// Session and resumes one in deep sleep (see `kubexec::shared::activity::RESUME_FIELD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<Time>,

    /// When the Session expires: creationTimestamp + spec.ttlSeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// The workspace claim this Session adopted with a SessionPool's warm Pod: every later
    /// Pod of the Session (after the Pod is lost, after a suspension) mounts this claim.
    /// Unset: the Session's own claim `<session>-workspace` (for a persistent workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_claim: Option<String>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Human-readable detail about the phase (why the Pod is not ready, why the spec is invalid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How idle a Session is by its clock: the later of its last activity and the moment its
/// current Pod became ready, against `sleepAfterSeconds` and `idleTimeoutSeconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum IdleLevel {
    /// Used recently enough (or it has no idle policy).
    Awake,
    /// `sleepAfterSeconds` passed.
    Sleep,
    /// `idleTimeoutSeconds` passed.
    DeepSleep,
}

impl SessionSpec {
    /// The idle level `status` is at `now`. Activity recorded after the Session went to sleep
    /// puts it back below the threshold it passed: that is how activity wakes it.
    pub fn idle_level(&self, status: &SessionStatus, now: jiff::Timestamp) -> IdleLevel {
        let Some(since) = [status.last_activity_at.as_ref(), status.ready_at.as_ref()]
            .into_iter()
            .flatten()
            .map(|t| t.0)
            .max()
        else {
            return IdleLevel::Awake;
        };
        let passed = |seconds: Option<i64>| {
            seconds
                .and_then(|s| since.checked_add(jiff::SignedDuration::from_secs(s)).ok())
                .is_some_and(|deadline| now >= deadline)
        };
        if passed(self.idle_timeout_seconds) {
            IdleLevel::DeepSleep
        } else if passed(self.sleep_after_seconds) {
            IdleLevel::Sleep
        } else {
            IdleLevel::Awake
        }
    }

    /// When `status` reaches its next idle level after `now`, if it ever does.
    pub fn next_idle_deadline(
        &self,
        status: &SessionStatus,
        now: jiff::Timestamp,
    ) -> Option<jiff::Timestamp> {
        let since = [status.last_activity_at.as_ref(), status.ready_at.as_ref()]
            .into_iter()
            .flatten()
            .map(|t| t.0)
            .max()?;
        [self.sleep_after_seconds, self.idle_timeout_seconds]
            .into_iter()
            .flatten()
            .filter_map(|s| since.checked_add(jiff::SignedDuration::from_secs(s)).ok())
            .filter(|deadline| *deadline > now)
            .min()
    }
}

impl Session {
    /// The phase in the status, `Pending` when there is none yet.
    pub fn phase(&self) -> SessionPhase {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or_default()
    }
}
