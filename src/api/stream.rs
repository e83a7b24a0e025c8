//! `POST /execute` with `stream: true`: Server-Sent Events.
//!
//! Once the Execution runs, the api execs `kubexec-runner follow <runId>` in the session's
//! Pod. The runner reads the run's output files in the workspace from the start and sends
//! them as framed `stdout`/`stderr` chunks, then the run's result once `result.json` exists.
//! The api forwards the chunks as events and closes with one `result` event built from the
//! Execution's final status, exactly as the non-streaming response. The operator is not in the
//! path of the output, so api and operator can be separate processes or replicas.
//!
//! A client that disconnects stops the follow exec and the watch; the Execution itself runs to
//! its end, and its result stays readable in its status and run directory.

use std::{convert::Infallible, future::Future, sync::Mutex, time::Duration};

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use kubexec_runner::protocol::RunnerEvent;

use crate::crd::Execution;
use serde_json::json;
use tokio::sync::mpsc;

use super::{
    errors::{ApiError, ApiResult},
    model::ExecuteResponse,
    outcome::{is_finished, is_started, outcome, outcome_label, SealedRun, Started},
    quota::StreamSlot,
    state::AppState,
};

/// How often an idle stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How far a client has read a run's output: byte offsets into its stdout and stderr. The id
/// of each `stdout`/`stderr` event is the offsets after it, `<stdout>-<stderr>`, so a client
/// that lost the stream resumes with `Last-Event-ID` at any api replica (the offsets index the
/// run's files in the workspace; no replica keeps state). The offsets count the bytes of the
/// text sent, which are the file's bytes for UTF-8 output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputOffsets {
    /// Bytes of stdout sent.
    pub stdout: u64,
    /// Bytes of stderr sent.
    pub stderr: u64,
}

impl OutputOffsets {
    /// Parses an event id.
    pub fn parse(id: &str) -> Option<Self> {
        let (stdout, stderr) = id.trim().split_once('-')?;
        Some(Self {
            stdout: stdout.parse().ok()?,
            stderr: stderr.parse().ok()?,
        })
    }

    fn advance(&mut self, stream: OutputStream, bytes: usize) {
        let bytes = bytes as u64;
        match stream {
            OutputStream::Stdout => self.stdout += bytes,
            OutputStream::Stderr => self.stderr += bytes,
        }
    }
}

impl std::fmt::Display for OutputOffsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.stdout, self.stderr)
    }
}

/// SSE output events, each with its offsets as its id.
pub struct SseSink {
    tx: mpsc::Sender<Event>,
    offsets: Mutex<OutputOffsets>,
}

impl SseSink {
    /// A sink that starts counting at `offsets`.
    pub fn new(tx: mpsc::Sender<Event>, offsets: OutputOffsets) -> Self {
        Self {
            tx,
            offsets: Mutex::new(offsets),
        }
    }
}

impl OutputSink for SseSink {
    async fn output(&self, stream: OutputStream, data: &str) -> bool {
        let id = {
            let mut offsets = self.offsets.lock().unwrap_or_else(|e| e.into_inner());
            offsets.advance(stream, data.len());
            offsets.to_string()
        };
        let event = Event::default()
            .id(id)
            .event(stream.as_str())
            .data(json!({ "data": data }).to_string());
        self.tx.send(event).await.is_ok()
    }
}

/// The SSE response for a started Execution.
pub fn execution_events(
    state: AppState,
    namespace: String,
    started: Started,
    slot: Option<StreamSlot>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        // The key's stream counts until the pump ends or the client goes.
        let _slot = slot;
        let name = started.name.clone();
        tokio::select! {
            () = tx.closed() => {
                tracing::info!(execution = %name, "stream client went away; the execution continues");
            }
            () = pump(&state, &namespace, &started, &tx) => {}
        }
    });
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// Which of a run's output streams a chunk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl OutputStream {
    /// `stdout` or `stderr`, as the SSE event names them.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// Where a followed run's live output goes: SSE events here, MCP progress notifications in
/// [`crate::api::mcp`].
pub trait OutputSink: Sync {
    /// Forwards one chunk; false once nobody listens any more.
    fn output(&self, stream: OutputStream, data: &str) -> impl Future<Output = bool> + Send;

