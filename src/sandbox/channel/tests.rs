//! The channel and the pool against a fake `serve` (no cluster): a task that speaks the
//! protocol over in-memory pipes.

use std::sync::atomic::AtomicUsize;

use kubexec_runner::protocol::{
    read_frame, ChannelResponse, ResultKey, RunnerError, MAX_REQUEST_FRAME_BYTES,
};
use tokio::io::{AsyncReadExt, DuplexStream};

use super::*;

/// How the fake runner behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fake {
    /// Answers each exec with one stdout chunk and a sealed result.
    Serve,
    /// Sends the hello, then breaks the stream at the first request.
    BreakOnRequest,
    /// No hello: a runner without `serve`.
    NoHello,
    /// Answers each exec with `n` stdout chunks at once, ignoring credit.
    Flood(usize),
    /// Never answers a request.
    Hang,
}

struct FakeConnect {
    fake: Fake,
    connects: Arc<AtomicUsize>,
    /// Request frames the fake received, for assertions.
    seen: Arc<Mutex<Vec<ChannelRequest>>>,
}

fn fake_pool(
    fake: Fake,
    config: PoolConfig,
) -> (
    ChannelPool,
    Arc<AtomicUsize>,
    Arc<Mutex<Vec<ChannelRequest>>>,
) {
    let connects = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let pool = ChannelPool::new(
        FakeConnect {
            fake,
            connects: connects.clone(),
            seen: seen.clone(),
        },
        config,
        ChannelMetrics::default(),
    );
    (pool, connects, seen)
}

impl Connect for FakeConnect {
    fn connect(&self, _key: &ChannelKey) -> BoxFuture<'static, Result<Connection, SandboxError>> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        let (client_in, runner_in) = tokio::io::duplex(1 << 20);
        let (out_tx, out_rx) = mpsc::channel::<Result<Bytes, SandboxError>>(1024);
        tokio::spawn(fake_runner(self.fake, runner_in, out_tx, self.seen.clone()));
        let output = futures::stream::unfold(out_rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed();
        async move {
            Ok(Connection {
                input: Box::pin(client_in),
                output,
            })
        }
        .boxed()
    }
}

fn key(pod: &str) -> ChannelKey {
    ChannelKey {
        namespace: "ns".into(),
        pod: pod.into(),
        pod_uid: None,
        container: "sandbox",
    }
}

fn spec(run_id: &str) -> ExecSpec {
    let mut spec = ExecSpec::new(run_id);
    spec.command = Some("true".into());
    spec.result_key = Some(ResultKey::from_bytes([9; 32]));
    spec
}

async fn send(
    out: &mpsc::Sender<Result<Bytes, SandboxError>>,
    id: u64,
    reply: ChannelReply,
) -> bool {
    out.send(Ok(Bytes::from(ChannelResponse { id, reply }.to_frame())))
        .await
        .is_ok()
}

async fn fake_runner(
    fake: Fake,
    mut input: DuplexStream,
    out: mpsc::Sender<Result<Bytes, SandboxError>>,
    seen: Arc<Mutex<Vec<ChannelRequest>>>,
) {
    if fake == Fake::NoHello {
        return; // the stream ends at once
    }
    let hello = ChannelReply::Hello {
        version: CHANNEL_VERSION,
        window: CHANNEL_WINDOW,
        max_requests: MAX_CHANNEL_REQUESTS,
    };
    send(&out, 0, hello).await;
    let mut buffer = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        let n = match input.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        loop {
            let mut cursor = std::io::Cursor::new(&buffer[..]);
            let Ok(payload) = read_frame(&mut cursor, MAX_REQUEST_FRAME_BYTES) else {
                break;
            };
            let used = cursor.position() as usize;
            buffer.drain(..used);
            let request: ChannelRequest = serde_json::from_slice(&payload).expect("a request");
            lock(&seen).push(request.clone());
            let ChannelOp::Exec { spec } = request.op else {
                continue;
            };
            match fake {
                Fake::Hang => continue,
                Fake::BreakOnRequest => {
                    let _ = out.send(Err(SandboxError::StreamClosed)).await;
                    return;
                }
                Fake::Flood(n) => {
                    for _ in 0..n {
                        let event = RunnerEvent::Stdout { data: "x".into() };
                        send(&out, request.id, ChannelReply::Event { event }).await;
                    }
                }
                Fake::Serve | Fake::NoHello => {
                    let event = RunnerEvent::Stdout {
                        data: format!("out of {}", spec.run_id),
                    };
                    send(&out, request.id, ChannelReply::Event { event }).await;
                    let mut result = ExecResult {
                        version: 1,
                        run_id: spec.run_id.clone(),
                        stdout: format!("out of {}", spec.run_id),
                        ..Default::default()
                    };
                    if let Some(key) = &spec.result_key {
                        key.seal(&mut result);
                    }
                    let event = RunnerEvent::Result(result);
                    send(&out, request.id, ChannelReply::Event { event }).await;
                }
            }
            send(&out, request.id, ChannelReply::End).await;
        }
    }
}

