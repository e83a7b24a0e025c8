//! Atomic file writes: readers see the old content or the new, never a partial file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::base64;
use crate::error::{IoContext, Result};
use crate::paths::Workspace;
use crate::protocol::{Encoding, FileSpec};

pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// A file being written next to its destination, renamed over it on [`commit`], removed on drop
/// otherwise.
///
/// [`commit`]: PendingFile::commit
#[derive(Debug)]
pub struct PendingFile {
    temp: PathBuf,
    destination: PathBuf,
    file: File,
}

impl PendingFile {
    /// The temp file lives in the destination's directory so the final rename stays on one
    /// filesystem and is atomic.
    pub fn create(destination: &Path, mode: u32) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = destination
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let temp = destination.with_file_name(format!(
            ".{name}.kubexec-tmp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(&temp)
            .context(|| format!("creating {}", temp.display()))?;
        // The umask may have masked bits the caller asked for explicitly.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777))
            .context(|| format!("setting mode of {}", temp.display()))?;
        Ok(Self {
            temp,
            destination: destination.to_path_buf(),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.temp
    }

    pub fn writer(&mut self) -> &mut File {
        &mut self.file
    }

    /// Flushes to disk, then renames into place.
    pub fn commit(mut self) -> Result<()> {
        self.file
            .sync_all()
            .context(|| format!("syncing {}", self.temp.display()))?;
        std::fs::rename(&self.temp, &self.destination)
            .context(|| format!("renaming into {}", self.destination.display()))?;
        self.temp.clear(); // nothing left to clean up
        if let Some(dir) = self.destination.parent() {
            // Makes the rename itself durable; failure only costs durability, not correctness.
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `content` to `destination` atomically.
pub fn write_atomically(destination: &Path, content: &[u8], mode: u32) -> Result<()> {
    let mut pending = PendingFile::create(destination, mode)?;
    pending
        .writer()
        .write_all(content)
        .context(|| format!("writing {}", destination.display()))?;
    pending.commit()
}

/// Writes an exec spec's inline files and returns their workspace-relative paths. Every path
/// and every content is checked before the first file is touched.
pub fn write_spec_files(workspace: &Workspace, files: &[FileSpec]) -> Result<Vec<String>> {
    let mut decoded = Vec::with_capacity(files.len());
    for file in files {
        workspace.relative_path(&file.path)?;
        let content = match file.encoding {
            Encoding::Utf8 => file.content.as_bytes().to_vec(),
            Encoding::Base64 => base64::decode(&file.content)?,
        };
        decoded.push(content);
    }
    let mut written = Vec::with_capacity(files.len());
    for (file, content) in files.iter().zip(decoded) {
        let target = workspace.prepare_write(&file.path)?;
        write_atomically(&target.absolute, &content, DEFAULT_FILE_MODE)?;
        written.push(target.relative);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::testutil::TempDir;

    fn file(path: &str, content: &str, encoding: Encoding) -> FileSpec {
        FileSpec {
            path: path.into(),
            content: content.into(),
            encoding,
        }
    }

    #[test]
    fn writes_utf8_and_base64_files() {
        let dir = TempDir::new("files");
        let ws = Workspace::open(dir.path()).expect("workspace");
        let files = [
            file("./a/b.txt", "hello", Encoding::Utf8),
            file("bin", "AAEC", Encoding::Base64),
        ];
        let written = write_spec_files(&ws, &files).expect("written");
        assert_eq!(written, vec!["a/b.txt", "bin"]);
        assert_eq!(
            std::fs::read(dir.path().join("a/b.txt")).ok(),
            Some(b"hello".to_vec())
        );
        assert_eq!(
            std::fs::read(dir.path().join("bin")).ok(),
            Some(vec![0, 1, 2])
        );
        let leftovers = std::fs::read_dir(dir.path().join("a"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(leftovers, 1, "no temp files left behind");
    }

    #[test]
    fn a_bad_path_writes_nothing() {
        let dir = TempDir::new("files-bad");
        let ws = Workspace::open(dir.path()).expect("workspace");
        let files = [
            file("ok.txt", "x", Encoding::Utf8),
            file("../escape.txt", "x", Encoding::Utf8),
        ];
        assert!(matches!(
            write_spec_files(&ws, &files),
            Err(Error::PathEscapesWorkspace(_))
        ));
        assert!(!dir.path().join("ok.txt").exists());
    }

    #[test]
    fn overwrites_atomically_with_mode() {
        let dir = TempDir::new("files-mode");
        let path = dir.path().join("script.sh");
        write_atomically(&path, b"old", 0o644).expect("first");
        write_atomically(&path, b"new", 0o755).expect("second");
        let mode = std::fs::metadata(&path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
        assert_eq!(mode.ok().map(|m| m & 0o777), Some(0o755));
        assert_eq!(std::fs::read(&path).ok(), Some(b"new".to_vec()));
    }
}
