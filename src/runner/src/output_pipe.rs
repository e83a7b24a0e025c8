//! The user process's stdout and stderr: pipes that the runner drains into the run directory's
//! files (`stdout`, `stderr`).
//!
//! A pipe, unlike a file, lets the runner decide where an execution's output ends. At the main
//! process's exit it takes what was written until then: that snapshot is what the result
//! reports and what followers stop at. A background process that inherited the write end
//! (`(timeout 8 yes) &`) therefore cannot hold the execution open. What such processes write
//! after the end goes to a detached drainer (`kubexec-runner drain-output`) that appends at most
//! [`POST_END_CAP_BYTES`] more to the file and discards the rest, so they neither block, nor get
//! SIGPIPE, nor fill the workspace.

use std::fs::{File, OpenOptions};
use std::io::{self, PipeReader, PipeWriter, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, IoContext, Result};

/// What background processes may still add to a stream's file after the execution ended.
pub const POST_END_CAP_BYTES: u64 = 1 << 20;
/// The pipe buffer asked for: a chatty process stalls less between two polls. The kernel may
/// give less (an unprivileged process gets at most `/proc/sys/fs/pipe-max-size`).
const PIPE_BYTES: libc::c_int = 1 << 20;
const CHUNK_BYTES: usize = 64 * 1024;
/// The subcommand of the drainer.
pub const DRAIN_COMMAND: &str = "drain-output";

/// One output stream of the user process, and the file it is drained into.
pub struct OutputPipe {
    reader: PipeReader,
    file: File,
    path: PathBuf,
    /// Bytes the pipe holds at most.
    capacity: usize,
    /// Every write end is closed (a read returned end of file).
    closed: bool,
    buffer: Vec<u8>,
}

impl OutputPipe {
    /// A pipe for one stream, drained into `path` (created if missing, appended to); the write
    /// end is for the user process.
    pub fn create(path: &Path) -> Result<(Self, PipeWriter)> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .context(|| format!("opening {}", path.display()))?;
        let (reader, writer) = io::pipe().context(|| "creating an output pipe".into())?;
        let fd = reader.as_raw_fd();
        // SAFETY: fcntl on a descriptor this function owns; failure leaves the default size.
        let capacity = unsafe {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_BYTES);
            libc::fcntl(fd, libc::F_GETPIPE_SZ)
        };
        set_nonblocking(fd, true).context(|| "configuring an output pipe".into())?;
        let pipe = Self {
            reader,
            file,
            path: path.to_path_buf(),
            capacity: usize::try_from(capacity).unwrap_or(0).max(4096),
            closed: false,
            buffer: vec![0; CHUNK_BYTES],
        };
        Ok((pipe, writer))
    }

    /// Moves what the pipe holds into the file, at most `budget` bytes; returns how many.
    pub fn pump(&mut self, budget: usize) -> io::Result<usize> {
        let mut moved = 0;
        while moved < budget && !self.closed {
            let want = CHUNK_BYTES.min(budget - moved);
            match self.reader.read(&mut self.buffer[..want]) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.file.write_all(&self.buffer[..n])?;
                    moved += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    /// At the main process's exit: moves what was written before it into the file, and returns
    /// the file's length, the end of the execution's output. Everything written before the exit
    /// is in the pipe, which holds at most its capacity: reading that much is enough, however
    /// fast a background process keeps writing.
    pub fn snapshot_at_exit(&mut self) -> io::Result<u64> {
        self.pump(self.capacity)?;
        Ok(self.file.metadata()?.len())
    }

    /// Hands what background processes write from now on to a detached drainer. When nothing
    /// holds the write end any more, there is nothing to hand off. If the drainer cannot start,
    /// the pipe is closed and a late writer gets EPIPE.
    pub fn hand_off(self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        set_nonblocking(self.reader.as_raw_fd(), false)
            .context(|| "configuring an output pipe".into())?;
        let input = OwnedFd::from(self.reader);
        let mut command = Command::new("/proc/self/exe");
        command
            .arg(DRAIN_COMMAND)
            .arg("--to")
            .arg(&self.path)
            .arg("--max-bytes")
            .arg(POST_END_CAP_BYTES.to_string())
            .stdin(Stdio::from(input))
            // Never the exec stream: a drainer holding it would keep the exec open.
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                // Out of the exec's session, so that nothing aimed at it stops the drainer.
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // Not waited for: once this runner exits, PID 1 reaps it.
        command
            .spawn()
            .map(drop)
            .map_err(|source| Error::SpawnFailed {
                program: DRAIN_COMMAND.into(),
                source,
            })
    }
}

fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a valid descriptor borrowed from the caller.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags == -1 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `kubexec-runner drain-output --to FILE --max-bytes N`: appends stdin to FILE until N bytes,
/// then marks the cut once and discards the rest, until every writer is gone.
pub fn drain(input: &mut impl Read, to: &Path, max_bytes: u64) -> Result<()> {
    let mut file = OpenOptions::new()
        .append(true)
        .open(to)
        .context(|| format!("opening {}", to.display()))?;
    let mut buffer = vec![0; CHUNK_BYTES];
    let mut kept = 0u64;
    let mut marked = false;
    loop {
        let n = match input.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(Error::Io {
                    context: "reading late output".into(),
                    source,
                })
            }
        };
        let keep = usize::try_from(max_bytes.saturating_sub(kept))
            .unwrap_or(usize::MAX)
            .min(n);
        // A failed write (a full disk, the file removed) only loses late output; keep draining
        // so the writers never block.
        let _ = file.write_all(&buffer[..keep]);
        kept += keep as u64;
        if keep < n && !marked {
            marked = true;
            let _ = write!(
                file,
                "\n[kubexec: output written after the execution ended is capped at {max_bytes} bytes; the rest was discarded]\n"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn the_snapshot_holds_what_was_written_before_it() {
        let dir = TempDir::new("output-pipe");
        let path = dir.path().join("stdout");
        let (mut pipe, mut writer) = OutputPipe::create(&path).expect("pipe");
        writer.write_all(b"before\n").expect("write");
        assert_eq!(pipe.snapshot_at_exit().expect("snapshot"), 7);
        writer.write_all(b"after\n").expect("write");
        assert_eq!(std::fs::read(&path).expect("file"), b"before\n");
        drop(writer);
        assert_eq!(pipe.pump(1 << 20).expect("pump"), 6);
        assert!(pipe.closed, "end of file once the writer is gone");
    }

    #[test]
    fn the_drainer_keeps_at_most_its_cap_and_marks_the_cut() {
        let dir = TempDir::new("drain");
        let path = dir.path().join("stdout");
        std::fs::write(&path, b"run\n").expect("file");
        let late = vec![b'y'; 10_000];
        drain(&mut late.as_slice(), &path, 100).expect("drains");
        let text = String::from_utf8(std::fs::read(&path).expect("file")).expect("utf-8");
        assert!(text.starts_with(&format!("run\n{}", "y".repeat(100))));
        assert!(text.ends_with("capped at 100 bytes; the rest was discarded]\n"));
        assert!(text.len() < 4 + 100 + 200, "{}", text.len());
    }
}
