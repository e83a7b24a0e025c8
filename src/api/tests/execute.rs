//! `POST /execute`: the response fields, request validation against the tier, and env values
//! kept in a Secret.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::fake_cluster::Call;
use super::harness::{assert_error, execute_body, harness};
use crate::crd::Execution;

#[tokio::test]
async fn execute_returns_the_hosted_apis_fields() {
    let h = harness();
    let reply = h
        .post_json(&h.free_key, "/execute", execute_body(json!({})))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    for field in [
        "stdout",
        "stderr",
        "exitCode",
        "executionTime",
        "memoryUsed",
        "cpuTime",
        "timedOut",
        "filesWritten",
    ] {
        assert!(
            reply.body.get(field).is_some(),
            "missing {field}: {}",
            reply.text
        );
    }
    assert_eq!(reply.body["stdout"], "Sum: 15\n");
    // Subscribed before the create; nothing read back after it.
    assert!(matches!(
        h.cluster.calls().as_slice(),
        [Call::WatchExecution(watched), Call::CreateExecution(created)] if watched == created
    ));
}

#[tokio::test]
async fn code_and_command_are_exactly_one() {
    let h = harness();
    let neither = h
        .post_json(&h.free_key, "/execute", json!({"sessionId": "ses-mine"}))
        .await;
    assert_error(
        &neither,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        Some("code"),
    );
    let both = h
        .post_json(
            &h.free_key,
            "/execute",
            execute_body(json!({"command": "true"})),
        )
        .await;
    assert_error(
        &both,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        Some("code"),
    );
    assert!(h.created_nothing());
}

#[tokio::test]
async fn timeouts_outside_the_tier_name_timeout() {
    let h = harness();
    for (key, timeout) in [
        (&h.free_key, 0),
        (&h.free_key, 31),
        (&h.paid_key, 301),
        (&h.paid_key, -5),
    ] {
        let reply = h
            .post_json(key, "/execute", execute_body(json!({"timeout": timeout})))
            .await;
        assert_error(
            &reply,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            Some("timeout"),
        );
    }
    let ok = h
        .post_json(
            &h.paid_key,
            "/execute",
            execute_body(json!({"timeout": 300})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
}

#[tokio::test]
async fn env_limits_and_names() {
    let h = harness();
    let env: serde_json::Map<String, Value> =
        (0..101).map(|i| (format!("VAR_{i}"), json!("x"))).collect();
    let many = h
        .post_json(&h.free_key, "/execute", execute_body(json!({"env": env})))
        .await;
    assert_error(
        &many,
        StatusCode::BAD_REQUEST,
        "TOO_MANY_ENV_VARS",
        Some("env"),
    );
    let bad_name = h
        .post_json(
            &h.free_key,
            "/execute",
            execute_body(json!({"env": {"A=B": "1"}})),
        )
        .await;
    assert_error(
        &bad_name,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        Some("env.A=B"),
    );
    // The runner's own settings are not a tenant's to set.
    let reserved = h
        .post_json(
            &h.free_key,
            "/execute",
            execute_body(json!({"env": {"KUBEXEC_PIDS_LIMIT": "99999"}})),
        )
        .await;
    assert_error(
        &reserved,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        Some("env.KUBEXEC_PIDS_LIMIT"),
    );
    assert!(
        reserved.text.contains("reserved"),
        "the message says why: {}",
        reserved.text
    );
    assert!(h.created_nothing());
    // The paid tier allows 500.
    let paid = h
        .post_json(&h.paid_key, "/execute", execute_body(json!({"env": env})))
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.text);
    assert!(matches!(
        h.cluster.calls().as_slice(),
        [Call::CreateSecret(secret), Call::WatchExecution(_), Call::CreateExecution(exe)] if *secret == format!("{exe}-env")
    ));
}

#[tokio::test]
async fn env_values_stay_out_of_the_execution() {
    let h = harness();
    let reply = h
        .post_json(
            &h.free_key,
            "/execute",
            json!({"sessionId": "ses-mine", "command": "echo $API_TOKEN", "env": {"API_TOKEN": "tok-123"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let executions: Vec<Execution> = h
        .cluster
        .executions
        .lock()
        .expect("lock")
        .values()
        .cloned()
        .collect();
    let stored = serde_json::to_string(&executions).expect("json");
    assert!(!stored.contains("tok-123"), "{stored}");
    assert!(stored.contains("envFrom"), "{stored}");
}

#[tokio::test]
async fn a_missing_working_dir_is_the_callers_mistake() {
    let h = harness();
    let reply = h
        .post_json(
            &h.free_key,
            "/execute",
            execute_body(json!({"workingDir": super::fake_cluster::MISSING_DIR})),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "WORKING_DIR_NOT_FOUND",
        Some("workingDir"),
    );
}