    /// True when somebody reads the chunks (false: they are only counted past).
    fn live(&self) -> bool {
        true
    }
}

impl OutputSink for mpsc::Sender<Event> {
    async fn output(&self, stream: OutputStream, data: &str) -> bool {
        let event = Event::default()
            .event(stream.as_str())
            .data(json!({ "data": data }).to_string());
        self.send(event).await.is_ok()
    }
}

/// No live output: a plain answer has nobody to forward it to.
impl OutputSink for () {
    async fn output(&self, _stream: OutputStream, _data: &str) -> bool {
        true
    }

    fn live(&self) -> bool {
        false
    }
}

/// The `error` event of a stream that failed after it started.
pub fn error_event(error: &ApiError) -> Event {
    // Logged like any other error response; the body is the same shape.
    let body = error.body();
    if matches!(error, ApiError::Internal { .. }) {
        tracing::error!(error = %error, "stream failed");
    }
    Event::default()
        .event("error")
        .data(serde_json::to_string(&body).unwrap_or_default())
}

async fn pump(state: &AppState, namespace: &str, started: &Started, tx: &mpsc::Sender<Event>) {
    let sink = SseSink::new(tx.clone(), OutputOffsets::default());
    let result = follow_then_finish(state, namespace, started, &sink).await;
    state.metrics.execution(outcome_label(&result));
    let event = match result {
        Ok(response) => Event::default()
            .event("result")
            .data(serde_json::to_string(&response).unwrap_or_default()),
        Err(error) => error_event(&error),
    };
    let _ = tx.send(event).await;
}

/// Forwards a started Execution's live output to `sink` while it runs, then answers its result
/// exactly as the non-streaming response does ([`settle`]).
pub async fn follow_then_finish(
    state: &AppState,
    namespace: &str,
    started: &Started,
    sink: &impl OutputSink,
) -> ApiResult<ExecuteResponse> {
    if started.sealed.is_some() {
        return settle(state, started, sink).await;
    }
    // Without a key to verify the runner's result, the run id and Pod come from the Running
    // status, and the result from the final one.
    let running = started
        .wait(is_started)
        .await?
        .ok_or_else(|| ApiError::internal("stream", "execution deleted"))?;
    if !is_started(&running) {
        return Err(ApiError::ExecutionTimeout(started.result_timeout.as_secs()));
    }
    let run_id = running.metadata.uid.clone().unwrap_or_default();
    let pod = running
        .status
        .as_ref()
        .and_then(|s| s.pod_name.clone())
        .unwrap_or_else(|| started.pod.clone());
    // The follow ends with the run; the deadline only bounds a follow that does not.
    let followed = tokio::time::timeout(
        started.result_timeout,
        forward_output(
            state,
            namespace,
            &pod,
            &run_id,
            &started.name,
            OutputOffsets::default(),
            sink,
        ),
    )
    .await;
    if followed.is_err() {
        tracing::warn!(execution = %started.name, "following the run's output passed its deadline");
    }
    finished_status(started).await
}

/// How long a stream whose final status arrived first still forwards the output its follow
/// has left (the run has ended, so its follow ends within a poll or two).
const FOLLOW_GRACE: Duration = Duration::from_secs(2);

/// The answer of a started Execution. With a sealed run the api follows the run on its own
/// runner channel from the start (the run id is the uid the create returned), forwards its
/// output to `sink`, and answers with the runner's result as soon as it verifies: the
/// operator's final-status write and its watch event are then off the answer's path. The final
/// status answers instead whenever it comes first: a run refused before it started, a follow
/// that failed, a result that does not verify, or a Pod the follow did not find the run in.
pub async fn settle(
    state: &AppState,
    started: &Started,
    sink: &impl OutputSink,
) -> ApiResult<ExecuteResponse> {
    let direct = async {
        match &started.sealed {
            Some(sealed) => sealed_result(state, started, sealed, sink).await,
            None => None,
        }
    };
    tokio::pin!(direct);
    let status = started.wait(is_finished);
    tokio::pin!(status);
    let mut direct_done = false;
    let finished = loop {
        tokio::select! {
            response = &mut direct, if !direct_done => match response {
                Some(response) => {
                    started.charge.finished(std::time::Instant::now());
                    return Ok(response);
                }
                None => direct_done = true,
            },
            finished = &mut status => break finished,
        }
    };
    let ran = finished
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .and_then(|e| e.status.as_ref())
        .is_some_and(|s| s.exit_code.is_some());
    if ran && sink.live() && !direct_done {
        // The client reads the output live: let it have the end of it before the result.
        let _ = tokio::time::timeout(FOLLOW_GRACE, &mut direct).await;
    }
    answer_from_status(started, finished)
}

