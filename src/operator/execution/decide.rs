//! Pure decisions: given an Execution, what was observed, what this process is running, and
//! the time, what should happen next. A run is planned whole ([`RunPlan`]): its Pod, timeout,
//! deadline and env, so that the IO only carries it out.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::crd::{
    Execution, ExecutionPhase, IdleLevel, Session, SessionPhase, MAX_TIMEOUT_SECONDS,
};
use crate::layout::SANDBOX_CONTAINER;
use crate::operator::reconciler::until;
use crate::shared::deadlines::{run_deadline, RESULT_GRACE};

use super::{
    build::{reasons, Env},
    failure::{pod_lost, Failure},
    observe::{EnvResolution, Observed},
    tracker::RunState,
};

/// A Session must be ready this long after the Execution was created, or it fails.
pub const SESSION_READY_DEADLINE: Duration = Duration::from_secs(120);
/// A missing Secret is waited for this long after creation (the api creates the Secret first,
/// but a client may create both at once).
pub const SECRET_GRACE: Duration = Duration::from_secs(15);
/// How soon to look again while the Session starts.
pub const SESSION_POLL: Duration = Duration::from_secs(2);
/// How soon to look again while a Secret is missing.
pub const SECRET_POLL: Duration = Duration::from_secs(1);
/// A safety recheck of a run in flight (its task writes the result on its own).
pub const IN_FLIGHT_RECHECK: Duration = Duration::from_secs(60);
/// How soon to look again when the cache lags behind our own writes.
pub const CACHE_LAG_RECHECK: Duration = Duration::from_secs(5);
/// Activity recorded this recently is still resuming the Session; do not record it again.
pub const RESUME_DEBOUNCE: Duration = Duration::from_secs(10);
/// A safety recheck of a queued run (it is woken as soon as a slot frees).
pub const QUEUE_RECHECK: Duration = Duration::from_secs(5);

/// How to resume a suspended Session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Suspended for idling: recording activity resumes it.
    Idle,
    /// `spec.suspend: true`: an Execution is an explicit request to use the Session, so it
    /// lifts the suspension (with an Event), as the next `execute` does in the hosted API.
    Unsuspend,
}

/// Whether a run starts now or was started by an earlier operator process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Pending: record Running in the Pod, then exec.
    Fresh,
    /// Running, but no task of this process runs it (the operator restarted): exec again with
    /// the same run ID and the run's real inputs (env, effective timeout). The runner replays
    /// the stored result or attaches to the run; a run it never claimed (the operator stopped
    /// between recording Running and the exec) starts now, as it would have then.
    Recovering,
    /// Like [`RunMode::Recovering`], but the inputs cannot be rebuilt (the Session or a Secret
    /// is gone): the runner only replays or attaches, and refuses a run that never started,
    /// which then fails with `NotStarted`. Never a run with the wrong env or timeout.
    AttachOnly,
}

/// A run to carry out, with everything decided about it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunPlan {
    /// Fresh or recovering.
    pub mode: RunMode,
    /// The sandbox Pod.
    pub pod_name: String,
    /// The container of that Pod the runner is exec'd in.
    pub container: &'static str,
    /// Its UID, recorded to recognise a replacement later.
    pub pod_uid: Option<String>,
    /// The timeout the runner enforces, in seconds.
    pub timeout_seconds: i32,
    /// The effective timeout when known, named in messages. An attach-only recovery may not
    /// know it (the spec names none and the Session is gone).
    pub known_timeout_seconds: Option<i32>,
    /// How long from now the result is waited for before the run is given up.
    pub deadline: Duration,
    /// The resolved environment. Empty when attach-only: the runner never starts such a run,
    /// so the values are not sent.
    pub env: Env,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Nothing now; write a Pending status if one is given; look again after `requeue`.
    Wait {
        /// Pending status to write: (reason, message).
        pending: Option<(&'static str, String)>,
        /// When to look again (`None`: on change only).
        requeue: Option<Duration>,
    },
    /// Resume the Session, then wait for it.
    ResumeSession(Resume),
    /// Exec the run (after recording Running, when fresh).
    Run(RunPlan),
    /// Fail without a result.
    Fail(Failure),
    /// `ttlSecondsAfterFinished` has passed.
    Delete,
}

