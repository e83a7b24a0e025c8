//! `kubexec-runner serve`: one long-lived exec stream that carries many `exec` and `follow`
//! requests (the wire format is in [`crate::protocol::ChannelRequest`]'s module).
//!
//! Every request runs in a runner process of its own, spawned from this binary: an `exec` as
//! `kubexec-runner serve-exec` (the one-shot `exec`, plus a ready frame), in its own session,
//! so that it outlives this process. If the channel breaks mid-run, the run goes on, stores
//! its sealed outcome, and a re-sent spec attaches to it through the claim, as with a broken
//! one-shot exec. A `follow` runs `kubexec-runner follow`.
//!
//! Threads: the calling thread reads requests; one thread per request relays its process's
//! framed events, tagged with the request id, to the shared stdout, at most a window ahead of
//! the client's credit.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::protocol::{
    read_frame, validate_run_id, write_frame, ChannelOp, ChannelReply, ChannelRequest,
    ChannelResponse, ErrorCode, ExecSpec, RunnerError, RunnerEvent, CHANNEL_VERSION,
    CHANNEL_WINDOW, DEFAULT_FOLLOW_WAIT_SECONDS, MAX_CHANNEL_REQUESTS, MAX_FRAME_BYTES,
    MAX_REQUEST_FRAME_BYTES,
};
use crate::sink::EventSink;

/// The internal command a channel's `exec` request runs as.
pub const SERVE_EXEC_COMMAND: &str = "serve-exec";
/// A serve process with nothing in flight exits after this long without a request, or at once
/// once its stdout is gone: a client that vanished without closing the stream (the container
/// runtime kept stdin open) leaves no process behind for long. Clients close idle channels
/// much sooner; one that finds its channel gone opens another.
const ABANDONED_AFTER: Duration = Duration::from_secs(30 * 60);
const WATCHDOG_EVERY: Duration = Duration::from_secs(10);

/// `kubexec-runner serve-exec`: `exec`, after an empty frame that says this process is no
/// longer dumpable (the CLI made it so before anything else). The serve process sends the
/// spec, and with it the result key, only after that frame: until then, a freshly exec'd
/// process's stdin pipe could still be opened through `/proc` by code of the same uid.
pub fn serve_exec() -> Result<()> {
    let mut stdout = io::stdout().lock();
    write_frame(&mut stdout, b"").map_err(|source| Error::Io {
        context: "writing the ready frame".into(),
        source,
    })?;
    let mut stdin = BufReader::new(io::stdin().lock());
    let mut sink = EventSink::new(stdout);
    crate::exec::run(&mut stdin, &mut sink)
}

/// This binary, by its real path: a process started as `/proc/self/exe` would be named `exe`,
/// and `ps` tells runner processes apart by their name when their `exe` link is hidden.
pub fn own_binary() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into())
}

/// Serves requests from `input` until it ends, writing replies to `output`. `runner` is the
/// binary each request runs in ([`own_binary`] in production).
pub fn serve<W: Write + Send + 'static>(
    input: &mut impl BufRead,
    output: W,
    runner: PathBuf,
) -> Result<()> {
    let shared = Arc::new(Shared {
        out: Mutex::new(Out {
            writer: output,
            broken: false,
        }),
        requests: Mutex::new(HashMap::new()),
        runner,
        last_request: Mutex::new(Instant::now()),
    });
    let watched = Arc::downgrade(&shared);
    let _ = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(WATCHDOG_EVERY);
            let Some(shared) = watched.upgrade() else {
                return;
            };
            if shared.abandoned() {
                // Runs in flight are in processes of their own and go on.
                std::process::exit(0);
            }
        });
    shared.reply(
        0,
        ChannelReply::Hello {
            version: CHANNEL_VERSION,
            window: CHANNEL_WINDOW,
            max_requests: MAX_CHANNEL_REQUESTS,
        },
    );
    loop {
        let at_end = input
            .fill_buf()
            .map(|buf| buf.is_empty())
            .map_err(|source| Error::Io {
                context: "reading a request".into(),
                source,
            })?;
        if at_end {
            // The client closed the channel. Runs in flight go on in their own processes.
            return Ok(());
        }
        let payload = read_frame(input, MAX_REQUEST_FRAME_BYTES)?;
        *lock(&shared.last_request) = Instant::now();
        match serde_json::from_slice::<ChannelRequest>(&payload) {
            Ok(request) => shared.handle(request),
            Err(error) => {
                // The id, if there is one, gets the refusal; the channel stays usable.
                let id = serde_json::from_slice::<serde_json::Value>(&payload)
                    .ok()
                    .and_then(|v| v.get("id").and_then(serde_json::Value::as_u64));
                if let Some(id) = id {
                    shared.refuse(id, ErrorCode::InvalidSpec, format!("bad request: {error}"));
                }
            }
        }
    }
}

