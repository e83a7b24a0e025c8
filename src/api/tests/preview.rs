//! Previews: links on the API's origin (`/preview/{id}`), and the preview listener
//! ([`preview_app`]) in front of a stand-in sandbox server on 127.0.0.1: origins, tokens,
//! cookies, what is passed on, WebSockets, and closing on revocation, deletion and expiry.

use std::sync::{Arc, Mutex};

use axum::{body::Body, http::StatusCode};
use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

use super::harness::{assert_error, harness, Harness, NS};
use crate::api::{
    cluster::Cluster,
    keys::SECRET_PREFIX,
    preview::{
        config::{PortRange, PreviewSettings},
        proxy::preview_app,
        sweep, sweep_at,
        token::{Claims, Signer},
        unix_now, Previews,
    },
};

/// A stand-in for a server in a sandbox: answers every request with its own head (so a test
/// sees what was passed on), and echoes the bytes of an upgraded connection.
struct Upstream {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn upstream() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match socket.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                seen.lock().expect("lock").push(head.clone());
                if head.to_ascii_lowercase().contains("\r\nupgrade: echo") {
                    let _ = socket
                        .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
                        .await;
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                } else {
                    let body = "made in the sandbox";
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nKeep-Alive: timeout=5\r\nX-App: 1\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                }
            });
        }
    });
    Upstream { port, heads }
}

struct Setup {
    h: Harness,
    previews: Arc<Previews>,
    key_id: String,
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

/// The harness with previews on `preview.localhost:18081`, ports 8080 to the stand-in's, and
/// a session `ses-up` whose Pod is the stand-in.
async fn setup() -> Setup {
    let mut h = harness();
    let up = upstream().await;
    let signer = Signer::new(&[b'k'; 32]).expect("secret");
    let mut settings = PreviewSettings::local(18081, signer);
    settings.ports = PortRange {
        first: up.port.min(8080),
        last: up.port.max(8080),
    };
    let previews = Previews::new(settings);
    h.state = h.state.clone().with_previews(previews.clone());
    h.cluster.add_session_at(NS, "ses-up", Some("127.0.0.1"));
    let key_id = h.state.keys.lookup(&h.free_key).expect("key").id;
    Setup {
        h,
        previews,
        key_id,
        port: up.port,
        heads: up.heads,
    }
}

impl Setup {
    fn token(&self, session: &str, port: u16, expires: u64) -> String {
        self.previews.settings.signer.sign(&Claims {
            session: session.into(),
            port,
            key_id: self.key_id.clone(),
            expires,
        })
    }

    fn host(&self, session: &str, port: u16) -> String {
        format!("{session}-{port}.preview.localhost:18081")
    }

