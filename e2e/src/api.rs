//! The REST API in end-to-end tests: a `kubexec api` process per test, keys made with
//! `kubexec keys create`, and a small HTTP client (plain and Server-Sent Events).
//!
//! The api serves the test's namespaces with an empty `--namespace-prefix`, so a tenant is a
//! namespace name, and keeps its key Secrets in a namespace of its own, `<test namespace>-keys`
//! (deleted with the api): `keys create` refuses a tenant whose namespace holds the keys. A test
//! namespace becomes a tenant by carrying kubexec's mark (`create_key` puts it on), as
//! `keys create` refuses namespaces kubexec did not make.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::{repo_root, TestNs};

pub fn kubexec_binary() -> PathBuf {
    std::env::var_os("KUBEXEC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/kubexec"))
}

/// A running `kubexec api`.
pub struct ApiServer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it serves previews (`--preview-listen 127.0.0.1:0`; origins
    /// `<session>-<port>.preview.localhost:<this port>`).
    pub preview_addr: SocketAddr,
    keys_namespace: String,
    ns: String,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl ApiServer {
    /// Starts an api for the test namespace `ns`, its keys in `<ns>-keys`; extra flags are
    /// appended.
    pub fn start(ns: &str, extra: &[&str]) -> ApiServer {
        Self::start_with_env(ns, extra, &[])
    }

    /// As [`ApiServer::start`], with extra environment variables for the api process (e.g. a
    /// `KUBECONFIG` that reaches the apiserver through a [`crate::proxy::CuttableProxy`]).
    pub fn start_with_env(ns: &str, extra: &[&str], env: &[(&str, &str)]) -> ApiServer {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, addr, preview_addr) = Self::spawn(ns, extra, &env);
        ApiServer {
            child,
            addr,
            preview_addr,
            keys_namespace: format!("{ns}-keys"),
            ns: ns.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env,
        }
    }

    /// Kills the api process and starts it again with the same flags and environment (new
    /// addresses).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let (child, addr, preview_addr) = Self::spawn(&self.ns, &extra, &self.env);
        self.child = child;
        self.addr = addr;
        self.preview_addr = preview_addr;
    }

    fn spawn(
        ns: &str,
        extra: &[&str],
        env: &[(String, String)],
    ) -> (Child, SocketAddr, SocketAddr) {
        let keys_namespace = &format!("{ns}-keys");
        let made = crate::kubectl(&["create", "namespace", keys_namespace]);
        assert!(
            made.status.success()
                || String::from_utf8_lossy(&made.stderr).contains("AlreadyExists"),
            "create {keys_namespace}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let _ = crate::kubectl(&[
            "label",
            "namespace",
            keys_namespace,
            "kubexec.dev/e2e=true",
            "--overwrite",
        ]);
        let logs = repo_root().join("target/e2e-logs");
        let _ = std::fs::create_dir_all(&logs);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{ns}-api.log")))
            .expect("api log file");
        let mut child = Command::new(kubexec_binary())
            .args([
                "api",
                "--listen",
                "127.0.0.1:0",
                "--keys-namespace",
                keys_namespace,
                "--namespace-prefix",
                "",
                "--session-ready-timeout",
                "90",
                "--preview-listen",
                "127.0.0.1:0",
            ])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info,kubexec=debug")
            .env(
                kubexec::shared::result_secret::RESULT_SECRET_ENV,
                crate::E2E_RESULT_SECRET,
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e} (cargo build first)", kubexec_binary()));
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Write;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for (what, prefix) in [
                    ("api", "kubexec api listening on "),
                    ("previews", "kubexec api previews listening on "),
                ] {
                    if let Some(addr) = line.strip_prefix(prefix) {
                        let _ = tx.send((what, addr.trim().to_string()));
                    }
                }
                let _ = writeln!(log, "{line}");
            }
        });
        let (mut addr, mut preview_addr) = (None, None);
        while addr.is_none() || preview_addr.is_none() {
            let (what, found) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("the api printed its addresses");
            let found: SocketAddr = found.parse().expect("a socket address");
            match what {
                "api" => addr = Some(found),
                _ => preview_addr = Some(found),
            }
        }
        (
            child,
            addr.expect("the api's address"),
            preview_addr.expect("the preview address"),
        )
    }

    /// True while the api process has not exited (it never restarts on its own: an exit is a
    /// crash).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The api's process id, while it runs (`None` once it exited).
    pub fn pid(&mut self) -> Option<u32> {
        match self.child.try_wait() {
            Ok(None) => Some(self.child.id()),
            _ => None,
        }
    }

    /// A client of this api.
    pub fn client(&self) -> Http {
        Http { addr: self.addr }
    }

    /// The namespace of this api's key Secrets.
    pub fn keys_namespace(&self) -> &str {
        &self.keys_namespace
    }

    /// Runs `kubexec keys <args>` against this api's keys namespace; returns stdout.
    pub fn keys(&self, args: &[&str]) -> String {
        let output = keys_command(&self.keys_namespace, "", args);
        assert!(
            output.status.success(),
            "keys {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Creates a key for `tenant` (a namespace) with `kubexec keys create`, and waits until the
    /// api accepts it.
    pub async fn create_key(&self, tenant: &str, tier: &str) -> String {
        mark_as_tenant(tenant);
        let output = Command::new(kubexec_binary())
            .args([
                "keys",
                "create",
                "--tenant",
                tenant,
                "--tier",
                tier,
                "--keys-namespace",
                &self.keys_namespace,
                "--namespace-prefix",
                "",
            ])
            .output()
            .expect("kubexec keys create");
        assert!(
            output.status.success(),
            "keys create: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let key = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert!(key.starts_with("kx_"), "a key on stdout, got {key:?}");
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = client.get("/sessions", Some(&key)).await;
            if reply.status == StatusCode::OK {
                return key;
            }
            assert!(
                Instant::now() < deadline,
                "the api never accepted the new key: {}",
                reply.text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("KUBEXEC_E2E_KEEP").is_none() {
            let _ = crate::kubectl(&["delete", "namespace", &self.keys_namespace, "--wait=false"]);
        }
    }
}

/// Runs `kubexec keys <args> --keys-namespace <keys_namespace> --namespace-prefix <prefix>`.
pub fn keys_command(keys_namespace: &str, prefix: &str, args: &[&str]) -> std::process::Output {
    Command::new(kubexec_binary())
        .arg("keys")
        .args(args)
        .args([
            "--keys-namespace",
            keys_namespace,
            "--namespace-prefix",
            prefix,
        ])
        .output()
        .expect("kubexec keys")
}

/// Marks a test namespace as made by kubexec, so that `keys create` accepts it as a tenant.
pub fn mark_as_tenant(ns: &str) {
    let out = crate::kubectl(&[
        "label",
        "namespace",
        ns,
        "app.kubernetes.io/managed-by=kubexec",
        "--overwrite",
    ]);
    assert!(
        out.status.success(),
        "label {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A response.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One Server-Sent Event and when it arrived.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// When it arrived.
    pub at: Instant,
    /// The `event:` name.
    pub event: String,
    /// The `data:` lines joined.
    pub data: String,
    /// The `id:`, if any.
    pub id: Option<String>,
}

/// A minimal HTTP/1.1 client (one connection per request).
#[derive(Clone, Copy)]
pub struct Http {
    addr: SocketAddr,
}

impl Http {
    /// A client for an api at `addr` (e.g. the one `make up` forwards).
    pub fn at(addr: SocketAddr) -> Http {
        Http { addr }
    }

    /// A fresh HTTP/1 connection to the api, sending bodies of type `B`; a refused or broken
    /// connection is an error.
    async fn try_connect<B>(&self) -> Result<hyper::client::conn::http1::SendRequest<B>, String>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect to the api: {e}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("http handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> hyper::Response<hyper::body::Incoming> {
        self.try_send(method, path, key, headers, body)
            .await
            .expect("response")
    }

    async fn try_send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let mut sender = self.try_connect().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body))).expect("request");
        sender
            .send_request(request)
            .await
            .map_err(|e| format!("response: {e}"))
    }

    /// Sends a request and reads the whole response.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        self.try_request(method, path, key, headers, body)
            .await
            .expect("a response")
    }

    /// [`Http::request`], with a refused connection or one cut before the whole response as
    /// an error (what a client sees while the api restarts).
    pub async fn try_request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        let response = self.try_send(method, path, key, headers, body).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// POSTs a body of `chunks` × `chunk_bytes` spaces with chunked transfer encoding (no
    /// `Content-Length`), made as it is sent. Reads the answer while the body is still being
    /// sent: an api that refuses the body answers early and closes, and a client that only
    /// reads after writing sees a broken pipe instead of the answer.
    pub async fn post_chunked(
        &self,
        path: &str,
        key: &str,
        chunks: usize,
        chunk_bytes: usize,
    ) -> Reply {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect to the api");
        let (mut reader, mut writer) = stream.into_split();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            self.addr
        );
        let sending = tokio::spawn(async move {
            let chunk = vec![b' '; chunk_bytes];
            let size = format!("{chunk_bytes:x}\r\n");
            writer.write_all(head.as_bytes()).await?;
            for _ in 0..chunks {
                writer.write_all(size.as_bytes()).await?;
                writer.write_all(&chunk).await?;
                writer.write_all(b"\r\n").await?;
            }
            writer.write_all(b"0\r\n\r\n").await
        });
        // The response head, then a body of its Content-Length (or up to the close).
        let mut received = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        let head_end = loop {
            if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = reader.read(&mut buf).await.expect("read the response");
            assert!(n > 0, "the api closed without a response");
            received.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse::<u16>().ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
            .expect("a status line");
        let mut headers = hyper::HeaderMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            if let Some((name, value)) = line.split_once(':') {
                if let (Ok(name), Ok(value)) = (
                    hyper::header::HeaderName::from_bytes(name.trim().as_bytes()),
                    hyper::header::HeaderValue::from_str(value.trim()),
                ) {
                    headers.insert(name, value);
                }
            }
        }
        let length = headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut body = received[head_end..].to_vec();
        while length.is_none_or(|l| body.len() < l) {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&buf[..n]),
            }
        }
        sending.abort();
        Reply {
            status,
            headers,
            body: Bytes::from(body),
        }
    }

    /// GET.
    pub async fn get(&self, path: &str, key: Option<&str>) -> Reply {
        self.request(Method::GET, path, key, &[], Vec::new()).await
    }

    /// POST JSON.
    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Reply {
        self.request(Method::POST, path, key, &[], body.to_string().into_bytes())
            .await
    }

    /// POST JSON and read the response as Server-Sent Events, timestamped on arrival.
    pub async fn post_sse(
        &self,
        path: &str,
        key: &str,
        body: &Value,
    ) -> (StatusCode, Vec<SseEvent>) {
        let (status, _, events) = self
            .sse(
                Method::POST,
                path,
                key,
                &[],
                body.to_string().into_bytes(),
                None,
            )
            .await;
        (status, events)
    }

    /// Sends a request and reads the response as Server-Sent Events: all of them, or only the
    /// first `stop_after` (the connection is then dropped, as a client that went away).
    pub async fn sse(
        &self,
        method: Method,
        path: &str,
        key: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        stop_after: Option<usize>,
    ) -> (StatusCode, hyper::HeaderMap, Vec<SseEvent>) {
        let response = self.send(method, path, Some(key), headers, body).await;
        let status = response.status();
        let response_headers = response.headers().clone();
        let mut body = response.into_body();
        let mut buffer = String::new();
        let mut events = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Some(chunk) = frame.data_ref() else {
                continue;
            };
            let at = Instant::now();
            buffer.push_str(&String::from_utf8_lossy(chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = Vec::new();
                let mut id = None;
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().to_string());
                    } else if let Some(line) = line.strip_prefix("data:") {
                        data.push(line.strip_prefix(' ').unwrap_or(line).to_string());
                    }
                }
                if !data.is_empty() {
                    events.push(SseEvent {
                        at,
                        event,
                        data: data.join("\n"),
                        id,
                    });
                }
            }
            if stop_after.is_some_and(|n| events.len() >= n) {
                break;
            }
        }
        (status, response_headers, events)
    }
}