/// Nothing to write; look again after `requeue` (`None`: on change only).
fn look_again(requeue: Option<Duration>) -> Plan {
    Plan::Wait {
        pending: None,
        requeue,
    }
}

fn seconds(d: Duration) -> SignedDuration {
    SignedDuration::from_secs(d.as_secs() as i64)
}

/// Decides the next step.
pub fn plan(execution: &Execution, observed: &Observed, run: RunState, now: Timestamp) -> Plan {
    if execution.metadata.deletion_timestamp.is_some() {
        return look_again(None);
    }
    let phase = execution.status.as_ref().and_then(|s| s.phase);
    match (phase.unwrap_or_default(), run) {
        (ExecutionPhase::Succeeded | ExecutionPhase::Failed, _) => plan_finished(execution, now),
        (ExecutionPhase::Running, RunState::InFlight) => look_again(Some(IN_FLIGHT_RECHECK)),
        (ExecutionPhase::Running, RunState::Finished) => look_again(Some(CACHE_LAG_RECHECK)),
        (ExecutionPhase::Running, RunState::Unknown) => plan_recovery(execution, observed, now),
        // Started here moments ago; the cache has not caught up with the Running status.
        (ExecutionPhase::Pending, RunState::InFlight | RunState::Finished) => {
            look_again(Some(CACHE_LAG_RECHECK))
        }
        (ExecutionPhase::Pending, RunState::Unknown) => plan_pending(execution, observed, now),
    }
}

