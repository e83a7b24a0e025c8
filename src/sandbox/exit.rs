//! Turning the exec stream's final `Status` into an exit code.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;

use super::SandboxError;

/// The exit code in an exec `Status`: `Success` is 0; a `Failure` with reason
/// `NonZeroExitCode` carries the code as the `ExitCode` cause. Any other failure means the
/// command did not run to an exit (the runtime could not start it, or the container went away).
/// `None` (no status at all) means the stream broke.
pub fn exit_code(status: Option<&Status>) -> Result<i32, SandboxError> {
    let Some(status) = status else {
        return Err(SandboxError::StreamClosed);
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode") {
        let code = status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.reason.as_deref() == Some("ExitCode"))
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.trim().parse::<i32>().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    Err(SandboxError::ExecFailed(
        status
            .message
            .clone()
            .or_else(|| status.reason.clone())
            .unwrap_or_else(|| "unknown exec failure".into()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(value: serde_json::Value) -> Status {
        serde_json::from_value(value).expect("a Status")
    }

    #[test]
    fn success_is_zero() {
        let s = status(json!({"metadata": {}, "status": "Success"}));
        assert_eq!(exit_code(Some(&s)).ok(), Some(0));
    }

    #[test]
    fn non_zero_exit_codes_are_read_from_the_cause() {
        let s = status(json!({
            "metadata": {}, "status": "Failure",
            "message": "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}
        }));
        assert_eq!(exit_code(Some(&s)).ok(), Some(3));
    }

    #[test]
    fn other_failures_and_a_missing_status_are_errors() {
        let s = status(json!({
            "metadata": {}, "status": "Failure",
            "message": "exec: \"nope\": executable file not found in $PATH",
            "reason": "InternalError"
        }));
        assert!(
            matches!(exit_code(Some(&s)), Err(SandboxError::ExecFailed(m)) if m.contains("nope"))
        );
        assert!(matches!(exit_code(None), Err(SandboxError::StreamClosed)));
    }
}
