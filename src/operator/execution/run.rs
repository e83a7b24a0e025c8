//! The exec task of one run: the spec to the runner in the sandbox Pod (over the sandbox's
//! runner channel, or a one-shot `kubexec-runner exec`), then the final status. It runs
//! outside the reconcile loop, so a long execution never holds a reconcile slot.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};
use kubexec_runner::protocol::{ErrorCode, ExecResult, ExecSpec};
use tokio::time::Instant;
use tracing::{info, info_span, warn, Instrument};

use crate::crd::{Execution, ExecutionStatus};
use crate::operator::{metrics::ExecutionResultLabels, Context};
use crate::sandbox::{ChannelKey, Sandbox, SandboxError};
use crate::shared::activity::ActivityWriter;

use super::{
    apply::{self, ExecutionEvent},
    build::{failed_status, reasons},
    failure::{pod_lost, Failure},
    outcome::RunOutcome,
    tracker::RunGuard,
};

const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);
const STATUS_WRITE_ATTEMPTS: u32 = 4;
/// Activity of a Session is recorded at most this often (idle timeouts are far longer).
const ACTIVITY_INTERVAL: Duration = Duration::from_secs(5);

/// One run to carry out.
pub struct Run {
    /// The Execution, with the Running status this process recorded or recovered.
    pub execution: Execution,
    /// What to send to the runner.
    pub spec: ExecSpec,
    /// The sandbox Pod and its UID as recorded at start.
    pub pod_name: String,
    /// See `pod_name`.
    pub pod_uid: Option<String>,
    /// The container the runner is exec'd in.
    pub container: &'static str,
    /// The effective timeout, when known (for messages).
    pub timeout_seconds: Option<i32>,
    /// When to stop waiting for a result.
    pub deadline: Instant,
    /// True when a previous process recorded this run as Running (the exec replays, attaches,
    /// or starts a run that process never started).
    pub recovering: bool,
    /// Set when the spec leaves while Running is still being stored: answered once that
    /// write has landed (or failed), so that the final status never lands before it.
    pub running_stored: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// Spawns the run; the guard is released when it ends.
pub fn spawn(ctx: Arc<Context>, guard: RunGuard, run: Run) {
    let span = info_span!(
        "run",
        execution = %run.execution.name_any(),
        namespace = run.execution.namespace().unwrap_or_default(),
        pod = %run.pod_name,
        recovering = run.recovering,
    );
    tokio::spawn(carry_out(ctx, guard, run).instrument(span));
}

async fn carry_out(ctx: Arc<Context>, guard: RunGuard, mut run: Run) {
    let namespace = run.execution.namespace().unwrap_or_default();
    let session = run.execution.spec.session_ref.name.clone();
    if !run.recovering {
        let (ctx, execution, pod) = (ctx.clone(), run.execution.clone(), run.pod_name.clone());
        let (namespace, session) = (namespace.clone(), session.clone());
        // Bookkeeping must not delay the exec.
        tokio::spawn(async move {
            mark_activity(&ctx, &namespace, &session).await;
            apply::publish(&ctx, &execution, ExecutionEvent::Started { pod }).await;
        });
    } else {
        info!("recovering the run of a previous operator process");
    }

    let outcome = exec(&ctx, &run).await;
    if let Some(stored) = run.running_stored.take() {
        let _ = stored.await;
    }
    let status = outcome.status(&run.execution, run.timeout_seconds, Timestamp::now());
    if !write_final(&ctx, &run.execution, &status).await {
        // Forget the run: a later reconcile recovers it (the runner replays the result).
        return;
    }
    guard.finished();
    ctx.metrics
        .executions
        .get_or_create(&ExecutionResultLabels {
            result: outcome.metric_label(),
        })
        .inc();
    if let Some(seconds) = outcome.run_seconds() {
        ctx.metrics.execution_duration.observe(seconds);
    }
    info!(
        result = outcome.metric_label(),
        reason = outcome.reason(),
        "execution finished"
    );
    apply::publish(&ctx, &run.execution, outcome.event()).await;
    mark_activity(&ctx, &namespace, &session).await;
}

async fn mark_activity(ctx: &Context, namespace: &str, session: &str) {
    if !ctx
        .runs
        .activity_due(&format!("{namespace}/{session}"), ACTIVITY_INTERVAL)
    {
        return;
    }
    if let Err(error) = ActivityWriter::OPERATOR
        .record(&ctx.client, namespace, session, Timestamp::now())
        .await
    {
        // The Session may be gone; the run's own status matters more.
        warn!(%error, "could not record session activity");
    }
}

/// Writes the final status, retrying transient failures. If the apiserver refuses its content
/// (it is bounded, so this should not happen), a minimal Failed status replaces it: a final
/// status that can never be written would otherwise be recovered and retried forever.
async fn write_final(ctx: &Context, execution: &Execution, status: &ExecutionStatus) -> bool {
    let mut wait = Duration::from_millis(500);
    for attempt in 1..=STATUS_WRITE_ATTEMPTS {
        match apply::write_status(&ctx.client, execution, status).await {
            Ok(()) => return true,
            Err(error) if error.is_refused_content() => {
                warn!(%error, "the apiserver refused the final status; writing a minimal one");
                let fallback = failed_status(
                    execution,
                    reasons::STATUS_REJECTED,
                    &format!("the apiserver refused the status with the result: {error}"),
                    Timestamp::now(),
                );
                return apply::write_status(&ctx.client, execution, &fallback)
                    .await
                    .inspect_err(|error| warn!(%error, "could not write the minimal status"))
                    .is_ok();
            }
            Err(error) if attempt < STATUS_WRITE_ATTEMPTS => {
                warn!(%error, attempt, "could not write the final status; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(error) => {
                warn!(%error, "could not write the final status; a later reconcile recovers it");
            }
        }
    }
    false
}

/// Execs until a result, a definite failure, or the deadline. Any unclear failure (the stream
/// broke, the exec could not connect) is retried with the same run ID, which is always safe:
/// the runner never runs a run ID twice, it replays the stored result or attaches to the run.
async fn exec(ctx: &Context, run: &Run) -> RunOutcome {
    let namespace = run.execution.namespace().unwrap_or_default();
    let sandbox =
        Sandbox::new(ctx.client.clone(), &namespace, &run.pod_name).in_container(run.container);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    if run.spec.result_key.is_none() {
        return RunOutcome::Failed(Failure::no_result_key());
    }
    let mut retry = FIRST_RETRY;
    loop {
        let attempt = send(ctx, &sandbox, &namespace, run);
        let error = match tokio::time::timeout_at(run.deadline, attempt).await {
            Ok(Ok(result)) => return RunOutcome::from(result),
            Ok(Err(SandboxError::Runner {
                code: ErrorCode::Lost,
                ..
            })) => return RunOutcome::Failed(Failure::run_lost(&run.pod_name)),
            Ok(Err(SandboxError::Runner {
                code: ErrorCode::NotStarted,
                ..
            })) => return RunOutcome::Failed(Failure::not_started(&run.pod_name)),
            Ok(Err(SandboxError::Runner { code, message })) => {
                return RunOutcome::Failed(Failure::runner_error(code, &message))
            }
            // A replayed result that does not verify will not verify next time either.
            Ok(Err(SandboxError::ResultRejected(why))) => {
                return RunOutcome::Failed(Failure::result_rejected(&run.pod_name, &why))
            }
            Ok(Err(SandboxError::SpecTooLarge { size, limit })) => {
                return RunOutcome::Failed(Failure::spec_too_large(size, limit))
            }
            Ok(Err(error)) => error,
            Err(_) => return deadline_exceeded(run),
        };
        if let Ok(pod) = pods.get_opt(&run.pod_name).await {
            if let Some(failure) =
                pod_lost(pod.as_ref(), Some(&run.pod_name), run.pod_uid.as_deref())
            {
                return RunOutcome::Failed(failure);
            }
        }
        if Instant::now() + retry >= run.deadline {
            return deadline_exceeded(run);
        }
        warn!(%error, retry_in = ?retry, "exec did not deliver a result; attaching again");
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// One attempt: over the sandbox's runner channel when the operator uses channels and the
/// sandbox has one, else as a one-shot exec. Both reach the same runner code, so a retry over
/// either attaches to a run the other started.
async fn send(
    ctx: &Context,
    sandbox: &Sandbox,
    namespace: &str,
    run: &Run,
) -> Result<ExecResult, SandboxError> {
    if let Some(pool) = &ctx.channels {
        let key = ChannelKey {
            namespace: namespace.to_string(),
            pod: run.pod_name.clone(),
            pod_uid: run.pod_uid.clone(),
            container: run.container,
        };
        if let Some(channel) = pool.channel(&key).await? {
            return channel.exec(&run.spec).await?.result(|_| {}).await;
        }
    }
    sandbox.exec(&run.spec).await?.result(|_| {}).await
}

fn deadline_exceeded(run: &Run) -> RunOutcome {
    RunOutcome::Failed(Failure::deadline_exceeded(
        &run.pod_name,
        run.timeout_seconds,
    ))
}
