//! `POST /execute`: one Execution per request, in the caller's namespace. The api validates
//! everything, delivers large files, stores env values in a Secret, creates the Execution, and
//! then watches it to the end (or streams it, see [`crate::api::stream`]).

use std::{collections::BTreeMap, time::Instant};

use axum::{
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{api::ObjectMeta, Resource};

use super::{
    executions::{record_of, resume_offsets, stored_run, Found, Keeping, Located},
    ready_session,
    sessions::{idempotency_key, REQUEST_HASH_ANNOTATION},
};
use crate::{
    api::{
        auth::Caller,
        cluster::Created,
        errors::{codes, ApiError, ApiResult},
        extract::{item_limits, parse_json_bounded, JsonBody},
        files::{
            choose_delivery, code_delivery, inline_specs, plan_files, stage_code, stream_files,
            Delivery, PlannedFile,
        },
        keys::{random_name_suffix, sha256_hex},
        model::{ExecuteRequest, ExecuteResponse},
        outcome::{is_finished, outcome, outcome_label, SealedRun, Started},
        quota::{stored_bytes, Reservation, StreamSlot},
        state::AppState,
        stream,
        tiers::TierLimits,
    },
    crd::{
        labels,
        validate::{self, env_name, validate_execution},
        EnvFromSource, Execution, ExecutionSpec, SecretReference, SessionReference,
        DEFAULT_WORKING_DIR,
    },
    shared::deadlines::result_wait,
};

/// Response header of a streamed execute: the execution's id (`GET /executions/{id}`).
pub const EXECUTION_ID_HEADER: &str = "x-execution-id";
/// Label naming the key that created an Execution.
pub const KEY_LABEL: &str = "kubexec.dev/api-key-id";
/// Label naming the Execution an env Secret belongs to.
pub const EXECUTION_LABEL: &str = "kubexec.dev/execution";
/// Most bytes of env names and values together (a Secret holds at most 1 MiB).
pub const MAX_ENV_BYTES: usize = 512 * 1024;
/// Largest `code` or `command` (the Execution's own limit).
pub const MAX_SOURCE_BYTES: usize = 256 * 1024;

/// A validated execute request.
#[derive(Debug)]
pub struct ExecutePlan<'r> {
    /// The session id.
    pub session: String,
    /// Code (run with Bun).
    pub code: Option<String>,
    /// Shell command.
    pub command: Option<String>,
    /// Timeout in seconds; `None` takes the session's default.
    pub timeout: Option<i32>,
    /// Absolute working directory.
    pub working_dir: Option<String>,
    /// Files to write.
    pub files: Vec<PlannedFile<'r>>,
    /// How they are delivered.
    pub delivery: Delivery,
    /// How the code is delivered: inline, or staged in the workspace when it is large.
    pub code_delivery: Delivery,
    /// Environment variables (values are secrets).
    pub env: &'r BTreeMap<String, String>,
    /// Stream the output.
    pub stream: bool,
    /// With an `Idempotency-Key`: the Execution's name derived from it, and the request's hash.
    pub idempotent: Option<Idempotent>,
}

/// An execute with an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotent {
    /// The Execution's name: `exe-` + 24 hex digits of SHA-256(tenant, key), so that two
    /// requests with one key cannot make two Executions.
    pub name: String,
    /// SHA-256 of what the request asks for (session, code or command, files, env, timeout,
    /// working directory); a retry with another is 409 `IDEMPOTENCY_CONFLICT`.
    pub request_hash: String,
}

impl Idempotent {
    /// The name and hash for `key`, sent by `caller` with `request`.
    pub fn of(caller: &Caller, key: &str, request: &ExecuteRequest<'_>) -> Self {
        let digest = sha256_hex(format!("execute\0{}\0{key}", caller.tenant).as_bytes());
        let files: Vec<_> = request
            .files
            .iter()
            .map(|f| serde_json::json!([f.path, sha256_hex(f.content.as_bytes()), f.encoding]))
            .collect();
        let asked = serde_json::json!({
            "sessionId": request.session_id,
            "code": request.code,
            "command": request.command,
            "files": files,
            "env": request.env,
            "timeout": request.timeout,
            "workingDir": request.working_dir,
        });
        Self {
            name: format!("exe-{}", &digest[..24]),
            request_hash: sha256_hex(asked.to_string().as_bytes()),
        }
    }
}

