//! Bearer-key authentication and the per-key request rate (counted by
//! [`RateLimiter`](super::rate_limit::RateLimiter)), as one middleware. A request that passes
//! carries a [`Caller`] in its extensions.

use axum::{
    extract::{FromRequestParts, MatchedPath, Request, State},
    http::{header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    body_limit::{body_cap, limit_body},
    errors::{codes, ApiError},
    state::AppState,
    tiers::{Tier, TierLimits},
};

/// Who is calling: the key's tenant, tier and namespace.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The key id.
    pub key_id: String,
    /// The tenant.
    pub tenant: String,
    /// The tenant's namespace.
    pub namespace: String,
    /// The key's tier.
    pub tier: Tier,
    /// The tier's limits.
    pub limits: TierLimits,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized("missing API key"))
    }
}

fn bearer(parts: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let value = parts
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(
            "missing API key: send Authorization: Bearer <key>",
        ))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("invalid API key"))?;
    let (scheme, key) = value.split_once(' ').ok_or(ApiError::Unauthorized(
        "invalid Authorization header: expected Bearer <key>",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") || key.trim().is_empty() {
        return Err(ApiError::Unauthorized(
            "invalid Authorization header: expected Bearer <key>",
        ));
    }
    Ok(key.trim())
}

/// Authenticates the request, applies the key's request rate and the route's body cap (see
/// [`body_cap`]), and records the [`Caller`].
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let caller = match identify(&state, request.headers()) {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    if let Err(retry_after) = state.limiter.admit(&caller.key_id, &caller.limits) {
        return ApiError::TooMany {
            code: codes::RATE_LIMITED,
            message: format!(
                "rate limit of the {} tier exceeded ({} requests per minute)",
                caller.tier, caller.limits.requests_per_minute
            ),
            retry_after,
        }
        .into_response();
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_default();
    let mut request = match limit_body(request, body_cap(&route, &caller.limits)) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    tracing::Span::current().record("tenant", caller.tenant.as_str());
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Seconds a client should wait when the key cache is stale.
const STALE_RETRY_AFTER: u64 = 5;

fn identify(state: &AppState, headers: &axum::http::HeaderMap) -> Result<Caller, ApiError> {
    let key = bearer(headers)?;
    // A stale cache may still hold a revoked key: check none rather than the wrong one.
    if state.keys.is_stale() {
        return Err(stale_keys());
    }
    let info = state
        .keys
        .lookup(key)
        .ok_or(ApiError::Unauthorized("invalid API key"))?;
    Ok(caller_of(state, info))
}

fn caller_of(state: &AppState, info: super::keys::KeyInfo) -> Caller {
    let namespace = state.settings.tenancy.namespace_of(&info.tenant);
    Caller {
        limits: state.tiers.get(info.tier).clone(),
        key_id: info.id,
        tenant: info.tenant,
        namespace,
        tier: info.tier,
    }
}

/// The caller a key id stands for (a preview token names its key by id): refused like a key
/// when the key cache is stale, and 401 once the key is revoked.
pub fn caller_by_key_id(state: &AppState, key_id: &str) -> Result<Caller, ApiError> {
    if state.keys.is_stale() {
        return Err(stale_keys());
    }
    let info = state.keys.get_by_id(key_id).ok_or(ApiError::Unauthorized(
        "the API key this preview link was made for is revoked",
    ))?;
    Ok(caller_of(state, info))
}

fn stale_keys() -> ApiError {
    ApiError::Unavailable {
        code: codes::KEYS_STALE,
        message:
            "API keys cannot be checked right now (the server's key cache is stale); retry later"
                .into(),
        retry_after: STALE_RETRY_AFTER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys_are_parsed() {
        let mut headers = axum::http::HeaderMap::new();
        assert!(bearer(&headers).is_err());
        headers.insert(
            header::AUTHORIZATION,
            "Bearer kx_abc".parse().expect("header"),
        );
        assert_eq!(bearer(&headers).ok(), Some("kx_abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert!(bearer(&headers).is_err());
    }
}