    async fn visit(&self, host: &str, path: &str, cookie: Option<&str>) -> super::harness::Reply {
        let mut request = Request::get(path).header("host", host);
        if let Some(token) = cookie {
            request = request.header("cookie", format!("theme=dark; kubexec_preview={token}"));
        }
        let request = request
            .header("authorization", format!("Bearer {}", self.h.free_key))
            .body(Body::empty())
            .expect("request");
        let response = preview_app(self.h.state.clone())
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        super::harness::Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

#[tokio::test]
async fn a_preview_opens_with_its_link_and_then_its_cookie() {
    let s = setup().await;
    let host = s.host("ses-up", s.port);
    let token = s.token("ses-up", s.port, unix_now() + 60);
    let first = s
        .visit(&host, &format!("/app?x=1&kubexec_token={token}"), None)
        .await;
    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.text);
    assert_eq!(first.headers["location"], "/app?x=1");
    let cookie = first.headers["set-cookie"].to_str().expect("ascii");
    assert!(cookie.starts_with(&format!("kubexec_preview={token}; Path=/; Max-Age=")));
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    assert!(!cookie.contains("Domain"), "host-only: {cookie}");

    let page = s.visit(&host, "/app?x=1", Some(&token)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(page.text, "made in the sandbox");
    assert_eq!(page.headers["x-app"], "1");
    assert!(page.headers.get("keep-alive").is_none(), "hop-by-hop");
    let heads = s.heads.lock().expect("lock").clone();
    let head = heads
        .last()
        .expect("the sandbox was asked")
        .to_ascii_lowercase();
    assert!(head.starts_with("get /app?x=1 http/1.1\r\n"), "{head}");
    assert!(head.contains(&format!("\r\nhost: {host}\r\n")), "{head}");
    assert!(head.contains("\r\ncookie: theme=dark\r\n"), "{head}");
    for secret in ["authorization", "kubexec_preview", "kx_", "kubexec_token"] {
        assert!(!head.contains(secret), "{secret} passed on: {head}");
    }
}

#[tokio::test]
async fn previews_are_refused_with_named_errors() {
    let s = setup().await;
    let now = unix_now();
    let host = s.host("ses-up", s.port);
    let not_a_preview = s.visit("127.0.0.1:18081", "/", None).await;
    assert_error(
        &not_a_preview,
        StatusCode::NOT_FOUND,
        "PREVIEW_NOT_FOUND",
        None,
    );
    let port = s.port.max(8080) + 1;
    let outside = s
        .visit(
            &s.host("ses-up", port),
            "/",
            Some(&s.token("ses-up", port, now + 60)),
        )
        .await;
    assert_error(
        &outside,
        StatusCode::BAD_REQUEST,
        "PREVIEW_PORT_NOT_ALLOWED",
        Some("port"),
    );
    // The API key is no way in.
    let keyed = s.visit(&host, "/", None).await;
    assert_error(
        &keyed,
        StatusCode::UNAUTHORIZED,
        "PREVIEW_TOKEN_MISSING",
        None,
    );
    let forged = s
        .visit(&host, "/", Some("v1.ses-up.8080.x.9999999999.AAAA"))
        .await;
    assert_error(
        &forged,
        StatusCode::UNAUTHORIZED,
        "PREVIEW_TOKEN_INVALID",
        None,
    );
    let expired = s
        .visit(&host, "/", Some(&s.token("ses-up", s.port, now - 1)))
        .await;
    assert_error(
        &expired,
        StatusCode::UNAUTHORIZED,
        "PREVIEW_TOKEN_EXPIRED",
        None,
    );
    for (session, port) in [("ses-mine", s.port), ("ses-up", 8080)] {
        let other = s
            .visit(&host, "/", Some(&s.token(session, port, now + 60)))
            .await;
        assert_error(
            &other,
            StatusCode::FORBIDDEN,
            "PREVIEW_TOKEN_MISMATCH",
            None,
        );
    }
    // Another tenant's session cannot be named by this key's token.
    let theirs = s
        .visit(
            &s.host("ses-theirs", s.port),
            "/",
            Some(&s.token("ses-theirs", s.port, now + 60)),
        )
        .await;
    assert_error(&theirs, StatusCode::NOT_FOUND, "SESSION_NOT_FOUND", None);
    // A session whose Pod has no address yet.
    let pending = s
        .visit(
            &s.host("ses-mine", s.port),
            "/",
            Some(&s.token("ses-mine", s.port, now + 60)),
        )
        .await;
    assert_error(
        &pending,
        StatusCode::SERVICE_UNAVAILABLE,
        "SESSION_NOT_READY",
        None,
    );
    s.h.state
        .keys
        .remove(&format!("{SECRET_PREFIX}{}", s.key_id));
    let revoked = s
        .visit(&host, "/", Some(&s.token("ses-up", s.port, now + 60)))
        .await;
    assert_error(&revoked, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", None);
    assert!(
        s.heads.lock().expect("lock").is_empty(),
        "nothing reached the sandbox"
    );
}

#[tokio::test]
async fn links_come_from_the_api_with_the_key() {
    let s = setup().await;
    let h = &s.h;
    let link = h
        .get(
            &h.free_key,
            &format!("/preview/ses-up?port={}&ttl=30", s.port),
        )
        .await;
    assert_eq!(link.status, StatusCode::OK, "{}", link.text);
    let url = link.body["previewUrl"].as_str().expect("previewUrl");
    let prefix = format!(
        "http://ses-up-{}.preview.localhost:18081/?kubexec_token=",
        s.port
    );
    assert!(url.starts_with(&prefix), "{url}");
    let claims = s
        .previews
        .settings
        .signer
        .verify(&url[prefix.len()..], unix_now())
        .expect("a valid token");
    assert_eq!(
        (claims.port, claims.key_id.as_str()),
        (s.port, s.key_id.as_str())
    );
    assert!(claims.expires <= unix_now() + 30);
    assert_eq!(link.body["port"], s.port);
    assert!(link.body["expiresAt"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));

    let outside = h.get(&h.free_key, "/preview/ses-up?port=22").await;
    assert_error(
        &outside,
        StatusCode::BAD_REQUEST,
        "PREVIEW_PORT_NOT_ALLOWED",
        Some("port"),
    );
    let too_long = h.get(&h.free_key, "/preview/ses-up?ttl=999999").await;
    assert_error(
        &too_long,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        Some("ttl"),
    );
    let theirs = h.get(&h.free_key, "/preview/ses-theirs").await;
    assert_error(&theirs, StatusCode::NOT_FOUND, "SESSION_NOT_FOUND", None);
    let anonymous = h
        .send(
            Request::get("/preview/ses-up")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_error(&anonymous, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", None);

    // The old previewUrl redirects to the preview's origin: nothing of the sandbox is served
    // on the API's.
    let old = h.get(&h.free_key, "/preview/ses-up/index.html?a=b").await;
    assert_eq!(old.status, StatusCode::TEMPORARY_REDIRECT, "{}", old.text);
    let location = old.headers["location"].to_str().expect("ascii");
    assert!(
        location.starts_with(
            "http://ses-up-8080.preview.localhost:18081/index.html?a=b&kubexec_token=v1.ses-up.8080."
        ),
        "{location}"
    );
    let session = h.get(&h.free_key, "/sessions/ses-up").await;
    let preview_url = session.body["previewUrl"].as_str().unwrap_or_default();
    assert!(
        preview_url.starts_with("http://ses-up-8080.preview.localhost:18081/?kubexec_token="),
        "{preview_url}"
    );
}

/// A real preview listener on 127.0.0.1 (upgrades need a socket).
async fn serve_previews(state: crate::api::AppState) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, preview_app(state)).await;
    });
    addr
}

/// Opens an upgraded connection (`Upgrade: echo`) through the listener and checks it echoes.
async fn open_upgrade(
    addr: std::net::SocketAddr,
    host: &str,
    token: &str,
) -> tokio::net::TcpStream {
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: echo\r\nCookie: kubexec_preview={token}\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            socket.read(&mut byte).await.expect("read"),
            1,
            "head ended early"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    socket.write_all(b"ping").await.expect("write");
    let mut echo = [0u8; 4];
    socket.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"ping");
    socket
}

async fn assert_closed(socket: &mut tokio::net::TcpStream) {
    let mut rest = Vec::new();
    // Ends (EOF or reset) once the api drops both sides; nothing more is echoed.
    let _ = socket.read_to_end(&mut rest).await;
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test]
async fn upgrades_pass_through_and_close_on_revocation_deletion_and_expiry() {
    let s = setup().await;
    let addr = serve_previews(s.h.state.clone()).await;
    let host = s.host("ses-up", s.port);
    let now = unix_now();

    // Expiry: the first sweep after the token's end closes it.
    let mut socket = open_upgrade(addr, &host, &s.token("ses-up", s.port, now + 60)).await;
    let mut long = open_upgrade(addr, &host, &s.token("ses-up", s.port, now + 600)).await;
    sweep_at(&s.h.state, now + 59).await;
    socket.write_all(b"ping").await.expect("still open");
    let mut echo = [0u8; 4];
    socket.read_exact(&mut echo).await.expect("echo");
    sweep_at(&s.h.state, now + 60).await;
    assert_closed(&mut socket).await;
    long.write_all(b"pong").await.expect("still open");
    long.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"pong");

