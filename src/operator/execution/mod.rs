//! The Execution controller: runs each Execution once in its Session's sandbox Pod and writes
//! the result to its status.
//!
//! Each reconcile is a pipeline: admission ([`tracker`]: a run over the replica's or the
//! Session's bound waits queued, before anything is read) → [`observe`] (IO: the Session and
//! its Pod from the controllers' caches, the env Secrets with one GET) →
//! [`decide`] (pure: the next step; a run is planned whole, with its Pod, timeout, deadline,
//! env and mode) → act ([`apply`]: status, Events, resume, delete; or [`run`]: a spawned exec
//! task, which reports an [`outcome::RunOutcome`]) → status (server-side apply under
//! [`apply::FIELD_MANAGER`]). The pure verdicts on a run ([`failure`], [`outcome`]) are shared
//! by the planner and the run task, which never imports the planner.
//!
//! ## Lifecycle
//! - **Pending**: the Session must exist (else Failed, `SessionNotFound`) and be Ready. A
//!   suspended Session is resumed: idle ones by recording activity
//!   ([`crate::shared::activity`]); `spec.suspend: true` is set to false with
//!   an Event, because creating an Execution is an explicit request to use the Session, as the
//!   next `execute` resumes a session in the hosted API. A Session that is not Ready 120 s
//!   after the Execution's creation fails it with `SessionNotReady`; an expired, failed or
//!   deleted Session fails it at once.
//! - **Env**: `env[].value`, `env[].valueFrom.secretKeyRef` and `envFrom.secretRef` are
//!   resolved by the operator from Secrets in the namespace; explicit `env` wins over
//!   `envFrom`; the Session's env is already in the container. A missing Secret is waited for
//!   15 s after creation (the api creates it just before the Execution), then
//!   `SecretNotFound`. Values go only into the exec stream: never into logs, Events or the
//!   status.
//! - **At most once**: phase `Running` (with `startTime`, `podName`, `podUID`) is written
//!   before the exec starts. The exec (`kubexec-runner exec`, run ID = the Execution's UID)
//!   runs in a spawned task, tracked by UID in [`tracker::Tracker`] so a re-reconcile never
//!   starts a second one. The task writes the final status and records Session activity at
//!   start and finish.
//! - **Result**: `Succeeded` on exit 0 (condition `Complete`); otherwise `Failed` (condition
//!   `Failed`) with reason `NonZeroExit`, `TimedOut` or `OOMKilled`. These three carry
//!   `exitCode` and the output: the code ran. Every other reason (`SessionNotFound`,
//!   `SessionNotReady`, `SecretNotFound`, `InvalidEnv`, `PodLost`, `NotStarted`, `RunnerError`,
//!   `DeadlineExceeded`) means it did not run to an exit, and has no `exitCode`.
//! - **Recovery**: a `Running` Execution that no task of this process runs (the operator
//!   restarted) is exec'd again with the same run ID: the runner replays the stored result, or
//!   attaches to the still-running run; it never runs it again. A run the runner never claimed
//!   (the operator stopped between recording Running and the exec) starts then, with the same
//!   env and effective timeout a fresh start has; when those cannot be rebuilt (the Session or
//!   a Secret is gone) the exec is attach-only, and the runner refuses the run: `NotStarted`. A Pod that is gone, being
//!   deleted or replaced (UID differs from `podUID`), or a runner that reports the run `Lost`,
//!   fails it with `PodLost`. Any unclear exec failure (broken stream, refused connection) is
//!   retried the same way until `timeoutSeconds` + 30 s.
//! - **TTL**: a finished Execution with `ttlSecondsAfterFinished` is deleted that long after
//!   `completionTime`.
//! - **Backpressure**: at most `--max-runs` runs are in flight in a replica and
//!   `--max-runs-per-session` in one Session; the others wait in a first-come, first-served
//!   queue (a requeue, never an error) and start as runs end. `kubexec_executions_in_flight`,
//!   `kubexec_execution_queue_depth` and `kubexec_execution_queue_wait_seconds` show it.
//! - **Writes**: a run without env costs the apiserver four writes: the create (by the client),
//!   Running, the final status, and the TTL delete. Normal Events (`Started`, `Completed`) are
//!   recorded only with `--execution-events all`; Warnings always. Session activity is
//!   recorded at most once per Session every few seconds, not per run.
//! - **Shutdown**: in-flight runs are abandoned with the process; the next operator recovers
//!   them as above.

