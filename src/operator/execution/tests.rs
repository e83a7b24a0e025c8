//! Reconcile scenarios against a mocked apiserver: each expected call is answered in order and
//! checked for method, path and body; a missing call is a timeout, an extra one an error.

use std::{sync::Arc, time::Duration};

use http::{Method, Request, Response, StatusCode};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{client::Body, runtime::controller::Action, Client};
use serde_json::{json, Value};
use tower_test::mock::{self, Handle, SendResponse};

use super::*;
use crate::crd::{
    ExecutionPhase, ExecutionSpec, ExecutionStatus, SessionPhase, SessionReference, SessionSpec,
    SessionStatus,
};
use crate::operator::{config::SandboxConfig, Metrics};

const NS: &str = "testns";
const EXECUTION: &str = "run-1";

type Mock = Handle<Request<Body>, Response<Body>>;

fn test_context() -> (Arc<Context>, Mock) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let ctx = Context::new(
        Client::new(service, NS),
        Arc::new(Metrics::default()),
        SandboxConfig::default(),
        None,
    );
    (Arc::new(ctx), handle)
}

fn execution() -> Execution {
    let mut e = Execution::new(
        EXECUTION,
        ExecutionSpec {
            session_ref: SessionReference {
                name: "demo".into(),
            },
            command: Some("echo hi".into()),
            ..ExecutionSpec::default()
        },
    );
    e.metadata.namespace = Some(NS.into());
    e.metadata.uid = Some("exe-uid".into());
    e.metadata.generation = Some(1);
    e.metadata.creation_timestamp = Some(Time(Timestamp::now()));
    e
}

fn ready_session() -> Session {
    let mut s = Session::new("demo", SessionSpec::default());
    s.metadata.namespace = Some(NS.into());
    s.status = Some(SessionStatus {
        phase: Some(SessionPhase::Ready),
        pod_name: Some("demo-sandbox".into()),
        ..SessionStatus::default()
    });
    s
}

fn respond(status: StatusCode, body: &impl serde::Serialize) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).expect("serializable")))
        .expect("response")
}

fn not_found(name: &str) -> Response<Body> {
    respond(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("{name} not found"), "reason": "NotFound", "code": 404}),
    )
}

/// Expects one call; returns its JSON body and query, and the means to answer it.
async fn expect(
    handle: &mut Mock,
    method: Method,
    path: &str,
) -> (Value, String, SendResponse<Response<Body>>) {
    let (request, send) = handle
        .next_request()
        .await
        .unwrap_or_else(|| panic!("the reconciler never sent {method} {path}"));
    assert_eq!(
        (request.method(), request.uri().path()),
        (&method, path),
        "unexpected call {} {}",
        request.method(),
        request.uri()
    );
    let query = request.uri().query().unwrap_or_default().to_string();
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (body, query, send)
}

/// Expects a server-side apply of the Execution's status; answers with the updated object.
async fn expect_status_patch(handle: &mut Mock) -> (ExecutionStatus, String) {
    let path = format!("/apis/kubexec.dev/v1alpha1/namespaces/{NS}/executions/{EXECUTION}/status");
    let (patch, query, send) = expect(handle, Method::PATCH, &path).await;
    assert_eq!(patch["kind"], "Execution");
    let status: ExecutionStatus =
        serde_json::from_value(patch["status"].clone()).expect("an ExecutionStatus");
    let mut updated = execution();
    updated.status = Some(status.clone());
    send.send_response(respond(StatusCode::OK, &updated));
    (status, query)
}

async fn run_reconcile(ctx: &Arc<Context>, execution: Execution) -> Result<Action> {
    tokio::time::timeout(
        Duration::from_secs(2),
        reconcile(Arc::new(execution), ctx.clone()),
    )
    .await
    .expect("reconcile finished")
}

