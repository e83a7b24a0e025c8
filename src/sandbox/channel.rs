//! Long-lived runner channels: one `kubexec-runner serve` exec per sandbox that carries many
//! `exec` and `follow` requests (protocol: [`kubexec_runner::protocol::ChannelRequest`]).
//!
//! A fresh exec costs a TLS connection to the apiserver, a websocket upgrade, the kubelet's
//! stream and a `runc exec`; a request on an open channel costs two frames. [`ChannelPool`]
//! keeps at most one channel per sandbox container: opened on first use, closed when idle,
//! reopened after a failure.
//!
//! A channel that breaks fails its requests in flight with [`SandboxError::StreamClosed`], the
//! same error a broken one-shot exec gives. Callers retry with the same run id, which attaches
//! to the run through the runner's claim: the run itself lives in its own runner process and
//! does not depend on the channel.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, Weak,
    },
    time::Duration,
};

use bytes::Bytes;
use futures::{future::BoxFuture, stream::BoxStream, FutureExt, Stream, StreamExt};
use kubexec_runner::protocol::{
    ChannelDecoder, ChannelOp, ChannelReply, ChannelRequest, ErrorCode, ExecResult, ExecSpec,
    RunnerEvent, CHANNEL_VERSION, CHANNEL_WINDOW, MAX_CHANNEL_REQUESTS, MAX_SPEC_FRAME_BYTES,
};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    sync::{mpsc, OwnedSemaphorePermit, Semaphore},
    task::AbortHandle,
    time::Instant,
};
use tracing::{info, warn};

use super::{read_result, within, EventSource, Expected, Sandbox, SandboxError};

/// How long opening a channel may take: the exec, then the runner's hello.
pub const OPEN_DEADLINE: Duration = Duration::from_secs(15);
/// Default idle time after which a channel is closed.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(120);
/// Default most channels a pool keeps open.
pub const DEFAULT_MAX_CHANNELS: usize = 512;
/// After a sandbox failed to speak the channel protocol (a runner from before it), that
/// sandbox is served by one-shot execs for this long before a channel is tried again.
const UNSUPPORTED_BACKOFF: Duration = Duration::from_secs(60);
/// Frames waiting to be written to one channel.
const WRITE_QUEUE: usize = 64;

/// Which sandbox container a channel goes to.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ChannelKey {
    /// Namespace of the Pod.
    pub namespace: String,
    /// Name of the Pod.
    pub pod: String,
    /// The Pod's UID when known: a Pod recreated under the same name gets a channel of its own.
    pub pod_uid: Option<String>,
    /// The container the runner runs in.
    pub container: &'static str,
}

/// The two ends of a `serve` process: its stdin, and its stdout as chunks.
pub struct Connection {
    /// The runner's stdin.
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    /// The runner's stdout; ends when the exec stream ends.
    pub output: BoxStream<'static, Result<Bytes, SandboxError>>,
}

/// Starts `kubexec-runner serve` in a sandbox (a trait, so the pool is tested without a cluster).
pub trait Connect: Send + Sync + 'static {
    /// Starts the serve process of `key`'s sandbox.
    fn connect(&self, key: &ChannelKey) -> BoxFuture<'static, Result<Connection, SandboxError>>;
}

/// [`Connect`] through the `pods/exec` subresource.
pub struct KubeConnect(pub kube::Client);

impl Connect for KubeConnect {
    fn connect(&self, key: &ChannelKey) -> BoxFuture<'static, Result<Connection, SandboxError>> {
        let sandbox =
            Sandbox::new(self.0.clone(), &key.namespace, &key.pod).in_container(key.container);
        async move {
            let mut process = sandbox.spawn(&["serve"], true).await?;
            let input = process
                .take_stdin()
                .ok_or_else(|| SandboxError::Protocol("exec stream has no stdin".into()))?;
            Ok(Connection {
                input: Box::pin(input),
                output: process.into_stdout_stream().boxed(),
            })
        }
        .boxed()
    }
}

/// The pool's counters, for the owner's metrics registry.
#[derive(Clone, Debug, Default)]
pub struct ChannelMetrics {
    /// Channels open now.
    pub open: Gauge,
    /// Channels opened since start.
    pub opens: Counter,
}