struct Out<W> {
    writer: W,
    broken: bool,
}

struct Shared<W> {
    out: Mutex<Out<W>>,
    requests: Mutex<HashMap<u64, Arc<Request>>>,
    runner: PathBuf,
    last_request: Mutex<Instant>,
}

/// The flow-control state of one request.
#[derive(Default)]
struct Request {
    flow: Mutex<Flow>,
    changed: Condvar,
}

#[derive(Default)]
struct Flow {
    credit: u32,
    /// The client stopped reading: events are read and dropped (an exec must never block on
    /// its stdout), and a follow is stopped.
    cancelled: bool,
    /// The process to stop on cancel (a follow), while it is not reaped.
    stop_pid: Option<i32>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

enum Job {
    Exec(Box<ExecSpec>),
    Follow {
        run_id: String,
        wait_seconds: u32,
        stdout_offset: u64,
        stderr_offset: u64,
    },
}

impl<W: Write + Send + 'static> Shared<W> {
    /// Nothing in flight, and nobody reading or nothing asked for a long time.
    fn abandoned(&self) -> bool {
        lock(&self.requests).is_empty()
            && (lock(&self.out).broken || lock(&self.last_request).elapsed() >= ABANDONED_AFTER)
    }

    fn reply(&self, id: u64, reply: ChannelReply) {
        let mut out = lock(&self.out);
        if out.broken {
            return;
        }
        let frame = ChannelResponse { id, reply }.to_frame();
        let written = out
            .writer
            .write_all(&frame)
            .and_then(|()| out.writer.flush());
        if written.is_err() {
            out.broken = true;
            drop(out);
            // Nobody reads any more: every relay drains its process from now on.
            for request in lock(&self.requests).values() {
                request.cancel();
            }
        }
    }

    fn refuse(&self, id: u64, code: ErrorCode, message: String) {
        self.reply(
            id,
            ChannelReply::Refused {
                error: RunnerError { code, message },
            },
        );
    }

