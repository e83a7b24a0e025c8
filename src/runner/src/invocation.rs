//! What program an execution runs. Pure, so code mode is testable without `bun` installed.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub program: String,
    pub args: Vec<String>,
}

/// Command mode: the command is a shell script, as users type it.
pub fn shell(command: &str) -> Invocation {
    Invocation {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), command.into()],
    }
}

/// Code mode: `bun run <entry>`; `bun` is looked up on the PATH.
pub fn bun(entry: &Path) -> Invocation {
    Invocation {
        program: "bun".into(),
        args: vec!["run".into(), entry.to_string_lossy().into_owned()],
    }
}

/// Where code mode puts the entry file.
///
/// Bun, like any ES module loader, resolves `import "./utils"` against the directory of the
/// importing *file*, not the process's cwd. An entry file in the run directory would therefore
/// look for `.kubexec/runs/<id>/utils.ts`. So the entry is written into `workingDir` itself,
/// hidden and named after the run so concurrent executions do not collide, and removed once the
/// process exits. The run directory keeps a copy (`main.ts`) as the record of what ran.
pub fn code_entry_path(working_dir: &Path, run_id: &str) -> PathBuf {
    working_dir.join(format!(".kubexec-main-{run_id}.ts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_mode_runs_through_sh() {
        let invocation = shell("echo hi; exit 3");
        assert_eq!(invocation.program, "/bin/sh");
        assert_eq!(invocation.args, vec!["-c", "echo hi; exit 3"]);
    }

    #[test]
    fn code_mode_runs_an_entry_in_the_working_dir_with_bun() {
        let entry = code_entry_path(Path::new("/workspace/app"), "uid-1");
        assert_eq!(entry, Path::new("/workspace/app/.kubexec-main-uid-1.ts"));
        let invocation = bun(&entry);
        assert_eq!(invocation.program, "bun");
        assert_eq!(
            invocation.args,
            vec!["run", "/workspace/app/.kubexec-main-uid-1.ts"]
        );
    }
}