/// What a channel hands its requests.
enum Incoming {
    Event(RunnerEvent),
    End,
    Refused(SandboxError),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One open channel. Cheap to clone; every clone is the same channel.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<ChannelInner>,
}

struct ChannelInner {
    writes: mpsc::Sender<Vec<u8>>,
    /// Requests in flight; `None` once the channel is closed (nothing may be added then).
    requests: Mutex<Option<HashMap<u64, mpsc::Sender<Incoming>>>>,
    next_id: AtomicU64,
    permits: Arc<Semaphore>,
    window: u32,
    last_used: Mutex<Instant>,
    closed: AtomicBool,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl ChannelInner {
    /// Closes the channel: every request in flight ends with [`SandboxError::StreamClosed`].
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        lock(&self.requests).take();
        self.permits.close();
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }

    fn deliver(&self, id: u64, incoming: Incoming) {
        let last = !matches!(incoming, Incoming::Event(_));
        let mut requests = lock(&self.requests);
        let Some(map) = requests.as_mut() else { return };
        let Some(sender) = map.get(&id) else { return };
        // The runner sends at most a window beyond the credit, so this never fills up; if it
        // does, the runner broke the protocol and the request fails instead of buffering more.
        if sender.try_send(incoming).is_err() || last {
            map.remove(&id);
        }
    }
}

