//! `kubexec keys create|list|revoke`: manage API keys with the ambient kubeconfig.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{
            LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota,
            ResourceQuotaSpec, Secret,
        },
        rbac::v1::{RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    Api, Client, Resource, ResourceExt,
};
use serde::{de::DeserializeOwned, Serialize};

use super::{
    config::{InvalidTenant, KeysArgs, KeysCommand, ReservedTenant, TenancyArgs},
    keys::{self, generate_key, key_secret, NoRandomness, KEY_SELECTOR, SECRET_PREFIX},
    tiers::{Tier, TierLimits, Tiers, TiersError},
};
use crate::crd::labels;

/// Why a `kubexec keys` command failed; the message is for the user.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// No Kubernetes client (no kubeconfig, no in-cluster service account).
    #[error("kubernetes client: {0}")]
    KubeClient(#[source] kube::Error),
    /// The tenant cannot name a namespace.
    #[error(transparent)]
    Tenant(#[from] InvalidTenant),
    /// The tenant's namespace is reserved.
    #[error(transparent)]
    Reserved(#[from] ReservedTenant),
    /// The tenant's namespace exists and kubexec did not make it.
    #[error("tenant {tenant:?}: namespace {namespace:?} exists and kubexec did not make it (no label {label}={value}); choose another tenant name")]
    NotOurs {
        /// The tenant.
        tenant: String,
        /// Its namespace.
        namespace: String,
        /// The label kubexec marks its namespaces with.
        label: &'static str,
        /// Its value.
        value: &'static str,
    },
    /// The tiers file could not be read.
    #[error(transparent)]
    Tiers(#[from] TiersError),
    /// Creating or updating a guardrail of the tenant namespace failed.
    #[error("tenant namespace {namespace}: {what}: {source}")]
    Guardrail {
        /// The namespace.
        namespace: String,
        /// What was being written.
        what: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// No random bytes for the key.
    #[error(transparent)]
    Random(#[from] NoRandomness),
    /// Reading a namespace failed.
    #[error("get namespace {name}: {source}")]
    GetNamespace {
        /// The namespace.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Creating a namespace failed.
    #[error("create namespace {name}: {source}")]
    CreateNamespace {
        /// The namespace.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Creating the key's Secret failed.
    #[error("create key secret: {0}")]
    CreateSecret(#[source] kube::Error),
    /// Listing the key Secrets failed.
    #[error("list key secrets: {0}")]
    ListSecrets(#[source] kube::Error),
    /// There is no key with this id.
    #[error("no key {0}")]
    NoSuchKey(String),
    /// Deleting the key's Secret failed.
    #[error("revoke key {id}: {source}")]
    Revoke {
        /// The key id.
        id: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

/// Runs a `kubexec keys` command.
pub async fn run(args: KeysArgs) -> Result<(), KeysError> {
    let client = Client::try_default().await.map_err(KeysError::KubeClient)?;
    match args.command {
        KeysCommand::Create {
            tenant,
            tier,
            tiers_file,
            api_service_account,
            api_role,
            operator_service_account,
            operator_role,
        } => {
            let bindings = [
                ServiceAccountBinding {
                    name: API_BINDING_NAME,
                    service_account: api_service_account,
                    namespace: args.tenancy.keys_namespace.clone(),
                    role: api_role,
                },
                ServiceAccountBinding {
                    name: OPERATOR_BINDING_NAME,
                    service_account: operator_service_account,
                    namespace: args.tenancy.keys_namespace.clone(),
                    role: operator_role,
                },
            ];
            let tiers_file = tiers_file.as_deref();
            create(&client, &args.tenancy, &tenant, tier, tiers_file, &bindings).await
        }
        KeysCommand::List { tenant } => list(&client, &args.tenancy, tenant.as_deref()).await,
        KeysCommand::Revoke { id } => revoke(&client, &args.tenancy, &id).await,
    }
}

/// Name of the ResourceQuota and LimitRange of a tenant namespace.
pub const GUARDRAIL_NAME: &str = "kubexec-tenant";
/// The Pod Security Admission label that enforces a level on a namespace.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";
/// The level tenant namespaces enforce: sandbox Pods are non-root, drop every capability,
/// never escalate, run under RuntimeDefault seccomp and mount no host path.
pub const POD_SECURITY_LEVEL: &str = "restricted";

/// True when kubexec made this namespace (it carries `app.kubernetes.io/managed-by: kubexec`).
pub fn made_by_kubexec(namespace: &Namespace) -> bool {
    namespace
        .labels()
        .get(labels::MANAGED_BY)
        .map(String::as_str)
        == Some(labels::MANAGED_BY_VALUE)
}

/// The labels of a namespace kubexec makes: kubexec's mark, the tenant, and for a tenant
/// namespace the Pod Security `restricted` level (enforced, audited, warned).
pub fn namespace_labels(tenant: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(
        labels::MANAGED_BY.to_string(),
        labels::MANAGED_BY_VALUE.to_string(),
    )]);
    if let Some(tenant) = tenant {
        labels.insert(keys::TENANT_LABEL.to_string(), tenant.to_string());
        labels.extend(pod_security_labels());
    }
    labels
}

fn pod_security_labels() -> BTreeMap<String, String> {
    ["enforce", "audit", "warn"]
        .into_iter()
        .map(|mode| {
            (
                format!("pod-security.kubernetes.io/{mode}"),
                POD_SECURITY_LEVEL.to_string(),
            )
        })
        .collect()
}

fn quantities(map: BTreeMap<String, String>) -> BTreeMap<String, Quantity> {
    map.into_iter().map(|(k, v)| (k, Quantity(v))).collect()
}

fn guardrail_meta(namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(GUARDRAIL_NAME.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(namespace_labels(None)),
        ..Default::default()
    }
}

/// The ResourceQuota of a tenant namespace: Pods, claims, storage and object counts of its tier.
pub fn tenant_quota(namespace: &str, limits: &TierLimits) -> ResourceQuota {
    ResourceQuota {
        metadata: guardrail_meta(namespace),
        spec: Some(ResourceQuotaSpec {
            hard: Some(quantities(limits.tenant_quota())),
            ..Default::default()
        }),
        status: None,
    }
}

/// The LimitRange of a tenant namespace: no container above one session of its tier, and a
/// container that sets no limits gets those.
pub fn tenant_limit_range(namespace: &str, limits: &TierLimits) -> LimitRange {
    LimitRange {
        metadata: guardrail_meta(namespace),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".to_string(),
                max: Some(quantities(limits.container_max())),
                default: Some(quantities(limits.container_max())),
                ..Default::default()
            }],
        }),
    }
}

/// A kubexec ServiceAccount bound to the ClusterRole of its work in a tenant namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceAccountBinding {
    /// Name of the RoleBinding.
    pub name: &'static str,
    /// The ServiceAccount.
    pub service_account: String,
    /// Its namespace (the keys namespace, which is the install namespace).
    pub namespace: String,
    /// The ClusterRole bound.
    pub role: String,
}

/// Name of the api's RoleBinding in a tenant namespace.
pub const API_BINDING_NAME: &str = "kubexec-api";
/// Name of the operator's RoleBinding in a tenant namespace (the one the chart's
/// `operator.sandboxNamespaces` makes too).
pub const OPERATOR_BINDING_NAME: &str = "kubexec-operator";

/// The RoleBinding that lets one ServiceAccount work in one tenant namespace, and nowhere else.
pub fn role_binding(namespace: &str, binding: &ServiceAccountBinding) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(binding.name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(namespace_labels(None)),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "ClusterRole".to_string(),
            name: binding.role.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: binding.service_account.clone(),
            namespace: Some(binding.namespace.clone()),
            api_group: None,
        }]),
    }
}

