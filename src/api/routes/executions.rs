//! Results a client can find again: `GET /executions/{id}`, `GET /executions?sessionId=`,
//! `GET /executions/{id}/output` and `GET /executions/{id}/events`.
//!
//! An execution id is `<Execution name>.<session>` ([`execution_id`]). While the Execution
//! object exists (its `ttlSecondsAfterFinished`, 300 s by default), its status answers. After
//! that, the run's directory in the session's workspace does: the name index
//! (`.kubexec/names/<name>`) gives the run id, and the run's stored `result.json` gives the
//! result. User code can write there, so a stored result is accepted only with a MAC under the
//! run's key, which the api derives from the cluster's result secret
//! ([`crate::shared::result_secret`]): user code can hide its results, never forge one.
//! Results are answered for `--result-retention` (default 24 h) after they finished; later,
//! 410 `EXECUTION_EXPIRED`. A session that is gone took its workspace, and its results, with
//! it: 404 `EXECUTION_NOT_FOUND`.

use std::{convert::Infallible, time::Duration};

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Json,
};
use futures::Stream;
use jiff::Timestamp;
use kubexec_runner::protocol::{ExecResult, NamedRun, ResultKey, RunList, RunStatus, RunSummary};
use tokio::sync::mpsc;

use super::ready_session;
use crate::{
    api::{
        auth::Caller,
        errors::{codes, ApiError, ApiResult},
        extract::ApiQuery,
        model::{
            ExecuteResponse, ExecutionList, ExecutionRecord, ExecutionSummary, ListExecutionsQuery,
            OutputQuery,
        },
        outcome::{
            execution_id, is_finished, is_started, outcome, parse_execution_id, stored_outcome,
        },
        quota::StreamSlot,
        sandbox_errors::from_sandbox,
        state::AppState,
        stream::{error_event, forward_output, OutputOffsets, SseSink, KEEP_ALIVE},
    },
    crd::Execution,
    shared::result_secret::result_secret,
};

/// Default and largest page of `GET /executions`.
pub const DEFAULT_PAGE: usize = 20;
/// Largest page of `GET /executions`.
pub const MAX_PAGE: usize = 100;
/// Most bytes of a `runs` or `result` helper answer.
const HELPER_ANSWER_BYTES: usize = 8 << 20;

/// Where an execution was found.
#[derive(Debug, Clone)]
pub enum Found {
    /// Its Execution object still exists.
    Live(Box<Execution>),
    /// Only its run directory remains.
    Stored {
        /// The run id (the Execution's UID).
        run_id: String,
        /// The run's state.
        status: Box<RunStatus>,
    },
}

/// An execution of the caller's, located.
#[derive(Debug, Clone)]
pub struct Located {
    /// The Execution's name.
    pub name: String,
    /// Its session.
    pub session: String,
    /// Its session's Pod, when it was looked up there.
    pub pod: Option<String>,
    /// What was found.
    pub found: Found,
}

impl Located {
    /// Its REST id.
    pub fn id(&self) -> String {
        execution_id(&self.name, &self.session)
    }

    /// Its run id, once it has one.
    pub fn run_id(&self) -> Option<String> {
        match &self.found {
            Found::Live(execution) => execution.metadata.uid.clone(),
            Found::Stored { run_id, .. } => Some(run_id.clone()),
        }
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        code: codes::EXECUTION_NOT_FOUND,
        message: format!("execution {id} not found"),
    }
}

fn expired(id: &str, retention: Duration) -> ApiError {
    ApiError::Gone {
        code: codes::EXECUTION_EXPIRED,
        message: format!(
            "execution {id} finished more than {} s ago; results are kept that long",
            retention.as_secs()
        ),
    }
}

/// The Execution `name` in the caller's namespace, if it belongs to `session`.
pub async fn live_execution(
    state: &AppState,
    caller: &Caller,
    name: &str,
    session: &str,
) -> ApiResult<Option<Execution>> {
    let current = crate::api::cluster::wait_execution(
        &*state.cluster,
        &caller.namespace,
        name,
        Duration::ZERO,
        |_| true,
    )
    .await?;
    Ok(current.filter(|e| e.spec.session_ref.name == session))
}

