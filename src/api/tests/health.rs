//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and unknown routes.

use axum::{body::Body, http::StatusCode};
use http::Request;

use super::harness::{assert_error, harness};
use crate::api::server::routes;

#[tokio::test]
async fn health_metrics_and_unknown_routes() {
    let h = harness();
    let health = h
        .send(
            Request::get("/healthz")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = h
        .send(
            Request::get("/readyz")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    let _ = h.get(&h.free_key, "/sessions/ses-mine").await;
    let metrics = h
        .send(
            Request::get("/metrics")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert!(
        metrics.text.contains(
            "kubexec_api_requests_total{method=\"GET\",route=\"/sessions/{id}\",status=\"200\"} 1"
        ),
        "{}",
        metrics.text
    );
    assert!(metrics
        .text
        .contains("kubexec_api_request_duration_seconds_bucket"));
    let nowhere = h.get(&h.free_key, "/nowhere").await;
    assert_error(&nowhere, StatusCode::NOT_FOUND, "NOT_FOUND", None);
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_exists() {
    let h = harness();
    let doc = h
        .send(
            Request::get("/openapi.json")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc.body["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let routed: std::collections::BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.replace("{*", "{")))
        .collect();
    assert_eq!(documented, routed);
    for field in [
        "sessionId",
        "code",
        "command",
        "files",
        "env",
        "timeout",
        "workingDir",
        "stream",
    ] {
        assert!(
            doc.body["components"]["schemas"]["ExecuteRequest"]["properties"]
                .get(field)
                .is_some(),
            "ExecuteRequest.{field} is documented"
        );
    }
    assert!(doc.body["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn a_broken_key_watch_fails_readiness_and_refuses_requests() {
    let h = harness();
    let long_ago = std::time::Instant::now()
        .checked_sub(crate::api::keys::STALE_AFTER * 2)
        .expect("the clock is past the bound");
    // Broken just now: still ready, a key still works.
    h.state.keys.watch_failed(std::time::Instant::now());
    assert_eq!(h.send(readyz()).await.status, StatusCode::OK);
    assert_eq!(h.get(&h.free_key, "/sessions").await.status, StatusCode::OK);
    // Broken for longer than the bound, with no relist since: not ready, and no key passes.
    h.state.keys.relisted(long_ago);
    h.state.keys.watch_failed(long_ago);
    let reply = h.send(readyz()).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text
    );
    let refused = h.get(&h.free_key, "/sessions").await;
    assert_error(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "KEYS_STALE",
        None,
    );
    assert!(refused.headers.contains_key("retry-after"));
    // A successful relist makes it current again.
    h.state.keys.relisted(std::time::Instant::now());
    assert_eq!(h.send(readyz()).await.status, StatusCode::OK);
    assert_eq!(h.get(&h.free_key, "/sessions").await.status, StatusCode::OK);
}

fn readyz() -> Request<Body> {
    Request::get("/readyz")
        .body(Body::empty())
        .expect("request")
}
