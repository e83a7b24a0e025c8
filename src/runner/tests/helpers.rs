//! The helper subcommands through the binary.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{exec, runner, TempDir};
use kubexec_runner::protocol::{
    FileKind, FileList, FilesWritten, ProcessList, RunStatus, RunnerError, WriteFilesFrame,
};

fn run_helper(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = runner()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runner");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    // stdin stays open until the helper is done: nothing may depend on EOF.
    let output = child.wait_with_output().expect("helper exits");
    drop(input);
    output
}

#[test]
fn write_files_then_ls_and_cat() {
    let ws = TempDir::new("helpers");
    let root = ws.path().display().to_string();
    let mut stream = Vec::new();
    for (path, content) in [
        ("data/big.bin", vec![7u8; 300_000]),
        ("run.sh", b"echo hi".to_vec()),
    ] {
        let header = WriteFilesFrame::File {
            path: path.into(),
            size: content.len() as u64,
            mode: Some(0o755),
        };
        stream.extend(header.to_frame());
        stream.extend(content);
    }
    stream.extend(WriteFilesFrame::End.to_frame());

    let output = run_helper(
        &["write-files", &root, "--max-file-bytes", "1000000"],
        &stream,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written: FilesWritten = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(written.files_written, vec!["data/big.bin", "run.sh"]);

    let output = run_helper(&["ls", "--recursive", "--workspace", &root], b"");
    let listed: FileList = serde_json::from_slice(&output.stdout).expect("json");
    // Directory sizes depend on the filesystem; only the files' are checked.
    let paths: Vec<_> = listed
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.kind))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("data", FileKind::Directory),
            ("data/big.bin", FileKind::File),
            ("run.sh", FileKind::File)
        ]
    );
    assert_eq!((listed.files[1].size, listed.files[2].size), (300_000, 7));

    let output = run_helper(
        &["cat", "run.sh", "--offset", "5", "--workspace", &root],
        b"",
    );
    assert_eq!(output.stdout, b"hi");

    let output = run_helper(&["cat", "/etc/passwd", "--workspace", &root], b"");
    assert!(!output.status.success() && output.stdout.is_empty());
    let error: RunnerError = serde_json::from_slice(&output.stderr).expect("error json on stderr");
    assert_eq!(
        error.code,
        kubexec_runner::protocol::ErrorCode::PathEscapesWorkspace
    );
}

#[test]
fn result_reports_stored_runs() {
    let ws = TempDir::new("result");
    let root = ws.path().display().to_string();
    let status = |run_id: &str| -> RunStatus {
        let output = run_helper(&["result", run_id, "--workspace", &root], b"");
        serde_json::from_slice(&output.stdout).expect("status json")
    };
    assert_eq!(status("never-ran"), RunStatus::Unknown);

    let mut spec = ws.spec("ran-1");
    spec.command = Some("echo stored".into());
    exec(&spec);
    match status("ran-1") {
        RunStatus::Finished(result) => assert_eq!(result.stdout, "stored\n"),
        other => panic!("expected finished, got {other:?}"),
    }
}

#[test]
fn ps_and_kill() {
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let pid = sleeper.id() as i32;
    let output = run_helper(&["ps"], b"");
    let listed: ProcessList = serde_json::from_slice(&output.stdout).expect("json");
    assert!(listed
        .processes
        .iter()
        .any(|p| p.pid == pid && p.command == "sleep 60"));

    let output = run_helper(&["kill", &pid.to_string(), "--signal", "KILL"], b"");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(sleeper.wait().is_ok());
    assert_eq!(run_helper(&["kill", "1"], b"").status.code(), Some(2));
}

#[test]
fn init_exits_on_term() {
    let mut init = runner().arg("init").spawn().expect("spawn init");
    std::thread::sleep(Duration::from_millis(200));
    assert!(init.try_wait().ok().flatten().is_none(), "init stays up");
    // SAFETY: signals the init this test started.
    unsafe { libc::kill(init.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = init.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "init did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
}

#[test]
fn version_runs() {
    let output = run_helper(&["--version"], b"");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("kubexec-runner "));
}