/// What the session's run directory knows about the Execution `name`.
pub async fn stored_run(
    state: &AppState,
    caller: &Caller,
    pod: &str,
    name: &str,
) -> ApiResult<NamedRun> {
    let args = vec!["result".into(), "--name".into(), name.to_string()];
    state
        .cluster
        .helper(&caller.namespace, pod, args, HELPER_ANSWER_BYTES)
        .await
        .and_then(|o| o.json())
        .map_err(|e| from_sandbox(e, codes::EXECUTION_NOT_FOUND))
}

/// Finds the caller's execution `id`: its Execution, else its run directory.
pub async fn locate(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Located> {
    let (name, session) = parse_execution_id(id).ok_or_else(|| not_found(id))?;
    if let Some(execution) = live_execution(state, caller, name, session).await? {
        return Ok(Located {
            name: name.into(),
            session: session.into(),
            pod: None,
            found: Found::Live(Box::new(execution)),
        });
    }
    let ready = match ready_session(state, caller, session).await {
        Err(ApiError::SessionNotFound(_)) => return Err(not_found(id)),
        other => other?,
    };
    let named = stored_run(state, caller, &ready.pod, name).await?;
    match named {
        NamedRun {
            run_id: Some(run_id),
            status,
        } if status != RunStatus::Unknown => Ok(Located {
            name: name.into(),
            session: session.into(),
            pod: Some(ready.pod),
            found: Found::Stored {
                run_id,
                status: Box::new(status),
            },
        }),
        _ => Err(not_found(id)),
    }
}

/// What a located execution's answer is checked against: the cluster's result secret, and
/// how long results are kept.
#[derive(Debug, Clone, Copy)]
pub struct Keeping<'a> {
    /// The result secret (`None`: results are kept only while their Execution exists).
    pub secret: Option<&'a [u8]>,
    /// `--result-retention`.
    pub retention: Duration,
}

impl Keeping<'static> {
    /// This api's.
    pub fn of(state: &AppState) -> Self {
        Self {
            secret: result_secret(),
            retention: state.settings.result_retention,
        }
    }
}

/// The answer for a located execution: `Ok(None)` while it runs.
pub fn record_of(
    located: &Located,
    namespace: &str,
    keeping: Keeping<'_>,
    now_ms: u64,
) -> ApiResult<Option<ExecuteResponse>> {
    let retention = keeping.retention;
    let id = located.id();
    match &located.found {
        Found::Live(execution) if is_finished(execution) => outcome(execution, &[]).map(Some),
        Found::Live(_) => Ok(None),
        Found::Stored { run_id, status } => match status.as_ref() {
            RunStatus::Finished(result) => {
                verified(
                    result,
                    keeping.secret,
                    namespace,
                    &located.name,
                    run_id,
                    &id,
                )?;
                let age = Duration::from_millis(now_ms.saturating_sub(result.finished_at));
                if age > retention {
                    return Err(expired(&id, retention));
                }
                Ok(Some(stored_outcome(result, id)))
            }
            RunStatus::Running { .. } => Ok(None),
            RunStatus::Failed(error) => Err(ApiError::ExecutionFailed {
                reason: format!("{:?}", error.code),
                message: error.message.clone(),
            }),
            RunStatus::Lost => Err(ApiError::ExecutionFailed {
                reason: "Lost".into(),
                message: "the run ended without a result".into(),
            }),
            RunStatus::Unknown => Err(not_found(&id)),
        },
    }
}

