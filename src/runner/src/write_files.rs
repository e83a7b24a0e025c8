//! `write-files`: a streamed, all-or-nothing upload of many (possibly large) files.
//!
//! Memory stays bounded whatever the file sizes: each file's bytes are copied straight from
//! stdin into a temp file beside its destination. Only when the `end` frame arrives and every
//! file was received are the temp files renamed into place; any failure before that removes
//! them all. (Missing parent directories are created on the way and are not removed again.)

use std::io::{self, BufRead};

use crate::error::{Error, IoContext, Result};
use crate::files::{PendingFile, DEFAULT_FILE_MODE};
use crate::paths::Workspace;
use crate::protocol::{read_frame, FilesWritten, WriteFilesFrame};

/// A header frame is a small JSON object; anything larger is a broken stream.
const MAX_HEADER_FRAME_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteLimits {
    pub max_file_bytes: Option<u64>,
    pub max_files: Option<usize>,
}

pub fn write_files(
    workspace: &Workspace,
    input: &mut impl BufRead,
    limits: WriteLimits,
) -> Result<FilesWritten> {
    let mut pending: Vec<(String, PendingFile)> = Vec::new();
    loop {
        let header = read_frame(input, MAX_HEADER_FRAME_BYTES)?;
        let frame: WriteFilesFrame = serde_json::from_slice(&header)
            .map_err(|e| Error::InvalidSpec(format!("bad write-files frame: {e}")))?;
        let (path, size, mode) = match frame {
            WriteFilesFrame::End => break,
            WriteFilesFrame::File { path, size, mode } => (path, size, mode),
        };
        if limits.max_files.is_some_and(|max| pending.len() >= max) {
            return Err(Error::LimitExceeded(format!(
                "more than {} files",
                pending.len()
            )));
        }
        if let Some(max) = limits.max_file_bytes.filter(|&max| size > max) {
            return Err(Error::LimitExceeded(format!(
                "{path} is {size} bytes, more than {max}"
            )));
        }
        let target = workspace.prepare_write(&path)?;
        let mut file = PendingFile::create(
            &target.absolute,
            mode.map_or(DEFAULT_FILE_MODE, |m| m & 0o777),
        )?;
        let copied = io::copy(&mut io::Read::take(&mut *input, size), file.writer())
            .context(|| format!("receiving {path}"))?;
        if copied != size {
            return Err(Error::InvalidSpec(format!(
                "input ended after {copied} of {size} bytes of {path}"
            )));
        }
        pending.push((target.relative, file));
    }

    let mut files_written = Vec::with_capacity(pending.len());
    for (relative, file) in pending {
        file.commit()?;
        files_written.push(relative);
    }
    Ok(FilesWritten { files_written })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_frame;
    use crate::testutil::TempDir;

    fn file_frame(path: &str, content: &[u8]) -> Vec<u8> {
        let header = WriteFilesFrame::File {
            path: path.into(),
            size: content.len() as u64,
            mode: None,
        };
        let mut bytes = encode_frame(&serde_json::to_vec(&header).unwrap_or_default());
        bytes.extend_from_slice(content);
        bytes
    }

    fn end_frame() -> Vec<u8> {
        encode_frame(br#"{"type":"end"}"#)
    }

    fn entries(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_all_files_at_the_end() {
        let dir = TempDir::new("write-files");
        let ws = Workspace::open(dir.path()).expect("workspace");
        let mut stream = file_frame("a.txt", b"alpha");
        stream.extend(file_frame("sub/b.bin", &[0u8; 100_000]));
        stream.extend(end_frame());
        stream.extend(b"anything after the end frame is not read");
        let written = write_files(&ws, &mut io::Cursor::new(stream), WriteLimits::default())
            .expect("written");
        assert_eq!(written.files_written, vec!["a.txt", "sub/b.bin"]);
        assert_eq!(
            std::fs::read(dir.path().join("a.txt")).ok(),
            Some(b"alpha".to_vec())
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("sub/b.bin"))
                .map(|m| m.len())
                .ok(),
            Some(100_000)
        );
    }

    #[test]
    fn a_bad_path_writes_nothing() {
        let dir = TempDir::new("write-files-bad");
        let ws = Workspace::open(dir.path()).expect("workspace");
        let mut stream = file_frame("good.txt", b"fine");
        stream.extend(file_frame("../escape.txt", b"nope"));
        stream.extend(end_frame());
        let outcome = write_files(&ws, &mut io::Cursor::new(stream), WriteLimits::default());
        assert!(matches!(outcome, Err(Error::PathEscapesWorkspace(_))));
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
    }

    #[test]
    fn truncated_stream_and_limits_write_nothing() {
        let dir = TempDir::new("write-files-limits");
        let ws = Workspace::open(dir.path()).expect("workspace");

        let mut cut = file_frame("a.txt", b"complete");
        cut.extend(&file_frame("b.txt", b"0123456789")[..20]);
        assert!(write_files(&ws, &mut io::Cursor::new(cut), WriteLimits::default()).is_err());

        let mut missing_end = file_frame("a.txt", b"complete");
        missing_end.extend(file_frame("b.txt", b"x"));
        assert!(write_files(
            &ws,
            &mut io::Cursor::new(missing_end),
            WriteLimits::default()
        )
        .is_err());

        let big = [file_frame("a.txt", b"12345"), end_frame()].concat();
        let limits = WriteLimits {
            max_file_bytes: Some(4),
            max_files: None,
        };
        assert!(matches!(
            write_files(&ws, &mut io::Cursor::new(big), limits),
            Err(Error::LimitExceeded(_))
        ));

        let many = [file_frame("a", b"1"), file_frame("b", b"2"), end_frame()].concat();
        let limits = WriteLimits {
            max_file_bytes: None,
            max_files: Some(1),
        };
        assert!(matches!(
            write_files(&ws, &mut io::Cursor::new(many), limits),
            Err(Error::LimitExceeded(_))
        ));

        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
    }
}
