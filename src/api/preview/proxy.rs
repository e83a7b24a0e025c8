//! The preview listener: checks the origin and the token, trades a token in the URL for a
//! cookie, and proxies the request (or the WebSocket) to the session's port.

use std::time::Duration;

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderValue, Method, StatusCode, Uri, Version},
    response::{IntoResponse, Response},
    Router,
};
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use super::{
    config::PreviewSettings,
    headers::{
        set_cookie, strip_credentials, strip_hop_by_hop, take_token_param, token_cookie,
        upgrade_protocol,
    },
    registry::{Kind, Lease, Target},
    token::{Claims, TokenError},
    unix_now,
};
use crate::api::{
    auth::{caller_by_key_id, Caller},
    body_limit::{body_cap, limit_body},
    errors::{codes, ApiError},
    routes::ready_session,
    state::AppState,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The router of the preview listener: every path of every preview origin.
pub fn preview_app(state: AppState) -> Router {
    Router::new().fallback(handle).with_state(state).layer(
        TraceLayer::new_for_http()
            .make_span_with(|request: &Request| {
                let host = request
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!(
                    "preview",
                    method = %request.method(),
                    host = %host,
                    path = %request.uri().path(),
                )
            })
            .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
    )
}

async fn handle(State(state): State<AppState>, request: Request) -> Response {
    serve(&state, request)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// A checked visit: who it is for, and whether the token came in the URL.
struct Visit {
    caller: Caller,
    claims: Claims,
    token: String,
    from_url: bool,
}

fn not_a_preview() -> ApiError {
    ApiError::NotFound {
        code: codes::PREVIEW_NOT_FOUND,
        message: "no preview here: preview origins are <session>-<port>.<preview domain>".into(),
    }
}

/// The session and port of the request's origin, if allowed.
fn target_of(settings: &PreviewSettings, request: &Request) -> Result<(String, u16), ApiError> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .ok_or_else(not_a_preview)?;
    let (session, port) = settings.origin.parse_host(host).ok_or_else(not_a_preview)?;
    if !settings.ports.contains(port) {
        return Err(port_not_allowed(port, settings));
    }
    Ok((session, port))
}

/// 400 for a port outside `--preview-ports`.
pub fn port_not_allowed(port: u16, settings: &PreviewSettings) -> ApiError {
    ApiError::invalid_with(
        codes::PREVIEW_PORT_NOT_ALLOWED,
        "port",
        format!(
            "port {port} cannot be previewed; previews reach ports {}",
            settings.ports
        ),
    )
}

/// Checks the token (from the URL, else the cookie) against the origin and the key.
fn check_visit(
    state: &AppState,
    settings: &PreviewSettings,
    request: &Request,
    session: &str,
    port: u16,
) -> Result<Visit, ApiError> {
    let (in_url, _) = take_token_param(request.uri().query());
    let (token, from_url) = match in_url {
        Some(token) => (token, true),
        None => (
            token_cookie(request.headers()).ok_or_else(|| ApiError::Denied {
                code: codes::PREVIEW_TOKEN_MISSING,
                message: "this preview needs its link (with the kubexec_token parameter): get it from previewUrl or GET /preview/{sessionId}".into(),
            })?,
            false,
        ),
    };
    let claims = settings
        .signer
        .verify(&token, unix_now())
        .map_err(|e| match e {
            TokenError::Invalid => ApiError::Denied {
                code: codes::PREVIEW_TOKEN_INVALID,
                message: e.to_string(),
            },
            TokenError::Expired => ApiError::Denied {
                code: codes::PREVIEW_TOKEN_EXPIRED,
                message: "the preview link has expired; get a new one from previewUrl".into(),
            },
        })?;
    if claims.session != session || claims.port != port {
        return Err(ApiError::Forbidden {
            code: codes::PREVIEW_TOKEN_MISMATCH,
            message: "this preview token is for another session or port".into(),
        });
    }
    let caller = caller_by_key_id(state, &claims.key_id)?;
    Ok(Visit {
        caller,
        claims,
        token,
        from_url,
    })
}

async fn serve(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let previews = state.previews.clone().ok_or_else(not_a_preview)?;
    let settings = &previews.settings;
    let (session, port) = target_of(settings, &request)?;
    let visit = check_visit(state, settings, &request, &session, port)?;
    let max_age = visit.claims.expires.saturating_sub(unix_now());
    let cookie = set_cookie(&visit.token, max_age, settings.origin.is_https());
    let (_, query) = take_token_param(request.uri().query());
    let path_and_query = match &query {
        Some(query) => format!("{}?{query}", request.uri().path()),
        None => request.uri().path().to_string(),
    };
    let upgrade = upgrade_protocol(request.headers());
    if visit.from_url
        && upgrade.is_none()
        && matches!(*request.method(), Method::GET | Method::HEAD)
    {
        // The token leaves the address bar (and the history, and Referer headers) at once.
        return Ok(redirect_with_cookie(&path_and_query, &cookie));
    }
    let ready = ready_session(state, &visit.caller, &session).await?;
    let ip = ready
        .session
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or_else(|| ApiError::SessionNotReady {
            session: session.clone(),
            phase: ready.session.phase().as_str().to_string(),
        })?;
    let kind = match upgrade {
        Some(_) => Kind::Upgrade,
        None => Kind::Http,
    };
    let target = Target {
        key_id: visit.caller.key_id.clone(),
        namespace: visit.caller.namespace.clone(),
        session,
        port,
    };
    let lease = previews.open.open(
        &state.quotas,
        &visit.caller.limits,
        target,
        visit.claims.expires,
        kind,
    )?;
    let request = limit_body(request, body_cap("/preview/", &visit.caller.limits))?;
    let scheme = if settings.origin.is_https() {
        "https"
    } else {
        "http"
    };
    let mut response = forward(request, &ip, port, &path_and_query, scheme, lease).await?;
    if visit.from_url {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

fn redirect_with_cookie(location: &str, cookie: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, value);
    }
    if let Ok(value) = HeaderValue::from_str(cookie) {
        headers.insert(header::SET_COOKIE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn unavailable(port: u16) -> impl Fn(String) -> ApiError {
    move |detail| ApiError::PreviewUnavailable { port, detail }
}

/// Sends `request` to `ip:port` over HTTP/1.1, without hop-by-hop headers or the api's
/// credentials, and answers the sandbox's response. An upgrade (a WebSocket) is then copied
/// both ways until either side ends or the lease is closed; a plain response's body streams
/// until it ends or the lease is closed.
async fn forward(
    mut request: Request,
    ip: &str,
    port: u16,
    path_and_query: &str,
    scheme: &'static str,
    mut lease: Lease,
) -> Result<Response, ApiError> {
    let fail = unavailable(port);
    let authority = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    let upgrade = upgrade_protocol(request.headers());
    let from_client = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    parts.uri = path_and_query
        .parse::<Uri>()
        .map_err(|_| ApiError::invalid("path", "not a valid URL path"))?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers, upgrade);
    strip_credentials(&mut parts.headers);
    // The Host stays the preview's, so that the app sees its public origin.
    parts.headers.insert(
        header::HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(scheme),
    );
    let upstream = axum::http::Request::from_parts(parts, body);

    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&authority))
        .await
        .map_err(|_| fail("connect timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "preview connection ended");
        }
    });
    let mut response = sender
        .send_request(upstream)
        .await
        .map_err(|e| fail(e.to_string()))?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(from_client) = from_client else {
            return Err(fail("the sandbox switched protocols unasked".into()));
        };
        let from_sandbox = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (client, sandbox) = match tokio::try_join!(from_client, from_sandbox) {
                Ok(both) => both,
                Err(error) => {
                    tracing::debug!(%error, "preview upgrade failed");
                    return;
                }
            };
            let (mut client, mut sandbox) = (TokioIo::new(client), TokioIo::new(sandbox));
            tokio::select! {
                copied = tokio::io::copy_bidirectional(&mut client, &mut sandbox) => {
                    tracing::debug!(?copied, "preview websocket ended");
                }
                reason = lease.closed() => {
                    tracing::info!(reason = reason.as_str(), "preview websocket closed");
                }
            }
        });
        let (mut parts, _) = response.into_parts();
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers, protocol);
        return Ok(Response::from_parts(parts, Body::empty()));
    }

    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, None);
    let closed = Box::pin(async move {
        let reason = lease.closed().await;
        tracing::info!(reason = reason.as_str(), "preview response cut off");
    });
    let body = body.into_data_stream().take_until(closed);
    Ok(Response::from_parts(parts, Body::from_stream(body)))
}
