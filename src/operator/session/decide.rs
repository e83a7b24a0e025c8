//! Pure decisions: given a Session, what was observed, and the time, what should happen.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::core::v1::{PersistentVolumeClaim, Pod},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::ResourceExt;

use crate::crd::{
    annotations,
    conditions::{self, READY},
    find_condition, next_condition,
    validate::{validate_session, ValidationError},
    Session, SessionPhase, SessionStatus,
};
use crate::layout::pod_name;
use crate::operator::config::SandboxConfig;
use crate::operator::reconciler::until;

use super::{
    build::{build_pod, build_workspace_claim, pod_spec_hash},
    observe::Observed,
};

/// How often a Session is looked at when nothing happens.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How soon to look again while an old Pod is still terminating.
pub const TERMINATING_POLL: Duration = Duration::from_secs(2);

/// A transition worth a Kubernetes Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// A sandbox Pod was created for the first time.
    PodCreated,
    /// The Pod became ready.
    Ready,
    /// The Pod was deleted because of `spec.suspend` (`idle: false`) or idling (`idle: true`).
    Suspended {
        /// Suspended for idling rather than by `spec.suspend`.
        idle: bool,
    },
    /// A suspended Session got a new Pod.
    Resumed,
    /// The TTL passed; the Session is deleted.
    Expired,
    /// The Pod disappeared, failed or was evicted, and is being replaced (a Warning).
    PodLost {
        /// What happened to it.
        detail: String,
    },
    /// The Pod no longer matches the spec and is being replaced.
    SpecChanged,
    /// The spec cannot be turned into a Pod (a Warning).
    InvalidSpec {
        /// The validation message.
        detail: String,
    },
}

/// What to do with the sandbox Pod.
#[derive(Clone, Debug, PartialEq)]
pub enum PodAction {
    /// Leave it alone.
    Keep,
    /// Create this Pod (and, first, this workspace claim if there is one).
    Create {
        /// The Pod to create.
        pod: Box<Pod>,
        /// The claim to ensure first, for a persistent workspace.
        claim: Option<Box<PersistentVolumeClaim>>,
    },
    /// Delete the Pod with this uid (the uid is a precondition, so a newer Pod is never hit).
    Delete {
        /// uid of the Pod to delete.
        uid: Option<String>,
    },
}

/// Why a Pod is being recreated, for the metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recreate {
    /// The Pod was gone.
    Missing,
    /// The Pod had failed or was evicted.
    Failed,
}

impl Recreate {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Recreate::Missing => "missing",
            Recreate::Failed => "failed",
        }
    }
}

/// The outcome of [`plan`]: the side effects to perform, in order: Pod action, Events,
/// status, Session deletion.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// What to do with the Pod.
    pub pod: PodAction,
    /// Events to publish.
    pub events: Vec<SessionEvent>,
    /// The status to write, or `None` when it is unchanged.
    pub status: Option<SessionStatus>,
    /// Delete the Session (TTL expiry).
    pub delete_session: bool,
    /// Set when a lost Pod is being replaced.
    pub recreate: Option<Recreate>,
    /// Set when the spec is invalid; the reconcile reports it as a permanent error after
    /// writing the status.
    pub invalid: Option<ValidationError>,
    /// When to look again if nothing else happens (`None`: only on change).
    pub requeue_after: Option<Duration>,
}

/// When the Session expires: creationTimestamp + ttlSeconds.
pub fn expires_at(session: &Session, now: Timestamp) -> Timestamp {
    let created = session
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    created
        .checked_add(SignedDuration::from_secs(session.spec.ttl_seconds))
        .unwrap_or(Timestamp::MAX)
}

