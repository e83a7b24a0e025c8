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

/// A chunked body (no `Content-Length`) of `chunks` × 1 MiB.
fn chunked_body(chunks: usize) -> axum::body::Body {
    let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
    let stream = futures::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::convert::Infallible>(chunk.clone())),
    );
    axum::body::Body::from_stream(stream)
}

#[tokio::test]
async fn a_chunked_body_over_the_route_cap_is_cut_off_with_a_json_413() {
    let h = harness();
    // 100 MiB, chunked: more than `/execute` takes, and more than the free tier's whole limit.
    let reply = h.post(&h.free_key, "/execute", chunked_body(100)).await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        None,
    );
    // Small routes take small bodies, declared or not.
    let reply = h
        .post(&h.free_key, "/sessions/create", chunked_body(1))
        .await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        None,
    );
    assert!(h.created_nothing());
}

#[tokio::test]
async fn the_server_wide_layers_answer_in_json() {
    let h = harness();
    // Over the largest tier's limit with a declared length: tower-http answers before any
    // handler or key check runs.
    let too_long = h.state.tiers.largest_request_bytes() + 1;
    let request = http::Request::post("/execute")
        .header("authorization", format!("Bearer {}", h.free_key))
        .header("content-length", too_long.to_string())
        .body(axum::body::Body::empty())
        .expect("request");
    let reply = h.send(request).await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        None,
    );
}
