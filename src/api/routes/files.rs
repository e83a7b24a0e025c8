//! `POST /files/write`, `GET /files/list`, `GET /files/read`: the runner's file helpers in the
//! session's Pod.

use axum::{extract::State, response::IntoResponse, response::Response, Json};
use base64::{engine::general_purpose::STANDARD, Engine};
use jiff::Timestamp;
use kubexec_runner::protocol::{FileKind, FileList};

use super::ready_session;
use crate::{
    api::{
        auth::Caller,
        errors::{codes, ApiError, ApiResult},
        extract::{parse_json, ApiQuery, JsonBody},
        files::{plan_files, stream_files},
        model::{
            Encoding, FileContent, FileInfo, FileListResponse, ListFilesQuery, ReadFileQuery,
            WriteFilesRequest, WriteFilesResponse,
        },
        sandbox_errors::from_sandbox,
        state::AppState,
    },
    crd::validate::workspace_path,
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
    let request: WriteFilesRequest<'_> = parse_json(body)?;
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

/// Reads one file of the session's workspace (up to the tier's file size).
#[utoipa::path(get, path = "/files/read", tag = "files",
    params(ReadFileQuery),
    responses(
        (status = 200, description = "The file", body = FileContent),
        (status = 400, description = "Bad input", body = crate::api::errors::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 404, description = "No such session or file", body = crate::api::errors::ErrorBody),
        (status = 413, description = "The file is larger than the tier's file size", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn read_file(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ReadFileQuery>,
) -> ApiResult<Json<FileContent>> {
    let path = workspace_path("path", &query.path)
        .map_err(|e| ApiError::invalid_with(codes::INVALID_PATH, "path", e.message))?
        .to_string();
    let ready = ready_session(&state, &caller, &query.session_id).await?;
    let limit = caller.limits.file_bytes;
    let args = vec![
        "cat".to_string(),
        path.clone(),
        "--max-bytes".to_string(),
        (limit + 1).to_string(),
    ];
    let max = usize::try_from(limit + 1).unwrap_or(usize::MAX);
    let output = state
        .cluster
        .helper(&caller.namespace, &ready.pod, args, max)
        .await
        .map_err(|e| from_sandbox(e, codes::FILE_NOT_FOUND))?
        .check()
        .map_err(|e| from_sandbox(e, codes::FILE_NOT_FOUND))?;
    let bytes = output.stdout;
    if bytes.len() as u64 > limit {
        return Err(ApiError::TooLarge {
            code: codes::FILE_TOO_LARGE,
            field: Some("path".into()),
            message: format!("the file is larger than the tier's file size limit of {limit} bytes"),
            limit,
        });
    }
    let size = bytes.len() as u64;
    let (content, encoding) = match query.encoding {
        Some(Encoding::Base64) => (STANDARD.encode(&bytes), Encoding::Base64),
        requested => match String::from_utf8(bytes) {
            Ok(text) => (text, Encoding::Utf8),
            Err(_) if requested == Some(Encoding::Utf8) => {
                return Err(ApiError::invalid(
                    "encoding",
                    "the file is not valid UTF-8; read it with encoding=base64",
                ))
            }
            Err(e) => (STANDARD.encode(e.into_bytes()), Encoding::Base64),
        },
    };
    Ok(Json(FileContent {
        path,
        content,
        encoding,
        size,
    }))
}
