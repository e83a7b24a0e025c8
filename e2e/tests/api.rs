//! The REST API over a real socket, against the real cluster, with the operator running: the
//! hosted API's examples, files, processes, streaming, auth and tenancy, and the benchmark.

use std::time::{Duration, Instant};

use base64::{engine::general_purpose::STANDARD, Engine};
use kubexec::crd::Execution;
use kubexec_e2e::api::{fixture, ApiServer};
use kubexec_e2e::TestNs;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn seed_examples_env_commands_timeouts_and_secrets() {
    let f = fixture("api-seed").await;

    // Execute Inline Code.
    let sum = f
        .execute(json!({"code": "const numbers = [1, 2, 3, 4, 5];\nconst sum = numbers.reduce((a, b) => a + b, 0);\nconsole.log(`Sum: ${sum}`);"}))
        .await;
    assert_eq!(sum["stdout"], "Sum: 15\n", "{sum}");
    assert_eq!(sum["exitCode"], 0);
    assert_eq!(sum["timedOut"], false);
    for field in [
        "stderr",
        "executionTime",
        "memoryUsed",
        "cpuTime",
        "filesWritten",
    ] {
        assert!(sum.get(field).is_some(), "{field} missing: {sum}");
    }

    // Execute with Multiple Files.
    let result = f
        .execute(json!({
            "files": [
                {"path": "utils.ts", "content": "export function add(a: number, b: number) { return a + b; }\n"},
                {"path": "index.ts", "content": "import { add } from './utils';\nconsole.log(`Result: ${add(5, 3)}`);\n"}
            ],
            "command": "bun run index.ts"
        }))
        .await;
    assert_eq!(result["stdout"], "Result: 8\n", "{result}");
    assert_eq!(result["filesWritten"], json!(["utils.ts", "index.ts"]));

    // Execute with Environment Variables.
    let env = f
        .execute(json!({
            "code": "const key = process.env.API_KEY ?? '';\nconsole.log(`Key: ${key.slice(0, 3)}... (${key.length} characters)`)",
            "env": {"API_KEY": "sk-very-secret-value"}
        }))
        .await;
    // (Not printed whole: the output is kept in the Execution's status.)
    assert_eq!(env["stdout"], "Key: sk-... (20 characters)\n", "{env}");

    // Execute Shell Command, with env and a working directory.
    let shell = f
        .execute(json!({
            "files": [{"path": "app/data.txt", "content": "hello"}],
            "command": "pwd && cat data.txt && echo \" $GREETING\"",
            "workingDir": "/workspace/app",
            "env": {"GREETING": "from env"}
        }))
        .await;
    assert_eq!(
        shell["stdout"], "/workspace/app\nhello from env\n",
        "{shell}"
    );

    // Long-Running with Timeout.
    let slow = f
        .execute(json!({"code": "await new Promise(r => setTimeout(r, 20000)); console.log('done')", "timeout": 2}))
        .await;
    assert_eq!(slow["timedOut"], true, "{slow}");
    assert_ne!(slow["stdout"], "done\n");
    assert!(
        slow["executionTime"].as_i64().unwrap_or(0) < 10_000,
        "{slow}"
    );

    // A non-zero exit is a result, not an error.
    let failing = f.execute(json!({"command": "echo oops >&2; exit 3"})).await;
    assert_eq!(
        (failing["exitCode"].clone(), failing["stderr"].clone()),
        (json!(3), json!("oops\n"))
    );

    // Package Installation: Bun installs on import.
    let package = f
        .execute(json!({"code": "import isNumber from 'is-number';\nconsole.log(`isNumber: ${isNumber(5)}`);", "timeout": 30}))
        .await;
    assert_eq!(package["stdout"], "isNumber: true\n", "{package}");

    // Env values are secrets: never in an Execution.
    let yaml = f.ns.kubectl(&["get", "executions", "-o", "yaml"]);
    let yaml = String::from_utf8_lossy(&yaml.stdout);
    assert!(yaml.contains("envFrom"), "{yaml}");
    assert!(
        !yaml.contains("sk-very-secret-value"),
        "an env value leaked into an Execution"
    );
    let executions: Vec<Execution> =
        f.ns.api::<Execution>()
            .list(&Default::default())
            .await
            .expect("list")
            .items;
    let secret_name = executions
        .iter()
        .find_map(|e| e.spec.env_from.as_ref().map(|r| r.secret_ref.name.clone()))
        .expect("an execution with envFrom");
    let secret = f.ns.kubectl(&["get", "secret", &secret_name, "-o", "json"]);
    let secret: Value = serde_json::from_slice(&secret.stdout).expect("secret json");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["kind"], "Execution",
        "the env Secret is owned by its Execution"
    );
}

