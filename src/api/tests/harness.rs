//! The route tests' harness: the whole router (`app(state).oneshot(request)`) over a
//! [`FakeCluster`] with one ready session per tenant and a key per tier, and the assertions
//! every route test shares.

use std::sync::Arc;

use axum::{body::Body, http::StatusCode};
use http::Request;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::fake_cluster::{Call, FakeCluster};
use crate::api::{
    keys::{generate_key, key_secret, KeyCache},
    metrics::HttpMetrics,
    server::app,
    state::{AppState, Settings},
    tiers::{Tier, Tiers},
};

pub(super) const NS: &str = "kubexec-acme";
const OTHER_NS: &str = "kubexec-rival";

pub(super) struct Harness {
    pub(super) cluster: Arc<FakeCluster>,
    pub(super) state: AppState,
    pub(super) free_key: String,
    pub(super) paid_key: String,
    pub(super) rival_key: String,
}

pub(super) fn harness_with(tiers: Tiers) -> Harness {
    let cluster = Arc::new(FakeCluster::default());
    cluster.add_ready_session(NS, "ses-mine");
    cluster.add_ready_session(OTHER_NS, "ses-theirs");
    let keys = KeyCache::new();
    let mut secrets = Vec::new();
    let mut new_key = |tenant: &str, tier: Tier| {
        let (id, key) = generate_key().expect("random");
        secrets.push(key_secret(&id, &key, tenant, tier));
        key
    };
    let free_key = new_key("acme", Tier::Free);
    let paid_key = new_key("acme", Tier::Paid);
    let rival_key = new_key("rival", Tier::Free);
    keys.replace_all(&secrets);
    let state = AppState::new(
        cluster.clone(),
        keys,
        tiers,
        Settings::default(),
        HttpMetrics::new(),
    );
    Harness {
        cluster,
        state,
        free_key,
        paid_key,
        rival_key,
    }
}

pub(super) fn harness() -> Harness {
    harness_with(Tiers::default())
}

pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: http::HeaderMap,
    pub(super) body: Value,
    pub(super) text: String,
}

impl Harness {
    pub(super) async fn send(&self, request: Request<Body>) -> Reply {
        let response = app(self.state.clone())
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text,
        }
    }

    pub(super) async fn post(&self, key: &str, path: &str, body: impl Into<Body>) -> Reply {
        let request = Request::post(path)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(body.into())
            .expect("request");
        self.send(request).await
    }

    pub(super) async fn post_json(&self, key: &str, path: &str, body: Value) -> Reply {
        self.post(key, path, body.to_string()).await
    }

    pub(super) async fn get(&self, key: &str, path: &str) -> Reply {
        let request = Request::get(path)
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .expect("request");
        self.send(request).await
    }

    pub(super) fn created_nothing(&self) -> bool {
        !self.cluster.calls().iter().any(|c| {
            matches!(
                c,
                Call::CreateExecution(_)
                    | Call::CreateSecret(_)
                    | Call::Upload(_)
                    | Call::CreateSession(_)
            )
        })
    }
}

pub(super) fn assert_error(reply: &Reply, status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.body["error"]["code"], code, "{}", reply.text);
    assert!(reply.body["error"]["message"].is_string(), "{}", reply.text);
    if let Some(field) = field {
        assert_eq!(
            reply.body["error"]["details"]["field"], field,
            "{}",
            reply.text
        );
    }
}

pub(super) fn execute_body(extra: Value) -> Value {
    let mut body = json!({"sessionId": "ses-mine", "code": "console.log('Sum: ' + (10 + 5))"});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}
