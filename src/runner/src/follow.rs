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
    /// Byte of the file the follower started at.
    start: u64,
    capture: HeadTailCapture,
    chunker: Utf8Chunker,
    buffer: Vec<u8>,
}

impl OutputFollower {
    pub fn open(path: &Path, cap_bytes: u64) -> Result<Self> {
        Self::open_at(path, cap_bytes, 0)
    }

    /// [`Self::open`], starting at byte `start` of the file (a resumed stream).
    pub fn open_at(path: &Path, cap_bytes: u64, start: u64) -> Result<Self> {
        let mut file = File::open(path).context(|| format!("opening {}", path.display()))?;
        if start > 0 {
            use std::io::Seek;
            file.seek(io::SeekFrom::Start(start))
                .context(|| format!("seeking in {}", path.display()))?;
        }
        Ok(Self {
            file,
            start,
            capture: HeadTailCapture::new(cap_bytes),
            chunker: Utf8Chunker::default(),
            buffer: vec![0; CHUNK_BYTES],
        })
    }

    /// Reads what was appended since the last poll, passing each chunk's text to `emit`.
    pub fn poll(&mut self, emit: impl FnMut(String)) -> io::Result<()> {
        self.poll_up_to(u64::MAX, emit)
    }

    /// [`Self::poll`], reading no further than byte `end` of the file.
    fn poll_up_to(&mut self, end: u64, mut emit: impl FnMut(String)) -> io::Result<()> {
        let mut read_now = 0;
        while read_now < MAX_BYTES_PER_POLL {
            let left = end.saturating_sub(self.start + self.capture.total_bytes());
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(CHUNK_BYTES);
            if want == 0 {
                break;
            }
            let n = match self.file.read(&mut self.buffer[..want]) {
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

    /// Reads up to byte `end` of the file (the run's output ends there, see
    /// [`crate::output_pipe`]; anything after it was written by background processes once the
    /// run had ended, and stays in the file only), or to the file's end if it is shorter, and
    /// returns the capture.
    pub fn finish_at(
        mut self,
        end: u64,
        mut emit: impl FnMut(String),
    ) -> io::Result<CapturedOutput> {
        loop {
            let before = self.capture.total_bytes();
            self.poll_up_to(end, &mut emit)?;
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
        writer.write_all(b"late").expect("write");
        let captured = follower
            .finish_at(7, |t| streamed.push_str(&t))
            .expect("finish");
        assert_eq!(streamed, "abcdéf", "nothing after the end");
        assert_eq!(captured.total_bytes, 7);
        assert!(captured.truncated);
        assert!(captured.text.starts_with("ab") && captured.text.ends_with("f"));
    }

    #[test]
    fn starts_at_an_offset_and_still_ends_at_the_run_end() {
        let dir = TempDir::new("follow-offset");
        let path = dir.path().join("out");
        std::fs::write(&path, "0123456789late").expect("write");
        let follower = OutputFollower::open_at(&path, 100, 4).expect("open");
        let mut streamed = String::new();
        let captured = follower
            .finish_at(10, |t| streamed.push_str(&t))
            .expect("finish");
        assert_eq!(streamed, "456789");
        assert_eq!(captured.total_bytes, 6);
    }
}
