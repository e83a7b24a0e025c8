//! `kubexec keys create|list|revoke`: manage API keys with the ambient kubeconfig.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
    Api, Client, ResourceExt,
};

use super::{
    config::{InvalidTenant, KeysArgs, KeysCommand, TenancyArgs},
    keys::{self, generate_key, key_secret, NoRandomness, KEY_SELECTOR, SECRET_PREFIX},
    tiers::Tier,
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
        KeysCommand::Create { tenant, tier } => create(&client, &args.tenancy, &tenant, tier).await,
        KeysCommand::List { tenant } => list(&client, &args.tenancy, tenant.as_deref()).await,
        KeysCommand::Revoke { id } => revoke(&client, &args.tenancy, &id).await,
    }
}

async fn ensure_namespace(
    client: &Client,
    name: &str,
    tenant: Option<&str>,
) -> Result<(), KeysError> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces
        .get_opt(name)
        .await
        .map_err(|source| KeysError::GetNamespace {
            name: name.to_string(),
            source,
        })?
        .is_some()
    {
        return Ok(());
    }
    let mut labels = BTreeMap::from([(
        labels::MANAGED_BY.to_string(),
        labels::MANAGED_BY_VALUE.to_string(),
    )]);
    if let Some(tenant) = tenant {
        labels.insert(keys::TENANT_LABEL.to_string(), tenant.to_string());
    }
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
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

async fn create(
    client: &Client,
    tenancy: &TenancyArgs,
    tenant: &str,
    tier: Tier,
) -> Result<(), KeysError> {
    tenancy.check_tenant(tenant)?;
    ensure_namespace(client, &tenancy.keys_namespace, None).await?;
    ensure_namespace(client, &tenancy.namespace_of(tenant), Some(tenant)).await?;
    let (id, key) = generate_key()?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tenancy.keys_namespace);
    secrets
        .create(&PostParams::default(), &key_secret(&id, &key, tenant, tier))
        .await
        .map_err(KeysError::CreateSecret)?;
    eprintln!(
        "created key {id} for tenant {tenant} ({tier} tier, namespace {}); it is shown only once:",
        tenancy.namespace_of(tenant)
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
    }
}
