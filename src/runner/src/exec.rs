//! `kubexec-runner exec`: one execution, at most once, reported as events on stdout.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cgroup;
use crate::clock::now_unix_ms;
use crate::error::{Error, Result};
use crate::files::{write_atomically, write_spec_files};
use crate::follow::OutputFollower;
use crate::invocation::{self, Invocation};
use crate::output_pipe::OutputPipe;
use crate::paths::Workspace;
use crate::pids::{self, ProcessLimit};
use crate::protocol::{
    read_frame, ExecResult, ExecSpec, RunStatus, RunnerEvent, MAX_SPEC_FRAME_BYTES,
    PROTOCOL_VERSION,
};
use crate::run_dir::{Claim, RunDir};
use crate::sink::EventSink;
use crate::staged;
use crate::supervise::{self, Launch, Supervised};

const ATTACH_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Moved from each output pipe into its file per poll; more means the process is busy writing
/// and the next poll comes at once.
const PUMP_BYTES_PER_TICK: usize = 4 << 20;

/// Reads one framed spec from `input`, runs it, and emits the final `result` or `error` event
/// (after any live output) to `sink`. Returns the error if the runner itself failed.
pub fn run(input: &mut impl BufRead, sink: &mut EventSink<impl Write>) -> Result<()> {
    let outcome = read_spec(input).and_then(|spec| execute(&spec, sink));
    match outcome {
        Ok(result) => {
            sink.emit(&RunnerEvent::Result(result));
            Ok(())
        }
        Err(error) => {
            sink.emit(&RunnerEvent::Error(error.to_wire()));
            Err(error)
        }
    }
}

pub fn read_spec(input: &mut impl BufRead) -> Result<ExecSpec> {
    let payload = read_frame(input, MAX_SPEC_FRAME_BYTES)?;
    let spec: ExecSpec =
        serde_json::from_slice(&payload).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    spec.validate()?;
    Ok(spec)
}

/// Runs `spec` unless its run was claimed before, in which case the earlier run's result is
/// reported (waiting for it if it is still running).
pub fn execute(spec: &ExecSpec, sink: &mut EventSink<impl Write>) -> Result<ExecResult> {
    spec.validate()?;
    let workspace = Workspace::open(&spec.workspace)?;
    // Paths are checked before the claim so that a bad spec leaves no trace.
    for file in &spec.files {
        workspace.relative_path(&file.path)?;
    }
    let run_dir = RunDir::new(workspace.root(), &spec.run_id)?;
    let started_at = now_unix_ms();
    if run_dir.claim(started_at)? == Claim::AlreadyClaimed {
        return attach(&run_dir, spec, sink);
    }
    if let Some(name) = &spec.name {
        // Only lookups by name need it; the run goes on without it.
        if let Err(error) = crate::run_dir::record_name(workspace.root(), name, &spec.run_id) {
            let _ = writeln!(std::io::stderr(), "kubexec-runner: {error}");
        }
    }
    if spec.attach_only {
        // Claimed only to refuse it: the stored error makes every later exec replay the refusal.
        let refused = Error::NotStarted(spec.run_id.clone());
        run_dir.write_error(&refused.to_wire())?;
        return Err(refused);
    }

    let outcome = run_claimed(spec, &workspace, &run_dir, started_at, sink).map(|mut result| {
        result.fit_frame();
        if let Some(key) = &spec.result_key {
            key.seal(&mut result);
        }
        result
    });
    let stored = match &outcome {
        Ok(result) => run_dir.write_result(result),
        Err(error) => run_dir.write_error(&error.to_wire()),
    };
    if let Err(error) = stored {
        // The caller still gets the outcome; only a later recovery would miss it.
        let _ = writeln!(
            std::io::stderr(),
            "kubexec-runner: could not store the outcome of run {}: {error}",
            spec.run_id
        );
    }
    outcome
}

