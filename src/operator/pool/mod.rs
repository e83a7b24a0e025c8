//! The SessionPool controller: keeps `spec.replicas` warm sandbox Pods per pool.
//!
//! Each reconcile: observe (IO: list the Pods the pool built) → [`decide`] (pure: how many to
//! start, which to delete, the status) → apply (IO: NetworkPolicies first, then the Pods) →
//! status (IO: server-side apply). Warm Pods are owned by their pool, so deleting the pool
//! deletes them; an adopted Pod is owned by its Session and only counted here.
//!
//! With runner channels (`--exec-transport channel`), the pool opens the channel of every
//! ready warm Pod ahead of adoption and keeps it open: the adopting Session's ping finds it
//! answering, instead of waiting for a fresh `kubexec-runner serve` (~0.5 s).
//!
//! A pool whose template has a persistent workspace pairs each warm Pod with a
//! PersistentVolumeClaim of its own (created first, owned and labelled like the Pod). A
//! Session adopting the Pod adopts the claim too; an unadopted claim is deleted with its Pod
//! (scale-down, template change) or when no Pod of the pool mounts it.
//!
//! A Session adopting a warm Pod (see [`super::session::adopt`]) changes that Pod's labels and
//! owner. The pool hears of it through a watch on every Pod labelled
//! [`labels::FROM_POOL`](crate::crd::labels::FROM_POOL), which that write keeps, and starts a
//! replacement.

pub mod build;
pub mod decide;

use std::{future::Future, sync::Arc, time::Duration};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::{
        controller::{self, Action, Controller},
        reflector::ObjectRef,
        watcher,
    },
    Api, ResourceExt,
};
use serde_json::json;
use tracing::{debug, instrument};

use crate::crd::{labels, SessionPool, SessionPoolStatus, API_VERSION};
use crate::operator::session::{build::mounted_claim, probe::open_warm_channel};
use crate::shared::kube_status::is_gone_or_conflict;

use super::{reconciler, Context, Error, Result};

/// Metric and log name of this controller.
pub const CONTROLLER: &str = "sessionpool";
/// Field manager of the pool status writes.
pub const FIELD_MANAGER: &str = "kubexec-sessionpool-controller";
/// How often a pool is looked at when nothing happens.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How often a pool with open runner channels to its warm Pods is looked at: each look
/// touches them, well within the channels' idle timeout (`--channel-idle-seconds`, 120 by
/// default), so a warm Pod keeps its channel however long it waits.
pub const CHANNEL_KEEPALIVE: Duration = Duration::from_secs(50);

/// Reconciles one SessionPool.
#[instrument(skip_all, fields(pool = %pool.name_any(), namespace = pool.namespace().unwrap_or_default()))]
pub async fn reconcile(pool: Arc<SessionPool>, ctx: Arc<Context>) -> Result<Action> {
    let pipeline = reconcile_pool(&pool, &ctx);
    reconciler::timed(CONTROLLER, &*pool, &ctx, pipeline).await
}

async fn reconcile_pool(pool: &SessionPool, ctx: &Context) -> Result<Action> {
    if pool.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = pool
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let built = pods
        .list(&ListParams::default().labels(&build::built_selector(&pool.name_any())))
        .await
        .map_err(Error::kube("list pool pods"))?
        .items;
    // Validate the template before anything is created.
    build::build_warm_pod(pool, None, &ctx.config).map_err(Error::InvalidSpec)?;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let with_claims = build::has_claims(pool) || built.iter().any(|p| mounted_claim(p).is_some());
    let warm_claims = if with_claims {
        claims
            .list(&ListParams::default().labels(&build::warm_selector(&pool.name_any())))
            .await
            .map_err(Error::kube("list pool claims"))?
            .items
    } else {
        Vec::new()
    };
    let plan = decide::plan(pool, &built, &build::template_hash(pool), Timestamp::now());
    let orphans = decide::claims_to_delete(&built, &plan.delete, &warm_claims);
    debug!(
        create = plan.create,
        delete = plan.delete.len(),
        claims = orphans.len(),
        "planned"
    );
    if plan.create > 0 {
        // Fail closed: the namespace's NetworkPolicies exist before any sandbox Pod does.
        super::netpol::apply_policies(ctx, namespace.clone()).await?;
    }
    for _ in 0..plan.create {
        // A persistent template: the claim first, then the Pod that mounts it. A Pod that
        // cannot be created leaves its claim unmounted, and the next reconcile deletes it.
        let claim = if build::has_claims(pool) {
            let created = claims
                .create(&PostParams::default(), &build::build_warm_claim(pool))
                .await
                .map_err(Error::kube("create warm claim"))?;
            Some(created.name_any())
        } else {
            None
        };
        let warm = build::build_warm_pod(pool, claim.as_deref(), &ctx.config)
            .map_err(Error::InvalidSpec)?;
        pods.create(&PostParams::default(), &warm)
            .await
            .map_err(Error::kube("create warm pod"))?;
        ctx.metrics.pods_created.inc();
    }
    for name in &orphans {
        match claims.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_gone_or_conflict(&e) => {}
            Err(e) => return Err(Error::kube("delete warm claim")(e)),
        }
    }
    for (name, uid) in &plan.delete {
        let params = DeleteParams {
            preconditions: uid.clone().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(name, &params).await {
            Ok(_) => {}
            Err(e) if is_gone_or_conflict(&e) => {}
            Err(e) => return Err(Error::kube("delete warm pod")(e)),
        }
    }
    // Runner channels to the ready warm Pods, opened in the background (the reconcile does not
    // wait for them), and kept open by the requeue below while the Pods wait.
    let mut keep_channels = false;
    if let Some(channels) = &ctx.channels {
        for pod in decide::channel_candidates(&pool.name_any(), &built, &plan.delete) {
            keep_channels = true;
            let (channels, pod) = (channels.clone(), pod.clone());
            tokio::spawn(async move { open_warm_channel(&channels, &pod).await });
        }
    }
    if let Some(status) = &plan.status {
        write_status(&ctx.client, pool, status).await?;
    }
    Ok(Action::requeue(if keep_channels {
        CHANNEL_KEEPALIVE
    } else {
        RESYNC
    }))
}

async fn write_status(
    client: &kube::Client,
    pool: &SessionPool,
    status: &SessionPoolStatus,
) -> Result<()> {
    let namespace = pool
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let pools: Api<SessionPool> = Api::namespaced(client.clone(), &namespace);
    let patch = json!({ "apiVersion": API_VERSION, "kind": "SessionPool", "status": status });
    pools
        .patch_status(
            &pool.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map_err(Error::kube("write sessionpool status"))?;
    Ok(())
}

/// The pool that built `pod`, from its [`labels::FROM_POOL`] label.
fn pool_of(pod: Pod) -> Option<ObjectRef<SessionPool>> {
    let pool = pod.labels().get(labels::FROM_POOL)?.clone();
    Some(ObjectRef::new(&pool).within(&pod.namespace()?))
}

/// Builds the SessionPool controller; the future runs it until `shutdown` resolves.
pub fn controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let client = ctx.client.clone();
    let (pools, pods) = match namespace {
        Some(ns) => (
            Api::<SessionPool>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let built = watcher::Config::default().labels(labels::FROM_POOL);
    Controller::new(pools, watcher::Config::default())
        .watches(pods, built, pool_of)
        .with_config(controller::Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, reconciler::policy(CONTROLLER), ctx)
        .for_each(|result| reconciler::log_outcome(CONTROLLER, result))
}
