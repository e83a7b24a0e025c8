//! `/preview/{sessionId}/...`: HTTP proxied to port 8080 of the session's sandbox, where a
//! server started by an execution (`bun run server.ts &`) listens. The caller's API key is
//! required like on every route; it is not passed on to the sandbox.

use std::time::Duration;

use axum::{
    body::Body,
    extract::{Path, Request, State},
    http::{header, HeaderValue, Uri},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;

use super::find_session;
use crate::api::{auth::Caller, errors::ApiError, state::AppState};

use crate::layout::PREVIEW_PORT;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Proxies to the root of the session's preview port.
#[utoipa::path(get, path = "/preview/{id}/", tag = "preview",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "Whatever the sandbox's port 8080 answers"),
        (status = 404, description = "No such session", body = crate::api::errors::ErrorBody),
        (status = 502, description = "Nothing listens on port 8080", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn preview_root(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    proxy(&state, &caller, &id, "", request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Proxies a path below the session's preview port.
#[utoipa::path(get, path = "/preview/{id}/{path}", tag = "preview",
    params(("id" = String, Path, description = "Session id"), ("path" = String, Path, description = "Path on the sandbox's server")),
    responses(
        (status = 200, description = "Whatever the sandbox's port 8080 answers"),
        (status = 404, description = "No such session", body = crate::api::errors::ErrorBody),
        (status = 502, description = "Nothing listens on port 8080", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn preview_path(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, path)): Path<(String, String)>,
    request: Request,
) -> Response {
    proxy(&state, &caller, &id, &path, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn proxy(
    state: &AppState,
    caller: &Caller,
    id: &str,
    path: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let session = find_session(state, caller, id).await?;
    let ip = session
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or_else(|| ApiError::SessionNotReady {
            session: id.to_string(),
            phase: session.phase().as_str().to_string(),
        })?;
    let authority = if ip.contains(':') {
        format!("[{ip}]:{PREVIEW_PORT}")
    } else {
        format!("{ip}:{PREVIEW_PORT}")
    };
    let target = match request.uri().query() {
        Some(query) => format!("/{path}?{query}"),
        None => format!("/{path}"),
    };
    let (mut parts, body) = request.into_parts();
    parts.uri = target
        .parse::<Uri>()
        .map_err(|_| ApiError::invalid("path", "not a valid URL path"))?;
    parts.headers.remove(header::AUTHORIZATION);
    if let Ok(host) = HeaderValue::from_str(&authority) {
        parts.headers.insert(header::HOST, host);
    }
    let upstream = axum::http::Request::from_parts(parts, body);

    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&authority))
        .await
        .map_err(|_| ApiError::PreviewUnavailable("connect timed out".into()))?
        .map_err(|e| ApiError::PreviewUnavailable(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ApiError::PreviewUnavailable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "preview connection ended");
        }
    });
    let response = sender
        .send_request(upstream)
        .await
        .map_err(|e| ApiError::PreviewUnavailable(e.to_string()))?;
    Ok(response.map(Body::new))
}
