//! The NetworkPolicy controller: every namespace that holds Sessions gets the three policies of
//! [`build`] (ingress only from the api, an egress floor that denies everything, and egress for
//! sandboxes labelled `kubexec.dev/egress: Allow`), and gets them back within seconds when
//! someone deletes or changes them.
//!
//! ## How it runs
//! The controller's objects are namespaces, keyed by name. It needs no access to Namespace
//! objects: [`namespaces`] follows a metadata-only watch of Sessions and keeps the store of
//! namespaces that hold at least one. Reconciles are triggered by:
//! - the first Session of a namespace (and every namespace after the watch (re)lists);
//! - any change to, or deletion of, a policy labelled
//!   [`build::MANAGED_POLICY_SELECTOR`] in such a namespace (removing
//!   the label counts as a deletion);
//! - a resync every [`RESYNC`].
//!
//! kube-runtime's [`applier`] does the rest, as it does for `Controller`: one reconcile per
//! namespace at a time, requests for the same namespace merged, and the shared error backoff.
//! A reconcile server-side applies the three policies with its own field manager
//! ([`FIELD_MANAGER`]) and `force`, which restores any field another writer changed. When
//! nothing changed, the apply writes nothing and no watch event follows, so it does not loop.
//!
//! ## Ownership
//! The policies carry no owner reference: they belong to the namespace, not to any one
//! Session, and an owner reference to several Sessions would let the garbage collector remove
//! them only once all of those are gone. When the last Session of a namespace is deleted, its
//! policies stay. They select only kubexec sandbox Pods, so they cost nothing in a namespace
//! without any; deleting them would race with the next Session, whose Pod could start before
//! the policies came back, failing open. Uninstalling kubexec removes them with
//! `kubectl delete networkpolicy -A -l app.kubernetes.io/managed-by=kubexec,app.kubernetes.io/component=network-policy`.
//!
//! Each Session's Pod carries the egress label (see the Session controller), so flipping
//! `spec.network.egress` is a label patch on the running Pod; the policies never change for it.

pub mod build;
pub mod config;
pub mod namespaces;
#[cfg(test)]
mod tests;

use std::{future::Future, sync::Arc, time::Duration};

use futures::{future, stream, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::{core::v1::Namespace, networking::v1::NetworkPolicy};
use kube::{
    api::{PartialObjectMeta, Patch, PatchParams},
    runtime::{
        applier,
        controller::{self, Action},
        reflector::{self, ObjectRef},
        watcher, WatchStreamExt,
    },
    Api, ResourceExt,
};
use tracing::instrument;

use crate::crd::Session;

use super::{reconciler, Context, Error, Result};

use build::MANAGED_POLICY_SELECTOR;
use namespaces::SessionNamespaces;

/// Metric and log name of this controller.
pub const CONTROLLER: &str = "network-policy";
/// The field manager of the policies' server-side applies.
pub const FIELD_MANAGER: &str = "kubexec-network-policies";
/// How often a namespace's policies are re-applied when nothing happens. Watch events make
/// this a safety net, not the way deletions are noticed.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Most namespaces reconciled at once (each reconcile is three applies).
const CONCURRENCY: u16 = 4;

/// Reconciles one namespace. Thin: times it and applies its policies.
#[instrument(skip_all, fields(namespace = %namespace.name_any()))]
pub async fn reconcile(namespace: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action> {
    let pipeline = apply_policies(&ctx, namespace.name_any());
    reconciler::timed(CONTROLLER, &*namespace, &ctx, pipeline).await
}

/// Server-side applies the namespace's policies, forcing back any field someone changed.
pub async fn apply_policies(ctx: &Context, namespace: String) -> Result<Action> {
    let Some(policies) = &ctx.network_policies else {
        return Ok(Action::await_change());
    };
    let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for policy in policies.in_namespace(&namespace) {
        api.patch(&policy.name_any(), &params, &Patch::Apply(&policy))
            .await
            .map_err(Error::kube("apply network policy"))?;
    }
    Ok(Action::requeue(RESYNC))
}

/// Builds the controller over the cluster (or one namespace). Returns the future that runs it
/// until `shutdown` resolves.
pub fn controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let client = ctx.client.clone();
    let (sessions, policies) = match namespace {
        Some(ns) => (
            Api::<PartialObjectMeta<Session>>::namespaced(client.clone(), ns),
            Api::<NetworkPolicy>::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let session_events = watcher(sessions, watcher::Config::default()).default_backoff();
    let managed = watcher::Config::default().labels(MANAGED_POLICY_SELECTOR);
    let policy_events = watcher(policies, managed).default_backoff();
    run(ctx, session_events, policy_events, shutdown)
}

/// Runs the controller on the given watch streams: the Sessions (metadata) and the managed
/// policies.
pub fn run(
    ctx: Arc<Context>,
    session_events: impl Stream<Item = watcher::Result<watcher::Event<PartialObjectMeta<Session>>>>
        + Send
        + 'static,
    policy_events: impl Stream<Item = watcher::Result<watcher::Event<NetworkPolicy>>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let (store, writer) = reflector::store::<Namespace>();
    let mut namespaces = SessionNamespaces::new(writer);
    let first_sessions = session_events
        .map_ok(move |event| stream::iter(namespaces.record(event).into_iter().map(Ok)))
        .try_flatten();
    let keys = store.clone();
    let changed_policies = policy_events
        .touched_objects()
        .try_filter_map(move |policy| {
            let key = policy
                .namespace()
                .map(|ns| ObjectRef::<Namespace>::new(&ns))
                .filter(|key| keys.get(key).is_some());
            future::ready(Ok(key))
        });
    let queue = stream::select(first_sessions, changed_policies).take_until(shutdown);
    applier(
        |namespace, ctx| Box::pin(reconcile(namespace, ctx)),
        reconciler::policy(CONTROLLER),
        ctx,
        store,
        queue,
        controller::Config::default().concurrency(CONCURRENCY),
    )
    .for_each(|result| reconciler::log_outcome(CONTROLLER, result))
}