/// Accepts a stored result only when it is the run's and sealed with the run's derived key.
fn verified(
    result: &ExecResult,
    secret: Option<&[u8]>,
    namespace: &str,
    name: &str,
    run_id: &str,
    id: &str,
) -> ApiResult<()> {
    let Some(key) = secret.and_then(|s| ResultKey::derive(s, namespace, name, run_id)) else {
        // Without the cluster's result secret, nothing outlives the Execution object.
        return Err(ApiError::Gone {
            code: codes::EXECUTION_EXPIRED,
            message: format!(
                "execution {id} is no longer kept (this installation keeps results only while their Execution exists)"
            ),
        });
    };
    if result.run_id != run_id || !key.verify(result) {
        tracing::warn!(execution = id, "a stored result failed its MAC check");
        return Err(ApiError::ExecutionFailed {
            reason: "ResultNotVerified".into(),
            message: "the stored result of this execution does not carry a valid seal".into(),
        });
    }
    Ok(())
}

fn now_ms() -> u64 {
    u64::try_from(Timestamp::now().as_millisecond()).unwrap_or(0)
}

fn running_record(located: &Located) -> ExecutionRecord {
    ExecutionRecord {
        status: "running".into(),
        session_id: located.session.clone(),
        result: ExecuteResponse {
            stdout: String::new(),
            stderr: String::new(),
            exit_code: 0,
            execution_time: 0,
            memory_used: 0,
            cpu_time: 0,
            timed_out: false,
            oom_killed: false,
            files_written: Vec::new(),
            files_written_truncated: false,
            execution_id: located.id(),
        },
    }
}

/// An execution's result, in the shape of `POST /execute`'s response.
#[utoipa::path(get, path = "/executions/{id}", tag = "execution",
    params(("id" = String, Path, description = "Execution id (`executionId` of the execute response)")),
    responses(
        (status = 200, description = "Its result", body = ExecutionRecord),
        (status = 202, description = "It is still running (result fields empty)", body = ExecutionRecord),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 404, description = "No such execution for this key", body = crate::api::errors::ErrorBody),
        (status = 410, description = "EXECUTION_EXPIRED: finished longer ago than results are kept", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let located = locate(&state, &caller, &id).await?;
    Ok(
        match record_of(&located, &caller.namespace, Keeping::of(&state), now_ms())? {
            Some(result) => Json(ExecutionRecord {
                status: "finished".into(),
                session_id: located.session.clone(),
                result,
            })
            .into_response(),
            None => (StatusCode::ACCEPTED, Json(running_record(&located))).into_response(),
        },
    )
}

/// The recent executions of a session, newest first, paged.
#[utoipa::path(get, path = "/executions", tag = "execution",
    params(ListExecutionsQuery),
    responses(
        (status = 200, description = "A page of executions", body = ExecutionList),
        (status = 400, description = "Bad limit or cursor", body = crate::api::errors::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 404, description = "No such session", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_executions(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListExecutionsQuery>,
) -> ApiResult<Json<ExecutionList>> {
    let limit = page_limit(query.limit)?;
    let cursor = query.cursor.as_deref().map(Cursor::parse).transpose()?;
    let ready = ready_session(&state, &caller, &query.session_id).await?;
    let list: RunList = state
        .cluster
        .helper(
            &caller.namespace,
            &ready.pod,
            vec!["runs".into()],
            HELPER_ANSWER_BYTES,
        )
        .await
        .and_then(|o| o.json())
        .map_err(|e| from_sandbox(e, codes::EXECUTION_NOT_FOUND))?;
    let retention = state.settings.result_retention;
    let (runs, next) = page(recent(list.runs, retention, now_ms()), cursor, limit);
    Ok(Json(ExecutionList {
        executions: runs
            .into_iter()
            .map(|run| summary(run, &query.session_id))
            .collect(),
        next_cursor: next.map(|c| c.to_string()),
    }))
}

fn page_limit(limit: Option<usize>) -> ApiResult<usize> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        )),
    }
}

