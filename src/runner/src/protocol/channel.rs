//! `kubexec-runner serve`: many requests over one exec stream (a "channel").
//!
//! Both directions carry the usual frames (`KUBEXEC/1 <len>\n` + JSON), each an envelope with
//! the request's `id`:
//! - stdin: [`ChannelRequest`]s: `exec` (an [`ExecSpec`]), `follow` (a run's output), `credit`
//!   (flow control), `cancel` (stop relaying a request) and `ping`.
//! - stdout: first one [`ChannelReply::Hello`] (id 0), sent once the serve process is
//!   non-dumpable: the client sends nothing before it, so no request, and no result key, is
//!   ever in a pipe that user code could still open. Then per request any number of
//!   [`ChannelReply::Event`]s (the same [`RunnerEvent`]s as `exec` and `follow` print, in the
//!   same order) and exactly one [`ChannelReply::End`]; a request the runner does not take
//!   gets one [`ChannelReply::Refused`] instead.
//!
//! Flow control: the runner sends at most [`CHANNEL_WINDOW`] events of a request beyond what
//! the client has granted back with `credit`, and stops reading that request's output until
//! more credit comes. So a slow reader makes nobody buffer without bound: the client keeps at
//! most a window of frames per request, and the runner none. A channel runs at most
//! [`MAX_CHANNEL_REQUESTS`] requests at once.
//!
//! Each `exec` runs in its own detached runner process (its own session), exactly as a
//! one-shot `kubexec-runner exec`: the at-most-once claim, the sealed result and the caps are
//! the same, and the run outlives the channel. A request whose channel broke is re-sent with
//! the same run ID on a new channel (or a one-shot exec) and attaches through the claim.

use serde::{Deserialize, Serialize};

use super::{
    encode_frame, ExecSpec, FrameDecoder, RunnerError, RunnerEvent, MAX_FRAME_BYTES,
    MAX_SPEC_FRAME_BYTES,
};

/// Version of the envelope, announced in the hello.
pub const CHANNEL_VERSION: u32 = 1;
/// Events of one request the runner may send ahead of the client's credit.
pub const CHANNEL_WINDOW: u32 = 16;
/// Requests one channel runs at once; more are refused with `LimitExceeded`.
pub const MAX_CHANNEL_REQUESTS: usize = 64;
/// Room for the envelope around an event or a spec.
const ENVELOPE_SLACK: usize = 4096;
/// Largest request frame the runner reads: a spec frame plus its envelope.
pub const MAX_REQUEST_FRAME_BYTES: usize = MAX_SPEC_FRAME_BYTES + ENVELOPE_SLACK;
/// Largest reply frame: an event frame plus its envelope. The client drops larger ones unread.
pub const MAX_REPLY_FRAME_BYTES: usize = MAX_FRAME_BYTES + ENVELOPE_SLACK;
/// How long `follow` waits for a run that has not started, unless the request says.
pub const DEFAULT_FOLLOW_WAIT_SECONDS: u32 = 30;

