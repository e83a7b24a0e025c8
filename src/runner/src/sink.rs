//! Writes runner events as frames to the exec stream.

use std::io::Write;

use crate::protocol::{write_frame, RunnerEvent};

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
            .and_then(|payload| write_frame(&mut self.out, &payload));
        self.broken = written.is_err();
    }

    pub fn emit_stdout(&mut self, data: String) {
        self.emit(&RunnerEvent::Stdout { data });
    }

    pub fn emit_stderr(&mut self, data: String) {
        self.emit(&RunnerEvent::Stderr { data });
    }
}
