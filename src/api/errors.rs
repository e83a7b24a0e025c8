//! The api's one error type. Every failure of a request becomes an [`ApiError`], which renders
//! as `{"error": {"code", "message", "details"}}` with an honest status code. A server error is
//! logged (inside the request's span) and answered with a generic message: internals never
//! reach the client.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

/// Error codes, as they appear in `error.code`.
pub mod codes {
    /// The body is not valid JSON, or not of the expected shape.
    pub const INVALID_JSON: &str = "INVALID_JSON";
    /// A field has a value that is not allowed.
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    /// A file path leaves the workspace.
    pub const INVALID_PATH: &str = "INVALID_PATH";
    /// Too many environment variables.
    pub const TOO_MANY_ENV_VARS: &str = "TOO_MANY_ENV_VARS";
    /// Too many files in one request.
    pub const TOO_MANY_FILES: &str = "TOO_MANY_FILES";
    /// A file is larger than the tier allows.
    pub const FILE_TOO_LARGE: &str = "FILE_TOO_LARGE";
    /// The request body is larger than the tier allows.
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    /// No key, or a key that is not valid.
    pub const UNAUTHORIZED: &str = "UNAUTHORIZED";
    /// No such session (for this key).
    pub const SESSION_NOT_FOUND: &str = "SESSION_NOT_FOUND";
    /// No such file in the session's workspace.
    pub const FILE_NOT_FOUND: &str = "FILE_NOT_FOUND";
    /// No such process in the session.
    pub const PROCESS_NOT_FOUND: &str = "PROCESS_NOT_FOUND";
    /// No such route.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// The session is suspended by its owner (`spec.suspend`).
    pub const SESSION_SUSPENDED: &str = "SESSION_SUSPENDED";
    /// The same `Idempotency-Key` was used with a different request.
    pub const IDEMPOTENCY_CONFLICT: &str = "IDEMPOTENCY_CONFLICT";
    /// Too many requests for this key.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// A per-tenant or per-key quota (unfinished executions, stored bytes, open streams, or an
    /// object count of the tenant namespace's ResourceQuota) is used up.
    pub const QUOTA_EXCEEDED: &str = "QUOTA_EXCEEDED";
    /// The tenant has as many sessions as its tier allows.
    pub const SESSION_LIMIT: &str = "SESSION_LIMIT_REACHED";
    /// The session did not become ready in time.
    pub const SESSION_NOT_READY: &str = "SESSION_NOT_READY";
    /// The execution could not run (the operator reported a failure).
    pub const EXECUTION_FAILED: &str = "EXECUTION_FAILED";
    /// The execution's result did not arrive in time.
    pub const EXECUTION_TIMEOUT: &str = "EXECUTION_TIMEOUT";
    /// The preview port of the session does not answer.
    pub const PREVIEW_UNAVAILABLE: &str = "PREVIEW_UNAVAILABLE";
    /// A preview was opened without a token (no `kubexec_token` parameter, no cookie).
    pub const PREVIEW_TOKEN_MISSING: &str = "PREVIEW_TOKEN_MISSING";
    /// The preview token is malformed or not signed by this api.
    pub const PREVIEW_TOKEN_INVALID: &str = "PREVIEW_TOKEN_INVALID";
    /// The preview token has expired.
    pub const PREVIEW_TOKEN_EXPIRED: &str = "PREVIEW_TOKEN_EXPIRED";
    /// The preview token is for another session or port than the origin it was sent to.
    pub const PREVIEW_TOKEN_MISMATCH: &str = "PREVIEW_TOKEN_MISMATCH";
    /// The port is outside the ports previews may reach (`--preview-ports`).
    pub const PREVIEW_PORT_NOT_ALLOWED: &str = "PREVIEW_PORT_NOT_ALLOWED";
    /// The Host is not a preview origin (`<session>-<port>.<preview domain>`).
    pub const PREVIEW_NOT_FOUND: &str = "PREVIEW_NOT_FOUND";
    /// Something went wrong on the server.
    pub const INTERNAL: &str = "INTERNAL_ERROR";
    /// The path names something that is not a regular file (a FIFO, a device, a directory).
    pub const NOT_A_FILE: &str = "NOT_A_FILE";
    /// The execution's `workingDir` does not exist in the session (or is not a directory).
    pub const WORKING_DIR_NOT_FOUND: &str = "WORKING_DIR_NOT_FOUND";
    /// A file operation in the sandbox did not finish in time (a FIFO, a device, a huge tree).
    pub const OPERATION_TIMED_OUT: &str = "OPERATION_TIMED_OUT";
    /// The sandbox's answer is larger than the api returns (a listing of a huge tree).
    pub const RESPONSE_TOO_LARGE: &str = "RESPONSE_TOO_LARGE";
    /// The whole request took longer than the server allows.
    pub const REQUEST_TIMEOUT: &str = "REQUEST_TIMEOUT";
    /// No such execution for this key (another tenant's looks the same).
    pub const EXECUTION_NOT_FOUND: &str = "EXECUTION_NOT_FOUND";
    /// The execution finished longer ago than results are kept (`--result-retention`).
    pub const EXECUTION_EXPIRED: &str = "EXECUTION_EXPIRED";
    /// The execution's full output was collected (its run's output limits); its result stays.
    pub const OUTPUT_COLLECTED: &str = "OUTPUT_COLLECTED";
    /// The api's copy of the API keys is stale (its watch is broken): no key can be checked.
    pub const KEYS_STALE: &str = "KEYS_STALE";
    /// The tenant namespace's ResourceQuota is not counted yet (a new namespace or a kind the
    /// cluster's quota controller has not discovered yet): a retry soon passes.
    pub const QUOTA_NOT_COUNTED: &str = "QUOTA_NOT_COUNTED";
    /// The cluster's apiserver cannot be reached or cannot answer now (restarting, overloaded):
    /// a retry soon passes (with the same `Idempotency-Key`, an execute is not run twice).
    pub const CLUSTER_UNAVAILABLE: &str = "CLUSTER_UNAVAILABLE";
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a field (named in `details.field`) has a bad value.
    #[error("{field}: {message}")]
    Invalid {
        /// One of [`codes`].
        code: &'static str,
        /// The offending field, in the request's own terms (`timeout`, `files[2].path`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// 400: the body is not JSON of the expected shape.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// 401.
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// 401 with a specific code (a preview token that is missing, invalid or expired).
    #[error("{message}")]
    Denied {
        /// One of [`codes`].
        code: &'static str,
        /// Why.
        message: String,
    },
    /// 403: authenticated, but not for this (a preview token of another session or port).
    #[error("{message}")]
    Forbidden {
        /// One of [`codes`].
        code: &'static str,
        /// Why.
        message: String,
    },
    /// 404: no such session for this tenant (another tenant's looks the same).
    #[error("session {0} not found")]
    SessionNotFound(String),
    /// 404: something else is missing.
    #[error("{message}")]
    NotFound {
        /// One of [`codes`].
        code: &'static str,
        /// What is missing.
        message: String,
    },
    /// 409.
    #[error("{message}")]
    Conflict {
        /// One of [`codes`].
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// 410: it existed, and is no longer kept.
    #[error("{message}")]
    Gone {
        /// One of [`codes`].
        code: &'static str,
        /// What is gone, and why.
        message: String,
    },
    /// 413.
    #[error("{message}")]
    TooLarge {
        /// One of [`codes`].
        code: &'static str,
        /// The offending field, if one.
        field: Option<String>,
        /// What is too large.
        message: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// 429, with `Retry-After`.
    #[error("{message}")]
    TooMany {
        /// One of [`codes`].
        code: &'static str,
        /// What limit was hit.
        message: String,
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// 422: the request was understood, but what it asks of the sandbox cannot be done (a
    /// read that would never end).
    #[error("{message}")]
    Unprocessable {
        /// One of [`codes`].
        code: &'static str,
        /// What went wrong.
        message: String,
    },
    /// 503: the api cannot serve requests right now (its key cache is stale).
    #[error("{message}")]
    Unavailable {
        /// One of [`codes`].
        code: &'static str,
        /// Why.
        message: String,
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// 504: the request as a whole took longer than the server's request timeout.
    #[error("the request took longer than {0} seconds")]
    RequestTimeout(u64),
    /// 503: the session did not become ready in time.
    #[error("session {session} is not ready ({phase})")]
    SessionNotReady {
        /// The session.
        session: String,
        /// Its phase when we gave up.
        phase: String,
    },
    /// 500 with a reason from the operator (not an internal detail).
    #[error("execution failed: {reason}")]
    ExecutionFailed {
        /// The Execution's `status.reason`.
        reason: String,
        /// The Execution's `status.message`.
        message: String,
    },
    /// 504: the result did not arrive in time.
    #[error("no result after {0} seconds")]
    ExecutionTimeout(u64),
    /// 502: the preview port does not answer.
    #[error("preview of port {port} unavailable: {detail}")]
    PreviewUnavailable {
        /// The sandbox port.
        port: u16,
        /// What failed (logged, never sent).
        detail: String,
    },
    /// 500: logged with its detail, answered with a generic message.
    #[error("{context}: {detail}")]
    Internal {
        /// What was being done.
        context: &'static str,
        /// The underlying error (logged, never sent).
        detail: String,
    },
}

/// `Result` with [`ApiError`].
pub type ApiResult<T, E = ApiError> = Result<T, E>;

impl ApiError {
    /// 503 `CLUSTER_UNAVAILABLE`: the apiserver or a node could not answer now (restarting,
    /// overloaded); `error` is logged with `context`.
    pub fn cluster_unavailable(context: &'static str, error: &dyn std::fmt::Display) -> Self {
        tracing::warn!(context, error = %error, "the cluster cannot answer now");
        Self::Unavailable {
            code: codes::CLUSTER_UNAVAILABLE,
            message:
                "the cluster cannot answer right now (a restart or an overload); retry shortly"
                    .into(),
            retry_after: 2,
        }
    }

    /// A 400 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            code: codes::INVALID_REQUEST,
            field: field.into(),
            message: message.into(),
        }
    }

    /// A 400 from the shared validation, which names the field itself.
    pub fn from_validation(error: crate::crd::validate::ValidationError) -> Self {
        Self::invalid(error.field, error.message)
    }

    /// A 400 with a specific code naming `field`.
    pub fn invalid_with(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            code,
            field: field.into(),
            message: message.into(),
        }
    }

    /// A 500 that keeps `detail` for the log only.
    pub fn internal(context: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Internal {
            context,
            detail: detail.to_string(),
        }
    }

    /// Wraps an error into a 500 with `context`.
    pub fn internal_from<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> Self {
        move |e| Self::internal(context, e)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } | ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) | ApiError::Denied { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::SessionNotFound(_) | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::SessionNotReady { .. } | ApiError::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::RequestTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::ExecutionFailed { .. } | ApiError::Internal { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::ExecutionTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::PreviewUnavailable { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `error` object of the body.
    pub fn body(&self) -> ErrorBody {
        let (code, message, details): (&str, String, Value) = match self {
            ApiError::Invalid {
                code,
                field,
                message,
            } => (
                code,
                format!("{field}: {message}"),
                json!({ "field": field }),
            ),
            ApiError::InvalidJson(message) => (
                codes::INVALID_JSON,
                format!("request body is not valid JSON: {message}"),
                json!({}),
            ),
            ApiError::Unauthorized(why) => (codes::UNAUTHORIZED, (*why).to_string(), json!({})),
            ApiError::SessionNotFound(id) => (
                codes::SESSION_NOT_FOUND,
                format!("session {id} not found"),
                json!({ "sessionId": id }),
            ),
            ApiError::NotFound { code, message }
            | ApiError::Denied { code, message }
            | ApiError::Forbidden { code, message }
            | ApiError::Conflict { code, message }
            | ApiError::Gone { code, message }
            | ApiError::Unprocessable { code, message } => (code, message.clone(), json!({})),
            ApiError::Unavailable {
                code,
                message,
                retry_after,
            } => (code, message.clone(), json!({ "retryAfter": retry_after })),
            ApiError::RequestTimeout(secs) => (
                codes::REQUEST_TIMEOUT,
                format!("the request took longer than {secs} seconds"),
                json!({}),
            ),
            ApiError::TooLarge {
                code,
                field,
                message,
                limit,
            } => {
                let mut details = json!({ "limit": limit });
                if let Some(field) = field {
                    details["field"] = json!(field);
                }
                (code, message.clone(), details)
            }
            ApiError::TooMany {
                code,
                message,
                retry_after,
            } => (code, message.clone(), json!({ "retryAfter": retry_after })),
            ApiError::SessionNotReady { session, phase } => (
                codes::SESSION_NOT_READY,
                format!(
                    "session {session} did not become ready in time (phase {phase}); retry later"
                ),
                json!({ "sessionId": session, "phase": phase }),
            ),
            ApiError::ExecutionFailed { reason, message } => (
                codes::EXECUTION_FAILED,
                format!("the execution could not run: {message}"),
                json!({ "reason": reason }),
            ),
            ApiError::ExecutionTimeout(secs) => (
                codes::EXECUTION_TIMEOUT,
                format!("no result after {secs} seconds"),
                json!({}),
            ),
            ApiError::PreviewUnavailable { port, .. } => (
                codes::PREVIEW_UNAVAILABLE,
                format!("nothing answers on port {port} of the session"),
                json!({ "port": port }),
            ),
            ApiError::Internal { .. } => (
                codes::INTERNAL,
                "internal server error".to_string(),
                json!({}),
            ),
        };
        ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message,
                details,
            },
        }
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// One error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `SESSION_NOT_FOUND`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// More about it, e.g. `{"field": "timeout"}`.
    #[schema(value_type = Object)]
    pub details: Value,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal { context, detail } => {
                tracing::error!(context, detail = %detail, "request failed");
            }
            ApiError::ExecutionFailed { reason, .. } => {
                tracing::warn!(reason, "execution failed");
            }
            other => tracing::debug!(error = %other, status = status.as_u16(), "request refused"),
        }
        let retry_after = match &self {
            ApiError::TooMany { retry_after, .. } | ApiError::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        };
        let mut response = (status, Json(self.body())).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak() {
        let err = ApiError::internal("create execution", "etcd at 10.0.0.1 refused: secret xyz");
        let body = serde_json::to_string(&err.body()).expect("json");
        assert!(!body.contains("etcd") && !body.contains("xyz"), "{body}");
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn invalid_names_the_field() {
        let body = ApiError::invalid("timeout", "must be between 1 and 30").body();
        assert_eq!(body.error.code, codes::INVALID_REQUEST);
        assert_eq!(body.error.details["field"], "timeout");
    }
}