    // Session deletion.
    s.h.cluster
        .delete_session(NS, "ses-up")
        .await
        .expect("delete");
    sweep(&s.h.state).await;
    assert_closed(&mut long).await;
    assert!(s.previews.open.snapshot().is_empty(), "nothing left open");
}

#[tokio::test]
async fn upgrades_close_when_the_key_is_revoked_and_count_as_streams() {
    let s = setup().await;
    let addr = serve_previews(s.h.state.clone()).await;
    let host = s.host("ses-up", s.port);
    let token = s.token("ses-up", s.port, unix_now() + 600);
    let limits = s.h.state.tiers.get(crate::api::tiers::Tier::Free).clone();
    let mut open = Vec::new();
    for _ in 0..limits.concurrent_streams {
        open.push(open_upgrade(addr, &host, &token).await);
    }
    // One more is over the key's stream quota.
    let refused = s.visit(&host, "/", Some(&token)).await;
    assert_error(
        &refused,
        StatusCode::TOO_MANY_REQUESTS,
        "QUOTA_EXCEEDED",
        None,
    );

    s.h.state
        .keys
        .remove(&format!("{SECRET_PREFIX}{}", s.key_id));
    sweep(&s.h.state).await;
    for socket in &mut open {
        assert_closed(socket).await;
    }
}
