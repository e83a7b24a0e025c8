//! Drives the real `kubexec-runner` binary the way the operator does: one frame on stdin that
//! is never closed (no EOF), framed events on stdout.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kubexec_runner::protocol::{ExecResult, ExecSpec, FrameDecoder, RunnerError, RunnerEvent};

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("kubexec-it-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path.canonicalize().expect("canonical temp dir"))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn spec(&self, run_id: &str) -> ExecSpec {
        let mut spec = ExecSpec::new(run_id);
        spec.workspace = self.0.display().to_string();
        spec
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn runner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubexec-runner"))
}

pub struct ExecRun {
    pub events: Vec<RunnerEvent>,
    pub status: ExitStatus,
    pub elapsed: Duration,
}

impl ExecRun {
    pub fn result(&self) -> &ExecResult {
        match self.events.last() {
            Some(RunnerEvent::Result(result)) => result,
            other => panic!("expected a result event last, got {other:?}"),
        }
    }

    pub fn error(&self) -> &RunnerError {
        match self.events.last() {
            Some(RunnerEvent::Error(error)) => error,
            other => panic!("expected an error event last, got {other:?}"),
        }
    }

    pub fn streamed_stdout(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                RunnerEvent::Stdout { data } => Some(data.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Starts `exec` and sends the spec; stdin stays open as long as the returned handle lives.
pub fn start_exec(spec: &ExecSpec) -> Child {
    let mut child = runner()
        .arg("exec")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn runner");
    let stdin = child.stdin.as_mut().expect("stdin");
    stdin.write_all(&spec.to_frame()).expect("send spec");
    stdin.flush().expect("flush");
    child
}

pub fn finish_exec(mut child: Child, started: Instant) -> ExecRun {
    let mut stdout = child.stdout.take().expect("stdout");
    let mut decoder = FrameDecoder::new();
    let mut events = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stdout.read(&mut buffer).expect("read runner stdout");
        if n == 0 {
            break;
        }
        decoder.push(&buffer[..n]);
        while let Some(event) = decoder.next_event() {
            events.push(event.expect("every frame is a valid event"));
        }
    }
    let status = child.wait().expect("runner exits");
    assert_eq!(
        decoder.skipped_bytes(),
        0,
        "runner stdout carries only frames"
    );
    assert_eq!(decoder.buffered_bytes(), 0, "no partial frame at the end");
    ExecRun {
        events,
        status,
        elapsed: started.elapsed(),
    }
}

pub fn exec(spec: &ExecSpec) -> ExecRun {
    let started = Instant::now();
    finish_exec(start_exec(spec), started)
}

/// Polls until `condition` holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

pub fn process_exists(pid: i32) -> bool {
    // A zombie still answers kill(0); it is gone once its stat says so or it is reaped.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}
