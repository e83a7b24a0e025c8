//! Apply (IO): the Execution's status, its Events, resuming its Session, and TTL deletion.

use jiff::Timestamp;
use kube::{
    api::{DeleteParams, Patch, PatchParams, Preconditions},
    runtime::events::{Event, EventType},
    Api, Resource, ResourceExt,
};
use serde_json::json;

use crate::crd::{Execution, ExecutionStatus, Session, API_VERSION};
use crate::operator::{config::ExecutionEvents, Context, Error, Result};
use crate::shared::{activity::ActivityWriter, kube_status::is_gone_or_conflict};

use super::decide::Resume;

/// Field manager of the Execution controller's status writes. (The Session's
/// `lastActivityAt` is written under [`ActivityWriter::OPERATOR`].)
pub const FIELD_MANAGER: &str = "kubexec-execution-status";

/// Field manager that lifts a Session's `spec.suspend` when an Execution needs it.
pub const RESUME_FIELD_MANAGER: &str = "kubexec-execution-resume";

/// The apply patch of a whole status (every field this controller owns is always included, so
/// server-side apply never drops one).
pub fn status_patch(status: &ExecutionStatus) -> serde_json::Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "Execution",
        "status": status,
    })
}

/// Writes the status with server-side apply.
pub async fn write_status(
    client: &kube::Client,
    execution: &Execution,
    status: &ExecutionStatus,
) -> Result<()> {
    let namespace = execution
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Execution> = Api::namespaced(client.clone(), &namespace);
    api.patch_status(
        &execution.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(status_patch(status)),
    )
    .await
    .map_err(Error::kube("write execution status"))?;
    Ok(())
}

/// A transition worth a Kubernetes Event. Never carries env values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecutionEvent {
    /// The exec started in this Pod.
    Started {
        /// The sandbox Pod.
        pod: String,
    },
    /// Ran to the end with exit 0.
    Completed {
        /// Summary (exit code, time).
        message: String,
    },
    /// Failed (a Warning): non-zero exit, timeout, OOM, or it could not run.
    Failed {
        /// One of the reasons in [`super::build::reasons`].
        reason: String,
        /// What happened.
        message: String,
    },
    /// The Session was suspended and is being resumed for this Execution.
    ResumingSession {
        /// How.
        how: Resume,
    },
}

impl ExecutionEvent {
    /// The Kubernetes Event.
    pub fn to_event(&self, session: &str) -> Event {
        let (type_, reason, action, note) = match self {
            ExecutionEvent::Started { pod } => (
                EventType::Normal,
                "Started".to_string(),
                "Exec",
                format!("running in {pod}"),
            ),
            ExecutionEvent::Completed { message } => (
                EventType::Normal,
                "Completed".to_string(),
                "Exec",
                message.clone(),
            ),
            ExecutionEvent::Failed { reason, message } => {
                (EventType::Warning, reason.clone(), "Exec", message.clone())
            }
            ExecutionEvent::ResumingSession { how } => (
                EventType::Normal,
                "ResumingSession".to_string(),
                "ResumeSession",
                match how {
                    Resume::Idle => format!("Session {session} was suspended for idling; resuming it"),
                    Resume::Unsuspend => format!(
                        "Session {session} has spec.suspend=true; setting it to false to run this execution"
                    ),
                },
            ),
        };
        Event {
            type_,
            reason,
            note: Some(note),
            action: action.into(),
            secondary: None,
        }
    }
}

impl ExecutionEvent {
    /// The Normal Events every run has (`Started`, `Completed`): recorded only with
    /// `--execution-events all`, as they would otherwise be two writes per execution.
    pub fn is_routine(&self) -> bool {
        matches!(
            self,
            ExecutionEvent::Started { .. } | ExecutionEvent::Completed { .. }
        )
    }
}

/// Whether `event` is recorded under `setting`: Warnings and the rare Normal Events always,
/// the routine ones of each run only with `all`.
pub fn is_recorded(event: &ExecutionEvent, setting: ExecutionEvents) -> bool {
    setting == ExecutionEvents::All || !event.is_routine()
}

/// Publishes an Event about the Execution, unless `--execution-events` leaves it out. Failing
/// to publish is logged, not fatal: an Event is never worth re-running a step for.
pub async fn publish(ctx: &Context, execution: &Execution, event: ExecutionEvent) {
    if !is_recorded(&event, ctx.executions.events) {
        return;
    }
    let reference = execution.object_ref(&());
    let k8s_event = event.to_event(&execution.spec.session_ref.name);
    if let Err(error) = ctx.recorder.publish(&k8s_event, &reference).await {
        tracing::warn!(%error, reason = %k8s_event.reason, "could not publish an event");
    }
}

/// Resumes the Execution's Session: records activity (idle), or sets `spec.suspend: false`
/// (with an Event on the Session too).
pub async fn resume_session(
    ctx: &Context,
    execution: &Execution,
    how: Resume,
    now: Timestamp,
) -> Result<()> {
    let namespace = execution
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = &execution.spec.session_ref.name;
    match how {
        Resume::Idle => ActivityWriter::OPERATOR
            .record(&ctx.client, &namespace, name, now)
            .await
            .map_err(Error::kube("record session activity"))?,
        Resume::Unsuspend => {
            let sessions: Api<Session> = Api::namespaced(ctx.client.clone(), &namespace);
            // A merge patch, not an apply: the user keeps owning spec.suspend.
            let session = sessions
                .patch(
                    name,
                    &PatchParams {
                        field_manager: Some(RESUME_FIELD_MANAGER.into()),
                        ..PatchParams::default()
                    },
                    &Patch::Merge(json!({"spec": {"suspend": false}})),
                )
                .await
                .map_err(Error::kube("resume session"))?;
            let event = Event {
                type_: EventType::Normal,
                reason: "ResumedByExecution".into(),
                note: Some(format!(
                    "Execution {} set spec.suspend to false to run",
                    execution.name_any()
                )),
                action: "Resume".into(),
                secondary: Some(execution.object_ref(&())),
            };
            if let Err(error) = ctx.recorder.publish(&event, &session.object_ref(&())).await {
                tracing::warn!(%error, "could not publish an event");
            }
        }
    }
    publish(ctx, execution, ExecutionEvent::ResumingSession { how }).await;
    Ok(())
}

/// Deletes a finished Execution (its env Secret follows through its owner reference).
pub async fn delete(ctx: &Context, execution: &Execution) -> Result<()> {
    let namespace = execution
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Execution> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = DeleteParams {
        preconditions: execution.uid().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&execution.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_gone_or_conflict(&e) => Ok(()),
        Err(e) => Err(Error::kube("delete execution")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_warnings_and_rare_events_are_recorded_by_default() {
        let started = ExecutionEvent::Started { pod: "p".into() };
        let completed = ExecutionEvent::Completed {
            message: "exit 0".into(),
        };
        let failed = ExecutionEvent::Failed {
            reason: "NonZeroExit".into(),
            message: "exit 1".into(),
        };
        let resuming = ExecutionEvent::ResumingSession { how: Resume::Idle };
        let default = ExecutionEvents::default();
        assert_eq!(default, ExecutionEvents::Warnings);
        for routine in [&started, &completed] {
            assert!(!is_recorded(routine, default), "{routine:?}");
            assert!(is_recorded(routine, ExecutionEvents::All), "{routine:?}");
        }
        for kept in [&failed, &resuming] {
            assert!(is_recorded(kept, default), "{kept:?}");
        }
        assert_eq!(failed.to_event("s").type_, EventType::Warning);
    }
}