/// When the Session counts as idle: `idleTimeoutSeconds` after the later of the last activity
/// and the moment its Pod became ready. `None` when it cannot idle (no idle timeout, or it never
/// became ready).
pub fn idle_deadline(session: &Session) -> Option<Timestamp> {
    let timeout = session.spec.idle_timeout_seconds?;
    let status = session.status.as_ref()?;
    let last = [status.last_activity_at.as_ref(), status.ready_at.as_ref()]
        .into_iter()
        .flatten()
        .map(|t| t.0)
        .max()?;
    last.checked_add(SignedDuration::from_secs(timeout)).ok()
}

/// True when the Session should be suspended for idling now. Only a Ready Session, or one
/// already suspended for idling, can be idle: a Pod that is still starting does not idle out,
/// and a Session resumed from `spec.suspend` starts a fresh idle clock once ready.
pub fn is_idle(session: &Session, now: Timestamp) -> bool {
    let Some(deadline) = idle_deadline(session) else {
        return false;
    };
    let status = session.status.as_ref();
    let phase = session.phase();
    let idle_suspended = phase == SessionPhase::Suspended
        && status
            .and_then(|s| find_condition(&s.conditions, READY))
            .is_some_and(|c| c.reason == conditions::REASON_IDLE);
    (phase == SessionPhase::Ready || idle_suspended) && now >= deadline
}

fn pod_is_ready(pod: &Pod) -> Option<Time> {
    let status = pod.status.as_ref()?;
    let ready = status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        ready
            .last_transition_time
            .clone()
            .unwrap_or(Time(Timestamp::UNIX_EPOCH)),
    )
}

fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Why a Pod is not ready yet, from its containers' waiting states.
fn pod_waiting_message(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find_map(|cs| {
            let waiting = cs.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            if reason == "ContainerCreating" || reason == "PodInitializing" {
                return None;
            }
            Some(match waiting.message.as_deref() {
                Some(msg) => format!("{}: {reason}: {msg}", cs.name),
                None => format!("{}: {reason}", cs.name),
            })
        })
}

fn pod_spec_hash_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(annotations::SPEC_HASH)
        .map(String::as_str)
}

