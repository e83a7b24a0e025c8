//! Length-prefixed framing shared by the runner's stdin and stdout.
//!
//! A frame is a header line `KUBEXEC/1 <byte-length>\n` followed by exactly that many payload
//! bytes. The length makes every frame self-delimiting, so neither side ever relies on EOF
//! (a websocket exec may never deliver one).

use std::io::{self, BufRead, Read, Write};

use crate::error::{Error, Result};
use crate::protocol::RunnerEvent;

/// Header prefix; the `1` is the framing version.
pub const FRAME_MAGIC: &[u8] = b"KUBEXEC/1 ";

/// Largest event frame (runner to operator or api) either side handles. Output chunks are at
/// most 64 KiB of text and a result is fitted to it (see [`ExecResult::fit_frame`]), so a
/// larger frame is never the runner's: the decoder drops it unread, and the runner never writes
/// one. Together with the decoder's header check this bounds what a reader buffers per stream.
///
/// [`ExecResult::fit_frame`]: crate::protocol::ExecResult::fit_frame
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Largest spec frame (operator to runner) the runner reads. A spec is an Execution's inline
/// code and files (the object stays under etcd's ~1.5 MiB) plus its resolved env; the operator
/// refuses to send a larger one rather than have the runner drop it.
pub const MAX_SPEC_FRAME_BYTES: usize = 4 << 20;

/// Magic + 20 digits (u64::MAX) + newline.
const MAX_HEADER_BYTES: usize = FRAME_MAGIC.len() + 20 + 1;

/// Returns `payload` wrapped in one frame.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = format!("KUBEXEC/1 {}\n", payload.len()).into_bytes();
    frame.extend_from_slice(payload);
    frame
}

/// Writes one frame and flushes, so the reader sees it immediately.
pub fn write_frame(out: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    out.write_all(&encode_frame(payload))?;
    out.flush()
}

/// Parses a complete header line (including its trailing newline) into the payload length.
fn parse_header(line: &[u8], max_len: usize) -> Option<usize> {
    let digits = line.strip_prefix(FRAME_MAGIC)?.strip_suffix(b"\n")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (len <= max_len).then_some(len)
}

/// Reads one frame header from a blocking reader and returns the payload length, leaving the
/// payload unread (the caller may stream it instead of buffering it).
pub fn read_frame_header(input: &mut impl BufRead, max_len: usize) -> Result<usize> {
    let mut line = Vec::with_capacity(MAX_HEADER_BYTES);
    input
        .take(MAX_HEADER_BYTES as u64)
        .read_until(b'\n', &mut line)
        .map_err(|source| Error::Io {
            context: "reading frame header".into(),
            source,
        })?;
    if line.is_empty() {
        return Err(Error::InvalidSpec(
            "input ended before a frame header".into(),
        ));
    }
    parse_header(&line, max_len).ok_or_else(|| {
        Error::InvalidSpec(format!(
            "bad frame header {:?}: expected `KUBEXEC/1 <length>` (at most {max_len} bytes)",
            String::from_utf8_lossy(&line)
        ))
    })
}

/// Reads exactly one frame from a blocking reader. Strict: anything but a frame is an error.
pub fn read_frame(input: &mut impl BufRead, max_len: usize) -> Result<Vec<u8>> {
    let len = read_frame_header(input, max_len)?;
    let mut payload = vec![0; len];
    input.read_exact(&mut payload).map_err(|source| Error::Io {
        context: format!("reading a {len}-byte frame payload"),
        source,
    })?;
    Ok(payload)
}