    fn handle(self: &Arc<Self>, request: ChannelRequest) {
        let id = request.id;
        let job = match request.op {
            ChannelOp::Ping => return self.reply(id, ChannelReply::Pong),
            ChannelOp::Credit { frames } => {
                if let Some(request) = lock(&self.requests).get(&id) {
                    request.grant(frames);
                }
                return;
            }
            ChannelOp::Cancel => {
                if let Some(request) = lock(&self.requests).get(&id) {
                    request.cancel();
                }
                return;
            }
            ChannelOp::Exec { spec } => match spec.validate() {
                Ok(()) => Job::Exec(spec),
                Err(error) => return self.refuse(id, error.code(), error.to_string()),
            },
            ChannelOp::Follow {
                run_id,
                wait_seconds,
                stdout_offset,
                stderr_offset,
            } => match validate_run_id(&run_id) {
                Ok(()) => Job::Follow {
                    run_id,
                    wait_seconds: wait_seconds.unwrap_or(DEFAULT_FOLLOW_WAIT_SECONDS),
                    stdout_offset,
                    stderr_offset,
                },
                Err(error) => return self.refuse(id, error.code(), error.to_string()),
            },
        };
        let state = {
            let mut requests = lock(&self.requests);
            if id == 0 || requests.contains_key(&id) {
                drop(requests);
                return self.refuse(id, ErrorCode::Usage, format!("request id {id} is in use"));
            }
            if requests.len() >= MAX_CHANNEL_REQUESTS {
                drop(requests);
                return self.refuse(
                    id,
                    ErrorCode::LimitExceeded,
                    format!("this channel runs at most {MAX_CHANNEL_REQUESTS} requests at once"),
                );
            }
            let state = Arc::new(Request::default());
            lock(&state.flow).credit = CHANNEL_WINDOW;
            requests.insert(id, state.clone());
            state
        };
        if lock(&self.out).broken {
            // Nobody reads replies any more: the request still runs, its events are dropped.
            state.cancel();
        }
        let shared = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("request-{id}"))
            .spawn({
                let state = state.clone();
                move || shared.relay(id, &state, job)
            });
        if let Err(source) = spawned {
            lock(&self.requests).remove(&id);
            let error = Error::Io {
                context: "starting a request thread".into(),
                source,
            };
            self.refuse(id, error.code(), error.to_string());
        }
    }

    /// Runs one request to its end and says so.
    fn relay(&self, id: u64, state: &Request, job: Job) {
        if let Err(error) = self.run_job(id, state, job) {
            self.reply(
                id,
                ChannelReply::Event {
                    event: RunnerEvent::Error(error.to_wire()),
                },
            );
        }
        lock(&self.requests).remove(&id);
        self.reply(id, ChannelReply::End);
    }

    fn run_job(&self, id: u64, state: &Request, job: Job) -> Result<()> {
        let mut command = Command::new(&self.runner);
        let spec_frame = match &job {
            Job::Exec(spec) => {
                command.arg(SERVE_EXEC_COMMAND).stdin(Stdio::piped());
                Some(spec.to_frame())
            }
            Job::Follow {
                run_id,
                wait_seconds,
                stdout_offset,
                stderr_offset,
            } => {
                command
                    .args(["follow", run_id, "--wait-seconds"])
                    .arg(wait_seconds.to_string())
                    .stdin(Stdio::null());
                if *stdout_offset > 0 || *stderr_offset > 0 {
                    command
                        .arg("--stdout-offset")
                        .arg(stdout_offset.to_string())
                        .arg("--stderr-offset")
                        .arg(stderr_offset.to_string());
                }
                None
            }
        };
        // Not this process's stdout or stderr: those are the exec stream, which would then
        // stay open (and the client waiting) for as long as the run.
        command.stdout(Stdio::piped()).stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                // Its own session: no signal for this process's group reaches the run.
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|source| Error::SpawnFailed {
            program: self.runner.display().to_string(),
            source,
        })?;
        if spec_frame.is_none() {
            lock(&state.flow).stop_pid = Some(child.id() as i32);
        }
        let relayed = self.relay_events(id, state, &mut child, spec_frame);
        lock(&state.flow).stop_pid = None;
        // Reaped here, so the pid above was never reused while it could be signalled.
        let _ = child.wait();
        relayed
    }

    fn relay_events(
        &self,
        id: u64,
        state: &Request,
        child: &mut Child,
        spec_frame: Option<Vec<u8>>,
    ) -> Result<()> {
        let io_error = |context: &str| {
            let context = context.to_string();
            move |source| Error::Io { context, source }
        };
        let stdout = child.stdout.take().ok_or_else(|| Error::Io {
            context: "the request's process".into(),
            source: io::Error::other("no stdout pipe"),
        })?;
        let mut events = BufReader::new(stdout);
        if let Some(frame) = spec_frame {
            // The ready frame first: the process is non-dumpable before the key reaches it.
            let ready = read_frame(&mut events, 0)?;
            debug_assert!(ready.is_empty());
            let mut stdin = child.stdin.take().ok_or_else(|| Error::Io {
                context: "the request's process".into(),
                source: io::Error::other("no stdin pipe"),
            })?;
            stdin
                .write_all(&frame)
                .and_then(|()| stdin.flush())
                .map_err(io_error("sending the spec"))?;
            // Closed: the spec is one frame and the runner never waits for more.
        }
        loop {
            let at_end = events
                .fill_buf()
                .map(|buf| buf.is_empty())
                .map_err(io_error("reading the request's events"))?;
            if at_end {
                // Without a result or error the client retries with the same run id, which
                // attaches; the same as a one-shot exec that ended early.
                return Ok(());
            }
            let payload = read_frame(&mut events, MAX_FRAME_BYTES)?;
            let Ok(event) = serde_json::from_slice::<RunnerEvent>(&payload) else {
                continue;
            };
            if state.take_credit() {
                self.reply(id, ChannelReply::Event { event });
            }
        }
    }
}

impl Request {
    fn grant(&self, frames: u32) {
        let mut flow = lock(&self.flow);
        // Never more than a window ahead, whatever a client grants.
        flow.credit = flow.credit.saturating_add(frames).min(CHANNEL_WINDOW);
        self.changed.notify_all();
    }

    fn cancel(&self) {
        let mut flow = lock(&self.flow);
        flow.cancelled = true;
        if let Some(pid) = flow.stop_pid.take() {
            // SAFETY: kill takes plain integers; the pid is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        self.changed.notify_all();
    }

    /// Waits for credit and takes one; false when the event is to be dropped (cancelled).
    fn take_credit(&self) -> bool {
        let mut flow = lock(&self.flow);
        while flow.credit == 0 && !flow.cancelled {
            flow = self.changed.wait(flow).unwrap_or_else(|e| e.into_inner());
        }
        if flow.cancelled {
            return false;
        }
        flow.credit -= 1;
        true
    }
}
