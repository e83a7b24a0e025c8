//! The controller against a mocked apiserver: watch events go in as streams, and every apply
//! the controller makes is checked in order for method, path, query and body.

use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use http::{Method, Request, Response, StatusCode};
use kube::{
    api::{ObjectMeta, PartialObjectMetaExt},
    client::Body,
    Client,
};
use serde_json::Value;
use tower_test::mock::{self, Handle};

use super::build::{PolicySet, EGRESS_ALLOW_POLICY, EGRESS_DENY_POLICY, INGRESS_POLICY};
use super::config::{NetworkArgs, NetworkConfig};
use super::*;
use crate::operator::{config::SandboxConfig, Metrics};

const NS: &str = "team-a";

type Mock = Handle<Request<Body>, Response<Body>>;

fn network() -> NetworkConfig {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        network: NetworkArgs,
    }
    let cli = <Cli as clap::Parser>::try_parse_from([
        "kubexec",
        "--dns-resolvers",
        "10.255.255.53",
        "--node-cidrs",
        "192.0.2.2",
    ])
    .expect("flags parse");
    cli.network
        .network_config(|| panic!("no auto"))
        .expect("valid")
        .expect("on")
}

fn context(policies: Option<PolicySet>) -> (Arc<Context>, Mock) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Context::new(
        Client::new(service, NS),
        Arc::new(Metrics::default()),
        SandboxConfig::default(),
        None,
    )
    .with_network_policies(policies);
    (Arc::new(ctx), handle)
}

fn session(namespace: &str, name: &str) -> PartialObjectMeta<Session> {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        ..ObjectMeta::default()
    }
    .into_response_partial()
}

fn policy(namespace: &str, name: &str) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        spec: None,
    }
}

/// Expects the server-side applies of the three policies in `namespace`, in order, and
/// answers each with the applied object. Returns the bodies.
async fn expect_applies(apiserver: &mut Mock, namespace: &str) -> Vec<Value> {
    let mut bodies = Vec::new();
    for name in [INGRESS_POLICY, EGRESS_DENY_POLICY, EGRESS_ALLOW_POLICY] {
        let (request, send) =
            tokio::time::timeout(Duration::from_secs(2), apiserver.next_request())
                .await
                .unwrap_or_else(|_| panic!("no apply of {name}"))
                .unwrap_or_else(|| panic!("the controller never applied {name}"));
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(
            request.uri().path(),
            format!("/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}")
        );
        let query = request.uri().query().unwrap_or_default().to_string();
        assert!(
            query.contains(&format!("fieldManager={FIELD_MANAGER}")),
            "{query}"
        );
        assert!(query.contains("force=true"), "{query}");
        assert_eq!(
            request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/apply-patch+yaml")
        );
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body: Value = serde_json::from_slice(&bytes).expect("JSON");
        assert_eq!(body["metadata"]["name"], name);
        assert_eq!(body["metadata"]["namespace"], namespace);
        let response = Response::builder()
            .status(StatusCode::OK)
            .body(Body::from(bytes.to_vec()))
            .expect("response");
        send.send_response(response);
        bodies.push(body);
    }
    bodies
}