/// Runs within the retention window (and running ones).
fn recent(runs: Vec<RunSummary>, retention: Duration, now_ms: u64) -> Vec<RunSummary> {
    runs.into_iter()
        .filter(|run| run.state != "unknown")
        .filter(|run| {
            run.finished_at.is_none_or(|finished| {
                Duration::from_millis(now_ms.saturating_sub(finished)) <= retention
            })
        })
        .collect()
}

fn rfc3339(ms: u64) -> Option<String> {
    let ms = i64::try_from(ms).ok().filter(|ms| *ms > 0)?;
    Timestamp::from_millisecond(ms).ok().map(|t| t.to_string())
}

fn summary(run: RunSummary, session: &str) -> ExecutionSummary {
    ExecutionSummary {
        execution_id: execution_id(&run.name, session),
        status: run.state,
        started_at: rfc3339(run.started_at),
        finished_at: run.finished_at.and_then(rfc3339),
        exit_code: run.exit_code,
    }
}

/// Where a page ends: the last entry's start time and name. Entries are ordered newest first
/// (start time, then name, both descending), so the next page is everything strictly after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    started_at: u64,
    name: String,
}

impl Cursor {
    fn of(run: &RunSummary) -> Self {
        Self {
            started_at: run.started_at,
            name: run.name.clone(),
        }
    }

    /// Parses `nextCursor`; a malformed one is a 400 naming `cursor`.
    pub fn parse(text: &str) -> ApiResult<Self> {
        let bad = || ApiError::invalid("cursor", "is not a cursor this api returned");
        let (started_at, name) = text.split_once('.').ok_or_else(bad)?;
        let started_at = started_at.parse().map_err(|_| bad())?;
        if name.is_empty() || parse_execution_id(&format!("{name}.s")).is_none() {
            return Err(bad());
        }
        Ok(Self {
            started_at,
            name: name.to_string(),
        })
    }

    fn is_after(&self, run: &RunSummary) -> bool {
        (run.started_at, run.name.as_str()) < (self.started_at, self.name.as_str())
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.started_at, self.name)
    }
}

/// One page of `runs` (any order in, newest first out) after `cursor`, and the next cursor.
pub fn page(
    mut runs: Vec<RunSummary>,
    cursor: Option<Cursor>,
    limit: usize,
) -> (Vec<RunSummary>, Option<Cursor>) {
    runs.sort_by(|a, b| (b.started_at, &b.name).cmp(&(a.started_at, &a.name)));
    let mut rest = runs
        .into_iter()
        .filter(|run| cursor.as_ref().is_none_or(|c| c.is_after(run)));
    let page: Vec<RunSummary> = rest.by_ref().take(limit).collect();
    let next = match rest.next() {
        Some(_) => page.last().map(Cursor::of),
        None => None,
    };
    (page, next)
}

/// Which output stream `GET /executions/{id}/output` reads.
fn output_stream(query: &OutputQuery) -> ApiResult<&'static str> {
    match query.stream.as_deref() {
        None | Some("stdout") => Ok("stdout"),
        Some("stderr") => Ok("stderr"),
        Some(_) => Err(ApiError::invalid("stream", "must be stdout or stderr")),
    }
}

