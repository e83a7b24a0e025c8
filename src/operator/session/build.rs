//! Pure builders: the sandbox Pod and the workspace PersistentVolumeClaim of a Session.
//!
//! Nothing here does IO; everything is unit-tested from small Session values.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar as K8sEnvVar,
        EnvVarSource as K8sEnvVarSource, ImageVolumeSource, PersistentVolumeClaim,
        PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext,
        PodSpec, ResourceRequirements, SeccompProfile, SecretKeySelector as K8sSecretKeySelector,
        SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
    },
    apimachinery::pkg::api::resource::Quantity as K8sQuantity,
};
use kube::{api::ObjectMeta, Resource, ResourceExt};

use crate::crd::{
    annotations, labels, quantity::Quantity, validate::ValidationError, EnvVar, Session,
    SessionSpec,
};
use crate::layout::{
    pod_name, workspace_claim_name, INSTALL_CONTAINER, PIDS_LIMIT_ENV, PREVIEW_PORT, RUNNER_DIR,
    RUNNER_IMAGE_PATH, RUNNER_PATH, SANDBOX_CONTAINER, SANDBOX_UID, SESSION_ENV, WORKSPACE_DIR,
};
use crate::operator::config::{RunnerDelivery, SandboxConfig};

const RUNNER_VOLUME: &str = "runner-bin";
const WORKSPACE_VOLUME: &str = "workspace";
const GRACE_PERIOD_SECONDS: i64 = 5;

/// Resolved limits and requests of the sandbox container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxResources {
    /// `limits` of the sandbox container.
    pub limits: BTreeMap<String, String>,
    /// `requests` of the sandbox container (limits × the request ratio).
    pub requests: BTreeMap<String, String>,
    /// Process-count limit handed to the runner.
    pub pids: i64,
}

/// Maps the Session's resources onto container limits, filling gaps from the operator's
/// defaults, and derives the requests as `limit × request_ratio` (at least 1m CPU and 1 MiB).
pub fn sandbox_resources(
    spec: &SessionSpec,
    config: &SandboxConfig,
) -> Result<SandboxResources, ValidationError> {
    let pick = |field: &str, value: Option<&String>, default: &str| {
        let text = value.map(String::as_str).unwrap_or(default);
        Quantity::parse(text)
            .ok()
            .filter(|q| !q.is_zero())
            .ok_or_else(|| ValidationError {
                field: field.to_string(),
                message: format!("{text:?} is not a positive Kubernetes quantity"),
            })
    };
    let cpu = pick(
        "spec.resources.cpu",
        spec.resources.cpu.as_ref(),
        &config.default_cpu,
    )?;
    let memory = pick(
        "spec.resources.memory",
        spec.resources.memory.as_ref(),
        &config.default_memory,
    )?;
    let storage = pick(
        "spec.resources.ephemeralStorage",
        spec.resources.ephemeral_storage.as_ref(),
        &config.default_storage,
    )?;
    const MIB_MILLIS: u128 = 1024 * 1024 * 1000;
    let ratio = config.request_ratio;
    let limits = BTreeMap::from([
        ("cpu".to_string(), cpu.to_cpu_string()),
        ("memory".to_string(), memory.to_bytes_string()),
        ("ephemeral-storage".to_string(), storage.to_bytes_string()),
    ]);
    let requests = BTreeMap::from([
        ("cpu".to_string(), cpu.scaled(ratio, 1).to_cpu_string()),
        (
            "memory".to_string(),
            memory.scaled(ratio, MIB_MILLIS).to_bytes_string(),
        ),
        (
            "ephemeral-storage".to_string(),
            storage.scaled(ratio, MIB_MILLIS).to_bytes_string(),
        ),
    ]);
    Ok(SandboxResources {
        limits,
        requests,
        pids: spec
            .resources
            .pids
            .unwrap_or(config.default_pids)
            .min(config.max_pids),
    })
}

/// Labels on every object owned by a Session.
pub fn owned_labels(session_name: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (labels::SESSION.to_string(), session_name.to_string()),
        (labels::COMPONENT.to_string(), component.to_string()),
    ])
}

/// A stable hash (FNV-1a, hex) of the spec fields the Pod is built from. The Pod carries it
/// in [`annotations::SPEC_HASH`]; a different hash means the Pod must be replaced.
/// `network` is not one of them: egress is the Pod's [`labels::EGRESS`] label, patched in place.
pub fn pod_spec_hash(spec: &SessionSpec) -> String {
    fnv_hex(&serde_json::json!({
        "image": spec.image,
        "resources": spec.resources,
        "workspace": spec.workspace,
        "env": spec.env,
    }))
}

