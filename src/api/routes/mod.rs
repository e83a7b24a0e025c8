//! The route handlers, one module per resource, and what they share: finding the caller's
//! session and waiting for it to be ready.

pub mod execute;
pub mod executions;
pub mod files;
pub mod health;
pub mod preview;
pub mod processes;
pub mod sessions;

use crate::crd::{Session, SessionPhase};

use super::{
    auth::Caller,
    config::is_dns_label,
    errors::{codes, ApiError, ApiResult},
    state::AppState,
};

/// A session that can run things now.
#[derive(Debug, Clone)]
pub struct ReadySession {
    /// The Session.
    pub session: Session,
    /// Its sandbox Pod.
    pub pod: String,
}

/// True for a session that is deleted, expired or being deleted.
pub fn is_gone(session: &Session) -> bool {
    session.metadata.deletion_timestamp.is_some()
        || matches!(
            session.phase(),
            SessionPhase::Expired | SessionPhase::Terminating
        )
}

fn ready_pod(session: &Session) -> Option<String> {
    let status = session.status.as_ref()?;
    (status.phase == Some(SessionPhase::Ready))
        .then(|| status.pod_name.clone())
        .flatten()
}

fn ready_or_final(session: &Session) -> bool {
    ready_pod(session).is_some() || is_gone(session) || session.phase() == SessionPhase::Failed
}

/// The caller's session `id`. Another tenant's session, or a malformed id, is simply not found.
pub async fn find_session(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Session> {
    if !is_dns_label(id) {
        return Err(ApiError::SessionNotFound(id.to_string()));
    }
    match state.cluster.get_session(&caller.namespace, id).await? {
        Some(session) if !is_gone(&session) => Ok(session),
        _ => Err(ApiError::SessionNotFound(id.to_string())),
    }
}

/// Activity of a Ready session is recorded again at most this often by a request that does not
/// run an Execution (files, processes, previews), so that such use keeps it awake.
pub const ACTIVITY_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// True when a Ready session with an idle policy was last active long enough ago that a
/// request should record activity: [`ACTIVITY_REFRESH`], or half its shortest idle threshold
/// when that is shorter. Bounds the api's activity writes to a few per session and minute.
pub fn activity_stale(session: &Session, now: jiff::Timestamp) -> bool {
    let shortest = [
        session.spec.sleep_after_seconds,
        session.spec.idle_timeout_seconds,
    ]
    .into_iter()
    .flatten()
    .min();
    let Some(shortest) = shortest else {
        return false;
    };
    let refresh = (shortest / 2).clamp(1, ACTIVITY_REFRESH.as_secs() as i64);
    let last = session.status.as_ref().and_then(|s| {
        [s.last_activity_at.as_ref(), s.ready_at.as_ref()]
            .into_iter()
            .flatten()
            .map(|t| t.0)
            .max()
    });
    last.is_none_or(|last| now.duration_since(last).as_secs() >= refresh)
}

/// The caller's session `id`, once it is ready: wakes a sleeping session, resumes one in deep
/// sleep, and waits (by watching) up to `--session-ready-timeout`. Only an explicit
/// `spec.suspend` is refused (409 `SESSION_SUSPENDED`).
pub async fn ready_session(state: &AppState, caller: &Caller, id: &str) -> ApiResult<ReadySession> {
    let session = find_session(state, caller, id).await?;
    if let Some(pod) = ready_pod(&session) {
        if activity_stale(&session, jiff::Timestamp::now()) {
            state.cluster.touch_session(&caller.namespace, id).await?;
        }
        return Ok(ReadySession { session, pod });
    }
    tracing::debug!(
        session = id,
        phase = session.phase().as_str(),
        "waiting for the session to be ready"
    );
    if session.spec.suspend {
        return Err(ApiError::Conflict {
            code: codes::SESSION_SUSPENDED,
            message: format!("session {id} is suspended (spec.suspend); resume it first"),
        });
    }
    // Asleep or in deep sleep: recording activity wakes it; the caller waits, without an
    // error, until it is Ready.
    if matches!(
        session.phase(),
        SessionPhase::Suspended | SessionPhase::Sleeping
    ) {
        state.cluster.touch_session(&caller.namespace, id).await?;
    }
    let waited = state
        .cluster
        .wait_session(
            &caller.namespace,
            id,
            state.settings.session_ready_timeout,
            ready_or_final,
        )
        .await?;
    match waited {
        Some(session) if is_gone(&session) => Err(ApiError::SessionNotFound(id.to_string())),
        Some(session) => match ready_pod(&session) {
            Some(pod) => Ok(ReadySession { session, pod }),
            None => Err(ApiError::SessionNotReady {
                session: id.to_string(),
                phase: session.phase().as_str().to_string(),
            }),
        },
        None => Err(ApiError::SessionNotFound(id.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{SessionSpec, SessionStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + secs).expect("valid")
    }

    fn session(sleep: Option<i64>, deep: Option<i64>, active: i64) -> Session {
        let mut s = Session::new(
            "s",
            SessionSpec {
                sleep_after_seconds: sleep,
                idle_timeout_seconds: deep,
                ..SessionSpec::default()
            },
        );
        s.status = Some(SessionStatus {
            last_activity_at: Some(Time(at(active))),
            ..SessionStatus::default()
        });
        s
    }

    #[test]
    fn activity_is_refreshed_only_for_sessions_that_idle_and_at_most_every_30s() {
        assert!(!activity_stale(&session(None, None, 0), at(3600)));
        let rest = session(Some(300), Some(1800), 0);
        assert!(!activity_stale(&rest, at(29)));
        assert!(activity_stale(&rest, at(30)));
        // Short thresholds (tests): half the shortest one.
        let short = session(Some(4), Some(10), 0);
        assert!(!activity_stale(&short, at(1)));
        assert!(activity_stale(&short, at(2)));
    }
}