/// The namespace, if it exists.
async fn namespace_state(client: &Client, name: &str) -> Result<Option<Namespace>, KeysError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .get_opt(name)
        .await
        .map_err(|source| KeysError::GetNamespace {
            name: name.to_string(),
            source,
        })
}

/// Makes a namespace unless it exists. An existing tenant namespace that enforces no Pod
/// Security level gets kubexec's; one that enforces a level keeps it.
async fn ensure_namespace(
    client: &Client,
    name: &str,
    tenant: Option<&str>,
) -> Result<(), KeysError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Some(existing) = namespace_state(client, name).await? {
        if tenant.is_some() && !existing.labels().contains_key(POD_SECURITY_ENFORCE) {
            let patch = serde_json::json!({"metadata": {"labels": pod_security_labels()}});
            namespaces
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| KeysError::Guardrail {
                    namespace: name.to_string(),
                    what: "label Pod Security",
                    source,
                })?;
        }
        return Ok(());
    }
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(namespace_labels(tenant)),
            ..Default::default()
        },
        ..Default::default()
    };
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => {
            eprintln!("created namespace {name}");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(KeysError::CreateNamespace {
            name: name.to_string(),
            source,
        }),
    }
}

/// Creates an object unless one of its name exists: an admin's later changes are kept.
async fn create_if_missing<K>(
    client: &Client,
    namespace: &str,
    object: &K,
    what: &'static str,
) -> Result<(), KeysError>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), object).await {
        Ok(_) => {
            eprintln!("created {what} {} in {namespace}", object.name_any());
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(KeysError::Guardrail {
            namespace: namespace.to_string(),
            what,
            source,
        }),
    }
}

