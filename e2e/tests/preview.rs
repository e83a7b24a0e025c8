//! Browser-ready previews against the real cluster: headless Chromium opens a session's
//! previewUrl (no API key), the page shows text made in the sandbox and talks to it over a
//! WebSocket; links are refused without a token or with another session's; a second port
//! works; and revoking the key, deleting the session or the token expiring closes a preview,
//! open WebSockets included.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kubexec_e2e::api::{open_preview, preview_get, ApiServer, Http, PreviewLink};
use kubexec_e2e::browser::Chromium;
use kubexec_e2e::{repo_root, TestNs};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
use tokio_tungstenite::WebSocketStream;

/// The app served in the sandbox (a page and a WebSocket echo), on the port it is given.
const SERVER: &str = include_str!("../fixtures/preview/server.ts");
/// How long a preview may take to close once it must (the api checks every second).
const CLOSE_DEADLINE: Duration = Duration::from_secs(60);

struct Setup {
    _ns: TestNs,
    api: ApiServer,
    http: Http,
    key: String,
    session: String,
}

/// A namespace, an api previewing ports 8080-8090, a key and a session whose sandbox serves
/// [`SERVER`] on ports 8080 and 8081.
async fn setup(prefix: &str) -> Setup {
    let ns = TestNs::new(prefix).await;
    let api = ApiServer::start(&ns.name, &["--preview-ports", "8080-8090"]);
    let key = api.create_key(&ns.name, "free").await;
    let http = api.client();
    let created = http.post("/sessions/create", Some(&key), &json!({})).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let session = created.json()["sessionId"]
        .as_str()
        .expect("sessionId")
        .to_string();
    let started = http
        .post(
            "/execute",
            Some(&key),
            &json!({
                "sessionId": session,
                "files": [{"path": "server.ts", "content": SERVER}],
                "command": "for p in 8080 8081; do nohup bun run server.ts $p > server-$p.log 2>&1 & done; \
                            for i in $(seq 1 100); do curl -sf localhost:8080 >/dev/null && curl -sf localhost:8081 >/dev/null && exit 0; sleep 0.1; done; \
                            cat server-*.log; exit 1"
            }),
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.text());
    assert_eq!(started.json()["exitCode"], 0, "{}", started.text());
    Setup {
        _ns: ns,
        api,
        http,
        key,
        session,
    }
}

impl Setup {
    /// A link to `port` of `session` from `GET /preview/{id}` (`ttl` seconds, else the default).
    async fn link(&self, key: &str, session: &str, port: u16, ttl: Option<u64>) -> String {
        let ttl = ttl.map(|t| format!("&ttl={t}")).unwrap_or_default();
        let reply = self
            .http
            .get(&format!("/preview/{session}?port={port}{ttl}"), Some(key))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["previewUrl"]
            .as_str()
            .expect("previewUrl")
            .to_string()
    }
}

fn assert_refused(reply: &kubexec_e2e::api::Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], code, "{}", reply.text());
}

#[tokio::test]
async fn chromium_opens_a_preview_and_its_websocket() {
    let browser = tokio::spawn(Chromium::launch());
    let s = setup("preview-ui").await;
    let described = s
        .http
        .get(&format!("/sessions/{}", s.session), Some(&s.key))
        .await;
    let url = described.json()["previewUrl"]
        .as_str()
        .expect("previewUrl")
        .to_string();
    let link = PreviewLink::parse(&url);
    assert!(
        link.authority
            .starts_with(&format!("{}-8080.preview.localhost:", s.session)),
        "{url}"
    );
    assert_eq!(link.addr.port(), s.api.preview_addr.port());

    // Refused without a token, with the API key, and with another session's token.
    let bare = preview_get(&link, "/", None).await;
    assert_refused(&bare, 401, "PREVIEW_TOKEN_MISSING");
    let other = s
        .http
        .post("/sessions/create", Some(&s.key), &json!({}))
        .await;
    assert_eq!(other.status, 201, "{}", other.text());
    let other_id = other.json()["sessionId"].as_str().expect("id").to_string();
    let other_url = s.link(&s.key, &other_id, 8080, None).await;
    let other_token = PreviewLink::parse(&other_url).path_and_query;
    let borrowed = preview_get(&link, &other_token, None).await;
    assert_refused(&borrowed, 403, "PREVIEW_TOKEN_MISMATCH");
    let outside = s
        .http
        .get(&format!("/preview/{}?port=9000", s.session), Some(&s.key))
        .await;
    assert_refused(&outside, 400, "PREVIEW_PORT_NOT_ALLOWED");

    // A second port, on an origin of its own.
    let second = s.link(&s.key, &s.session, 8081, None).await;
    assert!(
        second.contains(&format!("//{}-8081.", s.session)),
        "{second}"
    );
    let (page, _) = open_preview(&second).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("on port 8081"), "{}", page.text());

    // The browser: the page's text is made in the sandbox, and its WebSocket echoes.
    let mut browser = browser.await.expect("chromium");
    let tab = browser.open(&url).await;
    let echo = browser
        .eval_until(
            &tab,
            "document.getElementById('echo')?.textContent",
            Duration::from_secs(60),
            |v| {
                v.as_str()
                    .is_some_and(|t| t.starts_with("echo from the sandbox"))
            },
        )
        .await;
    let made = browser
        .eval(&tab, "document.getElementById('made')?.textContent")
        .await;
    let address = browser.eval(&tab, "location.href").await;
    let cookies = browser.eval(&tab, "document.cookie").await;
    browser
        .screenshot(&tab, &repo_root().join("target/e2e-artifacts/preview.png"))
        .await;
    assert_eq!(
        echo,
        Value::from("echo from the sandbox: hello over the WebSocket"),
        "the page's WebSocket (screenshot in target/e2e-artifacts/preview.png)"
    );
    let made = made.as_str().unwrap_or_default();
    assert!(
        made.starts_with("Sum: 15 from Bun ") && made.ends_with("on port 8080"),
        "{made}"
    );
    // The token left the address bar, and the page's scripts cannot read the cookie.
    assert_eq!(
        address,
        Value::from(format!("http://{}/", link.authority)),
        "{address}"
    );
    assert_eq!(cookies, Value::from(""));
}