/// The full output of an execution, as its run directory holds it, streamed in constant memory.
#[utoipa::path(get, path = "/executions/{id}/output", tag = "execution",
    params(("id" = String, Path, description = "Execution id"), OutputQuery),
    responses(
        (status = 200, description = "The output's bytes (so far, while it runs)", content_type = "application/octet-stream", body = String),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 404, description = "No such execution for this key", body = crate::api::errors::ErrorBody),
        (status = 410, description = "OUTPUT_COLLECTED (the run's output limits) or EXECUTION_EXPIRED", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn execution_output(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<OutputQuery>,
) -> ApiResult<Response> {
    let stream = output_stream(&query)?;
    let located = locate(&state, &caller, &id).await?;
    // Expired results have expired output too; a failed run may still have output.
    let finished = match record_of(&located, &caller.namespace, Keeping::of(&state), now_ms()) {
        Ok(record) => record.is_some(),
        Err(e @ ApiError::Gone { .. }) => return Err(e),
        Err(_) => true,
    };
    let end = output_end(&located, stream);
    let Some(run_id) = located.run_id() else {
        return Err(not_found(&id));
    };
    let pod = match &located.pod {
        Some(pod) => pod.clone(),
        None => ready_session(&state, &caller, &located.session).await?.pod,
    };
    let octet = [(header::CONTENT_TYPE, "application/octet-stream")];
    if end == Some(0) || (matches!(&located.found, Found::Live(e) if !is_started(e))) {
        return Ok((octet, Body::empty()).into_response());
    }
    let path = format!(".kubexec/runs/{run_id}/{stream}");
    let probe = state
        .cluster
        .helper(
            &caller.namespace,
            &pod,
            vec!["cat".into(), path.clone(), "--max-bytes".into(), "0".into()],
            16,
        )
        .await
        .and_then(|o| o.check());
    match probe {
        Ok(_) => {}
        Err(crate::sandbox::SandboxError::Runner {
            code: kubexec_runner::protocol::ErrorCode::NotFound,
            ..
        }) if finished => {
            return Err(ApiError::Gone {
                code: codes::OUTPUT_COLLECTED,
                message: format!(
                    "the full {stream} of execution {id} was collected (the session's run output limits); its result is still kept"
                ),
            })
        }
        Err(crate::sandbox::SandboxError::Runner {
            code: kubexec_runner::protocol::ErrorCode::NotFound,
            ..
        }) => return Ok((octet, Body::empty()).into_response()),
        Err(e) => return Err(from_sandbox(e, codes::EXECUTION_NOT_FOUND)),
    }
    let mut args = vec!["cat".to_string(), path];
    if let Some(end) = end {
        args.extend(["--max-bytes".to_string(), end.to_string()]);
    }
    let chunks = state
        .cluster
        .read_stream(&caller.namespace, &pod, args)
        .await
        .map_err(|e| from_sandbox(e, codes::EXECUTION_NOT_FOUND))?;
    let body = Body::from_stream(futures::StreamExt::map(chunks, |chunk| {
        chunk.map_err(std::io::Error::other)
    }));
    Ok((octet, body).into_response())
}

/// Where the run's output ends, once it has (background processes may write on after it).
fn output_end(located: &Located, stream: &str) -> Option<u64> {
    match &located.found {
        Found::Live(execution) => {
            let status = execution.status.as_ref()?;
            if !is_finished(execution) {
                return None;
            }
            match stream {
                "stderr" => status.stderr_bytes,
                _ => status.stdout_bytes,
            }
            .and_then(|b| u64::try_from(b).ok())
        }
        Found::Stored { status, .. } => match status.as_ref() {
            RunStatus::Finished(result) => Some(match stream {
                "stderr" => result.stderr_bytes,
                _ => result.stdout_bytes,
            }),
            _ => None,
        },
    }
}

/// The `Last-Event-ID` of a resumed stream: `<stdout offset>-<stderr offset>`.
pub fn resume_offsets(headers: &HeaderMap) -> ApiResult<OutputOffsets> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(OutputOffsets::default());
    };
    value
        .to_str()
        .ok()
        .and_then(OutputOffsets::parse)
        .ok_or_else(|| ApiError::invalid("Last-Event-ID", "is not an event id of this api"))
}