#[tokio::test]
async fn one_channel_carries_many_concurrent_requests() {
    let (pool, connects, _) = fake_pool(Fake::Serve, PoolConfig::default());
    let runs = (0..100).map(|i| {
        let pool = pool.clone();
        async move {
            let channel = pool
                .channel(&key("pod-a"))
                .await
                .expect("opens")
                .expect("a channel");
            let mut chunks = Vec::new();
            let result = channel
                .exec(&spec(&format!("run-{i}")))
                .await
                .expect("sent")
                .result(|event| chunks.push(event.clone()))
                .await
                .expect("a result");
            (i, result, chunks)
        }
    });
    for (i, result, chunks) in futures::future::join_all(runs).await {
        assert_eq!(result.run_id, format!("run-{i}"));
        assert_eq!(
            chunks,
            vec![RunnerEvent::Stdout {
                data: format!("out of run-{i}")
            }]
        );
    }
    assert_eq!(
        connects.load(Ordering::SeqCst),
        1,
        "one channel for one sandbox"
    );
    assert_eq!(pool.metrics().opens.get(), 1);
    assert_eq!(pool.metrics().open.get(), 1);

    pool.channel(&key("pod-b"))
        .await
        .expect("opens")
        .expect("a channel");
    assert_eq!(
        pool.metrics().opens.get(),
        2,
        "another sandbox, another channel"
    );
    assert_eq!(pool.metrics().open.get(), 2);
}

#[tokio::test]
async fn a_result_sealed_with_another_key_is_rejected() {
    let (pool, _, _) = fake_pool(Fake::Serve, PoolConfig::default());
    let channel = pool
        .channel(&key("p"))
        .await
        .expect("opens")
        .expect("a channel");
    // The fake seals with the spec's key; the caller expects another one.
    let mut run = channel.exec(&spec("run-1")).await.expect("sent");
    run.expected = Some(Expected {
        run_id: "run-1".into(),
        key: Some(ResultKey::from_bytes([2; 32])),
    });
    assert!(matches!(
        run.result(|_| {}).await,
        Err(SandboxError::ResultRejected(why)) if why.contains("MAC")
    ));
}

#[tokio::test]
async fn a_broken_channel_fails_its_requests_and_is_reopened() {
    let (pool, connects, _) = fake_pool(Fake::BreakOnRequest, PoolConfig::default());
    let channel = pool
        .channel(&key("p"))
        .await
        .expect("opens")
        .expect("a channel");
    let error = channel
        .exec(&spec("run-1"))
        .await
        .expect("sent")
        .result(|_| {})
        .await
        .expect_err("the channel broke");
    assert!(matches!(error, SandboxError::StreamClosed), "{error:?}");
    // The reader saw the end: the channel is closed and the gauge back to zero.
    while channel.is_open() {
        tokio::task::yield_now().await;
    }
    assert_eq!(pool.metrics().open.get(), 0);
    assert!(matches!(
        channel.exec(&spec("run-2")).await,
        Err(SandboxError::StreamClosed)
    ));

    let again = pool
        .channel(&key("p"))
        .await
        .expect("reopens")
        .expect("a channel");
    assert!(again.is_open());
    assert_eq!(connects.load(Ordering::SeqCst), 2);
    assert_eq!(pool.metrics().opens.get(), 2);
}