/// A test namespace with its operator, an api, a free-tier key and a session.
pub struct Fixture {
    pub ns: TestNs,
    pub api: ApiServer,
    pub http: Http,
    pub key: String,
    pub session: String,
}

/// The chart-installed api as `make up` leaves it: a client for `KUBEXEC_URL`, and
/// `KUBEXEC_API_KEY` (`e2e/run-all` sets both from `e2e/deploy/up`'s output).
pub fn deployed() -> (Http, String) {
    let url = std::env::var("KUBEXEC_URL").expect("KUBEXEC_URL: run e2e/deploy/up (make up) first");
    let key = std::env::var("KUBEXEC_API_KEY")
        .expect("KUBEXEC_API_KEY: run e2e/deploy/up (make up) first");
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("KUBEXEC_URL is http://IP:PORT");
    (Http::at(addr), key)
}

pub async fn fixture(prefix: &str) -> Fixture {
    fixture_on_tier(prefix, "free").await
}

pub async fn fixture_on_tier(prefix: &str, tier: &str) -> Fixture {
    let ns = TestNs::new(prefix).await;
    let api = ApiServer::start(&ns.name, &[]);
    let key = api.create_key(&ns.name, tier).await;
    let http = api.client();
    let created = http.post("/sessions/create", Some(&key), &json!({})).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let session = created.json()["sessionId"]
        .as_str()
        .expect("sessionId")
        .to_string();
    Fixture {
        ns,
        api,
        http,
        key,
        session,
    }
}

