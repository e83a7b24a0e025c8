//! Pure decisions: given a Session, what was observed, and the time, what should happen.

use std::{collections::BTreeMap, time::Duration};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::core::v1::{PersistentVolumeClaim, Pod},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::ResourceExt;

use crate::crd::{
    conditions::{self, READY},
    find_condition, next_condition,
    validate::ValidationError,
    IdleLevel, Session, SessionPhase, SessionStatus,
};
use crate::layout::{pod_name, RUNNER_PATH};
use crate::operator::config::SandboxConfig;
use crate::operator::execution::pending::Busy;
use crate::operator::reconciler::until;

use super::{
    build::build_workspace_claim,
    desired::DesiredPod,
    observe::Observed,
    pod_state::{
        pod_state, requests_match, resize_pending, sandbox_requests, PodState, Requests,
        RunnerAnswer,
    },
};
use crate::operator::config::RUNNER_DELIVERY_VALUE;

/// How often a Session is looked at when nothing happens.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How soon to look again while an old Pod is still terminating.
pub const TERMINATING_POLL: Duration = Duration::from_secs(2);
/// How soon to look again while running Executions hold back a sleep, an expiry or a new Pod
/// (a finished run also records activity, which brings the Session back sooner).
pub const BUSY_POLL: Duration = Duration::from_secs(5);
/// A safety recheck while the kubelet applies a wake's resize (its Pod status update brings
/// the Session back first).
pub const WAKE_POLL: Duration = Duration::from_secs(1);

