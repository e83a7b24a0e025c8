//! Real executions through the binary, in a temp-dir workspace.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, exec, finish_exec, process_exists, start_exec, TempDir};
use kubexec_runner::protocol::{Encoding, ErrorCode, FileSpec, RunnerEvent};

#[test]
fn command_output_exit_code_and_metrics() {
    let ws = TempDir::new("basic");
    let mut spec = ws.spec("basic-1");
    spec.command = Some("echo hi; echo err >&2; exit 3".into());
    let run = exec(&spec);

    assert!(
        run.status.success(),
        "the runner succeeds even when the command fails"
    );
    let result = run.result();
    assert_eq!(
        (
            result.stdout.as_str(),
            result.stderr.as_str(),
            result.exit_code
        ),
        ("hi\n", "err\n", 3)
    );
    assert_eq!((result.stdout_bytes, result.stderr_bytes), (3, 4));
    assert!(
        !result.stdout_truncated && !result.timed_out && !result.oom_killed && !result.recovered
    );
    assert!(
        result.execution_time_ms > 0 && result.cpu_time_ms > 0 && result.memory_used_bytes > 0,
        "{result:?}"
    );
    assert!(result.finished_at >= result.started_at);
    assert_eq!(run.streamed_stdout(), "hi\n");
    assert!(run.events.contains(&RunnerEvent::Stderr {
        data: "err\n".into()
    }));

    let run_dir = ws.path().join(".kubexec/runs/basic-1");
    assert_eq!(
        std::fs::read_to_string(run_dir.join("stdout"))
            .ok()
            .as_deref(),
        Some("hi\n")
    );
    assert!(run_dir.join("result.json").is_file());
}

