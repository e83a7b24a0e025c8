//! The files an execution created or modified under the workspace (`filesWritten`): a bounded
//! walk after the run that lists regular files and symlinks whose mtime or ctime is not older
//! than the run's start. kubexec's own `.kubexec/` is skipped, and so are the caches that tools
//! keep in `HOME` (the workspace): [`SKIPPED_TOP_LEVEL`].
//!
//! The walk is bounded twice: it looks at no more than [`MAX_WALK_ENTRIES`] directory entries
//! (so a workspace of many files cannot make a short run slow), and it lists at most
//! [`MAX_LISTED`] paths. Either cut sets `truncated`, which the result reports as
//! `filesWrittenTruncated`.
//!
//! File times come from the kernel's coarse clock (a tick, a few ms), so the start is read from
//! that clock too ([`coarse_now`]); a file written in the same tick just before the start may
//! be listed, one written during the run is never missed.

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::paths::RESERVED_DIR;

/// Top-level directories never listed: kubexec's own, and the caches of Bun and other tools
/// (`HOME` is the workspace), which a run writes without asking.
pub const SKIPPED_TOP_LEVEL: [&str; 3] = [RESERVED_DIR, ".bun", ".cache"];

/// Directories never entered, at any depth: package trees and version control, which hold
/// thousands of files a run rewrites wholesale (`bun install`), and would only crowd the list.
pub const SKIPPED_ANYWHERE: [&str; 2] = ["node_modules", ".git"];

/// Most directory entries one walk looks at. Each costs a `statx`; 5,000 keep the walk to a few
/// milliseconds on an idle node (see docs/api.md for measurements).
pub const MAX_WALK_ENTRIES: usize = 5_000;
/// Most paths one result lists.
pub const MAX_LISTED: usize = 1_000;

/// A point in time as file timestamps count it: (seconds, nanoseconds) since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileTime {
    pub secs: i64,
    pub nanos: i64,
}

/// Now, from the clock the kernel stamps files with.
pub fn coarse_now() -> FileTime {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 {
        return FileTime { secs: 0, nanos: 0 };
    }
    FileTime {
        secs: ts.tv_sec,
        nanos: ts.tv_nsec,
    }
}

/// What the walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    /// Paths relative to the workspace, sorted.
    pub files: Vec<String>,
    /// True when the walk or the list was cut short.
    pub truncated: bool,
}

/// The files under `root` changed at or after `since`.
pub fn changed_since(
    root: &Path,
    since: FileTime,
    max_entries: usize,
    max_listed: usize,
) -> Changed {
    let mut changed = Changed::default();
    let mut queue: VecDeque<PathBuf> = VecDeque::from([PathBuf::new()]);
    let mut seen = 0usize;
    'walk: while let Some(relative) = queue.pop_front() {
        let Ok(entries) = std::fs::read_dir(root.join(&relative)) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > max_entries {
                changed.truncated = true;
                break 'walk;
            }
            let name = entry.file_name();
            if relative.as_os_str().is_empty() && SKIPPED_TOP_LEVEL.iter().any(|s| name == *s) {
                continue;
            }
            let path = relative.join(&name);
            // `DirEntry::metadata` does not follow symlinks.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                if !SKIPPED_ANYWHERE.iter().any(|s| name == *s) {
                    queue.push_back(path);
                }
                continue;
            }
            let mtime = FileTime {
                secs: meta.mtime(),
                nanos: meta.mtime_nsec(),
            };
            let ctime = FileTime {
                secs: meta.ctime(),
                nanos: meta.ctime_nsec(),
            };
            if (meta.is_file() || meta.is_symlink()) && mtime.max(ctime) >= since {
                if changed.files.len() == max_listed {
                    changed.truncated = true;
                    break 'walk;
                }
                if let Some(text) = path.to_str() {
                    changed.files.push(text.to_string());
                }
            }
        }
    }
    changed.files.sort();
    changed
}

/// `first` (the files the spec wrote, in order) followed by the changed files not among them,
/// at most [`MAX_LISTED`] in all; the flag is set when anything was left out.
pub fn merge(first: Vec<String>, changed: Changed) -> (Vec<String>, bool) {
    let mut truncated = changed.truncated;
    let mut files = first;
    let known: std::collections::HashSet<String> = files.iter().cloned().collect();
    for file in changed.files {
        if known.contains(&file) {
            continue;
        }
        if files.len() >= MAX_LISTED {
            truncated = true;
            break;
        }
        files.push(file);
    }
    (files, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn lists_what_changed_since_the_start_without_the_reserved_dir() {
        let ws = TempDir::new("changed");
        std::fs::create_dir_all(ws.path().join("old")).expect("dir");
        std::fs::write(ws.path().join("old/kept.txt"), "x").expect("old file");
        // Old: stamped an hour ago (both times: ctime cannot be set, so compare a later start).
        let since = FileTime {
            secs: coarse_now().secs + 3600,
            nanos: 0,
        };
        assert_eq!(
            changed_since(ws.path(), since, 100, 100),
            Changed::default()
        );

        // Past the old file's clock tick (a few ms), so that it is older than the start.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let start = coarse_now();
        std::fs::create_dir_all(ws.path().join("sub/deep")).expect("dirs");
        std::fs::write(ws.path().join("out.txt"), "new").expect("new file");
        std::fs::write(ws.path().join("sub/deep/b.txt"), "new").expect("new file");
        std::fs::create_dir_all(ws.path().join(".kubexec/runs/r")).expect("reserved");
        std::fs::write(ws.path().join(".kubexec/runs/r/stdout"), "x").expect("reserved");
        std::fs::create_dir_all(ws.path().join(".bun/install/cache")).expect("cache");
        std::fs::write(ws.path().join(".bun/install/cache/pkg"), "x").expect("cache");
        std::fs::create_dir_all(ws.path().join("app/node_modules/p")).expect("packages");
        std::fs::write(ws.path().join("app/node_modules/p/index.js"), "x").expect("package");
        let changed = changed_since(ws.path(), start, 100, 100);
        assert_eq!(changed.files, vec!["out.txt", "sub/deep/b.txt"]);
        assert!(!changed.truncated);
    }

    #[test]
    fn both_bounds_are_flagged() {
        let ws = TempDir::new("changed-many");
        let start = coarse_now();
        for i in 0..20 {
            std::fs::write(ws.path().join(format!("f{i}")), "x").expect("file");
        }
        let listed = changed_since(ws.path(), start, 100, 5);
        assert_eq!(listed.files.len(), 5);
        assert!(listed.truncated);
        let walked = changed_since(ws.path(), start, 10, 100);
        assert!(walked.files.len() <= 10 && walked.truncated);
        assert!(!changed_since(ws.path(), start, 100, 100).truncated);
    }

    #[test]
    fn merge_keeps_the_spec_files_first_and_drops_duplicates() {
        let changed = Changed {
            files: vec!["a".into(), "b".into()],
            truncated: false,
        };
        assert_eq!(
            merge(vec!["b".into()], changed),
            (vec!["b".to_string(), "a".to_string()], false)
        );
    }
}