/// Decrements the open gauge when the channel's reader ends, however it ends.
struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Channel {
    /// Waits for the runner's hello on `connection`, then starts the channel's reader and writer.
    pub async fn start(
        connection: Connection,
        metrics: &ChannelMetrics,
    ) -> Result<Channel, SandboxError> {
        let Connection {
            mut input,
            mut output,
        } = connection;
        let mut decoder = ChannelDecoder::new();
        let hello =
            within(OPEN_DEADLINE, async {
                loop {
                    if let Some(response) = decoder.next_response() {
                        return response.map_err(|e| SandboxError::Protocol(format!("hello: {e}")));
                    }
                    match output.next().await {
                        Some(chunk) => decoder.push(&chunk?),
                        None => return Err(SandboxError::Protocol(
                            "the runner ended without a channel hello (a runner without `serve`?)"
                                .into(),
                        )),
                    }
                }
            })
            .await?;
        let window = match hello.reply {
            ChannelReply::Hello {
                version: CHANNEL_VERSION,
                window,
                ..
            } if hello.id == 0 && (1..=CHANNEL_WINDOW).contains(&window) => window,
            other => {
                return Err(SandboxError::Protocol(format!(
                    "unexpected channel hello {other:?}"
                )))
            }
        };
        let (writes, mut to_write) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let inner = Arc::new(ChannelInner {
            writes,
            requests: Mutex::new(Some(HashMap::new())),
            next_id: AtomicU64::new(1),
            permits: Arc::new(Semaphore::new(MAX_CHANNEL_REQUESTS)),
            window,
            last_used: Mutex::new(Instant::now()),
            closed: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
        });
        metrics.open.inc();
        let guard = OpenGuard(metrics.open.clone());
        let weak = Arc::downgrade(&inner);
        let writer = tokio::spawn({
            let weak = weak.clone();
            async move {
                while let Some(frame) = to_write.recv().await {
                    let written = async {
                        input.write_all(&frame).await?;
                        input.flush().await
                    };
                    if let Err(error) = written.await {
                        warn!(%error, "writing to a runner channel failed; closing it");
                        break;
                    }
                }
                if let Some(inner) = weak.upgrade() {
                    inner.close();
                }
            }
        });
        let reader = tokio::spawn(async move {
            let _guard = guard;
            loop {
                while let Some(response) = decoder.next_response() {
                    let Some(inner) = weak.upgrade() else { return };
                    match response {
                        Ok(response) => {
                            let incoming = match response.reply {
                                ChannelReply::Event { event } => Incoming::Event(event),
                                ChannelReply::End => Incoming::End,
                                ChannelReply::Refused { error } => {
                                    Incoming::Refused(refusal(error.code, error.message))
                                }
                                ChannelReply::Hello { .. } | ChannelReply::Pong => continue,
                            };
                            inner.deliver(response.id, incoming);
                        }
                        Err(error) => warn!(%error, "skipping a channel frame that is not a reply"),
                    }
                }
                let chunk = match output.next().await {
                    Some(Ok(chunk)) => chunk,
                    Some(Err(error)) => {
                        warn!(%error, "a runner channel failed");
                        break;
                    }
                    None => break,
                };
                decoder.push(&chunk);
            }
            if let Some(inner) = weak.upgrade() {
                inner.close();
            }
        });
        lock(&inner.tasks).extend([writer.abort_handle(), reader.abort_handle()]);
        Ok(Channel { inner })
    }

    /// False once the channel broke or was closed.
    pub fn is_open(&self) -> bool {
        !self.inner.closed.load(Ordering::SeqCst)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.requests).as_ref().map_or(0, HashMap::len)
    }

    fn idle_for(&self) -> Duration {
        lock(&self.inner.last_used).elapsed()
    }

    fn touch(&self) {
        *lock(&self.inner.last_used) = Instant::now();
    }

    /// Closes the channel; requests in flight fail with [`SandboxError::StreamClosed`].
    pub fn close(&self) {
        self.inner.close();
    }

    /// Sends `spec` as one `exec` request: the same contract as [`Sandbox::exec`]. Waits for a
    /// free request slot when the channel is at its limit.
    pub async fn exec(&self, spec: &ExecSpec) -> Result<ChannelRun, SandboxError> {
        let size = spec.to_frame().len();
        if size > MAX_SPEC_FRAME_BYTES {
            return Err(SandboxError::SpecTooLarge {
                size,
                limit: MAX_SPEC_FRAME_BYTES,
            });
        }
        let expected = Expected {
            run_id: spec.run_id.clone(),
            key: spec.result_key.clone(),
        };
        let op = ChannelOp::Exec {
            spec: Box::new(spec.clone()),
        };
        self.request(op, Some(expected)).await
    }

    /// Follows run `run_id`'s output, as `kubexec-runner follow`.
    pub async fn follow(&self, run_id: &str) -> Result<ChannelRun, SandboxError> {
        self.follow_from(run_id, 0, 0).await
    }

    /// Follows run `run_id`'s output from byte offsets into its stdout and stderr (a resumed
    /// stream), as `kubexec-runner follow --stdout-offset N --stderr-offset M`.
    pub async fn follow_from(
        &self,
        run_id: &str,
        stdout_offset: u64,
        stderr_offset: u64,
    ) -> Result<ChannelRun, SandboxError> {
        let op = ChannelOp::Follow {
            run_id: run_id.to_string(),
            wait_seconds: None,
            stdout_offset,
            stderr_offset,
        };
        self.request(op, None).await
    }

    async fn request(
        &self,
        op: ChannelOp,
        expected: Option<Expected>,
    ) -> Result<ChannelRun, SandboxError> {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SandboxError::StreamClosed)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        // Room for a window of events, and the end.
        let (sender, receiver) = mpsc::channel(self.inner.window as usize + 2);
        match lock(&self.inner.requests).as_mut() {
            Some(map) => map.insert(id, sender),
            None => return Err(SandboxError::StreamClosed),
        };
        self.touch();
        let run = ChannelRun {
            id,
            receiver,
            channel: self.inner.clone(),
            expected,
            consumed: 0,
            ended: false,
            _permit: permit,
        };
        let frame = ChannelRequest { id, op }.to_frame();
        self.inner
            .writes
            .send(frame)
            .await
            .map_err(|_| SandboxError::StreamClosed)?;
        Ok(run)
    }
}

/// Refusals for this channel only (busy, id in use) are worth a retry; the others (an invalid
/// spec) are the runner's final word, as an `error` event of a one-shot exec.
fn refusal(code: ErrorCode, message: String) -> SandboxError {
    match code {
        ErrorCode::LimitExceeded | ErrorCode::Usage => {
            SandboxError::Protocol(format!("the channel refused the request: {message}"))
        }
        code => SandboxError::Runner { code, message },
    }
}

/// One request on a channel: its events, in order, until its end.
pub struct ChannelRun {
    id: u64,
    receiver: mpsc::Receiver<Incoming>,
    channel: Arc<ChannelInner>,
    expected: Option<Expected>,
    consumed: u32,
    ended: bool,
    _permit: OwnedSemaphorePermit,
}

