//! Preview links on the API's origin (with the API key). The previews themselves are served on
//! origins of their own by the preview listener ([`crate::api::preview`]); nothing of a
//! sandbox is ever served on the API's origin.
//!
//! - `GET /preview/{sessionId}?port=&ttl=`: a link to one port of the session;
//! - `/preview/{sessionId}/{path}` (any method): a redirect (307) to that path of the session's
//!   port 8080, with a fresh link, for clients that open the old previewUrl with their key.

use std::time::Duration;

use axum::{
    extract::{Path, State},
    http::{header, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::find_session;
use crate::{
    api::{
        auth::Caller,
        errors::{codes, ApiError, ApiResult},
        extract::ApiQuery,
        preview::{proxy::port_not_allowed, unix_now, Link, Previews},
        state::AppState,
    },
    layout::PREVIEW_PORT,
};

/// `GET /preview/{id}` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// The sandbox port (default 8080), within the ports the api previews.
    pub port: Option<u16>,
    /// Seconds the link works, 1 to the api's `--preview-token-ttl` (the default).
    pub ttl: Option<u64>,
}

/// A preview link.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreviewLink {
    /// The session.
    pub session_id: String,
    /// The sandbox port.
    pub port: u16,
    /// The URL to open in a browser: the preview's own origin, with a token that works until
    /// `expiresAt` (the first visit trades it for a cookie).
    pub preview_url: String,
    /// When the link stops working (RFC 3339).
    pub expires_at: String,
}

fn previews_of(state: &AppState) -> ApiResult<std::sync::Arc<Previews>> {
    state.previews.clone().ok_or_else(|| ApiError::NotFound {
        code: codes::NOT_FOUND,
        message: "this api serves no previews".into(),
    })
}

fn expires_at(link: &Link) -> String {
    i64::try_from(link.expires)
        .ok()
        .and_then(|secs| jiff::Timestamp::from_second(secs).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A preview link to one port of the session.
#[utoipa::path(get, path = "/preview/{id}", tag = "preview",
    params(("id" = String, Path, description = "Session id"), LinkQuery),
    responses(
        (status = 200, description = "The link", body = PreviewLink),
        (status = 400, description = "A port outside the api's preview ports (PREVIEW_PORT_NOT_ALLOWED), or a bad ttl", body = crate::api::errors::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 404, description = "No such session", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn preview_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<LinkQuery>,
) -> ApiResult<Json<PreviewLink>> {
    let previews = previews_of(&state)?;
    let settings = &previews.settings;
    let port = query.port.unwrap_or(PREVIEW_PORT);
    if !settings.ports.contains(port) {
        return Err(port_not_allowed(port, settings));
    }
    let most = settings.token_ttl.as_secs();
    let ttl = query.ttl.unwrap_or(most);
    if !(1..=most).contains(&ttl) {
        return Err(ApiError::invalid(
            "ttl",
            format!("must be between 1 and {most} seconds"),
        ));
    }
    let session = find_session(&state, &caller, &id).await?;
    let name = session.metadata.name.clone().unwrap_or(id);
    let link = previews.link(
        &caller.key_id,
        &name,
        port,
        Duration::from_secs(ttl),
        unix_now(),
    );
    Ok(Json(PreviewLink {
        session_id: name,
        port,
        preview_url: link.url("/"),
        expires_at: expires_at(&link),
    }))
}

/// Redirects to the root of the session's port 8080 on its preview origin.
#[utoipa::path(get, path = "/preview/{id}/", tag = "preview",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 307, description = "To the session's preview origin, with a fresh link"),
        (status = 404, description = "No such session", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn preview_root(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    redirect(&state, &caller, &id, "", &uri)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Redirects to a path of the session's port 8080 on its preview origin.
#[utoipa::path(get, path = "/preview/{id}/{path}", tag = "preview",
    params(("id" = String, Path, description = "Session id"), ("path" = String, Path, description = "Path on the sandbox's server")),
    responses(
        (status = 307, description = "To the path on the session's preview origin, with a fresh link"),
        (status = 404, description = "No such session", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn preview_path(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, path)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    redirect(&state, &caller, &id, &path, &uri)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn redirect(
    state: &AppState,
    caller: &Caller,
    id: &str,
    path: &str,
    uri: &Uri,
) -> Result<Response, ApiError> {
    let previews = previews_of(state)?;
    let session = find_session(state, caller, id).await?;
    let name = session.metadata.name.clone().unwrap_or_else(|| id.into());
    let link = previews.link(
        &caller.key_id,
        &name,
        PREVIEW_PORT,
        previews.settings.token_ttl,
        unix_now(),
    );
    let path_and_query = match uri.query() {
        Some(query) => format!("/{path}?{query}"),
        None => format!("/{path}"),
    };
    let location = HeaderValue::from_str(&link.url(&path_and_query))
        .map_err(|_| ApiError::invalid("path", "not a valid URL path"))?;
    let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
