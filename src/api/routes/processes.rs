//! `GET /processes/list` and `POST /processes/kill`: processes of the session's sandbox,
//! including background ones started by earlier executions.

use axum::{extract::State, Json};
use jiff::Timestamp;
use kubexec_runner::protocol::{ProcessList, Signalled};

use super::ready_session;
use crate::api::{
    auth::Caller,
    errors::{codes, ApiError, ApiResult},
    extract::{ApiJson, ApiQuery},
    model::{
        KillProcessRequest, KillProcessResponse, ProcessListResponse, ProcessResponse, SessionQuery,
    },
    sandbox_errors::from_sandbox,
    state::AppState,
};

/// The runner binary: its own processes (PID 1, helpers) are not the user's.
const RUNNER: &str = "kubexec-runner";

fn is_users(command: &str, pid: i32) -> bool {
    pid != 1
        && !command
            .split_whitespace()
            .next()
            .is_some_and(|program| program.ends_with(RUNNER))
}

/// Lists the processes running in the session.
#[utoipa::path(get, path = "/processes/list", tag = "processes",
    params(SessionQuery),
    responses(
        (status = 200, description = "The processes", body = ProcessListResponse),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 404, description = "No such session", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_processes(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SessionQuery>,
) -> ApiResult<Json<ProcessListResponse>> {
    let ready = ready_session(&state, &caller, &query.session_id).await?;
    let list: ProcessList = state
        .cluster
        .helper(&caller.namespace, &ready.pod, vec!["ps".into()], 4 << 20)
        .await
        .and_then(|o| o.json())
        .map_err(|e| from_sandbox(e, codes::PROCESS_NOT_FOUND))?;
    let processes = list
        .processes
        .into_iter()
        .filter(|p| is_users(&p.command, p.pid))
        .map(|p| ProcessResponse {
            pid: p.pid,
            ppid: p.ppid,
            command: p.command,
            started_at: i64::try_from(p.started_at)
                .ok()
                .and_then(|ms| Timestamp::from_millisecond(ms).ok())
                .map(|t| t.to_string())
                .unwrap_or_default(),
            memory: p.rss_bytes,
            state: p.state,
        })
        .collect();
    Ok(Json(ProcessListResponse { processes }))
}

/// Sends a signal (default TERM) to a process of the session.
#[utoipa::path(post, path = "/processes/kill", tag = "processes",
    request_body = KillProcessRequest,
    responses(
        (status = 200, description = "Signalled", body = KillProcessResponse),
        (status = 400, description = "Bad input", body = crate::api::errors::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 404, description = "No such session or process", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn kill_process(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<KillProcessRequest>,
) -> ApiResult<Json<KillProcessResponse>> {
    if request.pid <= 1 {
        return Err(ApiError::invalid(
            "pid",
            "must be a process of the session (not PID 1, the sandbox's init)",
        ));
    }
    let signal = request.signal.unwrap_or_else(|| "TERM".into());
    if signal.is_empty() || signal.len() > 12 || !signal.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(ApiError::invalid(
            "signal",
            "a signal name (TERM, KILL, INT, ...) or number",
        ));
    }
    let ready = ready_session(&state, &caller, &request.session_id).await?;
    let args = vec![
        "kill".to_string(),
        request.pid.to_string(),
        "--signal".to_string(),
        signal,
    ];
    let signalled: Signalled = state
        .cluster
        .helper(&caller.namespace, &ready.pod, args, 1 << 16)
        .await
        .and_then(|o| o.json())
        .map_err(|e| match from_sandbox(e, codes::PROCESS_NOT_FOUND) {
            ApiError::Invalid { message, .. } => ApiError::invalid("signal", message),
            other => other,
        })?;
    Ok(Json(KillProcessResponse {
        success: true,
        pid: signalled.pid,
        signal: signalled.signal,
    }))
}