impl Drop for ChannelRun {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let removed = lock(&self.channel.requests)
            .as_mut()
            .and_then(|map| map.remove(&self.id));
        if removed.is_some() {
            // Best effort: the runner then drops this request's events (an exec runs on).
            let cancel = ChannelRequest {
                id: self.id,
                op: ChannelOp::Cancel,
            };
            let _ = self.channel.writes.try_send(cancel.to_frame());
        }
    }
}

impl ChannelRun {
    /// The next event, or `None` after the request's end. A channel that broke first is
    /// [`SandboxError::StreamClosed`].
    pub async fn next_event(&mut self) -> Result<Option<RunnerEvent>, SandboxError> {
        if self.ended {
            return Ok(None);
        }
        match self.receiver.recv().await {
            Some(Incoming::Event(event)) => {
                self.consumed += 1;
                if self.consumed >= self.channel.window.div_ceil(2) {
                    let credit = ChannelRequest {
                        id: self.id,
                        op: ChannelOp::Credit {
                            frames: self.consumed,
                        },
                    };
                    self.consumed = 0;
                    self.channel
                        .writes
                        .send(credit.to_frame())
                        .await
                        .map_err(|_| SandboxError::StreamClosed)?;
                }
                Ok(Some(event))
            }
            Some(Incoming::End) => {
                self.ended = true;
                Ok(None)
            }
            Some(Incoming::Refused(error)) => {
                self.ended = true;
                Err(error)
            }
            None => {
                self.ended = true;
                Err(SandboxError::StreamClosed)
            }
        }
    }

    /// The events as a stream (ends after the request's end).
    pub fn into_events(self) -> impl Stream<Item = Result<RunnerEvent, SandboxError>> + Send {
        super::event_stream(self)
    }

    /// As [`super::FramedRun::result`]: the run's result, sealed for its run id, or the error.
    /// A request that ends without one is a protocol error (retried with the same run id).
    pub async fn result(
        mut self,
        on_output: impl FnMut(&RunnerEvent) + Send,
    ) -> Result<ExecResult, SandboxError> {
        let expected = self.expected.take();
        match read_result(&mut self, expected.as_ref(), on_output).await? {
            Ok(result) => Ok(result),
            Err(Some(why)) => Err(SandboxError::ResultRejected(why)),
            Err(None) => Err(SandboxError::Protocol(
                "the runner ended the request without a result".into(),
            )),
        }
    }
}

impl EventSource for ChannelRun {
    fn next_event(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<RunnerEvent>, SandboxError>> + Send {
        ChannelRun::next_event(self)
    }
}

/// Settings of a [`ChannelPool`].
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    /// A channel without requests for this long is closed.
    pub idle: Duration,
    /// Most channels open at once; beyond, callers get `None` and use a one-shot exec.
    pub max_channels: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            idle: DEFAULT_IDLE,
            max_channels: DEFAULT_MAX_CHANNELS,
        }
    }
}

#[derive(Default)]
struct Slot {
    channel: Option<Channel>,
    /// The sandbox's runner does not speak the channel protocol; not tried again until then.
    unsupported_until: Option<Instant>,
}

/// At most one channel per sandbox container, for one process (the operator or the api).
#[derive(Clone)]
pub struct ChannelPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    connect: Box<dyn Connect>,
    slots: Mutex<HashMap<ChannelKey, Arc<tokio::sync::Mutex<Slot>>>>,
    config: PoolConfig,
    metrics: ChannelMetrics,
}

impl ChannelPool {
    /// A pool over the `pods/exec` subresource.
    pub fn kube(client: kube::Client, config: PoolConfig, metrics: ChannelMetrics) -> Self {
        Self::new(KubeConnect(client), config, metrics)
    }

