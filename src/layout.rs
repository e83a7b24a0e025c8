//! The sandbox layout: every fact about a sandbox Pod that more than one part of kubexec must
//! agree on. The operator's Pod builder, the exec client, the api and the CRD validation all
//! read it from here, so each fact is defined once.
//!
//! This module sits just above the runner protocol and below everything else: it imports
//! nothing of kubexec's own.

use kubexec_runner::protocol::DEFAULT_WORKSPACE;

/// Mount point of the workspace inside the sandbox, and the default working directory.
pub const WORKSPACE_DIR: &str = DEFAULT_WORKSPACE;

/// Name of the sandbox container, where executions run.
pub const SANDBOX_CONTAINER: &str = "sandbox";

/// The operator's ServiceAccount as the chart names it (release `kubexec`).
pub const OPERATOR_SERVICE_ACCOUNT: &str = "kubexec-operator";
/// The ClusterRole of the operator's work in a namespace enabled for sandboxes (the chart's
/// `<release>-operator-sandboxes`), bound there by a RoleBinding.
pub const OPERATOR_SANDBOX_ROLE: &str = "kubexec-operator-sandboxes";

/// Name of the init container that installs the runner.
pub const INSTALL_CONTAINER: &str = "install-runner";
/// Where the runner binary is installed inside the Pod (a read-only emptyDir in the sandbox).
pub const RUNNER_DIR: &str = "/kubexec/bin";
/// Path of the runner binary inside the sandbox container.
pub const RUNNER_PATH: &str = "/kubexec/bin/kubexec-runner";
/// Path of the runner binary inside the runner image.
pub const RUNNER_IMAGE_PATH: &str = "/kubexec-runner";
/// User and group id sandboxes run as.
pub const SANDBOX_UID: i64 = 1000;

/// Port an execution can serve a preview on; the api proxies `/preview/<id>/` to it.
pub const PREVIEW_PORT: u16 = 8080;

/// Environment variable telling the runner the process-count limit to enforce.
pub const PIDS_LIMIT_ENV: &str = kubexec_runner::protocol::PIDS_LIMIT_ENV;
/// Environment variable naming the Session inside its sandbox.
pub const SESSION_ENV: &str = "KUBEXEC_SESSION";

/// The sandbox Pod of a Session is named `<session>-sandbox`, so it can be found without a
/// lookup and there is never more than one.
pub fn pod_name(session_name: &str) -> String {
    format!("{session_name}-sandbox")
}

/// The workspace claim of a persistent Session is named `<session>-workspace`.
pub fn workspace_claim_name(session_name: &str) -> String {
    format!("{session_name}-workspace")
}

/// What [`is_working_dir`] requires, in the words every front door uses.
pub const WORKING_DIR_RULE: &str =
    "must be /workspace or a directory below it, without '..' segments";

/// True when `dir` is the workspace or a directory below it, without `..` segments or NUL.
/// (The CRD's CEL rule on `spec.workingDir` says the same.)
pub fn is_working_dir(dir: &str) -> bool {
    let below = dir
        .strip_prefix(WORKSPACE_DIR)
        .is_some_and(|rest| rest.starts_with('/'));
    (dir == WORKSPACE_DIR || below) && !dir.contains('\0') && !dir.split('/').any(|s| s == "..")
}

/// The regular expression an environment variable name must match (POSIX-style names, so
/// `A=B` or `1X` are refused). The CRD's CEL rule matches it; [`is_env_name`] checks it in code.
pub const ENV_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";

/// What [`is_env_name`] requires, in the words every front door uses.
pub const ENV_NAME_RULE: &str =
    "must start with a letter or '_' and contain only letters, digits and '_' (no '=' or spaces)";

/// True when `name` is a valid environment variable name ([`ENV_NAME_PATTERN`]).
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Names kubexec sets on the sandbox for itself ([`PIDS_LIMIT_ENV`], [`SESSION_ENV`] and every
/// setting the runner reads) start with this. A Session's or an Execution's env may not use it:
/// a Session's env reaches the runner's own environment.
pub const RESERVED_ENV_PREFIX: &str = kubexec_runner::protocol::RUNNER_ENV_PREFIX;

/// Why [`is_reserved_env_name`] refuses a name, in the words every front door uses.
pub const RESERVED_ENV_RULE: &str =
    "is reserved: names starting with KUBEXEC_ are kubexec's own settings";

/// True when `name` belongs to kubexec itself ([`RESERVED_ENV_PREFIX`]).
pub fn is_reserved_env_name(name: &str) -> bool {
    name.starts_with(RESERVED_ENV_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_session() {
        assert_eq!(pod_name("demo"), "demo-sandbox");
        assert_eq!(workspace_claim_name("demo"), "demo-workspace");
        assert!(RUNNER_PATH.starts_with(RUNNER_DIR));
    }

    #[test]
    fn working_dirs_stay_in_the_workspace() {
        for ok in [
            "/workspace",
            "/workspace/app",
            "/workspace/a/b/",
            "/workspace/..x",
        ] {
            assert!(is_working_dir(ok), "{ok}");
        }
        for bad in [
            "/",
            "/tmp",
            "/workspacefoo",
            "/workspace/..",
            "/workspace/a/../..",
            "workspace",
            "/workspace/a\0",
        ] {
            assert!(!is_working_dir(bad), "{bad:?}");
        }
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("_ok_1"));
        assert!(is_env_name("PATH"));
        assert!(!is_env_name("1abc"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("A=B"));
        assert!(!is_env_name("A-B"));
    }

    #[test]
    fn kubexec_keeps_its_own_env_names() {
        assert!(RESERVED_ENV_RULE.contains(RESERVED_ENV_PREFIX));
        for name in [PIDS_LIMIT_ENV, SESSION_ENV, "KUBEXEC_WORKSPACE", "KUBEXEC_"] {
            assert!(is_reserved_env_name(name), "{name}");
        }
        for name in ["KUBEXEC", "kubexec_pids_limit", "MY_KUBEXEC_X", "PATH"] {
            assert!(!is_reserved_env_name(name), "{name}");
        }
    }
}