#[tokio::test]
async fn a_missing_session_fails_the_execution() {
    let (ctx, mut handle) = test_context();
    let apiserver = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("GET session");
        assert_eq!(
            request.uri().path(),
            format!("/apis/kubexec.dev/v1alpha1/namespaces/{NS}/sessions/demo")
        );
        send.send_response(not_found("demo"));
        let (status, query) = expect_status_patch(&mut handle).await;
        assert!(
            query.contains("fieldManager=kubexec-execution-status"),
            "{query}"
        );
        assert!(query.contains("force=true"), "{query}");
        assert_eq!(status.phase, Some(ExecutionPhase::Failed));
        assert_eq!(status.reason.as_deref(), Some("SessionNotFound"));
        assert_eq!(status.conditions[0].type_, "Failed");
        assert_eq!(status.conditions[0].status, "True");
        assert!(status.completion_time.is_some());
        let (event, _, send) = expect(
            &mut handle,
            Method::POST,
            &format!("/apis/events.k8s.io/v1/namespaces/{NS}/events"),
        )
        .await;
        send.send_response(respond(StatusCode::CREATED, &event));
        assert_eq!(event["reason"], "SessionNotFound");
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["regarding"]["kind"], "Execution");
    });
    let action = run_reconcile(&ctx, execution()).await.expect("reconciled");
    assert_eq!(action, Action::await_change());
    tokio::time::timeout(Duration::from_secs(1), apiserver)
        .await
        .expect("every expected call")
        .expect("scenario");
    let errors = ctx
        .metrics
        .executions
        .get_or_create(&ExecutionResultLabels { result: "error" })
        .get();
    assert_eq!(errors, 1);
}

#[tokio::test]
async fn a_ready_session_gets_running_recorded_before_the_exec() {
    let (ctx, mut handle) = test_context();
    let apiserver = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("GET session");
        send.send_response(respond(StatusCode::OK, &ready_session()));
        let (request, send) = handle.next_request().await.expect("GET pod");
        assert_eq!(
            request.uri().path(),
            format!("/api/v1/namespaces/{NS}/pods/demo-sandbox")
        );
        send.send_response(respond(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "demo-sandbox", "namespace": NS, "uid": "pod-uid"}}),
        ));
        // The first write, before any exec: Running, with the Pod recorded.
        let (status, _) = expect_status_patch(&mut handle).await;
        assert_eq!(status.phase, Some(ExecutionPhase::Running));
        assert_eq!(status.pod_name.as_deref(), Some("demo-sandbox"));
        assert_eq!(status.pod_uid.as_deref(), Some("pod-uid"));
        assert!(status.start_time.is_some());
        assert!(status.exit_code.is_none());
    });
    let action = run_reconcile(&ctx, execution()).await.expect("reconciled");
    assert_eq!(action, Action::requeue(IN_FLIGHT_RECHECK));
    tokio::time::timeout(Duration::from_secs(1), apiserver)
        .await
        .expect("every expected call")
        .expect("scenario");
    assert_eq!(ctx.runs.state("exe-uid"), RunState::InFlight);
    assert_eq!(ctx.metrics.executions_in_flight.get(), 1);

    // Reconciling again while the run is in flight reads nothing and writes nothing.
    let action = run_reconcile(&ctx, execution()).await.expect("reconciled");
    assert_eq!(action, Action::requeue(CACHE_LAG_RECHECK));
}

fn finished(ttl: Option<i32>, finished_ago: i64) -> Execution {
    let mut e = execution();
    e.spec.ttl_seconds_after_finished = ttl;
    let done = Timestamp::from_second(Timestamp::now().as_second() - finished_ago)
        .expect("valid timestamp");
    e.status = Some(ExecutionStatus {
        phase: Some(ExecutionPhase::Succeeded),
        completion_time: Some(Time(done)),
        exit_code: Some(0),
        ..ExecutionStatus::default()
    });
    e
}

#[tokio::test]
async fn a_finished_execution_past_its_ttl_is_deleted() {
    let (ctx, mut handle) = test_context();
    let apiserver = tokio::spawn(async move {
        let path = format!("/apis/kubexec.dev/v1alpha1/namespaces/{NS}/executions/{EXECUTION}");
        let (params, _, send) = expect(&mut handle, Method::DELETE, &path).await;
        assert_eq!(params["preconditions"]["uid"], "exe-uid");
        send.send_response(respond(StatusCode::OK, &finished(Some(5), 10)));
    });
    let action = run_reconcile(&ctx, finished(Some(5), 10))
        .await
        .expect("reconciled");
    assert_eq!(action, Action::await_change());
    tokio::time::timeout(Duration::from_secs(1), apiserver)
        .await
        .expect("every expected call")
        .expect("scenario");
}