/// [`pod_spec_hash`] without the env: the shape of a Pod a SessionPool keeps warm. A warm Pod
/// carries it in [`annotations::SPEC_HASH`] (with [`annotations::FROM_POOL`]); a Session may
/// adopt the Pod when its own spec has the same shape, since its env reaches every execution
/// on its own.
pub fn pod_shape_hash(spec: &SessionSpec) -> String {
    fnv_hex(&serde_json::json!({
        "image": spec.image,
        "resources": spec.resources,
        "workspace": spec.workspace,
    }))
}

fn fnv_hex(value: &serde_json::Value) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in value.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn object_meta(session: &Session, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: session.namespace(),
        labels: Some(owned_labels(&session.name_any(), component)),
        owner_references: session.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

fn quantity_map(map: &BTreeMap<String, String>) -> BTreeMap<String, K8sQuantity> {
    map.iter()
        .map(|(k, v)| (k.clone(), K8sQuantity(v.clone())))
        .collect()
}

fn to_k8s_env(var: &EnvVar) -> K8sEnvVar {
    K8sEnvVar {
        name: var.name.clone(),
        value: var.value.clone(),
        value_from: var.value_from.as_ref().map(|from| K8sEnvVarSource {
            secret_key_ref: Some(K8sSecretKeySelector {
                name: from.secret_key_ref.name.clone(),
                key: from.secret_key_ref.key.clone(),
                optional: Some(false),
            }),
            ..K8sEnvVarSource::default()
        }),
    }
}

fn literal_env(name: &str, value: impl Into<String>) -> K8sEnvVar {
    K8sEnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// A container security context with nothing to escalate to.
fn hardened_container(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        read_only_root_filesystem: Some(read_only_root),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    }
}

/// Builds the sandbox Pod of a Session.
///
/// - The runner reaches `/kubexec/bin` through the `runner-bin` volume: the runner image
///   itself, mounted read-only as an image volume (nothing runs before the sandbox), or, with
///   [`RunnerDelivery::InitContainer`], an emptyDir that `install-runner` (init, runner image)
///   copies it into.
/// - `sandbox` (session image) runs `kubexec-runner init` as PID 1 in `/workspace`, with the
///   runner mounted read-only, the session's env, and limits that are always set.
/// - Non-root (uid/gid 1000), no privilege escalation, all capabilities dropped,
///   RuntimeDefault seccomp, no service account token, no service links.
/// - `restartPolicy: Always`: if PID 1 dies the sandbox comes back in the same Pod with the
///   same workspace.
pub fn build_pod(session: &Session, config: &SandboxConfig) -> Result<Pod, ValidationError> {
    let name = session.name_any();
    let claim = session_claim_name(session);
    Ok(Pod {
        metadata: pod_metadata(session),
        spec: Some(sandbox_pod_spec(
            &session.spec,
            Some(&name),
            Some(&claim),
            config,
        )?),
        status: None,
    })
}

/// The workspace claim a persistent Session's Pods mount: the one it adopted with a pool's
/// warm Pod (`status.workspaceClaim`), else its own `<session>-workspace`.
pub fn session_claim_name(session: &Session) -> String {
    session
        .status
        .as_ref()
        .and_then(|s| s.workspace_claim.clone())
        .unwrap_or_else(|| workspace_claim_name(&session.name_any()))
}

/// The claim that `pod`'s workspace volume mounts, if it is a claim.
pub fn mounted_claim(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .find(|v| v.name == WORKSPACE_VOLUME)?
        .persistent_volume_claim
        .as_ref()
        .map(|c| c.claim_name.as_str())
}

/// The Pod spec of a sandbox for `spec`. `session` names the Session it is built for, whose
/// env and name the container gets; a SessionPool's warm Pod (`None`) has neither. `claim`
/// is the workspace claim to mount when `spec.workspace.persistent` (without one, the
/// workspace is an emptyDir).
pub fn sandbox_pod_spec(
    spec: &SessionSpec,
    session: Option<&str>,
    claim: Option<&str>,
    config: &SandboxConfig,
) -> Result<PodSpec, ValidationError> {
    let resources = sandbox_resources(spec, config)?;
    Ok(PodSpec {
        init_containers: match config.runner_delivery {
            RunnerDelivery::ImageVolume => None,
            RunnerDelivery::InitContainer => Some(vec![install_container(config)]),
        },
        containers: vec![sandbox_container(spec, session, config, &resources)],
        volumes: Some(vec![workspace_volume(spec, claim), runner_volume(config)]),
        restart_policy: Some("Always".into()),
        termination_grace_period_seconds: Some(GRACE_PERIOD_SECONDS),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(pod_security_context()),
        // Unset (the host's users) unless the operator is told the cluster supports it.
        host_users: config.user_namespaces.then_some(false),
        ..PodSpec::default()
    })
}

/// Name, labels and owner of the sandbox Pod, and the hash of the spec it is built from. The
/// egress label is what the operator's NetworkPolicies select on.
fn pod_metadata(session: &Session) -> ObjectMeta {
    let mut meta = object_meta(
        session,
        pod_name(&session.name_any()),
        labels::SANDBOX_COMPONENT,
    );
    meta.labels.get_or_insert_with(BTreeMap::new).insert(
        labels::EGRESS.to_string(),
        session.spec.network.egress.as_str().to_string(),
    );
    meta.annotations = Some(BTreeMap::from([(
        annotations::SPEC_HASH.to_string(),
        pod_spec_hash(&session.spec),
    )]));
    meta
}

/// Every process in the Pod runs as the sandbox user, under the runtime's default seccomp
/// profile.
fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(SANDBOX_UID),
        run_as_group: Some(SANDBOX_UID),
        fs_group: Some(SANDBOX_UID),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// The session's limits and the requests derived from them.
fn sandbox_requirements(resources: &SandboxResources) -> ResourceRequirements {
    ResourceRequirements {
        limits: Some(quantity_map(&resources.limits)),
        requests: Some(quantity_map(&resources.requests)),
        ..ResourceRequirements::default()
    }
}

/// Copying one binary needs little, but it is limited like everything else in the Pod.
fn install_requirements() -> ResourceRequirements {
    ResourceRequirements {
        limits: Some(quantity_map(&BTreeMap::from([
            ("cpu".to_string(), "200m".to_string()),
            ("memory".to_string(), "64Mi".to_string()),
        ]))),
        requests: Some(quantity_map(&BTreeMap::from([
            ("cpu".to_string(), "10m".to_string()),
            ("memory".to_string(), "16Mi".to_string()),
        ]))),
        ..ResourceRequirements::default()
    }
}

/// The workspace: `claim` when the workspace is persistent, else a sized emptyDir.
fn workspace_volume(spec: &SessionSpec, claim: Option<&str>) -> Volume {
    let workspace = &spec.workspace;
    if let Some(claim) = claim.filter(|_| workspace.persistent) {
        Volume {
            name: WORKSPACE_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_string(),
                read_only: Some(false),
            }),
            ..Volume::default()
        }
    } else {
        Volume {
            name: WORKSPACE_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(K8sQuantity(workspace.size.clone())),
            }),
            ..Volume::default()
        }
    }
}

