//! Request bodies, bounded while they stream in: each route has its own cap (below the key's
//! tier limit), checked against `Content-Length` up front and counted on the body itself, so a
//! chunked body is cut off at the cap instead of being buffered whole. And the answers that
//! tower-http makes on its own (413, 504) in the API's JSON error format.

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body_util::Limited;

use super::{
    errors::{codes, ApiError},
    tiers::TierLimits,
};

/// `POST /execute`: code, command, env and files that ride inline, with room for JSON escaping.
/// Larger files go through `POST /files/write` first.
pub const EXECUTE_BODY_BYTES: u64 = 8 << 20;
/// Routes whose body is a small JSON document (`/sessions/create`, `/processes/kill`) or none.
pub const SMALL_BODY_BYTES: u64 = 64 << 10;
/// Room for the JSON around the files of a `POST /files/write`.
const FILES_ENVELOPE_BYTES: u64 = 1 << 20;

/// The most bytes a request to `route` (axum's matched path) may send, for a key with `limits`.
pub fn body_cap(route: &str, limits: &TierLimits) -> u64 {
    let route_cap = match route {
        "/execute" => EXECUTE_BODY_BYTES,
        // Every file at the tier's size, base64-encoded (4/3), and the JSON around them.
        "/files/write" => {
            limits
                .file_bytes
                .saturating_mul(limits.files_per_request as u64)
                .saturating_mul(4)
                / 3
                + FILES_ENVELOPE_BYTES
        }
        // The preview forwards bodies to the sandbox as they come.
        preview if preview.starts_with("/preview/") => u64::MAX,
        _ => SMALL_BODY_BYTES,
    };
    route_cap.min(limits.max_request_bytes)
}

fn too_large(limit: u64) -> ApiError {
    ApiError::TooLarge {
        code: codes::PAYLOAD_TOO_LARGE,
        field: None,
        message: format!("request body is larger than this route accepts ({limit} bytes)"),
        limit,
    }
}

/// Refuses a declared length over `cap`, and counts the body as it streams: reading past `cap`
/// fails, which the body extractors answer with a 413.
pub fn limit_body(request: Request, cap: u64) -> Result<Request, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap) {
        return Err(too_large(cap));
    }
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let (parts, body) = request.into_parts();
    Ok(Request::from_parts(
        parts,
        Body::new(Limited::new(body, cap)),
    ))
}

/// What the server-wide layers enforce, for their error messages.
#[derive(Clone, Copy, Debug)]
pub struct LayerLimits {
    /// The server's body limit (the largest tier's).
    pub body_bytes: u64,
    /// The server's request timeout, in seconds.
    pub timeout_secs: u64,
}

/// Renders the bare 413 and 504 answers of tower-http's body limit and timeout layers as the
/// API's JSON errors. Answers that already are JSON pass unchanged.
pub async fn json_layer_errors(
    State(limits): State<LayerLimits>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge {
            code: codes::PAYLOAD_TOO_LARGE,
            field: None,
            message: format!(
                "request body is larger than the server accepts ({} bytes)",
                limits.body_bytes
            ),
            limit: limits.body_bytes,
        }
        .into_response(),
        StatusCode::GATEWAY_TIMEOUT => {
            ApiError::RequestTimeout(limits.timeout_secs).into_response()
        }
        _ => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_has_its_cap_below_the_tier() {
        let free = TierLimits::free();
        assert_eq!(body_cap("/execute", &free), EXECUTE_BODY_BYTES);
        assert_eq!(body_cap("/sessions/create", &free), SMALL_BODY_BYTES);
        assert_eq!(body_cap("/processes/kill", &free), SMALL_BODY_BYTES);
        // 10 MB × 100 files is more than the free tier's body limit: the tier decides.
        assert_eq!(body_cap("/files/write", &free), free.max_request_bytes);
        assert_eq!(
            body_cap("/preview/{id}/{*path}", &free),
            free.max_request_bytes
        );
        let one_small_file = TierLimits {
            file_bytes: 3 << 20,
            files_per_request: 1,
            ..TierLimits::free()
        };
        assert_eq!(
            body_cap("/files/write", &one_small_file),
            (4 << 20) + FILES_ENVELOPE_BYTES
        );
    }
}