fn plan_finished(execution: &Execution, now: Timestamp) -> Plan {
    let Some(ttl) = execution.spec.ttl_seconds_after_finished else {
        return look_again(None);
    };
    let finished = execution
        .status
        .as_ref()
        .and_then(|s| s.completion_time.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    let deadline = finished
        .checked_add(SignedDuration::from_secs(ttl.into()))
        .unwrap_or(Timestamp::MAX);
    if now >= deadline {
        Plan::Delete
    } else {
        look_again(Some(until(now, deadline)))
    }
}

/// A Running Execution that no task of this process runs: exec it again in the Pod it was
/// recorded in, unless that Pod lost it. The runner may never have claimed it (the operator
/// stopped between recording Running and the exec), so it gets the run's real inputs when they
/// can be rebuilt, as a fresh start would; otherwise it may only attach.
fn plan_recovery(execution: &Execution, observed: &Observed, now: Timestamp) -> Plan {
    let status = execution.status.clone().unwrap_or_default();
    if let Some(failure) = pod_lost(
        observed.pod.as_ref(),
        status.pod_name.as_deref(),
        status.pod_uid.as_deref(),
    ) {
        return Plan::Fail(failure);
    }
    let Some(pod_name) = status.pod_name else {
        // A Pod with no name recorded cannot have been read for this status; look again.
        return look_again(Some(CACHE_LAG_RECHECK));
    };
    let known_timeout_seconds = match (execution.spec.timeout_seconds, &observed.session) {
        (Some(timeout), _) => Some(timeout),
        (None, Some(session)) => Some(
            execution
                .spec
                .effective_timeout_seconds(session.spec.default_timeout_seconds),
        ),
        (None, None) => None,
    };
    let env = match &observed.env {
        Some(EnvResolution::Ready(env)) => Some(env.clone()),
        _ => None,
    };
    let run = |mode, timeout_seconds, deadline, env| {
        Plan::Run(RunPlan {
            mode,
            pod_name: pod_name.clone(),
            container: SANDBOX_CONTAINER,
            pod_uid: status.pod_uid.clone(),
            timeout_seconds,
            known_timeout_seconds,
            deadline,
            env,
        })
    };
    match (known_timeout_seconds, env) {
        // It may start only now, with its whole timeout ahead of it.
        (Some(timeout), Some(env)) => run(
            RunMode::Recovering,
            timeout,
            run_deadline(u64::try_from(timeout).unwrap_or(0)),
            env,
        ),
        (timeout, _) => {
            // The deadline assumes the longest timeout allowed when the real one is unknown.
            let timeout = timeout.unwrap_or(MAX_TIMEOUT_SECONDS);
            let started = status.start_time.as_ref().map(|t| t.0);
            run(
                RunMode::AttachOnly,
                timeout,
                recovery_deadline(started, timeout, now),
                Env::default(),
            )
        }
    }
}

/// How long from `now` a recovered run is still waited for: what is left of its timeout since
/// it `started` (none once passed; all of it when the start is unknown), plus [`RESULT_GRACE`].
pub fn recovery_deadline(
    started: Option<Timestamp>,
    timeout_seconds: i32,
    now: Timestamp,
) -> Duration {
    let timeout = SignedDuration::from_secs(timeout_seconds.into());
    let remaining = started
        .and_then(|started| started.checked_add(timeout).ok())
        .map(|end| end.duration_since(now).as_secs().max(0))
        .unwrap_or(timeout_seconds.into());
    Duration::from_secs(u64::try_from(remaining).unwrap_or(0)) + RESULT_GRACE
}

/// A Pending Execution: it starts once its Session is Ready, the Session's Pod is there and
/// its env resolves.
fn plan_pending(execution: &Execution, observed: &Observed, now: Timestamp) -> Plan {
    let Some(session) = observed.session.as_ref() else {
        return Plan::Fail(Failure::new(
            reasons::SESSION_NOT_FOUND,
            format!(
                "Session {} not found in namespace {}",
                execution.spec.session_ref.name,
                execution.namespace().unwrap_or_default()
            ),
        ));
    };
    let created = execution
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let wait = SessionWait::new(&execution.spec.session_ref.name, created, now);
    if let Some(plan) = plan_unready_session(session, &wait, now) {
        return plan;
    }
    let (pod_name, pod_uid) = match session_pod(session, observed) {
        Ok(pod) => pod,
        Err(why) => return wait.because(why),
    };
    let env = match ready_env(observed.env.as_ref(), &wait, created, now) {
        Ok(env) => env,
        Err(plan) => return plan,
    };
    let timeout_seconds = execution
        .spec
        .effective_timeout_seconds(session.spec.default_timeout_seconds);
    Plan::Run(RunPlan {
        mode: RunMode::Fresh,
        pod_name,
        container: SANDBOX_CONTAINER,
        pod_uid,
        timeout_seconds,
        known_timeout_seconds: Some(timeout_seconds),
        deadline: run_deadline(u64::try_from(timeout_seconds).unwrap_or(0)),
        env,
    })
}

/// Waiting for the Session: a Pending status with why, until [`SESSION_READY_DEADLINE`] after
/// the Execution's creation; then `SessionNotReady`.
struct SessionWait<'a> {
    session_name: &'a str,
    deadline: Timestamp,
    now: Timestamp,
}

impl<'a> SessionWait<'a> {
    fn new(session_name: &'a str, created: Timestamp, now: Timestamp) -> Self {
        let deadline = created
            .checked_add(seconds(SESSION_READY_DEADLINE))
            .unwrap_or(Timestamp::MAX);
        Self {
            session_name,
            deadline,
            now,
        }
    }

    /// Waits (or gives up) because of `why`.
    fn because(&self, why: String) -> Plan {
        let session_name = self.session_name;
        if self.now >= self.deadline {
            Plan::Fail(Failure::new(
                reasons::SESSION_NOT_READY,
                format!(
                    "Session {session_name} did not become ready within {}s: {why}",
                    SESSION_READY_DEADLINE.as_secs()
                ),
            ))
        } else {
            Plan::Wait {
                pending: Some((
                    reasons::WAITING_FOR_SESSION,
                    format!("waiting for Session {session_name}: {why}"),
                )),
                requeue: Some(SESSION_POLL.min(until(self.now, self.deadline))),
            }
        }
    }
}