/// True once the quota controller has counted every resource the quota limits: until then the
/// apiserver refuses new objects of those resources ("status unknown for quota").
pub fn quota_is_counted(quota: &ResourceQuota) -> bool {
    let hard = quota.spec.as_ref().and_then(|s| s.hard.as_ref());
    let used = quota.status.as_ref().and_then(|s| s.used.as_ref());
    match (hard, used) {
        (Some(hard), Some(used)) => hard.keys().all(|k| used.contains_key(k)),
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// Waits (at most three minutes) until the tenant's quota is counted, so that the tenant can
/// create Sessions as soon as its key is printed. A quota on a kind the controller has not
/// discovered yet (CRDs installed moments ago) is counted at the controller's next full resync
/// (5 minutes by default) after its discovery (every 30 s) finds the kind, or sooner when the
/// quota's `spec.hard` changes: [`nudge_quota`] changes it and back every few seconds.
async fn wait_for_quota(client: &Client, namespace: &str) {
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), namespace);
    let started = std::time::Instant::now();
    let mut told = false;
    for round in 0u32.. {
        let quota = match quotas.get_opt(GUARDRAIL_NAME).await {
            Ok(Some(quota)) if !quota_is_counted(&quota) => quota,
            _ => return,
        };
        let waited = started.elapsed();
        if waited > std::time::Duration::from_secs(180) {
            eprintln!("warning: the quota of {namespace} is not counted yet; new Sessions are refused until it is");
            return;
        }
        if !told && waited > std::time::Duration::from_secs(5) {
            eprintln!("waiting for the cluster to count the quota of {namespace} (new CRDs take up to a minute)");
            told = true;
        }
        if round % 10 == 9 {
            nudge_quota(&quotas, &quota).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// A limit the tenant quota does not set, which [`nudge_quota`] adds and removes again. The
/// quota controller can always count it (a core kind), and a new tenant namespace holds none.
const RECOUNT_PROBE: &str = "count/configmaps";

/// The two merge patches of [`nudge_quota`]: add [`RECOUNT_PROBE`] to `spec.hard`, then remove
/// it. None when the quota sets that limit itself (an admin's), which is never touched.
pub fn recount_patches(quota: &ResourceQuota) -> Option<[serde_json::Value; 2]> {
    let hard = quota.spec.as_ref().and_then(|s| s.hard.as_ref());
    if hard.is_some_and(|h| h.contains_key(RECOUNT_PROBE)) {
        return None;
    }
    let with =
        |value: serde_json::Value| serde_json::json!({"spec": {"hard": {RECOUNT_PROBE: value}}});
    Some([
        with(serde_json::json!("1000000")),
        with(serde_json::Value::Null),
    ])
}

/// Makes the quota controller count `quota` now: it recounts a quota whose `spec.hard` changed
/// (and ignores every other update), so the probe limit is added and removed again. Best
/// effort: a failed patch only means waiting for the controller's own resync.
async fn nudge_quota(quotas: &Api<ResourceQuota>, quota: &ResourceQuota) {
    let Some(patches) = recount_patches(quota) else {
        return;
    };
    for patch in &patches {
        let _ = quotas
            .patch(
                GUARDRAIL_NAME,
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await;
    }
}

async fn create(
    client: &Client,
    tenancy: &TenancyArgs,
    tenant: &str,
    tier: Tier,
    tiers_file: Option<&std::path::Path>,
    bindings: &[ServiceAccountBinding],
) -> Result<(), KeysError> {
    tenancy.check_tenant(tenant)?;
    tenancy.check_not_reserved(tenant)?;
    let tiers = match tiers_file {
        Some(path) => Tiers::from_file(path)?,
        None => Tiers::default(),
    };
    let namespace = tenancy.namespace_of(tenant);
    if let Some(existing) = namespace_state(client, &namespace).await? {
        if !made_by_kubexec(&existing) {
            return Err(KeysError::NotOurs {
                tenant: tenant.to_string(),
                namespace,
                label: labels::MANAGED_BY,
                value: labels::MANAGED_BY_VALUE,
            });
        }
    }
    ensure_namespace(client, &tenancy.keys_namespace, None).await?;
    ensure_namespace(client, &namespace, Some(tenant)).await?;
    let limits = tiers.get(tier);
    create_if_missing(
        client,
        &namespace,
        &tenant_quota(&namespace, limits),
        "ResourceQuota",
    )
    .await?;
    create_if_missing(
        client,
        &namespace,
        &tenant_limit_range(&namespace, limits),
        "LimitRange",
    )
    .await?;
    for binding in bindings {
        create_if_missing(
            client,
            &namespace,
            &role_binding(&namespace, binding),
            "RoleBinding",
        )
        .await?;
    }
    wait_for_quota(client, &namespace).await;
    let (id, key) = generate_key()?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tenancy.keys_namespace);
    secrets
        .create(&PostParams::default(), &key_secret(&id, &key, tenant, tier))
        .await
        .map_err(KeysError::CreateSecret)?;
    eprintln!(
        "created key {id} for tenant {tenant} ({tier} tier, namespace {namespace}); it is shown only once:"
    );
    println!("{key}");
    Ok(())
}

async fn list(
    client: &Client,
    tenancy: &TenancyArgs,
    tenant: Option<&str>,
) -> Result<(), KeysError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tenancy.keys_namespace);
    let mut selector = KEY_SELECTOR.to_string();
    if let Some(tenant) = tenant {
        selector.push_str(&format!(",{}={tenant}", keys::TENANT_LABEL));
    }
    let list = secrets
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(KeysError::ListSecrets)?;
    println!(
        "{:<10} {:<24} {:<11} {:<11} CREATED",
        "ID", "TENANT", "TIER", "PREFIX"
    );
    for secret in &list.items {
        let Some((_, info)) = keys::parse_key_secret(secret) else {
            continue;
        };
        let prefix = secret
            .annotations()
            .get(keys::PREFIX_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        let created = secret
            .creation_timestamp()
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        println!(
            "{:<10} {:<24} {:<11} {:<11} {created}",
            info.id, info.tenant, info.tier, prefix
        );
    }
    Ok(())
}

async fn revoke(client: &Client, tenancy: &TenancyArgs, id: &str) -> Result<(), KeysError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tenancy.keys_namespace);
    let name = format!("{SECRET_PREFIX}{id}");
    match secrets.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            eprintln!("revoked key {id}");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {
            Err(KeysError::NoSuchKey(id.to_string()))
        }
        Err(source) => Err(KeysError::Revoke {
            id: id.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kubexec keys: <error>` reads as it did when the errors were strings.
    #[test]
    fn errors_keep_their_messages() {
        let tenancy = TenancyArgs {
            keys_namespace: "kubexec-system".into(),
            namespace_prefix: "kubexec-".into(),
        };
        let invalid = tenancy
            .check_tenant("Acme")
            .map_err(KeysError::from)
            .map_err(|e| e.to_string());
        assert_eq!(
            invalid,
            Err("tenant \"Acme\": the tenant and its namespace \"kubexec-Acme\" must be lowercase letters, digits and '-', at most 63 characters".to_string())
        );
        assert_eq!(
            KeysError::NoSuchKey("ab12".into()).to_string(),
            "no key ab12"
        );
        let not_ours = KeysError::NotOurs {
            tenant: "web".into(),
            namespace: "kubexec-web".into(),
            label: labels::MANAGED_BY,
            value: labels::MANAGED_BY_VALUE,
        };
        assert_eq!(
            not_ours.to_string(),
            "tenant \"web\": namespace \"kubexec-web\" exists and kubexec did not make it (no label app.kubernetes.io/managed-by=kubexec); choose another tenant name"
        );
    }

    #[test]
    fn tenant_namespaces_enforce_restricted() {
        let labels = namespace_labels(Some("acme"));
        assert_eq!(labels[POD_SECURITY_ENFORCE], "restricted");
        assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
        assert_eq!(labels[keys::TENANT_LABEL], "acme");
        assert_eq!(labels[labels::MANAGED_BY], "kubexec");
        let keys_ns = namespace_labels(None);
        assert_eq!(
            keys_ns.len(),
            1,
            "the keys namespace is only marked: {keys_ns:?}"
        );
        let mut ns = Namespace::default();
        assert!(!made_by_kubexec(&ns));
        ns.metadata.labels = Some(labels);
        assert!(made_by_kubexec(&ns));
    }

    #[test]
    fn the_api_is_bound_in_the_tenant_namespace_only() {
        let api = ServiceAccountBinding {
            name: API_BINDING_NAME,
            service_account: "kubexec-api".into(),
            namespace: "kubexec-system".into(),
            role: "kubexec-api-tenant".into(),
        };
        let binding = role_binding("kubexec-acme", &api);
        assert_eq!(binding.metadata.namespace.as_deref(), Some("kubexec-acme"));
        assert_eq!(binding.metadata.name.as_deref(), Some(API_BINDING_NAME));
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert_eq!(binding.role_ref.name, "kubexec-api-tenant");
        let subjects = binding.subjects.unwrap_or_default();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0].kind, "ServiceAccount");
        assert_eq!(subjects[0].name, "kubexec-api");
        assert_eq!(subjects[0].namespace.as_deref(), Some("kubexec-system"));
    }

    #[test]
    fn a_nudge_adds_and_removes_a_limit_the_tenant_quota_does_not_set() {
        let mut quota = tenant_quota("kubexec-acme", &TierLimits::free());
        let [add, remove] = recount_patches(&quota).expect("the tenant quota has no probe");
        assert_eq!(add["spec"]["hard"][RECOUNT_PROBE], "1000000");
        assert!(remove["spec"]["hard"][RECOUNT_PROBE].is_null());
        assert_eq!(remove["spec"]["hard"].as_object().map(|h| h.len()), Some(1));
        // An admin's own limit on the probe kind is never touched.
        if let Some(hard) = quota.spec.as_mut().and_then(|s| s.hard.as_mut()) {
            hard.insert(RECOUNT_PROBE.into(), Quantity("10".into()));
        }
        assert!(recount_patches(&quota).is_none());
    }

    #[test]
    fn a_quota_is_counted_when_every_limit_has_a_use() {
        let mut quota = tenant_quota("kubexec-acme", &TierLimits::free());
        assert!(!quota_is_counted(&quota));
        let mut used: BTreeMap<String, Quantity> = quota
            .spec
            .as_ref()
            .and_then(|s| s.hard.clone())
            .unwrap_or_default()
            .into_keys()
            .map(|k| (k, Quantity("0".into())))
            .collect();
        used.remove("pods");
        quota.status = Some(k8s_openapi::api::core::v1::ResourceQuotaStatus {
            hard: None,
            used: Some(used.clone()),
        });
        assert!(!quota_is_counted(&quota), "pods not counted yet");
        used.insert("pods".into(), Quantity("0".into()));
        quota.status = Some(k8s_openapi::api::core::v1::ResourceQuotaStatus {
            hard: None,
            used: Some(used),
        });
        assert!(quota_is_counted(&quota));
    }

    #[test]
    fn guardrails_follow_the_tier() {
        let free = TierLimits::free();
        let quota = tenant_quota("kubexec-acme", &free);
        assert_eq!(quota.metadata.name.as_deref(), Some(GUARDRAIL_NAME));
        assert_eq!(quota.metadata.namespace.as_deref(), Some("kubexec-acme"));
        let hard = quota.spec.and_then(|s| s.hard).unwrap_or_default();
        assert_eq!(hard.get("pods"), Some(&Quantity("22".into())));
        assert_eq!(
            hard.get("count/executions.kubexec.dev"),
            Some(&Quantity("1000".into()))
        );
        let range = tenant_limit_range("kubexec-acme", &free);
        let item = range
            .spec
            .and_then(|s| s.limits.into_iter().next())
            .unwrap_or_default();
        assert_eq!(item.type_, "Container");
        let max = item.max.unwrap_or_default();
        assert_eq!(max.get("memory"), Some(&Quantity("1024Mi".into())));
        assert_eq!(max.get("cpu"), Some(&Quantity("1000m".into())));
        assert_eq!(item.default.unwrap_or_default(), max);
    }
}