#[tokio::test]
async fn a_finished_execution_writes_nothing() {
    for (ttl, expected) in [
        (None, Action::await_change()),
        (Some(3600), Action::requeue(Duration::from_secs(3590))),
    ] {
        let (ctx, mut handle) = test_context();
        let action = run_reconcile(&ctx, finished(ttl, 10))
            .await
            .expect("reconciled");
        assert_eq!(action, expected);
        let extra = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
        assert!(extra.is_err(), "no call expected");
    }
}

#[tokio::test]
async fn an_unreachable_apiserver_is_a_transient_error() {
    let (ctx, handle) = test_context();
    drop(handle);
    let execution = Arc::new(execution());
    let err = reconcile(execution.clone(), ctx.clone())
        .await
        .expect_err("no apiserver");
    assert!(!err.is_permanent());
    assert_eq!(
        crate::operator::reconciler::policy::<Execution>(CONTROLLER)(execution, &err, ctx),
        Action::requeue(Duration::from_secs(1))
    );
}

#[test]
fn pending_executions_of_a_session_are_found() {
    let index = super::pending::PendingBySession::default();
    let pending = execution();
    let mut done = finished(None, 1);
    done.metadata.name = Some("done".into());
    let mut other = execution();
    other.metadata.name = Some("other".into());
    other.spec.session_ref.name = "elsewhere".into();
    for e in [pending.clone(), done, other] {
        index.observe(&watcher::Event::Apply(e));
    }
    let refs = index.waiting_on(&ready_session());
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].name, EXECUTION);
    assert_eq!(refs[0].namespace, pending.metadata.namespace);

    // Once it runs, it no longer waits.
    let mut running = pending.clone();
    running.status = Some(ExecutionStatus {
        phase: Some(ExecutionPhase::Running),
        ..Default::default()
    });
    index.observe(&watcher::Event::Apply(running.clone()));
    assert!(index.waiting_on(&ready_session()).is_empty());

    // Nothing is known before the first list is done: the Session counts as busy.
    let busy = index.busy(NS, &running.spec.session_ref.name);
    assert_eq!((busy.running, busy.pending, busy.known), (1, 0, false));
    assert!(busy.running() && busy.in_use());

    // A relist replaces the index whole.
    index.observe(&watcher::Event::Init);
    index.observe(&watcher::Event::InitApply(pending.clone()));
    assert!(
        index.waiting_on(&ready_session()).is_empty(),
        "not before the list is done"
    );
    index.observe(&watcher::Event::InitDone);
    assert_eq!(index.waiting_on(&ready_session()).len(), 1);
    let session = &pending.spec.session_ref.name.clone();
    let busy = index.busy(NS, session);
    assert_eq!((busy.running, busy.pending, busy.known), (0, 1, true));
    assert!(!busy.running() && busy.in_use(), "waiting, not running");
    index.observe(&watcher::Event::Delete(pending));
    assert!(index.waiting_on(&ready_session()).is_empty());
    assert_eq!(index.busy(NS, session), super::pending::Busy::IDLE);
}

fn sandbox_pod() -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "demo-sandbox", "namespace": NS, "uid": "pod-uid"},
        "status": {"podIP": "10.244.0.7"}}))
    .expect("pod literal")
}

fn cached_ready_session() -> Session {
    let mut session = ready_session();
    if let Some(status) = session.status.as_mut() {
        status.pod_ip = Some("10.244.0.7".into());
    }
    session
}

/// A context whose caches hold the ready Session and its Pod, with the given run bounds.
fn cached_context(max_runs_per_session: usize) -> (Arc<Context>, Mock) {
    cached_context_with(max_runs_per_session, cached_ready_session())
}

