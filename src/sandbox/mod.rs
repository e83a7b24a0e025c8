//! The exec client shared by the operator and the api: runs `kubexec-runner` in a session's
//! sandbox Pod through the `pods/exec` subresource (websocket) and speaks the runner protocol
//! (see [`kubexec_runner::protocol`]).
//!
//! - [`Sandbox::run_helper`] / [`Sandbox::helper_json`]: one-shot helpers (`ls`, `ps`, `kill`,
//!   `cat`, `result`, `write-files`): stdin written up front, stdout collected (bounded), exit
//!   code and stderr returned.
//! - [`Sandbox::start_framed`] / [`Sandbox::exec`]: a long-running `exec` whose stdout is a
//!   stream of framed [`RunnerEvent`]s, with stdin kept open.
//! - [`Sandbox::spawn`]: the raw [`Process`] underneath both, for callers that stream large
//!   stdin (e.g. `write-files` of big uploads) themselves.
//! - [`ChannelPool`] / [`Channel`]: many `exec` and `follow` requests over one long-lived
//!   `kubexec-runner serve` exec per sandbox (see [`channel`]).
//!
//! Stdin is never closed before the command ends. The runner's protocol never waits for EOF,
//! and on servers without the v5 exec protocol closing stdin closes the whole stream, which
//! would lose the output.

pub mod channel;
mod error;
mod exit;

use std::{future::Future, pin::Pin, time::Duration};

use futures::{FutureExt, Stream};
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Status};
use kube::{
    api::{AttachParams, AttachedProcess},
    Api,
};
use kubexec_runner::protocol::{
    ExecResult, ExecSpec, FrameDecoder, ResultKey, RunnerError, RunnerEvent, MAX_SPEC_FRAME_BYTES,
};
use serde::de::DeserializeOwned;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, ReadHalf, SimplexStream, WriteHalf},
    task::JoinHandle,
};
use tracing::warn;

pub use channel::{
    Channel, ChannelKey, ChannelMetrics, ChannelPool, ChannelRun, Connect, Connection, KubeConnect,
    PoolConfig,
};
pub use error::SandboxError;
pub use exit::exit_code;
/// The runner's wire types, re-exported for callers of this client.
pub use kubexec_runner::protocol;

use crate::layout::{RUNNER_PATH, SANDBOX_CONTAINER as CONTAINER};

/// How much stderr is kept (the rest is read and dropped, so the stream never stalls).
const MAX_STDERR: usize = 64 * 1024;
/// Buffer between the websocket task and our reader; larger than kube's 1 KiB default so
/// that big outputs do not ping-pong between tasks.
const PIPE_BUFFER: usize = 64 * 1024;
/// Once the exit status has arrived, the rest of stdout is already buffered and EOF follows
/// immediately; this only bounds the wait if the stream broke instead.
const AFTER_STATUS_GRACE: Duration = Duration::from_secs(2);

/// How long a one-shot helper (`ls`, `cat`, `ps`, `kill`, `result`) may take, from the exec
/// request to its exit. A helper that needs longer is reading something that never ends (a
/// FIFO, a device) or walking a huge tree; the caller gets
/// [`SandboxError::DeadlineExceeded`] instead of a request held open.
pub const HELPER_DEADLINE: Duration = Duration::from_secs(20);

/// The slowest rate a streamed transfer (`write-files` in, `cat` out) is allowed, on top of
/// [`HELPER_DEADLINE`]: see [`transfer_deadline`].
const TRANSFER_FLOOR_BYTES_PER_SEC: u64 = 1 << 20;

/// How long a streamed transfer of `bytes` may take from start to exit: the helper deadline
/// plus one second per MiB.
pub fn transfer_deadline(bytes: u64) -> Duration {
    HELPER_DEADLINE + Duration::from_secs(bytes / TRANSFER_FLOOR_BYTES_PER_SEC)
}

