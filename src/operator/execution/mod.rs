//! The Execution controller: runs each Execution once in its Session's sandbox Pod and writes
//! the result to its status.
//!
//! Each reconcile is a pipeline: [`observe`] (IO: the Session, its Pod, the env Secrets) →
//! [`decide`] (pure: the next step) → act ([`apply`]: status, Events, resume, delete; or
//! [`run`]: a spawned exec task) → status (server-side apply under [`apply::FIELD_MANAGER`]).
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
//!   `SessionNotReady`, `SecretNotFound`, `InvalidEnv`, `PodLost`, `RunnerError`,
//!   `DeadlineExceeded`) means it did not run to an exit, and has no `exitCode`.
//! - **Recovery**: a `Running` Execution that no task of this process runs (the operator
//!   restarted) is exec'd again with the same run ID: the runner replays the stored result, or
//!   attaches to the still-running run; it never runs it again. A Pod that is gone, being
//!   deleted or replaced (UID differs from `podUID`), or a runner that reports the run `Lost`,
//!   fails it with `PodLost`. Any unclear exec failure (broken stream, refused connection) is
//!   retried the same way until `timeoutSeconds` + 30 s.
//! - **TTL**: a finished Execution with `ttlSecondsAfterFinished` is deleted that long after
//!   `completionTime`.
//! - **Shutdown**: in-flight runs are abandoned with the process; the next operator recovers
//!   them as above.

pub mod apply;
pub mod build;
pub mod decide;
pub mod observe;
pub mod run;
pub mod tracker;

use std::{future::Future, sync::Arc, time::Duration};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use kube::{
    runtime::{
        controller::{self, Action, Controller},
        reflector::ObjectRef,
        watcher,
    },
    Api, ResourceExt,
};
use tokio::time::Instant;
use tracing::{debug, info, instrument};

use crate::crd::{Execution, ExecutionPhase, Session, MAX_TIMEOUT_SECONDS};

use super::{metrics::ExecutionResultLabels, reconciler, Context, Error, Result};

pub use apply::FIELD_MANAGER;
pub use tracker::{RunState, Tracker};

use build::{exec_spec, failed_status, pending_status, running_status, Env};
use decide::{Plan, CACHE_LAG_RECHECK, IN_FLIGHT_RECHECK, SESSION_POLL};

/// Metric and log name of this controller.
pub const CONTROLLER: &str = "execution";

/// Reconciles one Execution. Thin: times it, runs the pipeline, records the result.
#[instrument(skip_all, fields(execution = %execution.name_any(), namespace = execution.namespace().unwrap_or_default()))]
pub async fn reconcile(execution: Arc<Execution>, ctx: Arc<Context>) -> Result<Action> {
    let pipeline = reconcile_execution(&execution, &ctx, Timestamp::now());
    reconciler::timed(CONTROLLER, &*execution, &ctx, pipeline).await
}