/// Decides what a reconcile does. Pure: `now` is passed in.
pub fn plan(
    session: &Session,
    observed: &Observed,
    config: &SandboxConfig,
    now: Timestamp,
) -> Plan {
    // Times in the status have second precision; keep `now` the same so comparisons hold.
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let current = session.status.clone().unwrap_or_default();
    let phase = session.phase();
    let generation = session.metadata.generation;
    let expires = expires_at(session, now);
    let previous_ready = find_condition(&current.conditions, READY).cloned();

    let mut plan = Plan {
        pod: PodAction::Keep,
        events: Vec::new(),
        status: None,
        delete_session: false,
        recreate: None,
        invalid: None,
        requeue_after: Some(RESYNC),
    };

    // Status fields this controller owns, starting from what is there.
    let mut status = SessionStatus {
        phase: Some(phase),
        conditions: current.conditions.clone(),
        pod_name: current.pod_name.clone(),
        pod_ip: current.pod_ip.clone(),
        ready_at: current.ready_at.clone(),
        last_activity_at: current.last_activity_at.clone(),
        expires_at: Some(Time(expires)),
        observed_generation: generation,
        message: current.message.clone(),
    };
    let ready_condition = |ready: bool, reason: &str, message: &str| {
        next_condition(
            previous_ready.as_ref(),
            READY,
            ready,
            reason,
            message,
            generation,
            Time(now),
        )
    };
    let set_ready = |status: &mut SessionStatus, ready: bool, reason: &str, message: &str| {
        status.conditions.retain(|c| c.type_ != READY);
        status
            .conditions
            .push(ready_condition(ready, reason, message));
    };

    let pod = observed.pod.as_ref();

    if session.metadata.deletion_timestamp.is_some() {
        status.phase = Some(SessionPhase::Terminating);
        status.message = Some("the Session is being deleted".into());
        set_ready(
            &mut status,
            false,
            conditions::REASON_TERMINATING,
            "the Session is being deleted",
        );
        plan.requeue_after = None;
    } else if now >= expires {
        let message = format!(
            "the TTL of {}s passed at {}; the Session is deleted",
            session.spec.ttl_seconds, expires
        );
        if phase != SessionPhase::Expired {
            plan.events.push(SessionEvent::Expired);
        }
        status.phase = Some(SessionPhase::Expired);
        set_ready(&mut status, false, conditions::REASON_EXPIRED, &message);
        status.message = Some(message);
        plan.delete_session = true;
        plan.requeue_after = None;
    } else if let Err(invalid) = validate_session(&session.name_any(), &session.spec)
        .and_then(|()| build_pod(session, config).map(|_| ()))
    {
        let message = invalid.to_string();
        if phase != SessionPhase::Failed || current.message.as_deref() != Some(message.as_str()) {
            plan.events.push(SessionEvent::InvalidSpec {
                detail: message.clone(),
            });
        }
        status.phase = Some(SessionPhase::Failed);
        set_ready(
            &mut status,
            false,
            conditions::REASON_INVALID_SPEC,
            &message,
        );
        status.message = Some(message);
        plan.invalid = Some(invalid);
        plan.requeue_after = None;
    } else if session.spec.suspend || is_idle(session, now) {
        let idle = !session.spec.suspend;
        let (reason, message) = if idle {
            (
                conditions::REASON_IDLE,
                "suspended after idling; the next execution resumes it".to_string(),
            )
        } else {
            (
                conditions::REASON_SUSPENDED,
                "suspended by spec.suspend; set it to false to resume".to_string(),
            )
        };
        if let Some(pod) = pod.filter(|p| p.metadata.deletion_timestamp.is_none()) {
            plan.pod = PodAction::Delete { uid: pod.uid() };
        }
        if phase != SessionPhase::Suspended {
            plan.events.push(SessionEvent::Suspended { idle });
        }
        status.phase = Some(SessionPhase::Suspended);
        status.pod_name = None;
        status.pod_ip = None;
        set_ready(&mut status, false, reason, &message);
        status.message = Some(message);
        plan.requeue_after = Some(until(now, expires).min(RESYNC));
    } else {
        plan_running(session, pod, config, now, &mut plan, &mut status);
        let mut next = until(now, expires).min(plan.requeue_after.unwrap_or(RESYNC));
        if status.phase == Some(SessionPhase::Ready) {
            let mut probe = session.clone();
            probe.status = Some(status.clone());
            if let Some(deadline) = idle_deadline(&probe) {
                next = next.min(until(now, deadline));
            }
        }
        plan.requeue_after = Some(next);
    }

    if status != current {
        plan.status = Some(status);
    }
    plan
}