    /// A pool over any [`Connect`]; starts the task that closes idle channels (so it must be
    /// created inside a Tokio runtime).
    pub fn new(connect: impl Connect, config: PoolConfig, metrics: ChannelMetrics) -> Self {
        let inner = Arc::new(PoolInner {
            connect: Box::new(connect),
            slots: Mutex::new(HashMap::new()),
            config,
            metrics,
        });
        tokio::spawn(close_idle(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// The counters the pool keeps.
    pub fn metrics(&self) -> &ChannelMetrics {
        &self.inner.metrics
    }

    /// The open channel of `key`, opened now if there is none. `Ok(None)` when the pool is full
    /// of busy channels, or the sandbox's runner has no channel: use a one-shot exec then.
    pub async fn channel(&self, key: &ChannelKey) -> Result<Option<Channel>, SandboxError> {
        let Some(slot) = self.slot(key) else {
            return Ok(None);
        };
        let mut slot = slot.lock().await;
        if let Some(channel) = slot.channel.as_ref().filter(|c| c.is_open()) {
            channel.touch();
            return Ok(Some(channel.clone()));
        }
        if slot.unsupported_until.is_some_and(|t| Instant::now() < t) {
            return Ok(None);
        }
        let opened = async {
            let connection = within(OPEN_DEADLINE, self.inner.connect.connect(key)).await?;
            Channel::start(connection, &self.inner.metrics).await
        };
        match opened.await {
            Ok(channel) => {
                self.inner.metrics.opens.inc();
                info!(namespace = %key.namespace, pod = %key.pod, "runner channel opened");
                slot.channel = Some(channel.clone());
                slot.unsupported_until = None;
                Ok(Some(channel))
            }
            Err(error @ SandboxError::Protocol(_)) => {
                warn!(%error, pod = %key.pod, "the sandbox's runner has no channel; using one-shot execs");
                slot.channel = None;
                slot.unsupported_until = Some(Instant::now() + UNSUPPORTED_BACKOFF);
                Ok(None)
            }
            Err(error) => {
                slot.channel = None;
                Err(error)
            }
        }
    }

    /// The slot of `key`, made room for if need be; `None` when every slot is busy.
    fn slot(&self, key: &ChannelKey) -> Option<Arc<tokio::sync::Mutex<Slot>>> {
        let mut slots = lock(&self.inner.slots);
        if let Some(slot) = slots.get(key) {
            return Some(slot.clone());
        }
        if slots.len() >= self.inner.config.max_channels {
            // Close the channel idle the longest, if any is idle at all.
            let victim = slots
                .iter()
                .filter_map(|(key, slot)| {
                    let slot = slot.try_lock().ok()?;
                    match &slot.channel {
                        Some(channel) if channel.in_flight() > 0 => None,
                        Some(channel) => Some((key.clone(), channel.idle_for())),
                        None => Some((key.clone(), Duration::MAX)),
                    }
                })
                .max_by_key(|(_, idle)| *idle)
                .map(|(key, _)| key)?;
            if let Some(slot) = slots.remove(&victim) {
                if let Some(channel) = slot.try_lock().ok().and_then(|s| s.channel.clone()) {
                    channel.close();
                }
            }
        }
        let slot = Arc::new(tokio::sync::Mutex::new(Slot::default()));
        slots.insert(key.clone(), slot.clone());
        Some(slot)
    }

    /// Closes every channel idle for the pool's idle time, and forgets broken ones.
    #[cfg(test)]
    fn close_idle_now(&self) {
        close_idle_once(&self.inner);
    }
}

fn close_idle_once(inner: &PoolInner) {
    let idle = inner.config.idle;
    lock(&inner.slots).retain(|key, slot| {
        let Ok(mut slot) = slot.try_lock() else {
            return true; // opening or in use right now
        };
        let close = match &slot.channel {
            Some(channel) if !channel.is_open() => true,
            Some(channel) => channel.in_flight() == 0 && channel.idle_for() >= idle,
            None => slot.unsupported_until.is_none_or(|t| Instant::now() >= t),
        };
        if close {
            if let Some(channel) = slot.channel.take() {
                if channel.is_open() {
                    info!(namespace = %key.namespace, pod = %key.pod, "closing an idle runner channel");
                }
                channel.close();
            }
        }
        !close
    });
}

async fn close_idle(pool: Weak<PoolInner>) {
    let Some(every) = pool
        .upgrade()
        .map(|p| (p.config.idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30)))
    else {
        return;
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = pool.upgrade() else { return };
        close_idle_once(&inner);
    }
}

#[cfg(test)]
mod tests;