/// A WebSocket to `/ws` of a preview link, with its token in the URL (as a client other than
/// a browser may do), checked to echo.
async fn open_ws(url: &str) -> WebSocketStream<TcpStream> {
    let link = PreviewLink::parse(url);
    let token = link
        .path_and_query
        .split_once("kubexec_token=")
        .map(|(_, t)| t)
        .expect("a token");
    let request = format!("ws://{}/ws?kubexec_token={token}", link.authority)
        .into_client_request()
        .expect("request");
    let stream = TcpStream::connect(link.addr).await.expect("connect");
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("websocket handshake through the preview");
    assert_eq!(response.status(), 101);
    assert_echoes(&mut ws, "ping").await;
    ws
}

async fn assert_echoes(ws: &mut WebSocketStream<TcpStream>, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    let reply = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("an echo in time")
        .expect("open")
        .expect("a frame");
    assert_eq!(
        reply.into_text().expect("text").as_str(),
        format!("echo from the sandbox: {text}")
    );
}

/// Waits until the WebSocket ends (the api drops both sides); fails on a message instead.
async fn assert_closes(ws: &mut WebSocketStream<TcpStream>, why: &str) {
    let end = tokio::time::timeout(CLOSE_DEADLINE, ws.next())
        .await
        .unwrap_or_else(|_| panic!("{why}: the WebSocket is still open"));
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{why}: {end:?}");
}

#[tokio::test]
async fn revocation_deletion_and_expiry_close_previews() {
    let s = setup("preview-close").await;
    // A second key of the tenant, to revoke; its id is in its tokens.
    let doomed_key = s.api.create_key(&s._ns.name, "free").await;
    let doomed_url = s.link(&doomed_key, &s.session, 8080, None).await;
    let doomed_id = PreviewLink::parse(&doomed_url)
        .path_and_query
        .split('.')
        .nth(3)
        .expect("the key id in the token")
        .to_string();
    let short_url = s.link(&s.key, &s.session, 8080, Some(10)).await;
    let mut expiring = open_ws(&short_url).await;
    let long_url = s.link(&s.key, &s.session, 8081, None).await;
    let mut revoked = open_ws(&doomed_url).await;
    let mut deleted = open_ws(&long_url).await;

    s.api.keys(&["revoke", &doomed_id]);
    assert_closes(&mut revoked, "revoked key").await;
    let link = PreviewLink::parse(&doomed_url);
    let page = preview_get(&link, &link.path_and_query, None).await;
    assert_refused(&page, 401, "UNAUTHORIZED");
    assert_echoes(&mut deleted, "still open").await;

    assert_closes(&mut expiring, "expired token").await;
    let link = PreviewLink::parse(&short_url);
    let expired = preview_get(&link, &link.path_and_query, None).await;
    assert_refused(&expired, 401, "PREVIEW_TOKEN_EXPIRED");
    assert_echoes(&mut deleted, "still open").await;

    let gone = s
        .http
        .request(
            hyper::Method::DELETE,
            &format!("/sessions/{}", s.session),
            Some(&s.key),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(gone.status, 200, "{}", gone.text());
    assert_closes(&mut deleted, "deleted session").await;
}