impl Fixture {
    /// Executes in the fixture's session; asserts a 200 and returns the body.
    pub async fn execute(&self, mut body: Value) -> Value {
        body["sessionId"] = json!(self.session);
        let reply = self.http.post("/execute", Some(&self.key), &body).await;
        assert_eq!(reply.status, 200, "{body}: {}", reply.text());
        reply.json()
    }
}

/// A preview link taken apart: its origin's authority (`<session>-<port>.preview.localhost:N`),
/// the loopback address it resolves to, and its path with the query.
#[derive(Clone, Debug)]
pub struct PreviewLink {
    /// The `Host` of the preview's origin.
    pub authority: String,
    /// Where to connect (`*.localhost` is loopback; the URL's port).
    pub addr: SocketAddr,
    /// The path and query, token included.
    pub path_and_query: String,
}

impl PreviewLink {
    /// Parses an `http://` previewUrl.
    pub fn parse(url: &str) -> PreviewLink {
        let rest = url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("an http:// previewUrl: {url}"));
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let port: u16 = authority
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(80);
        PreviewLink {
            authority: authority.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            path_and_query: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
        }
    }
}

/// `GET path` on a preview origin, with the preview cookie if given.
pub async fn preview_get(link: &PreviewLink, path: &str, cookie: Option<&str>) -> Reply {
    let stream = tokio::net::TcpStream::connect(link.addr)
        .await
        .expect("connect to the preview listener");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("http handshake");
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header("host", &link.authority);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let request = request.body(Full::new(Bytes::new())).expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Reply {
        status,
        headers,
        body,
    }
}

/// Opens a previewUrl as a browser does: the link sets the preview cookie and redirects to
/// the same page without the token, which is then fetched with the cookie. Returns that page
/// and the cookie (`name=value`).
pub async fn open_preview(url: &str) -> (Reply, String) {
    let link = PreviewLink::parse(url);
    let first = preview_get(&link, &link.path_and_query, None).await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.text());
    let cookie = first
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a preview cookie")
        .to_string();
    let location = first
        .headers
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a redirect")
        .to_string();
    assert!(!location.contains("kubexec_token"), "{location}");
    (preview_get(&link, &location, Some(&cookie)).await, cookie)
}
