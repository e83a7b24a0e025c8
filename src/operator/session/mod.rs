//! The Session controller: every Session gets one hardened sandbox Pod, kept alive until the
//! Session is suspended, idles out, expires or is deleted.
//!
//! Each reconcile is a pipeline:
//! [`observe`] (IO: read the Pod) → [`decide`] (pure: validate and plan) → [`apply`] (IO: Pod,
//! Events, Session deletion) → [`status`] (IO: server-side apply of the status).
//!
//! `decide` validates the spec and builds the [`desired`] Pod once ([`build`] holds the pure
//! builders), reads what the observed Pod means with [`pod_state`], and hands the one built
//! Pod to `apply` when it has to be created.
//!
//! ## Lifecycle
//! - **Create**: the Pod `<name>-sandbox` (and, for a persistent workspace, the claim
//!   `<name>-workspace`) is created with a controller owner reference. Phase `Pending` until
//!   the sandbox's runner answers a ping through exec ([`probe`]: from the moment the Pod is
//!   bound, without waiting for the kubelet to report the container), then `Ready` with
//!   `podName`, `podIP` and `readyAt`. A sandbox that cannot start its runner (an empty
//!   runner volume) is `Failed` with reason `RunnerMissing`.
//! - **Pool**: a Session with `spec.poolRef` and no Pod first tries to adopt a warm Pod of
//!   that SessionPool ([`adopt`]: one optimistically locked patch of its labels and owner),
//!   pings its runner and is Ready in the same reconcile. No warm Pod that fits: the cold path.
//!   A persistent workspace adopts the Pod's claim as well (`status.workspaceClaim`), and
//!   every later Pod of the Session mounts that claim.
//! - **TTL**: `expiresAt` = creationTimestamp + `ttlSeconds`. Once passed, phase `Expired`
//!   (Event `Expired`) and the Session is deleted; the Pod and claim are garbage-collected.
//! - **Sleep**: `sleepAfterSeconds` since the later of `status.lastActivityAt` and `readyAt`
//!   while Ready, with no Execution of the Session running or waiting, lowers the sandbox
//!   container's CPU and memory requests in place (the Pod's `resize` subresource; limits
//!   unchanged, nothing restarts). Phase `Sleeping`, `Ready` False with reason `Sleeping`,
//!   Event `Slept`.
//! - **Wake**: activity recorded in [`RESUME_FIELD`](crate::shared::activity::RESUME_FIELD)
//!   (an Execution, an api request) restores the requests (reason `Waking`); the Session is
//!   Ready once the kubelet reports them in `status.containerStatuses[].resources`, or says it
//!   cannot apply them now (`PodResizePending`). Event `Woke`.
//! - **Deep sleep / suspend**: `spec.suspend: true`, or `idleTimeoutSeconds` without activity
//!   (same clock, same rule about Executions), deletes the Pod and keeps the claim. Phase
//!   `Suspended`, `Ready` False with reason `Suspended` or `Idle` (Event `DeepSlept`).
//! - **Resume**: setting `spec.suspend` back to false, or (for deep sleep) recording
//!   activity, creates a new Pod.
//! - **Running Executions** (from the Execution controller's watch, [`Busy`](super::execution::pending::Busy)):
//!   hold back sleep and deep sleep (pending ones too), the TTL's deletion (phase `Expired`
//!   with the Pod kept until they finish; new ones fail) and a Pod replacement for a spec
//!   change (phase `Pending`, reason `WaitingForExecutions`; new ones wait for the new Pod).
//! - **Lost Pod**: a Pod that vanished, failed or was evicted is replaced, with a Warning Event
//!   `PodLost` and `kubexec_session_pods_recreated_total`.
//! - **Spec change**: a Pod built from an older spec (annotation `kubexec.dev/spec-hash`) is
//!   replaced.
//! - **Egress change**: `spec.network` is not part of that hash. The Pod's label
//!   `kubexec.dev/egress` follows `spec.network.egress`, and a running Pod whose labels differ
//!   from the spec's is patched in place (Event `PodRelabeled`): same Pod, same processes. The
//!   NetworkPolicies that select on the label are kept by [`netpol`](super::netpol).
//! - **Deletion**: no finalizer. Everything the Session creates carries its owner reference,
//!   so the garbage collector removes it, and there is no external state to clean up.

pub mod adopt;
pub mod apply;
pub mod build;
pub mod decide;
pub mod desired;
pub mod observe;
pub mod pod_state;
pub mod probe;
pub mod status;