/// The pipeline: observe → decide → act.
pub async fn reconcile_execution(
    execution: &Execution,
    ctx: &Arc<Context>,
    now: Timestamp,
) -> Result<Action> {
    let uid = execution.uid().ok_or(Error::MissingField("metadata.uid"))?;
    let run = ctx.runs.state(&uid);
    let observed = match run {
        RunState::Unknown => observe::observe(&ctx.client, execution).await?,
        // Our own task owns it; nothing to read.
        RunState::InFlight | RunState::Finished => observe::Observed::default(),
    };
    let plan = decide::plan(execution, &observed, run, now);
    debug!(?plan, "planned");
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
        Plan::Start {
            pod_name,
            pod_uid,
            env,
            timeout_seconds,
        } => {
            start(
                ctx,
                execution,
                &uid,
                pod_name,
                pod_uid,
                env,
                timeout_seconds,
                now,
            )
            .await
        }
        Plan::Recover => Ok(recover(ctx, execution, &uid, now)),
        Plan::Fail(failure) => {
            info!(reason = failure.reason, message = %failure.message, "execution failed");
            let status = failed_status(execution, failure.reason, &failure.message, now);
            apply::write_status(&ctx.client, execution, &status).await?;
            ctx.metrics
                .executions
                .get_or_create(&ExecutionResultLabels { result: "error" })
                .inc();
            apply::publish(
                ctx,
                execution,
                apply::ExecutionEvent::Failed {
                    reason: failure.reason.into(),
                    message: failure.message,
                },
            )
            .await;
            Ok(Action::await_change())
        }
        Plan::Delete => {
            info!("ttlSecondsAfterFinished passed; deleting the Execution");
            apply::delete(ctx, execution).await?;
            Ok(Action::await_change())
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn start(
    ctx: &Arc<Context>,
    execution: &Execution,
    uid: &str,
    pod_name: String,
    pod_uid: Option<String>,
    env: Env,
    timeout_seconds: i32,
    now: Timestamp,
) -> Result<Action> {
    let Some(guard) = ctx.runs.claim(uid) else {
        return Ok(Action::requeue(CACHE_LAG_RECHECK));
    };
    let running = running_status(execution, &pod_name, pod_uid.clone(), now);
    // Recorded before the exec: if this write fails, nothing has run (the guard is dropped).
    apply::write_status(&ctx.client, execution, &running).await?;
    let spec = exec_spec(execution, timeout_seconds, env);
    let mut snapshot = execution.clone();
    snapshot.status = Some(running);
    let grace = Duration::from_secs(timeout_seconds.max(1) as u64) + run::RESULT_GRACE;
    run::spawn(
        ctx.clone(),
        guard,
        run::Run {
            execution: snapshot,
            spec,
            pod_name,
            pod_uid,
            timeout_seconds: Some(timeout_seconds),
            deadline: Instant::now() + grace,
            recovering: false,
        },
    );
    Ok(Action::requeue(IN_FLIGHT_RECHECK))
}

fn recover(ctx: &Arc<Context>, execution: &Execution, uid: &str, now: Timestamp) -> Action {
    let Some(guard) = ctx.runs.claim(uid) else {
        return Action::requeue(CACHE_LAG_RECHECK);
    };
    let status = execution.status.clone().unwrap_or_default();
    let Some(pod_name) = status.pod_name.clone() else {
        // decide() fails a Running Execution without a Pod; nothing to recover here.
        return Action::requeue(CACHE_LAG_RECHECK);
    };
    // The session default is not at hand; the deadline assumes the longest timeout allowed.
    let timeout = execution
        .spec
        .timeout_seconds
        .unwrap_or(MAX_TIMEOUT_SECONDS);
    let remaining = status
        .start_time
        .as_ref()
        .and_then(|t| {
            t.0.checked_add(SignedDuration::from_secs(timeout.into()))
                .ok()
        })
        .map(|end| end.duration_since(now).as_secs().max(0) as u64)
        .unwrap_or(timeout as u64);
    // A claimed run ignores the spec's content, so the env values are not sent again.
    let spec = exec_spec(execution, timeout, Env::default());
    run::spawn(
        ctx.clone(),
        guard,
        run::Run {
            execution: execution.clone(),
            spec,
            pod_name,
            pod_uid: status.pod_uid.clone(),
            timeout_seconds: execution.spec.timeout_seconds,
            deadline: Instant::now() + Duration::from_secs(remaining) + run::RESULT_GRACE,
            recovering: true,
        },
    );
    Action::requeue(IN_FLIGHT_RECHECK)
}

/// Pending Executions of `session`, so that its readiness (or resumption) starts them at once.
fn waiting_on(
    store: &kube::runtime::reflector::Store<Execution>,
    session: &Session,
) -> Vec<ObjectRef<Execution>> {
    let namespace = session.namespace();
    let name = session.name_any();
    store
        .state()
        .into_iter()
        .filter(|e| {
            e.namespace() == namespace
                && e.spec.session_ref.name == name
                && matches!(
                    e.status.as_ref().and_then(|s| s.phase),
                    None | Some(ExecutionPhase::Pending)
                )
        })
        .map(|e| ObjectRef::from_obj(&*e))
        .collect()
}

/// Builds the Execution controller; the future runs it until `shutdown` resolves.
pub fn controller(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let client = ctx.client.clone();
    let (executions, sessions) = match namespace {
        Some(ns) => (
            Api::<Execution>::namespaced(client.clone(), ns),
            Api::<Session>::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let controller = Controller::new(executions, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(sessions, watcher::Config::default(), move |session| {
            waiting_on(&store, &session)
        })
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, reconciler::policy(CONTROLLER), ctx)
        .for_each(|result| reconciler::log_outcome(CONTROLLER, result))
}

#[cfg(test)]
mod tests;
