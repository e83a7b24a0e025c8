//! Apply (IO): carry out a [`Plan`]'s Pod action, Events and Session deletion.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::events::{Event, EventType},
    Api, Resource, ResourceExt,
};

use crate::crd::Session;
use crate::operator::{Context, Error, Result};
use crate::shared::kube_status::{is_gone_or_conflict, is_status};

use super::decide::{PodAction, SessionEvent};

fn delete_params(uid: Option<String>) -> DeleteParams {
    DeleteParams {
        preconditions: uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// Creates or deletes the sandbox Pod (and ensures the namespace's NetworkPolicies and the
/// workspace claim before a create).
/// Already-exists on create and not-found on delete count as done: the next watch event
/// reconciles again with fresh state.
pub async fn pod_action(
    ctx: &Context,
    namespace: &str,
    name: &str,
    action: &PodAction,
) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    match action {
        PodAction::Keep => Ok(()),
        PodAction::Create { pod, claim } => {
            // Fail closed: the namespace's NetworkPolicies exist before any sandbox Pod does
            // (a no-op apply when they are already in place; nothing when policies are off).
            crate::operator::netpol::apply_policies(ctx, namespace.to_string()).await?;
            if let Some(claim) = claim {
                let claims: Api<PersistentVolumeClaim> =
                    Api::namespaced(ctx.client.clone(), namespace);
                match claims.create(&PostParams::default(), claim).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 409) => {}
                    Err(e) => return Err(Error::kube("create workspace claim")(e)),
                }
            }
            match pods.create(&PostParams::default(), pod).await {
                Ok(_) => {
                    ctx.metrics.pods_created.inc();
                    Ok(())
                }
                Err(e) if is_status(&e, 409) => Ok(()),
                Err(e) => Err(Error::kube("create pod")(e)),
            }
        }
        PodAction::Delete { uid } => match pods.delete(name, &delete_params(uid.clone())).await {
            Ok(_) => Ok(()),
            Err(e) if is_gone_or_conflict(&e) => Ok(()),
            Err(e) => Err(Error::kube("delete pod")(e)),
        },
        PodAction::Resize { requests } => {
            let patch = serde_json::json!({ "spec": { "containers": [{
                "name": crate::layout::SANDBOX_CONTAINER,
                "resources": { "requests": requests },
            }]}});
            match pods
                .patch_subresource(
                    "resize",
                    name,
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if is_status(&e, 404) => Ok(()),
                Err(e) => Err(Error::kube("resize pod")(e)),
            }
        }
        PodAction::Relabel { labels } => {
            let patch = serde_json::json!({ "metadata": { "labels": labels } });
            match pods
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if is_status(&e, 404) => Ok(()),
                Err(e) => Err(Error::kube("label pod")(e)),
            }
        }
    }
}

impl SessionEvent {
    /// The Kubernetes Event for this transition.
    pub fn to_event(&self, session: &Session) -> Event {
        let name = session.name_any();
        let (type_, reason, action, note) = match self {
            SessionEvent::PodCreated => (
                EventType::Normal,
                "PodCreated",
                "CreatePod",
                format!("created sandbox Pod {}", crate::layout::pod_name(&name)),
            ),
            SessionEvent::Adopted { pod, pool } => (
                EventType::Normal,
                "Adopted",
                "AdoptPod",
                format!("adopted warm Pod {pod} of SessionPool {pool}"),
            ),
            SessionEvent::Ready => (
                EventType::Normal,
                "Ready",
                "Observe",
                "the sandbox's runner answered: the sandbox is ready".into(),
            ),
            SessionEvent::Suspended { idle: true } => (
                EventType::Normal,
                "DeepSlept",
                "DeletePod",
                format!(
                    "idleTimeoutSeconds {} without activity: Pod deleted, workspace kept",
                    session.spec.idle_timeout_seconds.unwrap_or_default()
                ),
            ),
            SessionEvent::Slept { requests } => (
                EventType::Normal,
                "Slept",
                "ResizePod",
                format!(
                    "sleepAfterSeconds {} without activity: requests lowered to {} (processes kept)",
                    session.spec.sleep_after_seconds.unwrap_or_default(),
                    requests
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            SessionEvent::Woke { detail: None } => (
                EventType::Normal,
                "Woke",
                "ResizePod",
                "activity: requests restored, the sandbox is ready".into(),
            ),
            SessionEvent::Woke {
                detail: Some(detail),
            } => (
                EventType::Warning,
                "Woke",
                "ResizePod",
                format!("awake on its sleep requests: the kubelet has not applied the resize ({detail})"),
            ),
            SessionEvent::WaitingForExecutions { running } => (
                EventType::Normal,
                "WaitingForExecutions",
                "DeletePod",
                format!("the spec changed; the sandbox Pod is replaced once its {running} running execution(s) finish"),
            ),
            SessionEvent::Suspended { idle: false } => (
                EventType::Normal,
                "Suspended",
                "DeletePod",
                "spec.suspend is true: Pod deleted, workspace kept".into(),
            ),
            SessionEvent::Resumed => (
                EventType::Normal,
                "Resumed",
                "CreatePod",
                "resuming: creating a new sandbox Pod".into(),
            ),
            SessionEvent::Expired => (
                EventType::Normal,
                "Expired",
                "DeleteSession",
                format!(
                    "ttlSeconds {} passed; deleting the Session",
                    session.spec.ttl_seconds
                ),
            ),
            SessionEvent::PodLost { detail } => {
                (EventType::Warning, "PodLost", "CreatePod", detail.clone())
            }
            SessionEvent::SpecChanged => (
                EventType::Normal,
                "SpecChanged",
                "DeletePod",
                "the spec changed; replacing the sandbox Pod".into(),
            ),
            SessionEvent::InvalidSpec { detail } => (
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                detail.clone(),
            ),
            SessionEvent::RunnerMissing { detail } => (
                EventType::Warning,
                "RunnerMissing",
                "Observe",
                detail.clone(),
            ),
            SessionEvent::NamespaceNotEnabled { detail } => (
                EventType::Warning,
                "NamespaceNotEnabled",
                "CreatePod",
                detail.clone(),
            ),
            SessionEvent::PodRelabeled { labels } => (
                EventType::Normal,
                "PodRelabeled",
                "LabelPod",
                format!(
                    "set {} on sandbox Pod {}; it keeps running",
                    labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    crate::layout::pod_name(&name)
                ),
            ),
        };
        Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        }
    }
}

/// Publishes Events about the Session.
pub async fn publish(ctx: &Context, session: &Session, events: &[SessionEvent]) -> Result<()> {
    let reference = session.object_ref(&());
    for event in events {
        ctx.recorder
            .publish(&event.to_event(session), &reference)
            .await
            .map_err(Error::kube("publish event"))?;
    }
    Ok(())
}

/// Deletes the Session (its Pod and claim follow through owner references).
pub async fn delete_session(ctx: &Context, session: &Session) -> Result<()> {
    let namespace = session
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let sessions: Api<Session> = Api::namespaced(ctx.client.clone(), &namespace);
    match sessions
        .delete(&session.name_any(), &delete_params(session.uid()))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_gone_or_conflict(&e) => Ok(()),
        Err(e) => Err(Error::kube("delete session")(e)),
    }
}