/// Validates a request against the caller's tier. Nothing is created by this; every 400 and
/// 413 is decided here.
pub fn plan_execute<'r>(
    request: &'r ExecuteRequest<'r>,
    limits: &TierLimits,
) -> ApiResult<ExecutePlan<'r>> {
    if request.session_id.is_empty() {
        return Err(ApiError::invalid("sessionId", "is required"));
    }
    let (code, command) = code_or_command(request)?;
    let timeout = timeout_within(request.timeout, limits)?;
    let working_dir = match request.working_dir.as_deref() {
        None | Some("") => None,
        Some(dir) => Some(absolute_working_dir(dir)?),
    };
    check_env(&request.env, limits)?;
    let files = plan_files(&request.files, limits)?;
    let delivery = choose_delivery(&files);
    let code_delivery = code_delivery(code.as_deref());
    Ok(ExecutePlan {
        session: request.session_id.clone(),
        code,
        command,
        timeout,
        working_dir,
        files,
        delivery,
        code_delivery,
        env: &request.env,
        stream: request.stream,
        idempotent: None,
    })
}

/// Exactly one of `code` and `command` (an empty one counts as unset), within the size limit.
fn code_or_command(request: &ExecuteRequest<'_>) -> ApiResult<(Option<String>, Option<String>)> {
    let code = request.code.clone().filter(|c| !c.is_empty());
    let command = request.command.clone().filter(|c| !c.is_empty());
    match (&code, &command) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "code",
                "set exactly one of code and command, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "code",
                "either code or command must be provided",
            ))
        }
        _ => {}
    }
    for (field, text) in [("code", &code), ("command", &command)] {
        if let Some(text) = text {
            if text.len() > MAX_SOURCE_BYTES {
                return Err(ApiError::TooLarge {
                    code: codes::PAYLOAD_TOO_LARGE,
                    field: Some(field.into()),
                    message: format!("{field} is larger than {MAX_SOURCE_BYTES} bytes; write it as a file instead"),
                    limit: MAX_SOURCE_BYTES as u64,
                });
            }
            if text.contains('\0') {
                return Err(ApiError::invalid(field, "must not contain NUL"));
            }
        }
    }
    Ok((code, command))
}

/// The requested timeout, if any, between 1 second and the tier's longest.
fn timeout_within(timeout: Option<i64>, limits: &TierLimits) -> ApiResult<Option<i32>> {
    match timeout {
        None => Ok(None),
        Some(t) if t >= 1 && t <= i64::from(limits.timeout_seconds) => Ok(i32::try_from(t).ok()),
        Some(_) => Err(ApiError::invalid(
            "timeout",
            format!(
                "must be between 1 and {} seconds on this tier",
                limits.timeout_seconds
            ),
        )),
    }
}

/// The env variables: as many as the tier allows, valid names, no NUL, within the Secret's size.
fn check_env(env: &BTreeMap<String, String>, limits: &TierLimits) -> ApiResult<()> {
    if env.len() > limits.env_vars {
        return Err(ApiError::invalid_with(
            codes::TOO_MANY_ENV_VARS,
            "env",
            format!(
                "at most {} environment variables on this tier, got {}",
                limits.env_vars,
                env.len()
            ),
        ));
    }
    let mut env_bytes = 0;
    for (name, value) in env {
        env_name(&format!("env.{name}"), name).map_err(ApiError::from_validation)?;
        if value.contains('\0') {
            return Err(ApiError::invalid(
                format!("env.{name}"),
                "must not contain NUL",
            ));
        }
        env_bytes += name.len() + value.len();
    }
    if env_bytes > MAX_ENV_BYTES {
        return Err(ApiError::TooLarge {
            code: codes::PAYLOAD_TOO_LARGE,
            field: Some("env".into()),
            message: format!("environment variables exceed {MAX_ENV_BYTES} bytes in total"),
            limit: MAX_ENV_BYTES as u64,
        });
    }
    Ok(())
}