/// The plan while the Session cannot take the run (deleted, finished, suspended or starting);
/// `None` once it is Ready.
fn plan_unready_session(session: &Session, wait: &SessionWait, now: Timestamp) -> Option<Plan> {
    let session_name = wait.session_name;
    let session_message = session
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();
    if session.metadata.deletion_timestamp.is_some() {
        return Some(Plan::Fail(Failure::new(
            reasons::SESSION_NOT_READY,
            format!("Session {session_name} is being deleted"),
        )));
    }
    match session.phase() {
        phase @ (SessionPhase::Expired | SessionPhase::Failed | SessionPhase::Terminating) => {
            Some(Plan::Fail(Failure::new(
                reasons::SESSION_NOT_READY,
                format!(
                    "Session {session_name} is {}: {session_message}",
                    phase.as_str()
                )
                .trim_end_matches([' ', ':'])
                .to_string(),
            )))
        }
        _ if session.spec.suspend => Some(Plan::ResumeSession(Resume::Unsuspend)),
        SessionPhase::Suspended => Some(if recently_active(session, now) {
            wait.because("resuming from suspension".into())
        } else {
            Plan::ResumeSession(Resume::Idle)
        }),
        // Asleep: recording activity wakes it. Activity already newer than its sleep means
        // it is waking; wait for that.
        SessionPhase::Sleeping => Some(if still_asleep(session, now) {
            Plan::ResumeSession(Resume::Idle)
        } else {
            wait.because("waking from sleep".into())
        }),
        SessionPhase::Ready => None,
        SessionPhase::Pending => {
            let why = if session_message.is_empty() {
                "its sandbox Pod is starting".to_string()
            } else {
                session_message
            };
            Some(wait.because(why))
        }
    }
}

/// The Ready Session's sandbox Pod (name, UID), named in its status, there and not going
/// away; otherwise why not.
fn session_pod(session: &Session, observed: &Observed) -> Result<(String, Option<String>), String> {
    let Some(pod_name) = session.status.as_ref().and_then(|s| s.pod_name.clone()) else {
        return Err("it has no sandbox Pod yet".into());
    };
    match observed.pod.as_ref() {
        Some(pod) if pod.metadata.deletion_timestamp.is_none() => {
            Ok((pod_name, pod.metadata.uid.clone()))
        }
        _ => Err(format!("sandbox Pod {pod_name} is being replaced")),
    }
}

/// The resolved env; otherwise the plan: wait for a missing Secret for [`SECRET_GRACE`] after
/// the Execution's creation, or fail.
fn ready_env(
    env: Option<&EnvResolution>,
    wait: &SessionWait,
    created: Timestamp,
    now: Timestamp,
) -> Result<Env, Plan> {
    match env {
        Some(EnvResolution::Ready(env)) => Ok(env.clone()),
        Some(EnvResolution::MissingSecret(secret)) => {
            let grace_end = created
                .checked_add(seconds(SECRET_GRACE))
                .unwrap_or(Timestamp::MAX);
            Err(if now >= grace_end {
                Plan::Fail(Failure::new(
                    reasons::SECRET_NOT_FOUND,
                    format!("Secret {secret} (for env) not found"),
                ))
            } else {
                Plan::Wait {
                    pending: Some((
                        reasons::WAITING_FOR_SECRET,
                        format!("waiting for Secret {secret}"),
                    )),
                    requeue: Some(SECRET_POLL),
                }
            })
        }
        Some(EnvResolution::MissingKey { secret, key }) => Err(Plan::Fail(Failure::new(
            reasons::SECRET_NOT_FOUND,
            format!("Secret {secret} has no key {key:?}"),
        ))),
        Some(EnvResolution::Invalid(message)) => Err(Plan::Fail(Failure::new(
            reasons::INVALID_ENV,
            message.clone(),
        ))),
        // Not resolved (observe only resolves for a ready Session); look again soon.
        None => Err(wait.because("resolving the environment".into())),
    }
}

/// True when no activity was recorded since the Session fell asleep (by its own clock).
fn still_asleep(session: &Session, now: Timestamp) -> bool {
    session
        .status
        .as_ref()
        .is_some_and(|status| session.spec.idle_level(status, now) != IdleLevel::Awake)
}