/// Runs `work`, or fails with [`SandboxError::DeadlineExceeded`] once `deadline` has passed.
pub async fn within<T>(
    deadline: Duration,
    work: impl Future<Output = Result<T, SandboxError>>,
) -> Result<T, SandboxError> {
    tokio::time::timeout(deadline, work)
        .await
        .unwrap_or(Err(SandboxError::DeadlineExceeded {
            after_secs: deadline.as_secs(),
        }))
}

/// One sandbox Pod, as a place to run `kubexec-runner` subcommands.
#[derive(Clone)]
pub struct Sandbox {
    pods: Api<Pod>,
    pod: String,
    container: &'static str,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("pod", &self.pod).finish()
    }
}

/// What a finished command left behind besides stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Exit code (0 on success).
    pub code: i32,
    /// Standard error, capped at 64 KiB.
    pub stderr: Vec<u8>,
}

/// The complete outcome of a helper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperOutput {
    /// Exit code (0 on success).
    pub exit_code: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error, capped at 64 KiB.
    pub stderr: Vec<u8>,
}

impl HelperOutput {
    /// Succeeds with the output on exit code 0. Otherwise the runner's error document on stderr
    /// becomes [`SandboxError::Runner`], or, without one, [`SandboxError::HelperFailed`].
    pub fn check(self) -> Result<Self, SandboxError> {
        if self.exit_code == 0 {
            return Ok(self);
        }
        let text = String::from_utf8_lossy(&self.stderr);
        match text
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<RunnerError>(line).ok())
        {
            Some(error) => Err(error.into()),
            None => Err(SandboxError::HelperFailed {
                exit_code: self.exit_code,
                stderr: text.trim().to_string(),
            }),
        }
    }

    /// [`check`](Self::check)s the exit, then parses stdout as the helper's JSON response.
    pub fn json<T: DeserializeOwned>(self) -> Result<T, SandboxError> {
        let output = self.check()?;
        // Every helper answers something: nothing at all is output lost on the way.
        if output.stdout.is_empty() {
            return Err(SandboxError::EmptyResponse);
        }
        serde_json::from_slice(&output.stdout)
            .map_err(|e| SandboxError::Protocol(format!("helper response: {e}")))
    }
}

impl Sandbox {
    /// The sandbox Pod `pod_name` in `namespace` (for a Session `s`, the Pod is
    /// [`crate::layout::pod_name`]`(s)`).
    pub fn new(client: kube::Client, namespace: &str, pod_name: &str) -> Self {
        Self {
            pods: Api::namespaced(client, namespace),
            pod: pod_name.to_string(),
            container: CONTAINER,
        }
    }

    /// The same Pod, with the runner in `container` instead of the sandbox container.
    pub fn in_container(mut self, container: &'static str) -> Self {
        self.container = container;
        self
    }

    /// The Pod's name.
    pub fn pod_name(&self) -> &str {
        &self.pod
    }

    /// Starts `kubexec-runner <args>`; attaches stdin only when `stdin` is true.
    pub async fn spawn(&self, args: &[&str], stdin: bool) -> Result<Process, SandboxError> {
        let command: Vec<String> = std::iter::once(RUNNER_PATH)
            .chain(args.iter().copied())
            .map(str::to_string)
            .collect();
        let params = AttachParams {
            container: Some(self.container.to_string()),
            stdin,
            stdout: true,
            stderr: true,
            tty: false,
            max_stdin_buf_size: Some(PIPE_BUFFER),
            max_stdout_buf_size: Some(PIPE_BUFFER),
            max_stderr_buf_size: Some(PIPE_BUFFER),
        };
        let attached = self
            .pods
            .exec(&self.pod, command, &params)
            .await
            .map_err(|source| match source {
                kube::Error::Api(status) if status.code == 404 => SandboxError::PodNotFound {
                    pod: self.pod.clone(),
                },
                source => SandboxError::Connect {
                    pod: self.pod.clone(),
                    source,
                },
            })?;
        Process::new(attached)
    }