pub mod admission;
pub mod apply;
pub mod build;
pub mod decide;
pub mod failure;
pub mod observe;
pub mod outcome;
pub mod pending;
pub mod run;
pub mod tracker;

use std::{future::Future, sync::Arc};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use kube::{
    runtime::{
        controller::{self, Action, Controller},
        reflector::{self, ObjectRef},
        watcher, WatchStreamExt,
    },
    Api, ResourceExt,
};
use tokio::time::Instant;
use tracing::{debug, info, instrument};

use crate::{
    crd::{Execution, ExecutionPhase, Session},
    shared::cache::slim_execution,
};

use super::{faults, metrics::ExecutionResultLabels, reconciler, Context, Error, Result};

pub use apply::FIELD_MANAGER;
use tracker::{Admission, Claim};
pub use tracker::{RunState, Tracker};

use build::{exec_spec, pending_status, recorded_result_key, running_status};
use decide::{
    Plan, RunMode, RunPlan, CACHE_LAG_RECHECK, IN_FLIGHT_RECHECK, QUEUE_RECHECK, SESSION_POLL,
};
use failure::Failure;
use outcome::RunOutcome;

/// Metric and log name of this controller.
pub const CONTROLLER: &str = "execution";

/// Reconciles one Execution. Thin: times it, runs the pipeline, records the result.
#[instrument(skip_all, fields(execution = %execution.name_any(), namespace = execution.namespace().unwrap_or_default()))]
pub async fn reconcile(execution: Arc<Execution>, ctx: Arc<Context>) -> Result<Action> {
    let pipeline = reconcile_execution(&execution, &ctx, Timestamp::now());
    reconciler::timed(CONTROLLER, &*execution, &ctx, pipeline).await
}

/// The pipeline: admission → observe → decide → act.
pub async fn reconcile_execution(
    execution: &Execution,
    ctx: &Arc<Context>,
    now: Timestamp,
) -> Result<Action> {
    let uid = execution.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let run = ctx.runs.state(&uid);
    // A run that would wait for a slot anyway costs no read: it queues before observing.
    if run == RunState::Unknown && may_run(execution) {
        let (session, reference) = queue_key(execution);
        if ctx.runs.admit(&uid, &session, &reference) == Admission::Queued {
            debug!("queued: no free run slot");
            return Ok(Action::requeue(QUEUE_RECHECK));
        }
    }
    let observed = match run {
        RunState::Unknown => observe::observe(&ctx.client, &ctx.caches, execution).await,
        // Our own task owns it; nothing to read.
        RunState::InFlight | RunState::Finished => Ok(observe::Observed::default()),
    };
    let observed = observed.inspect_err(|_| ctx.runs.leave_queue(&uid))?;
    let plan = decide::plan(execution, &observed, run, now);
    debug!(?plan, "planned");
    if !matches!(plan, Plan::Run(_)) {
        ctx.runs.leave_queue(&uid);
    }
    match plan {
        Plan::Wait { pending, requeue } => {
            if let Some(status) =
                pending.and_then(|(reason, message)| pending_status(execution, reason, message))
            {
                apply::write_status(&ctx.client, execution, &status).await?;
            }
            Ok(reconciler::requeue(requeue))
        }
        Plan::ResumeSession(how) => {
            info!(?how, "resuming the session");
            apply::resume_session(ctx, execution, how, now).await?;
            Ok(Action::requeue(SESSION_POLL))
        }
        Plan::Run(planned) => start_run(ctx, execution, &uid, planned, now).await,
        Plan::Fail(failure) => fail(ctx, execution, failure, now).await,
        Plan::Delete => {
            info!("ttlSecondsAfterFinished passed; deleting the Execution");
            apply::delete(ctx, execution).await?;
            Ok(Action::await_change())
        }
    }
}

