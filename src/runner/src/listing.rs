//! `ls` and `cat`: read-only views of the workspace.

use std::fs::Metadata;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::clock::unix_ms;
use crate::error::{Error, IoContext, Result};
use crate::paths::{Workspace, RESERVED_DIR};
use crate::protocol::{FileEntry, FileKind, FileList};

/// Lists `path` (a directory's entries, or a single file), sorted by path. Symlinks are listed,
/// not followed. The runner's own `.kubexec/` is left out.
pub fn list(workspace: &Workspace, path: &str, recursive: bool) -> Result<FileList> {
    let target = workspace.resolve_existing(path)?;
    let metadata = target
        .symlink_metadata()
        .context(|| format!("reading {path}"))?;
    if !metadata.is_dir() {
        return Ok(FileList {
            files: vec![entry(workspace, &target, &metadata)],
        });
    }
    let reserved = workspace.root().join(RESERVED_DIR);
    let mut files = Vec::new();
    let mut pending: Vec<PathBuf> = vec![target.clone()];
    while let Some(dir) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(source) if dir == target => {
                return Err(Error::Io {
                    context: format!("listing {path}"),
                    source,
                })
            }
            // An unreadable subdirectory should not hide everything else.
            Err(_) => continue,
        };
        for child in entries.flatten() {
            let child_path = child.path();
            if child_path == reserved {
                continue;
            }
            let Ok(metadata) = child_path.symlink_metadata() else {
                continue;
            };
            if recursive && metadata.is_dir() {
                pending.push(child_path.clone());
            }
            files.push(entry(workspace, &child_path, &metadata));
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(FileList { files })
}

fn entry(workspace: &Workspace, path: &Path, metadata: &Metadata) -> FileEntry {
    let file_type = metadata.file_type();
    let kind = if file_type.is_symlink() {
        FileKind::Symlink
    } else if file_type.is_dir() {
        FileKind::Directory
    } else if file_type.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    };
    FileEntry {
        path: workspace.display_relative(path),
        size: metadata.len(),
        modified: metadata.modified().map(unix_ms).unwrap_or(0),
        kind,
    }
}

/// Copies a file's bytes from `offset`, at most `max_bytes` of them, to `out`. The offset lets
/// a caller follow a growing file (such as a run's output) in pieces.
pub fn cat(
    workspace: &Workspace,
    path: &str,
    offset: u64,
    max_bytes: Option<u64>,
    out: &mut impl Write,
) -> Result<u64> {
    let target = workspace.resolve_existing(path)?;
    // Non-blocking, so that opening a FIFO does not wait for a writer; a regular file reads
    // the same either way, and anything else is refused below before a read.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&target)
        .context(|| format!("opening {path}"))?;
    let is_file = file
        .metadata()
        .map(|m| m.is_file())
        .context(|| format!("reading {path}"))?;
    if !is_file {
        return Err(Error::NotAFile(path.to_string()));
    }
    file.seek(SeekFrom::Start(offset))
        .context(|| format!("seeking in {path}"))?;
    let copied = io::copy(&mut file.take(max_bytes.unwrap_or(u64::MAX)), out)
        .context(|| format!("reading {path}"))?;
    out.flush().context(|| "writing to stdout".into())?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn workspace_with_files() -> (TempDir, Workspace) {
        let dir = TempDir::new("listing");
        std::fs::create_dir_all(dir.path().join("src/lib")).expect("dirs");
        std::fs::create_dir_all(dir.path().join(".kubexec/runs/x")).expect("dirs");
        std::fs::write(dir.path().join("a.txt"), "hello").expect("write");
        std::fs::write(dir.path().join("src/lib/m.ts"), "export {}").expect("write");
        std::os::unix::fs::symlink("a.txt", dir.path().join("link")).expect("symlink");
        let ws = Workspace::open(dir.path()).expect("workspace");
        (dir, ws)
    }

    #[test]
    fn lists_flat_and_recursive_without_the_reserved_dir() {
        let (_dir, ws) = workspace_with_files();
        let flat = list(&ws, ".", false).expect("listed");
        let names: Vec<_> = flat
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.kind))
            .collect();
        assert_eq!(
            names,
            vec![
                ("a.txt", FileKind::File),
                ("link", FileKind::Symlink),
                ("src", FileKind::Directory)
            ]
        );
        assert_eq!(flat.files[0].size, 5);
        assert!(flat.files[0].modified > 0);

        let deep = list(&ws, ".", true).expect("listed");
        let paths: Vec<_> = deep.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["a.txt", "link", "src", "src/lib", "src/lib/m.ts"]
        );

        let sub = list(&ws, "src", true).expect("listed");
        assert_eq!(sub.files.len(), 2);
        assert_eq!(
            list(&ws, "a.txt", false).map(|l| l.files.len()).ok(),
            Some(1)
        );
        assert!(matches!(
            list(&ws, "../", false),
            Err(Error::PathEscapesWorkspace(_))
        ));
    }

    #[test]
    fn cat_reads_ranges_inside_only() {
        let (_dir, ws) = workspace_with_files();
        let mut out = Vec::new();
        assert_eq!(cat(&ws, "a.txt", 1, Some(3), &mut out).ok(), Some(3));
        assert_eq!(out, b"ell");
        assert!(matches!(
            cat(&ws, "src", 0, None, &mut Vec::new()),
            Err(Error::NotAFile(_))
        ));
        assert!(matches!(
            cat(&ws, "/etc/passwd", 0, None, &mut Vec::new()),
            Err(Error::PathEscapesWorkspace(_))
        ));
        assert!(matches!(
            cat(&ws, "nope", 0, None, &mut Vec::new()),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn cat_refuses_a_fifo_without_waiting_for_a_writer() {
        let (dir, ws) = workspace_with_files();
        let fifo = dir.path().join("pipe");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            cat(&ws, "pipe", 0, None, &mut Vec::new()),
            Err(Error::NotAFile(_))
        ));
    }
}