fn cached_context_with(max_runs_per_session: usize, session: Session) -> (Arc<Context>, Mock) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let (sessions, mut session_writer) = reflector::store();
    session_writer.apply_watcher_event(&watcher::Event::Apply(session));
    let (pods, mut pod_writer) = reflector::store();
    pod_writer.apply_watcher_event(&watcher::Event::Apply(sandbox_pod()));
    let settings = crate::operator::config::ExecutionSettings {
        max_runs_per_session,
        ..Default::default()
    };
    let ctx = Context::new(
        Client::new(service, NS),
        Arc::new(Metrics::default()),
        SandboxConfig::default(),
        None,
    )
    .with_execution_settings(settings)
    .with_caches(observe::Caches { sessions, pods });
    (Arc::new(ctx), handle)
}

#[tokio::test]
async fn a_run_on_a_cached_ready_session_reads_nothing_before_running() {
    let (ctx, mut handle) = cached_context(8);
    let apiserver = tokio::spawn(async move {
        // The first call is the Running write: no GET of the Session or the Pod.
        let (status, _) = expect_status_patch(&mut handle).await;
        assert_eq!(status.phase, Some(ExecutionPhase::Running));
        assert_eq!(status.pod_uid.as_deref(), Some("pod-uid"));
    });
    let action = run_reconcile(&ctx, execution()).await.expect("reconciled");
    assert_eq!(action, Action::requeue(IN_FLIGHT_RECHECK));
    tokio::time::timeout(Duration::from_secs(1), apiserver)
        .await
        .expect("every expected call")
        .expect("scenario");
}

#[tokio::test]
async fn a_run_over_the_session_bound_waits_queued_without_a_call() {
    let (ctx, mut handle) = cached_context(1);
    let apiserver = tokio::spawn(async move {
        let (status, _) = expect_status_patch(&mut handle).await;
        assert_eq!(status.phase, Some(ExecutionPhase::Running));
        handle
    });
    run_reconcile(&ctx, execution()).await.expect("reconciled");
    let mut handle = tokio::time::timeout(Duration::from_secs(1), apiserver)
        .await
        .expect("every expected call")
        .expect("scenario");

    let mut second = execution();
    second.metadata.name = Some("run-2".into());
    second.metadata.uid = Some("exe-uid-2".into());
    let action = run_reconcile(&ctx, second).await.expect("reconciled");
    assert_eq!(
        action,
        Action::requeue(QUEUE_RECHECK),
        "a requeue, not an error"
    );
    assert_eq!(ctx.runs.queued(), 1);
    assert_eq!(ctx.metrics.execution_queue_depth.get(), 1);
    assert_eq!(ctx.runs.state("exe-uid-2"), RunState::Unknown);
    // Nothing read, nothing written for it (the first run's exec may call; ignore it).
    while let Ok(Some((request, _))) =
        tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await
    {
        assert!(!request.uri().path().contains("run-2"), "{}", request.uri());
    }
}

#[tokio::test]
async fn a_cached_pod_that_may_have_been_replaced_is_read_again() {
    // The Session names another IP than the cached Pod has: it may be a new Pod of that name.
    let mut session = cached_ready_session();
    if let Some(status) = session.status.as_mut() {
        status.pod_ip = Some("10.244.0.9".into());
    }
    let (ctx, mut handle) = cached_context_with(8, session);
    let apiserver = tokio::spawn(async move {
        let (_, _, send) = expect(
            &mut handle,
            Method::GET,
            &format!("/api/v1/namespaces/{NS}/pods/demo-sandbox"),
        )
        .await;
        let mut replaced = sandbox_pod();
        replaced.metadata.uid = Some("new-pod-uid".into());
        send.send_response(respond(StatusCode::OK, &replaced));
        let (status, _) = expect_status_patch(&mut handle).await;
        assert_eq!(status.pod_uid.as_deref(), Some("new-pod-uid"));
    });
    run_reconcile(&ctx, execution()).await.expect("reconciled");
    tokio::time::timeout(Duration::from_secs(1), apiserver)
        .await
        .expect("every expected call")
        .expect("scenario");
}
