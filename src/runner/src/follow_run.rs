//! `kubexec-runner follow RUN_ID`: the live output of a run started by another `exec`, for
//! streaming to a client that is not the process that started the run (the api, when the
//! operator runs the execution).
//!
//! It reads the run's `stdout` and `stderr` files from the start, writes every new chunk as a
//! framed `stdout`/`stderr` event, and ends with the run's `result` (or `error`) event once the
//! run has stored its outcome. It never claims, runs or changes a run. It waits at most
//! `--wait-seconds` for the run to start, and stops as soon as its own stdout is gone (the
//! client went away).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::follow::OutputFollower;
use crate::paths::Workspace;
use crate::protocol::{write_frame, ErrorCode, RunStatus, RunnerError, RunnerEvent};
use crate::run_dir::RunDir;

/// The longest pause between looks at the files and the run's state.
pub const POLL_INTERVAL: Duration = Duration::from_millis(40);
/// The first pause, and the pause after a look that found new output: a short run's output
/// and result then reach the client within milliseconds, while a quiet one is looked at
/// only every [`POLL_INTERVAL`] (the pause grows by a quarter per quiet look: 40 ms after
/// about 150 ms).
const FIRST_POLL_INTERVAL: Duration = Duration::from_millis(2);
/// Default wait for a run that has not started yet.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Writes events until the end; `Err` only when the output stream itself is gone.
struct Frames<W: Write>(W);

impl<W: Write> Frames<W> {
    fn emit(&mut self, event: &RunnerEvent) -> std::io::Result<()> {
        let payload = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        write_frame(&mut self.0, &payload)
    }
}

/// Where a follow starts: byte offsets into the run's stdout and stderr (0 and 0 from the
/// start; a resumed stream passes what its client has already seen).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offsets {
    pub stdout: u64,
    pub stderr: u64,
}

/// Follows run `run_id` of `workspace` from the start, writing frames to `out`.
pub fn follow(workspace: &Path, run_id: &str, wait: Duration, out: impl Write) -> Result<()> {
    follow_from(workspace, run_id, wait, Offsets::default(), out)
}

