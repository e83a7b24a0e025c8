//! Files: in an execute request (paths, tier limits, streamed delivery), and `/files/*` and
//! `/processes/*`, which go through the same runner helpers.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::fake_cluster::Call;
use super::harness::{assert_error, execute_body, harness, harness_with};
use crate::api::tiers::Tiers;

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
        matches!(calls.as_slice(), [Call::Upload(args), Call::WatchExecution(_), Call::CreateExecution(_)] if args[0] == "write-files"),
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
async fn reads_stream_text_or_base64() {
    let h = harness();
    let read = |path: &str| format!("/files/read?sessionId=ses-mine&path={path}");
    let cafe = h.get(&h.free_key, &read("cafe.txt")).await;
    assert_eq!(cafe.status, StatusCode::OK, "{}", cafe.text);
    assert_eq!(
        cafe.body,
        json!({"path": "cafe.txt", "content": "café", "encoding": "utf8", "size": 5})
    );
    let binary = h.get(&h.free_key, &read("binary.bin")).await;
    assert_eq!(
        binary.body,
        json!({"path": "binary.bin", "content": "QcP/AA==", "encoding": "base64", "size": 4})
    );
    let forced = h
        .get(
            &h.free_key,
            &format!("{}&encoding=base64", read("cafe.txt")),
        )
        .await;
    assert_eq!(forced.body["content"], "Y2Fmw6k=", "{}", forced.text);
    let refused = h
        .get(
            &h.free_key,
            &format!("{}&encoding=utf8", read("binary.bin")),
        )
        .await;
    assert_error(
        &refused,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        Some("encoding"),
    );
    let tiny = harness_with(Tiers::from_yaml("free:\n  fileSizeBytes: 3\n").expect("tiers"));
    let too_big = tiny.get(&tiny.free_key, &read("cafe.txt")).await;
    assert_error(
        &too_big,
        StatusCode::PAYLOAD_TOO_LARGE,
        "FILE_TOO_LARGE",
        Some("path"),
    );
}

#[tokio::test]
async fn reads_that_would_never_end_are_named_4xx() {
    let h = harness();
    let fifo = h
        .get(&h.free_key, "/files/read?sessionId=ses-mine&path=pipe")
        .await;
    assert_error(&fifo, StatusCode::BAD_REQUEST, "NOT_A_FILE", Some("path"));
    let endless = h
        .get(&h.free_key, "/files/list?sessionId=ses-mine&path=endless")
        .await;
    assert_error(
        &endless,
        StatusCode::UNPROCESSABLE_ENTITY,
        "OPERATION_TIMED_OUT",
        None,
    );
}
