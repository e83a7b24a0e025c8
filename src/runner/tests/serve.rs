//! `kubexec-runner serve` through the binary: many executions over one channel, flow control,
//! refusals, and a run that outlives its channel.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{eventually, runner, TempDir};
use kubexec_runner::protocol::{
    ChannelDecoder, ChannelOp, ChannelReply, ChannelRequest, ChannelResponse, ErrorCode,
    ExecResult, ExecSpec, ResultKey, RunnerEvent, CHANNEL_VERSION, CHANNEL_WINDOW,
    MAX_CHANNEL_REQUESTS,
};

/// A running `serve` and its replies, read by a thread.
struct Serve {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<ChannelResponse>,
}

const WAIT: Duration = Duration::from_secs(30);

impl Serve {
    fn start(ws: &TempDir) -> Serve {
        let mut child = runner()
            .arg("serve")
            .env("KUBEXEC_WORKSPACE", ws.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            let mut decoder = ChannelDecoder::new();
            let mut buffer = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                decoder.push(&buffer[..n]);
                while let Some(reply) = decoder.next_response() {
                    if tx.send(reply.expect("every frame is a reply")).is_err() {
                        return;
                    }
                }
            }
        });
        let mut serve = Serve {
            child,
            stdin,
            replies,
        };
        let hello = serve.next();
        assert_eq!(
            hello,
            ChannelResponse {
                id: 0,
                reply: ChannelReply::Hello {
                    version: CHANNEL_VERSION,
                    window: CHANNEL_WINDOW,
                    max_requests: MAX_CHANNEL_REQUESTS
                }
            }
        );
        serve
    }

    fn send(&mut self, id: u64, op: ChannelOp) {
        self.stdin
            .write_all(&ChannelRequest { id, op }.to_frame())
            .and_then(|()| self.stdin.flush())
            .expect("send a request");
    }

    fn exec(&mut self, id: u64, spec: &ExecSpec) {
        self.send(
            id,
            ChannelOp::Exec {
                spec: Box::new(spec.clone()),
            },
        );
    }

    fn next(&mut self) -> ChannelResponse {
        self.replies.recv_timeout(WAIT).expect("a reply")
    }

    /// Reads replies until every id in `ids` has ended; returns each one's events, granting
    /// credit as they come.
    fn collect(&mut self, ids: &[u64]) -> HashMap<u64, Vec<RunnerEvent>> {
        let mut events: HashMap<u64, Vec<RunnerEvent>> = HashMap::new();
        let mut open: Vec<u64> = ids.to_vec();
        while !open.is_empty() {
            let reply = self.next();
            match reply.reply {
                ChannelReply::Event { event } => {
                    events.entry(reply.id).or_default().push(event);
                    self.send(reply.id, ChannelOp::Credit { frames: 1 });
                }
                ChannelReply::End => open.retain(|id| *id != reply.id),
                other => panic!("unexpected reply {other:?} for {}", reply.id),
            }
        }
        events
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command_spec(ws: &TempDir, run_id: &str, command: &str, key: &ResultKey) -> ExecSpec {
    let mut spec = ws.spec(run_id);
    spec.command = Some(command.into());
    spec.result_key = Some(key.clone());
    spec
}

fn last_result(events: &[RunnerEvent]) -> &ExecResult {
    match events.last() {
        Some(RunnerEvent::Result(result)) => result,
        other => panic!("expected a result last, got {other:?}"),
    }
}

#[test]
fn many_executions_share_one_channel() {
    let ws = TempDir::new("serve-many");
    let key = ResultKey::from_bytes([5; 32]);
    let mut serve = Serve::start(&ws);
    let ids: Vec<u64> = (1..=24).collect();
    for id in &ids {
        let spec = command_spec(
            &ws,
            &format!("run-{id}"),
            &format!("echo out-{id}; exit {}", id % 5),
            &key,
        );
        serve.exec(*id, &spec);
    }
    let events = serve.collect(&ids);
    for id in ids {
        let result = last_result(&events[&id]);
        assert_eq!(result.run_id, format!("run-{id}"));
        assert_eq!(result.stdout, format!("out-{id}\n"));
        assert_eq!(result.exit_code, (id % 5) as i32);
        assert!(key.verify(result), "sealed with the spec's key");
        assert!(!result.recovered);
    }

    // The same run id again is never run twice: its stored result comes back.
    serve.exec(100, &command_spec(&ws, "run-1", "echo again", &key));
    let events = serve.collect(&[100]);
    let replayed = last_result(&events[&100]);
    assert!(
        replayed.recovered && replayed.stdout == "out-1\n",
        "{replayed:?}"
    );
}

#[test]
fn bad_requests_are_refused_and_the_channel_goes_on() {
    let ws = TempDir::new("serve-bad");
    let key = ResultKey::from_bytes([6; 32]);
    let mut serve = Serve::start(&ws);
    let mut bad = command_spec(&ws, "run-1", "true", &key);
    bad.run_id = "../escape".into();
    serve.exec(1, &bad);
    assert!(matches!(
        serve.next(),
        ChannelResponse { id: 1, reply: ChannelReply::Refused { error } } if error.code == ErrorCode::InvalidSpec
    ));
    serve.send(
        2,
        ChannelOp::Follow {
            run_id: "no/such".into(),
            wait_seconds: None,
            stdout_offset: 0,
            stderr_offset: 0,
        },
    );
    assert!(matches!(
        serve.next(),
        ChannelResponse {
            id: 2,
            reply: ChannelReply::Refused { .. }
        }
    ));
    // Not JSON of a request, but with an id: refused, and the channel still serves.
    serve
        .stdin
        .write_all(&kubexec_runner::protocol::encode_frame(
            br#"{"id":3,"op":"rm"}"#,
        ))
        .expect("write");
    assert!(matches!(
        serve.next(),
        ChannelResponse {
            id: 3,
            reply: ChannelReply::Refused { .. }
        }
    ));
    serve.send(4, ChannelOp::Ping);
    assert_eq!(
        serve.next(),
        ChannelResponse {
            id: 4,
            reply: ChannelReply::Pong
        }
    );
    serve.exec(5, &command_spec(&ws, "run-5", "echo fine", &key));
    let events = serve.collect(&[5]);
    assert_eq!(last_result(&events[&5]).stdout, "fine\n");
}

#[test]
fn a_run_outlives_its_channel_and_is_attached_to_from_the_next() {
    let ws = TempDir::new("serve-kill");
    let key = ResultKey::from_bytes([7; 32]);
    let spec = command_spec(
        &ws,
        "run-1",
        "echo before; sleep 1; echo after; exit 3",
        &key,
    );
    let mut first = Serve::start(&ws);
    first.exec(1, &spec);
    // The run has started (its first output came): the channel dies.
    loop {
        let reply = first.next();
        if matches!(
            reply.reply,
            ChannelReply::Event {
                event: RunnerEvent::Stdout { .. }
            }
        ) {
            break;
        }
    }
    first.child.kill().expect("kill serve");
    let _ = first.child.wait();

    let mut second = Serve::start(&ws);
    second.exec(1, &spec);
    let events = second.collect(&[1]);
    let result = last_result(&events[&1]);
    assert!(result.recovered, "attached, not run again: {result:?}");
    assert_eq!(result.exit_code, 3);
    assert_eq!(result.stdout, "before\nafter\n");
    assert!(key.verify(result));
}

#[test]
fn a_request_gets_no_more_than_a_window_ahead_of_its_credit() {
    let ws = TempDir::new("serve-window");
    let key = ResultKey::from_bytes([8; 32]);
    let lines = 3 * CHANNEL_WINDOW;
    let spec = command_spec(
        &ws,
        "run-1",
        &format!("i=0; while [ $i -lt {lines} ]; do echo line-$i; i=$((i+1)); sleep 0.05; done"),
        &key,
    );
    let mut serve = Serve::start(&ws);
    serve.exec(1, &spec);
    // No credit granted: at most a window of events arrives, even after the run is over.
    let result_file = ws.path().join(".kubexec/runs/run-1/result.json");
    let mut early = Vec::new();
    assert!(eventually(WAIT, || {
        while let Ok(reply) = serve.replies.try_recv() {
            early.push(reply);
        }
        result_file.exists()
    }));
    // Another request still gets through meanwhile.
    serve.send(2, ChannelOp::Ping);
    loop {
        let reply = serve.next();
        if reply.id == 2 {
            assert_eq!(reply.reply, ChannelReply::Pong);
            break;
        }
        early.push(reply);
    }
    assert_eq!(early.len(), CHANNEL_WINDOW as usize, "{early:?}");
    // With credit, the rest comes, in order, and adds up to the run's output.
    serve.send(
        1,
        ChannelOp::Credit {
            frames: CHANNEL_WINDOW,
        },
    );
    let rest = serve.collect(&[1]);
    let events: Vec<RunnerEvent> = early
        .into_iter()
        .filter_map(|r| match r.reply {
            ChannelReply::Event { event } => Some(event),
            _ => None,
        })
        .chain(rest[&1].iter().cloned())
        .collect();
    let streamed: String = events
        .iter()
        .filter_map(|e| match e {
            RunnerEvent::Stdout { data } => Some(data.as_str()),
            _ => None,
        })
        .collect();
    let result = last_result(&events);
    assert_eq!(streamed, result.stdout);
    assert_eq!(result.stdout.lines().count(), lines as usize);
}

#[test]
fn follow_on_a_channel_replays_a_run() {
    let ws = TempDir::new("serve-follow");
    let key = ResultKey::from_bytes([9; 32]);
    let mut serve = Serve::start(&ws);
    serve.exec(1, &command_spec(&ws, "run-1", "echo followed", &key));
    serve.collect(&[1]);
    serve.send(
        2,
        ChannelOp::Follow {
            run_id: "run-1".into(),
            wait_seconds: Some(5),
            stdout_offset: 0,
            stderr_offset: 0,
        },
    );
    let events = serve.collect(&[2]);
    assert_eq!(
        events[&2].first(),
        Some(&RunnerEvent::Stdout {
            data: "followed\n".into()
        })
    );
    assert!(matches!(events[&2].last(), Some(RunnerEvent::Result(_))));
}

#[test]
fn follow_on_a_channel_resumes_from_offsets() {
    let ws = TempDir::new("serve-follow-offsets");
    let key = ResultKey::from_bytes([9; 32]);
    let mut serve = Serve::start(&ws);
    serve.exec(1, &command_spec(&ws, "run-1", "echo followed", &key));
    serve.collect(&[1]);
    serve.send(
        2,
        ChannelOp::Follow {
            run_id: "run-1".into(),
            wait_seconds: Some(5),
            stdout_offset: 3,
            stderr_offset: 0,
        },
    );
    let events = serve.collect(&[2]);
    assert_eq!(
        events[&2].first(),
        Some(&RunnerEvent::Stdout {
            data: "lowed\n".into()
        })
    );
    assert!(matches!(events[&2].last(), Some(RunnerEvent::Result(_))));
}