fn absolute_working_dir(dir: &str) -> ApiResult<String> {
    let absolute = if dir.starts_with('/') {
        dir.trim_end_matches('/').to_string()
    } else {
        format!("{DEFAULT_WORKING_DIR}/{}", dir.trim_end_matches('/'))
    };
    let absolute = if absolute.is_empty() {
        "/".to_string()
    } else {
        absolute
    };
    validate::working_dir("workingDir", &absolute).map_err(ApiError::from_validation)?;
    Ok(absolute)
}

/// The Execution of a plan (files inline or already streamed), and the name of its env Secret.
pub fn build_execution(
    name: &str,
    caller: &Caller,
    plan: &ExecutePlan<'_>,
    ttl: i32,
) -> (Execution, Option<Secret>) {
    let secret_name = format!("{name}-env");
    let env_secret = (!plan.env.is_empty()).then(|| Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.clone()),
            namespace: Some(caller.namespace.clone()),
            labels: Some(BTreeMap::from([
                (
                    labels::MANAGED_BY.to_string(),
                    labels::MANAGED_BY_VALUE.to_string(),
                ),
                (EXECUTION_LABEL.to_string(), name.to_string()),
            ])),
            ..Default::default()
        },
        string_data: Some(plan.env.clone()),
        type_: Some("Opaque".into()),
        ..Default::default()
    });
    let spec = ExecutionSpec {
        session_ref: SessionReference {
            name: plan.session.clone(),
        },
        code: match plan.code_delivery {
            Delivery::Inline => plan.code.clone(),
            Delivery::Streamed => None,
        },
        staged_code: match plan.code_delivery {
            Delivery::Inline => None,
            Delivery::Streamed => Some(name.to_string()),
        },
        command: plan.command.clone(),
        files: match plan.delivery {
            Delivery::Inline => inline_specs(&plan.files),
            Delivery::Streamed => Vec::new(),
        },
        env: Vec::new(),
        env_from: env_secret.as_ref().map(|_| EnvFromSource {
            secret_ref: SecretReference {
                name: secret_name.clone(),
            },
        }),
        timeout_seconds: plan.timeout,
        working_dir: plan.working_dir.clone(),
        stdin: None,
        ttl_seconds_after_finished: Some(ttl),
    };
    let mut execution = Execution::new(name, spec);
    execution.metadata.namespace = Some(caller.namespace.clone());
    execution.metadata.labels = Some(BTreeMap::from([
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
        (labels::SESSION.to_string(), plan.session.clone()),
        (KEY_LABEL.to_string(), caller.key_id.clone()),
    ]));
    (execution, env_secret)
}

