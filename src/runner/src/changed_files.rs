//! The files an execution created or modified under the workspace (`filesWritten`): regular
//! files and symlinks written during the run. kubexec's own `.kubexec/` is skipped, and so are
//! the caches that tools keep in `HOME` (the workspace, [`SKIPPED_TOP_LEVEL`]) and package and
//! version-control trees ([`SKIPPED_ANYWHERE`]).
//!
//! A [`Tracker`] is started before the run and finished after it. It watches the workspace's
//! directories with inotify, so the cost of a run is finding the directories before (no `stat`
//! per file, and no listing of a directory without subdirectories) and the events after: a
//! short run beside 10,000 untouched files costs about a millisecond. Directories created during the run are walked after it (everything in them is
//! new). When inotify cannot be used (no instance or watch left, more than
//! [`MAX_WATCHED_DIRS`] directories or [`MAX_SCANNED_ENTRIES`] entries to set up, or its queue
//! overflowed), the tracker falls back to one bounded walk after the run that lists files
//! whose mtime or ctime is not older than the run's start ([`changed_since`]).
//!
//! Both ways are bounded: the walk looks at no more than [`MAX_WALK_ENTRIES`] directory
//! entries, and a result lists at most [`MAX_LISTED`] paths. Either cut sets `truncated`, which
//! the result reports as `filesWrittenTruncated`.
//!
//! File times come from the kernel's coarse clock (a tick, a few ms), so the start is read from
//! that clock too ([`coarse_now`]); in the walk, a file written in the same tick just before the
//! start may be listed, one written during the run is never missed.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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

/// Most directories a [`Tracker`] watches; a workspace with more is walked instead.
pub const MAX_WATCHED_DIRS: usize = 2_000;
/// Most directory entries a [`Tracker`] lists to find the directories to watch; a workspace
/// with more is walked instead.
pub const MAX_SCANNED_ENTRIES: usize = 100_000;

/// What a watched directory reports: a file written, created, moved in, or its times or mode
/// changed (the walk's ctime).
const WATCH_MASK: u32 = libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_ONLYDIR
    | libc::IN_DONT_FOLLOW
    | libc::IN_EXCL_UNLINK;

/// Finds the files a run wrote: started before the run, finished after it.
pub struct Tracker {
    since: FileTime,
    /// The inotify instance and what each watch descriptor watches (relative to the
    /// workspace); `None`: walk after the run.
    watching: Option<(OwnedFd, HashMap<i32, PathBuf>)>,
}

impl Tracker {
    /// Starts tracking the workspace `root`.
    pub fn start(root: &Path) -> Self {
        let since = coarse_now();
        Self {
            since,
            watching: watch_tree(root),
        }
    }

    /// True when the run's writes are watched (no walk after the run).
    pub fn is_watching(&self) -> bool {
        self.watching.is_some()
    }

    /// What the run wrote, at most `max_listed` paths.
    pub fn finish(self, root: &Path, max_listed: usize) -> Changed {
        let Some((fd, dirs)) = self.watching else {
            return changed_since(root, self.since, MAX_WALK_ENTRIES, max_listed);
        };
        let Some(events) = read_events(&fd) else {
            // The queue overflowed: events were lost.
            return changed_since(root, self.since, MAX_WALK_ENTRIES, max_listed);
        };
        release(fd);
        let mut files = BTreeSet::new();
        let mut new_dirs = Vec::new();
        let mut truncated = false;
        for (wd, mask, name) in events {
            let Some(dir) = dirs.get(&wd) else {
                continue;
            };
            if name.is_empty() || is_skipped(dir, &name) {
                continue;
            }
            let path = dir.join(&name);
            if mask & libc::IN_ISDIR != 0 {
                if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                    new_dirs.push(path);
                }
                continue;
            }
            // Still there, and a file or a symlink (not following it).
            match std::fs::symlink_metadata(root.join(&path)) {
                Ok(meta) if meta.is_file() || meta.is_symlink() => {}
                _ => continue,
            }
            if files.len() == max_listed {
                if !files.contains(&path) {
                    truncated = true;
                }
                continue;
            }
            files.insert(path);
        }
        let mut budget = MAX_WALK_ENTRIES;
        for dir in new_dirs {
            let (found, cut) = walk_subtree(root, &dir, self.since, &mut budget);
            truncated |= cut;
            for path in found {
                if files.len() == max_listed {
                    truncated |= !files.contains(&path);
                    continue;
                }
                files.insert(path);
            }
        }
        Changed {
            files: files
                .into_iter()
                .filter_map(|p| p.to_str().map(str::to_string))
                .collect(),
            truncated,
            seen: 0,
        }
    }
}