use std::{future::Future, sync::Arc};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{
    runtime::{
        controller::{self, Action, Controller},
        reflector::{store::Writer, Store},
        watcher, WatchStreamExt,
    },
    Api, ResourceExt,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{family::Family, gauge::Gauge, MetricType},
};
use tracing::{debug, info, instrument};

use crate::crd::{labels, Session, SessionPhase};

use super::{reconciler, Context, Error, Result};

pub use status::FIELD_MANAGER;

/// Metric and log name of this controller.
pub const CONTROLLER: &str = "session";

/// Reconciles one Session. Thin: times it, runs the pipeline, records the result.
#[instrument(skip_all, fields(session = %session.name_any(), namespace = session.namespace().unwrap_or_default()))]
pub async fn reconcile(session: Arc<Session>, ctx: Arc<Context>) -> Result<Action> {
    let pipeline = reconcile_session(&session, &ctx, Timestamp::now());
    reconciler::timed(CONTROLLER, &*session, &ctx, pipeline).await
}

/// The pipeline: observe → decide → apply → status. When the apiserver refuses the operator
/// the sandbox's Pod or claim (403), the namespace is not enabled: the status says so and how.
pub async fn reconcile_session(session: &Session, ctx: &Context, now: Timestamp) -> Result<Action> {
    match run_pipeline(session, ctx, now).await {
        Err(refused) if refused.is_forbidden() => {
            let action = refused.action().unwrap_or("work");
            info!(%refused, "namespace not enabled for sandboxes");
            let plan = decide::namespace_not_enabled(session, action, &ctx.config, now);
            apply::publish(ctx, session, &plan.events).await?;
            if let Some(status) = &plan.status {
                status::write(&ctx.client, session, status).await?;
            }
            Ok(reconciler::requeue(plan.requeue_after))
        }
        outcome => outcome,
    }
}

async fn run_pipeline(session: &Session, ctx: &Context, now: Timestamp) -> Result<Action> {
    let namespace = session
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let mut observed = observe::observe(&ctx.client, session).await?;
    observed.busy = ctx
        .executions_by_session
        .busy(&namespace, &session.name_any());
    let mut pool_uid = None;
    if observed.pod.is_none() && decide::wants_pod(session, observed.busy, now) {
        if let Some(adopted) = adopt_warm_pod(session, ctx, &namespace).await? {
            observed.pod = Some(adopted.pod);
            observed.adopted_from = Some(adopted.pool);
            pool_uid = adopted.pool_uid;
        }
    }
    if let Some(claim) = observed
        .pod
        .as_ref()
        .and_then(|pod| adopt::claim_to_adopt(session, pod))
    {
        observed.adopted_claim =
            adopt::adopt_claim(ctx, &namespace, session, claim, pool_uid).await?;
    }
    if let Some(pod) = observed
        .pod
        .as_ref()
        .filter(|pod| pod_state::needs_ping(Some(pod), decide::answered_before(session)))
    {
        observed.runner = probe::ping_until_answer(&ctx.client, ctx.channels.as_ref(), pod).await;
        debug!(runner = ?observed.runner, "pinged the runner");
    }
    // Adopting and pinging took time: decide at the time they ended.
    let now = now.max(Timestamp::now());
    let plan = decide::plan(session, &observed, &ctx.config, now);
    let pod_action = match &plan.pod {
        decide::PodAction::Keep => "keep",
        decide::PodAction::Create { .. } => "create",
        decide::PodAction::Delete { .. } => "delete",
        decide::PodAction::Relabel { .. } => "relabel",
        decide::PodAction::Resize { .. } => "resize",
    };
    debug!(events = ?plan.events, pod_action, "planned");

    let pod_name = observed
        .pod
        .as_ref()
        .map(ResourceExt::name_any)
        .unwrap_or_else(|| crate::layout::pod_name(&session.name_any()));
    apply::pod_action(ctx, &namespace, &pod_name, &plan.pod).await?;
    if let Some(why) = plan.recreate {
        ctx.metrics
            .pods_recreated
            .get_or_create(&super::metrics::RecreateLabels {
                reason: why.label(),
            })
            .inc();
    }
    // The status first: a client waiting for Ready sees it before the Events are written.
    if let Some(status) = &plan.status {
        status::write(&ctx.client, session, status).await?;
    }
    apply::publish(ctx, session, &plan.events).await?;
    if plan.delete_session {
        info!("TTL passed; deleting the Session");
        apply::delete_session(ctx, session).await?;
    }
    if let Some(invalid) = plan.invalid {
        return Err(Error::InvalidSpec(invalid));
    }
    Ok(reconciler::requeue(plan.requeue_after))
}

