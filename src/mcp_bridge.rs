//! `kubexec mcp --url <api>`: the MCP server for local agent clients, over stdio.
//!
//! It is a bridge, not a second server: each JSON-RPC message read from stdin is POSTed to
//! the api's `/mcp` (streamable HTTP) with the key from `KUBEXEC_API_KEY`, and every message
//! of the reply (progress notifications, then the result) is written to stdout, one per line,
//! as it arrives. So the tools, their schemas, tenancy, tiers and rate limits exist once, in
//! the api, and a stdio client sees exactly what an HTTP client sees; the bridge needs no
//! cluster credentials, only the key. Requests run concurrently, as a client may send a
//! second call while an `execute` streams.
//!
//! The key comes only from the environment: an argument would show in `ps` and in shell
//! history.

use std::{sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{header, Method, Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    sync::{Mutex, RwLock},
    task::JoinSet,
};

/// The variable holding the API key.
pub const API_KEY_ENV: &str = "KUBEXEC_API_KEY";
/// The MCP endpoint below the api's URL.
pub const MCP_PATH: &str = "/mcp";
/// JSON-RPC's "server error" code, for a reply the api refused at the HTTP level.
const HTTP_ERROR: i64 = -32000;
/// JSON-RPC's parse error code.
const PARSE_ERROR: i64 = -32700;

/// What can stop the bridge.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// No key in the environment.
    #[error("set {API_KEY_ENV} to an API key (it is never taken from an argument)")]
    NoKey,
    /// The URL is not an http(s) URL.
    #[error("--url {url}: {message}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The TLS roots could not be loaded.
    #[error("loading the system's TLS roots: {0}")]
    Tls(std::io::Error),
    /// stdin or stdout failed.
    #[error("stdio: {0}")]
    Io(#[from] std::io::Error),
}

/// The `/mcp` URI below `url` (`http://host:port[/prefix]`).
pub fn mcp_uri(url: &str) -> Result<Uri, BridgeError> {
    let bad = |message: &str| BridgeError::BadUrl {
        url: url.to_string(),
        message: message.to_string(),
    };
    let base = url.trim_end_matches('/');
    let uri: Uri = format!("{base}{MCP_PATH}")
        .parse()
        .map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("expected http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if uri.query().is_some() {
        return Err(bad("no query string, please"));
    }
    Ok(uri)
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What the bridge learns from the server's replies and repeats on every request.
#[derive(Default)]
struct Negotiated {
    /// The protocol version of the `initialize` result (sent as `MCP-Protocol-Version`).
    protocol_version: Option<String>,
    /// A session id, if the server keeps sessions (kubexec's does not).
    session_id: Option<String>,
}

struct Bridge<W> {
    client: HttpClient,
    uri: Uri,
    authorization: String,
    negotiated: RwLock<Negotiated>,
    out: Mutex<W>,
}

/// Runs the bridge on the process's stdin and stdout until stdin closes.
pub async fn run(url: &str) -> Result<(), BridgeError> {
    let key = std::env::var(API_KEY_ENV)
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .ok_or(BridgeError::NoKey)?;
    let uri = mcp_uri(url)?;
    serve(uri, &key, tokio::io::stdin(), tokio::io::stdout()).await
}

/// The bridge over any reader and writer (tests use pipes).
pub async fn serve<R, W>(uri: Uri, key: &str, input: R, output: W) -> Result<(), BridgeError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider)
        .map_err(BridgeError::Tls)?
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https);
    let bridge = Arc::new(Bridge {
        client,
        uri,
        authorization: format!("Bearer {key}"),
        negotiated: RwLock::new(Negotiated::default()),
        out: Mutex::new(output),
    });
    let mut lines = BufReader::new(input);
    let mut in_flight = JoinSet::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            break;
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let message: Value = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(e) => {
                bridge
                    .write(&rpc_error(Value::Null, PARSE_ERROR, &e.to_string(), None))
                    .await?;
                continue;
            }
        };
        // `initialize` goes first and alone: its reply sets the version every later request
        // carries.
        let is_initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
        let bridge = bridge.clone();
        let task = async move {
            if let Err(e) = bridge.forward(message).await {
                tracing::warn!(error = %e, "could not write to stdout");
            }
        };
        if is_initialize {
            task.await;
        } else {
            in_flight.spawn(task);
        }
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
    Ok(())
}

