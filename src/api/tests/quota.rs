//! Per-tenant quotas on `/execute`: unfinished Executions, stored bytes and open streams. A
//! refused request answers 429 `QUOTA_EXCEEDED` with `Retry-After` and creates nothing.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;

use super::harness::{assert_error, execute_body, harness_with, NS};
use crate::api::tiers::{Tier, Tiers};

fn refused_with_retry(reply: &super::harness::Reply) {
    assert_error(reply, StatusCode::TOO_MANY_REQUESTS, "QUOTA_EXCEEDED", None);
    let retry = reply
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(retry.is_some_and(|r| r >= 1), "{:?}", reply.headers);
}

#[tokio::test]
async fn unfinished_executions_beyond_the_tier_get_429_and_create_nothing() {
    let h = harness_with(Tiers::from_yaml("free:\n  liveExecutions: 1\n").expect("tiers"));
    let limits = h.state.tiers.get(Tier::Free).clone();
    // Another request of the tenant holds the only place.
    let _held = h
        .state
        .quotas
        .reserve(NS, &limits, Duration::from_secs(60), Instant::now())
        .expect("place");
    let reply = h
        .post_json(&h.free_key, "/execute", execute_body(json!({})))
        .await;
    refused_with_retry(&reply);
    assert!(h.created_nothing());
    // Another tenant is not affected.
    let theirs = h
        .post_json(
            &h.rival_key,
            "/execute",
            execute_body(json!({"sessionId": "ses-theirs"})),
        )
        .await;
    assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.text);
}

#[tokio::test]
async fn bytes_beyond_the_tier_get_429_and_create_nothing() {
    let h = harness_with(Tiers::from_yaml("free:\n  storedBytes: 16384\n").expect("tiers"));
    let small = h
        .post_json(&h.free_key, "/execute", execute_body(json!({})))
        .await;
    assert_eq!(small.status, StatusCode::OK, "{}", small.text);
    let created = h.cluster.calls().len();
    let fat = h
        .post_json(
            &h.free_key,
            "/execute",
            execute_body(json!({"env": {"TOKEN": "x".repeat(12000)}})),
        )
        .await;
    refused_with_retry(&fat);
    assert!(
        !h.cluster.calls()[created..].iter().any(|c| matches!(
            c,
            super::fake_cluster::Call::CreateExecution(_)
                | super::fake_cluster::Call::CreateSecret(_)
        )),
        "nothing half-created: {:?}",
        h.cluster.calls()
    );
    // The finished small one is still stored, the tenant's ledger counts it.
    let (live, bytes) = h.state.quotas.usage(NS, Instant::now());
    assert_eq!(live, 0);
    assert!(bytes > 0);
}

#[tokio::test]
async fn streams_beyond_the_tier_get_429() {
    let h = harness_with(Tiers::from_yaml("free:\n  concurrentStreams: 1\n").expect("tiers"));
    let limits = h.state.tiers.get(Tier::Free).clone();
    let key_id = h
        .state
        .keys
        .lookup(&h.free_key)
        .map(|k| k.id)
        .expect("the key");
    let _open = h.state.quotas.open_stream(&key_id, &limits).expect("slot");
    let reply = h
        .post_json(
            &h.free_key,
            "/execute",
            execute_body(json!({"stream": true})),
        )
        .await;
    refused_with_retry(&reply);
    assert!(h.created_nothing());
}