/// A warm Pod a Session took in this reconcile.
struct Adopted {
    pod: Pod,
    /// The pool it came from.
    pool: String,
    /// The pool's uid (the Pod's owner before): the lock of the claim's adoption.
    pool_uid: Option<String>,
}

/// A Session naming a pool, without a Pod, takes a warm one when one fits. An empty pool, or
/// none that fits, leaves the cold path to `decide`.
async fn adopt_warm_pod(
    session: &Session,
    ctx: &Context,
    namespace: &str,
) -> Result<Option<Adopted>> {
    let Some(pool) = session.spec.pool_ref.as_ref().map(|p| p.name.clone()) else {
        return Ok(None);
    };
    if !adopt::may_adopt(session) {
        return Ok(None);
    }
    let Ok(desired) = desired::DesiredPod::build(session, &ctx.config) else {
        return Ok(None);
    };
    let warm = observe::warm_pods(&ctx.client, namespace, &pool).await?;
    let candidates = adopt::candidates(&desired, &pool, warm, adopt::spread_of(session));
    let adopted = adopt::adopt(ctx, namespace, session, &desired, candidates).await?;
    Ok(adopted.map(|(pod, pool_uid)| Adopted {
        pod,
        pool,
        pool_uid,
    }))
}

/// Builds the Session controller. Returns the future that runs it until `shutdown`
/// resolves, and its cache of Sessions (for the phase gauge).
pub fn controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    concurrency: u16,
    pods_cache: Writer<Pod>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> (impl Future<Output = ()>, Store<Session>) {
    let client = ctx.client.clone();
    let (sessions, pods, claims) = match namespace {
        Some(ns) => (
            Api::<Session>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
            Api::<PersistentVolumeClaim>::namespaced(client, ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client),
        ),
    };
    let owned = watcher::Config::default().labels(labels::MANAGED_SELECTOR);
    // The sandbox Pods' watch also fills `pods_cache`, which the Execution controller reads
    // before a run instead of a GET.
    let pod_changes = watcher(pods, owned.clone())
        .default_backoff()
        .modify(|pod| pod.managed_fields_mut().clear())
        .reflect(pods_cache)
        .touched_objects();
    let controller = Controller::new(sessions, watcher::Config::default())
        .owns_stream(pod_changes)
        .owns(claims, owned)
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown);
    let store = controller.store();
    let run = controller
        .run(reconcile, reconciler::policy(CONTROLLER), ctx)
        .for_each(|result| reconciler::log_outcome(CONTROLLER, result));
    (run, store)
}

/// The `kubexec_sessions{phase}` gauge, counted from the controller's cache at scrape time.
pub struct SessionPhases(pub Store<Session>);

impl std::fmt::Debug for SessionPhases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionPhases")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

impl Collector for SessionPhases {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = Family::<PhaseLabels, Gauge>::default();
        for phase in SessionPhase::ALL {
            let _ = family.get_or_create(&PhaseLabels {
                phase: phase.as_str(),
            });
        }
        for session in self.0.state() {
            family
                .get_or_create(&PhaseLabels {
                    phase: session.phase().as_str(),
                })
                .inc();
        }
        let metric = encoder.encode_descriptor(
            "kubexec_sessions",
            "Sessions by phase",
            None,
            MetricType::Gauge,
        )?;
        family.encode(metric)
    }
}