/// Closes an inotify instance off the result's path: the kernel waits for a grace period
/// (~20 ms measured) before the close returns, which the result must not wait for. The process
/// exits no sooner, but its result is already written by then.
fn release(fd: OwnedFd) {
    let spawned = std::thread::Builder::new()
        .name("inotify-close".into())
        .spawn(move || drop(fd));
    // Without a thread, it is closed here (the spawn error holds nothing of it).
    drop(spawned);
}

/// True for what is never listed: the skipped top-level directories and package trees.
fn is_skipped(dir: &Path, name: &OsStr) -> bool {
    (dir.as_os_str().is_empty() && SKIPPED_TOP_LEVEL.iter().any(|s| name == *s))
        || SKIPPED_ANYWHERE.iter().any(|s| name == *s)
}

/// Watches every directory of the tree at `root` (but the skipped ones); `None` when inotify
/// is not available or the tree is beyond the bounds.
fn watch_tree(root: &Path) -> Option<(OwnedFd, HashMap<i32, PathBuf>)> {
    // SAFETY: no pointers; the result is checked.
    let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut dirs = HashMap::new();
    let mut queue: VecDeque<PathBuf> = VecDeque::from([PathBuf::new()]);
    let mut scanned = 0usize;
    while let Some(relative) = queue.pop_front() {
        let absolute = root.join(&relative);
        let path = CString::new(absolute.as_os_str().as_bytes()).ok()?;
        // Watched before it is listed: a subdirectory made in between is seen as created.
        // SAFETY: `path` is a valid C string for the duration of the call.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), WATCH_MASK) };
        if wd < 0 {
            // Out of watches, or the directory went: walk instead.
            return None;
        }
        dirs.insert(wd, relative.clone());
        if dirs.len() > MAX_WATCHED_DIRS {
            return None;
        }
        // A directory's link count is 2 + its subdirectories on the filesystems that count
        // them (ext4, xfs, tmpfs; others say 1). When all of them are skipped ones (such as the
        // workspace's `.kubexec/`), there is nothing to watch below, and its entries, however
        // many files, need not be read (as `find` does without -noleaf).
        let links = std::fs::symlink_metadata(&absolute).ok()?.nlink();
        if links == 2
            || (links > 2 && links - 2 <= 5 && links - 2 == skipped_subdirs(&absolute, &relative))
        {
            continue;
        }
        let entries = std::fs::read_dir(&absolute).ok()?;
        for entry in entries {
            let entry = entry.ok()?;
            scanned += 1;
            if scanned > MAX_SCANNED_ENTRIES {
                return None;
            }
            // From the directory entry's type: no `stat` (symlinks are not followed).
            let Ok(kind) = entry.file_type() else {
                return None;
            };
            let name = entry.file_name();
            if kind.is_dir() && !is_skipped(&relative, &name) {
                queue.push_back(relative.join(name));
            }
        }
    }
    Some((fd, dirs))
}

/// How many of the directories never watched are in `absolute` (the directory `relative`).
fn skipped_subdirs(absolute: &Path, relative: &Path) -> u64 {
    let top = relative.as_os_str().is_empty();
    let names = SKIPPED_ANYWHERE
        .iter()
        .chain(SKIPPED_TOP_LEVEL.iter().filter(|_| top));
    let mut found = 0;
    for name in names {
        if std::fs::symlink_metadata(absolute.join(name)).is_ok_and(|m| m.is_dir()) {
            found += 1;
        }
    }
    found
}