/// A transition worth a Kubernetes Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// A sandbox Pod was created for the first time.
    PodCreated,
    /// A warm Pod of a SessionPool was adopted.
    Adopted {
        /// The Pod.
        pod: String,
        /// The pool it came from.
        pool: String,
    },
    /// The Pod became ready.
    Ready,
    /// The Pod was deleted because of `spec.suspend` (`idle: false`) or idling (`idle: true`,
    /// deep sleep: Event `DeepSlept`).
    Suspended {
        /// Suspended for idling rather than by `spec.suspend`.
        idle: bool,
    },
    /// Asleep: the Pod's requests are lowered to these (its processes keep running).
    Slept {
        /// The sleep requests.
        requests: Requests,
    },
    /// Awake again: the kubelet applied the restored requests (or said it cannot yet, `detail`).
    Woke {
        /// Why the requests are not restored yet, if they are not.
        detail: Option<String>,
    },
    /// The spec changed, and the new Pod waits for the running executions.
    WaitingForExecutions {
        /// How many run.
        running: usize,
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
    /// The operator may not run sandboxes in the Session's namespace (a Warning).
    NamespaceNotEnabled {
        /// What was refused, and how to enable the namespace.
        detail: String,
    },
    /// The sandbox has no runner (a Warning): its runner volume is empty.
    RunnerMissing {
        /// What the runtime said, and the chart value to check.
        detail: String,
    },
    /// Labels of the running Pod were set to follow the spec (`spec.network.egress`).
    PodRelabeled {
        /// The labels set.
        labels: BTreeMap<String, String>,
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
    /// Set these labels on the running Pod, which keeps running: this is how an egress change
    /// reaches it. A newer Pod of the same name, if any, was built with the same labels.
    Relabel {
        /// The labels to set.
        labels: BTreeMap<String, String>,
    },
    /// Resize the sandbox container's requests in place (the Pod's `resize` subresource):
    /// down to sleep, back up to wake. Limits never change, and nothing restarts.
    Resize {
        /// The CPU and memory requests to set.
        requests: Requests,
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

/// How idle the Session is now: asleep after `sleepAfterSeconds`, in deep sleep after
/// `idleTimeoutSeconds`, both counted from the later of the last activity and the moment its
/// Pod became ready. Never while an Execution of it runs or waits to (`busy`). Only a Session
/// that was Ready (or already sleeps) can idle: a Pod that is still starting does not, and a
/// Session resumed from `spec.suspend` starts a fresh idle clock once ready.
pub fn idle_level(session: &Session, busy: Busy, now: Timestamp) -> IdleLevel {
    let Some(status) = session.status.as_ref() else {
        return IdleLevel::Awake;
    };
    let idle_suspended = session.phase() == SessionPhase::Suspended
        && find_condition(&status.conditions, READY)
            .is_some_and(|c| c.reason == conditions::REASON_IDLE);
    let may_idle = matches!(
        session.phase(),
        SessionPhase::Ready | SessionPhase::Sleeping
    ) || idle_suspended;
    if !may_idle || busy.in_use() {
        return IdleLevel::Awake;
    }
    // A wake in progress is not undone by the sleep clock (the kubelet may take longer to
    // apply the resize than a short sleepAfterSeconds): it finishes, then the clock counts
    // from the activity that woke it. Deep sleep still applies.
    let waking = session.phase() == SessionPhase::Sleeping
        && find_condition(&status.conditions, READY)
            .is_some_and(|c| c.reason == conditions::REASON_WAKING);
    match session.spec.idle_level(status, now) {
        IdleLevel::Sleep if waking => IdleLevel::Awake,
        level => level,
    }
}

/// True when the Session is already Ready (or asleep) on its Pod (the one its status names,
/// which is the one observed): its runner answered once, and is not pinged again while the
/// Pod runs.
pub fn answered_before(session: &Session) -> bool {
    let has_pod = session
        .status
        .as_ref()
        .is_some_and(|s| s.pod_name.is_some());
    matches!(
        session.phase(),
        SessionPhase::Ready | SessionPhase::Sleeping
    ) && has_pod
}

/// True when the Session should have a running Pod now: it is not being deleted, has not
/// expired, and is neither suspended nor in deep sleep. Only then may it adopt a warm Pod.
pub fn wants_pod(session: &Session, busy: Busy, now: Timestamp) -> bool {
    session.metadata.deletion_timestamp.is_none()
        && now < expires_at(session, now)
        && !session.spec.suspend
        && idle_level(session, busy, now) != IdleLevel::DeepSleep
}

/// How soon to look again after a round of pings the runner did not answer.
pub const SILENT_RUNNER_RETRY: Duration = Duration::from_secs(1);

/// Decides what a reconcile does. Pure: `now` is passed in. The spec is validated and the Pod
/// built here, once; every step after that reads the one [`DesiredPod`].
pub fn plan(
    session: &Session,
    observed: &Observed,
    config: &SandboxConfig,
    now: Timestamp,
) -> Plan {
    plan_with(session, observed, DesiredPod::build(session, config), now)
}

/// How long a Session in a namespace that is not enabled waits before the operator looks again
/// (enabling it is a RoleBinding, which the operator does not watch).
pub const NOT_ENABLED_RETRY: Duration = Duration::from_secs(15);

/// The apiserver refused the operator `action` in the Session's namespace (403): it is not
/// enabled for sandboxes. Pending, Ready False with reason `NamespaceNotEnabled` and the command
/// that enables it; a Warning Event when that becomes the reason; look again soon.
pub fn namespace_not_enabled(
    session: &Session,
    action: &str,
    config: &SandboxConfig,
    now: Timestamp,
) -> Plan {
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let current = session.status.clone().unwrap_or_default();
    let mut draft = Draft::new(session, &current, now);
    let namespace = session.namespace().unwrap_or_default();
    let message = format!(
        "namespace {namespace} is not enabled for sandboxes: the operator may not {action} in it. Enable it with: {}",
        config.enablement.command(&namespace)
    );
    let reported = find_condition(&current.conditions, READY).map(|c| c.reason.as_str());
    if reported != Some(conditions::REASON_NAMESPACE_NOT_ENABLED) {
        draft.event(SessionEvent::NamespaceNotEnabled {
            detail: message.clone(),
        });
    }
    draft.not_ready(
        SessionPhase::Pending,
        conditions::REASON_NAMESPACE_NOT_ENABLED,
        message,
    );
    draft.status.pod_name = None;
    draft.status.pod_ip = None;
    draft.plan.requeue_after = Some(NOT_ENABLED_RETRY);
    draft.finish(&current)
}

/// [`plan`] once the Pod is built. Without the [`SandboxConfig`] no step can build another.
fn plan_with(
    session: &Session,
    observed: &Observed,
    desired: Result<DesiredPod, ValidationError>,
    now: Timestamp,
) -> Plan {
    // Times in the status have second precision; keep `now` the same so comparisons hold.
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let current = session.status.clone().unwrap_or_default();
    let mut draft = Draft::new(session, &current, now);
    draft.runner = observed.runner.clone();
    if let (Some(pool), Some(pod)) = (&observed.adopted_from, &observed.pod) {
        draft.event(SessionEvent::Adopted {
            pod: pod.name_any(),
            pool: pool.clone(),
        });
    }
    if let Some(claim) = &observed.adopted_claim {
        draft.status.workspace_claim = Some(claim.clone());
    }
    let pod = observed.pod.as_ref();
    let busy = observed.busy;
    match stage(session, desired, busy, draft.expires, now) {
        Stage::Terminating => terminating(&mut draft),
        Stage::Expired => expired(session, busy, &mut draft),
        Stage::Invalid(invalid) => invalid_spec(session, invalid, &mut draft),
        Stage::Suspended { idle } => suspended(session, pod, idle, &mut draft),
        Stage::Running { desired, asleep } => {
            running(session, pod, desired, asleep, busy, &mut draft)
        }
    }
    draft.finish(&current)
}

/// Where a Session is in its lifecycle; each stage has its own step.
#[derive(Clone, Debug, PartialEq)]
enum Stage {
    /// The Session is being deleted.
    Terminating,
    /// The TTL passed.
    Expired,
    /// The spec cannot be turned into a Pod.
    Invalid(ValidationError),
    /// The Pod must go: by `spec.suspend` (`idle: false`) or for deep sleep (`idle: true`).
    Suspended { idle: bool },
    /// The Session should have this Pod running: awake, or asleep on lowered requests.
    Running { desired: DesiredPod, asleep: bool },
}

/// The first stage that applies wins: a Session that is deleted or expired is not reported
/// invalid, and `spec.suspend` is the reason given even when the Session is idle too.
fn stage(
    session: &Session,
    desired: Result<DesiredPod, ValidationError>,
    busy: Busy,
    expires: Timestamp,
    now: Timestamp,
) -> Stage {
    if session.metadata.deletion_timestamp.is_some() {
        return Stage::Terminating;
    }
    if now >= expires {
        return Stage::Expired;
    }
    match desired {
        Err(invalid) => Stage::Invalid(invalid),
        Ok(_) if session.spec.suspend => Stage::Suspended { idle: false },
        Ok(desired) => match idle_level(session, busy, now) {
            IdleLevel::DeepSleep => Stage::Suspended { idle: true },
            level => Stage::Running {
                desired,
                asleep: level == IdleLevel::Sleep,
            },
        },
    }
}

/// A plan being worked out: the side effects so far, and the status they lead to.
struct Draft {
    plan: Plan,
    runner: RunnerAnswer,
    status: SessionStatus,
    previous_ready: Option<Condition>,
    generation: Option<i64>,
    now: Timestamp,
    expires: Timestamp,
}

impl Draft {
    /// Keep the Pod, look again after [`RESYNC`], and keep the status this controller owns as
    /// it is, apart from the expiry and the generation it was computed for.
    fn new(session: &Session, current: &SessionStatus, now: Timestamp) -> Self {
        let expires = expires_at(session, now);
        let generation = session.metadata.generation;
        let status = SessionStatus {
            phase: Some(session.phase()),
            conditions: current.conditions.clone(),
            pod_name: current.pod_name.clone(),
            pod_ip: current.pod_ip.clone(),
            ready_at: current.ready_at.clone(),
            last_activity_at: current.last_activity_at.clone(),
            expires_at: Some(Time(expires)),
            workspace_claim: current.workspace_claim.clone(),
            observed_generation: generation,
            message: current.message.clone(),
        };
        let plan = Plan {
            pod: PodAction::Keep,
            events: Vec::new(),
            status: None,
            delete_session: false,
            recreate: None,
            invalid: None,
            requeue_after: Some(RESYNC),
        };
        Self {
            plan,
            runner: RunnerAnswer::NotAsked,
            status,
            previous_ready: find_condition(&current.conditions, READY).cloned(),
            generation,
            now,
            expires,
        }
    }

    /// The plan, with the status only when it differs from `current` (no needless write).
    fn finish(mut self, current: &SessionStatus) -> Plan {
        if self.status != *current {
            self.plan.status = Some(self.status);
        }
        self.plan
    }

    fn event(&mut self, event: SessionEvent) {
        self.plan.events.push(event);
    }

    fn set_ready(&mut self, ready: bool, reason: &str, message: &str) {
        let condition = next_condition(
            self.previous_ready.as_ref(),
            READY,
            ready,
            reason,
            message,
            self.generation,
            Time(self.now),
        );
        self.status.conditions.retain(|c| c.type_ != READY);
        self.status.conditions.push(condition);
    }

    /// A phase without a Pod to use, for `reason`, explained in the status message.
    fn not_ready(&mut self, phase: SessionPhase, reason: &str, message: String) {
        self.status.phase = Some(phase);
        self.set_ready(false, reason, &message);
        self.status.message = Some(message);
    }

    /// Pending while a Pod is created, replaced or starts. `pod_name` is what the next
    /// reconcile compares against to tell a lost Pod from one this controller replaced on
    /// purpose, so it is `None` when the Pod is deleted here.
    fn starting(&mut self, message: &str, pod_name: Option<String>) {
        self.status.phase = Some(SessionPhase::Pending);
        self.status.pod_name = pod_name;
        self.status.pod_ip = None;
        self.status.message = Some(message.to_string());
        self.set_ready(false, conditions::REASON_POD_STARTING, message);
    }
}

/// Being deleted: say so; the garbage collector does the rest.
fn terminating(draft: &mut Draft) {
    draft.not_ready(
        SessionPhase::Terminating,
        conditions::REASON_TERMINATING,
        "the Session is being deleted".into(),
    );
    draft.plan.requeue_after = None;
}

/// The TTL passed: delete the Session. Owner references take its Pod and claim with it. A
/// Session with running Executions keeps its Pod until they finish (each has a deadline, so
/// this is bounded by the longest timeout); no new one starts in an Expired Session.
fn expired(session: &Session, busy: Busy, draft: &mut Draft) {
    if session.phase() != SessionPhase::Expired {
        draft.event(SessionEvent::Expired);
    }
    if busy.running() {
        let message = format!(
            "the TTL of {}s passed at {}; the Session is deleted once its running executions finish ({} running)",
            session.spec.ttl_seconds, draft.expires, busy.running
        );
        draft.not_ready(SessionPhase::Expired, conditions::REASON_EXPIRED, message);
        draft.plan.requeue_after = Some(BUSY_POLL);
        return;
    }
    let message = format!(
        "the TTL of {}s passed at {}; the Session is deleted",
        session.spec.ttl_seconds, draft.expires
    );
    draft.not_ready(SessionPhase::Expired, conditions::REASON_EXPIRED, message);
    draft.plan.delete_session = true;
    draft.plan.requeue_after = None;
}

/// The spec cannot become a Pod: fail until it changes, announcing each new reason once.
fn invalid_spec(session: &Session, invalid: ValidationError, draft: &mut Draft) {
    let message = invalid.to_string();
    let reported = session.status.as_ref().and_then(|s| s.message.as_deref());
    if session.phase() != SessionPhase::Failed || reported != Some(message.as_str()) {
        draft.event(SessionEvent::InvalidSpec {
            detail: message.clone(),
        });
    }
    draft.not_ready(
        SessionPhase::Failed,
        conditions::REASON_INVALID_SPEC,
        message,
    );
    draft.plan.invalid = Some(invalid);
    draft.plan.requeue_after = None;
}

/// Suspended: delete the Pod unless it is already going, keep the workspace, and look again
/// by the expiry at the latest.
fn suspended(session: &Session, pod: Option<&Pod>, idle: bool, draft: &mut Draft) {
    let (reason, message) = if idle {
        (
            conditions::REASON_IDLE,
            "deep sleep after idling: Pod deleted, workspace kept; the next request resumes it",
        )
    } else {
        (
            conditions::REASON_SUSPENDED,
            "suspended by spec.suspend; set it to false to resume",
        )
    };
    if let Some(pod) = pod.filter(|p| p.metadata.deletion_timestamp.is_none()) {
        draft.plan.pod = PodAction::Delete { uid: pod.uid() };
    }
    if session.phase() != SessionPhase::Suspended {
        draft.event(SessionEvent::Suspended { idle });
    }
    draft.not_ready(SessionPhase::Suspended, reason, message.to_string());
    draft.status.pod_name = None;
    draft.status.pod_ip = None;
    draft.plan.requeue_after = Some(until(draft.now, draft.expires).min(RESYNC));
}

/// The Session should have a running Pod: create, replace or report on it; put it to sleep
/// or wake it.
fn running(
    session: &Session,
    pod: Option<&Pod>,
    desired: DesiredPod,
    asleep: bool,
    busy: Busy,
    draft: &mut Draft,
) {
    let name = pod.map_or_else(|| pod_name(&session.name_any()), |p| p.name_any());
    let before = answered_before(session);
    match pod_state(pod, &desired, &draft.runner, before) {
        PodState::Missing => create_pod(session, desired, draft),
        PodState::Terminating => {
            let recorded = session.status.as_ref().and_then(|s| s.pod_name.clone());
            draft.starting("waiting for the previous Pod to terminate", recorded);
            draft.plan.requeue_after = Some(TERMINATING_POLL);
        }
        PodState::Stopped { uid, why } => {
            draft.plan.pod = PodAction::Delete { uid };
            draft.event(SessionEvent::PodLost {
                detail: format!("Pod {name} stopped ({why}); replacing it"),
            });
            draft.plan.recreate = Some(Recreate::Failed);
            draft.starting(&format!("replacing the Pod, which stopped ({why})"), None);
        }
        PodState::Outdated { .. } if busy.running() => wait_for_executions(&name, busy, draft),
        PodState::Outdated { uid } => {
            draft.plan.pod = PodAction::Delete { uid };
            draft.event(SessionEvent::SpecChanged);
            draft.starting("the spec changed; replacing the Pod", None);
        }
        PodState::RunnerMissing { detail } => runner_missing(session, &name, &detail, draft),
        PodState::Ready { ip, .. } => {
            relabel(pod, &desired, draft);
            match pod {
                Some(pod) if asleep => sleep(session, pod, &desired, &name, ip, draft),
                Some(pod) => wake_or_ready(session, pod, &desired, &name, ip, draft),
                None => ready(session, &name, ip, None, draft),
            }
        }
        PodState::Starting { waiting, ip } => {
            relabel(pod, &desired, draft);
            let message = waiting.unwrap_or_else(|| "waiting for the sandbox Pod to start".into());
            draft.starting(&message, Some(name));
            draft.status.pod_ip = ip;
            if matches!(draft.runner, RunnerAnswer::Silent { .. }) {
                draft.plan.requeue_after = Some(SILENT_RUNNER_RETRY);
            }
        }
    }
    draft.plan.requeue_after = Some(running_requeue(session, busy, draft));
}

/// The spec changed and needs a new Pod, but Executions run in this one: keep it until they
/// finish. New executions wait (the Session is not Ready) and run on the new Pod.
fn wait_for_executions(pod: &str, busy: Busy, draft: &mut Draft) {
    let reported = draft.previous_ready.as_ref().map(|c| c.reason.as_str());
    if reported != Some(conditions::REASON_WAITING_FOR_EXECUTIONS) {
        draft.event(SessionEvent::WaitingForExecutions {
            running: busy.running,
        });
    }
    let message = format!(
        "the spec changed: the Pod is replaced once its running executions finish ({} running); new executions wait for the new Pod",
        busy.running
    );
    draft.not_ready(
        SessionPhase::Pending,
        conditions::REASON_WAITING_FOR_EXECUTIONS,
        message,
    );
    draft.status.pod_name = Some(pod.to_string());
    draft.plan.requeue_after = Some(BUSY_POLL);
}

/// Plans a resize of `pod`'s requests to `target` unless its spec already asks for them (or
/// another Pod action is planned); true when it already asks for them.
fn resize_towards(pod: &Pod, target: &Requests, draft: &mut Draft) -> bool {
    let (wanted, _) = sandbox_requests(pod);
    let asked = requests_match(&wanted, target);
    if !asked && draft.plan.pod == PodAction::Keep {
        draft.plan.pod = PodAction::Resize {
            requests: target.clone(),
        };
    }
    asked
}

/// Asleep: the Pod keeps running with its requests lowered to the sleep values (limits
/// unchanged). Not Ready: the next request records activity, which wakes it.
fn sleep(
    session: &Session,
    pod: &Pod,
    desired: &DesiredPod,
    name: &str,
    ip: Option<String>,
    draft: &mut Draft,
) {
    let target = desired.sleep_requests();
    resize_towards(pod, target, draft);
    if session.phase() != SessionPhase::Sleeping {
        draft.event(SessionEvent::Slept {
            requests: target.clone(),
        });
    }
    let lowered = target != desired.awake_requests();
    let message = if lowered {
        format!(
            "asleep after {}s without activity: requests lowered to {} (limits unchanged, processes kept); the next request wakes it",
            session.spec.sleep_after_seconds.unwrap_or_default(),
            describe(target)
        )
    } else {
        format!(
            "asleep after {}s without activity, requests kept ({}): a Pod whose requests equal its limits cannot lower them in place; the next request wakes it",
            session.spec.sleep_after_seconds.unwrap_or_default(),
            describe(target)
        )
    };
    draft.not_ready(SessionPhase::Sleeping, conditions::REASON_SLEEPING, message);
    draft.status.pod_name = Some(name.to_string());
    if ip.is_some() {
        draft.status.pod_ip = ip;
    }
}

/// Awake: the Pod gets its awake requests back. A sleeping Session is Ready again as soon as
/// the apiserver has accepted the resize (the Pod's spec asks for the awake requests): its
/// limits never changed, so nothing an execution can use waits for the kubelet, which applies
/// the requests at its next sync. A resize the kubelet cannot apply now (`PodResizePending`,
/// the node filled up meanwhile) is said in the message and the `Woke` Event: the Session runs
/// on its sleep requests until the node has room.
fn wake_or_ready(
    session: &Session,
    pod: &Pod,
    desired: &DesiredPod,
    name: &str,
    ip: Option<String>,
    draft: &mut Draft,
) {
    let awake = desired.awake_requests();
    let asked = resize_towards(pod, awake, draft);
    if session.phase() != SessionPhase::Sleeping {
        return ready(session, name, ip, None, draft);
    }
    if asked {
        let pending = resize_pending(pod);
        return ready(
            session,
            name,
            ip,
            Some(SessionEvent::Woke { detail: pending }),
            draft,
        );
    }
    draft.not_ready(
        SessionPhase::Sleeping,
        conditions::REASON_WAKING,
        format!(
            "waking: restoring the requests to {}; Ready once the apiserver accepts the resize",
            describe(awake)
        ),
    );
    draft.status.pod_name = Some(name.to_string());
    if ip.is_some() {
        draft.status.pod_ip = ip;
    }
    draft.plan.requeue_after = Some(WAKE_POLL);
}

fn describe(requests: &Requests) -> String {
    requests
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// No Pod: create the desired one (after its claim, for a persistent workspace). A Pod name
/// in the status means this controller had a Pod it did not delete: that one was lost.
fn create_pod(session: &Session, desired: DesiredPod, draft: &mut Draft) {
    let name = pod_name(&session.name_any());
    let claim = session
        .spec
        .workspace
        .persistent
        .then(|| Box::new(build_workspace_claim(session)));
    draft.plan.pod = PodAction::Create {
        pod: desired.into_pod(),
        claim,
    };
    let had_pod = session
        .status
        .as_ref()
        .is_some_and(|s| s.pod_name.is_some());
    if session.phase() == SessionPhase::Suspended {
        draft.event(SessionEvent::Resumed);
    } else if had_pod {
        draft.event(SessionEvent::PodLost {
            detail: format!("Pod {name} is gone; creating a new one"),
        });
        draft.plan.recreate = Some(Recreate::Missing);
    } else {
        draft.event(SessionEvent::PodCreated);
    }
    draft.starting("creating the sandbox Pod", Some(name));
}

/// A Pod kept running gets back the labels it should have: an egress change is a label patch,
/// never a new Pod.
fn relabel(pod: Option<&Pod>, desired: &DesiredPod, draft: &mut Draft) {
    let Some(pod) = pod else {
        return;
    };
    let labels = desired.labels_to_restore(pod);
    if labels.is_empty() {
        return;
    }
    draft.event(SessionEvent::PodRelabeled {
        labels: labels.clone(),
    });
    draft.plan.pod = PodAction::Relabel { labels };
}

/// The runner answered, and the Session is Ready from that moment. `woke` is the Event of a
/// Session that was asleep on this Pod; `readyAt` is the moment it is Ready again, so its
/// idle clock starts after the wake, however long the kubelet took.
fn ready(
    session: &Session,
    pod: &str,
    ip: Option<String>,
    woke: Option<SessionEvent>,
    draft: &mut Draft,
) {
    let newly = session.phase() != SessionPhase::Ready;
    let message = match &woke {
        Some(SessionEvent::Woke {
            detail: Some(detail),
        }) => Some(format!(
            "awake on its sleep requests: the kubelet has not applied the resize yet ({detail})"
        )),
        _ => None,
    };
    match woke {
        Some(event) => draft.event(event),
        None if newly => draft.event(SessionEvent::Ready),
        None => {}
    }
    let now = draft.now;
    let status = &mut draft.status;
    status.phase = Some(SessionPhase::Ready);
    status.pod_name = Some(pod.to_string());
    // The kubelet may not have reported the Pod's IP yet when the runner answers: keep the
    // one known until it does.
    if ip.is_some() {
        status.pod_ip = ip;
    }
    if newly || status.ready_at.is_none() {
        status.ready_at = Some(Time(now));
    }
    status.message = message;
    draft.set_ready(
        true,
        conditions::REASON_POD_READY,
        "the sandbox's runner answered",
    );
}

/// The sandbox cannot start its runner: Failed until the Pod is replaced (a spec change) or
/// the operator is configured otherwise. The Pod is kept, so that its status can be read.
fn runner_missing(session: &Session, pod: &str, detail: &str, draft: &mut Draft) {
    let message = format!(
        "the sandbox has no runner at {RUNNER_PATH}: its runner volume is empty. Check the chart value {RUNNER_DELIVERY_VALUE} (imageVolume needs a cluster with image volumes; initContainer works everywhere) and runnerImage ({detail})"
    );
    let reported = session.status.as_ref().and_then(|s| s.message.as_deref());
    if session.phase() != SessionPhase::Failed || reported != Some(message.as_str()) {
        draft.event(SessionEvent::RunnerMissing {
            detail: message.clone(),
        });
    }
    draft.not_ready(
        SessionPhase::Failed,
        conditions::REASON_RUNNER_MISSING,
        message,
    );
    draft.status.pod_name = Some(pod.to_string());
    draft.status.pod_ip = None;
}

/// While running, look again at the expiry, at the next idle deadline once Ready or asleep,
/// soon while Executions hold back an idle level already reached, or sooner when a step asked
/// to.
fn running_requeue(session: &Session, busy: Busy, draft: &Draft) -> Duration {
    let asked = draft.plan.requeue_after.unwrap_or(RESYNC);
    let mut next = until(draft.now, draft.expires).min(asked);
    if matches!(
        draft.status.phase,
        Some(SessionPhase::Ready | SessionPhase::Sleeping)
    ) {
        if let Some(deadline) = session.spec.next_idle_deadline(&draft.status, draft.now) {
            next = next.min(until(draft.now, deadline));
        }
        let held_back = session.spec.idle_level(&draft.status, draft.now) != IdleLevel::Awake
            && draft.status.phase == Some(SessionPhase::Ready);
        if busy.in_use() && held_back {
            next = next.min(BUSY_POLL);
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{labels, EgressPolicy, SessionSpec, WorkspaceSpec};
    use crate::operator::session::build::build_pod;
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

    /// The Pod, and a runner that answers exactly when the kubelet calls the Pod ready (as
    /// in most tests here; readiness from the runner alone is tested on its own).
    fn observed(pod: Option<Pod>) -> Observed {
        let kubelet_ready = pod
            .as_ref()
            .and_then(|p| p.status.as_ref()?.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let runner = if kubelet_ready {
            RunnerAnswer::Answered
        } else {
            RunnerAnswer::NotAsked
        };
        Observed {
            pod,
            runner,
            busy: Busy::IDLE,
            ..Observed::default()
        }
    }

    fn plan_at(s: &Session, pod: Option<Pod>, secs: i64) -> Plan {
        plan(s, &observed(pod), &SandboxConfig::default(), at(secs))
    }

    fn plan_busy(s: &Session, pod: Option<Pod>, busy: Busy, secs: i64) -> Plan {
        let observed = Observed {
            busy,
            ..observed(pod)
        };
        plan(s, &observed, &SandboxConfig::default(), at(secs))
    }

    fn running(n: usize) -> Busy {
        Busy {
            running: n,
            ..Busy::IDLE
        }
    }

    fn requests(cpu: &str, memory: &str) -> Requests {
        Requests::from([
            ("cpu".to_string(), cpu.to_string()),
            ("memory".to_string(), memory.to_string()),
        ])
    }

    /// The Pod after a resize to `wanted`, with the kubelet reporting `applied`.
    fn resized(mut pod: Pod, wanted: &Requests, applied: &Requests) -> Pod {
        let quantities = |r: &Requests| {
            r.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.clone()),
                    )
                })
                .collect::<BTreeMap<_, _>>()
        };
        if let Some(spec) = pod.spec.as_mut() {
            let container = spec
                .containers
                .iter_mut()
                .find(|c| c.name == "sandbox")
                .expect("sandbox container");
            let resources = container.resources.get_or_insert_with(Default::default);
            resources.requests = Some(quantities(wanted));
        }
        let status = pod.status.get_or_insert_with(Default::default);
        status.container_statuses = Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
            name: "sandbox".into(),
            resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                requests: Some(quantities(applied)),
                ..Default::default()
            }),
            state: Some(k8s_openapi::api::core::v1::ContainerState {
                running: Some(Default::default()),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        pod
    }

    /// A Session Ready since 2 s with sleep after 10 s and deep sleep after 60 s, and its Pod.
    fn sleepy() -> (Session, Pod) {
        let s = session(|spec| {
            spec.sleep_after_seconds = Some(10);
            spec.idle_timeout_seconds = Some(60);
        });
        let s = applied(s.clone(), &plan_at(&s, None, 0));
        let pod = ready_pod(&s, 2);
        let s = applied(s.clone(), &plan_at(&s, Some(pod.clone()), 2));
        assert_eq!(s.phase(), SessionPhase::Ready);
        (s, pod)
    }

    /// Default config: limits 1 CPU and 512Mi, ratio 0.1; sleep values 10m and 16Mi.
    fn awake() -> Requests {
        requests("100m", "53687092")
    }

    fn asleep() -> Requests {
        requests("10m", "16Mi")
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
    fn the_pod_is_built_once_and_that_pod_is_created() {
        let s = session(|_| {});
        // A runner image no default has marks this Pod as the one built here.
        let config = SandboxConfig {
            runner_image: "marked/runner:1".into(),
            ..SandboxConfig::default()
        };
        let desired = DesiredPod::build(&s, &config).expect("valid");
        // `plan_with` gets no config, so it cannot build a Pod of its own.
        let p = plan_with(&s, &observed(None), Ok(desired.clone()), at(5));
        let PodAction::Create { pod, .. } = p.pod else {
            panic!("expected a create: {:?}", p.pod);
        };
        assert_eq!(pod, desired.into_pod());

        let p = plan_at(&s, None, 5);
        let built = DesiredPod::build(&s, &SandboxConfig::default()).expect("valid");
        assert_eq!(
            p.pod,
            PodAction::Create {
                pod: built.into_pod(),
                claim: None
            }
        );
    }

    #[test]
    fn the_first_stage_that_applies_wins() {
        let invalid = ValidationError {
            field: "spec.image".into(),
            message: "must not be empty".into(),
        };
        let stage_at = |s: &Session, secs| {
            let desired = DesiredPod::build(s, &SandboxConfig::default());
            stage(s, desired, Busy::IDLE, expires_at(s, at(secs)), at(secs))
        };
        let mut s = session(|spec| {
            spec.ttl_seconds = 60;
            spec.image = Some(String::new());
            spec.suspend = true;
            spec.idle_timeout_seconds = Some(1);
        });
        let s_ready = with_status(s.clone(), |st| {
            st.phase = Some(SessionPhase::Ready);
            st.ready_at = Some(Time(at(0)));
        });
        assert_eq!(stage_at(&s_ready, 30), Stage::Invalid(invalid.clone()));
        assert_eq!(stage_at(&s_ready, 60), Stage::Expired);
        s.metadata.deletion_timestamp = Some(Time(at(1)));
        assert_eq!(stage_at(&s, 60), Stage::Terminating);

        let mut idle_too = s_ready;
        idle_too.spec.image = None;
        assert_eq!(
            stage_at(&idle_too, 30),
            Stage::Suspended { idle: false },
            "spec.suspend is the reason given"
        );
        idle_too.spec.suspend = false;
        assert_eq!(stage_at(&idle_too, 30), Stage::Suspended { idle: true });
        idle_too.spec.idle_timeout_seconds = None;
        assert!(matches!(
            stage_at(&idle_too, 30),
            Stage::Running { asleep: false, .. }
        ));
        idle_too.spec.sleep_after_seconds = Some(1);
        assert!(matches!(
            stage_at(&idle_too, 30),
            Stage::Running { asleep: true, .. }
        ));
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
        assert_eq!(
            status.ready_at,
            Some(Time(at(4))),
            "when the runner answered"
        );
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
            Some(Duration::from_secs(30)),
            "idle at 20 (the runner answered) + 30"
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
        assert_eq!(idle_level(&s, Busy::IDLE, at(31)), IdleLevel::Awake);
        assert_eq!(idle_level(&s, Busy::IDLE, at(32)), IdleLevel::DeepSleep);

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
        assert_eq!(idle_level(&s, Busy::IDLE, at(500)), IdleLevel::Awake);
    }

    #[test]
    fn sleep_lowers_the_requests_in_place_and_keeps_the_pod() {
        let (s, pod) = sleepy();
        let before = plan_at(&s, Some(pod.clone()), 11);
        assert_eq!(before.pod, PodAction::Keep);
        assert_eq!(
            before.requeue_after,
            Some(Duration::from_secs(1)),
            "sleeps at 12"
        );

        let p = plan_at(&s, Some(pod.clone()), 12);
        assert_eq!(p.pod, PodAction::Resize { requests: asleep() });
        assert_eq!(p.events, [SessionEvent::Slept { requests: asleep() }]);
        let status = p.status.clone().expect("status");
        assert_eq!(status.phase, Some(SessionPhase::Sleeping));
        assert_eq!(status.pod_name.as_deref(), Some("demo-sandbox"));
        assert_eq!(ready_reason(&p), Some(("False".into(), "Sleeping".into())));
        assert!(status.message.unwrap_or_default().contains("cpu 10m"));
        assert_eq!(
            p.requeue_after,
            Some(Duration::from_secs(50)),
            "deep sleep at 62"
        );

        // Resized: nothing more to do, no second Event, and no ping of the runner.
        let s = applied(s, &p);
        let pod = resized(pod, &asleep(), &asleep());
        assert!(answered_before(&s));
        let again = plan_at(&s, Some(pod), 20);
        assert_eq!(again.pod, PodAction::Keep);
        assert!(again.events.is_empty());
        assert_eq!(again.status, None);
    }

    #[test]
    fn activity_wakes_a_sleeping_session_once_the_apiserver_accepted_the_resize() {
        let (s, pod) = sleepy();
        let s = applied(s.clone(), &plan_at(&s, Some(pod.clone()), 12));
        let pod = resized(pod, &asleep(), &asleep());
        let ready_at = s.status.as_ref().and_then(|st| st.ready_at.clone());

        // Activity newer than the sleep: restore the requests; not Ready yet.
        let s = with_status(s, |st| st.last_activity_at = Some(Time(at(30))));
        let p = plan_at(&s, Some(pod.clone()), 30);
        assert_eq!(p.pod, PodAction::Resize { requests: awake() });
        assert!(p.events.is_empty());
        assert_eq!(ready_reason(&p), Some(("False".into(), "Waking".into())));
        assert_eq!(
            p.status.clone().expect("status").phase,
            Some(SessionPhase::Sleeping)
        );
        assert_eq!(p.requeue_after, Some(WAKE_POLL));

        // Past the sleep deadline again before the resize is accepted: the wake goes on.
        let s = applied(s, &p);
        let p = plan_at(&s, Some(pod.clone()), 45);
        assert_eq!(p.pod, PodAction::Resize { requests: awake() });
        assert_eq!(p.status, None, "still waking, not asleep again");

        // The apiserver accepted it (the kubelet has not applied it yet): Ready, Woke, and no
        // second resize. Nothing an execution uses waits for the kubelet: limits never changed.
        let asked = resized(pod.clone(), &awake(), &asleep());
        let p = plan_at(&s, Some(asked), 31);
        assert_eq!(p.pod, PodAction::Keep);
        assert_eq!(p.events, [SessionEvent::Woke { detail: None }]);
        let status = p.status.clone().expect("status");
        assert_eq!(status.phase, Some(SessionPhase::Ready));
        assert_ne!(status.ready_at, ready_at);
        assert_eq!(
            status.ready_at,
            Some(Time(at(31))),
            "the idle clock restarts at the wake"
        );
        assert_eq!(status.message, None);
        assert_eq!(ready_reason(&p), Some(("True".into(), "PodReady".into())));

        // The kubelet applying it later (in its own notation) changes nothing more.
        let s = applied(s, &p);
        let done = resized(pod, &awake(), &requests("0.1", "53687092"));
        let p = plan_at(&s, Some(done), 32);
        assert_eq!(p.pod, PodAction::Keep);
        assert!(p.events.is_empty());
        assert_eq!(p.status, None);
    }

    #[test]
    fn a_resize_the_kubelet_defers_does_not_hold_back_the_wake() {
        let (s, pod) = sleepy();
        let s = applied(s.clone(), &plan_at(&s, Some(pod.clone()), 12));
        let s = with_status(s, |st| st.last_activity_at = Some(Time(at(30))));
        let mut deferred = resized(pod, &awake(), &asleep());
        if let Some(status) = deferred.status.as_mut() {
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(PodCondition {
                    type_: "PodResizePending".into(),
                    status: "True".into(),
                    reason: Some("Deferred".into()),
                    message: Some("Node didn't have enough capacity".into()),
                    ..PodCondition::default()
                });
        }
        let p = plan_at(&s, Some(deferred), 31);
        assert!(
            matches!(&p.events[..], [SessionEvent::Woke { detail: Some(d) }] if d.contains("Deferred"))
        );
        let status = p.status.expect("status");
        assert_eq!(status.phase, Some(SessionPhase::Ready));
        assert!(status
            .message
            .unwrap_or_default()
            .contains("sleep requests"));
    }

    #[test]
    fn deep_sleep_follows_sleep_and_deletes_the_pod() {
        let (s, pod) = sleepy();
        let s = applied(s.clone(), &plan_at(&s, Some(pod.clone()), 12));
        let pod = resized(pod, &asleep(), &asleep());
        let p = plan_at(&s, Some(pod), 62);
        assert!(matches!(p.pod, PodAction::Delete { .. }));
        assert_eq!(p.events, [SessionEvent::Suspended { idle: true }]);
        assert_eq!(ready_reason(&p), Some(("False".into(), "Idle".into())));
        assert_eq!(
            p.status.expect("status").phase,
            Some(SessionPhase::Suspended)
        );
    }

    #[test]
    fn executions_hold_back_sleep_and_deep_sleep() {
        let (s, pod) = sleepy();
        let pending = Busy {
            pending: 1,
            ..Busy::IDLE
        };
        let unknown = Busy::default();
        for busy in [running(1), pending, unknown] {
            for secs in [12, 100] {
                let p = plan_busy(&s, Some(pod.clone()), busy, secs);
                assert_eq!(p.pod, PodAction::Keep, "{busy:?} at {secs}");
                assert!(p.events.is_empty());
                assert_eq!(p.requeue_after, Some(BUSY_POLL), "looks again soon");
            }
        }
        // A sleeping Session with a waiting Execution wakes.
        let asleep_s = applied(s.clone(), &plan_at(&s, Some(pod.clone()), 12));
        let p = plan_busy(
            &asleep_s,
            Some(resized(pod, &asleep(), &asleep())),
            pending,
            20,
        );
        assert_eq!(p.pod, PodAction::Resize { requests: awake() });
    }

    #[test]
    fn the_ttl_waits_for_running_executions_but_not_for_pending_ones() {
        let s = session(|spec| spec.ttl_seconds = 60);
        let s = with_status(s, |st| {
            st.phase = Some(SessionPhase::Ready);
            st.pod_name = Some("demo-sandbox".into());
        });
        let p = plan_busy(&s, Some(ready_pod(&s, 1)), running(2), 60);
        assert!(!p.delete_session);
        assert_eq!(p.pod, PodAction::Keep);
        assert_eq!(p.events, [SessionEvent::Expired]);
        let status = p.status.clone().expect("status");
        assert_eq!(status.phase, Some(SessionPhase::Expired));
        assert!(status.message.unwrap_or_default().contains("2 running"));
        assert_eq!(p.requeue_after, Some(BUSY_POLL));

        let s = applied(s, &p);
        let pending = Busy {
            pending: 3,
            ..Busy::IDLE
        };
        let p = plan_busy(&s, Some(ready_pod(&s, 1)), pending, 70);
        assert!(p.delete_session);
        assert!(p.events.is_empty(), "Expired was announced once");
    }

    #[test]
    fn a_spec_change_waits_for_running_executions() {
        let s = session(|_| {});
        let s = applied(s.clone(), &plan_at(&s, None, 0));
        let pod = ready_pod(&s, 1);
        let s = applied(s.clone(), &plan_at(&s, Some(pod.clone()), 1));
        let mut changed = s.clone();
        changed.spec.image = Some("other:1".into());

        let p = plan_busy(&changed, Some(pod.clone()), running(1), 5);
        assert_eq!(p.pod, PodAction::Keep);
        assert_eq!(
            p.events,
            [SessionEvent::WaitingForExecutions { running: 1 }]
        );
        assert_eq!(
            ready_reason(&p),
            Some(("False".into(), "WaitingForExecutions".into()))
        );
        let status = p.status.clone().expect("status");
        assert_eq!(status.phase, Some(SessionPhase::Pending));
        assert_eq!(status.pod_name.as_deref(), Some("demo-sandbox"));
        assert_eq!(p.requeue_after, Some(BUSY_POLL));

        // Still running: no second Event. Finished: replaced.
        let changed = applied(changed, &p);
        assert!(plan_busy(&changed, Some(pod.clone()), running(1), 8)
            .events
            .is_empty());
        let p = plan_at(&changed, Some(pod), 10);
        assert!(matches!(p.pod, PodAction::Delete { .. }));
        assert_eq!(p.events, [SessionEvent::SpecChanged]);
    }

    #[test]
    fn sleep_never_raises_a_request_and_keeps_a_guaranteed_pods() {
        // 50m CPU × 0.1 = 5m awake, below the 10m sleep value: kept at 5m.
        let small = session(|spec| spec.resources.cpu = Some("50m".into()));
        let desired = DesiredPod::build(&small, &SandboxConfig::default()).expect("valid");
        assert_eq!(desired.sleep_requests()["cpu"], "5m");
        assert_eq!(desired.sleep_requests()["memory"], "16Mi");

        // Ratio 1: Guaranteed QoS, which a resize may not change: nothing to lower.
        let config = SandboxConfig {
            request_ratio: 1.0,
            ..SandboxConfig::default()
        };
        let s = session(|spec| spec.sleep_after_seconds = Some(10));
        let desired = DesiredPod::build(&s, &config).expect("valid");
        assert_eq!(desired.sleep_requests(), desired.awake_requests());
        let s = applied(s.clone(), &plan(&s, &observed(None), &config, at(0)));
        let mut pod = ready_pod(&s, 2);
        pod.spec = build_pod(&s, &config).expect("pod").spec;
        let s = applied(
            s.clone(),
            &plan(&s, &observed(Some(pod.clone())), &config, at(2)),
        );
        let p = plan(&s, &observed(Some(pod)), &config, at(12));
        assert_eq!(p.pod, PodAction::Keep, "no resize");
        let status = p.status.expect("status");
        assert_eq!(status.phase, Some(SessionPhase::Sleeping));
        assert!(status.message.unwrap_or_default().contains("requests kept"));
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
    fn an_egress_change_relabels_the_running_pod() {
        let s = session(|_| {});
        let s = applied(s.clone(), &plan_at(&s, None, 0));
        let pod = ready_pod(&s, 1);
        let s = applied(s.clone(), &plan_at(&s, Some(pod.clone()), 1));
        assert_eq!(s.phase(), SessionPhase::Ready);

        let mut denied = s.clone();
        denied.spec.network.egress = EgressPolicy::Deny;
        let p = plan_at(&denied, Some(pod.clone()), 5);
        let deny = BTreeMap::from([(labels::EGRESS.to_string(), "Deny".to_string())]);
        assert_eq!(
            p.pod,
            PodAction::Relabel {
                labels: deny.clone()
            },
            "the same Pod, patched"
        );
        assert_eq!(p.events, [SessionEvent::PodRelabeled { labels: deny }]);
        assert_eq!(p.status, None, "still Ready");

        // Once the label is on the Pod, nothing more happens.
        let mut relabeled = pod;
        if let Some(l) = relabeled.metadata.labels.as_mut() {
            l.insert(labels::EGRESS.into(), "Deny".into());
        }
        let p = plan_at(&denied, Some(relabeled), 6);
        assert_eq!(p.pod, PodAction::Keep);
        assert!(p.events.is_empty());
    }

    #[test]
    fn a_starting_pod_is_relabeled_too() {
        let s = session(|spec| spec.network.egress = EgressPolicy::Deny);
        let mut pod = ready_pod(&session(|_| {}), 1);
        if let Some(status) = pod.status.as_mut() {
            status.conditions = None;
        }
        let p = plan_at(&s, Some(pod), 5);
        assert!(matches!(p.pod, PodAction::Relabel { .. }), "{:?}", p.pod);
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
    fn a_namespace_that_is_not_enabled_is_reported_with_its_fix() {
        let s = session(|_| {});
        let config = SandboxConfig::default();
        let p = namespace_not_enabled(&s, "create pod", &config, at(5));
        assert_eq!(p.pod, PodAction::Keep);
        assert_eq!(
            ready_reason(&p),
            Some(("False".into(), "NamespaceNotEnabled".into()))
        );
        let status = p.status.clone().expect("status");
        assert_eq!(status.phase, Some(SessionPhase::Pending));
        let message = status.message.unwrap_or_default();
        assert!(
            message.contains("may not create pod")
                && message.contains(&config.enablement.command("ns")),
            "{message}"
        );
        assert!(matches!(
            &p.events[..],
            [SessionEvent::NamespaceNotEnabled { .. }]
        ));
        assert_eq!(p.requeue_after, Some(NOT_ENABLED_RETRY));
        // Still not enabled: not announced again.
        let s = applied(s, &p);
        assert!(namespace_not_enabled(&s, "create pod", &config, at(20))
            .events
            .is_empty());
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

    #[test]
    fn a_silent_runner_keeps_the_session_pending_and_is_pinged_again_soon() {
        let s = session(|_| {});
        let s = applied(s.clone(), &plan_at(&s, None, 1));
        let silent = Observed {
            pod: Some(ready_pod(&s, 3)),
            runner: RunnerAnswer::Silent {
                why: "exit 7".into(),
            },
            busy: Busy::IDLE,
            ..Observed::default()
        };
        let p = plan(&s, &silent, &SandboxConfig::default(), at(4));
        let status = p.status.clone().expect("status");
        assert_eq!(status.phase, Some(SessionPhase::Pending));
        assert_eq!(
            status.message.as_deref(),
            Some("the runner has not answered: exit 7")
        );
        assert_eq!(p.requeue_after, Some(SILENT_RUNNER_RETRY));
        assert!(p.events.is_empty());
    }

    #[test]
    fn an_empty_runner_volume_fails_the_session_naming_the_chart_value() {
        use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, ContainerStatus};
        let s = session(|_| {});
        let s = applied(s.clone(), &plan_at(&s, None, 1));
        let mut pod = ready_pod(&s, 3);
        pod.status.get_or_insert_with(PodStatus::default).container_statuses =
            Some(vec![ContainerStatus {
                name: "sandbox".into(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("RunContainerError".into()),
                        message: Some(
                            "exec: \"/kubexec/bin/kubexec-runner\": stat /kubexec/bin/kubexec-runner: no such file or directory".into(),
                        ),
                    }),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]);
        let p = plan_at(&s, Some(pod.clone()), 4);
        assert_eq!(p.pod, PodAction::Keep, "the Pod is kept to be looked at");
        let status = p.status.clone().expect("status");
        assert_eq!(status.phase, Some(SessionPhase::Failed));
        assert_eq!(
            ready_reason(&p),
            Some(("False".into(), "RunnerMissing".into()))
        );
        let message = status.message.clone().unwrap_or_default();
        assert!(message.contains("sandbox.runnerDelivery"), "{message}");
        assert!(matches!(
            &p.events[..],
            [SessionEvent::RunnerMissing { .. }]
        ));
        let again = plan_at(&applied(s, &p), Some(pod), 5);
        assert!(again.events.is_empty(), "announced once");
    }
}