/// Incremental decoder for a stream of frames, for the reading side of the runner's stdout.
///
/// Push bytes in as they arrive, in chunks of any size, then pull out every complete frame.
/// Bytes that are not part of a well-formed frame (a broken header, noise before the first
/// header) are skipped up to the next `KUBEXEC/1 ` and counted in [`skipped_bytes`].
///
/// ```
/// use kubexec_runner::protocol::{encode_frame, FrameDecoder, RunnerEvent};
///
/// let bytes = encode_frame(br#"{"type":"stdout","data":"hi\n"}"#);
/// let mut decoder = FrameDecoder::new();
/// let (first, rest) = bytes.split_at(7);
/// decoder.push(first);
/// assert!(decoder.next_event().is_none());
/// decoder.push(rest);
/// let event = decoder.next_event().unwrap().unwrap();
/// assert_eq!(event, RunnerEvent::Stdout { data: "hi\n".into() });
/// ```
///
/// [`skipped_bytes`]: FrameDecoder::skipped_bytes
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    max_frame_bytes: usize,
    skipped: u64,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::with_max_frame_bytes(MAX_FRAME_BYTES)
    }

    /// A header announcing more than `max_frame_bytes` is treated as noise, which bounds memory.
    pub fn with_max_frame_bytes(max_frame_bytes: usize) -> Self {
        Self {
            buffer: Vec::new(),
            max_frame_bytes,
            skipped: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes discarded so far because they were not part of a valid frame.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// Bytes held back waiting for the rest of a frame. Non-zero at end of stream means the last
    /// frame was cut off.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// The next complete frame's payload, or `None` until more bytes are pushed.
    pub fn next_frame(&mut self) -> Option<Vec<u8>> {
        loop {
            if !self.align_to_magic() {
                return None;
            }
            let window = &self.buffer[..self.buffer.len().min(MAX_HEADER_BYTES)];
            let Some(newline) = window.iter().position(|&b| b == b'\n') else {
                if window.len() == MAX_HEADER_BYTES {
                    self.discard(1); // too long to be a header: resync past this magic
                    continue;
                }
                return None;
            };
            let header_len = newline + 1;
            let Some(len) = parse_header(&self.buffer[..header_len], self.max_frame_bytes) else {
                self.discard(1);
                continue;
            };
            if self.buffer.len() < header_len + len {
                return None;
            }
            let payload = self.buffer[header_len..header_len + len].to_vec();
            self.buffer.drain(..header_len + len);
            return Some(payload);
        }
    }

    /// The next complete frame parsed as a [`RunnerEvent`]. A frame that is not a valid event is
    /// returned as an error and consumed, so the caller can log it and keep reading.
    pub fn next_event(&mut self) -> Option<Result<RunnerEvent, serde_json::Error>> {
        self.next_frame()
            .map(|payload| serde_json::from_slice(&payload))
    }

    /// Drops noise before the next magic. Returns whether the buffer now starts with it.
    fn align_to_magic(&mut self) -> bool {
        if self.buffer.starts_with(FRAME_MAGIC) {
            return true;
        }
        let found = self
            .buffer
            .windows(FRAME_MAGIC.len())
            .position(|w| w == FRAME_MAGIC);
        match found {
            Some(start) => {
                self.discard(start);
                true
            }
            None => {
                // Keep a tail that may be the start of a magic split across pushes.
                let keep = (1..FRAME_MAGIC.len())
                    .rev()
                    .find(|&n| self.buffer.ends_with(&FRAME_MAGIC[..n]))
                    .unwrap_or(0);
                self.discard(self.buffer.len() - keep);
                false
            }
        }
    }

    fn discard(&mut self, count: usize) {
        self.buffer.drain(..count);
        self.skipped += count as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(decoder: &mut FrameDecoder) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| decoder.next_frame()).collect()
    }

    #[test]
    fn encodes_header_and_payload() {
        assert_eq!(encode_frame(b"abc"), b"KUBEXEC/1 3\nabc");
        assert_eq!(encode_frame(b""), b"KUBEXEC/1 0\n");
    }

    #[test]
    fn decodes_frames_split_at_every_byte() {
        let mut stream = encode_frame(b"first");
        stream.extend(encode_frame(b""));
        stream.extend(encode_frame("üñí\ncode\n".as_bytes()));
        let mut decoder = FrameDecoder::new();
        let mut got = Vec::new();
        for byte in &stream {
            decoder.push(std::slice::from_ref(byte));
            got.extend(frames(&mut decoder));
        }
        assert_eq!(
            got,
            vec![
                b"first".to_vec(),
                Vec::new(),
                "üñí\ncode\n".as_bytes().to_vec()
            ]
        );
        assert_eq!(decoder.skipped_bytes(), 0);
        assert_eq!(decoder.buffered_bytes(), 0);
    }

    #[test]
    fn skips_garbage_and_broken_headers() {
        let mut stream = b"noise\nKUBEXEC/1 x\nKUBEXEC/1 99999999999999999999999\nKUB".to_vec();
        stream.extend(encode_frame(b"ok"));
        stream.extend(b"KUBEXEC/1 12345678901234567890123456789\n");
        stream.extend(encode_frame(b"also ok"));
        let mut decoder = FrameDecoder::new();
        decoder.push(&stream);
        assert_eq!(
            frames(&mut decoder),
            vec![b"ok".to_vec(), b"also ok".to_vec()]
        );
        assert!(decoder.skipped_bytes() > 0);
    }

    #[test]
    fn magic_split_across_pushes_is_kept() {
        let frame = encode_frame(b"x");
        let mut decoder = FrameDecoder::new();
        decoder.push(b"garbageKUBE");
        assert!(decoder.next_frame().is_none());
        decoder.push(&frame[4..]);
        assert_eq!(decoder.next_frame(), Some(b"x".to_vec()));
        assert_eq!(decoder.skipped_bytes(), 7);
    }

    #[test]
    fn oversized_frames_are_noise() {
        let mut decoder = FrameDecoder::with_max_frame_bytes(4);
        decoder.push(&encode_frame(b"too long"));
        decoder.push(&encode_frame(b"fine"));
        assert_eq!(frames(&mut decoder), vec![b"fine".to_vec()]);
    }

    #[test]
    fn bad_event_json_is_reported_and_consumed() {
        let mut decoder = FrameDecoder::new();
        decoder.push(&encode_frame(b"{not json"));
        decoder.push(&encode_frame(br#"{"type":"stderr","data":"e"}"#));
        assert!(decoder.next_event().is_some_and(|r| r.is_err()));
        let event = decoder.next_event().and_then(|r| r.ok());
        assert_eq!(event, Some(RunnerEvent::Stderr { data: "e".into() }));
    }

    #[test]
    fn strict_reader_reads_one_frame_and_rejects_garbage() {
        let mut stream = encode_frame(b"{}");
        stream.extend(b"trailing bytes are left alone");
        let mut reader = io::Cursor::new(stream);
        assert_eq!(read_frame(&mut reader, 1024).ok(), Some(b"{}".to_vec()));

        for bad in [
            &b""[..],
            b"hello\n",
            b"KUBEXEC/1 \n",
            b"KUBEXEC/1 5\nab",
            b"KUBEXEC/1 2048\n",
        ] {
            assert!(
                read_frame(&mut io::Cursor::new(bad), 1024).is_err(),
                "{bad:?}"
            );
        }
    }

    /// Property tests of the decoder against arbitrary input (a bounded number of cases, so
    /// they run with the unit tests).
    mod props {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::*;

        const MAX_TEST_FRAME: usize = 512;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 256,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        /// Splits `bytes` at the given cut points (taken modulo its length).
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
            fn frames_survive_any_split(
                payloads in vec(vec(any::<u8>(), 0..MAX_TEST_FRAME), 0..8),
                cuts in vec(any::<usize>(), 0..16),
            ) {
                let stream: Vec<u8> = payloads.iter().flat_map(|p| encode_frame(p)).collect();
                let mut decoder = FrameDecoder::with_max_frame_bytes(MAX_TEST_FRAME);
                let mut got = Vec::new();
                for chunk in chunks(&stream, &cuts) {
                    decoder.push(&chunk);
                    got.extend(frames(&mut decoder));
                }
                prop_assert_eq!(got, payloads);
                prop_assert_eq!(decoder.skipped_bytes(), 0);
                prop_assert_eq!(decoder.buffered_bytes(), 0);
            }

            #[test]
            fn noise_is_skipped_and_never_grows_the_buffer(
                noise in vec(any::<u8>(), 0..4096),
                magic_noise in vec(prop_oneof![Just(FRAME_MAGIC.to_vec()), vec(any::<u8>(), 0..8)], 0..32),
                cuts in vec(any::<usize>(), 0..16),
            ) {
                let mut stream = noise;
                stream.extend(magic_noise.concat());
                let mut decoder = FrameDecoder::with_max_frame_bytes(MAX_TEST_FRAME);
                for chunk in chunks(&stream, &cuts) {
                    decoder.push(&chunk);
                    while decoder.next_frame().is_some() {}
                    // At most one unfinished frame is ever held.
                    prop_assert!(decoder.buffered_bytes() <= MAX_HEADER_BYTES + MAX_TEST_FRAME);
                }
                prop_assert!(decoder.skipped_bytes() <= stream.len() as u64);
            }

            #[test]
            fn a_frame_after_noise_is_found(
                noise in vec(any::<u8>().prop_filter("no magic start", |b| *b != b'K'), 0..1024),
                payload in vec(any::<u8>(), 0..MAX_TEST_FRAME),
                cuts in vec(any::<usize>(), 0..8),
            ) {
                let mut stream = noise.clone();
                stream.extend(encode_frame(&payload));
                let mut decoder = FrameDecoder::with_max_frame_bytes(MAX_TEST_FRAME);
                let mut got = Vec::new();
                for chunk in chunks(&stream, &cuts) {
                    decoder.push(&chunk);
                    got.extend(frames(&mut decoder));
                }
                prop_assert_eq!(got, vec![payload]);
                prop_assert_eq!(decoder.skipped_bytes(), noise.len() as u64);
            }

            #[test]
            fn oversized_frames_are_never_returned(
                len in (MAX_TEST_FRAME + 1)..(4 * MAX_TEST_FRAME),
                cuts in vec(any::<usize>(), 0..8),
            ) {
                let big = vec![b'x'; len];
                let mut stream = encode_frame(&big);
                stream.extend(encode_frame(b"after"));
                let mut decoder = FrameDecoder::with_max_frame_bytes(MAX_TEST_FRAME);
                let mut got = Vec::new();
                for chunk in chunks(&stream, &cuts) {
                    decoder.push(&chunk);
                    got.extend(frames(&mut decoder));
                }
                prop_assert_eq!(got, vec![b"after".to_vec()]);
            }

            #[test]
            fn the_strict_reader_never_reads_past_its_limit(bytes in vec(any::<u8>(), 0..2048)) {
                let mut reader = io::Cursor::new(&bytes);
                if let Ok(payload) = read_frame(&mut reader, MAX_TEST_FRAME) {
                    prop_assert!(payload.len() <= MAX_TEST_FRAME);
                    prop_assert!(bytes.starts_with(FRAME_MAGIC));
                }
            }
        }
    }
}
