//! The MCP server: `POST /mcp` (streamable HTTP, built on the official Rust SDK `rmcp`).
//!
//! It sits behind the same [`authenticate`](super::auth::authenticate) middleware as every REST
//! route, so one bearer key gives the same tenant, tier, rate limit and body limit over both.
//! Each tool parses its arguments and calls the REST handler or the function the handler
//! calls; there is no second implementation. Errors are MCP tool errors (`isError: true`)
//! whose structured content is the REST error body (`{"error": {"code", "message",
//! "details"}}`), so an agent sees `SESSION_NOT_FOUND` or `INVALID_REQUEST` naming the field.
//!
//! The server is stateless (no `Mcp-Session-Id`): every POST carries its own key and is
//! served by whichever replica gets it, like a REST request. Replies are SSE, so `execute`
//! can send the run's output as progress notifications before its result.

pub mod tools;

use std::{
    borrow::Cow,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use axum::{
    body::Body,
    extract::{Path, Request, State},
    http::{request::Parts, HeaderMap},
    response::{IntoResponse, Response},
    Json,
};
use rmcp::{
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, InitializeResult,
        ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ProgressToken,
        ServerCapabilities, ServerConfig, Tool,
    },
    service::{Peer, RequestContext},
    transport::streamable_http_server::{
        session::never::NeverSessionManager, StreamableHttpServerConfig, StreamableHttpService,
    },
    ErrorData, RoleServer, ServerHandler,
};
use serde::{de::DeserializeOwned, Serialize};

use self::tools::{
    names, CreateSessionArgs, ExecuteArgs, FileArg, KillProcessArgs, ListFilesArgs, NoArgs,
    ReadFileArgs, SessionArgs, WriteFilesArgs,
};
use super::{
    auth::Caller,
    errors::{ApiError, ApiResult},
    extract::{parse_json, ApiJson, ApiQuery},
    model::{
        CreateSessionRequest, ExecuteRequest, FileInput, KillProcessRequest, ListFilesQuery,
        ReadFileQuery, ResourceLimitsRequest, SessionQuery, WriteFilesRequest, WriteFilesResponse,
    },
    routes::{
        execute::{await_outcome, plan_execute, reserve_execution, start_execution},
        files, processes, sessions,
    },
    state::AppState,
    stream::{follow_then_finish, OutputSink, OutputStream},
};

/// The tools over one [`AppState`]; made per request (it holds only shared handles).
#[derive(Clone)]
pub struct KubexecMcp {
    state: AppState,
    tools: Arc<Vec<Tool>>,
}

