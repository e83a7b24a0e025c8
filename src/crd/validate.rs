//! Pure validation of Session and Execution specs.
//!
//! The CRD schema and its CEL rules are the first line (the apiserver refuses bad objects); this
//! module checks the same rules in code, plus what CEL cannot express, so the operator never
//! builds a Pod from a bad spec and the api can name the offending field before creating
//! anything.

use thiserror::Error;

use super::{
    quantity::Quantity, EnvVar, ExecutionSpec, FileEncoding, SessionSpec, MAX_ENV,
    MAX_INLINE_FILES, MAX_INLINE_FILE_BYTES, MAX_METADATA_BYTES, MAX_PATH_LENGTH, MAX_SESSION_NAME,
    MAX_TIMEOUT_SECONDS, MAX_TTL_SECONDS,
};

use crate::layout::{
    is_env_name, is_reserved_env_name, is_working_dir, ENV_NAME_RULE, RESERVED_ENV_RULE,
    WORKING_DIR_RULE, WORKSPACE_DIR,
};

/// A spec field with a value that is not allowed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// JSON path of the field, e.g. `spec.files[2].path`.
    pub field: String,
    /// What is wrong, in words a user understands.
    pub message: String,
}

impl ValidationError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

type Result<T = (), E = ValidationError> = std::result::Result<T, E>;

/// Checks a Session's name and spec.
pub fn validate_session(name: &str, spec: &SessionSpec) -> Result {
    if name.len() > MAX_SESSION_NAME {
        return Err(ValidationError::new(
            "metadata.name",
            format!("Session names are at most {MAX_SESSION_NAME} characters long"),
        ));
    }
    if let Some(image) = &spec.image {
        if image.trim().is_empty() {
            return Err(ValidationError::new("spec.image", "must not be empty"));
        }
    }
    let quantities = [
        ("spec.resources.cpu", spec.resources.cpu.as_deref()),
        ("spec.resources.memory", spec.resources.memory.as_deref()),
        (
            "spec.resources.ephemeralStorage",
            spec.resources.ephemeral_storage.as_deref(),
        ),
        ("spec.workspace.size", Some(spec.workspace.size.as_str())),
    ];
    for (field, value) in quantities {
        if let Some(value) = value {
            positive_quantity(field, value)?;
        }
    }
    if let Some(pids) = spec.resources.pids {
        if !(16..=32768).contains(&pids) {
            return Err(ValidationError::new(
                "spec.resources.pids",
                "must be between 16 and 32768",
            ));
        }
    }
    validate_env("spec.env", &spec.env)?;
    if !(1..=MAX_TTL_SECONDS).contains(&spec.ttl_seconds) {
        return Err(ValidationError::new(
            "spec.ttlSeconds",
            format!("must be between 1 and {MAX_TTL_SECONDS}"),
        ));
    }
    for (field, value) in [
        ("spec.sleepAfterSeconds", spec.sleep_after_seconds),
        ("spec.idleTimeoutSeconds", spec.idle_timeout_seconds),
    ] {
        if value.is_some_and(|seconds| !(1..=MAX_TTL_SECONDS).contains(&seconds)) {
            return Err(ValidationError::new(
                field,
                format!("must be between 1 and {MAX_TTL_SECONDS}"),
            ));
        }
    }
    if let (Some(sleep), Some(deep)) = (spec.sleep_after_seconds, spec.idle_timeout_seconds) {
        if sleep >= deep {
            return Err(ValidationError::new(
                "spec.sleepAfterSeconds",
                "must be less than spec.idleTimeoutSeconds (sleep comes before deep sleep)",
            ));
        }
    }
    if let Some(timeout) = spec.default_timeout_seconds {
        timeout_in_bounds("spec.defaultTimeoutSeconds", timeout)?;
    }
    let metadata_bytes: usize = spec.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if metadata_bytes > MAX_METADATA_BYTES || spec.metadata.len() > 64 {
        return Err(ValidationError::new(
            "spec.metadata",
            "is limited to 64 entries and 16 KiB in total (keys plus values)",
        ));
    }
    Ok(())
}

/// Checks an Execution's spec.
pub fn validate_execution(spec: &ExecutionSpec) -> Result {
    if spec.session_ref.name.is_empty() {
        return Err(ValidationError::new("spec.sessionRef.name", "is required"));
    }
    let programs = [
        spec.code.is_some(),
        spec.command.is_some(),
        spec.staged_code.is_some(),
    ];
    let programs = programs.into_iter().filter(|set| *set).count();
    if programs > 1 {
        return Err(ValidationError::new(
            "spec",
            "set at most one of code, command and stagedCode (none means a files-only write)",
        ));
    }
    if programs == 0 && spec.files.is_empty() {
        return Err(ValidationError::new(
            "spec",
            "nothing to do: set code, command, or files",
        ));
    }
    if let Some(timeout) = spec.timeout_seconds {
        timeout_in_bounds("spec.timeoutSeconds", timeout)?;
    }
    if spec.env.len() > MAX_ENV {
        return Err(ValidationError::new(
            "spec.env",
            format!("at most {MAX_ENV} variables (use envFrom for more)"),
        ));
    }
    validate_env("spec.env", &spec.env)?;
    if let Some(dir) = &spec.working_dir {
        working_dir("spec.workingDir", dir)?;
    }
    if spec.files.len() > MAX_INLINE_FILES {
        return Err(ValidationError::new(
            "spec.files",
            format!("at most {MAX_INLINE_FILES} inline files"),
        ));
    }
    for (i, file) in spec.files.iter().enumerate() {
        let field = format!("spec.files[{i}].path");
        workspace_path(&field, &file.path)?;
        if file.content.len() > MAX_INLINE_FILE_BYTES {
            return Err(ValidationError::new(
                format!("spec.files[{i}].content"),
                "inline files are at most 64 KiB; write larger files through the API",
            ));
        }
        if file.encoding == FileEncoding::Base64 && !looks_like_base64(&file.content) {
            return Err(ValidationError::new(
                format!("spec.files[{i}].content"),
                "is not valid base64",
            ));
        }
    }
    Ok(())
}