/// Follows a sealed run, forwarding its output; the response once its verified result comes.
async fn sealed_result(
    state: &AppState,
    started: &Started,
    sealed: &SealedRun,
    sink: &impl OutputSink,
) -> Option<ExecuteResponse> {
    let followed = state
        .cluster
        .follow(&started.namespace, &started.pod, &sealed.run_id)
        .await;
    let mut events = match followed {
        Ok(events) => events,
        Err(e) => {
            tracing::debug!(error = %e, execution = %started.name, "cannot follow the run; answering from the status");
            return None;
        }
    };
    while let Some(event) = events.next().await {
        let (stream, data) = match event {
            Ok(RunnerEvent::Stdout { data }) => (OutputStream::Stdout, data),
            Ok(RunnerEvent::Stderr { data }) => (OutputStream::Stderr, data),
            Ok(RunnerEvent::Result(result)) => {
                return sealed.answer(&result, &started.streamed_files)
            }
            // A run that failed without a result, or a follow that broke: the status says why.
            Ok(RunnerEvent::Error(_)) => return None,
            Err(e) => {
                tracing::debug!(error = %e, execution = %started.name, "following the run failed; answering from the status");
                return None;
            }
        };
        if !sink.output(stream, &data).await {
            return None;
        }
    }
    None
}

/// Waits for the final status and answers from it.
async fn finished_status(started: &Started) -> ApiResult<ExecuteResponse> {
    answer_from_status(started, started.wait(is_finished).await)
}

/// The answer a watched final status makes (an error when the wait ended without one).
fn answer_from_status(
    started: &Started,
    finished: ApiResult<Option<Execution>>,
) -> ApiResult<ExecuteResponse> {
    let finished = finished?;
    if finished.as_ref().is_none_or(is_finished) {
        started.charge.finished(std::time::Instant::now());
    }
    match finished {
        Some(execution) if is_finished(&execution) => outcome(&execution, &started.streamed_files),
        Some(_) => Err(ApiError::ExecutionTimeout(started.result_timeout.as_secs())),
        None => Err(ApiError::internal("stream", "execution deleted")),
    }
}

/// Forwards the run's output chunks as events until the run's result, an error, or a client
/// that went away.
pub async fn forward_output(
    state: &AppState,
    namespace: &str,
    pod: &str,
    run_id: &str,
    execution: &str,
    from: OutputOffsets,
    sink: &impl OutputSink,
) {
    let followed = if from == OutputOffsets::default() {
        state.cluster.follow(namespace, pod, run_id).await
    } else {
        state
            .cluster
            .follow_from(namespace, pod, run_id, from.stdout, from.stderr)
            .await
    };
    let mut events = match followed {
        Ok(events) => events,
        Err(e) => {
            tracing::warn!(error = %e, execution, "cannot follow the run's output; sending the result only");
            return;
        }
    };
    while let Some(event) = events.next().await {
        let (stream, data) = match event {
            Ok(RunnerEvent::Stdout { data }) => (OutputStream::Stdout, data),
            Ok(RunnerEvent::Stderr { data }) => (OutputStream::Stderr, data),
            Ok(RunnerEvent::Result(_) | RunnerEvent::Error(_)) => return,
            Err(e) => {
                // The final result still comes from the status; only live output is lost.
                tracing::warn!(error = %e, execution, "following the run's output failed");
                return;
            }
        };
        if !sink.output(stream, &data).await {
            return;
        }
    }
}
