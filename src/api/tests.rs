//! Route tests: the whole router (`app(state).oneshot(request)`) over an in-memory
//! [`FakeCluster`], for every error case of the API and the OpenAPI document.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Body, http::StatusCode};
use futures::{future::BoxFuture, stream::BoxStream, FutureExt, StreamExt};
use http::Request;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kubexec_runner::protocol::{FrameDecoder, RunnerEvent};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{
    cluster::{Cluster, Created, Upload},
    keys::{generate_key, key_secret, KeyCache},
    metrics::HttpMetrics,
    server::{app, routes},
    state::{AppState, Settings},
    tiers::{Tier, TierLimits, Tiers},
};
use crate::{
    crd::{
        Execution, ExecutionPhase, ExecutionStatus, Session, SessionPhase, SessionSpec,
        SessionStatus,
    },
    sandbox::{HelperOutput, SandboxError},
};

/// What the fake was asked to do, in order.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    CreateSession(String),
    DeleteSession(String),
    CreateSecret(String),
    CreateExecution(String),
    Helper(Vec<String>),
    Upload(Vec<String>),
}

#[derive(Default)]
struct FakeCluster {
    sessions: Mutex<BTreeMap<(String, String), Session>>,
    executions: Mutex<BTreeMap<(String, String), Execution>>,
    calls: Mutex<Vec<Call>>,
    uploads: Arc<Mutex<Vec<Vec<u8>>>>,
    /// When set, `follow` streams one chunk and then nothing, until dropped.
    endless_follow: std::sync::atomic::AtomicBool,
    follow_dropped: Arc<std::sync::atomic::AtomicBool>,
}

/// Sets a flag when dropped.
struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl FakeCluster {
    fn record(&self, call: Call) {
        self.calls.lock().expect("lock").push(call);
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }

    fn add_ready_session(&self, ns: &str, name: &str) {
        let mut session = Session::new(name, SessionSpec::default());
        session.metadata.namespace = Some(ns.into());
        session.status = Some(SessionStatus {
            phase: Some(SessionPhase::Ready),
            pod_name: Some(format!("{name}-sandbox")),
            ..Default::default()
        });
        self.sessions
            .lock()
            .expect("lock")
            .insert((ns.into(), name.into()), session);
    }
}

/// Finishes every Execution at once with a fixed result.
fn finish(execution: &Execution) -> Execution {
    let mut done = execution.clone();
    done.metadata.uid = Some("uid-1".into());
    done.status = Some(ExecutionStatus {
        phase: Some(ExecutionPhase::Succeeded),
        stdout: Some("Sum: 15\n".into()),
        stderr: Some(String::new()),
        exit_code: Some(0),
        execution_time_ms: Some(12),
        memory_used_bytes: Some(1024),
        cpu_time_ms: Some(3),
        timed_out: Some(false),
        files_written: execution
            .spec
            .files
            .iter()
            .map(|f| f.path.clone())
            .collect(),
        ..Default::default()
    });
    done
}

struct FakeUpload {
    uploads: Arc<Mutex<Vec<Vec<u8>>>>,
    bytes: Vec<u8>,
}

impl Upload for FakeUpload {
    fn write<'b>(&'b mut self, bytes: &'b [u8]) -> BoxFuture<'b, Result<(), SandboxError>> {
        self.bytes.extend_from_slice(bytes);
        async { Ok(()) }.boxed()
    }