/// Where the runner comes from: the runner image as an image volume (its `/kubexec-runner`
/// appears as [`RUNNER_PATH`]), or the emptyDir the init container installs it into.
fn runner_volume(config: &SandboxConfig) -> Volume {
    match config.runner_delivery {
        RunnerDelivery::ImageVolume => Volume {
            name: RUNNER_VOLUME.into(),
            image: Some(ImageVolumeSource {
                reference: Some(config.runner_image.clone()),
                pull_policy: Some("IfNotPresent".into()),
            }),
            ..Volume::default()
        },
        RunnerDelivery::InitContainer => Volume {
            name: RUNNER_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(K8sQuantity("128Mi".into())),
            }),
            ..Volume::default()
        },
    }
}

/// `HOME`, then the session's env, then the session name and process limit for the runner.
/// A warm Pod has no Session yet: no session env and no name.
fn sandbox_env(
    spec: &SessionSpec,
    session: Option<&str>,
    resources: &SandboxResources,
) -> Vec<K8sEnvVar> {
    let mut env = vec![literal_env("HOME", WORKSPACE_DIR)];
    if let Some(session) = session {
        env.extend(spec.env.iter().map(to_k8s_env));
        env.push(literal_env(SESSION_ENV, session));
    }
    env.push(literal_env(PIDS_LIMIT_ENV, resources.pids.to_string()));
    env
}