fn run_claimed(
    spec: &ExecSpec,
    workspace: &Workspace,
    run_dir: &RunDir,
    started_at: u64,
    sink: &mut EventSink<impl Write>,
) -> Result<ExecResult> {
    let tracker = crate::changed_files::Tracker::start(workspace.root());
    let files_written = write_spec_files(workspace, &spec.files)?;
    let working_dir = resolve_working_dir(spec.working_dir.as_deref(), workspace)?;
    let mut result = ExecResult {
        version: PROTOCOL_VERSION,
        run_id: spec.run_id.clone(),
        files_written,
        started_at,
        ..Default::default()
    };

    let staged = match &spec.staged_code {
        Some(name) => Some(staged::read(workspace.root(), name)?),
        None => None,
    };
    let (invocation, entry) = match (spec.code.as_ref().or(staged.as_ref()), &spec.command) {
        (Some(code), _) => prepare_code(code, &working_dir, run_dir, &spec.run_id)?,
        (None, Some(command)) => (invocation::shell(command), None),
        (None, None) => {
            result.finished_at = now_unix_ms();
            return Ok(result);
        }
    };
    if let Some(name) = &spec.staged_code {
        // The run holds its own copy now (`main.ts` in the run directory).
        staged::remove(workspace.root(), name);
    }
    let stdin = match &spec.stdin {
        Some(content) => {
            write_atomically(&run_dir.stdin_path(), content.as_bytes(), 0o600)?;
            Some(run_dir.stdin_path())
        }
        None => None,
    };
    let (stdout_path, stderr_path) = (run_dir.stdout_path(), run_dir.stderr_path());
    let (mut stdout_pipe, stdout_writer) = OutputPipe::create(&stdout_path)?;
    let (mut stderr_pipe, stderr_writer) = OutputPipe::create(&stderr_path)?;
    let launch = Launch {
        invocation: &invocation,
        env: &spec.env,
        working_dir: &working_dir,
        stdin: stdin.as_deref(),
        stdout: stdout_writer,
        stderr: stderr_writer,
        // From the runner's own environment, never from `spec.env`.
        process_limit: ProcessLimit::from_environment()
            .for_user_process(pids::current_hard_limit()),
    };

    supervise::become_subreaper();
    let oom_kills_before = cgroup::oom_kill_count();
    let child = Supervised::spawn(launch)?;
    let cap = spec.output_cap_bytes();
    let mut stdout = OutputFollower::open(&stdout_path, cap)?;
    let mut stderr = OutputFollower::open(&stderr_path, cap)?;
    let stream = spec.stream;
    let mut pump_error = None;
    let outcome = child.wait(Duration::from_secs(spec.timeout_seconds.into()), || {
        let mut busy = false;
        for pipe in [&mut stdout_pipe, &mut stderr_pipe] {
            match pipe.pump(PUMP_BYTES_PER_TICK) {
                Ok(moved) => busy |= moved == PUMP_BYTES_PER_TICK,
                Err(error) => pump_error = pump_error.take().or(Some(error)),
            }
        }
        // A failed read here shows up again, and is reported, in `finish_at` below.
        let _ = stdout.poll(|data| {
            if stream {
                sink.emit_stdout(data)
            }
        });
        let _ = stderr.poll(|data| {
            if stream {
                sink.emit_stderr(data)
            }
        });
        busy
    })?;
    let oom_kills_after = cgroup::oom_kill_count();
    let read_error = |source| Error::Io {
        context: "reading captured output".into(),
        source,
    };
    if let Some(error) = pump_error {
        return Err(read_error(error));
    }
    // The output ends here: what background processes write from now on is not the run's.
    let stdout_end = stdout_pipe.snapshot_at_exit().map_err(read_error)?;
    let stderr_end = stderr_pipe.snapshot_at_exit().map_err(read_error)?;
    for pipe in [stdout_pipe, stderr_pipe] {
        if let Err(error) = pipe.hand_off() {
            // Only late output of background processes is lost (they get EPIPE).
            let _ = writeln!(std::io::stderr(), "kubexec-runner: {error}");
        }
    }
    let stdout = stdout
        .finish_at(stdout_end, |data| {
            if stream {
                sink.emit_stdout(data)
            }
        })
        .map_err(read_error)?;
    let stderr = stderr
        .finish_at(stderr_end, |data| {
            if stream {
                sink.emit_stderr(data)
            }
        })
        .map_err(read_error)?;

    result.exit_code = outcome.exit_code;
    result.stdout = stdout.text;
    result.stdout_bytes = stdout.total_bytes;
    result.stdout_truncated = stdout.truncated;
    result.stderr = stderr.text;
    result.stderr_bytes = stderr.total_bytes;
    result.stderr_truncated = stderr.truncated;
    result.execution_time_ms = whole_ms_rounded_up(outcome.wall_time);
    result.memory_used_bytes = outcome.usage.max_rss_bytes;
    result.cpu_time_ms = whole_ms_rounded_up(outcome.usage.cpu_time);
    result.timed_out = outcome.timed_out;
    // A shell that does not exec its last command reports that command's SIGKILL as 137.
    let sigkilled =
        outcome.killed_by == Some(libc::SIGKILL) || outcome.exit_code == 128 + libc::SIGKILL;
    result.oom_killed = cgroup::was_oom_killed(sigkilled, oom_kills_before, oom_kills_after);
    // The code's entry file is the runner's, not the run's: removed before the listing.
    drop(entry);
    let changed = tracker.finish(workspace.root(), crate::changed_files::MAX_LISTED);
    let (files, truncated) =
        crate::changed_files::merge(std::mem::take(&mut result.files_written), changed);
    result.files_written = files;
    result.files_written_truncated |= truncated;
    result.finished_at = now_unix_ms();
    Ok(result)
}

