//! Headless Chromium, driven over the DevTools protocol: the preview suite opens pages in it
//! the way a person would. `e2e/tools/chromium` installs Debian's `chromium` package when it
//! is missing (CI runs on a clean machine) and prints its path.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::{tungstenite::Message, MaybeTlsStream, WebSocketStream};

use crate::repo_root;

/// How long installing (first run on a fresh machine) and starting the browser may take.
const START_DEADLINE: Duration = Duration::from_secs(600);

/// A headless Chromium and a DevTools connection to it.
pub struct Chromium {
    child: tokio::process::Child,
    devtools: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    profile: PathBuf,
}

/// The browser's path, installing it first if needed (`e2e/tools/chromium`).
pub fn chromium_path() -> PathBuf {
    let out = std::process::Command::new(repo_root().join("e2e/tools/chromium"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("e2e/tools/chromium runs");
    assert!(out.status.success(), "e2e/tools/chromium failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl Chromium {
    /// Starts a headless Chromium with a fresh profile and connects to its DevTools endpoint.
    pub async fn launch() -> Chromium {
        let path = tokio::task::spawn_blocking(chromium_path)
            .await
            .expect("install chromium");
        let profile = repo_root().join(format!("target/chromium-profile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("profile dir");
        let mut child = tokio::process::Command::new(&path)
            .args([
                "--headless",
                // The tests run as root in a container, where Chromium's own sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--no-proxy-server",
                "--window-size=1024,640",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", path.display()));
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = tokio::time::timeout(START_DEADLINE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.trim().strip_prefix("DevTools listening on ") {
                    return url.to_string();
                }
            }
            panic!("chromium exited without a DevTools endpoint");
        })
        .await
        .expect("chromium printed its DevTools endpoint");
        // Keep draining its log, or it blocks once the pipe is full.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (devtools, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("connect to DevTools");
        Chromium {
            child,
            devtools,
            next_id: 0,
            profile,
        }
    }

    /// Calls a DevTools method (on the page attached as `session`, else the browser) and
    /// answers its result; events in between are skipped.
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.devtools
            .send(Message::text(message.to_string()))
            .await
            .expect("send to DevTools");
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(60), self.devtools.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("DevTools closed")
                .expect("DevTools frame");
            let Message::Text(text) = frame else { continue };
            let reply: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Opens `url` in a new tab; answers the tab's DevTools session.
    pub async fn open(&mut self, url: &str) -> String {
        let target = self
            .call(None, "Target.createTarget", json!({"url": url}))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        attached["sessionId"]
            .as_str()
            .expect("a DevTools session")
            .to_string()
    }

    /// Evaluates `expression` in the page; answers its value.
    pub async fn eval(&mut self, session: &str, expression: &str) -> Value {
        let result = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` until `done` holds for its value (up to `deadline`); answers the
    /// last value.
    pub async fn eval_until(
        &mut self,
        session: &str,
        expression: &str,
        deadline: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let until = Instant::now() + deadline;
        loop {
            let value = self.eval(session, expression).await;
            if done(&value) || Instant::now() >= until {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub async fn screenshot(&mut self, session: &str, path: &Path) {
        use base64::Engine;
        let shot = self
            .call(
                Some(session),
                "Page.captureScreenshot",
                json!({"format": "png"}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artifact dir");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
