//! Results a client can find again, bounded run outputs and the wire details of issue 16, over
//! the REST API against the local cluster: lookups after a dropped connection, Idempotency-Key
//! retries that run once, SSE resume with `Last-Event-ID` (also after an api restart), the
//! retention window, forged stored results, `filesWritten`, `oomKilled`, metadata types, and
//! run directories collected past their limits but never while running.

use std::time::Duration;

use hyper::Method;
use kubexec_e2e::api::{fixture, ApiServer, Fixture};
use kubexec_e2e::wait_until;
use serde_json::{json, Value};

async fn get_json(f: &Fixture, http: &kubexec_e2e::api::Http, path: &str) -> (u16, Value) {
    let reply = http.get(path, Some(&f.key)).await;
    (reply.status.as_u16(), reply.json())
}

fn sse_data(event: &kubexec_e2e::api::SseEvent) -> Value {
    serde_json::from_str(&event.data).unwrap_or(Value::Null)
}

/// Output of `stdout` events, concatenated.
fn stdout_of(events: &[kubexec_e2e::api::SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.event == "stdout")
        .map(|e| sse_data(e)["data"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn results_are_found_again_resumed_and_run_once() {
    let mut f = fixture("results").await;
    let http = f.http;

    // A streaming client that goes away after the first chunk.
    let body =
        json!({"sessionId": f.session, "command": "echo one; sleep 3; echo two", "stream": true});
    let (status, headers, first) = http
        .sse(
            Method::POST,
            "/execute",
            &f.key,
            &[],
            body.to_string().into_bytes(),
            Some(1),
        )
        .await;
    assert_eq!(status, 200);
    let id = headers
        .get("x-execution-id")
        .and_then(|v| v.to_str().ok())
        .expect("the stream names its execution")
        .to_string();
    assert_eq!(first[0].event, "stdout", "{first:?}");
    assert_eq!(stdout_of(&first), "one\n");
    let last_id = first[0].id.clone().expect("output events carry ids");
    assert_eq!(last_id, "4-0", "ids are byte offsets of stdout and stderr");

    // Resumed at any api, from where the client was.
    let resume = |http: kubexec_e2e::api::Http, key: String, id: String, from: String| async move {
        http.sse(
            Method::GET,
            &format!("/executions/{id}/events"),
            &key,
            &[("last-event-id", from.as_str())],
            Vec::new(),
            None,
        )
        .await
    };
    let (status, _, rest) = resume(http, f.key.clone(), id.clone(), last_id.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(stdout_of(&rest), "two\n", "{rest:?}");
    let result = rest.last().expect("a last event");
    assert_eq!(result.event, "result", "{rest:?}");
    assert_eq!(sse_data(result)["stdout"], "one\ntwo\n");
    assert_eq!(sse_data(result)["executionId"], id);

    // The result, after the client went away.
    let (code, record) = get_json(&f, &http, &format!("/executions/{id}")).await;
    assert_eq!(code, 200, "{record}");
    assert_eq!(record["status"], "finished");
    assert_eq!(record["stdout"], "one\ntwo\n");
    assert_eq!(record["exitCode"], 0);
    assert_eq!(record["sessionId"], f.session.as_str());

    // The full output, streamed.
    let output = http
        .get(
            &format!("/executions/{id}/output?stream=stdout"),
            Some(&f.key),
        )
        .await;
    assert_eq!(output.status, 200);
    assert_eq!(output.text(), "one\ntwo\n");

    // After an api restart, the stream resumes as well: no api keeps stream state.
    f.api.restart();
    let http = f.api.client();
    f.http = http;
    wait_until(
        Duration::from_secs(30),
        "the restarted api to know the key",
        || async { http.get("/sessions", Some(&f.key)).await.status == 200 },
    )
    .await;
    let (status, _, again) = resume(http, f.key.clone(), id.clone(), last_id).await;
    assert_eq!(status, 200);
    assert_eq!(stdout_of(&again), "two\n", "{again:?}");
    assert_eq!(again.last().map(|e| e.event.as_str()), Some("result"));

    // The same Idempotency-Key twice runs once: the counter in the workspace proves it.
    let counted =
        json!({"sessionId": f.session, "command": "echo x >> counter.txt; wc -l < counter.txt"});
    let idempotent = |body: Value| {
        let key = f.key.clone();
        async move {
            http.request(
                Method::POST,
                "/execute",
                Some(&key),
                &[("idempotency-key", "retry-1")],
                body.to_string().into_bytes(),
            )
            .await
        }
    };
    let once = idempotent(counted.clone()).await;
    let twice = idempotent(counted.clone()).await;
    assert_eq!(once.status, 200, "{}", once.text());
    assert_eq!(twice.status, 200, "{}", twice.text());
    assert_eq!(
        once.json(),
        twice.json(),
        "a retry answers the same execution"
    );
    assert_eq!(once.json()["stdout"].as_str().map(str::trim), Some("1"));
    let other = idempotent(json!({"sessionId": f.session, "command": "echo other"})).await;
    assert_eq!(other.status, 409, "{}", other.text());
    assert_eq!(other.json()["error"]["code"], "IDEMPOTENCY_CONFLICT");
    let counter = f.execute(json!({"command": "wc -l < counter.txt"})).await;
    assert_eq!(counter["stdout"].as_str().map(str::trim), Some("1"));

    // filesWritten lists what the run wrote, not kubexec's own directory.
    let wrote = f
        .execute(json!({"command": "mkdir -p d && echo hi > out.txt && echo x > d/deep.txt"}))
        .await;
    let files: Vec<&str> = wrote["filesWritten"]
        .as_array()
        .expect("filesWritten")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        files.contains(&"out.txt") && files.contains(&"d/deep.txt"),
        "{wrote}"
    );
    assert!(files.iter().all(|f| !f.starts_with(".kubexec")), "{wrote}");
    assert_eq!(wrote["filesWrittenTruncated"], false);

    // The session's executions, paged.
    let mut seen = Vec::new();
    let mut path = format!("/executions?sessionId={}&limit=2", f.session);
    loop {
        let (code, page) = get_json(&f, &http, &path).await;
        assert_eq!(code, 200, "{page}");
        let entries = page["executions"].as_array().expect("executions").clone();
        assert!(entries.len() <= 2);
        seen.extend(
            entries
                .iter()
                .filter_map(|e| e["executionId"].as_str().map(String::from)),
        );
        match page["nextCursor"].as_str() {
            Some(cursor) => {
                path = format!(
                    "/executions?sessionId={}&limit=2&cursor={cursor}",
                    f.session
                )
            }
            None => break,
        }
    }
    assert!(seen.contains(&id), "{seen:?}");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no entry twice: {seen:?}");
    assert!(seen.len() >= 4, "{seen:?}");
    let (code, bad) = get_json(
        &f,
        &http,
        &format!("/executions?sessionId={}&cursor=x", f.session),
    )
    .await;
    assert_eq!(
        (code, bad["error"]["details"]["field"].clone()),
        (400, json!("cursor"))
    );

    // Another tenant's key finds nothing.
    let other_ns = format!("{}-t2", f.ns.name);
    let made = kubexec_e2e::kubectl(&["create", "namespace", &other_ns]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let other_key = f.api.create_key(&other_ns, "free").await;
    let stranger = http
        .get(&format!("/executions/{id}"), Some(&other_key))
        .await;
    assert_eq!(stranger.status, 404, "{}", stranger.text());
    assert_eq!(stranger.json()["error"]["code"], "EXECUTION_NOT_FOUND");
    let _ = kubexec_e2e::kubectl(&["delete", "namespace", &other_ns, "--wait=false"]);
}

#[tokio::test]
async fn stored_results_outlive_their_execution_verified_until_the_window_ends() {
    let f = fixture("retain").await;
    // A second api in the same namespace (the same keys): its Executions expire after 1 s,
    // and it keeps results for 4 s.
    let short = ApiServer::start(
        &f.ns.name,
        &["--execution-ttl", "1", "--result-retention", "4"],
    );
    let short_http = short.client();
    wait_until(
        Duration::from_secs(30),
        "the second api to know the key",
        || async { short_http.get("/sessions", Some(&f.key)).await.status == 200 },
    )
    .await;
    let reply = short_http
        .post(
            "/execute",
            Some(&f.key),
            &json!({"sessionId": f.session, "command": "echo kept; exit 3"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let id = reply.json()["executionId"]
        .as_str()
        .expect("id")
        .to_string();
    let name = id.split('.').next().expect("name").to_string();
    let executions: kube::Api<kubexec::crd::Execution> = f.ns.api();
    kubexec_e2e::wait_gone(&executions, &name, Duration::from_secs(60)).await;

    // Gone from etcd; the run directory answers, its MAC checked with the derived key.
    let (code, record) = get_json(&f, &f.http, &format!("/executions/{id}")).await;
    assert_eq!(code, 200, "{record}");
    assert_eq!(
        (record["stdout"].clone(), record["exitCode"].clone()),
        (json!("kept\n"), json!(3))
    );

    // User code cannot forge it: a rewritten result.json is refused.
    let sessions: kube::Api<kubexec::crd::Session> = f.ns.api();
    let pod = kubexec_e2e::pod_of(&sessions.get(&f.session).await.expect("session"));
    let run_id =
        f.ns.sh(&pod, &format!("cat /workspace/.kubexec/names/{name}"));
    f.ns.sh(
        &pod,
        &format!("cd /workspace/.kubexec/runs/{run_id} && sed 's/\"exitCode\":3/\"exitCode\":0/' result.json > r && cp result.json keep && mv r result.json"),
    );
    let (code, forged) = get_json(&f, &f.http, &format!("/executions/{id}")).await;
    assert_eq!(code, 500, "{forged}");
    assert_eq!(forged["error"]["details"]["reason"], "ResultNotVerified");
    f.ns.sh(
        &pod,
        &format!("cd /workspace/.kubexec/runs/{run_id} && mv keep result.json"),
    );

    // Past the short window: 410 at the api that keeps results 4 s.
    wait_until(
        Duration::from_secs(30),
        "the retention window to pass",
        || async {
            short_http
                .get(&format!("/executions/{id}"), Some(&f.key))
                .await
                .status
                == 410
        },
    )
    .await;
    let gone = short_http
        .get(&format!("/executions/{id}"), Some(&f.key))
        .await;
    assert_eq!(gone.json()["error"]["code"], "EXECUTION_EXPIRED");
    drop(short);
}

#[tokio::test]
async fn oom_over_rest_and_metadata_types_round_trip() {
    let f = fixture("wire").await;
    let metadata = json!({"s": "3", "n": 3, "b": true, "nil": null, "o": {"a": [1, "x"]}});
    let created = f
        .http
        .post(
            "/sessions/create",
            Some(&f.key),
            &json!({"metadata": metadata, "resourceLimits": {"memory": 128}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["metadata"], metadata);
    let small = created.json()["sessionId"]
        .as_str()
        .expect("id")
        .to_string();
    let (code, read) = get_json(&f, &f.http, &format!("/sessions/{small}")).await;
    assert_eq!(code, 200);
    assert_eq!(read["metadata"], metadata);

    let hog = f
        .http
        .post(
            "/execute",
            Some(&f.key),
            &json!({"sessionId": small, "timeout": 30,
                    "code": "const chunks = [];\nfor (let i = 0; i < 300; i++) chunks.push(new Uint8Array(1 << 20).fill(1));\nconsole.log(chunks.length);\n"}),
        )
        .await;
    assert_eq!(hog.status, 200, "{}", hog.text());
    assert_eq!(hog.json()["oomKilled"], true, "{}", hog.text());
    assert_eq!(hog.json()["exitCode"], 137);
}

#[tokio::test]
async fn run_outputs_are_collected_past_their_limits_never_while_running() {
    let ns = kubexec_e2e::TestNs::new("rungc").await;
    let tiers = std::env::temp_dir().join(format!("{}-tiers.yaml", ns.name));
    std::fs::write(&tiers, "free:\n  runOutputBytes: 100000\n").expect("tiers file");
    let api = ApiServer::start(
        &ns.name,
        &[
            "--run-gc-interval",
            "0",
            "--tiers-file",
            tiers.to_str().expect("utf-8"),
        ],
    );
    let key = api.create_key(&ns.name, "free").await;
    let http = api.client();
    let created = http.post("/sessions/create", Some(&key), &json!({})).await;
    let session = created.json()["sessionId"]
        .as_str()
        .expect("id")
        .to_string();
    let execute = |command: &'static str| {
        let (key, session) = (key.clone(), session.clone());
        async move {
            let reply = http
                .post(
                    "/execute",
                    Some(&key),
                    &json!({"sessionId": session, "command": command}),
                )
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            reply.json()["executionId"]
                .as_str()
                .expect("id")
                .to_string()
        }
    };
    let old = execute("head -c 80000 /dev/zero | tr '\\0' a").await;
    let newer = execute("head -c 80000 /dev/zero | tr '\\0' b").await;

    // A run that wrote 300 KB and is still running: over the limit on its own.
    let running = {
        let (key, session) = (key.clone(), session.clone());
        tokio::spawn(async move {
            http.post(
                "/execute",
                Some(&key),
                &json!({"sessionId": session, "timeout": 30,
                        "command": "head -c 300000 /dev/zero | tr '\\0' r; touch /workspace/wrote; sleep 15"}),
            )
            .await
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let running_id = loop {
        let list = http
            .get(&format!("/executions?sessionId={session}"), Some(&key))
            .await
            .json();
        let found = list["executions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["status"] == "running")
            .and_then(|e| e["executionId"].as_str().map(String::from));
        if let Some(id) = found {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the big run never ran: {list}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    wait_until(
        Duration::from_secs(30),
        "its output to be written",
        || async {
            http.get(&format!("/executions/{running_id}/output"), Some(&key))
                .await
                .body
                .len()
                >= 300_000
        },
    )
    .await;

    // Any execute collects: the finished runs' output goes, oldest first; the running one stays.
    execute("true").await;
    wait_until(
        Duration::from_secs(30),
        "the old output to be collected",
        || async {
            http.get(&format!("/executions/{newer}/output"), Some(&key))
                .await
                .status
                == 410
        },
    )
    .await;
    let collected = http
        .get(&format!("/executions/{old}/output"), Some(&key))
        .await;
    assert_eq!(collected.status, 410, "{}", collected.text());
    assert_eq!(collected.json()["error"]["code"], "OUTPUT_COLLECTED");
    let record = http.get(&format!("/executions/{old}"), Some(&key)).await;
    assert_eq!(record.status, 200, "the result stays: {}", record.text());
    let live = http
        .get(&format!("/executions/{running_id}/output"), Some(&key))
        .await;
    assert_eq!(live.status, 200);
    assert!(live.body.len() >= 300_000, "never while running");
    let shown = || {
        let annotated = ns.kubectl(&[
            "get",
            "session",
            &session,
            "-o",
            "jsonpath={.metadata.annotations.kubexec\\.dev/run-output-bytes}",
        ]);
        String::from_utf8_lossy(&annotated.stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(30),
        "the session to show its run output",
        || async { shown() >= 300_000 },
    )
    .await;

    let finished = running.await.expect("joins");
    assert_eq!(finished.status, 200, "{}", finished.text());
    let _ = std::fs::remove_file(&tiers);
}
