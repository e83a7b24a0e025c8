//! The in-memory [`Cluster`] the route tests run the router over: it stores Sessions and
//! Executions in maps, finishes every Execution at once, answers the runner helpers with fixed
//! output, and records what it was asked to do.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{future::BoxFuture, stream::BoxStream, FutureExt, StreamExt};
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kubexec_runner::protocol::{FrameDecoder, RunnerEvent};
use serde_json::{json, Value};

use crate::{
    api::{
        cluster::{ByteStream, Cluster, Created, ExecutionWatch, Upload},
        errors::ApiResult,
    },
    crd::{
        Execution, ExecutionPhase, ExecutionStatus, Session, SessionPhase, SessionSpec,
        SessionStatus,
    },
    sandbox::{HelperOutput, SandboxError},
};

/// What the fake was asked to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Call {
    CreateSession(String),
    DeleteSession(String),
    CreateSecret(String),
    WatchExecution(String),
    CreateExecution(String),
    Helper(Vec<String>),
    Upload(Vec<String>),
    /// A SessionPool applied: namespace/name and its replicas.
    EnsurePool(String, i32),
}

#[derive(Default)]
pub(super) struct FakeCluster {
    sessions: Mutex<BTreeMap<(String, String), Session>>,
    pub(super) executions: Arc<Mutex<BTreeMap<(String, String), Execution>>>,
    calls: Mutex<Vec<Call>>,
    pub(super) uploads: Arc<Mutex<Vec<Vec<u8>>>>,
    /// When set, `follow` streams one chunk and then nothing, until dropped.
    pub(super) endless_follow: std::sync::atomic::AtomicBool,
    pub(super) follow_dropped: Arc<std::sync::atomic::AtomicBool>,
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

    pub(super) fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }

    /// The Session stored under `ns/name`.
    pub(super) fn session(&self, ns: &str, name: &str) -> Option<Session> {
        self.sessions
            .lock()
            .expect("lock")
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    pub(super) fn add_ready_session(&self, ns: &str, name: &str) {
        self.add_session_at(ns, name, None);
    }

    /// A ready session whose Pod has the address `pod_ip` (previews connect to it).
    pub(super) fn add_session_at(&self, ns: &str, name: &str, pod_ip: Option<&str>) {
        let mut session = Session::new(name, SessionSpec::default());
        session.metadata.namespace = Some(ns.into());
        session.status = Some(SessionStatus {
            phase: Some(SessionPhase::Ready),
            pod_name: Some(format!("{name}-sandbox")),
            pod_ip: pod_ip.map(str::to_string),
            ..Default::default()
        });
        self.sessions
            .lock()
            .expect("lock")
            .insert((ns.into(), name.into()), session);
    }
}

/// A working directory that the fake's sessions do not have.
pub(super) const MISSING_DIR: &str = "/workspace/missing";

/// Finishes every Execution at once with a fixed result.
fn finish(execution: &Execution) -> Execution {
    let mut done = execution.clone();
    done.metadata.uid = Some("uid-1".into());
    if execution.spec.working_dir.as_deref() == Some(MISSING_DIR) {
        // What the operator writes when the runner refuses a missing working directory.
        done.status = Some(ExecutionStatus {
            phase: Some(ExecutionPhase::Failed),
            reason: Some(crate::crd::conditions::REASON_WORKING_DIR_NOT_FOUND.into()),
            message: Some("WorkingDirMissing: no such directory".into()),
            ..Default::default()
        });
        return done;
    }
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

/// Answers with what the fake holds when asked (its Executions finish as they are created).
struct FakeWatch {
    executions: Arc<Mutex<BTreeMap<(String, String), Execution>>>,
    key: (String, String),
}

impl ExecutionWatch for FakeWatch {
    fn until(
        &mut self,
        _timeout: Duration,
        _done: fn(&Execution) -> bool,
    ) -> BoxFuture<'_, ApiResult<Option<Execution>>> {
        let found = self
            .executions
            .lock()
            .expect("lock")
            .get(&self.key)
            .cloned();
        async move { Ok(found) }.boxed()
    }
}