    /// Runs a helper to the end, within [`HELPER_DEADLINE`]: writes `stdin` (if any) without
    /// closing it, collects at most `max_stdout` bytes of stdout ([`SandboxError::TooLarge`]
    /// beyond), stderr and the exit code. A non-zero exit is not an error here; see
    /// [`HelperOutput::check`].
    pub async fn run_helper(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
        max_stdout: usize,
    ) -> Result<HelperOutput, SandboxError> {
        within(HELPER_DEADLINE, async {
            let mut process = self.spawn(args, stdin.is_some()).await?;
            if let Some(input) = stdin {
                process.write_stdin(input).await?;
            }
            process.collect(max_stdout).await
        })
        .await
    }

    /// Runs a helper and parses its JSON response (see [`HelperOutput::json`]).
    pub async fn helper_json<T: DeserializeOwned>(
        &self,
        args: &[&str],
        stdin: Option<&[u8]>,
        max_stdout: usize,
    ) -> Result<T, SandboxError> {
        self.run_helper(args, stdin, max_stdout).await?.json()
    }

    /// Starts `kubexec-runner <args>` with stdin open and stdout decoded as framed events.
    pub async fn start_framed(&self, args: &[&str]) -> Result<FramedRun, SandboxError> {
        Ok(FramedRun {
            process: self.spawn(args, true).await?,
            decoder: FrameDecoder::new(),
            expected: None,
        })
    }

    /// Starts `kubexec-runner exec` and sends `spec`. Read the events from the returned run.
    /// Sending the same run ID again never runs it twice: the runner replays or attaches.
    /// [`FramedRun::result`] then accepts only a result for `spec.run_id`, sealed with
    /// `spec.result_key` when the spec has one.
    pub async fn exec(&self, spec: &ExecSpec) -> Result<FramedRun, SandboxError> {
        let frame = spec.to_frame();
        if frame.len() > MAX_SPEC_FRAME_BYTES {
            return Err(SandboxError::SpecTooLarge {
                size: frame.len(),
                limit: MAX_SPEC_FRAME_BYTES,
            });
        }
        let mut run = self.start_framed(&["exec"]).await?;
        run.expected = Some(Expected {
            run_id: spec.run_id.clone(),
            key: spec.result_key.clone(),
        });
        run.send(&frame).await?;
        Ok(run)
    }
}

type StatusFuture = Pin<Box<dyn Future<Output = Option<Status>> + Send>>;

/// A command running in the sandbox. Dropping it abandons the exec stream (the command itself
/// keeps running in the Pod until it ends on its own).
pub struct Process {
    // Kept for its Drop, which stops the websocket task.
    _attached: AttachedProcess,
    stdin: Option<WriteHalf<SimplexStream>>,
    stdout: ReadHalf<SimplexStream>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    status: Option<StatusFuture>,
    final_status: Option<Option<Status>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(task) = &self.stderr {
            task.abort();
        }
    }
}

impl Process {
    fn new(mut attached: AttachedProcess) -> Result<Self, SandboxError> {
        let missing = |what: &str| SandboxError::Protocol(format!("exec stream has no {what}"));
        let stdout = attached.stdout().ok_or_else(|| missing("stdout"))?;
        let stderr = attached.stderr().ok_or_else(|| missing("stderr"))?;
        let status = attached.take_status().ok_or_else(|| missing("status"))?;
        Ok(Self {
            stdin: attached.stdin(),
            stdout,
            stderr: Some(tokio::spawn(drain_capped(stderr, MAX_STDERR))),
            status: Some(status.boxed()),
            final_status: None,
            _attached: attached,
        })
    }

    /// Takes the command's stdin, for a caller that writes it from elsewhere (a channel's
    /// writer task); [`write_stdin`](Self::write_stdin) fails afterwards.
    pub fn take_stdin(&mut self) -> Option<WriteHalf<SimplexStream>> {
        self.stdin.take()
    }