/// Delivers large files, stores env values, and creates the Execution. On failure, removes
/// what it created (files already renamed into the workspace stay: they were written whole).
pub async fn start_execution(
    state: &AppState,
    caller: &Caller,
    plan: &ExecutePlan<'_>,
    mut reservation: Reservation,
) -> ApiResult<Started> {
    let begun = std::time::Instant::now();
    let ready = ready_session(state, caller, &plan.session).await?;
    let ready_after = begun.elapsed();
    let ns = caller.namespace.as_str();
    let name = match &plan.idempotent {
        Some(idempotent) => idempotent.name.clone(),
        None => format!(
            "exe-{}",
            random_name_suffix(12).map_err(ApiError::internal_from("random name"))?
        ),
    };
    let (mut execution, env_secret) =
        build_execution(&name, caller, plan, state.settings.execution_ttl);
    if let Some(idempotent) = &plan.idempotent {
        execution.metadata.annotations = Some(BTreeMap::from([(
            REQUEST_HASH_ANNOTATION.to_string(),
            idempotent.request_hash.clone(),
        )]));
    }
    // The same checks the apiserver's schema makes; a failure here is a bug, not bad input.
    validate_execution(&execution.spec).map_err(ApiError::internal_from("execution spec"))?;
    // Charged before anything is created: a refusal leaves nothing behind.
    reservation.charge(
        stored_bytes(&execution.spec, plan.env),
        &caller.limits,
        Instant::now(),
    )?;

    let streamed_files = match plan.delivery {
        Delivery::Streamed => {
            stream_files(&*state.cluster, ns, &ready.pod, &plan.files, &caller.limits).await?
        }
        Delivery::Inline => Vec::new(),
    };
    if let (Delivery::Streamed, Some(code)) = (plan.code_delivery, &plan.code) {
        stage_code(&*state.cluster, ns, &ready.pod, &name, code).await?;
    }
    if let Some(secret) = &env_secret {
        state.cluster.create_secret(ns, secret).await?;
    }
    // Before the create, so that no version is missed and nothing is read back.
    let watch = state.cluster.watch_execution(ns, &name);
    let created = create_or_remove_secret(state, ns, &execution, env_secret.as_ref()).await?;
    if let Some(secret) = &env_secret {
        own_env_secret(state, ns, &name, secret, &created).await;
    }
    let timeout = plan.timeout.unwrap_or_else(|| {
        ready
            .session
            .spec
            .default_timeout_seconds
            .unwrap_or(crate::crd::DEFAULT_TIMEOUT_SECONDS)
    });
    let result_timeout = result_wait(u64::try_from(timeout).unwrap_or(30));
    let ttl =
        std::time::Duration::from_secs(u64::try_from(state.settings.execution_ttl).unwrap_or(0));
    let charge = reservation.created(result_timeout, ttl, Instant::now());
    let collecting = crate::api::run_gc::Collecting {
        interval: state.settings.run_gc_interval,
        retention: state.settings.result_retention,
    };
    crate::api::run_gc::maybe_collect(
        &state.cluster,
        &state.run_gc,
        collecting,
        &caller.limits,
        (ns, &plan.session, &ready.pod),
    );
    tracing::info!(
        execution = %name,
        session = %plan.session,
        ready_ms = ready_after.as_millis() as u64,
        created_ms = begun.elapsed().as_millis() as u64,
        "execution created"
    );
    Ok(Started {
        sealed: state
            .settings
            .answer_from_runner
            .then(|| SealedRun::of(ns, &name, &plan.session, created.metadata.uid.as_deref()))
            .flatten(),
        name,
        namespace: ns.to_string(),
        streamed_files,
        pod: ready.pod,
        result_timeout,
        charge,
        watch: tokio::sync::Mutex::new(watch),
    })
}

/// Creates the Execution; if that fails, removes its env Secret, which nothing would use.
async fn create_or_remove_secret(
    state: &AppState,
    ns: &str,
    execution: &Execution,
    env_secret: Option<&Secret>,
) -> ApiResult<Execution> {
    match state.cluster.create_execution(ns, execution).await {
        Ok(Created::New(created)) => Ok(created),
        failed => {
            if let Some(secret) = env_secret {
                let secret_name = secret.metadata.name.as_deref().unwrap_or_default();
                if let Err(e) = state.cluster.delete_secret(ns, secret_name).await {
                    tracing::warn!(error = %e, "could not remove the env Secret of a failed create");
                }
            }
            Err(match failed {
                Err(e) => e,
                _ => ApiError::internal("create execution", "name collision"),
            })
        }
    }
}

/// Makes the created Execution an owner of its env Secret, so the Secret goes with it.
async fn own_env_secret(
    state: &AppState,
    ns: &str,
    name: &str,
    secret: &Secret,
    created: &Execution,
) {
    let Some(owner) = created.controller_owner_ref(&()) else {
        return;
    };
    let secret_name = secret.metadata.name.as_deref().unwrap_or_default();
    let owner = OwnerReference {
        controller: Some(false),
        block_owner_deletion: None,
        ..owner
    };
    // The Execution runs either way; without the owner the Secret only outlives it.
    if let Err(e) = state.cluster.own_secret(ns, secret_name, owner).await {
        tracing::warn!(error = %e, execution = %name, "could not set the env Secret's owner");
    }
}