/// Every event queued on `fd` as (watch, mask, name); `None` when the queue overflowed.
fn read_events(fd: &OwnedFd) -> Option<Vec<(i32, u32, std::ffi::OsString)>> {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    let mut events = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buffer` is writable for its length.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buffer.as_mut_ptr().cast::<libc::c_void>(),
                buffer.len(),
            )
        };
        if n <= 0 {
            // EAGAIN: the queue is empty (the descriptor is non-blocking).
            return Some(events);
        }
        let n = usize::try_from(n).unwrap_or(0);
        let mut at = 0;
        while at + HEADER <= n {
            // SAFETY: the kernel wrote a whole event header at `at` (events are never split
            // across reads); `read_unaligned` needs no alignment.
            let event: libc::inotify_event = unsafe {
                std::ptr::read_unaligned(buffer[at..].as_ptr().cast::<libc::inotify_event>())
            };
            let len = event.len as usize;
            let end = (at + HEADER + len).min(n);
            if event.mask & libc::IN_Q_OVERFLOW != 0 {
                return None;
            }
            let raw_name = &buffer[at + HEADER..end];
            let name = raw_name.split(|b| *b == 0).next().unwrap_or_default();
            events.push((event.wd, event.mask, OsStr::from_bytes(name).to_os_string()));
            at = end;
        }
    }
}

/// The files under `root/dir` changed at or after `since` (as paths relative to `root`),
/// looking at no more than `budget` entries (what it looked at is taken off); true when cut.
fn walk_subtree(
    root: &Path,
    dir: &Path,
    since: FileTime,
    budget: &mut usize,
) -> (Vec<PathBuf>, bool) {
    let changed = walk_from(root, dir.to_path_buf(), since, *budget, MAX_LISTED);
    *budget = budget.saturating_sub(changed.seen);
    let files = changed.files.into_iter().map(PathBuf::from).collect();
    (files, changed.truncated)
}

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
    /// Directory entries the walk looked at.
    pub seen: usize,
}

/// The files under `root` changed at or after `since`.
pub fn changed_since(
    root: &Path,
    since: FileTime,
    max_entries: usize,
    max_listed: usize,
) -> Changed {
    walk_from(root, PathBuf::new(), since, max_entries, max_listed)
}

/// [`changed_since`] from the directory `start` of `root` (paths stay relative to `root`).
fn walk_from(
    root: &Path,
    start: PathBuf,
    since: FileTime,
    max_entries: usize,
    max_listed: usize,
) -> Changed {
    let mut changed = Changed::default();
    let mut queue: VecDeque<PathBuf> = VecDeque::from([start]);
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
    changed.seen = seen.min(max_entries);
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
        let none = changed_since(ws.path(), since, 100, 100);
        assert!(none.files.is_empty() && !none.truncated);

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
    fn the_tracker_lists_created_modified_and_new_tree_files_only() {
        let ws = TempDir::new("tracker");
        let root = ws.path();
        for dir in ["old", "old/deeper", "app", ".kubexec/runs"] {
            std::fs::create_dir_all(root.join(dir)).expect("dir");
        }
        for file in [
            "old/kept.txt",
            "old/appended.txt",
            "old/deeper/touched.txt",
            "gone.txt",
        ] {
            std::fs::write(root.join(file), "x").expect("old file");
        }
        let tracker = Tracker::start(root);
        assert!(
            tracker.is_watching(),
            "inotify is available on the test machine"
        );
        std::fs::write(root.join("out.txt"), "new").expect("new file");
        let mut appended = std::fs::OpenOptions::new()
            .append(true)
            .open(root.join("old/appended.txt"))
            .expect("open");
        std::io::Write::write_all(&mut appended, b"more").expect("append");
        drop(appended);
        let touched = std::fs::File::open(root.join("old/deeper/touched.txt")).expect("open");
        touched
            .set_modified(std::time::SystemTime::now())
            .expect("touch");
        std::fs::create_dir_all(root.join("made/inner")).expect("new tree");
        std::fs::write(root.join("made/inner/deep.txt"), "new").expect("new tree file");
        std::fs::write(root.join(".kubexec/runs/stdout"), "x").expect("reserved");
        std::fs::create_dir_all(root.join("app/node_modules/p")).expect("packages");
        std::fs::write(root.join("app/node_modules/p/index.js"), "x").expect("package");
        std::fs::write(root.join("brief.txt"), "x").expect("brief");
        std::fs::remove_file(root.join("brief.txt")).expect("removed again");
        std::fs::remove_file(root.join("gone.txt")).expect("removed");
        let changed = tracker.finish(root, 100);
        assert_eq!(
            changed.files,
            vec![
                "made/inner/deep.txt",
                "old/appended.txt",
                "old/deeper/touched.txt",
                "out.txt"
            ]
        );
        assert!(!changed.truncated);
    }

    #[test]
    fn the_tracker_flags_a_cut_list() {
        let ws = TempDir::new("tracker-many");
        let tracker = Tracker::start(ws.path());
        for i in 0..20 {
            std::fs::write(ws.path().join(format!("f{i:02}")), "x").expect("file");
        }
        let changed = tracker.finish(ws.path(), 5);
        assert_eq!(changed.files.len(), 5);
        assert!(changed.truncated);
    }

    #[test]
    fn merge_keeps_the_spec_files_first_and_drops_duplicates() {
        let changed = Changed {
            files: vec!["a".into(), "b".into()],
            ..Changed::default()
        };
        assert_eq!(
            merge(vec!["b".into()], changed),
            (vec!["b".to_string(), "a".to_string()], false)
        );
    }
}
