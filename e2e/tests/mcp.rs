//! The MCP server, driven by a client this project did not write: the official TypeScript SDK
//! (`@modelcontextprotocol/sdk`, e2e/mcp-client/), over streamable HTTP (`/mcp` of a real
//! `kubexec api`) and over stdio (`kubexec mcp --url ...`), against the real cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kubexec_e2e::api::ApiServer;
use kubexec_e2e::{repo_root, TestNs};
use serde_json::{json, Value};

/// How long one client's whole scenario may take (it creates a session from a cold start).
const CLIENT_DEADLINE: Duration = Duration::from_secs(300);

fn client_dir() -> PathBuf {
    repo_root().join("e2e/mcp-client")
}

fn kubexec_binary() -> PathBuf {
    std::env::var_os("KUBEXEC_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/kubexec"))
}

/// `npm ci` of the client: a clean install from its lockfile, as CI does it on a fresh machine.
fn install_client(dir: &Path) {
    let started = Instant::now();
    eprintln!("mcp: npm ci in {} ...", dir.display());
    let status = Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .status()
        .expect("npm is installed (a prerequisite, see the README)");
    assert!(status.success(), "npm ci failed: {status}");
    eprintln!(
        "mcp: npm ci done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// Runs the client's scenario over `transport`; answers its output once it exits (killed after
/// [`CLIENT_DEADLINE`]).
async fn run_client(transport: &'static str, url: String, key: String) -> Output {
    let child = tokio::process::Command::new("node")
        .arg("client.mjs")
        .args([transport, url.as_str()])
        .current_dir(client_dir())
        .env("KUBEXEC_API_KEY", key)
        .env("KUBEXEC_BIN", kubexec_binary())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    tokio::time::timeout(CLIENT_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the {transport} client did not finish in {CLIENT_DEADLINE:?}"))
        .expect("the client's output")
}

fn assert_scenario_passed(transport: &str, output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "the {transport} client failed ({}):\n{stderr}",
        output.status
    );
    let summary: Value = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("the {transport} client printed no summary"));
    assert_eq!(summary["ok"], true, "{summary}");
    assert!(
        summary["progressNotifications"].as_u64().unwrap_or(0) >= 1,
        "{summary}"
    );
}

#[tokio::test]
async fn official_typescript_client_over_http_and_stdio() {
    let dir = client_dir();
    let install = std::thread::spawn(move || install_client(&dir));
    let ns = TestNs::new("mcp").await;
    let api = ApiServer::start(&ns.name, &[]);
    let key = api.create_key(&ns.name, "free").await;
    // Each client its own key: both run at once, and two clients' calls together can pass one
    // free key's 120 requests a minute now that executions answer fast.
    let stdio_key = api.create_key(&ns.name, "free").await;
    let http = api.client();
    let url = format!("http://{}", api.addr);

    // The same bearer key as REST: none is 401 before any MCP is spoken.
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "curl", "version": "1"}}});
    let anonymous = http.post("/mcp", None, &initialize).await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert_eq!(anonymous.json()["error"]["code"], "UNAUTHORIZED");

    // The key is read from the environment only.
    let keyless = Command::new(kubexec_binary())
        .args(["mcp", "--url", &url])
        .env_remove("KUBEXEC_API_KEY")
        .stdin(Stdio::null())
        .output()
        .expect("kubexec runs");
    assert!(!keyless.status.success());
    assert!(
        String::from_utf8_lossy(&keyless.stderr).contains("KUBEXEC_API_KEY"),
        "{}",
        String::from_utf8_lossy(&keyless.stderr)
    );

    install.join().expect("npm ci");
    let (over_http, over_stdio) = tokio::join!(
        run_client("http", url.clone(), key.clone()),
        run_client("stdio", url.clone(), stdio_key),
    );
    assert_scenario_passed("http", &over_http);
    assert_scenario_passed("stdio", &over_stdio);
    drop(api);
    drop(ns);
}
