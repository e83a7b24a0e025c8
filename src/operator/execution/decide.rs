//! Pure decisions: given an Execution, what was observed, what this process is running, and
//! the time, what should happen next.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::crd::{Execution, ExecutionPhase, Session, SessionPhase};
use crate::operator::reconciler::until;

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

/// How to resume a suspended Session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// Suspended for idling: recording activity resumes it.
    Idle,
    /// `spec.suspend: true`: an Execution is an explicit request to use the Session, so it
    /// lifts the suspension (with an Event), as the next `execute` does in the hosted API.
    Unsuspend,
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
    /// Record Running in this Pod, then exec.
    Start {
        /// The sandbox Pod.
        pod_name: String,
        /// Its UID, recorded to recognise a replacement later.
        pod_uid: Option<String>,
        /// The resolved environment.
        env: Env,
        /// Effective timeout in seconds.
        timeout_seconds: i32,
    },
    /// Running, but no task of this process runs it (the operator restarted): exec again with
    /// the same run ID, which replays the stored result or attaches to the run.
    Recover,
    /// Fail without a result.
    Fail(Failure),
    /// `ttlSecondsAfterFinished` has passed.
    Delete,
}

fn seconds(d: Duration) -> SignedDuration {
    SignedDuration::from_secs(d.as_secs() as i64)
}

/// Decides the next step.
pub fn plan(execution: &Execution, observed: &Observed, run: RunState, now: Timestamp) -> Plan {
    let status = execution.status.clone().unwrap_or_default();
    if execution.metadata.deletion_timestamp.is_some() {
        return Plan::Wait {
            pending: None,
            requeue: None,
        };
    }
    match status.phase.unwrap_or_default() {
        ExecutionPhase::Succeeded | ExecutionPhase::Failed => plan_finished(execution, now),
        ExecutionPhase::Running => match run {
            RunState::InFlight => Plan::Wait {
                pending: None,
                requeue: Some(IN_FLIGHT_RECHECK),
            },
            RunState::Finished => Plan::Wait {
                pending: None,
                requeue: Some(CACHE_LAG_RECHECK),
            },
            RunState::Unknown => match pod_lost(
                observed.pod.as_ref(),
                status.pod_name.as_deref(),
                status.pod_uid.as_deref(),
            ) {
                Some(failure) => Plan::Fail(failure),
                None => Plan::Recover,
            },
        },
        ExecutionPhase::Pending => match run {
            // Started here moments ago; the cache has not caught up with the Running status.
            RunState::InFlight | RunState::Finished => Plan::Wait {
                pending: None,
                requeue: Some(CACHE_LAG_RECHECK),
            },
            RunState::Unknown => plan_pending(execution, observed, now),
        },
    }
}

fn plan_finished(execution: &Execution, now: Timestamp) -> Plan {
    let Some(ttl) = execution.spec.ttl_seconds_after_finished else {
        return Plan::Wait {
            pending: None,
            requeue: None,
        };
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
        Plan::Wait {
            pending: None,
            requeue: Some(until(now, deadline)),
        }
    }
}

fn plan_pending(execution: &Execution, observed: &Observed, now: Timestamp) -> Plan {
    let created = execution
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let session_name = &execution.spec.session_ref.name;
    let Some(session) = observed.session.as_ref() else {
        return Plan::Fail(Failure::new(
            reasons::SESSION_NOT_FOUND,
            format!(
                "Session {session_name} not found in namespace {}",
                execution.namespace().unwrap_or_default()
            ),
        ));
    };
    let ready_deadline = created
        .checked_add(seconds(SESSION_READY_DEADLINE))
        .unwrap_or(Timestamp::MAX);
    let waiting = |why: String| {
        if now >= ready_deadline {
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
                requeue: Some(SESSION_POLL.min(until(now, ready_deadline))),
            }
        }
    };
    let session_message = session
        .status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default();

    if session.metadata.deletion_timestamp.is_some() {
        return Plan::Fail(Failure::new(
            reasons::SESSION_NOT_READY,
            format!("Session {session_name} is being deleted"),
        ));
    }
    match session.phase() {
        phase @ (SessionPhase::Expired | SessionPhase::Failed | SessionPhase::Terminating) => {
            return Plan::Fail(Failure::new(
                reasons::SESSION_NOT_READY,
                format!(
                    "Session {session_name} is {}: {session_message}",
                    phase.as_str()
                )
                .trim_end_matches([' ', ':'])
                .to_string(),
            ));
        }
        _ if session.spec.suspend => return Plan::ResumeSession(Resume::Unsuspend),
        SessionPhase::Suspended => {
            return if recently_active(session, now) {
                waiting("resuming from suspension".into())
            } else {
                Plan::ResumeSession(Resume::Idle)
            };
        }
        SessionPhase::Ready => {}
        SessionPhase::Pending => {
            let why = if session_message.is_empty() {
                "its sandbox Pod is starting".to_string()
            } else {
                session_message
            };
            return waiting(why);
        }
    }

    // Ready: the Pod named in its status must be there and not going away.
    let Some(pod_name) = session.status.as_ref().and_then(|s| s.pod_name.clone()) else {
        return waiting("it has no sandbox Pod yet".into());
    };
    match observed.pod.as_ref() {
        Some(pod) if pod.metadata.deletion_timestamp.is_none() => {}
        _ => return waiting(format!("sandbox Pod {pod_name} is being replaced")),
    }
    let timeout_seconds = execution
        .spec
        .effective_timeout_seconds(session.spec.default_timeout_seconds);
    match observed.env.clone() {
        Some(EnvResolution::Ready(env)) => Plan::Start {
            pod_uid: observed.pod.as_ref().and_then(|p| p.metadata.uid.clone()),
            pod_name,
            env,
            timeout_seconds,
        },
        Some(EnvResolution::MissingSecret(secret)) => {
            let grace_end = created
                .checked_add(seconds(SECRET_GRACE))
                .unwrap_or(Timestamp::MAX);
            if now >= grace_end {
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
            }
        }
        Some(EnvResolution::MissingKey { secret, key }) => Plan::Fail(Failure::new(
            reasons::SECRET_NOT_FOUND,
            format!("Secret {secret} has no key {key:?}"),
        )),
        Some(EnvResolution::Invalid(message)) => {
            Plan::Fail(Failure::new(reasons::INVALID_ENV, message))
        }
        // Not resolved (observe only resolves for a ready Session); look again soon.
        None => waiting("resolving the environment".into()),
    }
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
            Plan::Start {
                pod_name: "demo-sandbox".into(),
                pod_uid: Some("pod-1".into()),
                env: Env::default(),
                timeout_seconds: 9,
            }
        );
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

    #[test]
    fn a_running_execution_is_recovered_only_when_no_task_runs_it() {
        let e = running("pod-1");
        let observed = Observed {
            pod: Some(pod("pod-1")),
            ..Observed::default()
        };
        assert_eq!(
            plan(&e, &observed, RunState::Unknown, at(NOW)),
            Plan::Recover
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