impl<W: AsyncWrite + Unpin + Send> Bridge<W> {
    /// Writes one message as one line.
    async fn write(&self, message: &Value) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut out = self.out.lock().await;
        out.write_all(&line).await?;
        out.flush().await
    }

    /// POSTs one message and writes every message of the reply; a failed request becomes a
    /// JSON-RPC error for its id (notifications have none to answer).
    async fn forward(&self, message: Value) -> std::io::Result<()> {
        let id = message.get("id").cloned();
        let is_initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
        let fail = |text: String, data: Option<Value>| {
            id.clone().map(|id| rpc_error(id, HTTP_ERROR, &text, data))
        };
        let request = match self.request(&message).await {
            Ok(request) => request,
            Err(text) => return self.write_opt(fail(text, None)).await,
        };
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(e) => {
                return self
                    .write_opt(fail(format!("cannot reach {}: {e}", self.uri), None))
                    .await
            }
        };
        let status = response.status();
        if let Some(session) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            self.negotiated.write().await.session_id = Some(session.to_string());
        }
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if status == StatusCode::ACCEPTED {
            return Ok(());
        }
        let mut body = response.into_body();
        if status.is_success() && is_sse {
            let mut events = SseParser::default();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return self
                        .write_opt(fail("the reply stream broke off".into(), None))
                        .await;
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                for event in events.push(&data) {
                    self.reply(&event, is_initialize).await?;
                }
            }
            return Ok(());
        }
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            return self
                .reply(&String::from_utf8_lossy(&bytes), is_initialize)
                .await;
        }
        // The api's own error body (401, 413, 429) says why; keep it as the error's data.
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let reason = body
            .as_ref()
            .and_then(|b| b["error"]["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        self.write_opt(fail(format!("HTTP {}: {reason}", status.as_u16()), body))
            .await
    }

    async fn write_opt(&self, message: Option<Value>) -> std::io::Result<()> {
        match message {
            Some(message) => self.write(&message).await,
            None => Ok(()),
        }
    }

    /// Writes the messages of one reply body (a message or a batch); remembers the protocol
    /// version an `initialize` result names.
    async fn reply(&self, text: &str, is_initialize: bool) -> std::io::Result<()> {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            tracing::warn!("the api sent a message that is not JSON; dropped");
            return Ok(());
        };
        let messages = match value {
            Value::Array(batch) => batch,
            single => vec![single],
        };
        for message in messages {
            if is_initialize {
                if let Some(version) = message["result"]["protocolVersion"].as_str() {
                    self.negotiated.write().await.protocol_version = Some(version.to_string());
                }
            }
            self.write(&message).await?;
        }
        Ok(())
    }

    async fn request(&self, message: &Value) -> Result<Request<Full<Bytes>>, String> {
        let body = serde_json::to_vec(message).map_err(|e| e.to_string())?;
        let negotiated = self.negotiated.read().await;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(header::AUTHORIZATION, &self.authorization)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream");
        if let Some(version) = &negotiated.protocol_version {
            request = request.header("mcp-protocol-version", version);
        }
        if let Some(session) = &negotiated.session_id {
            request = request.header("mcp-session-id", session);
        }
        request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())
    }
}

fn rpc_error(id: Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

/// Server-Sent Events, fed in chunks as they arrive; answers the data of each complete event.
#[derive(Default)]
struct SseParser {
    buffer: BytesMut,
    data: Vec<String>,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line = self.buffer.split_to(end + 1);
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                self.data
                    .push(value.strip_prefix(' ').unwrap_or(value).to_string());
            }
            // `event:`, `id:`, `retry:` and `:` comments carry nothing to forward.
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_must_be_http() {
        assert_eq!(
            mcp_uri("http://127.0.0.1:8080/")
                .expect("valid")
                .to_string(),
            "http://127.0.0.1:8080/mcp"
        );
        assert_eq!(
            mcp_uri("https://run.example.com/api")
                .expect("valid")
                .path(),
            "/api/mcp"
        );
        assert!(mcp_uri("ftp://x").is_err());
        assert!(mcp_uri("localhost:8080").is_err());
        assert!(mcp_uri("http://x/?a=b").is_err());
    }

    #[test]
    fn sse_events_are_split_across_chunks() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"retry: 3000\n\ndata: {\"a\"").is_empty());
        assert_eq!(parser.push(b":1}\r\n\r\n: ping\n\n"), vec!["{\"a\":1}"]);
        assert_eq!(
            parser.push(b"event: message\ndata: x\ndata: y\n\ndata:z\n\n"),
            vec!["x\ny", "z"]
        );
    }

    #[tokio::test]
    async fn a_line_that_is_not_json_is_a_parse_error() {
        let uri = mcp_uri("http://127.0.0.1:9").expect("valid");
        let (mut input, reader) = tokio::io::duplex(1 << 10);
        let (writer, mut output) = tokio::io::duplex(1 << 10);
        input.write_all(b"not json\n").await.expect("write");
        drop(input);
        serve(uri, "kx_test", reader, writer).await.expect("bridge");
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut output, &mut text)
            .await
            .expect("read");
        let reply: Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(reply["error"]["code"], PARSE_ERROR);
        assert_eq!(reply["id"], Value::Null);
    }
}