#[tokio::test]
async fn a_reconcile_applies_the_three_policies() {
    let set = PolicySet::new(&network());
    let (ctx, mut apiserver) = context(Some(set.clone()));
    let namespace = Arc::new(Namespace {
        metadata: ObjectMeta {
            name: Some(NS.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    });
    let reconciled = tokio::spawn(reconcile(namespace, ctx.clone()));
    let bodies = expect_applies(&mut apiserver, NS).await;
    let action = reconciled.await.expect("joined").expect("reconciled");
    assert_eq!(action, Action::requeue(RESYNC));
    let expected: Vec<Value> = set
        .in_namespace(NS)
        .map(|p| serde_json::to_value(p).expect("serializes"))
        .collect();
    assert_eq!(bodies, expected, "the built policies, unchanged");
}

#[tokio::test]
async fn an_apiserver_error_is_retried_with_backoff() {
    let (ctx, mut apiserver) = context(Some(PolicySet::new(&network())));
    let namespace = Arc::new(Namespace {
        metadata: ObjectMeta {
            name: Some(NS.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    });
    let reconciled = tokio::spawn(reconcile(namespace.clone(), ctx.clone()));
    let (_, send) = apiserver.next_request().await.expect("a request");
    send.send_response(
        Response::builder()
            .status(StatusCode::FORBIDDEN)
            .body(Body::from(
                br#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"no"}"#.to_vec(),
            ))
            .expect("response"),
    );
    let error = reconciled.await.expect("joined").expect_err("forbidden");
    assert_eq!(error.metric_label(), "forbidden");
    assert_eq!(
        reconciler::policy::<Namespace>(CONTROLLER)(namespace, &error, ctx),
        Action::requeue(Duration::from_secs(1))
    );
}

#[tokio::test]
async fn a_deleted_policy_is_applied_again() {
    let (ctx, mut apiserver) = context(Some(PolicySet::new(&network())));
    let sessions = stream::iter([
        watcher::Event::Init,
        watcher::Event::InitApply(session(NS, "demo")),
        watcher::Event::InitDone,
    ])
    .map(Ok)
    .chain(stream::pending());
    let (policy_tx, policy_rx) = mpsc::unbounded();
    let (stop, stopped) = oneshot::channel::<()>();
    let controller = tokio::spawn(run(ctx, sessions, policy_rx.map(Ok), async move {
        let _ = stopped.await;
    }));

    // The namespace holds a Session: its policies are applied once the list is done.
    expect_applies(&mut apiserver, NS).await;

    // A policy in a namespace without Sessions is none of this controller's business; then
    // someone deletes the egress floor in team-a.
    let send = |event| policy_tx.unbounded_send(event).expect("controller listens");
    send(watcher::Event::Delete(policy(
        "elsewhere",
        EGRESS_DENY_POLICY,
    )));
    send(watcher::Event::Delete(policy(NS, EGRESS_DENY_POLICY)));
    expect_applies(&mut apiserver, NS).await;

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(2), controller)
        .await
        .expect("stops on shutdown")
        .expect("joined");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), apiserver.next_request())
            .await
            .ok()
            .flatten()
            .is_none(),
        "nothing else was applied"
    );
}

#[tokio::test]
async fn the_first_session_of_a_namespace_brings_its_policies() {
    let (ctx, mut apiserver) = context(Some(PolicySet::new(&network())));
    let (session_tx, session_rx) = mpsc::unbounded();
    let (stop, stopped) = oneshot::channel::<()>();
    let controller = tokio::spawn(run(
        ctx,
        session_rx.map(Ok),
        stream::pending(),
        async move {
            let _ = stopped.await;
        },
    ));
    let send = |event| {
        session_tx
            .unbounded_send(event)
            .expect("controller listens")
    };
    send(watcher::Event::Init);
    send(watcher::Event::InitDone);
    send(watcher::Event::Apply(session("team-b", "first")));
    expect_applies(&mut apiserver, "team-b").await;
    // Another Session, or a status update, changes nothing about the policies.
    send(watcher::Event::Apply(session("team-b", "first")));
    send(watcher::Event::Apply(session("team-b", "second")));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), apiserver.next_request())
            .await
            .is_err(),
        "no further applies"
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(2), controller)
        .await
        .expect("stops on shutdown")
        .expect("joined");
}

#[tokio::test]
async fn with_policies_off_a_reconcile_writes_nothing() {
    let (ctx, apiserver) = context(None);
    drop(apiserver);
    let action = apply_policies(&ctx, NS.into())
        .await
        .expect("nothing to do");
    assert_eq!(action, Action::await_change());
}