    fn finish(
        self: Box<Self>,
        _max_stdout: usize,
    ) -> BoxFuture<'static, Result<HelperOutput, SandboxError>> {
        // Decode the write-files stream as the runner would, to report the paths.
        let mut paths = Vec::new();
        let mut rest: &[u8] = &self.bytes;
        loop {
            let mut decoder = FrameDecoder::new();
            decoder.push(rest);
            let Some(frame) = decoder.next_frame() else {
                break;
            };
            let header: Value = serde_json::from_slice(&frame).unwrap_or_default();
            let header_len = rest.len() - decoder.buffered_bytes();
            rest = &rest[header_len..];
            if header["type"] == "end" {
                break;
            }
            let size = header["size"].as_u64().unwrap_or(0) as usize;
            paths.push(header["path"].as_str().unwrap_or_default().to_string());
            rest = &rest[size.min(rest.len())..];
        }
        self.uploads.lock().expect("lock").push(self.bytes.clone());
        let stdout = serde_json::to_vec(&json!({ "filesWritten": paths })).unwrap_or_default();
        async move {
            Ok(HelperOutput {
                exit_code: 0,
                stdout,
                stderr: Vec::new(),
            })
        }
        .boxed()
    }
}

impl Cluster for FakeCluster {
    fn get_session<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, super::errors::ApiResult<Option<Session>>> {
        let found = self
            .sessions
            .lock()
            .expect("lock")
            .get(&(ns.into(), name.into()))
            .cloned();
        async move { Ok(found) }.boxed()
    }

