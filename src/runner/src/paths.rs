//! Confines user-supplied paths to the workspace.
//!
//! Two layers: a lexical check (no `..` above the root, absolute paths only inside it), and a
//! filesystem check that resolves symlinks of the directories involved, so a link planted in
//! the workspace cannot redirect a write or a read outside it.

use std::io;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Directory for the runner's own state; user file operations may not write into it.
pub const RESERVED_DIR: &str = ".kubexec";

#[derive(Debug, Clone)]
pub struct Workspace {
    /// As configured, used to recognise absolute user paths such as `/workspace/a.txt`.
    configured_root: PathBuf,
    /// With symlinks resolved; every checked path must stay under it.
    canonical_root: PathBuf,
}

/// Where a file will be written: the parent directory exists and is inside the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteTarget {
    /// Normalized, relative to the workspace, as reported in `filesWritten`.
    pub relative: String,
    pub absolute: PathBuf,
}

impl Workspace {
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let configured_root = root.as_ref().to_path_buf();
        let canonical_root = configured_root
            .canonicalize()
            .context(|| format!("opening workspace {}", configured_root.display()))?;
        Ok(Self {
            configured_root,
            canonical_root,
        })
    }

    /// The workspace with symlinks resolved.
    pub fn root(&self) -> &Path {
        &self.canonical_root
    }

    /// The normalized workspace-relative form of `given`; empty for the workspace itself.
    pub fn relative_path(&self, given: &str) -> Result<PathBuf> {
        normalize_in_root(&[&self.configured_root, &self.canonical_root], given)
    }

    /// Checks `given` for writing a file and creates its missing parent directories.
    pub fn prepare_write(&self, given: &str) -> Result<WriteTarget> {
        let relative = self.relative_path(given)?;
        let escapes = || Error::PathEscapesWorkspace(given.to_string());
        if relative.as_os_str().is_empty() {
            return Err(Error::InvalidSpec(format!(
                "path {given:?} names the workspace itself, not a file"
            )));
        }
        if relative.starts_with(RESERVED_DIR) {
            return Err(Error::InvalidSpec(format!(
                "path {given:?} is inside the runner's reserved {RESERVED_DIR}/"
            )));
        }
        let target = self.canonical_root.join(&relative);
        let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(escapes());
        };

        // Check the deepest existing ancestor *before* creating anything, so that a symlink
        // pointing outside cannot make us create directories outside.
        let existing = parent
            .ancestors()
            .find(|dir| dir.symlink_metadata().is_ok())
            .unwrap_or(&self.canonical_root);
        self.ensure_inside(existing).map_err(|_| escapes())?;
        std::fs::create_dir_all(parent).context(|| format!("creating directory for {given}"))?;
        let parent = self.ensure_inside(parent).map_err(|_| escapes())?;

        Ok(WriteTarget {
            relative: relative_string(&relative),
            absolute: parent.join(name),
        })
    }

    /// The canonical path of an existing entry inside the workspace (symlinks followed).
    pub fn resolve_existing(&self, given: &str) -> Result<PathBuf> {
        let target = self.canonical_root.join(self.relative_path(given)?);
        match target.canonicalize() {
            Ok(resolved) if resolved.starts_with(&self.canonical_root) => Ok(resolved),
            Ok(_) => Err(Error::PathEscapesWorkspace(given.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::NotFound(given.to_string()))
            }
            Err(source) => Err(Error::Io {
                context: format!("resolving {given}"),
                source,
            }),
        }
    }

    /// `path` (already inside the canonical root) relative to the workspace, `/`-separated.
    pub fn display_relative(&self, path: &Path) -> String {
        relative_string(path.strip_prefix(&self.canonical_root).unwrap_or(path))
    }

    fn ensure_inside(&self, dir: &Path) -> io::Result<PathBuf> {
        let resolved = dir.canonicalize()?;
        if resolved.starts_with(&self.canonical_root) {
            Ok(resolved)
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "outside the workspace",
            ))
        }
    }
}

fn relative_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Lexically normalizes `given` into a path relative to the workspace. Relative paths may not
/// climb above the root with `..`; absolute paths must be under one of `roots` (the configured
/// and the canonical spelling of the same directory).
pub fn normalize_in_root(roots: &[&Path], given: &str) -> Result<PathBuf> {
    let escapes = || Error::PathEscapesWorkspace(given.to_string());
    if given.is_empty() || given.contains('\0') {
        return Err(Error::InvalidSpec(format!(
            "path {given:?} must be non-empty without NUL"
        )));
    }
    let path = Path::new(given);
    if path.is_absolute() {
        let absolute = normalize_lexically(path).ok_or_else(escapes)?;
        return roots
            .iter()
            .find_map(|root| {
                absolute
                    .strip_prefix(normalize_lexically(root)?)
                    .ok()
                    .map(Path::to_path_buf)
            })
            .ok_or_else(escapes);
    }
    normalize_lexically(path).ok_or_else(escapes)
}

