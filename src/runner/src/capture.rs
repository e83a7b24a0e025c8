//! Bounded capture of an output stream: the first and the last bytes are kept, the total is
//! counted, and the middle is dropped once the cap is reached.

use std::collections::VecDeque;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedOutput {
    pub text: String,
    pub total_bytes: u64,
    pub truncated: bool,
}

#[derive(Debug)]
pub struct HeadTailCapture {
    head: Vec<u8>,
    head_cap: usize,
    tail: VecDeque<u8>,
    tail_cap: usize,
    total: u64,
}

impl HeadTailCapture {
    /// Keeps at most `cap` bytes: the first half and the last half.
    pub fn new(cap: u64) -> Self {
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        let head_cap = cap / 2;
        Self {
            head: Vec::new(),
            head_cap,
            tail: VecDeque::new(),
            tail_cap: cap - head_cap,
            total: 0,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let room = self.head_cap - self.head.len();
        if room > 0 {
            let (to_head, rest) = bytes.split_at(room.min(bytes.len()));
            self.head.extend_from_slice(to_head);
            bytes = rest;
        }
        if bytes.len() >= self.tail_cap {
            self.tail.clear();
            bytes = &bytes[bytes.len() - self.tail_cap..];
        } else {
            let overflow = (self.tail.len() + bytes.len()).saturating_sub(self.tail_cap);
            self.tail.drain(..overflow);
        }
        self.tail.extend(bytes);
    }

    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    pub fn finish(self) -> CapturedOutput {
        let kept = (self.head.len() + self.tail.len()) as u64;
        let truncated = self.total > kept;
        let mut bytes = self.head;
        if truncated {
            // Make the cut visible to whoever reads the capped text.
            let omitted = self.total - kept;
            bytes.extend_from_slice(format!("\n[... {omitted} bytes truncated ...]\n").as_bytes());
        }
        bytes.extend(self.tail);
        CapturedOutput {
            text: String::from_utf8_lossy(&bytes).into_owned(),
            total_bytes: self.total,
            truncated,
        }
    }
}

/// Turns a byte stream into UTF-8 chunks without splitting a character across chunks: an
/// incomplete sequence at the end of one chunk waits for the next.
#[derive(Debug, Default)]
pub struct Utf8Chunker {
    pending: Vec<u8>,
}

impl Utf8Chunker {
    pub fn decode(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let complete = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // `error_len() == None` means the input ended inside a character.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => incomplete_suffix_start(&self.pending),
        };
        let rest = self.pending.split_off(complete);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }

    /// Whatever is left, with an unfinished character replaced.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// Where a trailing, possibly incomplete UTF-8 sequence starts (the end if there is none).
fn incomplete_suffix_start(bytes: &[u8]) -> usize {
    let start = bytes.len().saturating_sub(3);
    (start..bytes.len())
        .find(|&i| {
            std::str::from_utf8(&bytes[i..])
                .err()
                .is_some_and(|e| e.valid_up_to() == 0 && e.error_len().is_none())
        })
        .unwrap_or(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_under_the_cap() {
        let mut capture = HeadTailCapture::new(10);
        capture.push(b"hello");
        capture.push(b"world");
        let out = capture.finish();
        assert_eq!(
            out,
            CapturedOutput {
                text: "helloworld".into(),
                total_bytes: 10,
                truncated: false
            }
        );
    }

    #[test]
    fn keeps_head_and_tail_over_the_cap() {
        let mut capture = HeadTailCapture::new(6);
        for chunk in [&b"abcd"[..], b"efgh", b"ij", b"", b"klmnop"] {
            capture.push(chunk);
        }
        let out = capture.finish();
        assert_eq!(out.total_bytes, 16);
        assert!(out.truncated);
        assert!(
            out.text.starts_with("abc\n[... 10 bytes truncated ...]\n"),
            "{}",
            out.text
        );
        assert!(out.text.ends_with("nop"));
    }

    #[test]
    fn large_input_byte_by_byte_matches_one_push() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut whole = HeadTailCapture::new(1000);
        whole.push(&data);
        let mut split = HeadTailCapture::new(1000);
        data.chunks(7).for_each(|c| split.push(c));
        assert_eq!(whole.finish(), split.finish());
    }

    #[test]
    fn zero_cap_counts_only() {
        let mut capture = HeadTailCapture::new(0);
        capture.push(b"abc");
        let out = capture.finish();
        assert_eq!((out.total_bytes, out.truncated), (3, true));
    }

    #[test]
    fn chunker_never_splits_characters() {
        let text = "héllo wörld ✓ 🎉";
        let mut chunker = Utf8Chunker::default();
        let mut joined = String::new();
        for byte in text.as_bytes() {
            let piece = chunker.decode(std::slice::from_ref(byte));
            assert!(!piece.contains('\u{fffd}'));
            joined.push_str(&piece);
        }
        joined.push_str(&chunker.finish());
        assert_eq!(joined, text);
    }

    #[test]
    fn chunker_replaces_invalid_bytes_and_keeps_going() {
        let mut chunker = Utf8Chunker::default();
        assert_eq!(chunker.decode(b"a\xffb\xe2\x9c"), "a\u{fffd}b");
        assert_eq!(chunker.decode(b"\x93!"), "✓!");
        assert_eq!(chunker.decode(b"\xe2"), "");
        assert_eq!(chunker.finish(), "\u{fffd}");
    }
}