#[tokio::test]
async fn a_runner_without_serve_falls_back_to_one_shot_execs() {
    let (pool, connects, _) = fake_pool(Fake::NoHello, PoolConfig::default());
    assert!(pool.channel(&key("old")).await.expect("no error").is_none());
    // Not tried again right away.
    assert!(pool.channel(&key("old")).await.expect("no error").is_none());
    assert_eq!(connects.load(Ordering::SeqCst), 1);
    assert_eq!(pool.metrics().opens.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_idle_channel_is_closed_and_the_next_use_reopens_it() {
    let config = PoolConfig {
        idle: Duration::from_secs(10),
        max_channels: 4,
    };
    let (pool, connects, _) = fake_pool(Fake::Serve, config);
    let channel = pool
        .channel(&key("p"))
        .await
        .expect("opens")
        .expect("a channel");
    channel
        .exec(&spec("run-1"))
        .await
        .expect("sent")
        .result(|_| {})
        .await
        .expect("a result");
    tokio::time::sleep(Duration::from_secs(5)).await;
    pool.close_idle_now();
    assert!(channel.is_open(), "not idle long enough");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!channel.is_open(), "closed by the pool's idle task");
    assert_eq!(pool.metrics().open.get(), 0);

    let again = pool
        .channel(&key("p"))
        .await
        .expect("reopens")
        .expect("a channel");
    again
        .exec(&spec("run-2"))
        .await
        .expect("sent")
        .result(|_| {})
        .await
        .expect("a result");
    assert_eq!(connects.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_full_pool_closes_an_idle_channel_or_says_none() {
    let config = PoolConfig {
        idle: Duration::from_secs(600),
        max_channels: 1,
    };
    let (pool, _, _) = fake_pool(Fake::Hang, config);
    let first = pool
        .channel(&key("a"))
        .await
        .expect("opens")
        .expect("a channel");
    // Busy: a request whose end is not read yet keeps it in flight.
    let busy = first.exec(&spec("run-1")).await.expect("sent");
    assert!(
        pool.channel(&key("b")).await.expect("no error").is_none(),
        "full of busy channels"
    );
    drop(busy);
    let second = pool
        .channel(&key("b"))
        .await
        .expect("opens")
        .expect("room made");
    assert!(second.is_open());
    assert!(!first.is_open(), "the idle channel was closed for it");
}

#[tokio::test]
async fn credit_is_granted_as_events_are_read_and_a_flood_is_cut_off() {
    let (pool, _, seen) = fake_pool(Fake::Flood(CHANNEL_WINDOW as usize), PoolConfig::default());
    let channel = pool
        .channel(&key("p"))
        .await
        .expect("opens")
        .expect("a channel");
    let mut run = channel.exec(&spec("run-1")).await.expect("sent");
    let mut read = 0;
    while let Some(event) = run.next_event().await.expect("events") {
        assert!(matches!(event, RunnerEvent::Stdout { .. }));
        read += 1;
    }
    assert_eq!(read, CHANNEL_WINDOW);
    let credits = || -> u32 {
        lock(&seen)
            .iter()
            .filter_map(|r| match r.op {
                ChannelOp::Credit { frames } => Some(frames),
                _ => None,
            })
            .sum()
    };
    // Every event read is granted back (the fake reads the last grant a moment later).
    while credits() < CHANNEL_WINDOW {
        tokio::task::yield_now().await;
    }
    assert_eq!(credits(), CHANNEL_WINDOW);

    // A runner that ignores credit does not make the client buffer beyond a window: the
    // request fails instead.
    let (pool, _, _) = fake_pool(
        Fake::Flood(4 * CHANNEL_WINDOW as usize),
        PoolConfig::default(),
    );
    let channel = pool
        .channel(&key("p"))
        .await
        .expect("opens")
        .expect("a channel");
    let mut run = channel.exec(&spec("run-1")).await.expect("sent");
    // Let the flood arrive before anything is read.
    while lock(&channel.inner.requests)
        .as_ref()
        .is_some_and(|m| m.contains_key(&run.id))
    {
        tokio::task::yield_now().await;
    }
    let mut read = 0;
    let error = loop {
        match run.next_event().await {
            Ok(Some(_)) => read += 1,
            Ok(None) => panic!("the flooded request must not end normally"),
            Err(error) => break error,
        }
    };
    assert!(read <= CHANNEL_WINDOW as usize + 2, "{read}");
    assert!(matches!(error, SandboxError::StreamClosed), "{error:?}");
    assert!(channel.is_open(), "only the request failed");
}

#[tokio::test]
async fn a_dropped_request_is_cancelled_and_refusals_are_told_apart() {
    let (pool, _, seen) = fake_pool(Fake::Hang, PoolConfig::default());
    let channel = pool
        .channel(&key("p"))
        .await
        .expect("opens")
        .expect("a channel");
    let pending = channel.follow("run-2").await.expect("sent");
    let id = pending.id;
    assert_eq!(channel.in_flight(), 1);
    drop(pending);
    assert_eq!(channel.in_flight(), 0);
    let cancelled = || {
        lock(&seen)
            .iter()
            .any(|r| r.id == id && r.op == ChannelOp::Cancel)
    };
    while !cancelled() {
        tokio::task::yield_now().await;
    }

    assert!(matches!(
        refusal(ErrorCode::LimitExceeded, "busy".into()),
        SandboxError::Protocol(_)
    ));
    let invalid = RunnerError {
        code: ErrorCode::InvalidSpec,
        message: "bad".into(),
    };
    assert!(matches!(
        refusal(invalid.code, invalid.message),
        SandboxError::Runner {
            code: ErrorCode::InvalidSpec,
            ..
        }
    ));
}