/// Checks that a file path stays inside the workspace and returns it relative to
/// `/workspace` (the form the runner takes).
pub fn workspace_path<'a>(field: &str, path: &'a str) -> Result<&'a str> {
    if path.is_empty() || path.len() > MAX_PATH_LENGTH {
        return Err(ValidationError::new(
            field,
            format!("must be 1 to {MAX_PATH_LENGTH} characters"),
        ));
    }
    if path.contains('\0') {
        return Err(ValidationError::new(field, "must not contain NUL"));
    }
    let relative = if let Some(rest) = path
        .strip_prefix(WORKSPACE_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        rest
    } else if path.starts_with('/') {
        return Err(ValidationError::new(
            field,
            "absolute paths must be below /workspace/",
        ));
    } else {
        path
    };
    if has_dot_dot(path) {
        return Err(ValidationError::new(
            field,
            "must stay inside the workspace: '..' path segments are not allowed",
        ));
    }
    if relative.trim_matches('/').is_empty() {
        return Err(ValidationError::new(
            field,
            "must name a file, not the workspace",
        ));
    }
    Ok(relative)
}

/// Checks an absolute working directory (see [`is_working_dir`]).
pub fn working_dir(field: &str, dir: &str) -> Result {
    if is_working_dir(dir) {
        Ok(())
    } else {
        Err(ValidationError::new(field, WORKING_DIR_RULE))
    }
}

/// Checks a tenant's environment variable name: valid (see [`is_env_name`]) and not one of
/// kubexec's own (see [`is_reserved_env_name`]), so that no env can change how the runner
/// enforces the sandbox's limits.
pub fn env_name(field: &str, name: &str) -> Result {
    let rule = if !is_env_name(name) {
        ENV_NAME_RULE
    } else if is_reserved_env_name(name) {
        RESERVED_ENV_RULE
    } else {
        return Ok(());
    };
    Err(ValidationError::new(field, format!("{name:?} {rule}")))
}

fn validate_env(field: &str, env: &[EnvVar]) -> Result {
    let mut seen = std::collections::BTreeSet::new();
    for (i, var) in env.iter().enumerate() {
        env_name(&format!("{field}[{i}].name"), &var.name)?;
        if !seen.insert(var.name.as_str()) {
            return Err(ValidationError::new(
                format!("{field}[{i}].name"),
                format!("duplicate variable {:?}", var.name),
            ));
        }
        if var.value.is_some() && var.value_from.is_some() {
            return Err(ValidationError::new(
                format!("{field}[{i}]"),
                "set either value or valueFrom, not both",
            ));
        }
    }
    Ok(())
}

fn timeout_in_bounds(field: &str, timeout: i32) -> Result {
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&timeout) {
        return Err(ValidationError::new(
            field,
            format!("must be between 1 and {MAX_TIMEOUT_SECONDS} seconds"),
        ));
    }
    Ok(())
}

fn positive_quantity(field: &str, value: &str) -> Result<Quantity> {
    let quantity =
        Quantity::parse(value).map_err(|e| ValidationError::new(field, e.to_string()))?;
    if quantity.is_zero() {
        return Err(ValidationError::new(field, "must be greater than zero"));
    }
    Ok(quantity)
}

fn has_dot_dot(path: &str) -> bool {
    path.split('/').any(|segment| segment == "..")
}

