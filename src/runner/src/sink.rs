//! Writes runner events as frames to the exec stream.

use std::io::Write;

use crate::protocol::{write_frame, ErrorCode, RunnerError, RunnerEvent, MAX_FRAME_BYTES};

pub struct EventSink<W: Write> {
    out: W,
    broken: bool,
}

impl<W: Write> EventSink<W> {
    pub fn new(out: W) -> Self {
        Self { out, broken: false }
    }

    /// Write errors are swallowed on purpose: when the operator restarts, the exec stream goes
    /// away, and the run must still finish and store its result for the operator to recover.
    /// (Rust ignores SIGPIPE, so a closed stream is an error here, not a kill.)
    pub fn emit(&mut self, event: &RunnerEvent) {
        if self.broken {
            return;
        }
        let written = serde_json::to_vec(event)
            .map_err(std::io::Error::other)
            .and_then(|payload| {
                if payload.len() <= MAX_FRAME_BYTES {
                    return write_frame(&mut self.out, &payload);
                }
                // The reader would drop it unread; say so instead of sending it.
                let error = RunnerEvent::Error(RunnerError {
                    code: ErrorCode::LimitExceeded,
                    message: format!(
                        "an event of {} bytes exceeds the frame limit of {MAX_FRAME_BYTES}",
                        payload.len()
                    ),
                });
                let payload = serde_json::to_vec(&error).map_err(std::io::Error::other)?;
                write_frame(&mut self.out, &payload)
            });
        self.broken = written.is_err();
    }

    pub fn emit_stdout(&mut self, data: String) {
        self.emit(&RunnerEvent::Stdout { data });
    }

    pub fn emit_stderr(&mut self, data: String) {
        self.emit(&RunnerEvent::Stderr { data });
    }
}
