//! `/sessions`: create (idempotent, within the tier), get and delete, each only for the
//! caller's own sessions.

use axum::{body::Body, http::StatusCode};
use http::Request;
use serde_json::json;

use super::fake_cluster::Call;
use super::harness::{assert_error, execute_body, harness, harness_with};
use crate::api::tiers::Tiers;

#[tokio::test]
async fn another_tenants_session_is_not_found() {
    let h = harness();
    let mine = h.get(&h.free_key, "/sessions/ses-mine").await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.text);
    assert_eq!(mine.body["sessionId"], "ses-mine");
    let theirs = h.get(&h.free_key, "/sessions/ses-theirs").await;
    assert_error(&theirs, StatusCode::NOT_FOUND, "SESSION_NOT_FOUND", None);
    let exec = h
        .post_json(
            &h.free_key,
            "/execute",
            execute_body(json!({"sessionId": "ses-theirs"})),
        )
        .await;
    assert_error(&exec, StatusCode::NOT_FOUND, "SESSION_NOT_FOUND", None);
    let unknown = h
        .post_json(
            &h.free_key,
            "/execute",
            execute_body(json!({"sessionId": "ses-nope"})),
        )
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "SESSION_NOT_FOUND", None);
    let rival = h.get(&h.rival_key, "/sessions/ses-mine").await;
    assert_error(&rival, StatusCode::NOT_FOUND, "SESSION_NOT_FOUND", None);
    let delete = h
        .send(
            Request::delete("/sessions/ses-theirs")
                .header("authorization", format!("Bearer {}", h.free_key))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_error(&delete, StatusCode::NOT_FOUND, "SESSION_NOT_FOUND", None);
    assert!(h.created_nothing());
    assert!(!h
        .cluster
        .calls()
        .iter()
        .any(|c| matches!(c, Call::DeleteSession(_))));
}

#[tokio::test]
async fn sessions_beyond_the_tier_get_429() {
    let h = harness_with(Tiers::from_yaml("free:\n  concurrentSessions: 1\n").expect("tiers"));
    let reply = h
        .post_json(&h.free_key, "/sessions/create", json!({}))
        .await;
    assert_error(
        &reply,
        StatusCode::TOO_MANY_REQUESTS,
        "SESSION_LIMIT_REACHED",
        None,
    );
    assert!(reply.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn session_create_is_idempotent() {
    let h = harness();
    let create = |key: &'static str| {
        Request::post("/sessions/create")
            .header("authorization", format!("Bearer {}", h.free_key))
            .header("idempotency-key", key)
            .body(Body::from(
                json!({"ttl": 600, "resourceLimits": {"memory": 512}}).to_string(),
            ))
            .expect("request")
    };
    let first = h.send(create("abc")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    for field in [
        "sessionId",
        "expiresAt",
        "previewUrl",
        "createdAt",
        "resourceLimits",
    ] {
        assert!(first.body.get(field).is_some(), "missing {field}");
    }
    assert_eq!(first.body["resourceLimits"]["memory"], 512);
    for field in ["memory", "cpu", "timeout", "disk"] {
        assert!(
            first.body["resourceLimits"].get(field).is_some(),
            "missing {field}"
        );
    }
    let again = h.send(create("abc")).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body["sessionId"], first.body["sessionId"]);
    let other = h.send(create("def")).await;
    assert_ne!(other.body["sessionId"], first.body["sessionId"]);
    let conflicting = h
        .send(
            Request::post("/sessions/create")
                .header("authorization", format!("Bearer {}", h.free_key))
                .header("idempotency-key", "abc")
                .body(Body::from(json!({"ttl": 60}).to_string()))
                .expect("request"),
        )
        .await;
    assert_error(
        &conflicting,
        StatusCode::CONFLICT,
        "IDEMPOTENCY_CONFLICT",
        None,
    );
    let creates = h
        .cluster
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::CreateSession(_)))
        .count();
    assert_eq!(creates, 2);
}