/// One request on the channel's stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRequest {
    /// Chosen by the client, unique among its open requests; 0 is the hello's.
    pub id: u64,
    #[serde(flatten)]
    pub op: ChannelOp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum ChannelOp {
    /// Run a spec (or attach to its run), as `kubexec-runner exec`.
    Exec { spec: Box<ExecSpec> },
    /// A run's output from the start (or from byte offsets into its stdout and stderr: a
    /// resumed stream), then its outcome, as `kubexec-runner follow`. The offsets are
    /// additive: a runner that predates them would send the output from the start, so a
    /// client sends them only when they are not 0.
    #[serde(rename_all = "camelCase")]
    Follow {
        run_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_seconds: Option<u32>,
        #[serde(default, skip_serializing_if = "is_zero")]
        stdout_offset: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        stderr_offset: u64,
    },
    /// The client consumed `frames` more events of request `id`.
    Credit { frames: u32 },
    /// The client no longer reads request `id`. An exec keeps running (its outcome is stored);
    /// a follow stops.
    Cancel,
    /// Answered with [`ChannelReply::Pong`].
    Ping,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// One reply on the channel's stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelResponse {
    pub id: u64,
    #[serde(flatten)]
    pub reply: ChannelReply,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ChannelReply {
    /// First frame of the channel (id 0).
    #[serde(rename_all = "camelCase")]
    Hello {
        version: u32,
        window: u32,
        max_requests: usize,
    },
    /// One event of the request.
    Event {
        event: RunnerEvent,
    },
    /// The request is over; nothing more comes for its id.
    End,
    /// The request was not taken (bad request, too many at once); nothing more comes for it.
    Refused {
        error: RunnerError,
    },
    Pong,
}

impl ChannelRequest {
    /// This request as one frame.
    pub fn to_frame(&self) -> Vec<u8> {
        encode_frame(&serde_json::to_vec(self).unwrap_or_default())
    }
}

impl ChannelResponse {
    /// This reply as one frame.
    pub fn to_frame(&self) -> Vec<u8> {
        encode_frame(&serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Incremental decoder of the channel's stdout: frames of at most [`MAX_REPLY_FRAME_BYTES`],
/// each a [`ChannelResponse`]. Noise and oversized frames are skipped as by [`FrameDecoder`];
/// a frame that is not a response is returned as an error and consumed.
#[derive(Debug)]
pub struct ChannelDecoder {
    frames: FrameDecoder,
}

impl Default for ChannelDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChannelDecoder {
    pub fn new() -> Self {
        Self::with_max_frame_bytes(MAX_REPLY_FRAME_BYTES)
    }

    pub fn with_max_frame_bytes(max: usize) -> Self {
        Self {
            frames: FrameDecoder::with_max_frame_bytes(max),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.frames.push(bytes);
    }

    /// Bytes held back waiting for the rest of a frame.
    pub fn buffered_bytes(&self) -> usize {
        self.frames.buffered_bytes()
    }

    /// Bytes skipped as noise so far.
    pub fn skipped_bytes(&self) -> u64 {
        self.frames.skipped_bytes()
    }

    pub fn next_response(&mut self) -> Option<Result<ChannelResponse, serde_json::Error>> {
        self.frames
            .next_frame()
            .map(|payload| serde_json::from_slice(&payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorCode, ExecResult};

    #[test]
    fn requests_are_tagged_by_op() {
        let mut spec = ExecSpec::new("run-1");
        spec.command = Some("true".into());
        let exec = ChannelRequest {
            id: 7,
            op: ChannelOp::Exec {
                spec: Box::new(spec.clone()),
            },
        };
        let json = serde_json::to_value(&exec).unwrap_or_default();
        assert_eq!(json["id"], 7);
        assert_eq!(json["op"], "exec");
        assert_eq!(json["spec"]["runId"], "run-1");
        assert_eq!(
            serde_json::from_value::<ChannelRequest>(json).ok(),
            Some(exec)
        );

        let follow: ChannelRequest =
            serde_json::from_str(r#"{"id":2,"op":"follow","runId":"r"}"#).expect("parses");
        assert_eq!(
            follow.op,
            ChannelOp::Follow {
                run_id: "r".into(),
                wait_seconds: None,
                stdout_offset: 0,
                stderr_offset: 0,
            }
        );
        // Offsets go on the wire only when set: a runner that predates them sees nothing new.
        let resumed = ChannelRequest {
            id: 3,
            op: ChannelOp::Follow {
                run_id: "r".into(),
                wait_seconds: None,
                stdout_offset: 5,
                stderr_offset: 0,
            },
        };
        let json = serde_json::to_value(&resumed).unwrap_or_default();
        assert_eq!(json["stdoutOffset"], 5);
        assert!(json.get("stderrOffset").is_none());
        assert_eq!(
            serde_json::from_value::<ChannelRequest>(json).ok(),
            Some(resumed)
        );
        for (text, op) in [
            (
                r#"{"id":3,"op":"credit","frames":4}"#,
                ChannelOp::Credit { frames: 4 },
            ),
            (r#"{"id":3,"op":"cancel"}"#, ChannelOp::Cancel),
            (r#"{"id":0,"op":"ping"}"#, ChannelOp::Ping),
        ] {
            let parsed: ChannelRequest = serde_json::from_str(text).expect(text);
            assert_eq!(parsed.op, op);
            assert_eq!(serde_json::to_string(&parsed).ok().as_deref(), Some(text));
        }
        for bad in [
            r#"{"id":1,"op":"rm"}"#,
            r#"{"op":"ping"}"#,
            r#"{"id":-1,"op":"ping"}"#,
            r#"{"id":1,"op":"exec"}"#,
        ] {
            assert!(
                serde_json::from_str::<ChannelRequest>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn replies_wrap_runner_events() {
        let result = ChannelResponse {
            id: 9,
            reply: ChannelReply::Event {
                event: RunnerEvent::Result(ExecResult {
                    run_id: "r".into(),
                    exit_code: 3,
                    ..Default::default()
                }),
            },
        };
        let json = serde_json::to_value(&result).unwrap_or_default();
        assert_eq!(json["kind"], "event");
        assert_eq!(json["event"]["type"], "result");
        assert_eq!(json["event"]["exitCode"], 3);

        let mut decoder = ChannelDecoder::new();
        let hello = ChannelResponse {
            id: 0,
            reply: ChannelReply::Hello {
                version: CHANNEL_VERSION,
                window: CHANNEL_WINDOW,
                max_requests: MAX_CHANNEL_REQUESTS,
            },
        };
        let refused = ChannelResponse {
            id: 4,
            reply: ChannelReply::Refused {
                error: RunnerError {
                    code: ErrorCode::LimitExceeded,
                    message: "busy".into(),
                },
            },
        };
        for reply in [&hello, &result, &refused] {
            decoder.push(&reply.to_frame());
        }
        decoder.push(&encode_frame(b"{\"id\":1}"));
        decoder.push(
            &ChannelResponse {
                id: 9,
                reply: ChannelReply::End,
            }
            .to_frame(),
        );
        let got: Vec<_> = std::iter::from_fn(|| decoder.next_response()).collect();
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].as_ref().ok(), Some(&hello));
        assert_eq!(got[1].as_ref().ok(), Some(&result));
        assert_eq!(got[2].as_ref().ok(), Some(&refused));
        assert!(got[3].is_err(), "a frame that is not a reply is an error");
        assert!(matches!(
            got[4].as_ref().map(|r| &r.reply),
            Ok(ChannelReply::End)
        ));
    }

    #[test]
    fn the_largest_event_fits_a_reply_frame() {
        let event = RunnerEvent::Stdout {
            data: "x".repeat(MAX_FRAME_BYTES - 64),
        };
        let reply = ChannelResponse {
            id: u64::MAX,
            reply: ChannelReply::Event { event },
        };
        let frame = reply.to_frame();
        let mut decoder = ChannelDecoder::new();
        decoder.push(&frame);
        assert!(decoder.next_response().is_some_and(|r| r.is_ok()));
    }

    /// The decoder against arbitrary input (a bounded number of cases, as the frame decoder's).
    mod props {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;

        const MAX_TEST_FRAME: usize = 1024;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 256,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        fn reply() -> impl Strategy<Value = ChannelResponse> {
            let text = "[ -~é\n]{0,64}";
            let reply = prop_oneof![
                Just(ChannelReply::End),
                Just(ChannelReply::Pong),
                text.prop_map(|data| ChannelReply::Event {
                    event: RunnerEvent::Stdout { data }
                }),
                (any::<i32>(), text).prop_map(|(exit_code, stdout)| ChannelReply::Event {
                    event: RunnerEvent::Result(ExecResult {
                        exit_code,
                        stdout,
                        ..Default::default()
                    })
                }),
            ];
            (any::<u64>(), reply).prop_map(|(id, reply)| ChannelResponse { id, reply })
        }

        fn chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut start = 0;
            let mut out = Vec::new();
            for cut in cuts.into_iter().chain([bytes.len()]) {
                out.push(bytes[start..cut].to_vec());
                start = cut;
            }
            out
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn replies_survive_any_split(
                replies in vec(reply(), 0..8),
                cuts in vec(any::<usize>(), 0..16),
            ) {
                let stream: Vec<u8> = replies.iter().flat_map(ChannelResponse::to_frame).collect();
                let mut decoder = ChannelDecoder::with_max_frame_bytes(MAX_TEST_FRAME);
                let mut got = Vec::new();
                for chunk in chunks(&stream, &cuts) {
                    decoder.push(&chunk);
                    while let Some(reply) = decoder.next_response() {
                        got.push(reply.map_err(|e| e.to_string()));
                    }
                }
                let want: Vec<Result<ChannelResponse, String>> = replies.into_iter().map(Ok).collect();
                prop_assert_eq!(got, want);
                prop_assert_eq!(decoder.buffered_bytes(), 0);
            }

            #[test]
            fn noise_never_grows_the_buffer_or_panics(
                noise in vec(any::<u8>(), 0..4096),
                cuts in vec(any::<usize>(), 0..16),
            ) {
                let mut decoder = ChannelDecoder::with_max_frame_bytes(MAX_TEST_FRAME);
                for chunk in chunks(&noise, &cuts) {
                    decoder.push(&chunk);
                    while decoder.next_response().is_some() {}
                    prop_assert!(decoder.buffered_bytes() <= 32 + MAX_TEST_FRAME);
                }
            }

            #[test]
            fn requests_round_trip(id in any::<u64>(), frames in any::<u32>(), run_id in "[A-Za-z0-9-]{1,32}") {
                for op in [
                    ChannelOp::Credit { frames },
                    ChannelOp::Follow {
                        run_id: run_id.clone(),
                        wait_seconds: Some(frames),
                        stdout_offset: u64::from(frames),
                        stderr_offset: 0,
                    },
                    ChannelOp::Cancel,
                ] {
                    let request = ChannelRequest { id, op };
                    let frame = request.to_frame();
                    let payload = crate::protocol::read_frame(&mut std::io::Cursor::new(frame), MAX_REQUEST_FRAME_BYTES);
                    let parsed: Option<ChannelRequest> = payload.ok().and_then(|p| serde_json::from_slice(&p).ok());
                    prop_assert_eq!(parsed, Some(request));
                }
            }
        }
    }
}