fn recently_active(session: &Session, now: Timestamp) -> bool {
    session
        .status
        .as_ref()
        .and_then(|s| s.last_activity_at.as_ref())
        .is_some_and(|t| now.duration_since(t.0) < seconds(RESUME_DEBOUNCE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        conditions, ExecutionSpec, ExecutionStatus, SessionReference, SessionSpec, SessionStatus,
    };
    use k8s_openapi::{
        api::core::v1::Pod,
        apimachinery::pkg::apis::meta::v1::{Condition, Time},
    };

    const NOW: i64 = 1_700_000_000;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    fn execution(created_ago: i64) -> Execution {
        let mut e = Execution::new(
            "run",
            ExecutionSpec {
                session_ref: SessionReference {
                    name: "demo".into(),
                },
                command: Some("true".into()),
                ..ExecutionSpec::default()
            },
        );
        e.metadata.namespace = Some("ns".into());
        e.metadata.uid = Some("uid".into());
        e.metadata.creation_timestamp = Some(Time(at(NOW - created_ago)));
        e
    }

    fn session(phase: SessionPhase) -> Session {
        let mut s = Session::new("demo", SessionSpec::default());
        s.status = Some(SessionStatus {
            phase: Some(phase),
            pod_name: (phase == SessionPhase::Ready).then(|| "demo-sandbox".to_string()),
            ..SessionStatus::default()
        });
        s
    }

    fn pod(uid: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("demo-sandbox".into());
        p.metadata.uid = Some(uid.into());
        p
    }

    fn ready(env: EnvResolution) -> Observed {
        Observed {
            session: Some(session(SessionPhase::Ready)),
            pod: Some(pod("pod-1")),
            env: Some(env),
        }
    }

    fn no_env() -> EnvResolution {
        EnvResolution::Ready(Env::default())
    }

    #[test]
    fn a_missing_session_fails() {
        let plan = plan(
            &execution(0),
            &Observed::default(),
            RunState::Unknown,
            at(NOW),
        );
        let Plan::Fail(f) = plan else {
            panic!("{plan:?}")
        };
        assert_eq!(f.reason, "SessionNotFound");
        assert!(f.message.contains("demo"));
    }

    #[test]
    fn a_ready_session_starts_the_run_with_its_timeout() {
        let mut observed = ready(no_env());
        if let Some(s) = observed.session.as_mut() {
            s.spec.default_timeout_seconds = Some(9);
        }
        let plan = plan(&execution(0), &observed, RunState::Unknown, at(NOW));
        assert_eq!(
            plan,
            Plan::Run(RunPlan {
                mode: RunMode::Fresh,
                pod_name: "demo-sandbox".into(),
                container: "sandbox",
                pod_uid: Some("pod-1".into()),
                timeout_seconds: 9,
                known_timeout_seconds: Some(9),
                deadline: Duration::from_secs(9 + 30),
                env: Env::default(),
            })
        );
    }

    #[test]
    fn a_fresh_run_is_given_up_its_timeout_plus_the_grace_after_it_starts() {
        let mut e = execution(0);
        e.spec.timeout_seconds = Some(120);
        let env = Env(std::collections::BTreeMap::from([(
            "A".to_string(),
            "1".to_string(),
        )]));
        let Plan::Run(run) = plan(
            &e,
            &ready(EnvResolution::Ready(env.clone())),
            RunState::Unknown,
            at(NOW),
        ) else {
            panic!("a run")
        };
        assert_eq!(run.mode, RunMode::Fresh);
        assert_eq!(run.timeout_seconds, 120, "the spec's timeout wins");
        assert_eq!(run.known_timeout_seconds, Some(120));
        assert_eq!(run.deadline, Duration::from_secs(120) + RESULT_GRACE);
        assert_eq!(run.env, env);

        // Neither the spec nor the Session names a timeout: the default.
        let Plan::Run(run) = plan(&execution(0), &ready(no_env()), RunState::Unknown, at(NOW))
        else {
            panic!("a run")
        };
        assert_eq!(run.timeout_seconds, crate::crd::DEFAULT_TIMEOUT_SECONDS);
        assert_eq!(run.deadline, Duration::from_secs(30 + 30));
    }

    #[test]
    fn a_starting_session_is_waited_for_until_the_deadline() {
        let observed = Observed {
            session: Some(session(SessionPhase::Pending)),
            ..Observed::default()
        };
        let early = plan(&execution(5), &observed, RunState::Unknown, at(NOW));
        assert!(
            matches!(&early, Plan::Wait { pending: Some((reason, _)), requeue: Some(_) } if *reason == "WaitingForSession"),
            "{early:?}"
        );
        let late = plan(&execution(121), &observed, RunState::Unknown, at(NOW));
        assert!(
            matches!(&late, Plan::Fail(f) if f.reason == "SessionNotReady" && f.message.contains("120s")),
            "{late:?}"
        );
    }

    #[test]
    fn suspended_sessions_are_resumed() {
        let mut idle = session(SessionPhase::Suspended);
        if let Some(st) = idle.status.as_mut() {
            st.conditions = vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: conditions::REASON_IDLE.into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(at(NOW - 100)),
            }];
        }
        let observed = Observed {
            session: Some(idle.clone()),
            ..Observed::default()
        };
        assert_eq!(
            plan(&execution(0), &observed, RunState::Unknown, at(NOW)),
            Plan::ResumeSession(Resume::Idle)
        );
        // Activity just recorded: the Session is on its way; do not write again.
        if let Some(st) = idle.status.as_mut() {
            st.last_activity_at = Some(Time(at(NOW - 2)));
        }
        let observed = Observed {
            session: Some(idle),
            ..Observed::default()
        };
        assert!(matches!(
            plan(&execution(0), &observed, RunState::Unknown, at(NOW)),
            Plan::Wait { .. }
        ));

        let mut by_spec = session(SessionPhase::Ready);
        by_spec.spec.suspend = true;
        let observed = Observed {
            session: Some(by_spec),
            ..Observed::default()
        };
        assert_eq!(
            plan(&execution(0), &observed, RunState::Unknown, at(NOW)),
            Plan::ResumeSession(Resume::Unsuspend)
        );
    }

    #[test]
    fn a_sleeping_session_is_woken_once() {
        let mut asleep = session(SessionPhase::Sleeping);
        asleep.spec.sleep_after_seconds = Some(10);
        if let Some(st) = asleep.status.as_mut() {
            st.ready_at = Some(Time(at(NOW - 60)));
            // Active 15 s ago: within the suspended-session debounce, yet asleep for 5 s.
            st.last_activity_at = Some(Time(at(NOW - 15)));
        }
        let observed = Observed {
            session: Some(asleep.clone()),
            ..Observed::default()
        };
        assert_eq!(
            plan(&execution(0), &observed, RunState::Unknown, at(NOW)),
            Plan::ResumeSession(Resume::Idle)
        );
        // Activity newer than the sleep: it is waking; wait for Ready.
        if let Some(st) = asleep.status.as_mut() {
            st.last_activity_at = Some(Time(at(NOW - 1)));
        }
        let observed = Observed {
            session: Some(asleep),
            ..Observed::default()
        };
        let waiting = plan(&execution(0), &observed, RunState::Unknown, at(NOW));
        assert!(
            matches!(&waiting, Plan::Wait { pending: Some((_, why)), .. } if why.contains("waking")),
            "{waiting:?}"
        );
    }

    #[test]
    fn an_expired_session_fails_the_execution() {
        let observed = Observed {
            session: Some(session(SessionPhase::Expired)),
            ..Observed::default()
        };
        let plan = plan(&execution(0), &observed, RunState::Unknown, at(NOW));
        assert!(
            matches!(&plan, Plan::Fail(f) if f.reason == "SessionNotReady" && f.message.contains("Expired")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_missing_secret_is_transient_then_fails() {
        let observed = ready(EnvResolution::MissingSecret("env-x".into()));
        assert!(matches!(
            plan(&execution(3), &observed, RunState::Unknown, at(NOW)),
            Plan::Wait {
                pending: Some(("WaitingForSecret", _)),
                ..
            }
        ));
        let late = plan(&execution(16), &observed, RunState::Unknown, at(NOW));
        assert!(
            matches!(&late, Plan::Fail(f) if f.reason == "SecretNotFound"),
            "{late:?}"
        );
    }

    fn running(pod_uid: &str) -> Execution {
        let mut e = execution(10);
        e.status = Some(ExecutionStatus {
            phase: Some(ExecutionPhase::Running),
            pod_name: Some("demo-sandbox".into()),
            pod_uid: Some(pod_uid.into()),
            ..ExecutionStatus::default()
        });
        e
    }

    /// What a recovery observes when the Session and the env are still there.
    fn recoverable(env: Env, default_timeout: Option<i32>) -> Observed {
        let mut session = session(SessionPhase::Ready);
        session.spec.default_timeout_seconds = default_timeout;
        Observed {
            session: Some(session),
            pod: Some(pod("pod-1")),
            env: Some(EnvResolution::Ready(env)),
        }
    }

    #[test]
    fn a_running_execution_is_recovered_only_when_no_task_runs_it() {
        let e = running("pod-1");
        let env = Env(std::collections::BTreeMap::from([(
            "A".to_string(),
            "1".to_string(),
        )]));
        let observed = recoverable(env.clone(), Some(7));
        // The runner may never have claimed it: the real env and the Session's timeout, and the
        // whole timeout ahead.
        assert_eq!(
            plan(&e, &observed, RunState::Unknown, at(NOW)),
            Plan::Run(RunPlan {
                mode: RunMode::Recovering,
                pod_name: "demo-sandbox".into(),
                container: "sandbox",
                pod_uid: Some("pod-1".into()),
                timeout_seconds: 7,
                known_timeout_seconds: Some(7),
                deadline: Duration::from_secs(7) + RESULT_GRACE,
                env,
            })
        );
        assert!(matches!(
            plan(&e, &observed, RunState::InFlight, at(NOW)),
            Plan::Wait { .. }
        ));
        assert!(matches!(
            plan(&e, &observed, RunState::Finished, at(NOW)),
            Plan::Wait { .. }
        ));
        // A Pending object in the cache while our task runs it: never a second start.
        assert!(matches!(
            plan(&execution(0), &ready(no_env()), RunState::InFlight, at(NOW)),
            Plan::Wait { .. }
        ));
    }

    fn recovered_with(e: &Execution, observed: &Observed) -> RunPlan {
        match plan(e, observed, RunState::Unknown, at(NOW)) {
            Plan::Run(run) => run,
            other => panic!("{other:?}"),
        }
    }

    /// Recovered with only the Pod at hand: neither the Session nor the env.
    fn recovered(e: &Execution) -> RunPlan {
        let observed = Observed {
            pod: Some(pod("pod-1")),
            ..Observed::default()
        };
        recovered_with(e, &observed)
    }

    #[test]
    fn a_recovery_without_its_real_inputs_only_attaches() {
        let mut e = running("pod-1");
        e.spec.timeout_seconds = Some(30);
        // The env cannot be rebuilt (its Secret is gone), whatever else is known.
        for env in [
            None,
            Some(EnvResolution::MissingSecret("env-x".into())),
            Some(EnvResolution::Invalid("bad".into())),
        ] {
            let observed = Observed {
                env,
                ..recoverable(Env::default(), None)
            };
            let run = recovered_with(&e, &observed);
            assert_eq!(run.mode, RunMode::AttachOnly);
            assert_eq!(run.env, Env::default(), "no values are sent");
            assert_eq!(run.known_timeout_seconds, Some(30));
        }
        // The env is fine, but the Session (with the default timeout) is gone.
        e.spec.timeout_seconds = None;
        let observed = Observed {
            session: None,
            ..recoverable(Env::default(), Some(7))
        };
        let run = recovered_with(&e, &observed);
        assert_eq!(run.mode, RunMode::AttachOnly);
        assert_eq!(run.known_timeout_seconds, None);
        // The spec's own timeout needs no Session.
        e.spec.timeout_seconds = Some(12);
        let run = recovered_with(&e, &observed);
        assert_eq!(run.mode, RunMode::Recovering);
        assert_eq!(run.timeout_seconds, 12);
    }

    #[test]
    fn an_attach_only_recovery_is_given_up_what_is_left_of_its_timeout_plus_the_grace() {
        let mut e = running("pod-1");
        e.spec.timeout_seconds = Some(30);
        let running_status = e.status.clone().unwrap_or_default();
        let started = |ago: i64| {
            Some(ExecutionStatus {
                start_time: Some(Time(at(NOW - ago))),
                ..running_status.clone()
            })
        };

        e.status = started(10);
        let run = recovered(&e);
        assert_eq!(run.mode, RunMode::AttachOnly);
        assert_eq!(run.timeout_seconds, 30);
        assert_eq!(run.known_timeout_seconds, Some(30));
        assert_eq!(run.deadline, Duration::from_secs(20) + RESULT_GRACE);
        assert_eq!(run.env, Env::default(), "values are not sent again");

        // Its timeout passed long ago: only the grace is left.
        e.status = started(3600);
        assert_eq!(recovered(&e).deadline, RESULT_GRACE);

        // No timeout in the spec: the Session's default is unknown, so the longest allowed.
        e.spec.timeout_seconds = None;
        e.status = started(10);
        let run = recovered(&e);
        assert_eq!(run.timeout_seconds, MAX_TIMEOUT_SECONDS);
        assert_eq!(run.known_timeout_seconds, None);
        assert_eq!(run.deadline, Duration::from_secs(290) + RESULT_GRACE);
    }

    #[test]
    fn the_recovery_deadline_counts_from_the_start() {
        let now = at(NOW);
        assert_eq!(
            recovery_deadline(Some(at(NOW - 10)), 30, now),
            Duration::from_secs(50)
        );
        assert_eq!(
            recovery_deadline(Some(at(NOW - 30)), 30, now),
            Duration::from_secs(30)
        );
        assert_eq!(
            recovery_deadline(Some(at(NOW - 100)), 30, now),
            Duration::from_secs(30)
        );
        // Unknown start: the whole timeout.
        assert_eq!(recovery_deadline(None, 30, now), Duration::from_secs(60));
    }

    #[test]
    fn a_running_execution_without_a_recorded_pod_name_is_looked_at_again() {
        let mut e = running("pod-1");
        if let Some(status) = e.status.as_mut() {
            status.pod_name = None;
        }
        let observed = Observed {
            pod: Some(pod("pod-1")),
            ..Observed::default()
        };
        assert_eq!(
            plan(&e, &observed, RunState::Unknown, at(NOW)),
            Plan::Wait {
                pending: None,
                requeue: Some(CACHE_LAG_RECHECK)
            }
        );
    }

    #[test]
    fn a_replaced_or_missing_pod_loses_the_run() {
        let e = running("pod-1");
        for observed in [
            Observed::default(),
            Observed {
                pod: Some(pod("pod-2")),
                ..Observed::default()
            },
        ] {
            let plan = plan(&e, &observed, RunState::Unknown, at(NOW));
            assert!(
                matches!(&plan, Plan::Fail(f) if f.reason == "PodLost"),
                "{plan:?}"
            );
        }
    }

    #[test]
    fn finished_executions_are_deleted_after_their_ttl() {
        let mut e = execution(100);
        e.spec.ttl_seconds_after_finished = Some(30);
        e.status = Some(ExecutionStatus {
            phase: Some(ExecutionPhase::Succeeded),
            completion_time: Some(Time(at(NOW - 10))),
            ..ExecutionStatus::default()
        });
        assert_eq!(
            plan(&e, &Observed::default(), RunState::Unknown, at(NOW)),
            Plan::Wait {
                pending: None,
                requeue: Some(Duration::from_secs(20))
            }
        );
        assert_eq!(
            plan(&e, &Observed::default(), RunState::Unknown, at(NOW + 20)),
            Plan::Delete
        );
        e.spec.ttl_seconds_after_finished = None;
        assert_eq!(
            plan(&e, &Observed::default(), RunState::Unknown, at(NOW + 20)),
            Plan::Wait {
                pending: None,
                requeue: None
            }
        );
    }
}
