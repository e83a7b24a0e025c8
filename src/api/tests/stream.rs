//! `POST /execute` with `stream: true`: Server-Sent Events, and a client that goes away.

use std::time::Duration;

use axum::{body::Body, http::StatusCode};
use http::Request;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::harness::{execute_body, harness};
use crate::api::server::app;

#[tokio::test]
async fn streaming_sends_chunks_then_the_result() {
    let h = harness();
    let reply = h
        .post_json(
            &h.free_key,
            "/execute",
            execute_body(json!({"stream": true})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let events: Vec<(&str, &str)> = reply
        .text
        .split("\n\n")
        .filter_map(|block| {
            let event = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((event, data))
        })
        .collect();
    let kinds: Vec<&str> = events.iter().map(|(e, _)| *e).collect();
    assert_eq!(kinds, ["stdout", "stdout", "result"], "{}", reply.text);
    let mut result: Value = serde_json::from_str(events[2].1).expect("json");
    let mut plain = h
        .post_json(&h.free_key, "/execute", execute_body(json!({})))
        .await;
    // Two executions: everything but their ids is the same.
    assert_eq!(
        reply
            .headers
            .get("x-execution-id")
            .and_then(|v| v.to_str().ok()),
        result["executionId"].as_str()
    );
    result["executionId"] = Value::Null;
    plain.body["executionId"] = Value::Null;
    assert_eq!(
        result, plain.body,
        "the result event equals the non-streaming response"
    );
}

#[tokio::test]
async fn a_stream_client_that_goes_away_stops_the_follow() {
    use http_body_util::BodyExt;
    let h = harness();
    h.cluster
        .endless_follow
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let request = Request::post("/execute")
        .header("authorization", format!("Bearer {}", h.free_key))
        .body(Body::from(
            execute_body(json!({"stream": true})).to_string(),
        ))
        .expect("request");
    let response = app(h.state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let mut body = response.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    let text = String::from_utf8_lossy(first.data_ref().expect("data")).into_owned();
    assert!(
        text.contains("event: stdout") && text.contains("tick"),
        "{text}"
    );
    assert!(!h
        .cluster
        .follow_dropped
        .load(std::sync::atomic::Ordering::SeqCst));
    drop(body);
    for _ in 0..100 {
        if h.cluster
            .follow_dropped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the follow exec outlived its client");
}
