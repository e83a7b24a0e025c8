//! `kubexec keys create|list|revoke`: manage API keys with the ambient kubeconfig.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
    Api, Client, ResourceExt,
};

use super::{
    config::{KeysArgs, KeysCommand, TenancyArgs},
    keys::{self, generate_key, key_secret, KEY_SELECTOR, SECRET_PREFIX},
    tiers::Tier,
};
use crate::crd::labels;

/// Runs a `kubexec keys` command; the error is a message for the user.
pub async fn run(args: KeysArgs) -> Result<(), String> {
    let client = Client::try_default()
        .await
        .map_err(|e| format!("kubernetes client: {e}"))?;
    match args.command {
        KeysCommand::Create { tenant, tier } => create(&client, &args.tenancy, &tenant, tier).await,
        KeysCommand::List { tenant } => list(&client, &args.tenancy, tenant.as_deref()).await,
        KeysCommand::Revoke { id } => revoke(&client, &args.tenancy, &id).await,
    }
}

async fn ensure_namespace(client: &Client, name: &str, tenant: Option<&str>) -> Result<(), String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces
        .get_opt(name)
        .await
        .map_err(|e| format!("get namespace {name}: {e}"))?
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
        Err(e) => Err(format!("create namespace {name}: {e}")),
    }
}

async fn create(
    client: &Client,
    tenancy: &TenancyArgs,
    tenant: &str,
    tier: Tier,
) -> Result<(), String> {
    tenancy.check_tenant(tenant)?;
    ensure_namespace(client, &tenancy.keys_namespace, None).await?;
    ensure_namespace(client, &tenancy.namespace_of(tenant), Some(tenant)).await?;
    let (id, key) = generate_key()?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tenancy.keys_namespace);
    secrets
        .create(&PostParams::default(), &key_secret(&id, &key, tenant, tier))
        .await
        .map_err(|e| format!("create key secret: {e}"))?;
    eprintln!(
        "created key {id} for tenant {tenant} ({tier} tier, namespace {}); it is shown only once:",
        tenancy.namespace_of(tenant)
    );
    println!("{key}");
    Ok(())
}

async fn list(client: &Client, tenancy: &TenancyArgs, tenant: Option<&str>) -> Result<(), String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tenancy.keys_namespace);
    let mut selector = KEY_SELECTOR.to_string();
    if let Some(tenant) = tenant {
        selector.push_str(&format!(",{}={tenant}", keys::TENANT_LABEL));
    }
    let list = secrets
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("list key secrets: {e}"))?;
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

async fn revoke(client: &Client, tenancy: &TenancyArgs, id: &str) -> Result<(), String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tenancy.keys_namespace);
    let name = format!("{SECRET_PREFIX}{id}");
    match secrets.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            eprintln!("revoked key {id}");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Err(format!("no key {id}")),
        Err(e) => Err(format!("revoke key {id}: {e}")),
    }
}