fn looks_like_base64(content: &str) -> bool {
    let trimmed: Vec<u8> = content
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    trimmed.len().is_multiple_of(4)
        && trimmed.iter().enumerate().all(|(i, &b)| {
            b.is_ascii_alphanumeric()
                || b == b'+'
                || b == b'/'
                || (b == b'=' && i + 2 >= trimmed.len())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{FileSpec, SessionReference};

    fn exec(f: impl FnOnce(&mut ExecutionSpec)) -> ExecutionSpec {
        let mut spec = ExecutionSpec {
            session_ref: SessionReference { name: "s".into() },
            command: Some("echo hi".into()),
            ..Default::default()
        };
        f(&mut spec);
        spec
    }

    fn field_of(spec: &ExecutionSpec) -> String {
        validate_execution(spec).expect_err("invalid").field
    }

    #[test]
    fn accepts_a_plain_command() {
        assert_eq!(validate_execution(&exec(|_| {})), Ok(()));
    }

    #[test]
    fn code_and_command_are_exclusive() {
        let spec = exec(|s| s.code = Some("1".into()));
        assert_eq!(field_of(&spec), "spec");
        let files_only = exec(|s| {
            s.command = None;
            s.files = vec![FileSpec {
                path: "a.txt".into(),
                ..Default::default()
            }];
        });
        assert_eq!(validate_execution(&files_only), Ok(()));
        let nothing = exec(|s| s.command = None);
        assert!(validate_execution(&nothing).is_err());
    }

    #[test]
    fn timeout_bounds() {
        assert_eq!(
            field_of(&exec(|s| s.timeout_seconds = Some(301))),
            "spec.timeoutSeconds"
        );
        assert_eq!(
            field_of(&exec(|s| s.timeout_seconds = Some(0))),
            "spec.timeoutSeconds"
        );
        assert!(validate_execution(&exec(|s| s.timeout_seconds = Some(300))).is_ok());
    }

    #[test]
    fn env_names_and_count() {
        let bad = exec(|s| s.env = vec![EnvVar::literal("A=B", "x")]);
        assert_eq!(field_of(&bad), "spec.env[0].name");
        let dup = exec(|s| s.env = vec![EnvVar::literal("A", "1"), EnvVar::literal("A", "2")]);
        assert_eq!(field_of(&dup), "spec.env[1].name");
        let many = exec(|s| {
            s.env = (0..101)
                .map(|i| EnvVar::literal(format!("V{i}"), "x"))
                .collect()
        });
        assert_eq!(field_of(&many), "spec.env");
        assert!(is_env_name("_ok_1"));
        assert!(!is_env_name("1abc"));
        assert!(!is_env_name(""));
    }

    #[test]
    fn kubexec_env_names_are_refused() {
        let exec_env = exec(|s| s.env = vec![EnvVar::literal("KUBEXEC_PIDS_LIMIT", "100000")]);
        let error = validate_execution(&exec_env).expect_err("reserved");
        assert_eq!(error.field, "spec.env[0].name");
        assert!(error.message.contains("reserved"), "{}", error.message);
        let session = SessionSpec {
            ttl_seconds: 60,
            env: vec![
                EnvVar::literal("GREETING", "hi"),
                EnvVar::literal("KUBEXEC_WORKSPACE", "/"),
            ],
            ..Default::default()
        };
        assert_eq!(
            validate_session("s", &session).expect_err("reserved").field,
            "spec.env[1].name"
        );
        assert_eq!(env_name("env.kubexec_x", "kubexec_x"), Ok(()));
    }

    #[test]
    fn paths_stay_in_the_workspace() {
        assert_eq!(workspace_path("f", "src/a.ts"), Ok("src/a.ts"));
        assert_eq!(workspace_path("f", "/workspace/a.ts"), Ok("a.ts"));
        assert_eq!(workspace_path("f", "a/..b/c"), Ok("a/..b/c"));
        for bad in [
            "../x",
            "a/../../x",
            "..",
            "/etc/passwd",
            "/workspace",
            "/workspace/",
            "a/..",
        ] {
            assert!(workspace_path("f", bad).is_err(), "{bad} should be refused");
        }
        let spec = exec(|s| {
            s.files = vec![FileSpec {
                path: "../x".into(),
                ..Default::default()
            }]
        });
        assert_eq!(field_of(&spec), "spec.files[0].path");
    }

    #[test]
    fn working_dir_stays_in_the_workspace() {
        assert!(
            validate_execution(&exec(|s| s.working_dir = Some("/workspace/app".into()))).is_ok()
        );
        assert_eq!(
            field_of(&exec(|s| s.working_dir = Some("/tmp".into()))),
            "spec.workingDir"
        );
        assert_eq!(
            field_of(&exec(|s| s.working_dir = Some("/workspace/../etc".into()))),
            "spec.workingDir"
        );
    }

    #[test]
    fn base64_content_is_checked() {
        let spec = exec(|s| {
            s.files = vec![FileSpec {
                path: "b.bin".into(),
                content: "not base64!".into(),
                encoding: FileEncoding::Base64,
            }]
        });
        assert_eq!(field_of(&spec), "spec.files[0].content");
    }

    #[test]
    fn session_quantities_and_metadata() {
        let mut spec = SessionSpec {
            ttl_seconds: 60,
            ..Default::default()
        };
        assert_eq!(validate_session("s", &spec), Ok(()));
        spec.resources.memory = Some("lots".into());
        assert_eq!(
            validate_session("s", &spec).expect_err("bad memory").field,
            "spec.resources.memory"
        );
        spec.resources.memory = None;
        spec.metadata
            .insert("k".into(), "v".repeat(MAX_METADATA_BYTES));
        assert_eq!(
            validate_session("s", &spec).expect_err("too big").field,
            "spec.metadata"
        );
        spec.metadata.clear();
        assert!(validate_session(&"x".repeat(64), &spec).is_err());
    }
}