    /// Writes to the command's stdin (and flushes). Fails if stdin was not attached or the
    /// stream ended.
    pub async fn write_stdin(&mut self, data: &[u8]) -> Result<(), SandboxError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(SandboxError::Protocol("stdin is not attached".into()));
        };
        let write = async {
            stdin.write_all(data).await?;
            stdin.flush().await
        };
        // A write into a stream whose websocket task has ended would wait forever.
        match &mut self.status {
            Some(status) => tokio::select! {
                written = write => written.map_err(SandboxError::Stream),
                ended = status => {
                    self.final_status = Some(ended);
                    self.status = None;
                    Err(SandboxError::StreamClosed)
                }
            },
            None => Err(SandboxError::StreamClosed),
        }
    }

    /// Reads stdout; 0 means the end (the command exited or the stream broke).
    pub async fn read_stdout(&mut self, buf: &mut [u8]) -> Result<usize, SandboxError> {
        if let Some(status) = &mut self.status {
            tokio::select! {
                biased;
                read = self.stdout.read(buf) => return read.map_err(SandboxError::Stream),
                ended = status => {
                    self.final_status = Some(ended);
                    self.status = None;
                }
            }
        }
        // The exit status is in: whatever output preceded it is buffered, and EOF follows.
        match tokio::time::timeout(AFTER_STATUS_GRACE, self.stdout.read(buf)).await {
            Ok(read) => read.map_err(SandboxError::Stream),
            Err(_) => Ok(0),
        }
    }

    /// Reads stdout to its end (at most `max_stdout` bytes), then waits for the exit.
    pub async fn collect(mut self, max_stdout: usize) -> Result<HelperOutput, SandboxError> {
        let mut stdout = Vec::new();
        let mut chunk = vec![0; PIPE_BUFFER];
        loop {
            let n = self.read_stdout(&mut chunk).await?;
            if n == 0 {
                break;
            }
            if stdout.len() + n > max_stdout {
                return Err(SandboxError::TooLarge { limit: max_stdout });
            }
            stdout.extend_from_slice(&chunk[..n]);
        }
        let exit = self.wait().await?;
        Ok(HelperOutput {
            exit_code: exit.code,
            stdout,
            stderr: exit.stderr,
        })
    }

    /// Stdout as a stream of chunks, in constant memory. After the last chunk, a command that
    /// exited non-zero ends the stream with its error (see [`HelperOutput::check`]).
    pub fn into_stdout_stream(
        self,
    ) -> impl Stream<Item = Result<bytes::Bytes, SandboxError>> + Send + 'static {
        futures::stream::unfold(Some(self), |process| async move {
            let mut process = process?;
            let mut chunk = vec![0; PIPE_BUFFER];
            match process.read_stdout(&mut chunk).await {
                Ok(0) => {
                    let ended = process.wait().await.and_then(|exit| {
                        HelperOutput {
                            exit_code: exit.code,
                            stdout: Vec::new(),
                            stderr: exit.stderr,
                        }
                        .check()
                    });
                    ended.err().map(|error| (Err(error), None))
                }
                Ok(n) => {
                    chunk.truncate(n);
                    Some((Ok(bytes::Bytes::from(chunk)), Some(process)))
                }
                Err(error) => Some((Err(error), None)),
            }
        })
    }

    /// Waits for the command to end (discarding unread stdout) and returns its exit.
    pub async fn wait(mut self) -> Result<Exit, SandboxError> {
        let mut scratch = vec![0; PIPE_BUFFER];
        while self.read_stdout(&mut scratch).await? > 0 {}
        let status = match self.final_status.take() {
            Some(status) => status,
            None => match self.status.take() {
                Some(status) => status.await,
                None => None,
            },
        };
        let stderr = match self.stderr.take() {
            Some(task) => {
                let abort = task.abort_handle();
                match tokio::time::timeout(AFTER_STATUS_GRACE, task).await {
                    Ok(Ok(stderr)) => stderr,
                    _ => {
                        abort.abort();
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        };
        Ok(Exit {
            code: exit_code(status.as_ref())?,
            stderr,
        })
    }
}

async fn drain_capped(mut reader: ReadHalf<SimplexStream>, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut chunk = vec![0; 8192];
    while let Ok(n) = reader.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
    kept
}

/// A runner command whose stdout is framed [`RunnerEvent`]s (`exec`).
pub struct FramedRun {
    process: Process,
    decoder: FrameDecoder,
    expected: Option<Expected>,
}

/// What the result of an `exec` must show to be accepted.
struct Expected {
    run_id: String,
    key: Option<ResultKey>,
}

impl Expected {
    /// Why `result` is not the runner's result for this run, if it is not.
    fn reject(&self, result: &ExecResult) -> Option<String> {
        if result.run_id != self.run_id {
            return Some(format!(
                "it is for run {:?}, not {:?}",
                result.run_id, self.run_id
            ));
        }
        match &self.key {
            Some(key) if !key.verify(result) => Some(format!(
                "its MAC does not verify under run {}'s key (the stored result was rewritten, or the frame forged)",
                self.run_id
            )),
            _ => None,
        }
    }
}

impl FramedRun {
    /// Writes bytes (e.g. a frame) to the runner's stdin, which stays open.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), SandboxError> {
        self.process.write_stdin(bytes).await
    }

    /// The next event, or `None` once stdout has ended. Frames that are not valid events are
    /// logged and skipped; a stream that ends inside a frame is a protocol error.
    pub async fn next_event(&mut self) -> Result<Option<RunnerEvent>, SandboxError> {
        let mut chunk = vec![0; PIPE_BUFFER];
        loop {
            if let Some(event) = self.decoder.next_event() {
                match event {
                    Ok(event) => return Ok(Some(event)),
                    Err(error) => {
                        warn!(%error, "skipping a runner frame that is not an event");
                        continue;
                    }
                }
            }
            let n = self.process.read_stdout(&mut chunk).await?;
            if n == 0 {
                return match self.decoder.buffered_bytes() {
                    0 => Ok(None),
                    cut => Err(SandboxError::Protocol(format!(
                        "the runner's output ended inside a frame ({cut} bytes)"
                    ))),
                };
            }
            self.decoder.push(&chunk[..n]);
        }
    }

    /// The events as a stream (ends after stdout ends).
    pub fn into_events(self) -> impl Stream<Item = Result<RunnerEvent, SandboxError>> + Send {
        event_stream(self)
    }

    /// Reads events until the `result` (returned) or an `error` (as [`SandboxError::Runner`]),
    /// handing each output chunk to `on_output`. For an [`exec`](Sandbox::exec), a result that
    /// is not for the spec's run or not sealed with its key is skipped (the runner's own may
    /// follow); if none follows, the answer is [`SandboxError::ResultRejected`]. A stream that
    /// ends first is [`SandboxError::StreamClosed`] when no exit status came, else a protocol
    /// error.
    pub async fn result(
        mut self,
        on_output: impl FnMut(&RunnerEvent) + Send,
    ) -> Result<ExecResult, SandboxError> {
        let expected = self.expected.take();
        match read_result(&mut self, expected.as_ref(), on_output).await? {
            Ok(result) => Ok(result),
            Err(Some(why)) => Err(SandboxError::ResultRejected(why)),
            Err(None) => {
                let exit = self.wait().await?;
                Err(SandboxError::Protocol(format!(
                    "the runner exited with {} without a result: {}",
                    exit.code,
                    String::from_utf8_lossy(&exit.stderr).trim()
                )))
            }
        }
    }

    /// Waits for the runner to exit (discarding unread events).
    pub async fn wait(self) -> Result<Exit, SandboxError> {
        self.process.wait().await
    }
}

impl EventSource for FramedRun {
    fn next_event(
        &mut self,
    ) -> impl Future<Output = Result<Option<RunnerEvent>, SandboxError>> + Send {
        FramedRun::next_event(self)
    }
}

/// Where [`read_result`] reads events from: a one-shot exec or a channel request.
trait EventSource {
    fn next_event(
        &mut self,
    ) -> impl Future<Output = Result<Option<RunnerEvent>, SandboxError>> + Send;
}

/// A source's events as a stream, ending after its last event or its first error.
fn event_stream<S: EventSource + Send>(
    source: S,
) -> impl Stream<Item = Result<RunnerEvent, SandboxError>> + Send {
    futures::stream::unfold(Some(source), |source| async move {
        let mut source = source?;
        match source.next_event().await {
            Ok(Some(event)) => Some((Ok(event), Some(source))),
            Ok(None) => None,
            Err(error) => Some((Err(error), None)),
        }
    })
}

/// Reads events until the result or an error event. `Ok(Err(why))` when the events ended
/// first: `why` says why the last result seen was rejected, if one was.
async fn read_result<S: EventSource + Send>(
    source: &mut S,
    expected: Option<&Expected>,
    mut on_output: impl FnMut(&RunnerEvent) + Send,
) -> Result<Result<ExecResult, Option<String>>, SandboxError> {
    let mut rejected: Option<String> = None;
    loop {
        match source.next_event().await? {
            Some(RunnerEvent::Result(result)) => match expected.and_then(|e| e.reject(&result)) {
                None => return Ok(Ok(result)),
                Some(why) => {
                    warn!(%why, "skipping a result that is not the runner's");
                    rejected = Some(why);
                }
            },
            Some(RunnerEvent::Error(error)) => return Err(error.into()),
            Some(output) => on_output(&output),
            None => return Ok(Err(rejected)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubexec_runner::protocol::ErrorCode;

    #[test]
    fn helper_output_checks_the_exit() {
        let ok = HelperOutput {
            exit_code: 0,
            stdout: br#"{"processes":[]}"#.to_vec(),
            stderr: Vec::new(),
        };
        let list: kubexec_runner::protocol::ProcessList = ok.json().expect("parses");
        assert!(list.processes.is_empty());

        let runner_error = HelperOutput {
            exit_code: 1,
            stdout: Vec::new(),
            stderr: b"warning: noise\n{\"code\":\"NotFound\",\"message\":\"no such file\"}\n"
                .to_vec(),
        };
        assert!(matches!(
            runner_error.check(),
            Err(SandboxError::Runner { code: ErrorCode::NotFound, message }) if message == "no such file"
        ));

        let crashed = HelperOutput {
            exit_code: 127,
            stdout: Vec::new(),
            stderr: b"sh: not found\n".to_vec(),
        };
        assert!(matches!(
            crashed.check(),
            Err(SandboxError::HelperFailed { exit_code: 127, stderr }) if stderr == "sh: not found"
        ));
    }

    #[test]
    fn only_the_asked_for_run_sealed_with_its_key_is_accepted() {
        let key = ResultKey::from_bytes([3; 32]);
        let expected = Expected {
            run_id: "run-1".into(),
            key: Some(key.clone()),
        };
        let mut sealed = ExecResult {
            run_id: "run-1".into(),
            exit_code: 7,
            ..Default::default()
        };
        key.seal(&mut sealed);
        assert_eq!(expected.reject(&sealed), None);

        let mut forged = sealed.clone();
        forged.exit_code = 0;
        assert!(expected
            .reject(&forged)
            .is_some_and(|why| why.contains("MAC")));
        let mut other_run = ExecResult {
            run_id: "run-2".into(),
            ..Default::default()
        };
        key.seal(&mut other_run);
        assert!(expected
            .reject(&other_run)
            .is_some_and(|why| why.contains("run-2")));
        let unsealed = ExecResult {
            run_id: "run-1".into(),
            ..Default::default()
        };
        assert!(expected.reject(&unsealed).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_helper_that_never_ends_meets_its_deadline() {
        let never = within(HELPER_DEADLINE, futures::future::pending::<Result<(), _>>());
        assert!(matches!(
            never.await,
            Err(SandboxError::DeadlineExceeded { after_secs: 20 })
        ));
        assert_eq!(transfer_deadline(0), HELPER_DEADLINE);
        assert_eq!(
            transfer_deadline(64 << 20),
            HELPER_DEADLINE + Duration::from_secs(64)
        );
    }

    #[tokio::test]
    async fn stderr_is_drained_but_capped() {
        let (reader, mut writer) = tokio::io::simplex(16);
        let drained = tokio::spawn(drain_capped(reader, 10));
        writer.write_all(&[b'x'; 100]).await.expect("writes");
        writer.shutdown().await.expect("closes");
        assert_eq!(drained.await.expect("joins"), vec![b'x'; 10]);
    }
}
