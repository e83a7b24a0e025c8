//! `/preview/{id}/...`: only the caller's own session, and only once its Pod has an address.

use axum::{body::Body, http::StatusCode};
use http::Request;

use super::harness::{assert_error, harness};

#[tokio::test]
async fn preview_needs_the_callers_session_and_its_pod_address() {
    let h = harness();
    let anonymous = h
        .send(
            Request::get("/preview/ses-mine/")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", None);
    let theirs = h.get(&h.free_key, "/preview/ses-theirs/").await;
    assert_error(&theirs, StatusCode::NOT_FOUND, "SESSION_NOT_FOUND", None);
    let unknown = h.get(&h.free_key, "/preview/ses-nope/index.html").await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "SESSION_NOT_FOUND", None);
    // The fake's session is Ready but reports no Pod IP, so there is nothing to proxy to yet.
    let no_address = h.get(&h.free_key, "/preview/ses-mine/index.html").await;
    assert_error(
        &no_address,
        StatusCode::SERVICE_UNAVAILABLE,
        "SESSION_NOT_READY",
        None,
    );
    assert_eq!(
        no_address.body["error"]["details"]["sessionId"], "ses-mine",
        "{}",
        no_address.text
    );
}