/// The sandbox: the runner as PID 1 in the session's image, working in the workspace.
fn sandbox_container(
    spec: &SessionSpec,
    session: Option<&str>,
    config: &SandboxConfig,
    resources: &SandboxResources,
) -> Container {
    let image = spec.image.clone();
    Container {
        name: SANDBOX_CONTAINER.into(),
        image: Some(image.unwrap_or_else(|| config.sandbox_image.clone())),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![RUNNER_PATH.into(), "init".into()]),
        working_dir: Some(WORKSPACE_DIR.into()),
        env: Some(sandbox_env(spec, session, resources)),
        ports: Some(vec![ContainerPort {
            name: Some("preview".into()),
            container_port: i32::from(PREVIEW_PORT),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: WORKSPACE_VOLUME.into(),
                mount_path: WORKSPACE_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: RUNNER_VOLUME.into(),
                mount_path: RUNNER_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        resources: Some(sandbox_requirements(resources)),
        security_context: Some(hardened_container(false)),
        ..Container::default()
    }
}

/// The init container: copies the runner from its image into the runner volume.
fn install_container(config: &SandboxConfig) -> Container {
    Container {
        name: INSTALL_CONTAINER.into(),
        image: Some(config.runner_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec![
            RUNNER_IMAGE_PATH.into(),
            "install".into(),
            RUNNER_PATH.into(),
        ]),
        volume_mounts: Some(vec![VolumeMount {
            name: RUNNER_VOLUME.into(),
            mount_path: RUNNER_DIR.into(),
            ..VolumeMount::default()
        }]),
        resources: Some(install_requirements()),
        security_context: Some(hardened_container(true)),
        ..Container::default()
    }
}

/// Builds the workspace claim of a persistent Session (ReadWriteOnce, `workspace.size`,
/// optional storage class), owned by the Session so it is deleted with it. Its name is
/// [`session_claim_name`]: an adopted claim that exists already is kept as it is.
pub fn build_workspace_claim(session: &Session) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: object_meta(session, session_claim_name(session), WORKSPACE_COMPONENT),
        spec: Some(workspace_claim_spec(&session.spec)),
        status: None,
    }
}

/// The `app.kubernetes.io/component` of workspace claims.
pub const WORKSPACE_COMPONENT: &str = "workspace";

/// The spec of a workspace claim for `spec` (a Session's or a pool template's).
pub fn workspace_claim_spec(spec: &SessionSpec) -> PersistentVolumeClaimSpec {
    let workspace = &spec.workspace;
    PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        storage_class_name: workspace.storage_class_name.clone(),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([(
                "storage".to_string(),
                K8sQuantity(workspace.size.clone()),
            )])),
            limits: None,
        }),
        ..PersistentVolumeClaimSpec::default()
    }
}