#[tokio::test]
async fn session_limits_beyond_the_tier_name_their_field() {
    let h = harness();
    let reply = h
        .post_json(
            &h.free_key,
            "/sessions/create",
            json!({"resourceLimits": {"memory": 4096}}),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        Some("resourceLimits.memory"),
    );
    let paid = h
        .post_json(
            &h.paid_key,
            "/sessions/create",
            json!({"resourceLimits": {"memory": 4096}}),
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text);
}

#[tokio::test]
async fn a_session_of_the_pool_shape_names_the_tier_pool_and_another_shape_does_not() {
    let h = harness();
    let stored = |reply: &super::harness::Reply| {
        let id = reply.body["sessionId"].as_str().expect("id").to_string();
        h.cluster.session(super::harness::NS, &id).expect("stored")
    };
    let pooled = h
        .post_json(&h.free_key, "/sessions/create", json!({"ttl": 600}))
        .await;
    assert_eq!(pooled.status, StatusCode::CREATED, "{}", pooled.text);
    let session = stored(&pooled);
    assert_eq!(
        session.spec.pool_ref.map(|p| p.name),
        Some("kubexec-free".to_string())
    );
    assert!(session.spec.workspace.persistent, "files outlive the Pod");
    // The default shape written out in full is the same shape.
    let explicit = h
        .post_json(
            &h.free_key,
            "/sessions/create",
            json!({"resourceLimits": {"memory": 1024, "cpu": 1, "disk": 1024, "timeout": 10}}),
        )
        .await;
    assert!(stored(&explicit).spec.pool_ref.is_some());
    let other = h
        .post_json(
            &h.free_key,
            "/sessions/create",
            json!({"resourceLimits": {"memory": 512}}),
        )
        .await;
    assert_eq!(other.status, StatusCode::CREATED, "{}", other.text);
    let cold = stored(&other);
    assert_eq!(
        cold.spec.pool_ref, None,
        "another shape takes the cold path"
    );
    assert!(cold.spec.workspace.persistent);
    let pools: Vec<Call> = h
        .cluster
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::EnsurePool(..)))
        .collect();
    assert_eq!(
        pools.first(),
        Some(&Call::EnsurePool("kubexec-acme/kubexec-free".into(), 1))
    );

    let no_pools = harness_with(Tiers::from_yaml("free:\n  poolSize: 0\n").expect("tiers"));
    let reply = no_pools
        .post_json(&no_pools.free_key, "/sessions/create", json!({}))
        .await;
    let id = reply.body["sessionId"].as_str().expect("id").to_string();
    let session = no_pools
        .cluster
        .session(super::harness::NS, &id)
        .expect("stored");
    assert_eq!(session.spec.pool_ref, None);
    assert!(!no_pools
        .cluster
        .calls()
        .iter()
        .any(|c| matches!(c, Call::EnsurePool(..))));
}

#[test]
fn a_tier_pool_has_the_default_sessions_shape() {
    use crate::api::routes::sessions::{fits_pool, session_spec, tier_pool};
    use crate::api::tiers::{Tier, TierLimits};
    let limits = TierLimits::paid();
    let pool = tier_pool("kubexec-acme", Tier::Paid, &limits).expect("a pool");
    assert_eq!(pool.metadata.name.as_deref(), Some("kubexec-paid"));
    assert_eq!(pool.spec.replicas, 2);
    let template = &pool.spec.template;
    assert_eq!(template.resources.cpu.as_deref(), Some("1000m"));
    assert_eq!(template.resources.memory.as_deref(), Some("4096Mi"));
    assert!(template.workspace.persistent);
    assert_eq!(template.image, None, "the operator's default image");
    let default = session_spec(&Default::default(), &limits).expect("valid");
    assert!(fits_pool(&default, &pool));
    let none = TierLimits {
        pool_size: 0,
        ..limits
    };
    assert_eq!(tier_pool("kubexec-acme", Tier::Paid, &none), None);
}