impl Cluster for FakeCluster {
    fn ensure_pool<'a>(
        &'a self,
        ns: &'a str,
        pool: &'a crate::crd::SessionPool,
    ) -> BoxFuture<'a, ApiResult<()>> {
        let name = pool.metadata.name.clone().unwrap_or_default();
        self.record(Call::EnsurePool(format!("{ns}/{name}"), pool.spec.replicas));
        async { Ok(()) }.boxed()
    }

    fn get_session<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, ApiResult<Option<Session>>> {
        let found = self
            .sessions
            .lock()
            .expect("lock")
            .get(&(ns.into(), name.into()))
            .cloned();
        async move { Ok(found) }.boxed()
    }

    fn list_sessions<'a>(&'a self, ns: &'a str) -> BoxFuture<'a, ApiResult<Vec<Session>>> {
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
    ) -> BoxFuture<'a, ApiResult<Created<Session>>> {
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

    fn delete_session<'a>(&'a self, ns: &'a str, name: &'a str) -> BoxFuture<'a, ApiResult<bool>> {
        self.record(Call::DeleteSession(name.into()));
        let existed = self
            .sessions
            .lock()
            .expect("lock")
            .remove(&(ns.into(), name.into()))
            .is_some();
        async move { Ok(existed) }.boxed()
    }

    fn touch_session<'a>(&'a self, _ns: &'a str, _name: &'a str) -> BoxFuture<'a, ApiResult<()>> {
        async { Ok(()) }.boxed()
    }

    fn wait_session<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
        _timeout: Duration,
        _done: fn(&Session) -> bool,
    ) -> BoxFuture<'a, ApiResult<Option<Session>>> {
        self.get_session(ns, name)
    }

    fn create_secret<'a>(
        &'a self,
        _ns: &'a str,
        secret: &'a Secret,
    ) -> BoxFuture<'a, ApiResult<()>> {
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
    ) -> BoxFuture<'a, ApiResult<()>> {
        async { Ok(()) }.boxed()
    }

    fn delete_secret<'a>(&'a self, _ns: &'a str, _name: &'a str) -> BoxFuture<'a, ApiResult<()>> {
        async { Ok(()) }.boxed()
    }

    fn create_execution<'a>(
        &'a self,
        ns: &'a str,
        execution: &'a Execution,
    ) -> BoxFuture<'a, ApiResult<Created<Execution>>> {
        let name = execution.metadata.name.clone().unwrap_or_default();
        self.record(Call::CreateExecution(name.clone()));
        let done = finish(execution);
        self.executions
            .lock()
            .expect("lock")
            .insert((ns.into(), name), done.clone());
        async move { Ok(Created::New(done)) }.boxed()
    }

    fn watch_execution(&self, ns: &str, name: &str) -> Box<dyn ExecutionWatch> {
        self.record(Call::WatchExecution(name.into()));
        Box::new(FakeWatch {
            executions: self.executions.clone(),
            key: (ns.into(), name.into()),
        })
    }

    fn helper<'a>(
        &'a self,
        _ns: &'a str,
        _pod: &'a str,
        args: Vec<String>,
        _max_stdout: usize,
    ) -> BoxFuture<'a, Result<HelperOutput, SandboxError>> {
        self.record(Call::Helper(args.clone()));
        // What a helper that never ends becomes.
        if args.first().map(String::as_str) == Some("ls")
            && args.get(1).map(String::as_str) == Some("endless")
        {
            return async { Err(SandboxError::DeadlineExceeded { after_secs: 20 }) }.boxed();
        }
        let stdout = match args.first().map(String::as_str) {
            Some("ls") => json!({"files": [{"path": "a.txt", "size": 2, "modified": 0, "type": "file"}]}).to_string(),
            Some("ps") => json!({"processes": [
                {"pid": 1, "ppid": 0, "command": "/kubexec/bin/kubexec-runner init", "startedAt": 0, "rssBytes": 1, "state": "S"},
                {"pid": 7, "ppid": 1, "command": "bun run server.ts", "startedAt": 0, "rssBytes": 1, "state": "S"}]}).to_string(),
            Some("kill") => json!({"pid": 7, "signal": 15, "group": false}).to_string(),
            Some("cat") => "hi".to_string(),
            // No run directories: every execution is answered from its Execution.
            Some("result") => json!({"runId": null, "status": {"state": "unknown"}}).to_string(),
            Some("runs") => json!({"runs": []}).to_string(),
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

    fn read_stream<'a>(
        &'a self,
        _ns: &'a str,
        _pod: &'a str,
        args: Vec<String>,
    ) -> BoxFuture<'a, Result<ByteStream, SandboxError>> {
        self.record(Call::Helper(args.clone()));
        let chunks: Vec<Result<bytes::Bytes, SandboxError>> = match args.get(1).map(String::as_str)
        {
            // What the runner says about a FIFO.
            Some("pipe") => vec![Err(SandboxError::Runner {
                code: kubexec_runner::protocol::ErrorCode::NotAFile,
                message: "pipe is not a regular file".into(),
            })],
            // Not UTF-8, in two chunks.
            Some("binary.bin") => vec![
                Ok(bytes::Bytes::from_static(b"A\xc3")),
                Ok(bytes::Bytes::from_static(b"\xff\x00")),
            ],
            // "é" cut between chunks.
            Some("cafe.txt") => vec![
                Ok(bytes::Bytes::from_static(b"caf\xc3")),
                Ok(bytes::Bytes::from_static(b"\xa9")),
            ],
            _ => vec![Ok(bytes::Bytes::from_static(b"hi"))],
        };
        async move { Ok(futures::stream::iter(chunks).boxed()) }.boxed()
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
