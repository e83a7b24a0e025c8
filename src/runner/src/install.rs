//! `install`: the init container copies the runner into the shared volume (the Tekton
//! entrypoint pattern), so any sandbox image can run it without containing it.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::files::PendingFile;
use crate::protocol::Installed;

pub fn install(destination: &Path) -> Result<Installed> {
    // /proc/self/exe opens the running binary itself, whatever path it was started from.
    install_from(Path::new("/proc/self/exe"), destination)
}

pub fn install_from(source: &Path, destination: &Path) -> Result<Installed> {
    if destination.file_name().is_none() {
        return Err(Error::Usage(format!(
            "install destination {} must name a file",
            destination.display()
        )));
    }
    if let Some(parent) = destination.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).context(|| format!("creating {}", parent.display()))?;
    }
    let mut input = File::open(source).context(|| format!("opening {}", source.display()))?;
    // Written aside and renamed, so a sandbox never executes a half-copied binary.
    let mut pending = PendingFile::create(destination, 0o755)?;
    io::copy(&mut input, pending.writer())
        .context(|| format!("copying to {}", destination.display()))?;
    pending.commit()?;
    Ok(Installed {
        installed: destination.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_executable_with_parents() {
        let dir = TempDir::new("install");
        let destination = dir.path().join("kubexec/bin/kubexec-runner");
        install(&destination).expect("installed");
        let metadata = std::fs::metadata(&destination).expect("exists");
        assert_eq!(metadata.permissions().mode() & 0o777, 0o755);
        let own = std::fs::metadata("/proc/self/exe").map(|m| m.len()).ok();
        assert_eq!(Some(metadata.len()), own);
        install(&destination).expect("reinstall over an existing copy");
    }
}
