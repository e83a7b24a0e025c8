//! `POST /files/write`, `GET /files/list`, `GET /files/read`: the runner's file helpers in the
//! session's Pod.

use std::time::Duration;

use axum::{
    body::Body,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    Json,
};
use bytes::Bytes;
use futures::StreamExt;
use jiff::Timestamp;
use kubexec_runner::protocol::{FileKind, FileList};
use tokio::sync::mpsc;

use super::ready_session;
use crate::{
    api::{
        auth::Caller,
        cluster::ByteStream,
        errors::{codes, ApiError, ApiResult},
        extract::{item_limits, parse_json_bounded, ApiQuery, JsonBody},
        file_read::{body_head, body_tail, ContentEncoder, Utf8Text},
        files::{plan_files, stream_files},
        model::{
            Encoding, FileContent, FileInfo, FileListResponse, ListFilesQuery, ReadFileQuery,
            WriteFilesRequest, WriteFilesResponse,
        },
        sandbox_errors::from_sandbox,
        state::AppState,
    },
    crd::validate::workspace_path,
    sandbox::{transfer_deadline, within},
};

/// Most bytes of a listing.
const MAX_LISTING_BYTES: usize = 16 << 20;

/// Writes files into the session's workspace, all or none.
#[utoipa::path(post, path = "/files/write", tag = "files",
    request_body = WriteFilesRequest,
    responses(
        (status = 200, description = "Written", body = WriteFilesResponse),
        (status = 400, description = "Bad input, naming the field", body = crate::api::errors::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 404, description = "No such session", body = crate::api::errors::ErrorBody),
        (status = 413, description = "A file is too large", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn write_files(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Response {
    match write_inner(&state, &caller, &body).await {
        Ok(written) => Json(WriteFilesResponse {
            success: true,
            files_written: written,
        })
        .into_response(),
        Err(error) => error.into_response(),
    }
}

async fn write_inner(state: &AppState, caller: &Caller, body: &[u8]) -> ApiResult<Vec<String>> {
    let request: WriteFilesRequest<'_> = parse_json_bounded(body, item_limits(&caller.limits))?;
    write_to_session(state, caller, &request).await
}

/// Writes a request's files into the session's workspace, all or none; answers their paths.
pub async fn write_to_session(
    state: &AppState,
    caller: &Caller,
    request: &WriteFilesRequest<'_>,
) -> ApiResult<Vec<String>> {
    if request.files.is_empty() {
        return Err(ApiError::invalid("files", "at least one file is required"));
    }
    let files = plan_files(&request.files, &caller.limits)?;
    let ready = ready_session(state, caller, &request.session_id).await?;
    stream_files(
        &*state.cluster,
        &caller.namespace,
        &ready.pod,
        &files,
        &caller.limits,
    )
    .await
}

fn rfc3339_from_ms(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn relative_dir(field: &str, path: Option<&str>) -> ApiResult<String> {
    match path {
        None | Some("") | Some(".") | Some("/workspace") | Some("/workspace/") => Ok(".".into()),
        Some(path) => workspace_path(field, path)
            .map(str::to_string)
            .map_err(|e| ApiError::invalid_with(codes::INVALID_PATH, field, e.message)),
    }
}

/// Lists files of the session's workspace.
#[utoipa::path(get, path = "/files/list", tag = "files",
    params(ListFilesQuery),
    responses(
        (status = 200, description = "The entries", body = FileListResponse),
        (status = 400, description = "Bad input", body = crate::api::errors::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 404, description = "No such session or directory", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_files(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListFilesQuery>,
) -> ApiResult<Json<FileListResponse>> {
    let dir = relative_dir("path", query.path.as_deref())?;
    let ready = ready_session(&state, &caller, &query.session_id).await?;
    let mut args = vec!["ls".to_string(), dir];
    if query.recursive.unwrap_or(false) {
        args.push("--recursive".into());
    }
    let output = state
        .cluster
        .helper(&caller.namespace, &ready.pod, args, MAX_LISTING_BYTES)
        .await
        .map_err(|e| from_sandbox(e, codes::FILE_NOT_FOUND))?;
    let list: FileList = output
        .json()
        .map_err(|e| from_sandbox(e, codes::FILE_NOT_FOUND))?;
    let files = list
        .files
        .into_iter()
        .filter(|f| !f.path.split('/').any(|s| s == ".kubexec"))
        .map(|f| FileInfo {
            path: f.path,
            size: f.size,
            modified: rfc3339_from_ms(f.modified),
            kind: match f.kind {
                FileKind::File => "file",
                FileKind::Directory => "directory",
                FileKind::Symlink => "symlink",
                FileKind::Other => "other",
            }
            .to_string(),
        })
        .collect();
    Ok(Json(FileListResponse { files }))
}

/// Reads one file of the session's workspace (up to the tier's file size), in constant memory
/// (see [`crate::api::file_read`]).
#[utoipa::path(get, path = "/files/read", tag = "files",
    params(ReadFileQuery),
    responses(
        (status = 200, description = "The file", body = FileContent),
        (status = 400, description = "Bad input, or not a regular file", body = crate::api::errors::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 404, description = "No such session or file", body = crate::api::errors::ErrorBody),
        (status = 413, description = "The file is larger than the tier's file size", body = crate::api::errors::ErrorBody),
        (status = 422, description = "The read did not finish in time", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn read_file(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ReadFileQuery>,
) -> Response {
    match read_inner(&state, &caller, query).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn cat_args(path: &str, max_bytes: u64) -> Vec<String> {
    vec![
        "cat".to_string(),
        path.to_string(),
        "--max-bytes".to_string(),
        max_bytes.to_string(),
    ]
}

/// `/files/read` without the extractors: the response streams the file as its JSON body.
pub async fn read_inner(
    state: &AppState,
    caller: &Caller,
    query: ReadFileQuery,
) -> ApiResult<Response> {
    let path = workspace_path("path", &query.path)
        .map_err(|e| ApiError::invalid_with(codes::INVALID_PATH, "path", e.message))?
        .to_string();
    let ready = ready_session(state, caller, &query.session_id).await?;
    let (ns, pod) = (caller.namespace.as_str(), ready.pod.as_str());
    let limit = caller.limits.file_bytes;
    let deadline = transfer_deadline(limit);
    let sandbox_error = |e| from_sandbox(e, codes::FILE_NOT_FOUND);

    // First pass: the size, and whether the file is text, before the answer starts.
    let wants_text = query.encoding != Some(Encoding::Base64);
    let (size, is_text) = within(deadline, async {
        let mut chunks = state
            .cluster
            .read_stream(ns, pod, cat_args(&path, limit + 1))
            .await?;
        let mut size = 0u64;
        let mut text = wants_text.then(Utf8Text::default);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            if size > limit {
                break;
            }
            if text.as_mut().is_some_and(|t| t.push(&chunk).is_err()) {
                text = None;
            }
        }
        Ok((size, text.is_some_and(|t| t.finish().is_ok())))
    })
    .await
    .map_err(sandbox_error)?;
    if size > limit {
        return Err(ApiError::TooLarge {
            code: codes::FILE_TOO_LARGE,
            field: Some("path".into()),
            message: format!("the file is larger than the tier's file size limit of {limit} bytes"),
            limit,
        });
    }
    let encoding = match query.encoding {
        Some(Encoding::Base64) => Encoding::Base64,
        Some(Encoding::Utf8) if !is_text => {
            return Err(ApiError::invalid(
                "encoding",
                "the file is not valid UTF-8; read it with encoding=base64",
            ))
        }
        _ if is_text => Encoding::Utf8,
        _ => Encoding::Base64,
    };

    // Second pass: encoded into the response as it arrives.
    let chunks = state
        .cluster
        .read_stream(ns, pod, cat_args(&path, limit))
        .await
        .map_err(sandbox_error)?;
    let body = encoded_body(path, encoding, chunks, deadline);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The JSON of a [`FileContent`], written as the file's chunks arrive. A read that fails or
/// passes `deadline` midway ends the body early (the client sees a cut response).
fn encoded_body(
    path: String,
    encoding: Encoding,
    mut chunks: ByteStream,
    deadline: Duration,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let pump = async {
            tx.send(Ok(body_head(&path))).await.ok()?;
            let mut encoder = ContentEncoder::new(encoding);
            let mut size = 0u64;
            while let Some(chunk) = chunks.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(error) => {
                        tracing::warn!(%error, path, "reading the file failed midway");
                        tx.send(Err(std::io::Error::other("the read failed")))
                            .await
                            .ok()?;
                        return None;
                    }
                };
                size += chunk.len() as u64;
                tx.send(Ok(encoder.push(&chunk))).await.ok()?;
            }
            tx.send(Ok(encoder.finish())).await.ok()?;
            tx.send(Ok(body_tail(encoding, size))).await.ok()
        };
        if tokio::time::timeout(deadline, pump).await.is_err() {
            tracing::warn!(?deadline, "reading the file passed its deadline");
            let _ = tx
                .send(Err(std::io::Error::other("the read passed its deadline")))
                .await;
        }
    });
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
