//! Error bodies: malformed JSON, and server errors that do not leak their cause.

use axum::http::StatusCode;
use serde_json::json;

use super::harness::{assert_error, execute_body, harness};
use crate::api::errors::ApiError;

#[tokio::test]
async fn malformed_json_is_invalid_json() {
    let h = harness();
    let reply = h.post(&h.free_key, "/execute", "{\"sessionId\": ").await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "INVALID_JSON", None);
    let reply = h.post(&h.free_key, "/sessions/create", "not json").await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "INVALID_JSON", None);
    let reply = h
        .post_json(
            &h.free_key,
            "/execute",
            execute_body(json!({"timeout": "soon"})),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        Some("timeout"),
    );
    assert!(h.created_nothing());
}

#[tokio::test]
async fn a_server_error_does_not_leak() {
    let error = ApiError::internal("create execution", "apiserver 10.1.2.3 said no");
    let response = axum::response::IntoResponse::into_response(error);
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("10.1.2.3") && text.contains("INTERNAL_ERROR"),
        "{text}"
    );
}
