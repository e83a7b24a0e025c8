//! Follows an output file while the process appends to it: feeds the capped capture and yields
//! live chunks for streaming.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::capture::{CapturedOutput, HeadTailCapture, Utf8Chunker};
use crate::error::{IoContext, Result};

/// One live chunk is at most this big, so events stay small whatever the output rate.
const CHUNK_BYTES: usize = 64 * 1024;
/// Per poll, so a process writing faster than we read cannot starve the deadline check.
const MAX_BYTES_PER_POLL: usize = 4 << 20;

pub struct OutputFollower {
    file: File,
    capture: HeadTailCapture,
    chunker: Utf8Chunker,
    buffer: Vec<u8>,
}

impl OutputFollower {
    pub fn open(path: &Path, cap_bytes: u64) -> Result<Self> {
        let file = File::open(path).context(|| format!("opening {}", path.display()))?;
        Ok(Self {
            file,
            capture: HeadTailCapture::new(cap_bytes),
            chunker: Utf8Chunker::default(),
            buffer: vec![0; CHUNK_BYTES],
        })
    }

    /// Reads what was appended since the last poll, passing each chunk's text to `emit`.
    pub fn poll(&mut self, mut emit: impl FnMut(String)) -> io::Result<()> {
        let mut read_now = 0;
        while read_now < MAX_BYTES_PER_POLL {
            let n = match self.file.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            read_now += n;
            self.capture.push(&self.buffer[..n]);
            let text = self.chunker.decode(&self.buffer[..n]);
            if !text.is_empty() {
                emit(text);
            }
        }
        Ok(())
    }

    /// Reads to the current end of the file and returns the capture. Background processes may
    /// write more later; that stays in the file only.
    pub fn finish(mut self, mut emit: impl FnMut(String)) -> io::Result<CapturedOutput> {
        loop {
            let before = self.capture.total_bytes();
            self.poll(&mut emit)?;
            if self.capture.total_bytes() == before {
                break;
            }
        }
        let rest = self.chunker.finish();
        if !rest.is_empty() {
            emit(rest);
        }
        Ok(self.capture.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::io::Write;

    #[test]
    fn follows_appends_and_caps() {
        let dir = TempDir::new("follow");
        let path = dir.path().join("out");
        let mut writer = File::create(&path).expect("create");
        let mut follower = OutputFollower::open(&path, 4).expect("open");
        let mut streamed = String::new();

        writer.write_all(b"ab").expect("write");
        follower.poll(|t| streamed.push_str(&t)).expect("poll");
        assert_eq!(streamed, "ab");
        writer.write_all("cdéf".as_bytes()).expect("write");
        let captured = follower.finish(|t| streamed.push_str(&t)).expect("finish");
        assert_eq!(streamed, "abcdéf");
        assert_eq!(captured.total_bytes, 7);
        assert!(captured.truncated);
        assert!(captured.text.starts_with("ab") && captured.text.ends_with("f"));
    }
}