impl KubexecMcp {
    /// The MCP server over `state`.
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            tools: tools::all(),
        }
    }

    async fn call(
        &self,
        request: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> ApiResult<serde_json::Value> {
        let (caller, headers) = caller_of(context)?;
        let state = &self.state;
        let args = request.arguments.unwrap_or_default();
        match request.name.as_ref() {
            names::CREATE_SESSION => {
                let args: CreateSessionArgs = parse_args(args)?;
                let request = CreateSessionRequest {
                    ttl: args.ttl,
                    metadata: args.metadata,
                    resource_limits: args.resource_limits.map(|r| ResourceLimitsRequest {
                        memory: r.memory,
                        cpu: r.cpu,
                        timeout: r.timeout,
                        disk: r.disk,
                    }),
                };
                let (_, Json(session)) = sessions::create_session(
                    State(state.clone()),
                    caller,
                    headers,
                    ApiJson(request),
                )
                .await?;
                to_value(&session)
            }
            names::LIST_SESSIONS => {
                let NoArgs {} = parse_args(args)?;
                let Json(list) =
                    sessions::list_sessions(State(state.clone()), caller, headers).await?;
                to_value(&list)
            }
            names::DELETE_SESSION => {
                let args: SessionArgs = parse_args(args)?;
                let Json(deleted) =
                    sessions::delete_session(State(state.clone()), caller, Path(args.session_id))
                        .await?;
                to_value(&deleted)
            }
            names::EXECUTE => {
                let args: ExecuteArgs = parse_args(args)?;
                execute(state, &caller, &args, context).await
            }
            names::WRITE_FILES => {
                let args: WriteFilesArgs = parse_args(args)?;
                let request = WriteFilesRequest {
                    session_id: args.session_id,
                    files: file_inputs(&args.files),
                };
                let written = files::write_to_session(state, &caller, &request).await?;
                to_value(&WriteFilesResponse {
                    success: true,
                    files_written: written,
                })
            }
            names::READ_FILE => {
                let args: ReadFileArgs = parse_args(args)?;
                let query = ReadFileQuery {
                    session_id: args.session_id,
                    path: args.path,
                    encoding: args.encoding.map(Into::into),
                };
                // The REST response streams the file; a tool result holds it whole, so it is
                // collected here, bounded by the tier's file size (JSON escaping at most 6x).
                let response = files::read_inner(state, &caller, query).await?;
                let limit = usize::try_from(caller.limits.file_bytes)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(6)
                    .saturating_add(64 << 10);
                let body = axum::body::to_bytes(response.into_body(), limit)
                    .await
                    .map_err(ApiError::internal_from("mcp read_file"))?;
                serde_json::from_slice(&body).map_err(ApiError::internal_from("mcp read_file"))
            }
            names::LIST_FILES => {
                let args: ListFilesArgs = parse_args(args)?;
                let query = ListFilesQuery {
                    session_id: args.session_id,
                    path: args.path,
                    recursive: args.recursive,
                };
                let Json(list) =
                    files::list_files(State(state.clone()), caller, ApiQuery(query)).await?;
                to_value(&list)
            }
            names::LIST_PROCESSES => {
                let args: SessionArgs = parse_args(args)?;
                let query = SessionQuery {
                    session_id: args.session_id,
                };
                let Json(list) =
                    processes::list_processes(State(state.clone()), caller, ApiQuery(query))
                        .await?;
                to_value(&list)
            }
            names::KILL_PROCESS => {
                let args: KillProcessArgs = parse_args(args)?;
                let request = KillProcessRequest {
                    session_id: args.session_id,
                    pid: args.pid,
                    signal: args.signal,
                };
                let Json(killed) =
                    processes::kill_process(State(state.clone()), caller, ApiJson(request)).await?;
                to_value(&killed)
            }
            other => Err(ApiError::invalid(
                "name",
                format!("no tool named {other:?}; tools/list names them"),
            )),
        }
    }
}

/// The caller the [`authenticate`](super::auth::authenticate) middleware recorded on this
/// HTTP request, and its headers (the preview URL's host comes from them).
fn caller_of(context: &RequestContext<RoleServer>) -> ApiResult<(Caller, HeaderMap)> {
    let parts = context
        .extensions
        .get::<Parts>()
        .ok_or(ApiError::Unauthorized("missing API key"))?;
    let caller = parts
        .extensions
        .get::<Caller>()
        .cloned()
        .ok_or(ApiError::Unauthorized("missing API key"))?;
    let mut headers = parts.headers.clone();
    // An MCP create is never an idempotent replay of some REST create.
    headers.remove(sessions::IDEMPOTENCY_KEY);
    Ok((caller, headers))
}

/// A tool's arguments, parsed as a REST body is: a bad one is `INVALID_REQUEST` naming the
/// field.
fn parse_args<T: DeserializeOwned>(
    args: serde_json::Map<String, serde_json::Value>,
) -> ApiResult<T> {
    let bytes = serde_json::to_vec(&serde_json::Value::Object(args))
        .map_err(ApiError::internal_from("tool arguments"))?;
    parse_json(&bytes)
}

fn to_value(value: &impl Serialize) -> ApiResult<serde_json::Value> {
    serde_json::to_value(value).map_err(ApiError::internal_from("tool result"))
}

fn file_inputs(files: &[FileArg]) -> Vec<FileInput<'_>> {
    files
        .iter()
        .map(|f| FileInput {
            path: f.path.clone(),
            content: Cow::Borrowed(f.content.as_str()),
            encoding: f.encoding.into(),
        })
        .collect()
}