/// The owner reference a Session puts on what it creates (used by tests and the Execution
/// controller to recognise a session's Pod).
pub fn is_owned_by(obj: &impl Resource, session: &Session) -> bool {
    let uid = session.uid();
    obj.meta().owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|r| Some(&r.uid) == uid.as_ref() && r.controller == Some(true))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        EgressPolicy, EnvVarSource, NetworkSpec, SecretKeySelector, SessionResources, WorkspaceSpec,
    };

    fn session(spec: SessionSpec) -> Session {
        let mut s = Session::new("demo", spec);
        s.metadata.namespace = Some("team-a".into());
        s.metadata.uid = Some("uid-1".into());
        s
    }

    fn sandbox(pod: &Pod) -> &Container {
        pod.spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == SANDBOX_CONTAINER))
            .expect("sandbox container")
    }

    fn q(map: &Option<BTreeMap<String, K8sQuantity>>, key: &str) -> String {
        map.as_ref()
            .and_then(|m| m.get(key))
            .map(|q| q.0.clone())
            .unwrap_or_default()
    }

    #[test]
    fn names_are_derived_from_the_session() {
        assert_eq!(pod_name("abc"), "abc-sandbox");
        assert_eq!(workspace_claim_name("abc"), "abc-workspace");
    }

    #[test]
    fn pod_has_labels_owner_and_name() {
        let s = session(SessionSpec::default());
        let pod = build_pod(&s, &SandboxConfig::default()).expect("pod");
        assert_eq!(pod.metadata.name.as_deref(), Some("demo-sandbox"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("team-a"));
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("kubexec")
        );
        assert_eq!(
            labels.get("kubexec.dev/session").map(String::as_str),
            Some("demo")
        );
        let owner = &pod.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(owner.kind, "Session");
        assert_eq!(owner.api_version, "kubexec.dev/v1alpha1");
        assert_eq!(owner.uid, "uid-1");
        assert_eq!(owner.controller, Some(true));
        assert!(is_owned_by(&pod, &s));
        assert!(pod
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(annotations::SPEC_HASH));
    }

    #[test]
    fn default_limits_are_always_set() {
        let pod =
            build_pod(&session(SessionSpec::default()), &SandboxConfig::default()).expect("pod");
        let res = sandbox(&pod).resources.clone().expect("resources");
        assert_eq!(q(&res.limits, "cpu"), "1000m");
        assert_eq!(q(&res.limits, "memory"), (512u64 << 20).to_string());
        assert_eq!(
            q(&res.limits, "ephemeral-storage"),
            (1u64 << 30).to_string()
        );
        assert_eq!(q(&res.requests, "cpu"), "100m");
        assert_eq!(
            q(&res.requests, "memory"),
            ((512u64 << 20) / 10 + 1).to_string()
        );
        let pod = build_pod(&session(SessionSpec::default()), &init_delivery()).expect("pod");
        let init = &pod
            .spec
            .as_ref()
            .expect("spec")
            .init_containers
            .as_ref()
            .expect("init")[0];
        assert!(init
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some());
    }

    #[test]
    fn session_limits_win_and_requests_scale() {
        let spec = SessionSpec {
            resources: SessionResources {
                cpu: Some("2".into()),
                memory: Some("128Mi".into()),
                ephemeral_storage: Some("2Gi".into()),
                pids: Some(100),
            },
            ..SessionSpec::default()
        };
        let config = SandboxConfig {
            request_ratio: 1.0,
            ..SandboxConfig::default()
        };
        let res = sandbox_resources(&spec, &config).expect("resources");
        assert_eq!(res.limits["cpu"], "2000m");
        assert_eq!(res.limits["memory"], (128u64 << 20).to_string());
        assert_eq!(res.requests, res.limits, "ratio 1 gives Guaranteed QoS");
        assert_eq!(res.pids, 100);
        let pod = build_pod(&session(spec), &config).expect("pod");
        let env = sandbox(&pod).env.clone().unwrap_or_default();
        assert!(env
            .iter()
            .any(|e| e.name == PIDS_LIMIT_ENV && e.value.as_deref() == Some("100")));
    }

    #[test]
    fn requests_have_a_floor() {
        let spec = SessionSpec {
            resources: SessionResources {
                cpu: Some("5m".into()),
                memory: Some("2Mi".into()),
                ..SessionResources::default()
            },
            ..SessionSpec::default()
        };
        let res = sandbox_resources(&spec, &SandboxConfig::default()).expect("resources");
        assert_eq!(res.requests["cpu"], "1m");
        assert_eq!(res.requests["memory"], (1u64 << 20).to_string());
    }

    #[test]
    fn bad_quantity_is_an_invalid_spec() {
        let spec = SessionSpec {
            resources: SessionResources {
                memory: Some("a lot".into()),
                ..SessionResources::default()
            },
            ..SessionSpec::default()
        };
        let err = build_pod(&session(spec), &SandboxConfig::default()).expect_err("invalid");
        assert_eq!(err.field, "spec.resources.memory");
    }

    #[test]
    fn pod_is_hardened() {
        let pod = build_pod(&session(SessionSpec::default()), &init_delivery()).expect("pod");
        let spec = pod.spec.clone().expect("spec");
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.enable_service_links, Some(false));
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.termination_grace_period_seconds, Some(5));
        let psc = spec.security_context.clone().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(1000));
        assert_eq!(psc.run_as_group, Some(1000));
        assert_eq!(psc.fs_group, Some(1000));
        assert_eq!(
            psc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault")
        );
        let containers = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for c in containers {
            let sc = c
                .security_context
                .clone()
                .expect("container security context");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(
                sc.capabilities.and_then(|c| c.drop),
                Some(vec!["ALL".to_string()])
            );
            assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        }
        assert_eq!(
            sandbox(&pod)
                .security_context
                .as_ref()
                .and_then(|s| s.read_only_root_filesystem),
            Some(false)
        );
    }

    #[test]
    fn user_namespaces_are_opt_in_and_change_nothing_else() {
        let s = session(SessionSpec::default());
        let host = build_pod(&s, &SandboxConfig::default()).expect("pod");
        assert_eq!(host.spec.as_ref().and_then(|p| p.host_users), None);
        let config = SandboxConfig {
            user_namespaces: true,
            ..SandboxConfig::default()
        };
        let own = build_pod(&s, &config).expect("pod");
        let mut spec = own.spec.clone().expect("spec");
        assert_eq!(spec.host_users, Some(false));
        // Still uid and gid 1000, non-root, fsGroup for the volumes, the same runner volume.
        spec.host_users = None;
        assert_eq!(Some(spec), host.spec);
        assert_eq!(own.metadata, host.metadata);
    }

    #[test]
    fn the_operator_caps_the_process_limit() {
        let config = SandboxConfig {
            max_pids: 4032,
            ..SandboxConfig::default()
        };
        let asks = |pids| SessionSpec {
            resources: SessionResources {
                pids,
                ..SessionResources::default()
            },
            ..SessionSpec::default()
        };
        let pids = |spec: &SessionSpec| sandbox_resources(spec, &config).expect("valid").pids;
        assert_eq!(pids(&asks(Some(32768))), 4032);
        assert_eq!(pids(&asks(Some(100))), 100);
        assert_eq!(pids(&asks(None)), 512);
        let low = SandboxConfig {
            max_pids: 64,
            ..SandboxConfig::default()
        };
        assert_eq!(
            sandbox_resources(&asks(None), &low).expect("valid").pids,
            64,
            "the default is capped too"
        );
    }

    fn init_delivery() -> SandboxConfig {
        SandboxConfig {
            runner_delivery: RunnerDelivery::InitContainer,
            ..SandboxConfig::default()
        }
    }

    #[test]
    fn runner_is_an_image_volume_by_default() {
        let pod =
            build_pod(&session(SessionSpec::default()), &SandboxConfig::default()).expect("pod");
        let spec = pod.spec.clone().expect("spec");
        assert_eq!(
            spec.init_containers, None,
            "nothing runs before the sandbox"
        );
        let volumes = spec.volumes.unwrap_or_default();
        let runner = volumes
            .iter()
            .find(|v| v.name == RUNNER_VOLUME)
            .and_then(|v| v.image.as_ref())
            .expect("runner image volume");
        assert_eq!(
            runner.reference.as_deref(),
            Some("localhost/kubexec-runner:dev")
        );
        assert_eq!(runner.pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            format!("{RUNNER_DIR}{RUNNER_IMAGE_PATH}"),
            RUNNER_PATH,
            "the image's runner lands at the runner path"
        );
        let mounts = sandbox(&pod).volume_mounts.clone().unwrap_or_default();
        let bin = mounts
            .iter()
            .find(|m| m.mount_path == RUNNER_DIR)
            .expect("runner mount");
        assert_eq!(bin.read_only, Some(true));
    }

    #[test]
    fn runner_is_installed_by_an_init_container() {
        let config = init_delivery();
        let pod = build_pod(&session(SessionSpec::default()), &config).expect("pod");
        let spec = pod.spec.clone().expect("spec");
        let init = &spec.init_containers.clone().expect("init containers")[0];
        assert_eq!(init.image.as_deref(), Some("localhost/kubexec-runner:dev"));
        assert_eq!(
            init.command.clone().unwrap_or_default(),
            ["/kubexec-runner", "install", "/kubexec/bin/kubexec-runner"]
        );
        let sb = sandbox(&pod);
        assert_eq!(sb.image.as_deref(), Some("localhost/kubexec-sandbox:dev"));
        assert_eq!(
            sb.command.clone().unwrap_or_default(),
            ["/kubexec/bin/kubexec-runner", "init"]
        );
        assert_eq!(sb.working_dir.as_deref(), Some("/workspace"));
        let mounts = sb.volume_mounts.clone().unwrap_or_default();
        let bin = mounts
            .iter()
            .find(|m| m.mount_path == RUNNER_DIR)
            .expect("runner mount");
        assert_eq!(bin.read_only, Some(true));
        assert!(mounts.iter().any(|m| m.mount_path == "/workspace"));
        let env = sb.env.clone().unwrap_or_default();
        assert!(env
            .iter()
            .any(|e| e.name == "HOME" && e.value.as_deref() == Some("/workspace")));
    }

    #[test]
    fn session_image_and_env_are_used() {
        let spec = SessionSpec {
            image: Some("oven/bun:1".into()),
            env: vec![
                EnvVar::literal("GREETING", "hi"),
                EnvVar {
                    name: "TOKEN".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: SecretKeySelector {
                            name: "creds".into(),
                            key: "token".into(),
                        },
                    }),
                },
            ],
            ..SessionSpec::default()
        };
        let pod = build_pod(&session(spec), &SandboxConfig::default()).expect("pod");
        let sb = sandbox(&pod);
        assert_eq!(sb.image.as_deref(), Some("oven/bun:1"));
        let env = sb.env.clone().unwrap_or_default();
        assert!(env
            .iter()
            .any(|e| e.name == "GREETING" && e.value.as_deref() == Some("hi")));
        let token = env.iter().find(|e| e.name == "TOKEN").expect("TOKEN");
        let key = token
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
            .expect("secret ref");
        assert_eq!((key.name.as_str(), key.key.as_str()), ("creds", "token"));
    }

    #[test]
    fn ephemeral_workspace_is_a_sized_empty_dir() {
        let pod =
            build_pod(&session(SessionSpec::default()), &SandboxConfig::default()).expect("pod");
        let volumes = pod.spec.expect("spec").volumes.unwrap_or_default();
        let ws = volumes
            .iter()
            .find(|v| v.name == "workspace")
            .expect("workspace volume");
        assert_eq!(
            ws.empty_dir
                .as_ref()
                .and_then(|e| e.size_limit.clone())
                .map(|q| q.0)
                .as_deref(),
            Some("1Gi")
        );
        assert!(ws.persistent_volume_claim.is_none());
    }

    #[test]
    fn persistent_workspace_is_a_claim() {
        let spec = SessionSpec {
            workspace: WorkspaceSpec {
                size: "5Gi".into(),
                persistent: true,
                storage_class_name: Some("fast".into()),
            },
            ..SessionSpec::default()
        };
        let s = session(spec);
        let pod = build_pod(&s, &SandboxConfig::default()).expect("pod");
        let volumes = pod.spec.expect("spec").volumes.unwrap_or_default();
        let ws = volumes
            .iter()
            .find(|v| v.name == "workspace")
            .expect("workspace volume");
        assert_eq!(
            ws.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("demo-workspace")
        );
        let pvc = build_workspace_claim(&s);
        assert_eq!(pvc.metadata.name.as_deref(), Some("demo-workspace"));
        assert!(is_owned_by(&pvc, &s));
        let spec = pvc.spec.expect("pvc spec");
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        let size = spec
            .resources
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").cloned());
        assert_eq!(size.map(|q| q.0).as_deref(), Some("5Gi"));
    }

    #[test]
    fn spec_hash_tracks_pod_fields_only() {
        let base = SessionSpec::default();
        let suspended = SessionSpec {
            suspend: true,
            ttl_seconds: 5,
            ..SessionSpec::default()
        };
        assert_eq!(pod_spec_hash(&base), pod_spec_hash(&suspended));
        let other_image = SessionSpec {
            image: Some("x".into()),
            ..SessionSpec::default()
        };
        assert_ne!(pod_spec_hash(&base), pod_spec_hash(&other_image));
        let denied = SessionSpec {
            network: NetworkSpec {
                egress: EgressPolicy::Deny,
            },
            ..SessionSpec::default()
        };
        assert_eq!(
            pod_spec_hash(&base),
            pod_spec_hash(&denied),
            "egress is a label"
        );
    }

    #[test]
    fn the_egress_label_follows_the_spec() {
        for egress in [EgressPolicy::Allow, EgressPolicy::Deny] {
            let spec = SessionSpec {
                network: NetworkSpec { egress },
                ..SessionSpec::default()
            };
            let pod = build_pod(&session(spec), &SandboxConfig::default()).expect("pod");
            let pod_labels = pod.metadata.labels.unwrap_or_default();
            let written = serde_json::to_value(egress).expect("serializes");
            assert_eq!(
                pod_labels.get(labels::EGRESS).map(String::as_str),
                Some(egress.as_str())
            );
            assert_eq!(
                written,
                egress.as_str(),
                "the label value is the spec value"
            );
        }
    }
}