/// Whether the Execution may need a run slot: Pending or Running, and not being deleted.
fn may_run(execution: &Execution) -> bool {
    let phase = execution.status.as_ref().and_then(|s| s.phase);
    execution.metadata.deletion_timestamp.is_none()
        && matches!(
            phase.unwrap_or_default(),
            ExecutionPhase::Pending | ExecutionPhase::Running
        )
}

/// The Execution's Session (`namespace/name`, the per-Session bound's key) and its reference
/// (what a freed slot wakes).
fn queue_key(execution: &Execution) -> (String, ObjectRef<Execution>) {
    let namespace = execution.namespace().unwrap_or_default();
    let session = format!("{namespace}/{}", execution.spec.session_ref.name);
    (
        session,
        ObjectRef::new(&execution.name_any()).within(&namespace),
    )
}

/// Claims the run, records Running when it is fresh, and spawns its task.
async fn start_run(
    ctx: &Arc<Context>,
    execution: &Execution,
    uid: &str,
    planned: RunPlan,
    now: Timestamp,
) -> Result<Action> {
    let (session, reference) = queue_key(execution);
    let guard = match ctx.runs.claim(uid, &session, &reference) {
        Claim::Granted(guard) => guard,
        Claim::Busy => return Ok(Action::requeue(CACHE_LAG_RECHECK)),
        Claim::Queued => return Ok(Action::requeue(QUEUE_RECHECK)),
    };
    let mut snapshot = execution.clone();
    let attach_only = planned.mode == RunMode::AttachOnly;
    let recovering = planned.mode != RunMode::Fresh;
    let mut running = None;
    let result_key = if planned.mode == RunMode::Fresh {
        let (key, derived) = new_result_key(execution, uid)?;
        let status = running_status(
            execution,
            &planned.pod_name,
            planned.pod_uid.clone(),
            &key,
            now,
        );
        snapshot.status = Some(status.clone());
        running = Some((status, derived));
        Some(key)
    } else {
        // The key the first process recorded: the runner sealed (or will seal) with it.
        recorded_result_key(execution)
    };
    let spec = exec_spec(
        execution,
        planned.timeout_seconds,
        planned.env,
        attach_only,
        result_key,
    );
    let mut run = run::Run {
        execution: snapshot,
        spec,
        pod_name: planned.pod_name,
        pod_uid: planned.pod_uid,
        container: planned.container,
        timeout_seconds: planned.known_timeout_seconds,
        deadline: Instant::now() + planned.deadline,
        recovering,
        running_stored: None,
    };
    match running {
        None => run::spawn(ctx.clone(), guard, run),
        // A derived key is the same for every operator process, so a process that finds this
        // run still Pending (this one died before its write landed) sends the same spec with
        // the same key, and the runner's claim attaches it to the run already going: the spec
        // may leave before Running is stored. The final status waits for this write, so the
        // two never land out of order.
        Some((status, true)) => {
            let (stored, stored_rx) = tokio::sync::oneshot::channel();
            run.running_stored = Some(stored_rx);
            run::spawn(ctx.clone(), guard, run);
            let written = apply::write_status(&ctx.client, execution, &status).await;
            let _ = stored.send(());
            written?;
            faults::after_running_recorded(&execution.name_any());
        }
        // A random key exists only in this process until Running (which holds it) is stored:
        // recorded before the exec, so that if this write fails nothing has run (the guard
        // is dropped).
        Some((status, false)) => {
            apply::write_status(&ctx.client, execution, &status).await?;
            faults::after_running_recorded(&execution.name_any());
            run::spawn(ctx.clone(), guard, run);
        }
    }
    Ok(Action::requeue(IN_FLIGHT_RECHECK))
}

