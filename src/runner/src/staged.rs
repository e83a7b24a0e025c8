//! `stage NAME`: code too large to ride in the Execution object arrives on stdin ahead of its
//! run (the api's streamed path) and waits in `<workspace>/.kubexec/staged/NAME` until the run
//! whose spec names it in `stagedCode` reads and removes it.
//!
//! User code may rewrite anything in the workspace, this directory included; it can only change
//! code that its own tenant is about to run in its own sandbox, which it could run anyway.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::{Error, IoContext, Result};
use crate::files::PendingFile;
use crate::paths::{Workspace, RESERVED_DIR};
use crate::protocol::{validate_run_id, Staged};

/// Largest staged source.
pub const MAX_STAGED_BYTES: u64 = 4 << 20;
/// Staged code whose run never came (its Execution could not be created) is removed by the
/// next `stage` after this long.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// The staging directory of `workspace`, created if missing and checked to be inside it (a
/// symlink planted at its place cannot redirect the write).
fn staged_dir(workspace: &Workspace) -> Result<PathBuf> {
    let dir = workspace.root().join(RESERVED_DIR).join("staged");
    fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
    let resolved = dir
        .canonicalize()
        .context(|| format!("resolving {}", dir.display()))?;
    if !resolved.starts_with(workspace.root()) {
        return Err(Error::PathEscapesWorkspace(dir.display().to_string()));
    }
    Ok(resolved)
}

/// Stores exactly `size` bytes of `input` as the staged code `name`, all or nothing. The
/// size is given up front because an exec stream's stdin may never deliver EOF.
pub fn stage(
    workspace: &Workspace,
    name: &str,
    input: &mut impl Read,
    size: u64,
) -> Result<Staged> {
    validate_run_id(name)?;
    if size > MAX_STAGED_BYTES {
        return Err(Error::LimitExceeded(format!(
            "staged code {name} is {size} bytes, more than {MAX_STAGED_BYTES}"
        )));
    }
    let dir = staged_dir(workspace)?;
    remove_abandoned(&dir, SystemTime::now());
    let mut file = PendingFile::create(&dir.join(name), 0o600)?;
    let copied = io::copy(&mut input.take(size), file.writer())
        .context(|| format!("receiving staged code {name}"))?;
    if copied != size {
        return Err(Error::InvalidSpec(format!(
            "input ended after {copied} of {size} bytes of staged code {name}"
        )));
    }
    file.commit()?;
    Ok(Staged {
        name: name.to_string(),
        size,
    })
}

/// The staged code `name` (UTF-8, at most [`MAX_STAGED_BYTES`]). It stays in place until
/// [`remove`], so that a run that fails before it has copied the code can be started again.
pub fn read(workspace_root: &Path, name: &str) -> Result<String> {
    validate_run_id(name)?;
    let path = workspace_root.join(RESERVED_DIR).join("staged").join(name);
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::InvalidSpec(format!(
                "the staged code {name} is missing from the workspace"
            )),
            _ => Error::Io {
                context: format!("opening staged code {name}"),
                source: e,
            },
        })?;
    let meta = file
        .metadata()
        .context(|| format!("reading staged code {name}"))?;
    if !meta.is_file() {
        return Err(Error::InvalidSpec(format!(
            "the staged code {name} is not a regular file"
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_STAGED_BYTES + 1)
        .read_to_end(&mut bytes)
        .context(|| format!("reading staged code {name}"))?;
    if bytes.len() as u64 > MAX_STAGED_BYTES {
        return Err(Error::LimitExceeded(format!(
            "staged code {name} is larger than {MAX_STAGED_BYTES} bytes"
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| Error::InvalidSpec(format!("the staged code {name} is not UTF-8")))
}

/// Removes the staged code `name`, once its run holds its own copy.
pub fn remove(workspace_root: &Path, name: &str) {
    let path = workspace_root.join(RESERVED_DIR).join("staged").join(name);
    let _ = fs::remove_file(path);
}

fn remove_abandoned(dir: &Path, now: SystemTime) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age >= ABANDONED_AFTER);
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn staged_code_is_read_once_stored_and_refused_when_too_large() {
        let dir = TempDir::new("staged");
        let workspace = Workspace::open(dir.path()).expect("workspace");
        let staged = stage(&workspace, "exe-1", &mut &b"console.log(1)"[..], 14).expect("stage");
        assert_eq!(staged.size, 14);
        assert_eq!(
            read(workspace.root(), "exe-1").expect("read"),
            "console.log(1)"
        );
        remove(workspace.root(), "exe-1");
        assert!(matches!(
            read(workspace.root(), "exe-1"),
            Err(Error::InvalidSpec(_))
        ));

        let short = [b'x'; 10];
        assert!(matches!(
            stage(&workspace, "exe-2", &mut &short[..], 100),
            Err(Error::InvalidSpec(_))
        ));
        assert!(matches!(
            stage(&workspace, "exe-2", &mut &short[..], MAX_STAGED_BYTES + 1),
            Err(Error::LimitExceeded(_))
        ));
        assert!(
            read(workspace.root(), "exe-2").is_err(),
            "nothing half-written"
        );
        assert!(stage(&workspace, "../x", &mut &b""[..], 100).is_err());
    }

    #[test]
    fn a_symlink_in_place_of_the_code_is_not_followed() {
        let dir = TempDir::new("staged");
        let workspace = Workspace::open(dir.path()).expect("workspace");
        let staged = dir.path().join(".kubexec/staged");
        fs::create_dir_all(&staged).expect("dir");
        std::os::unix::fs::symlink("/etc/hostname", staged.join("exe-3")).expect("link");
        assert!(read(workspace.root(), "exe-3").is_err());
    }
}
