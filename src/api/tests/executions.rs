//! `GET /executions/{id}` and friends, and `Idempotency-Key` on execute: lookups answer the
//! execute response's shape, stay inside the tenant, and a retried execute runs once.

use axum::http::{Request, StatusCode};
use serde_json::json;

use super::fake_cluster::Call;
use super::harness::{assert_error, execute_body, harness};

fn creates(calls: &[Call]) -> usize {
    calls
        .iter()
        .filter(|c| matches!(c, Call::CreateExecution(_)))
        .count()
}

#[tokio::test]
async fn an_execution_is_found_again_by_its_id_and_only_by_its_tenant() {
    let h = harness();
    let ran = h
        .post_json(&h.free_key, "/execute", execute_body(json!({})))
        .await;
    assert_eq!(ran.status, StatusCode::OK, "{}", ran.text);
    assert_eq!(ran.body["oomKilled"], false);
    let id = ran.body["executionId"].as_str().expect("an id").to_string();
    assert!(id.ends_with(".ses-mine"), "{id}");

    let found = h.get(&h.free_key, &format!("/executions/{id}")).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.text);
    assert_eq!(found.body["status"], "finished");
    assert_eq!(found.body["sessionId"], "ses-mine");
    for field in [
        "stdout",
        "exitCode",
        "executionId",
        "filesWritten",
        "oomKilled",
    ] {
        assert_eq!(found.body[field], ran.body[field], "{field}");
    }

    let rival = h.get(&h.rival_key, &format!("/executions/{id}")).await;
    assert_error(&rival, StatusCode::NOT_FOUND, "EXECUTION_NOT_FOUND", None);
    for unknown in ["exe-nothing.ses-mine", "garbage", "exe-a.ses-none"] {
        let reply = h.get(&h.free_key, &format!("/executions/{unknown}")).await;
        assert_error(&reply, StatusCode::NOT_FOUND, "EXECUTION_NOT_FOUND", None);
    }
}

#[tokio::test]
async fn the_same_idempotency_key_runs_once_and_a_different_request_conflicts() {
    let h = harness();
    let send = |body: serde_json::Value| {
        let request = Request::post("/execute")
            .header("authorization", format!("Bearer {}", h.free_key))
            .header("content-type", "application/json")
            .header("idempotency-key", "k-1")
            .body(axum::body::Body::from(body.to_string()))
            .expect("request");
        h.send(request)
    };
    let first = send(execute_body(json!({}))).await;
    let again = send(execute_body(json!({}))).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(first.body, again.body);
    assert_eq!(creates(&h.cluster.calls()), 1, "run once");

    let other = send(execute_body(json!({"timeout": 5}))).await;
    assert_error(&other, StatusCode::CONFLICT, "IDEMPOTENCY_CONFLICT", None);
    assert_eq!(creates(&h.cluster.calls()), 1);
}

#[tokio::test]
async fn bad_list_and_output_parameters_name_their_field() {
    let h = harness();
    let cursor = h
        .get(
            &h.free_key,
            "/executions?sessionId=ses-mine&cursor=nonsense",
        )
        .await;
    assert_error(
        &cursor,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        Some("cursor"),
    );
    let limit = h
        .get(&h.free_key, "/executions?sessionId=ses-mine&limit=0")
        .await;
    assert_error(
        &limit,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        Some("limit"),
    );
    let listed = h.get(&h.free_key, "/executions?sessionId=ses-mine").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert_eq!(listed.body["executions"], json!([]));
    let stream = h
        .get(&h.free_key, "/executions/exe-a.ses-mine/output?stream=both")
        .await;
    assert_error(
        &stream,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        Some("stream"),
    );
    let resumed = Request::get("/executions/exe-a.ses-mine/events")
        .header("authorization", format!("Bearer {}", h.free_key))
        .header("last-event-id", "not-an-id")
        .body(axum::body::Body::empty())
        .expect("request");
    let resumed = h.send(resumed).await;
    assert_error(
        &resumed,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        Some("Last-Event-ID"),
    );
}