#[test]
fn files_env_working_dir_and_stdin_are_applied() {
    let ws = TempDir::new("env");
    let mut spec = ws.spec("env-1");
    spec.files = vec![
        FileSpec {
            path: "sub/x.txt".into(),
            content: "from file".into(),
            encoding: Encoding::Utf8,
        },
        FileSpec {
            path: format!("{}/b64.bin", ws.path().display()),
            content: "aGk=".into(),
            encoding: Encoding::Base64,
        },
    ];
    spec.env.insert("GREETING".into(), "hello there".into());
    spec.working_dir = Some("sub".into());
    spec.stdin = Some("piped in".into());
    spec.command = Some(r#"echo "$GREETING"; pwd; cat x.txt; echo; cat ../b64.bin; echo; cat; echo; echo "${PATH:+has path}""#.into());
    let result = exec(&spec).result().clone();

    let expected = format!(
        "hello there\n{}/sub\nfrom file\nhi\npiped in\nhas path\n",
        ws.path().display()
    );
    assert_eq!(result.stdout, expected);
    assert_eq!(result.files_written, vec!["sub/x.txt", "b64.bin"]);
}

#[test]
fn user_processes_are_the_preferred_oom_victims() {
    let ws = TempDir::new("oom-score");
    let mut spec = ws.spec("oom-score-1");
    spec.command = Some("cat /proc/self/oom_score_adj".into());
    assert_eq!(exec(&spec).result().stdout, "1000\n");
}

#[test]
fn files_only_execution_writes_and_reports() {
    let ws = TempDir::new("files-only");
    let mut spec = ws.spec("files-1");
    spec.files = vec![FileSpec {
        path: "a.txt".into(),
        content: "a".into(),
        encoding: Encoding::Utf8,
    }];
    let result = exec(&spec).result().clone();
    assert_eq!(
        (result.exit_code, result.files_written.as_slice()),
        (0, &["a.txt".to_string()][..])
    );
    assert!(ws.path().join("a.txt").is_file());
}

#[test]
fn timeout_terminates_the_whole_group() {
    let ws = TempDir::new("timeout");
    let mut spec = ws.spec("timeout-1");
    spec.command = Some("echo $$; sleep 30 & sleep 30".into());
    spec.timeout_seconds = 1;
    let run = exec(&spec);

    assert!(
        run.elapsed < Duration::from_secs(4),
        "took {:?}",
        run.elapsed
    );
    let result = run.result();
    assert!(result.timed_out);
    assert_eq!(result.exit_code, 128 + libc::SIGTERM);
    let group: i32 = result.stdout.trim().parse().expect("shell printed its pid");
    let group_gone = eventually(Duration::from_secs(2), || {
        // SAFETY: signal 0 only probes.
        unsafe { libc::kill(-group, 0) != 0 }
    });
    assert!(group_gone, "process group {group} still exists");
}

#[test]
fn a_timed_out_group_is_gone_and_reaped_before_the_result() {
    let ws = TempDir::new("drain");
    let mut spec = ws.spec("drain-1");
    // Background processes that ignore SIGTERM outlive their parent, the main process, so only
    // the runner (their subreaper) can reap them once they are killed.
    spec.command =
        Some("echo $$; trap '' TERM; for i in $(seq 100); do sleep 30 & done; trap - TERM; exec sleep 30".into());
    spec.timeout_seconds = 1;
    let run = exec(&spec);

    let result = run.result();
    assert!(result.timed_out);
    let group: i32 = result.stdout.trim().parse().expect("shell printed its pid");
    // Zombies count against the session's process limit: none may be left when it reports.
    assert!(
        !kubexec_runner::signals::group_exists(group),
        "process group {group} still exists when the result is reported"
    );
}

#[test]
fn background_processes_do_not_hold_the_execution_open() {
    let ws = TempDir::new("background");
    let mut spec = ws.spec("bg-1");
    spec.command = Some("sleep 1000 & echo $!".into());
    let run = exec(&spec);

    assert!(
        run.elapsed < Duration::from_secs(2),
        "took {:?}",
        run.elapsed
    );
    let result = run.result();
    assert_eq!(result.exit_code, 0);
    let pid: i32 = result
        .stdout
        .trim()
        .parse()
        .expect("pid of the background sleep");
    assert!(
        process_exists(pid),
        "the background process outlives the execution"
    );
    // SAFETY: kills the sleep this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(eventually(Duration::from_secs(2), || !process_exists(pid)));
}

#[test]
fn a_background_writer_neither_holds_the_execution_open_nor_fills_the_workspace() {
    let ws = TempDir::new("bg-writer");
    let mut spec = ws.spec("bg-writer-1");
    // The subshell inherits stdout and writes as fast as it can until released; it leaves a
    // marker when it ends. An execution it held open would never return before the release.
    spec.command = Some(
        "(timeout 60 sh -c 'yes & while [ ! -e release ]; do sleep 0.05; done; kill $!'; touch bg-ended) & echo done"
            .into(),
    );
    let run = exec(&spec);
    let marker = ws.path().join("bg-ended");
    assert!(
        !marker.exists(),
        "the execution ended while the background writer still ran"
    );
    let result = run.result();
    assert_eq!(result.exit_code, 0);
    assert!(
        result.stdout.lines().any(|line| line == "done"),
        "{:?}",
        &result.stdout[..result.stdout.len().min(200)]
    );

    std::fs::write(ws.path().join("release"), b"").expect("release the writer");
    assert!(
        eventually(Duration::from_secs(30), || marker.exists()),
        "the background writer ends"
    );
    let file = ws.path().join(".kubexec/runs/bg-writer-1/stdout");
    // The drainer may still be flushing its last read; its cap bounds the file either way.
    let bound = result.stdout_bytes + kubexec_runner::output_pipe::POST_END_CAP_BYTES + 256;
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    assert!(
        size <= bound,
        "late output is capped: {size} bytes, at most {bound}"
    );
    assert!(
        size > result.stdout_bytes,
        "late output is kept up to the cap"
    );
}

#[test]
fn the_same_run_id_runs_at_most_once() {
    let ws = TempDir::new("once");
    let mut spec = ws.spec("once-1");
    spec.command = Some("echo ran >> count.txt; echo done".into());
    let first = exec(&spec);
    let second = exec(&spec);

    assert!(!first.result().recovered);
    assert!(second.result().recovered);
    assert_eq!(second.result().stdout, "done\n");
    assert_eq!(
        std::fs::read_to_string(ws.path().join("count.txt"))
            .ok()
            .as_deref(),
        Some("ran\n")
    );
}

#[test]
fn results_are_sealed_and_a_rewritten_stored_result_does_not_verify() {
    use kubexec_runner::protocol::ResultKey;
    let ws = TempDir::new("sealed");
    let key = ResultKey::from_bytes([7; 32]);
    let mut spec = ws.spec("sealed-1");
    spec.command = Some("echo real; env; exit 7".into());
    spec.result_key = Some(key.clone());
    let first = exec(&spec);
    assert!(key.verify(first.result()), "the live result is sealed");
    assert_eq!(first.result().exit_code, 7);
    // The key reaches neither the user process nor the run directory.
    assert!(!first.result().stdout.contains(&key.to_hex()));
    let run_dir = ws.path().join(".kubexec/runs/sealed-1");
    for entry in std::fs::read_dir(&run_dir).expect("run dir").flatten() {
        let content = std::fs::read(entry.path()).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&content).contains(&key.to_hex()),
            "{:?} holds the key",
            entry.path()
        );
    }

    let replayed = exec(&spec);
    assert!(replayed.result().recovered && key.verify(replayed.result()));

    // User code rewrites the stored result; the replay carries it, but it no longer verifies.
    let path = run_dir.join("result.json");
    let stored = std::fs::read_to_string(&path).expect("stored result");
    let forged = stored
        .replace("\"exitCode\":7", "\"exitCode\":0")
        .replace("real", "FORGED");
    std::fs::write(&path, forged).expect("rewrite");
    let replayed = exec(&spec);
    assert_eq!(replayed.result().exit_code, 0);
    assert!(!key.verify(replayed.result()));
}