/// Runs code or a command in a session.
#[utoipa::path(post, path = "/execute", tag = "execution",
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "The result; with `stream: true`, Server-Sent Events `stdout`, `stderr`, then `result` (or `error`)", 
            content((ExecuteResponse = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "Bad input, naming the field", body = crate::api::errors::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 404, description = "No such session", body = crate::api::errors::ErrorBody),
        (status = 413, description = "A file or the body is too large", body = crate::api::errors::ErrorBody),
        (status = 429, description = "Rate limited, or a tenant quota exceeded (QUOTA_EXCEEDED)", body = crate::api::errors::ErrorBody),
        (status = 503, description = "The session did not become ready in time", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn execute(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ExecuteBody { reservation, body }: ExecuteBody,
) -> Response {
    match execute_inner(&state, &caller, &headers, reservation, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// The tenant's place for one more unfinished Execution (429 `QUOTA_EXCEEDED` when there is
/// none), taken before anything of the request is read or created.
pub fn reserve_execution(state: &AppState, caller: &Caller) -> ApiResult<Reservation> {
    // Nobody waits for an Execution longer than the session's start and its longest run.
    let live_for = state.settings.session_ready_timeout
        + result_wait(u64::from(caller.limits.timeout_seconds));
    state
        .quotas
        .reserve(&caller.namespace, &caller.limits, live_for, Instant::now())
}

/// The body of `POST /execute`, read only once the tenant has a place for one more unfinished
/// Execution: a flood of large requests is refused (429 `QUOTA_EXCEEDED`) without buffering
/// its bodies.
pub struct ExecuteBody {
    /// The tenant's place for the Execution.
    pub reservation: Reservation,
    /// The raw JSON body.
    pub body: Bytes,
}

impl FromRequest<AppState> for ExecuteBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = req
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized("missing API key"))?;
        match reserve_execution(state, &caller) {
            Ok(reservation) => {
                let JsonBody(body) = JsonBody::from_request(req, state).await?;
                Ok(ExecuteBody { reservation, body })
            }
            Err(refused) => {
                state
                    .quotas
                    .discard(req.into_body(), caller.limits.max_request_bytes)
                    .await;
                Err(refused)
            }
        }
    }
}

async fn execute_inner(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    reservation: Reservation,
    body: Bytes,
) -> ApiResult<Response> {
    let begun = std::time::Instant::now();
    let request: ExecuteRequest<'_> = parse_json_bounded(&body, item_limits(&caller.limits))?;
    let mut plan = plan_execute(&request, &caller.limits)?;
    plan.idempotent = idempotency_key(headers)?.map(|key| Idempotent::of(caller, &key, &request));
    let stream_slot = match plan.stream {
        true => Some(state.quotas.open_stream(&caller.key_id, &caller.limits)?),
        false => None,
    };
    let (started, stream_slot) = match &plan.idempotent {
        Some(idempotent) => {
            match replay(
                state,
                caller,
                headers,
                &plan,
                idempotent,
                reservation,
                stream_slot,
            )
            .await?
            {
                Replay::Answered(response) => return Ok(response),
                Replay::Fresh(reservation, slot) => (
                    start_execution(state, caller, &plan, reservation).await,
                    slot,
                ),
            }
        }
        None => (
            start_execution(state, caller, &plan, reservation).await,
            stream_slot,
        ),
    };
    let started = started?;
    let created_after = begun.elapsed();
    let wants_stream = plan.stream;
    let session = plan.session.clone();
    // The request body (possibly large files) is no longer needed while the run is awaited.
    drop(plan);
    drop(request);
    drop(body);
    if wants_stream {
        let id = crate::api::outcome::execution_id(&started.name, &session);
        let mut response = stream::execution_events(
            state.clone(),
            caller.namespace.clone(),
            started,
            stream_slot,
        )
        .into_response();
        // The stream's client learns the id at once, to look the execution up (or resume
        // its stream at `GET /executions/{id}/events`) if the connection drops.
        if let Ok(value) = axum::http::HeaderValue::from_str(&id) {
            response.headers_mut().insert(EXECUTION_ID_HEADER, value);
        }
        return Ok(response);
    }
    let result = await_outcome(state, &started).await;
    tracing::debug!(
        execution = %started.name,
        created_ms = created_after.as_millis() as u64,
        total_ms = begun.elapsed().as_millis() as u64,
        "execution answered"
    );
    Ok(Json(result?).into_response())
}

/// What an idempotent execute found.
enum Replay {
    /// The key's execution exists (or existed): this is its answer.
    Answered(Response),
    /// The key is new: create the execution, with the reservation and stream slot.
    Fresh(Reservation, Option<StreamSlot>),
}

/// The answer of a retried execute: the same execution, never a second run. While its
/// Execution exists, it is waited for (or streamed, from `Last-Event-ID`) like a new one;
/// after that, the run directory answers, as `GET /executions/{id}` does.
async fn replay(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    plan: &ExecutePlan<'_>,
    idempotent: &Idempotent,
    reservation: Reservation,
    slot: Option<StreamSlot>,
) -> ApiResult<Replay> {
    let name = idempotent.name.as_str();
    let existing = crate::api::cluster::wait_execution(
        &*state.cluster,
        &caller.namespace,
        name,
        std::time::Duration::ZERO,
        |_| true,
    )
    .await?;
    let located = match existing {
        Some(execution) => {
            let stored_hash = execution
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REQUEST_HASH_ANNOTATION));
            if stored_hash != Some(&idempotent.request_hash)
                || execution.spec.session_ref.name != plan.session
            {
                return Err(ApiError::Conflict {
                    code: codes::IDEMPOTENCY_CONFLICT,
                    message: "this Idempotency-Key was used for a different request".into(),
                });
            }
            Located {
                name: name.into(),
                session: plan.session.clone(),
                pod: None,
                found: Found::Live(Box::new(execution)),
            }
        }
        None => {
            let ready = ready_session(state, caller, &plan.session).await?;
            let named = stored_run(state, caller, &ready.pod, name).await?;
            match named.run_id {
                Some(run_id) if named.status != kubexec_runner::protocol::RunStatus::Unknown => {
                    Located {
                        name: name.into(),
                        session: plan.session.clone(),
                        pod: Some(ready.pod),
                        found: Found::Stored {
                            run_id,
                            status: Box::new(named.status),
                        },
                    }
                }
                _ => return Ok(Replay::Fresh(reservation, slot)),
            }
        }
    };
    tracing::info!(
        execution = name,
        "idempotent execute answered with the existing execution"
    );
    if let Some(slot) = slot {
        let offsets = resume_offsets(headers)?;
        let events = super::executions::resumed_events(
            state.clone(),
            caller.clone(),
            located,
            offsets,
            slot,
        );
        return Ok(Replay::Answered(events.into_response()));
    }
    drop(reservation);
    if let Found::Live(execution) = &located.found {
        if !is_finished(execution) {
            let finished = crate::api::cluster::wait_execution(
                &*state.cluster,
                &caller.namespace,
                name,
                result_wait(u64::from(crate::crd::MAX_TIMEOUT_SECONDS.unsigned_abs())),
                is_finished,
            )
            .await?;
            return match finished {
                Some(execution) if is_finished(&execution) => Ok(Replay::Answered(
                    Json(outcome(&execution, &[])?).into_response(),
                )),
                _ => Err(ApiError::ExecutionTimeout(
                    crate::crd::MAX_TIMEOUT_SECONDS.unsigned_abs().into(),
                )),
            };
        }
    }
    let now = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
    match record_of(&located, &caller.namespace, Keeping::of(state), now)? {
        Some(result) => Ok(Replay::Answered(Json(result).into_response())),
        None => Ok(Replay::Answered(
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({
                    "executionId": located.id(),
                    "status": "running",
                })),
            )
                .into_response(),
        )),
    }
}