/// Reconcile scenarios against a mocked apiserver (see `crate::fixtures`).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{SessionPhase, WorkspaceSpec};
    use crate::fixtures::{ready_pod, timeout_after_1s, Scenario};
    use crate::operator::{config::SandboxConfig, metrics::RecreateLabels};
    use std::time::Duration;

    async fn reconcile_with(
        session: Session,
        scenario: impl FnOnce(Session) -> Scenario,
    ) -> (Result<Action>, Arc<Context>) {
        let (ctx, apiserver) = Context::test();
        let mocked = apiserver.run(scenario(session.clone()));
        let result = tokio::time::timeout(
            Duration::from_secs(2),
            reconcile(Arc::new(session), ctx.clone()),
        )
        .await
        .expect("reconcile finished");
        timeout_after_1s(mocked).await;
        (result, ctx)
    }

    #[tokio::test]
    async fn a_new_session_creates_its_pod_and_reports_pending() {
        let (result, ctx) = reconcile_with(Session::test(), Scenario::Create).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(ctx.metrics.pods_created.get(), 1);
    }

    #[tokio::test]
    async fn a_persistent_session_creates_its_claim_first() {
        let mut session = Session::test();
        session.spec.workspace = WorkspaceSpec {
            persistent: true,
            ..WorkspaceSpec::default()
        };
        let (result, _) = reconcile_with(session, Scenario::CreatePersistent).await;
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn a_pod_the_kubelet_calls_ready_is_not_enough() {
        let session = Session::test().with_phase(SessionPhase::Pending, Some("demo-sandbox"));
        let (result, _) = reconcile_with(session, Scenario::BecomesReady).await;
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn a_steady_session_writes_nothing() {
        let session = Session::test();
        let observed = observe::Observed {
            pod: Some(ready_pod(&session)),
            runner: pod_state::RunnerAnswer::Answered,
            ..observe::Observed::default()
        };
        let first = decide::plan(
            &session,
            &observed,
            &SandboxConfig::default(),
            Timestamp::now(),
        );
        let mut ready = session.clone();
        ready.status = first.status;
        let (result, _) = reconcile_with(ready, Scenario::Steady).await;
        let action = result.expect("reconciled");
        assert!(
            action != Action::await_change(),
            "requeues for expiry or resync"
        );
    }

    #[tokio::test]
    async fn an_egress_flip_patches_the_pod_label_and_keeps_the_pod() {
        let session = Session::test();
        let pod = ready_pod(&session);
        let observed = observe::Observed {
            pod: Some(pod.clone()),
            runner: pod_state::RunnerAnswer::Answered,
            ..observe::Observed::default()
        };
        let first = decide::plan(
            &session,
            &observed,
            &SandboxConfig::default(),
            Timestamp::now(),
        );
        let mut denied = session.clone();
        denied.status = first.status;
        denied.spec.network.egress = crate::crd::EgressPolicy::Deny;
        let (result, ctx) = reconcile_with(denied, |_| Scenario::Relabel {
            pod: Box::new(pod),
            egress: "Deny",
        })
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(ctx.metrics.pods_created.get(), 0);
    }

    #[tokio::test]
    async fn an_expired_session_is_deleted() {
        let mut session = Session::test().with_phase(SessionPhase::Ready, Some("demo-sandbox"));
        session.spec.ttl_seconds = 5;
        let (result, _) = reconcile_with(session, Scenario::Expire).await;
        assert_eq!(result.expect("reconciled"), Action::await_change());
    }

    #[tokio::test]
    async fn a_suspended_session_loses_its_pod() {
        let mut session = Session::test().with_phase(SessionPhase::Ready, Some("demo-sandbox"));
        session.spec.suspend = true;
        let (result, _) = reconcile_with(session, Scenario::Suspend).await;
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn a_lost_pod_is_recreated_with_a_warning() {
        let session = Session::test().with_phase(SessionPhase::Ready, Some("demo-sandbox"));
        let (result, ctx) = reconcile_with(session, Scenario::PodLost).await;
        assert!(result.is_ok(), "{result:?}");
        let lost = ctx
            .metrics
            .pods_recreated
            .get_or_create(&RecreateLabels { reason: "missing" })
            .get();
        assert_eq!(lost, 1);
    }

    #[tokio::test]
    async fn an_unreachable_apiserver_is_a_transient_error() {
        let (ctx, apiserver) = Context::test();
        drop(apiserver);
        let session = Arc::new(Session::test());
        let err = reconcile(session.clone(), ctx.clone())
            .await
            .expect_err("no apiserver");
        assert!(!err.is_permanent());
        assert_eq!(
            reconciler::policy::<Session>(CONTROLLER)(session.clone(), &err, ctx.clone()),
            Action::requeue(Duration::from_secs(1))
        );
        assert_eq!(
            reconciler::policy::<Session>(CONTROLLER)(session, &err, ctx),
            Action::requeue(Duration::from_secs(2))
        );
    }

    #[tokio::test]
    async fn an_invalid_spec_waits_for_a_change() {
        let (ctx, _) = Context::test();
        let err = Error::InvalidSpec(crate::crd::validate::ValidationError {
            field: "spec.resources.memory".into(),
            message: "bad".into(),
        });
        assert!(err.is_permanent());
        assert_eq!(
            reconciler::policy::<Session>(CONTROLLER)(Arc::new(Session::test()), &err, ctx),
            Action::requeue(Duration::from_secs(3600))
        );
    }

    #[test]
    fn sessions_are_counted_by_phase() {
        let (store, mut writer) = kube::runtime::reflector::store::<Session>();
        writer.apply_watcher_event(&watcher::Event::Apply(
            Session::test().with_phase(SessionPhase::Ready, Some("demo-sandbox")),
        ));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(SessionPhases(store)));
        let text = crate::shared::metrics::render(&registry).expect("renders");
        assert!(
            text.contains("kubexec_sessions{phase=\"Ready\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kubexec_sessions{phase=\"Suspended\"} 0"),
            "{text}"
        );
    }
}
