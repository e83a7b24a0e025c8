//! Bearer keys, the per-key request rate, and the tiers' limits.

use axum::{body::Body, http::StatusCode};
use http::Request;
use serde_json::json;

use super::harness::{assert_error, execute_body, harness, harness_with};
use crate::api::tiers::{TierLimits, Tiers};

#[tokio::test]
async fn missing_or_wrong_keys_are_401() {
    let h = harness();
    let no_key = h
        .send(
            Request::post("/execute")
                .body(Body::from(execute_body(json!({})).to_string()))
                .expect("request"),
        )
        .await;
    assert_error(&no_key, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", None);
    let wrong = h
        .post_json("kx_0000", "/execute", execute_body(json!({})))
        .await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", None);
    let basic = h
        .send(
            Request::get("/sessions")
                .header("authorization", format!("Basic {}", h.free_key))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_error(&basic, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", None);
    assert!(h.created_nothing());
}

#[tokio::test]
async fn requests_beyond_the_rate_get_429_with_retry_after() {
    let h = harness_with(
        Tiers::from_yaml("free:\n  requestsPerMinute: 0.5\n  burst: 2\n").expect("tiers"),
    );
    for _ in 0..2 {
        assert_eq!(h.get(&h.free_key, "/sessions").await.status, StatusCode::OK);
    }
    let limited = h.get(&h.free_key, "/sessions").await;
    assert_error(
        &limited,
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        None,
    );
    let retry: u64 = limited
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry >= 1);
    // Other keys have their own bucket.
    assert_eq!(h.get(&h.paid_key, "/sessions").await.status, StatusCode::OK);
}

#[test]
fn limits_of_the_free_tier_are_the_seeds() {
    let limits = TierLimits::free();
    assert_eq!(
        (
            limits.timeout_seconds,
            limits.env_vars,
            limits.files_per_request
        ),
        (30, 100, 100)
    );
}