    fn list_sessions<'a>(
        &'a self,
        ns: &'a str,
    ) -> BoxFuture<'a, super::errors::ApiResult<Vec<Session>>> {
        let found = self
            .sessions
            .lock()
            .expect("lock")
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, s)| s.clone())
            .collect();
        async move { Ok(found) }.boxed()
    }

    fn create_session<'a>(
        &'a self,
        ns: &'a str,
        session: &'a Session,
    ) -> BoxFuture<'a, super::errors::ApiResult<Created<Session>>> {
        let name = session.metadata.name.clone().unwrap_or_default();
        self.record(Call::CreateSession(name.clone()));
        let mut sessions = self.sessions.lock().expect("lock");
        let result = if sessions.contains_key(&(ns.into(), name.clone())) {
            Created::Exists
        } else {
            let mut stored = session.clone();
            stored.metadata.creation_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
            );
            sessions.insert((ns.into(), name), stored.clone());
            Created::New(stored)
        };
        async move { Ok(result) }.boxed()
    }

    fn delete_session<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, super::errors::ApiResult<bool>> {
        self.record(Call::DeleteSession(name.into()));
        let existed = self
            .sessions
            .lock()
            .expect("lock")
            .remove(&(ns.into(), name.into()))
            .is_some();
        async move { Ok(existed) }.boxed()
    }

    fn touch_session<'a>(
        &'a self,
        _ns: &'a str,
        _name: &'a str,
    ) -> BoxFuture<'a, super::errors::ApiResult<()>> {
        async { Ok(()) }.boxed()
    }

    fn wait_session<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        _timeout: Duration,
        _done: fn(&Session) -> bool,
    ) -> BoxFuture<'a, super::errors::ApiResult<Option<Session>>> {
        self.get_session(ns, name)
    }

    fn create_secret<'a>(
        &'a self,
        _ns: &'a str,
        secret: &'a Secret,
    ) -> BoxFuture<'a, super::errors::ApiResult<()>> {
        self.record(Call::CreateSecret(
            secret.metadata.name.clone().unwrap_or_default(),
        ));
        async { Ok(()) }.boxed()
    }

    fn own_secret<'a>(
        &'a self,
        _ns: &'a str,
        _name: &'a str,
        _owner: OwnerReference,
    ) -> BoxFuture<'a, super::errors::ApiResult<()>> {
        async { Ok(()) }.boxed()
    }

    fn delete_secret<'a>(
        &'a self,
        _ns: &'a str,
        _name: &'a str,
    ) -> BoxFuture<'a, super::errors::ApiResult<()>> {
        async { Ok(()) }.boxed()
    }

    fn create_execution<'a>(
        &'a self,
        ns: &'a str,
        execution: &'a Execution,
    ) -> BoxFuture<'a, super::errors::ApiResult<Created<Execution>>> {
        let name = execution.metadata.name.clone().unwrap_or_default();
        self.record(Call::CreateExecution(name.clone()));
        let done = finish(execution);
        self.executions
            .lock()
            .expect("lock")
            .insert((ns.into(), name), done.clone());
        async move { Ok(Created::New(done)) }.boxed()
    }

    fn wait_execution<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        _timeout: Duration,
        _done: fn(&Execution) -> bool,
    ) -> BoxFuture<'a, super::errors::ApiResult<Option<Execution>>> {
        let found = self
            .executions
            .lock()
            .expect("lock")
            .get(&(ns.into(), name.into()))
            .cloned();
        async move { Ok(found) }.boxed()
    }

    fn helper<'a>(
        &'a self,
        _ns: &'a str,
        _pod: &'a str,
        args: Vec<String>,
        _max_stdout: usize,
    ) -> BoxFuture<'a, Result<HelperOutput, SandboxError>> {
        self.record(Call::Helper(args.clone()));
        let stdout = match args.first().map(String::as_str) {
            Some("ls") => json!({"files": [{"path": "a.txt", "size": 2, "modified": 0, "type": "file"}]}).to_string(),
            Some("ps") => json!({"processes": [
                {"pid": 1, "ppid": 0, "command": "/kubexec/bin/kubexec-runner init", "startedAt": 0, "rssBytes": 1, "state": "S"},
                {"pid": 7, "ppid": 1, "command": "bun run server.ts", "startedAt": 0, "rssBytes": 1, "state": "S"}]}).to_string(),
            Some("kill") => json!({"pid": 7, "signal": 15, "group": false}).to_string(),
            Some("cat") => "hi".to_string(),
            _ => String::new(),
        };
        async move {
            Ok(HelperOutput {
                exit_code: 0,
                stdout: stdout.into_bytes(),
                stderr: Vec::new(),
            })
        }
        .boxed()
    }

    fn upload<'a>(
        &'a self,
        _ns: &'a str,
        _pod: &'a str,
        args: Vec<String>,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, SandboxError>> {
        self.record(Call::Upload(args));
        let uploads = self.uploads.clone();
        async move {
            Ok(Box::new(FakeUpload {
                uploads,
                bytes: Vec::new(),
            }) as Box<dyn Upload>)
        }
        .boxed()
    }

    fn follow<'a>(
        &'a self,
        _ns: &'a str,
        _pod: &'a str,
        _run_id: &'a str,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<RunnerEvent, SandboxError>>, SandboxError>>
    {
        if self
            .endless_follow
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            let flag = DropFlag(self.follow_dropped.clone());
            let events = futures::stream::iter(vec![Ok(RunnerEvent::Stdout {
                data: "tick\n".into(),
            })])
            .chain(futures::stream::pending())
            .map(move |event| {
                let _keep = &flag;
                event
            });
            return async move { Ok(Box::pin(events) as BoxStream<'static, _>) }.boxed();
        }
        let events = futures::stream::iter(vec![
            Ok(RunnerEvent::Stdout {
                data: "Sum: ".into(),
            }),
            Ok(RunnerEvent::Stdout {
                data: "15\n".into(),
            }),
        ]);
        async move { Ok(Box::pin(events) as BoxStream<'static, _>) }.boxed()
    }

    fn ping(&self) -> BoxFuture<'_, bool> {
        async { true }.boxed()
    }
}

const NS: &str = "kubexec-acme";
const OTHER_NS: &str = "kubexec-rival";

struct Harness {
    cluster: Arc<FakeCluster>,
    state: AppState,
    free_key: String,
    paid_key: String,
    rival_key: String,
}

fn harness_with(tiers: Tiers) -> Harness {
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

fn harness() -> Harness {
    harness_with(Tiers::default())
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
    text: String,
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> Reply {
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

    async fn post(&self, key: &str, path: &str, body: impl Into<Body>) -> Reply {
        let request = Request::post(path)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(body.into())
            .expect("request");
        self.send(request).await
    }

    async fn post_json(&self, key: &str, path: &str, body: Value) -> Reply {
        self.post(key, path, body.to_string()).await
    }

    async fn get(&self, key: &str, path: &str) -> Reply {
        let request = Request::get(path)
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .expect("request");
        self.send(request).await
    }

    fn created_nothing(&self) -> bool {
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

fn assert_error(reply: &Reply, status: StatusCode, code: &str, field: Option<&str>) {
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

fn execute_body(extra: Value) -> Value {
    let mut body = json!({"sessionId": "ses-mine", "code": "console.log('Sum: ' + (10 + 5))"});
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

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
    assert!(matches!(
        h.cluster.calls().as_slice(),
        [Call::CreateExecution(_)]
    ));
}

#[tokio::test]
async fn missing_or_wrong_keys_are_401() {
    let h = harness();
    let no_key = h
        .send(
            Request::post("/execute")
                .body(Body::from(execute_body(json!({})).to_string()))
                .expect("request"),
        )
        .await;
    assert_error(&no_key, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", None);
    let wrong = h
        .post_json("kx_0000", "/execute", execute_body(json!({})))
        .await;
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", None);
    let basic = h
        .send(
            Request::get("/sessions")
                .header("authorization", format!("Basic {}", h.free_key))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_error(&basic, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", None);
    assert!(h.created_nothing());
}

#[tokio::test]
async fn malformed_json_is_invalid_json() {
    let h = harness();
    let reply = h.post(&h.free_key, "/execute", "{\"sessionId\": ").await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "INVALID_JSON", None);
    let reply = h.post(&h.free_key, "/sessions/create", "not json").await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "INVALID_JSON", None);
    let reply = h
        .post_json(
            &h.free_key,
            "/execute",
            execute_body(json!({"timeout": "soon"})),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        Some("timeout"),
    );
    assert!(h.created_nothing());
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
    assert!(h.created_nothing());
    // The paid tier allows 500.
    let paid = h
        .post_json(&h.paid_key, "/execute", execute_body(json!({"env": env})))
        .await;
    assert_eq!(paid.status, StatusCode::OK, "{}", paid.text);
    assert!(matches!(
        h.cluster.calls().as_slice(),
        [Call::CreateSecret(secret), Call::CreateExecution(exe)] if *secret == format!("{exe}-env")
    ));
}

#[tokio::test]
async fn file_paths_must_stay_in_the_workspace() {
    let h = harness();
    for path in [
        "../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "/workspace/../x",
    ] {
        let reply = h
            .post_json(
                &h.free_key,
                "/execute",
                execute_body(json!({"files": [{"path": "ok.txt", "content": "1"}, {"path": path, "content": "x"}]})),
            )
            .await;
        assert_error(
            &reply,
            StatusCode::BAD_REQUEST,
            "INVALID_PATH",
            Some("files[1].path"),
        );
    }
    assert!(h.created_nothing());
}

#[tokio::test]
async fn files_over_the_tier_limit_are_413_and_nothing_is_written() {
    let h = harness_with(
        Tiers::from_yaml("free:\n  fileSizeBytes: 1000\n  filesPerRequest: 3\n").expect("tiers"),
    );
    let big = "x".repeat(1001);
    let reply = h
        .post_json(
            &h.free_key,
            "/execute",
            execute_body(json!({"files": [{"path": "small.txt", "content": "1"}, {"path": "big.txt", "content": big}]})),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "FILE_TOO_LARGE",
        Some("files[1].content"),
    );
    let files: Vec<Value> = (0..4)
        .map(|i| json!({"path": format!("f{i}.txt"), "content": ""}))
        .collect();
    let many = h
        .post_json(
            &h.free_key,
            "/files/write",
            json!({"sessionId": "ses-mine", "files": files}),
        )
        .await;
    assert_error(
        &many,
        StatusCode::BAD_REQUEST,
        "TOO_MANY_FILES",
        Some("files"),
    );
    assert!(h.created_nothing());
}

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
async fn requests_beyond_the_rate_get_429_with_retry_after() {
    let h = harness_with(
        Tiers::from_yaml("free:\n  requestsPerMinute: 0.5\n  burst: 2\n").expect("tiers"),
    );
    for _ in 0..2 {
        assert_eq!(h.get(&h.free_key, "/sessions").await.status, StatusCode::OK);
    }
    let limited = h.get(&h.free_key, "/sessions").await;
    assert_error(
        &limited,
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        None,
    );
    let retry: u64 = limited
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry >= 1);
    // Other keys have their own bucket.
    assert_eq!(h.get(&h.paid_key, "/sessions").await.status, StatusCode::OK);
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
async fn large_files_are_streamed_before_the_execution() {
    let h = harness();
    let big = "y".repeat(300 * 1024);
    let reply = h
        .post_json(
            &h.free_key,
            "/execute",
            json!({"sessionId": "ses-mine", "command": "wc -c big.txt",
                   "files": [{"path": "big.txt", "content": big}, {"path": "b.bin", "content": "aGk=", "encoding": "base64"}]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["filesWritten"], json!(["big.txt", "b.bin"]));
    let calls = h.cluster.calls();
    assert!(
        matches!(calls.as_slice(), [Call::Upload(args), Call::CreateExecution(_)] if args[0] == "write-files"),
        "{calls:?}"
    );
    let uploads = h.cluster.uploads.lock().expect("lock").clone();
    let stream = &uploads[0];
    assert!(
        stream.windows(2).any(|w| w == b"hi"),
        "decoded base64 in the stream"
    );
    let run = vec![b'y'; 300 * 1024];
    assert!(
        stream.windows(run.len()).any(|w| w == run.as_slice()),
        "the raw content in the stream"
    );
    let executions = h.cluster.executions.lock().expect("lock").clone();
    assert!(executions.values().all(|e| e.spec.files.is_empty()));
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
    let result: Value = serde_json::from_str(events[2].1).expect("json");
    let plain = h
        .post_json(&h.free_key, "/execute", execute_body(json!({})))
        .await;
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

#[tokio::test]
async fn files_and_processes_go_through_the_runner_helpers() {
    let h = harness();
    let list = h.get(&h.free_key, "/files/list?sessionId=ses-mine").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.body["files"][0]["path"], "a.txt");
    let read = h
        .get(&h.free_key, "/files/read?sessionId=ses-mine&path=a.txt")
        .await;
    assert_eq!(read.body["content"], "hi", "{}", read.text);
    let bad = h
        .get(&h.free_key, "/files/read?sessionId=ses-mine&path=../x")
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "INVALID_PATH", Some("path"));
    let missing = h.get(&h.free_key, "/files/read?path=a.txt").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{}", missing.text);
    let ps = h
        .get(&h.free_key, "/processes/list?sessionId=ses-mine")
        .await;
    assert_eq!(
        ps.body["processes"].as_array().map(Vec::len),
        Some(1),
        "{}",
        ps.text
    );
    let kill = h
        .post_json(
            &h.free_key,
            "/processes/kill",
            json!({"sessionId": "ses-mine", "pid": 7}),
        )
        .await;
    assert_eq!(kill.body["success"], true, "{}", kill.text);
    let init = h
        .post_json(
            &h.free_key,
            "/processes/kill",
            json!({"sessionId": "ses-mine", "pid": 1}),
        )
        .await;
    assert_error(
        &init,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        Some("pid"),
    );
}

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
async fn a_server_error_does_not_leak() {
    let error = super::errors::ApiError::internal("create execution", "apiserver 10.1.2.3 said no");
    let response = axum::response::IntoResponse::into_response(error);
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("10.1.2.3") && text.contains("INTERNAL_ERROR"),
        "{text}"
    );
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

#[test]
fn limits_of_the_free_tier_are_the_seeds() {
    let limits = TierLimits::free();
    assert_eq!(
        (
            limits.timeout_seconds,
            limits.env_vars,
            limits.files_per_request
        ),
        (30, 100, 100)
    );
}