/// Server-Sent Events of an execution, from the start or from `Last-Event-ID`: the output
/// chunks not seen yet, then its `result` (or `error`). Any api replica can serve it, also
/// after the one that started the stream restarted.
#[utoipa::path(get, path = "/executions/{id}/events", tag = "execution",
    params(("id" = String, Path, description = "Execution id"),
           ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    responses(
        (status = 200, description = "Server-Sent Events `stdout`, `stderr`, then `result` (or `error`)", content_type = "text/event-stream", body = String),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 404, description = "No such execution for this key", body = crate::api::errors::ErrorBody),
        (status = 410, description = "EXECUTION_EXPIRED", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn execution_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let offsets = resume_offsets(&headers)?;
    let located = locate(&state, &caller, &id).await?;
    // Fails here, before the stream starts, when the result is expired or forged.
    record_of(&located, &caller.namespace, Keeping::of(&state), now_ms())?;
    let slot = state.quotas.open_stream(&caller.key_id, &caller.limits)?;
    Ok(resumed_events(state.clone(), caller.clone(), located, offsets, slot).into_response())
}

/// The SSE response of a stream resumed with `Last-Event-ID` (or started late) at
/// `GET /executions/{id}/events`: the output after `from`, then the result, read as
/// `GET /executions/{id}` reads it.
pub fn resumed_events(
    state: AppState,
    caller: Caller,
    located: Located,
    from: OutputOffsets,
    slot: StreamSlot,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let _slot = slot;
        let id = located.id();
        tokio::select! {
            () = tx.closed() => {
                tracing::info!(execution = %id, "resumed stream client went away");
            }
            () = pump_resumed(&state, &caller, &located, from, &tx) => {}
        }
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

async fn pump_resumed(
    state: &AppState,
    caller: &Caller,
    located: &Located,
    from: OutputOffsets,
    tx: &mpsc::Sender<Event>,
) {
    let sink = SseSink::new(tx.clone(), from);
    let event = match follow_resumed(state, caller, located, from, &sink).await {
        Ok(response) => Event::default()
            .event("result")
            .data(serde_json::to_string(&response).unwrap_or_default()),
        Err(error) => error_event(&error),
    };
    let _ = tx.send(event).await;
}

async fn follow_resumed(
    state: &AppState,
    caller: &Caller,
    located: &Located,
    from: OutputOffsets,
    sink: &SseSink,
) -> ApiResult<ExecuteResponse> {
    let ns = caller.namespace.as_str();
    let id = located.id();
    let wait = crate::shared::deadlines::result_wait(u64::from(
        crate::crd::MAX_TIMEOUT_SECONDS.unsigned_abs(),
    ));
    let (pod, run_id) = match &located.found {
        Found::Live(execution) => {
            let running = crate::api::cluster::wait_execution(
                &*state.cluster,
                ns,
                &located.name,
                wait,
                is_started,
            )
            .await?
            .ok_or_else(|| ApiError::internal("stream", "execution deleted"))?;
            let pod = running
                .status
                .as_ref()
                .and_then(|s| s.pod_name.clone())
                .unwrap_or_default();
            (pod, execution.metadata.uid.clone().unwrap_or_default())
        }
        Found::Stored { run_id, .. } => (located.pod.clone().unwrap_or_default(), run_id.clone()),
    };
    let followed = tokio::time::timeout(
        wait,
        forward_output(state, ns, &pod, &run_id, &id, from, sink),
    )
    .await;
    if followed.is_err() {
        tracing::warn!(execution = %id, "following the run's output passed its deadline");
    }
    if matches!(located.found, Found::Live(_)) {
        if let Some(finished) = crate::api::cluster::wait_execution(
            &*state.cluster,
            ns,
            &located.name,
            wait,
            is_finished,
        )
        .await?
        {
            if is_finished(&finished) {
                return outcome(&finished, &[]);
            }
        }
    }
    // The Execution is gone (or went while we followed): the run directory answers.
    let again = locate(state, caller, &id).await?;
    let now = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
    record_of(&again, ns, Keeping::of(state), now)?
        .ok_or(ApiError::ExecutionTimeout(wait.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, started_at: u64) -> RunSummary {
        RunSummary {
            name: name.into(),
            run_id: format!("uid-{name}"),
            state: "finished".into(),
            started_at,
            finished_at: Some(started_at + 1),
            exit_code: Some(0),
        }
    }

    fn names(runs: &[RunSummary]) -> Vec<&str> {
        runs.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn pages_walk_every_run_once_newest_first() {
        let runs = vec![
            run("exe-a", 10),
            run("exe-b", 30),
            run("exe-c", 20),
            run("exe-d", 30),
            run("exe-e", 5),
        ];
        let (first, next) = page(runs.clone(), None, 2);
        assert_eq!(names(&first), ["exe-d", "exe-b"]);
        let next = next.expect("more");
        // The cursor survives its text form.
        let next = Cursor::parse(&next.to_string()).expect("parses");
        let (second, next) = page(runs.clone(), Some(next), 2);
        assert_eq!(names(&second), ["exe-c", "exe-a"]);
        let (third, next) = page(runs.clone(), next, 2);
        assert_eq!(names(&third), ["exe-e"]);
        assert_eq!(next, None);
        let (all, none) = page(runs, None, 5);
        assert_eq!(all.len(), 5);
        assert_eq!(none, None, "no cursor after the last page");
    }

    #[test]
    fn bad_cursors_and_limits_name_their_field() {
        for bad in ["", "x", "12", "12.", "x.exe-a", "12.EXE", "12.a/b"] {
            match Cursor::parse(bad) {
                Err(ApiError::Invalid { field, .. }) => assert_eq!(field, "cursor", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(
            matches!(page_limit(Some(0)), Err(ApiError::Invalid { field, .. }) if field == "limit")
        );
        assert!(page_limit(Some(101)).is_err());
        assert_eq!(page_limit(None).ok(), Some(DEFAULT_PAGE));
    }

    #[test]
    fn only_runs_within_the_retention_are_listed() {
        let mut running = run("exe-r", 1);
        running.finished_at = None;
        running.state = "running".into();
        let kept = recent(
            vec![run("exe-old", 1), run("exe-new", 9_000), running],
            Duration::from_secs(5),
            10_000,
        );
        assert_eq!(names(&kept), ["exe-new", "exe-r"]);
    }

    fn stored(result: ExecResult) -> Located {
        Located {
            name: "exe-a".into(),
            session: "ses-1".into(),
            pod: Some("p".into()),
            found: Found::Stored {
                run_id: "uid-1".into(),
                status: Box::new(RunStatus::Finished(result)),
            },
        }
    }

    #[test]
    fn stored_results_are_verified_and_expire() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let key = ResultKey::derive(secret, "t", "exe-a", "uid-1").expect("long enough");
        let hour = Duration::from_secs(3600);
        let keeping = Keeping {
            secret: Some(secret),
            retention: hour,
        };
        let mut result = ExecResult {
            run_id: "uid-1".into(),
            exit_code: 3,
            stdout: "real".into(),
            finished_at: 1_000,
            ..Default::default()
        };
        key.seal(&mut result);
        let answer = record_of(&stored(result.clone()), "t", keeping, 2_000).expect("verified");
        let answer = answer.expect("finished");
        assert_eq!((answer.exit_code, answer.stdout.as_str()), (3, "real"));
        assert_eq!(answer.execution_id, "exe-a.ses-1");

        let too_late = record_of(&stored(result.clone()), "t", keeping, 1_000 + 3_600_001);
        assert!(
            matches!(too_late, Err(ApiError::Gone { code, .. }) if code == codes::EXECUTION_EXPIRED)
        );

        // User code rewrote the stored result: refused, not answered.
        let mut forged = result.clone();
        forged.exit_code = 0;
        let refused = record_of(&stored(forged), "t", keeping, 2_000);
        assert!(
            matches!(refused, Err(ApiError::ExecutionFailed { reason, .. }) if reason == "ResultNotVerified")
        );
        // Another tenant's namespace derives another key.
        assert!(record_of(&stored(result.clone()), "u", keeping, 2_000).is_err());
        // Without the secret, nothing outlives the Execution.
        let without = Keeping {
            secret: None,
            retention: hour,
        };
        assert!(matches!(
            record_of(&stored(result), "t", without, 2_000),
            Err(ApiError::Gone { .. })
        ));
    }
}