/// Resolves `.` and `..` without touching the filesystem; `None` if `..` climbs above the start.
fn normalize_lexically(path: &Path) -> Option<PathBuf> {
    let mut normal = PathBuf::new();
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::RootDir | Component::Prefix(_) => normal.push(component),
            Component::CurDir => {}
            Component::ParentDir => {
                depth = depth.checked_sub(1)?;
                normal.pop();
            }
            Component::Normal(name) => {
                depth += 1;
                normal.push(name);
            }
        }
    }
    Some(normal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn norm(given: &str) -> Result<String> {
        normalize_in_root(&[Path::new("/workspace")], given).map(|p| relative_string(&p))
    }

    #[test]
    fn lexical_normalization() {
        assert_eq!(norm("a.txt").ok().as_deref(), Some("a.txt"));
        assert_eq!(norm("./src/../lib/x.ts").ok().as_deref(), Some("lib/x.ts"));
        assert_eq!(norm("/workspace/a.txt").ok().as_deref(), Some("a.txt"));
        assert_eq!(norm("/workspace/./d/../a").ok().as_deref(), Some("a"));
        assert_eq!(norm("/workspace").ok().as_deref(), Some(""));
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "/workspace/../etc/passwd",
            "/workspacefoo/a",
            "/",
        ] {
            assert!(
                matches!(norm(bad), Err(Error::PathEscapesWorkspace(_))),
                "{bad}"
            );
        }
        assert!(matches!(norm(""), Err(Error::InvalidSpec(_))));
    }

    #[test]
    fn writes_create_parents_inside() {
        let dir = TempDir::new("paths-write");
        let ws = Workspace::open(dir.path()).expect("workspace");
        let target = ws.prepare_write("src/deep/file.ts").expect("allowed");
        assert_eq!(target.relative, "src/deep/file.ts");
        assert!(dir.path().join("src/deep").is_dir());

        let absolute = format!("{}/b.txt", dir.path().display());
        assert_eq!(
            ws.prepare_write(&absolute)
                .map(|t| t.relative)
                .ok()
                .as_deref(),
            Some("b.txt")
        );
    }

    #[test]
    fn writes_through_escaping_symlinks_are_refused() {
        let dir = TempDir::new("paths-symlink");
        let outside = TempDir::new("paths-outside");
        let ws = Workspace::open(dir.path()).expect("workspace");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).expect("symlink");
        std::os::unix::fs::symlink("/nonexistent-kubexec", dir.path().join("dangling"))
            .expect("symlink");
        std::fs::create_dir(dir.path().join("real")).expect("dir");
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("inside"))
            .expect("symlink");

        for bad in ["out/x.txt", "out/new/dir/x.txt", "dangling/x"] {
            assert!(
                matches!(ws.prepare_write(bad), Err(Error::PathEscapesWorkspace(_))),
                "{bad}"
            );
        }
        assert!(
            !outside.path().join("new").exists(),
            "nothing created outside"
        );
        assert!(
            ws.prepare_write("inside/ok.txt").is_ok(),
            "symlink within the workspace is fine"
        );
        assert!(matches!(
            ws.prepare_write(".kubexec/runs/x/result.json"),
            Err(Error::InvalidSpec(_))
        ));
    }

    #[test]
    fn reads_resolve_symlinks() {
        let dir = TempDir::new("paths-read");
        let outside = TempDir::new("paths-read-outside");
        std::fs::write(outside.path().join("secret"), "s").expect("write");
        std::fs::write(dir.path().join("a.txt"), "a").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("leak"))
            .expect("symlink");
        let ws = Workspace::open(dir.path()).expect("workspace");

        assert!(ws.resolve_existing("a.txt").is_ok());
        assert!(matches!(
            ws.resolve_existing("leak"),
            Err(Error::PathEscapesWorkspace(_))
        ));
        assert!(matches!(
            ws.resolve_existing("missing"),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            ws.resolve_existing("../x"),
            Err(Error::PathEscapesWorkspace(_))
        ));
    }
}
