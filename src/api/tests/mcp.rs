//! `POST /mcp`: the MCP tools over the same keys, tenants and handlers as REST.

use axum::{body::Body, http::StatusCode};
use http::Request;
use serde_json::{json, Value};

use super::harness::{assert_error, execute_body, harness, Harness};

/// Sends one JSON-RPC message; answers the status and every message of the SSE reply.
async fn mcp(h: &Harness, key: Option<&str>, message: Value) -> (StatusCode, Vec<Value>, String) {
    let mut request = Request::post("/mcp")
        .header("host", "kubexec.example")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let reply = h
        .send(
            request
                .body(Body::from(message.to_string()))
                .expect("request"),
        )
        .await;
    let messages = reply
        .text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect();
    (reply.status, messages, reply.text)
}

fn call(id: u64, name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": arguments}})
}

/// The `result` of the reply's last message (the response).
fn result(messages: &[Value]) -> &Value {
    &messages.last().expect("a response")["result"]
}

#[tokio::test]
async fn initialize_and_list_tools_need_a_key() {
    let h = harness();
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}});
    let reply = h
        .send(
            Request::post("/mcp")
                .header("content-type", "application/json")
                .body(Body::from(initialize.to_string()))
                .expect("request"),
        )
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", None);

    let (status, messages, text) = mcp(&h, Some(&h.free_key), initialize).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(result(&messages)["serverInfo"]["name"], "kubexec", "{text}");
    assert!(
        result(&messages)["capabilities"]["tools"].is_object(),
        "{text}"
    );

    let (_, messages, text) = mcp(
        &h,
        Some(&h.free_key),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    let tools = result(&messages)["tools"].as_array().expect(&text).clone();
    assert_eq!(tools.len(), 9, "{text}");
    assert!(tools.iter().all(|t| t["inputSchema"]["type"] == "object"));
}

#[tokio::test]
async fn execute_streams_progress_then_answers_as_rest() {
    let h = harness();
    let mut message = call(3, "execute", execute_body(json!({})));
    message["params"]["_meta"] = json!({"progressToken": "p1"});
    let (status, messages, text) = mcp(&h, Some(&h.free_key), message).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let progress: Vec<&Value> = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 2, "{text}");
    assert_eq!(progress[0]["params"]["progressToken"], "p1");
    assert_eq!(progress[0]["params"]["message"], "Sum: ");
    assert_eq!(progress[1]["params"]["message"], "15\n");
    assert_eq!(progress[1]["params"]["progress"], 8.0);
    let result = result(&messages);
    assert_eq!(result["isError"], false, "{text}");
    let mut rest = h
        .post_json(&h.free_key, "/execute", execute_body(json!({})))
        .await;
    // Two executions: everything but their ids is the same.
    let mut structured = result["structuredContent"].clone();
    structured["executionId"] = serde_json::Value::Null;
    rest.body["executionId"] = serde_json::Value::Null;
    assert_eq!(structured, rest.body, "the same fields as REST");

    // Without a progress token there is nothing to stream to: the result only.
    let (_, messages, text) = mcp(
        &h,
        Some(&h.free_key),
        call(4, "execute", execute_body(json!({}))),
    )
    .await;
    assert_eq!(messages.len(), 1, "{text}");
    let mut only = messages[0]["result"]["structuredContent"].clone();
    only["executionId"] = serde_json::Value::Null;
    assert_eq!(only, rest.body);
}

#[tokio::test]
async fn mistakes_are_tool_errors_with_the_rest_code() {
    let h = harness();
    let cases = [
        (
            call(5, "execute", execute_body(json!({"timeout": 0}))),
            "INVALID_REQUEST",
            Some("timeout"),
        ),
        (
            call(6, "execute", execute_body(json!({"timeout": "soon"}))),
            "INVALID_REQUEST",
            Some("timeout"),
        ),
        (
            call(7, "execute", execute_body(json!({"stdin": "x"}))),
            "INVALID_REQUEST",
            Some("stdin"),
        ),
        (
            call(8, "list_processes", json!({"sessionId": "ses-theirs"})),
            "SESSION_NOT_FOUND",
            None,
        ),
        (
            call(
                9,
                "read_file",
                json!({"sessionId": "ses-mine", "path": "../x"}),
            ),
            "INVALID_PATH",
            Some("path"),
        ),
        (
            call(10, "no_such_tool", json!({})),
            "INVALID_REQUEST",
            Some("name"),
        ),
    ];
    for (message, code, field) in cases {
        let (status, messages, text) = mcp(&h, Some(&h.free_key), message).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let result = result(&messages);
        assert_eq!(result["isError"], true, "{text}");
        let error = &result["structuredContent"]["error"];
        assert_eq!(error["code"], code, "{text}");
        if let Some(field) = field {
            assert_eq!(error["details"]["field"], field, "{text}");
        }
        assert!(
            result["content"][0]["text"]
                .as_str()
                .is_some_and(|t| t.contains(code)),
            "the text content carries the code too: {text}"
        );
    }
    assert!(h.created_nothing());
}