/// [`follow`] from `offsets`: output before them is not sent again.
pub fn follow_from(
    workspace: &Path,
    run_id: &str,
    wait: Duration,
    offsets: Offsets,
    out: impl Write,
) -> Result<()> {
    let workspace = Workspace::open(workspace)?;
    let run_dir = RunDir::new(workspace.root(), run_id)?;
    let mut frames = Frames(out);
    let gone = |source| Error::Io {
        context: "writing to stdout".into(),
        source,
    };
    let deadline = Instant::now() + wait;
    let mut followers: Option<(OutputFollower, OutputFollower)> = None;
    let mut pause = FIRST_POLL_INTERVAL;
    loop {
        // Read the state before the files: output written before the outcome is then never missed.
        let status = run_dir.status()?;
        if followers.is_none() {
            // The output files appear when the process is spawned, after the claim.
            let stdout = OutputFollower::open_at(&run_dir.stdout_path(), 0, offsets.stdout);
            let stderr = OutputFollower::open_at(&run_dir.stderr_path(), 0, offsets.stderr);
            followers = stdout.ok().zip(stderr.ok());
        }
        let finished = matches!(status, RunStatus::Finished(_));
        let mut failed_write = None;
        let mut emitted = false;
        // Once finished, only up to the run's end is read, below.
        if let Some((stdout, stderr)) = followers.as_mut().filter(|_| !finished) {
            let mut emit = |event: RunnerEvent| {
                emitted = true;
                if failed_write.is_none() {
                    failed_write = frames.emit(&event).err();
                }
            };
            let _ = stdout.poll(|data| emit(RunnerEvent::Stdout { data }));
            let _ = stderr.poll(|data| emit(RunnerEvent::Stderr { data }));
        }
        if let Some(error) = failed_write {
            return Err(gone(error));
        }
        // Where the run's output ends: background processes may write after it.
        let ends = match &status {
            RunStatus::Finished(result) => (result.stdout_bytes, result.stderr_bytes),
            _ => (u64::MAX, u64::MAX),
        };
        let last = match status {
            RunStatus::Finished(result) => RunnerEvent::Result(result),
            RunStatus::Failed(error) => RunnerEvent::Error(error),
            RunStatus::Lost => RunnerEvent::Error(RunnerError {
                code: ErrorCode::Lost,
                message: format!("run {run_id} ended without a result"),
            }),
            RunStatus::Unknown if Instant::now() >= deadline => RunnerEvent::Error(RunnerError {
                code: ErrorCode::NotFound,
                message: format!("run {run_id} did not start within {}s", wait.as_secs()),
            }),
            RunStatus::Running { .. } | RunStatus::Unknown => {
                pause = if emitted {
                    FIRST_POLL_INTERVAL
                } else {
                    // Slowly: a short run's result then waits a few ms for the look that
                    // finds it, not up to the length of the run so far.
                    (pause * 5 / 4).min(POLL_INTERVAL)
                };
                std::thread::sleep(pause);
                continue;
            }
        };
        if let Some((stdout, stderr)) = followers.take() {
            let mut failed = None;
            let mut emit = |event: RunnerEvent| {
                if failed.is_none() {
                    failed = frames.emit(&event).err();
                }
            };
            let _ = stdout.finish_at(ends.0, |data| emit(RunnerEvent::Stdout { data }));
            let _ = stderr.finish_at(ends.1, |data| emit(RunnerEvent::Stderr { data }));
            if let Some(error) = failed {
                return Err(gone(error));
            }
        }
        return frames.emit(&last).map_err(gone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ExecResult, FrameDecoder};
    use crate::testutil::TempDir;

    fn events(bytes: &[u8]) -> Vec<RunnerEvent> {
        let mut decoder = FrameDecoder::new();
        decoder.push(bytes);
        std::iter::from_fn(|| decoder.next_event())
            .map(|e| e.expect("an event"))
            .collect()
    }

    #[test]
    fn replays_output_then_the_result() {
        let ws = TempDir::new("follow-run");
        let run = RunDir::new(ws.path(), "run-1").expect("valid id");
        assert_eq!(run.claim(1).ok(), Some(crate::run_dir::Claim::Claimed));
        // A background process wrote on after the run ended: not part of the run's output.
        std::fs::write(run.stdout_path(), "one\ntwo\nlate\n").expect("stdout");
        std::fs::write(run.stderr_path(), "oops\n").expect("stderr");
        let result = ExecResult {
            run_id: "run-1".into(),
            exit_code: 3,
            stdout_bytes: 8,
            stderr_bytes: 5,
            ..Default::default()
        };
        run.write_result(&result).expect("result");

        let mut out = Vec::new();
        follow(ws.path(), "run-1", Duration::from_secs(1), &mut out).expect("follows");
        let events = events(&out);
        assert_eq!(
            events,
            vec![
                RunnerEvent::Stdout {
                    data: "one\ntwo\n".into()
                },
                RunnerEvent::Stderr {
                    data: "oops\n".into()
                },
                RunnerEvent::Result(result),
            ]
        );
    }

    #[test]
    fn resumes_from_offsets() {
        let ws = TempDir::new("follow-resume");
        let run = RunDir::new(ws.path(), "run-4").expect("valid id");
        assert_eq!(run.claim(1).ok(), Some(crate::run_dir::Claim::Claimed));
        std::fs::write(run.stdout_path(), "one\ntwo\n").expect("stdout");
        std::fs::write(run.stderr_path(), "oops\n").expect("stderr");
        let result = ExecResult {
            run_id: "run-4".into(),
            stdout_bytes: 8,
            stderr_bytes: 5,
            ..Default::default()
        };
        run.write_result(&result).expect("result");
        let mut out = Vec::new();
        let offsets = Offsets {
            stdout: 4,
            stderr: 5,
        };
        follow_from(
            ws.path(),
            "run-4",
            Duration::from_secs(1),
            offsets,
            &mut out,
        )
        .expect("follows");
        assert_eq!(
            events(&out),
            vec![
                RunnerEvent::Stdout {
                    data: "two\n".into()
                },
                RunnerEvent::Result(result),
            ]
        );
    }

    #[test]
    fn a_run_that_never_starts_is_an_error() {
        let ws = TempDir::new("follow-none");
        let mut out = Vec::new();
        follow(ws.path(), "run-2", Duration::from_millis(100), &mut out).expect("follows");
        assert!(matches!(
            events(&out).as_slice(),
            [RunnerEvent::Error(RunnerError {
                code: ErrorCode::NotFound,
                ..
            })]
        ));
    }

    #[test]
    fn follows_output_while_the_run_is_alive() {
        let ws = TempDir::new("follow-live");
        let run = RunDir::new(ws.path(), "run-3").expect("valid id");
        run.claim(1).expect("claimed by this (living) process");
        std::fs::write(run.stdout_path(), "").expect("stdout");
        std::fs::write(run.stderr_path(), "").expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        struct Chan(std::sync::mpsc::Sender<Vec<u8>>);
        impl Write for Chan {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.send(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let root = ws.path().to_path_buf();
        let follower =
            std::thread::spawn(move || follow(&root, "run-3", Duration::from_secs(5), Chan(tx)));
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(run.stdout_path())
            .expect("open");
        file.write_all(b"live\n").expect("append");
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !events(&seen).contains(&RunnerEvent::Stdout {
            data: "live\n".into(),
        }) {
            assert!(Instant::now() < deadline, "no live chunk");
            if let Ok(bytes) = rx.recv_timeout(Duration::from_millis(100)) {
                seen.extend(bytes);
            }
        }
        run.write_result(&ExecResult::default()).expect("result");
        follower.join().expect("joins").expect("follows");
    }
}