/// A fresh run's result key, recorded in the Running status (the sandbox cannot read the
/// Kubernetes API). With the cluster's result secret it is derived from the secret and the
/// run's identity, so that the api can still verify the stored result once the Execution is
/// gone (results a client can find again, for the retention window); without it, random.
/// The flag says whether it was derived. See docs/security.md.
fn new_result_key(
    execution: &Execution,
    uid: &str,
) -> Result<(kubexec_runner::protocol::ResultKey, bool)> {
    let namespace = execution.namespace().unwrap_or_default();
    if let Some(key) =
        crate::shared::result_secret::derived_key(&namespace, &execution.name_any(), uid)
    {
        return Ok((key, true));
    }
    let mut bytes = [0; kubexec_runner::protocol::RESULT_KEY_BYTES];
    getrandom::fill(&mut bytes).map_err(Error::NoRandomness)?;
    Ok((
        kubexec_runner::protocol::ResultKey::from_bytes(bytes),
        false,
    ))
}

/// Fails the Execution without a result: status, metric, Event.
async fn fail(
    ctx: &Context,
    execution: &Execution,
    failure: Failure,
    now: Timestamp,
) -> Result<Action> {
    info!(reason = failure.reason, message = %failure.message, "execution failed");
    let outcome = RunOutcome::Failed(failure);
    let status = outcome.status(execution, None, now);
    apply::write_status(&ctx.client, execution, &status).await?;
    ctx.metrics
        .executions
        .get_or_create(&ExecutionResultLabels {
            result: outcome.metric_label(),
        })
        .inc();
    apply::publish(ctx, execution, outcome.event()).await;
    Ok(Action::await_change())
}

/// Builds the Execution controller; the future runs it until `shutdown` resolves. Its Session
/// watch fills `sessions`, the cache that [`observe`] reads (see [`observe::Caches`]).
pub fn controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    concurrency: u16,
    sessions: reflector::store::Writer<Session>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let client = ctx.client.clone();
    let (executions, session_api) = match namespace {
        Some(ns) => (
            Api::<Execution>::namespaced(client.clone(), ns),
            Api::<Session>::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    // The cache keeps no output and no field managers (see `slim_execution`), and feeds the
    // index of pending Executions by Session.
    let (store, writer) = reflector::store();
    let pending = ctx.executions_by_session.clone();
    let indexed = pending.clone();
    let runs = ctx.runs.clone();
    let changes = watcher(executions, watcher::Config::default())
        .default_backoff()
        .modify(slim_execution)
        .map_ok(move |event| {
            indexed.observe(&event);
            if let watcher::Event::Delete(gone) = &event {
                if let Some(uid) = gone.uid() {
                    runs.leave_queue(&uid);
                }
            }
            event
        })
        .reflect(writer)
        .applied_objects();
    // The Session cache is filled by the same stream that wakes pending Executions, so a
    // Session seen Ready here is Ready in the cache.
    let session_changes = watcher(session_api, watcher::Config::default())
        .default_backoff()
        .modify(|session| session.managed_fields_mut().clear())
        .reflect(sessions)
        .touched_objects();
    let wakeups = ctx
        .runs
        .take_wakeups()
        .map(wakeup_stream)
        .unwrap_or_else(|| futures::stream::empty().boxed());
    Controller::for_stream(changes, store)
        .watches_stream(session_changes, move |session| {
            // A Session's readiness (or resumption) starts its waiting Executions at once.
            pending.waiting_on(&session)
        })
        .reconcile_on(wakeups)
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, reconciler::policy(CONTROLLER), ctx)
        .for_each(|result| reconciler::log_outcome(CONTROLLER, result))
}

/// The queued runs a freed slot wakes, as a stream.
fn wakeup_stream(
    mut receiver: tokio::sync::mpsc::UnboundedReceiver<ObjectRef<Execution>>,
) -> futures::stream::BoxStream<'static, ObjectRef<Execution>> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed()
}

#[cfg(test)]
mod tests;