/// The Session should have a running Pod: create, replace or report on it.
fn plan_running(
    session: &Session,
    pod: Option<&Pod>,
    config: &SandboxConfig,
    now: Timestamp,
    plan: &mut Plan,
    status: &mut SessionStatus,
) {
    let current = session.status.clone().unwrap_or_default();
    let phase = session.phase();
    let generation = session.metadata.generation;
    let previous_ready = find_condition(&current.conditions, READY).cloned();
    let set_ready = |status: &mut SessionStatus, ready: bool, reason: &str, message: &str| {
        let condition = next_condition(
            previous_ready.as_ref(),
            READY,
            ready,
            reason,
            message,
            generation,
            Time(now),
        );
        status.conditions.retain(|c| c.type_ != READY);
        status.conditions.push(condition);
    };
    let name = pod_name(&session.name_any());
    // `pod_name` is what the next reconcile compares against to tell a lost Pod from one this
    // controller replaced on purpose, so it is cleared when the Pod is deleted here.
    let starting = |status: &mut SessionStatus, message: &str, pod_name: Option<String>| {
        status.phase = Some(SessionPhase::Pending);
        status.pod_name = pod_name;
        status.pod_ip = None;
        status.message = Some(message.to_string());
    };

    match pod {
        None => {
            // Validated in `plan`, so building cannot fail here.
            let Ok(built) = build_pod(session, config) else {
                return;
            };
            let claim = session
                .spec
                .workspace
                .persistent
                .then(|| Box::new(build_workspace_claim(session)));
            plan.pod = PodAction::Create {
                pod: Box::new(built),
                claim,
            };
            if phase == SessionPhase::Suspended {
                plan.events.push(SessionEvent::Resumed);
            } else if current.pod_name.is_some() {
                plan.events.push(SessionEvent::PodLost {
                    detail: format!("Pod {name} is gone; creating a new one"),
                });
                plan.recreate = Some(Recreate::Missing);
            } else {
                plan.events.push(SessionEvent::PodCreated);
            }
            let message = "creating the sandbox Pod";
            starting(status, message, Some(name.clone()));
            set_ready(status, false, conditions::REASON_POD_STARTING, message);
        }
        Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
            let message = "waiting for the previous Pod to terminate";
            starting(status, message, current.pod_name.clone());
            set_ready(status, false, conditions::REASON_POD_STARTING, message);
            plan.requeue_after = Some(TERMINATING_POLL);
        }
        Some(pod) if matches!(pod_phase(pod), "Failed" | "Succeeded") => {
            let why = pod
                .status
                .as_ref()
                .and_then(|s| s.reason.clone().or_else(|| s.message.clone()))
                .unwrap_or_else(|| pod_phase(pod).to_string());
            plan.pod = PodAction::Delete { uid: pod.uid() };
            plan.events.push(SessionEvent::PodLost {
                detail: format!("Pod {name} stopped ({why}); replacing it"),
            });
            plan.recreate = Some(Recreate::Failed);
            let message = format!("replacing the Pod, which stopped ({why})");
            starting(status, &message, None);
            set_ready(status, false, conditions::REASON_POD_STARTING, &message);
        }
        Some(pod) if pod_spec_hash_of(pod).is_some_and(|h| h != pod_spec_hash(&session.spec)) => {
            plan.pod = PodAction::Delete { uid: pod.uid() };
            plan.events.push(SessionEvent::SpecChanged);
            let message = "the spec changed; replacing the Pod";
            starting(status, message, None);
            set_ready(status, false, conditions::REASON_POD_STARTING, message);
        }
        Some(pod) => match pod_is_ready(pod) {
            Some(ready_since) => {
                if phase != SessionPhase::Ready {
                    plan.events.push(SessionEvent::Ready);
                }
                status.phase = Some(SessionPhase::Ready);
                status.pod_name = Some(name.clone());
                status.pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
                status.ready_at = Some(ready_since);
                status.message = None;
                set_ready(
                    status,
                    true,
                    conditions::REASON_POD_READY,
                    "the sandbox is ready",
                );
            }
            None => {
                let message = pod_waiting_message(pod)
                    .unwrap_or_else(|| "waiting for the sandbox Pod to become ready".into());
                starting(status, &message, Some(name.clone()));
                status.pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
                set_ready(status, false, conditions::REASON_POD_STARTING, &message);
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{SessionSpec, WorkspaceSpec};
    use k8s_openapi::{
        api::core::v1::{PodCondition, PodStatus},
        apimachinery::pkg::apis::meta::v1::Condition,
    };

    const T0: i64 = 1_700_000_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(T0 + secs).expect("valid")
    }

    fn session(f: impl FnOnce(&mut SessionSpec)) -> Session {
        let mut spec = SessionSpec {
            ttl_seconds: 3600,
            ..SessionSpec::default()
        };
        f(&mut spec);
        let mut s = Session::new("demo", spec);
        s.metadata.namespace = Some("ns".into());
        s.metadata.uid = Some("uid-1".into());
        s.metadata.generation = Some(1);
        s.metadata.creation_timestamp = Some(Time(at(0)));
        s
    }

    fn with_status(mut s: Session, f: impl FnOnce(&mut SessionStatus)) -> Session {
        let mut status = s.status.take().unwrap_or_default();
        f(&mut status);
        s.status = Some(status);
        s
    }

    /// The Session as the apiserver would hold it after a plan's status was written.
    fn applied(mut s: Session, plan: &Plan) -> Session {
        if let Some(status) = &plan.status {
            s.status = Some(status.clone());
        }
        s
    }

    fn ready_pod(s: &Session, since: i64) -> Pod {
        let mut pod = build_pod(s, &SandboxConfig::default()).expect("pod");
        pod.metadata.uid = Some("pod-uid".into());
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("10.0.0.7".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(at(since))),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        pod
    }

    fn observed(pod: Option<Pod>) -> Observed {
        Observed { pod }
    }

    fn plan_at(s: &Session, pod: Option<Pod>, secs: i64) -> Plan {
        plan(s, &observed(pod), &SandboxConfig::default(), at(secs))
    }

    fn ready_reason(plan: &Plan) -> Option<(String, String)> {
        let status = plan.status.as_ref()?;
        find_condition(&status.conditions, READY)
            .map(|c: &Condition| (c.status.clone(), c.reason.clone()))
    }

    #[test]
    fn a_new_session_gets_a_pod() {
        let s = session(|_| {});
        let p = plan_at(&s, None, 5);
        assert!(matches!(&p.pod, PodAction::Create { claim: None, .. }));
        assert_eq!(p.events, [SessionEvent::PodCreated]);
        let status = p.status.clone().expect("status");
        assert_eq!(status.phase, Some(SessionPhase::Pending));
        assert_eq!(status.pod_name.as_deref(), Some("demo-sandbox"));
        assert_eq!(status.expires_at, Some(Time(at(3600))));
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(
            ready_reason(&p),
            Some(("False".into(), "PodStarting".into()))
        );
        assert_eq!(p.recreate, None);
    }

    #[test]
    fn a_persistent_session_gets_a_claim_first() {
        let s = session(|spec| {
            spec.workspace = WorkspaceSpec {
                persistent: true,
                ..WorkspaceSpec::default()
            }
        });
        let p = plan_at(&s, None, 5);
        let PodAction::Create {
            claim: Some(claim), ..
        } = &p.pod
        else {
            panic!("expected a claim: {:?}", p.pod);
        };
        assert_eq!(claim.metadata.name.as_deref(), Some("demo-workspace"));
    }

    #[test]
    fn a_ready_pod_makes_the_session_ready_once() {
        let s = session(|_| {});
        let first = plan_at(&s, None, 1);
        let s = applied(s, &first);
        let p = plan_at(&s, Some(ready_pod(&s, 3)), 4);
        assert_eq!(p.pod, PodAction::Keep);
        assert_eq!(p.events, [SessionEvent::Ready]);
        let status = p.status.clone().expect("status");
        assert_eq!(status.phase, Some(SessionPhase::Ready));
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(status.ready_at, Some(Time(at(3))));
        assert_eq!(status.message, None);
        assert_eq!(ready_reason(&p), Some(("True".into(), "PodReady".into())));

        // Nothing changed: no Event, no status write.
        let s = applied(s, &p);
        let again = plan_at(&s, Some(ready_pod(&s, 3)), 60);
        assert!(again.events.is_empty());
        assert_eq!(again.status, None);
    }

    #[test]
    fn waiting_reasons_are_reported() {
        let s = session(|_| {});
        let mut pod = ready_pod(&s, 0);
        let status = pod.status.as_mut().expect("status");
        status.conditions = None;
        status.container_statuses = Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
            name: "sandbox".into(),
            state: Some(k8s_openapi::api::core::v1::ContainerState {
                waiting: Some(k8s_openapi::api::core::v1::ContainerStateWaiting {
                    reason: Some("ErrImageNeverPull".into()),
                    message: Some("image not present".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let p = plan_at(&s, Some(pod), 5);
        let status = p.status.expect("status");
        assert_eq!(status.phase, Some(SessionPhase::Pending));
        assert!(status
            .message
            .unwrap_or_default()
            .contains("ErrImageNeverPull"));
    }

    #[test]
    fn requeues_at_expiry_or_idle_deadline() {
        let s = session(|spec| spec.ttl_seconds = 100);
        let s = applied(s.clone(), &plan_at(&s, None, 0));
        let p = plan_at(&s, Some(ready_pod(&s, 1)), 40);
        assert_eq!(p.requeue_after, Some(Duration::from_secs(60)));

        let s = session(|spec| spec.idle_timeout_seconds = Some(30));
        let s = applied(s.clone(), &plan_at(&s, None, 0));
        let p = plan_at(&s, Some(ready_pod(&s, 10)), 20);
        assert_eq!(
            p.requeue_after,
            Some(Duration::from_secs(20)),
            "idle at 10 + 30"
        );
    }

    #[test]
    fn ttl_expiry_deletes_the_session() {
        let s = session(|spec| spec.ttl_seconds = 60);
        let s = with_status(s, |st| st.phase = Some(SessionPhase::Ready));
        let p = plan_at(&s, Some(ready_pod(&s, 1)), 60);
        assert!(p.delete_session);
        assert_eq!(p.events, [SessionEvent::Expired]);
        assert_eq!(p.pod, PodAction::Keep, "owner references collect the Pod");
        assert_eq!(p.status.expect("status").phase, Some(SessionPhase::Expired));
        assert_eq!(p.requeue_after, None);
    }

    #[test]
    fn suspend_deletes_the_pod_and_keeps_the_rest() {
        let s = session(|spec| spec.suspend = true);
        let s = with_status(s, |st| {
            st.phase = Some(SessionPhase::Ready);
            st.pod_name = Some("demo-sandbox".into());
        });
        let p = plan_at(&s, Some(ready_pod(&s, 1)), 10);
        assert_eq!(
            p.pod,
            PodAction::Delete {
                uid: Some("pod-uid".into())
            }
        );
        assert_eq!(p.events, [SessionEvent::Suspended { idle: false }]);
        let status = p.status.clone().expect("status");
        assert_eq!(status.phase, Some(SessionPhase::Suspended));
        assert_eq!(status.pod_name, None);
        assert_eq!(ready_reason(&p), Some(("False".into(), "Suspended".into())));

        // Resume: unsuspend → new Pod with a Resumed Event, not PodLost.
        let mut s = applied(s, &p);
        s.spec.suspend = false;
        let p = plan_at(&s, None, 20);
        assert!(matches!(p.pod, PodAction::Create { .. }));
        assert_eq!(p.events, [SessionEvent::Resumed]);
        assert_eq!(p.recreate, None);
    }

    #[test]
    fn idling_suspends_and_activity_resumes() {
        let s = session(|spec| spec.idle_timeout_seconds = Some(30));
        let s = applied(s.clone(), &plan_at(&s, None, 0));
        let s = applied(s.clone(), &plan_at(&s, Some(ready_pod(&s, 2)), 2));
        assert_eq!(s.phase(), SessionPhase::Ready);
        assert!(!is_idle(&s, at(31)));
        assert!(is_idle(&s, at(32)));

        let p = plan_at(&s, Some(ready_pod(&s, 2)), 40);
        assert_eq!(p.events, [SessionEvent::Suspended { idle: true }]);
        assert!(matches!(p.pod, PodAction::Delete { .. }));
        assert_eq!(ready_reason(&p), Some(("False".into(), "Idle".into())));

        // Still idle while nothing happens.
        let s = applied(s, &p);
        let p = plan_at(&s, None, 50);
        assert_eq!(p.pod, PodAction::Keep);
        assert!(p.events.is_empty());

        // Activity (RESUME_FIELD) resumes it.
        let s = with_status(s, |st| st.last_activity_at = Some(Time(at(55))));
        let p = plan_at(&s, None, 56);
        assert!(matches!(p.pod, PodAction::Create { .. }));
        assert_eq!(p.events, [SessionEvent::Resumed]);
        // The new Pod is not idled out while it starts, however long that takes.
        let s = applied(s, &p);
        assert!(!is_idle(&s, at(500)));
    }

    #[test]
    fn a_vanished_pod_is_recreated_and_reported() {
        let s = session(|_| {});
        let s = applied(s.clone(), &plan_at(&s, None, 0));
        let s = applied(s.clone(), &plan_at(&s, Some(ready_pod(&s, 1)), 1));
        let p = plan_at(&s, None, 30);
        assert!(matches!(p.pod, PodAction::Create { .. }));
        assert!(matches!(&p.events[..], [SessionEvent::PodLost { .. }]));
        assert_eq!(p.recreate, Some(Recreate::Missing));
        assert_eq!(p.status.expect("status").phase, Some(SessionPhase::Pending));
    }

    #[test]
    fn a_failed_pod_is_replaced_once() {
        let s = session(|_| {});
        let s = applied(s.clone(), &plan_at(&s, None, 0));
        let mut pod = ready_pod(&s, 1);
        if let Some(st) = pod.status.as_mut() {
            st.phase = Some("Failed".into());
            st.reason = Some("Evicted".into());
        }
        let p = plan_at(&s, Some(pod), 30);
        assert_eq!(
            p.pod,
            PodAction::Delete {
                uid: Some("pod-uid".into())
            }
        );
        assert_eq!(p.recreate, Some(Recreate::Failed));
        assert!(
            matches!(&p.events[..], [SessionEvent::PodLost { detail }] if detail.contains("Evicted"))
        );
        // Once it is gone, the replacement is not reported as lost a second time.
        let s = applied(s, &p);
        let p = plan_at(&s, None, 31);
        assert!(matches!(p.pod, PodAction::Create { .. }));
        assert_eq!(p.recreate, None);
        assert_eq!(p.events, [SessionEvent::PodCreated]);
    }

    #[test]
    fn a_spec_change_replaces_the_pod() {
        let s = session(|_| {});
        let pod = ready_pod(&s, 1);
        let mut changed = s.clone();
        changed.spec.image = Some("other:1".into());
        let p = plan_at(&changed, Some(pod.clone()), 5);
        assert!(matches!(p.pod, PodAction::Delete { .. }));
        assert_eq!(p.events, [SessionEvent::SpecChanged]);
        let mut ttl_only = s.clone();
        ttl_only.spec.ttl_seconds = 7200;
        assert_eq!(plan_at(&ttl_only, Some(pod), 5).pod, PodAction::Keep);
    }

    #[test]
    fn an_invalid_spec_fails_without_a_pod() {
        let s = session(|spec| spec.resources.memory = Some("lots".into()));
        let p = plan_at(&s, None, 5);
        assert_eq!(p.pod, PodAction::Keep);
        assert!(p.invalid.is_some());
        let status = p.status.clone().expect("status");
        assert_eq!(status.phase, Some(SessionPhase::Failed));
        assert!(status
            .message
            .unwrap_or_default()
            .contains("spec.resources.memory"));
        assert!(matches!(&p.events[..], [SessionEvent::InvalidSpec { .. }]));
        // The same failure again is not re-announced.
        let s = applied(s, &p);
        assert!(plan_at(&s, None, 6).events.is_empty());
    }

    #[test]
    fn a_terminating_pod_is_waited_for() {
        let s = session(|_| {});
        let mut pod = ready_pod(&s, 1);
        pod.metadata.deletion_timestamp = Some(Time(at(2)));
        let p = plan_at(&s, Some(pod), 3);
        assert_eq!(p.pod, PodAction::Keep);
        assert_eq!(p.requeue_after, Some(TERMINATING_POLL));
    }
}