/// `execute`: the REST path (plan, start, then the result); with a progress token the run's
/// output is followed as `POST /execute` with `stream: true` follows it.
async fn execute(
    state: &AppState,
    caller: &Caller,
    args: &ExecuteArgs,
    context: &RequestContext<RoleServer>,
) -> ApiResult<serde_json::Value> {
    let request = ExecuteRequest {
        session_id: args.session_id.clone(),
        code: args.code.clone(),
        command: args.command.clone(),
        files: file_inputs(&args.files),
        env: args.env.clone(),
        timeout: args.timeout,
        working_dir: args.working_dir.clone(),
        stream: false,
    };
    let reservation = reserve_execution(state, caller)?;
    let plan = plan_execute(&request, &caller.limits)?;
    let token = context.meta.get_progress_token();
    // Streamed output counts against the key's concurrent streams, as an SSE stream does.
    let stream_slot = match token {
        Some(_) => Some(state.quotas.open_stream(&caller.key_id, &caller.limits)?),
        None => None,
    };
    let started = start_execution(state, caller, &plan, reservation).await?;
    drop(plan);
    let result = match token {
        Some(token) => {
            let sink = ProgressSink {
                peer: context.peer.clone(),
                token,
                bytes: AtomicU64::new(0),
            };
            let followed = follow_then_finish(state, &caller.namespace, &started, &sink).await;
            state
                .metrics
                .execution(super::outcome::outcome_label(&followed));
            drop(stream_slot);
            followed?
        }
        None => await_outcome(state, &started).await?,
    };
    to_value(&result)
}

/// Live output as progress notifications: `progress` counts the bytes so far, `message` is
/// the chunk (stderr prefixed with `[stderr] `).
struct ProgressSink {
    peer: Peer<RoleServer>,
    token: ProgressToken,
    bytes: AtomicU64,
}

impl OutputSink for ProgressSink {
    async fn output(&self, stream: OutputStream, data: &str) -> bool {
        if data.is_empty() {
            return true;
        }
        let len = data.len() as u64;
        let progress = self.bytes.fetch_add(len, Ordering::Relaxed) + len;
        let message = match stream {
            OutputStream::Stdout => data.to_string(),
            OutputStream::Stderr => format!("[stderr] {data}"),
        };
        self.peer
            .notify_progress(
                ProgressNotificationParam::new(self.token.clone(), progress as f64)
                    .with_message(message),
            )
            .await
            .is_ok()
    }
}

/// An [`ApiError`] as a tool error carrying the REST error body; server errors are logged
/// here, as the REST response logs them, and answered without their detail.
fn tool_error(error: &ApiError) -> CallToolResult {
    match error {
        ApiError::Internal { context, detail } => {
            tracing::error!(context, detail = %detail, "tool call failed");
        }
        other => tracing::debug!(error = %other, "tool call refused"),
    }
    let body = serde_json::to_value(error.body()).unwrap_or_default();
    CallToolResult::structured_error(body)
}

impl ServerHandler for KubexecMcp {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("kubexec", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Code-execution sandboxes on Kubernetes. Call create_session once, then \
                 execute code or commands in it (files and background processes persist \
                 between calls), read and write its files, and delete_session when done.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.to_vec()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.clone();
        let cancelled = context.ct.clone();
        let result = tokio::select! {
            result = self.call(request, &context) => result,
            () = cancelled.cancelled() => {
                tracing::info!(tool = %name, "tool call cancelled by the client");
                return Err(ErrorData::internal_error("cancelled", None));
            }
        };
        Ok(match result {
            Ok(value) => CallToolResult::structured(value),
            Err(error) => tool_error(&error),
        }
        .into())
    }
}

/// The streamable HTTP service over `state`: stateless, SSE replies, no `Host` allow-list
/// (every request needs a bearer key, which a DNS-rebinding page cannot send), bodies up to
/// the largest tier's request size.
pub fn service(state: AppState) -> StreamableHttpService<KubexecMcp, NeverSessionManager> {
    let body_limit = usize::try_from(state.tiers.largest_request_bytes()).unwrap_or(usize::MAX);
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(false)
        .with_sse_retry(None)
        .disable_allowed_hosts()
        .with_max_request_body_bytes(body_limit);
    StreamableHttpService::new(
        move || Ok(KubexecMcp::new(state.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// Serves the Model Context Protocol (streamable HTTP, stateless).
#[utoipa::path(post, path = "/mcp", tag = "mcp",
    request_body(content = Object, description = "A JSON-RPC message of the Model Context Protocol", content_type = "application/json"),
    responses(
        (status = 200, description = "The JSON-RPC reply as Server-Sent Events (progress notifications, then the result)", content_type = "text/event-stream", body = String),
        (status = 202, description = "A notification was accepted"),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 429, description = "Rate limited", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn endpoint(State(state): State<AppState>, request: Request) -> Response {
    service(state)
        .handle(request)
        .await
        .map(Body::new)
        .into_response()
}