/// Waits for a started Execution's result and counts its outcome: the answer of a
/// non-streaming execute. The runner's sealed result answers as soon as it exists; the final
/// status (watched) answers when the api cannot verify the runner's, or has it first.
pub async fn await_outcome(state: &AppState, started: &Started) -> ApiResult<ExecuteResponse> {
    let result = crate::api::stream::settle(state, started, &()).await;
    state.metrics.execution(outcome_label(&result));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::extract::parse_json;

    fn request(json: &str) -> ExecuteRequest<'_> {
        parse_json(json.as_bytes()).expect("parses")
    }

    fn field_of(json: &str) -> String {
        match plan_execute(&request(json), &TierLimits::free()) {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected a 400 for {json}, got {other:?}"),
        }
    }

    #[test]
    fn bad_requests_name_their_field() {
        assert_eq!(field_of(r#"{"sessionId":"s"}"#), "code");
        assert_eq!(
            field_of(r#"{"sessionId":"s","code":"1","command":"true"}"#),
            "code"
        );
        assert_eq!(
            field_of(r#"{"sessionId":"s","code":"1","timeout":0}"#),
            "timeout"
        );
        assert_eq!(
            field_of(r#"{"sessionId":"s","code":"1","timeout":31}"#),
            "timeout"
        );
        assert_eq!(
            field_of(r#"{"sessionId":"s","code":"1","env":{"A=B":"x"}}"#),
            "env.A=B"
        );
        assert_eq!(
            field_of(r#"{"sessionId":"s","code":"1","env":{"KUBEXEC_PIDS_LIMIT":"99999"}}"#),
            "env.KUBEXEC_PIDS_LIMIT"
        );
        assert_eq!(
            field_of(r#"{"sessionId":"s","code":"1","workingDir":"/tmp"}"#),
            "workingDir"
        );
        assert_eq!(
            field_of(r#"{"sessionId":"s","code":"1","files":[{"path":"../x","content":""}]}"#),
            "files[0].path"
        );
        let env: serde_json::Map<String, serde_json::Value> = (0..101)
            .map(|i| (format!("V{i}"), serde_json::json!("x")))
            .collect();
        let many = serde_json::json!({"sessionId": "s", "code": "1", "env": env}).to_string();
        assert_eq!(field_of(&many), "env");
    }

    #[test]
    fn a_plan_becomes_an_execution_without_env_values() {
        let req = request(
            r#"{"sessionId":"ses-a","command":"echo $TOKEN","env":{"TOKEN":"s3cret"},
                "files":[{"path":"a.txt","content":"hi"}],"timeout":10,"workingDir":"app"}"#,
        );
        let plan = plan_execute(&req, &TierLimits::free()).expect("valid");
        assert_eq!(plan.working_dir.as_deref(), Some("/workspace/app"));
        let caller = crate::api::auth::Caller {
            key_id: "k1".into(),
            tenant: "t".into(),
            namespace: "kubexec-t".into(),
            tier: crate::api::tiers::Tier::Free,
            limits: TierLimits::free(),
        };
        let (execution, secret) = build_execution("exe-1", &caller, &plan, 60);
        let yaml = serde_json::to_string(&execution).expect("json");
        assert!(!yaml.contains("s3cret"), "{yaml}");
        assert_eq!(
            execution.spec.env_from.map(|e| e.secret_ref.name),
            Some("exe-1-env".to_string())
        );
        assert_eq!(execution.spec.files.len(), 1);
        assert_eq!(execution.spec.timeout_seconds, Some(10));
        let secret = secret.expect("env secret");
        assert_eq!(
            secret.string_data.and_then(|d| d.get("TOKEN").cloned()),
            Some("s3cret".into())
        );
    }
}
