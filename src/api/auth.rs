//! Bearer-key authentication and the per-key request rate, as one middleware. A request that
//! passes carries a [`Caller`] in its extensions.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
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

/// Authenticates the request, applies the key's request rate and body limit, and records the
/// [`Caller`].
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
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
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > caller.limits.max_request_bytes) {
        return ApiError::TooLarge {
            code: codes::PAYLOAD_TOO_LARGE,
            field: None,
            message: format!(
                "request body is larger than the {} tier allows",
                caller.tier
            ),
            limit: caller.limits.max_request_bytes,
        }
        .into_response();
    }
    tracing::Span::current().record("tenant", caller.tenant.as_str());
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn identify(state: &AppState, headers: &axum::http::HeaderMap) -> Result<Caller, ApiError> {
    let key = bearer(headers)?;
    let info = state
        .keys
        .lookup(key)
        .ok_or(ApiError::Unauthorized("invalid API key"))?;
    let namespace = state.settings.tenancy.namespace_of(&info.tenant);
    Ok(Caller {
        limits: state.tiers.get(info.tier).clone(),
        key_id: info.id,
        tenant: info.tenant,
        namespace,
        tier: info.tier,
    })
}

/// Token buckets, one per key. In memory: each api replica enforces the rate on its own.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    /// Takes a token for `key`, or returns the seconds until one is available.
    pub fn admit(&self, key: &str, limits: &TierLimits) -> Result<(), u64> {
        self.admit_at(key, limits, Instant::now())
    }

    fn admit_at(&self, key: &str, limits: &TierLimits, now: Instant) -> Result<(), u64> {
        let rate = limits.requests_per_second().max(f64::MIN_POSITIVE);
        let capacity = f64::from(limits.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded memory: a bucket refilled to capacity is indistinguishable from a new one.
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| {
                now.duration_since(b.refilled) < Duration::from_secs_f64(capacity / rate)
            });
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: capacity,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_the_tier_rate() {
        let limiter = RateLimiter::default();
        let limits = TierLimits {
            requests_per_minute: 120.0,
            burst: 3,
            ..TierLimits::free()
        };
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.admit_at("k", &limits, start), Ok(()));
        }
        assert_eq!(limiter.admit_at("k", &limits, start), Err(1));
        assert_eq!(limiter.admit_at("other", &limits, start), Ok(()));
        let later = start + Duration::from_millis(600);
        assert_eq!(limiter.admit_at("k", &limits, later), Ok(()));
    }

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