#[test]
fn a_second_exec_attaches_to_a_running_one() {
    let ws = TempDir::new("attach");
    let mut spec = ws.spec("attach-1");
    spec.command = Some("echo ran >> count.txt; echo start; sleep 2; echo end; exit 7".into());
    let started = Instant::now();
    let first = start_exec(&spec);
    let marker = ws.path().join(".kubexec/runs/attach-1/started");
    assert!(eventually(Duration::from_secs(2), || marker.exists()));

    let second = common::exec(&spec);
    let first = finish_exec(first, started);
    assert_eq!(first.result().exit_code, 7);
    let attached = second.result();
    assert!(attached.recovered);
    assert_eq!(
        (attached.exit_code, attached.stdout.as_str()),
        (7, "start\nend\n")
    );
    assert_eq!(
        second.streamed_stdout(),
        "start\nend\n",
        "the attached exec streams the output too"
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("count.txt"))
            .ok()
            .as_deref(),
        Some("ran\n")
    );
}

#[test]
fn the_run_completes_when_the_exec_stream_goes_away() {
    let ws = TempDir::new("hangup");
    let mut spec = ws.spec("hangup-1");
    spec.command = Some("echo a; sleep 0.5; echo b".into());
    let mut child = start_exec(&spec);
    // The operator restarting: both ends of the stream close while the command runs.
    drop(child.stdout.take());
    drop(child.stdin.take());
    let status = child.wait().expect("runner exits");
    assert!(status.success(), "{status:?}");
    let stored = std::fs::read_to_string(ws.path().join(".kubexec/runs/hangup-1/result.json"))
        .expect("result stored");
    assert!(stored.contains(r#""stdout":"a\nb\n""#), "{stored}");
}

#[test]
fn a_claimed_run_whose_runner_died_is_lost() {
    let ws = TempDir::new("lost");
    let run_dir = ws.path().join(".kubexec/runs/lost-1");
    std::fs::create_dir_all(&run_dir).expect("run dir");
    std::fs::write(
        run_dir.join("started"),
        r#"{"pid":2147483647,"startTicks":1,"startedAt":1}"#,
    )
    .expect("marker");
    let mut spec = ws.spec("lost-1");
    spec.command = Some("echo ran >> count.txt".into());
    let run = exec(&spec);
    assert!(!run.status.success());
    assert_eq!(run.error().code, ErrorCode::Lost);
    assert!(!ws.path().join("count.txt").exists());
}

#[test]
fn an_attach_only_exec_refuses_a_run_nobody_started_for_good() {
    let ws = TempDir::new("attach-only");
    let mut spec = ws.spec("attach-only-1");
    spec.command = Some("echo ran >> count.txt".into());
    spec.attach_only = true;
    let refused = exec(&spec);
    assert!(!refused.status.success());
    assert_eq!(refused.error().code, ErrorCode::NotStarted);
    // A late exec with the real spec (the first operator's, still in flight) replays the refusal.
    spec.attach_only = false;
    let late = exec(&spec);
    assert_eq!(late.error().code, ErrorCode::NotStarted);
    assert!(!ws.path().join("count.txt").exists(), "it never ran");

    // A run that did start is replayed as usual.
    let mut started = ws.spec("attach-only-2");
    started.command = Some("echo done".into());
    assert_eq!(exec(&started).result().stdout, "done\n");
    started.attach_only = true;
    let replayed = exec(&started);
    assert!(replayed.result().recovered);
    assert_eq!(replayed.result().stdout, "done\n");
}

#[test]
fn output_is_capped_and_kept_in_full() {
    let ws = TempDir::new("cap");
    let mut spec = ws.spec("cap-1");
    spec.command = Some("head -c 200000 /dev/zero | tr '\\0' a; printf END".into());
    spec.output_cap_bytes = Some(1000);
    spec.stream = false;
    let run = exec(&spec);
    let result = run.result();
    assert!(result.stdout_truncated);
    assert_eq!(result.stdout_bytes, 200_003);
    assert!(result.stdout.len() < 1100 && result.stdout.ends_with("END"));
    assert!(
        !run.events
            .iter()
            .any(|e| matches!(e, RunnerEvent::Stdout { .. })),
        "stream: false"
    );
    let full = std::fs::metadata(ws.path().join(".kubexec/runs/cap-1/stdout"))
        .map(|m| m.len())
        .ok();
    assert_eq!(full, Some(200_003));
}

#[test]
fn code_mode_runs_bun_on_an_entry_in_the_working_dir() {
    let ws = TempDir::new("code");
    let fake_bin = TempDir::new("fake-bun");
    // Stands in for bun: shows how it was called and that relative imports would resolve.
    let fake_bun = fake_bin.path().join("bun");
    std::fs::write(
        &fake_bun,
        "#!/bin/sh\necho \"$1 $(basename \"$2\") $(dirname \"$2\")\"\npwd\ncat \"$2\"\n",
    )
    .expect("write");
    std::fs::set_permissions(
        &fake_bun,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");

    let mut spec = ws.spec("code-1");
    spec.files = vec![FileSpec {
        path: "app/utils.ts".into(),
        content: "export {}".into(),
        encoding: Encoding::Utf8,
    }];
    spec.working_dir = Some("app".into());
    spec.code = Some("import './utils';".into());
    spec.env.insert(
        "PATH".into(),
        format!("{}:/usr/bin:/bin", fake_bin.path().display()),
    );
    let result = exec(&spec).result().clone();

    let app = ws.path().join("app");
    let expected = format!(
        "run .kubexec-main-code-1.ts {0}\n{0}\nimport './utils';",
        app.display()
    );
    assert_eq!(
        (result.exit_code, result.stdout.as_str()),
        (0, expected.as_str())
    );
    assert!(
        !app.join(".kubexec-main-code-1.ts").exists(),
        "the entry file is removed afterwards"
    );
    assert!(
        ws.path().join(".kubexec/runs/code-1/main.ts").is_file(),
        "the run dir keeps the code"
    );
}

#[test]
fn runner_failures_are_error_frames() {
    let ws = TempDir::new("errors");
    let mut spec = ws.spec("err-1");
    spec.files = vec![FileSpec {
        path: "../escape".into(),
        content: "x".into(),
        encoding: Encoding::Utf8,
    }];
    let run = exec(&spec);
    assert!(!run.status.success());
    assert_eq!(run.error().code, ErrorCode::PathEscapesWorkspace);
    assert!(
        !ws.path().join(".kubexec/runs/err-1").exists(),
        "an invalid spec claims nothing"
    );

    let mut spec = ws.spec("err-2");
    spec.command = Some("true".into());
    spec.working_dir = Some("/nonexistent-kubexec-dir".into());
    assert_eq!(exec(&spec).error().code, ErrorCode::WorkingDirMissing);
    // Replayed, not re-run, on a second attempt.
    assert_eq!(exec(&spec).error().code, ErrorCode::WorkingDirMissing);

    let mut spec = ws.spec("err-3");
    spec.code = Some("1".into());
    spec.env
        .insert("PATH".into(), "/nonexistent-kubexec-dir".into());
    assert_eq!(exec(&spec).error().code, ErrorCode::SpawnFailed);

    let mut spec = ws.spec("bad id");
    spec.command = Some("true".into());
    assert_eq!(exec(&spec).error().code, ErrorCode::InvalidSpec);
}