/// Any process that ran took some time; rounding down would report a misleading 0 for `true`.
fn whole_ms_rounded_up(duration: Duration) -> u64 {
    duration.as_micros().div_ceil(1000) as u64
}

/// Relative working dirs are taken relative to the workspace; absolute ones may be anywhere
/// (the sandbox, not the path, is the security boundary for what a process can touch).
fn resolve_working_dir(working_dir: Option<&str>, workspace: &Workspace) -> Result<PathBuf> {
    let path = match working_dir {
        None => workspace.root().to_path_buf(),
        Some(dir) if dir.starts_with('/') => PathBuf::from(dir),
        Some(dir) => workspace.root().join(dir),
    };
    if path.is_dir() {
        Ok(path)
    } else {
        Err(Error::WorkingDirMissing(path.display().to_string()))
    }
}

/// Removes code mode's entry file once the process is done with it.
struct EntryFile(PathBuf);

impl Drop for EntryFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn prepare_code(
    code: &str,
    working_dir: &Path,
    run_dir: &RunDir,
    run_id: &str,
) -> Result<(Invocation, Option<EntryFile>)> {
    write_atomically(&run_dir.code_path(), code.as_bytes(), 0o644)?;
    let entry = invocation::code_entry_path(working_dir, run_id);
    match write_atomically(&entry, code.as_bytes(), 0o644) {
        Ok(()) => Ok((invocation::bun(&entry), Some(EntryFile(entry)))),
        // A read-only working dir can still run code; only relative imports resolve against
        // the run directory instead.
        Err(_) => Ok((invocation::bun(&run_dir.code_path()), None)),
    }
}

/// Reports a run claimed by an earlier exec: its stored outcome, or, while its runner is still
/// alive, its live output followed by its outcome.
fn attach(
    run_dir: &RunDir,
    spec: &ExecSpec,
    sink: &mut EventSink<impl Write>,
) -> Result<ExecResult> {
    let mut followers: Option<(OutputFollower, OutputFollower)> = None;
    loop {
        match run_dir.status()? {
            RunStatus::Finished(mut result) => {
                if let Some((stdout, stderr)) = followers {
                    let _ = stdout.finish_at(result.stdout_bytes, |data| sink.emit_stdout(data));
                    let _ = stderr.finish_at(result.stderr_bytes, |data| sink.emit_stderr(data));
                }
                result.recovered = true;
                return Ok(result);
            }
            RunStatus::Failed(error) => return Err(Error::Recorded(error)),
            RunStatus::Lost | RunStatus::Unknown => return Err(Error::Lost(spec.run_id.clone())),
            RunStatus::Running { .. } => {
                if spec.stream && followers.is_none() {
                    let cap = spec.output_cap_bytes();
                    let stdout = OutputFollower::open(&run_dir.stdout_path(), cap);
                    let stderr = OutputFollower::open(&run_dir.stderr_path(), cap);
                    followers = stdout.ok().zip(stderr.ok());
                }
                if let Some((stdout, stderr)) = &mut followers {
                    let _ = stdout.poll(|data| sink.emit_stdout(data));
                    let _ = stderr.poll(|data| sink.emit_stderr(data));
                }
                std::thread::sleep(ATTACH_POLL_INTERVAL);
            }
        }
    }
}