fn sse_stdout(events: &[kubexec_e2e::api::SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.event == "stdout")
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).expect("json")["data"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn streaming_sends_output_as_it_is_produced() {
    let f = fixture("api-stream").await;
    let command = "for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; sleep 0.2; done";
    // Warm the session up so the stream measures the run, not the Pod start.
    f.execute(json!({"command": "true"})).await;
    let body = json!({"sessionId": f.session, "command": command, "stream": true});
    let started = Instant::now();
    let (status, events) = f.http.post_sse("/execute", &f.key, &body).await;
    assert_eq!(status, 200);
    let first = events
        .iter()
        .find(|e| e.event == "stdout")
        .expect("a stdout event");
    let result = events.last().expect("events");
    assert_eq!(result.event, "result", "{events:?}");
    let lead = result.at.duration_since(first.at);
    println!(
        "first chunk after {:?}, result after {:?} (first chunk {lead:?} before the end)",
        first.at.duration_since(started),
        result.at.duration_since(started)
    );
    assert!(
        lead > Duration::from_millis(1200),
        "the first chunk came {lead:?} before the result: not streamed"
    );
    let streamed: Value = serde_json::from_str(&result.data).expect("result json");
    let expected: String = (1..=10).map(|i| format!("line {i}\n")).collect();
    assert_eq!(sse_stdout(&events), expected);
    assert_eq!(streamed["stdout"], expected);

    let plain = f.execute(json!({"command": command})).await;
    let keys = |v: &Value| {
        v.as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(keys(&streamed), keys(&plain));
    for field in ["stdout", "stderr", "exitCode", "timedOut", "filesWritten"] {
        assert_eq!(streamed[field], plain[field], "{field}");
    }
}

/// A background process that inherited stdout holds neither the response nor the SSE stream
/// open, and what it writes later stays capped in the run's output file. The writer runs
/// `yes` until the test releases it, after both executions returned: an execution it held
/// open could never return (it would end at its deadline instead, timed out).
#[tokio::test]
async fn a_background_writer_holds_neither_the_response_nor_the_stream() {
    let f = fixture("api-bgwriter").await;
    let writer = |name: &str| {
        format!(
            "(timeout 60 sh -c 'yes & while [ ! -e release-{name} ]; do sleep 0.1; done; kill $!'; touch ended-{name}) & echo done"
        )
    };
    let plain = f.execute(json!({"command": writer("plain")})).await;
    assert_eq!(
        (&plain["exitCode"], &plain["timedOut"]),
        (&json!(0), &json!(false))
    );
    let stdout = plain["stdout"].as_str().unwrap_or_default();
    assert!(
        stdout.lines().any(|l| l == "done"),
        "{}",
        &stdout[..stdout.len().min(200)]
    );

    let body = json!({"sessionId": f.session, "command": writer("sse"), "stream": true});
    let (status, events) = f.http.post_sse("/execute", &f.key, &body).await;
    assert_eq!(status, 200);
    let last = events.last().expect("events");
    assert_eq!(last.event, "result", "{events:?}");
    let streamed: Value = serde_json::from_str(&last.data).expect("result json");
    assert_eq!(
        (&streamed["exitCode"], &streamed["timedOut"]),
        (&json!(0), &json!(false))
    );

    let running = f
        .execute(
            json!({"command": "ls ended-plain ended-sse 2>/dev/null | wc -l; pgrep -c -x yes"}),
        )
        .await;
    assert_eq!(running["stdout"], "0\n2\n", "both writers still run");

    // Released, the writers end; no run's output file grew past the cap after its end.
    f.execute(json!({"command": "touch release-plain release-sse"}))
        .await;
    kubexec_e2e::wait_until(Duration::from_secs(30), "the writers to end", || async {
        let ended = f
            .execute(json!({"command": "ls ended-plain ended-sse 2>/dev/null | wc -l"}))
            .await;
        ended["stdout"] == "2\n"
    })
    .await;
    let largest = f
        .execute(json!({
            "command": "for f in .kubexec/runs/*/stdout; do wc -c < $f; done | sort -n | tail -1"
        }))
        .await;
    let size: u64 = largest["stdout"]
        .as_str()
        .and_then(|s| s.trim().parse().ok())
        .expect("a size");
    println!("largest run output file once the writers ended: {size} bytes");
    // The run's own output (at most one pipe buffer of `yes`) plus 1 MiB of late output; an
    // uncapped `yes` writes that much in milliseconds.
    assert!(size < 4 << 20, "late output is capped: {size} bytes");
    assert!(
        size > 1 << 20,
        "late output is kept up to the cap: {size} bytes"
    );
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn hostile_requests_get_named_4xx_and_the_api_stays_up() {
    let mut f = fixture("api-hostile").await;

    // A FIFO has no writer: reading it must not wait for one.
    f.execute(json!({"command": "mkfifo pipe"})).await;
    let fifo = f
        .http
        .get(
            &format!("/files/read?sessionId={}&path=pipe", f.session),
            Some(&f.key),
        )
        .await;
    assert_eq!(fifo.status, 400, "{}", fifo.text());
    assert_eq!(
        fifo.json()["error"]["code"],
        "NOT_A_FILE",
        "{}",
        fifo.text()
    );

    // A working directory that does not exist is the caller's mistake, not a server fault.
    let missing = f
        .http
        .post(
            "/execute",
            Some(&f.key),
            &json!({"sessionId": f.session, "command": "pwd", "workingDir": "/workspace/nope"}),
        )
        .await;
    assert_eq!(missing.status, 400, "{}", missing.text());
    assert_eq!(
        missing.json()["error"]["code"],
        "WORKING_DIR_NOT_FOUND",
        "{}",
        missing.text()
    );
    assert_eq!(missing.json()["error"]["details"]["field"], "workingDir");

    // 100 MiB, chunked (no Content-Length), with a free key: cut off at the route's cap.
    let flood = f.http.post_chunked("/execute", &f.key, 100, 1 << 20).await;
    assert_eq!(flood.status, 413, "{}", flood.text());
    assert_eq!(
        flood.json()["error"]["code"],
        "PAYLOAD_TOO_LARGE",
        "{}",
        flood.text()
    );
    assert!(f.api.is_running(), "the api survived the flood");
    let after = f.execute(json!({"command": "echo still here"})).await;
    assert_eq!(after["stdout"], "still here\n");
}

#[tokio::test]
async fn files_are_written_listed_and_read_with_tier_limits() {
    let f = fixture("api-files").await;
    let big = pseudo_random(9 * 1024 * 1024);
    let digest: String = Sha256::digest(&big)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let written = f
        .http
        .post(
            "/files/write",
            Some(&f.key),
            &json!({"sessionId": f.session, "files": [
                {"path": "data/big.bin", "content": STANDARD.encode(&big), "encoding": "base64"},
                {"path": "notes.txt", "content": "remember"}
            ]}),
        )
        .await;
    assert_eq!(written.status, 200, "{}", written.text());
    assert_eq!(
        written.json()["filesWritten"],
        json!(["data/big.bin", "notes.txt"])
    );
    drop(big);

    let sum = f
        .execute(json!({"command": "sha256sum data/big.bin | cut -d' ' -f1"}))
        .await;
    assert_eq!(sum["stdout"].as_str().map(str::trim), Some(digest.as_str()));

    let list = f
        .http
        .get(
            &format!("/files/list?sessionId={}&recursive=true", f.session),
            Some(&f.key),
        )
        .await;
    assert_eq!(list.status, 200, "{}", list.text());
    let files = list.json()["files"].clone();
    let entry = files
        .as_array()
        .and_then(|a| a.iter().find(|e| e["path"] == "data/big.bin"))
        .cloned()
        .expect("big.bin listed");
    assert_eq!(entry["size"], 9 * 1024 * 1024);
    assert_eq!(entry["type"], "file");

    let read = f
        .http
        .get(
            &format!("/files/read?sessionId={}&path=notes.txt", f.session),
            Some(&f.key),
        )
        .await;
    assert_eq!(read.json()["content"], "remember", "{}", read.text());

    // 9 MiB, streamed through the api in constant memory, arrives whole.
    let big_read = f
        .http
        .get(
            &format!("/files/read?sessionId={}&path=data/big.bin", f.session),
            Some(&f.key),
        )
        .await;
    assert_eq!(big_read.status, 200);
    let big_json = big_read.json();
    assert_eq!(big_json["encoding"], "base64", "not UTF-8, so base64");
    assert_eq!(big_json["size"], 9 * 1024 * 1024);
    let content = STANDARD
        .decode(big_json["content"].as_str().unwrap_or_default())
        .expect("base64");
    let read_digest: String = Sha256::digest(&content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(read_digest, digest);

    // 11 MB is over the free tier's 10 MB: refused whole, nothing written.
    let too_big = "z".repeat(11_000_000);
    let refused = f
        .http
        .post(
            "/files/write",
            Some(&f.key),
            &json!({"sessionId": f.session, "files": [
                {"path": "first.txt", "content": "small"},
                {"path": "huge.txt", "content": too_big}
            ]}),
        )
        .await;
    assert_eq!(refused.status, 413, "{}", refused.text());
    assert_eq!(refused.json()["error"]["code"], "FILE_TOO_LARGE");
    let after = f.execute(json!({"command": "ls"})).await;
    let names = after["stdout"].as_str().unwrap_or_default();
    assert!(
        !names.contains("huge.txt") && !names.contains("first.txt"),
        "{names}"
    );

    let escape = f
        .http
        .post(
            "/files/write",
            Some(&f.key),
            &json!({"sessionId": f.session, "files": [{"path": "../etc/x", "content": "x"}]}),
        )
        .await;
    assert_eq!(escape.status, 400);
    assert_eq!(escape.json()["error"]["details"]["field"], "files[0].path");
}

#[tokio::test]
async fn background_servers_processes_and_the_preview() {
    let f = fixture("api-procs").await;
    let started = f
        .execute(json!({
            "files": [{"path": "server.ts", "content": "Bun.serve({ port: 8080, fetch: () => new Response('hello from 8080') });\nconsole.log('listening');\n"}],
            "command": "nohup bun run server.ts > server.log 2>&1 &"
        }))
        .await;
    assert_eq!(started["exitCode"], 0, "{started}");
    let fetched = f
        .execute(json!({"command": "for i in $(seq 1 50); do curl -sf localhost:8080 && exit 0; sleep 0.2; done; exit 1"}))
        .await;
    assert_eq!(fetched["stdout"], "hello from 8080", "{fetched}");

    // The old preview path redirects to the session's own preview origin (e2e/tests/preview.rs
    // has the rest).
    let redirect = f
        .http
        .get(&format!("/preview/{}/", f.session), Some(&f.key))
        .await;
    assert_eq!(redirect.status, 307, "{}", redirect.text());
    let location = redirect.headers["location"].to_str().expect("location");
    let (preview, _) = kubexec_e2e::api::open_preview(location).await;
    assert_eq!(preview.status, 200, "{}", preview.text());
    assert_eq!(preview.text(), "hello from 8080");

    let list = f
        .http
        .get(
            &format!("/processes/list?sessionId={}", f.session),
            Some(&f.key),
        )
        .await;
    assert_eq!(list.status, 200, "{}", list.text());
    let server = list.json()["processes"]
        .as_array()
        .and_then(|p| {
            p.iter()
                .find(|p| {
                    p["command"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("server.ts")
                })
                .cloned()
        })
        .unwrap_or_else(|| panic!("the server is listed: {}", list.text()));
    let pid = server["pid"].as_i64().expect("pid");
    let killed = f
        .http
        .post(
            "/processes/kill",
            Some(&f.key),
            &json!({"sessionId": f.session, "pid": pid, "signal": "KILL"}),
        )
        .await;
    assert_eq!(killed.status, 200, "{}", killed.text());
    let gone = f
        .execute(json!({"command": "sleep 0.5; curl -s localhost:8080 || echo down"}))
        .await;
    assert_eq!(gone["stdout"], "down\n", "{gone}");
    let again = f
        .http
        .post(
            "/processes/kill",
            Some(&f.key),
            &json!({"sessionId": f.session, "pid": pid}),
        )
        .await;
    assert_eq!(again.status, 404, "{}", again.text());
}

#[tokio::test]
async fn keys_tenants_and_idempotent_sessions() {
    let ns = TestNs::new("api-auth").await;
    let rival_ns = TestNs::new("api-rival").await;
    let api = ApiServer::start(&ns.name, &[]);
    let http = api.client();
    let key = api.create_key(&ns.name, "free").await;
    let rival = api.create_key(&rival_ns.name, "paid").await;

    let none = http.get("/sessions", None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["error"]["code"], "UNAUTHORIZED");
    let wrong = http.get("/sessions", Some("kx_0123456789")).await;
    assert_eq!(wrong.status, 401);

    let create = |idempotency: &'static str| {
        let key = key.clone();
        async move {
            http.request(
                hyper::Method::POST,
                "/sessions/create",
                Some(&key),
                &[("idempotency-key", idempotency)],
                json!({"ttl": 3600, "metadata": {"owner": "e2e"}})
                    .to_string()
                    .into_bytes(),
            )
            .await
        }
    };
    let first = create("same-request").await;
    assert_eq!(first.status, 201, "{}", first.text());
    let again = create("same-request").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["sessionId"], first.json()["sessionId"]);
    assert_eq!(again.json()["metadata"]["owner"], "e2e");
    let listed = http.get("/sessions", Some(&key)).await;
    assert_eq!(listed.json()["sessions"].as_array().map(Vec::len), Some(1));

    let theirs = http
        .post("/sessions/create", Some(&rival), &json!({}))
        .await;
    assert_eq!(theirs.status, 201, "{}", theirs.text());
    let theirs = theirs.json()["sessionId"].as_str().expect("id").to_string();
    let peek = http.get(&format!("/sessions/{theirs}"), Some(&key)).await;
    assert_eq!(peek.status, 404);
    assert_eq!(peek.json()["error"]["code"], "SESSION_NOT_FOUND");
    let run = http
        .post(
            "/execute",
            Some(&key),
            &json!({"sessionId": theirs, "command": "true"}),
        )
        .await;
    assert_eq!(run.status, 404, "{}", run.text());

    let mine = first.json()["sessionId"].as_str().expect("id").to_string();
    let deleted = http
        .request(
            hyper::Method::DELETE,
            &format!("/sessions/{mine}"),
            Some(&key),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());

    // Keys are listed without their secret, and a revoked key stops working.
    let listing = api.keys(&["list", "--tenant", &rival_ns.name]);
    assert!(
        !listing.contains(&rival[12..]),
        "a key is never listed: {listing}"
    );
    let id = listing
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("one key listed: {listing}"))
        .to_string();
    api.keys(&["revoke", &id]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get("/sessions", Some(&rival)).await.status != 401 {
        assert!(Instant::now() < deadline, "the revoked key still works");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let health = http.get("/readyz", None).await;
    assert_eq!(health.status, 200, "{}", health.text());
    let metrics = http.get("/metrics", None).await;
    assert!(metrics.text().contains("kubexec_api_requests_total"));
    let openapi = http.get("/openapi.json", None).await;
    assert!(openapi.json()["paths"]["/execute"]["post"].is_object());
}

/// The hosted API promises env values "encrypted at rest": the env Secret the api stores for an
/// execution is encrypted in etcd (the local cluster's apiserver runs with an
/// EncryptionConfiguration), so reading etcd directly finds no value in plaintext.
#[tokio::test]
async fn env_values_are_encrypted_at_rest_in_etcd() {
    use k8s_openapi::api::core::v1::Secret;
    let f = fixture("api-etcd").await;
    let token = format!(
        "kx-plaintext-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let out = f
        .execute(json!({"command": "[ \"$TOKEN\" = \"$WANT\" ] && echo same", "env": {"TOKEN": token, "WANT": token}}))
        .await;
    assert_eq!(out["stdout"], "same\n", "{out}");

    let secrets = f.ns.api::<Secret>();
    let params = kube::api::ListParams::default().labels("kubexec.dev/execution");
    let stored = secrets.list(&params).await.expect("list env Secrets").items;
    assert!(!stored.is_empty(), "the api stored the env in a Secret");
    for secret in stored {
        let name = secret.metadata.name.clone().unwrap_or_default();
        // Through the apiserver the value reads back...
        let through_api = secret
            .data
            .as_ref()
            .and_then(|d| d.get("TOKEN"))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned());
        assert_eq!(through_api.as_deref(), Some(token.as_str()));
        // ...and in etcd it is ciphertext.
        let key = STANDARD.encode(format!("/registry/secrets/{}/{name}", f.ns.name));
        let out = std::process::Command::new("curl")
            .args([
                "-fsS",
                "http://127.0.0.1:2379/v3/kv/range",
                "-d",
                &json!({ "key": key }).to_string(),
            ])
            .output()
            .expect("curl on PATH");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply: Value = serde_json::from_slice(&out.stdout).expect("etcd's JSON");
        let raw = reply["kvs"][0]["value"]
            .as_str()
            .and_then(|v| STANDARD.decode(v).ok())
            .expect("the Secret is in etcd");
        assert!(
            raw.starts_with(b"k8s:enc:aescbc:v1:"),
            "Secret {name} is not encrypted in etcd"
        );
        assert!(
            !raw.windows(token.len()).any(|w| w == token.as_bytes()),
            "an env value is in etcd in plaintext"
        );
    }
}

/// The api serves HTTPS from a certificate and key (`--tls-cert`, `--tls-key`; the chart's
/// `api.tls.secretName`): a request over TLS, checked against the certificate, gets its answer,
/// and plain HTTP to the same port gets none.
#[tokio::test]
async fn a_tls_round_trip_through_the_api() {
    let ns = TestNs::new("api-tls").await;
    let dir = std::env::temp_dir().join(format!("kubexec-tls-{}", ns.name));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl on PATH");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let api = ApiServer::start(
        &ns.name,
        &[
            "--tls-cert",
            cert.to_str().expect("utf-8 path"),
            "--tls-key",
            key.to_str().expect("utf-8 path"),
        ],
    );
    kubexec_e2e::api::mark_as_tenant(&ns.name);
    let key_text = api
        .keys(&["create", "--tenant", &ns.name, "--tier", "free"])
        .trim()
        .to_string();
    let curl = |url: String, extra: &[&str]| {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&cert)
            .args(extra)
            .arg(url)
            .output()
            .expect("curl on PATH")
    };
    let port = api.addr.port();
    let health = curl(format!("https://127.0.0.1:{port}/healthz"), &[]);
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    // The new key reaches the api's key cache within moments.
    let bearer = format!("Authorization: Bearer {key_text}");
    let mut body = String::new();
    for _ in 0..60 {
        let listed = curl(
            format!("https://127.0.0.1:{port}/sessions"),
            &["-H", &bearer, "-w", "\n%{http_code}"],
        );
        body = String::from_utf8_lossy(&listed.stdout).into_owned();
        if body.ends_with("\n200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(body.ends_with("\n200"), "{body}");
    let plain = curl(format!("http://127.0.0.1:{port}/healthz"), &[]);
    assert!(
        !plain.status.success(),
        "plain HTTP was answered on the TLS port"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A key revoked while the api's key watch is broken is never accepted: the api reaches the
/// apiserver through a relay that the test cuts, so its watch breaks for real. Once it has been
/// broken for `--keys-stale-after`, `/readyz` fails and every request gets 503 `KEYS_STALE`
/// (even with a key that was valid); a key revoked during the cut is refused once the watch is
/// back, and readiness returns.
#[tokio::test]
async fn a_broken_key_watch_fails_readiness_and_misses_no_revocation() {
    use kubexec_e2e::proxy::CuttableProxy;

    let ns = TestNs::new("api-stale").await;
    let relay = CuttableProxy::to_apiserver().await;
    let kubeconfig = relay.kubeconfig(&ns.name);
    let api = ApiServer::start_with_env(
        &ns.name,
        &["--keys-stale-after", "3"],
        &[("KUBECONFIG", kubeconfig.to_str().expect("utf-8 path"))],
    );
    let http = api.client();
    let kept = api.create_key(&ns.name, "free").await;
    let revoked = api.create_key(&ns.name, "free").await;
    let revoked_id = api
        .keys(&["list", "--tenant", &ns.name])
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|columns| columns.get(3) == revoked.get(..9).as_ref())
        .and_then(|columns| columns.first().map(|id| id.to_string()))
        .unwrap_or_else(|| panic!("the second key is listed by its prefix"));
    assert_eq!(http.get("/readyz", None).await.status, 200);

    relay.cut();
    // Until the bound passes the cache is trusted (a call may fail for want of the apiserver);
    // after it, every request is refused as stale.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let refused = http.get("/sessions", Some(&kept)).await;
        if refused.status == 503 && refused.json()["error"]["code"] == "KEYS_STALE" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "requests were never refused as stale with the key watch broken: {} {}",
            refused.status,
            refused.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = http.get("/readyz", None).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    // Revoked while the api cannot see it (the keys command talks to the apiserver directly).
    api.keys(&["revoke", &revoked_id]);

    relay.restore();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if http.get("/readyz", None).await.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readiness never came back after the watch recovered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone = http.get("/sessions", Some(&revoked)).await;
    assert_eq!(
        gone.status,
        401,
        "the key revoked during the cut: {}",
        gone.text()
    );
    let ok = http.get("/sessions", Some(&kept)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}

/// Code and files above a small size do not ride in the Execution object: the api streams them
/// into the workspace first (code as `stagedCode`, files through `write-files`), so Executions
/// stay small in etcd and in every cache. The run sees them exactly as if they were inline, and
/// the staged code is gone once the run has its copy.
#[tokio::test]
async fn large_code_and_files_travel_the_streamed_path() {
    let f = fixture("api-staged").await;
    let padding = format!("// {}\n", "x".repeat(40_000));
    let code = format!(
        "{padding}const text = await Bun.file('big.txt').text();\nconsole.log('len', text.length, 'from', import.meta.dir);"
    );
    let reply = f
        .execute(json!({
            "code": code,
            "files": [{"path": "big.txt", "content": "y".repeat(20_000)}],
        }))
        .await;
    assert_eq!(reply["exitCode"], 0, "{reply}");
    assert_eq!(
        reply["stdout"].as_str().map(str::trim),
        Some("len 20000 from /workspace"),
        "{reply}"
    );

    let executions: Vec<Execution> =
        f.ns.api::<Execution>()
            .list(&Default::default())
            .await
            .expect("list")
            .items;
    let staged = executions
        .iter()
        .find(|e| e.spec.staged_code.is_some())
        .expect("an Execution with stagedCode");
    assert!(staged.spec.code.is_none(), "the code is not in the object");
    assert!(staged.spec.files.is_empty(), "large files are streamed");
    let size = serde_json::to_vec(&staged.spec).expect("json").len();
    assert!(
        size < 4096,
        "the Execution's spec stays small: {size} bytes"
    );

    let left = f
        .execute(json!({"command": "ls -A /workspace/.kubexec/staged | wc -l"}))
        .await;
    assert_eq!(left["stdout"].as_str().map(str::trim), Some("0"), "{left}");

    // Small code still rides inline.
    let small = f.execute(json!({"code": "console.log(6 * 7)"})).await;
    assert_eq!(
        small["stdout"].as_str().map(str::trim),
        Some("42"),
        "{small}"
    );
}

/// The live warm Pods of the tenant's pool `kubexec-free`, as (name, uid).
async fn free_pool_warm_pods(ns: &TestNs) -> Vec<(String, String)> {
    use kube::ResourceExt;
    ns.api::<k8s_openapi::api::core::v1::Pod>()
        .list(&kube::api::ListParams::default().labels("kubexec.dev/warm-pool=kubexec-free"))
        .await
        .expect("list warm pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}

async fn free_pool_filled(ns: &TestNs) {
    kubexec_e2e::wait_for(
        &ns.api::<kubexec::crd::SessionPool>(),
        "kubexec-free",
        kubexec_e2e::READY_TIMEOUT,
        "the tenant's pool to fill",
        |p: &kubexec::crd::SessionPool| {
            p.status
                .as_ref()
                .is_some_and(|s| s.ready_replicas == 1 && s.replicas == 1)
        },
    )
    .await;
}

#[tokio::test]
async fn rest_sessions_come_from_the_tenants_pool() {
    // The fixture's create applied the free tier's pool (poolSize 1) in the tenant namespace.
    let f = fixture("api-pool").await;
    free_pool_filled(&f.ns).await;
    let warm = free_pool_warm_pods(&f.ns).await;
    assert_eq!(warm.len(), 1, "{warm:?}");

    // A create of the default shape adopts the warm sandbox, which answers at once.
    let created = f
        .http
        .post("/sessions/create", Some(&f.key), &json!({}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["sessionId"]
        .as_str()
        .expect("id")
        .to_string();
    let first = f
        .http
        .post(
            "/execute",
            Some(&f.key),
            &json!({"sessionId": id, "command": "echo pooled > kept.txt && cat kept.txt"}),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["stdout"], "pooled\n");
    let session =
        f.ns.api::<kubexec::crd::Session>()
            .get(&id)
            .await
            .expect("session");
    assert_eq!(
        session.spec.pool_ref.as_ref().map(|p| p.name.as_str()),
        Some("kubexec-free")
    );
    assert!(session.spec.workspace.persistent);
    let pod = kubexec_e2e::pod_of(&session);
    let pod_uid =
        f.ns.api::<k8s_openapi::api::core::v1::Pod>()
            .get(&pod)
            .await
            .expect("pod")
            .metadata
            .uid
            .unwrap_or_default();
    assert_eq!(
        (pod.clone(), pod_uid.clone()),
        warm[0].clone(),
        "a former pool Pod"
    );
    assert!(
        session.status.and_then(|s| s.workspace_claim).is_some(),
        "its claim came with it"
    );

    // The pool refills with another Pod.
    free_pool_filled(&f.ns).await;
    let refill = free_pool_warm_pods(&f.ns).await;
    assert!(!refill.iter().any(|(_, uid)| *uid == pod_uid), "{refill:?}");

    // Another shape takes the cold path, and works.
    let cold = f
        .http
        .post(
            "/sessions/create",
            Some(&f.key),
            &json!({"resourceLimits": {"memory": 256}}),
        )
        .await;
    assert_eq!(cold.status, 201, "{}", cold.text());
    let cold_id = cold.json()["sessionId"].as_str().expect("id").to_string();
    let ran = f
        .http
        .post(
            "/execute",
            Some(&f.key),
            &json!({"sessionId": cold_id, "command": "echo cold"}),
        )
        .await;
    assert_eq!(ran.status, 200, "{}", ran.text());
    assert_eq!(ran.json()["stdout"], "cold\n");
    let cold_session =
        f.ns.api::<kubexec::crd::Session>()
            .get(&cold_id)
            .await
            .expect("session");
    assert_eq!(cold_session.spec.pool_ref, None);
    assert_eq!(
        kubexec_e2e::pod_of(&cold_session),
        format!("{cold_id}-sandbox")
    );
    assert_eq!(
        free_pool_warm_pods(&f.ns).await,
        refill,
        "the cold path leaves the pool alone"
    );
}
