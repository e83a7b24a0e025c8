//! Types shared by both resources: environment variables and status conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

pub use crate::layout::ENV_NAME_PATTERN;
use crate::layout::ENV_NAME_RULE;

/// One environment variable of a sandbox or an execution.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.value) && has(self.valueFrom))")
    .message("set either value or valueFrom, not both"))]
pub struct EnvVar {
    /// Variable name: a letter or `_`, then letters, digits or `_` (at most 256 characters).
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')")
        .message(ENV_NAME_RULE))]
    pub name: String,

    /// Literal value (at most 32 KiB). Anything secret belongs in `valueFrom` instead, so it is
    /// not stored in plain text in this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub value: Option<String>,

    /// Takes the value from a key of a Secret in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

impl EnvVar {
    /// A variable with a literal value.
    pub fn literal(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }
}

/// Where an environment variable's value comes from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a Secret in the same namespace.
    pub secret_key_ref: SecretKeySelector,
}

/// Selects one key of a Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Names a Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Condition types and reasons used in the status of kubexec resources.
pub mod conditions {
    /// Session condition: the sandbox Pod is running and ready for executions.
    pub const READY: &str = "Ready";
    /// Execution condition: the execution ran to the end (whatever its exit code).
    pub const COMPLETE: &str = "Complete";
    /// Execution condition: the execution could not run or did not finish.
    pub const FAILED: &str = "Failed";

    /// `Ready` reason: the sandbox's runner answered: executions run at once.
    pub const REASON_POD_READY: &str = "PodReady";
    /// `Ready` reason: the Pod is being created or is starting.
    pub const REASON_POD_STARTING: &str = "PodStarting";
    /// `Ready` reason: `spec.suspend` is true.
    pub const REASON_SUSPENDED: &str = "Suspended";
    /// `Ready` reason: deep sleep: suspended after `idleTimeoutSeconds` without activity.
    pub const REASON_IDLE: &str = "Idle";
    /// `Ready` reason: asleep after `sleepAfterSeconds` without activity: the Pod and its
    /// processes are kept, its requests lowered. The next request wakes it.
    pub const REASON_SLEEPING: &str = "Sleeping";
    /// `Ready` reason: waking from sleep: the requests are being restored, and the Session is
    /// Ready once the apiserver accepts the resize.
    pub const REASON_WAKING: &str = "Waking";
    /// `Ready` reason: the spec changed and needs a new Pod, which waits until the Session's
    /// running executions finish.
    pub const REASON_WAITING_FOR_EXECUTIONS: &str = "WaitingForExecutions";
    /// `Ready` reason: the TTL has passed.
    pub const REASON_EXPIRED: &str = "Expired";
    /// `Ready` reason: the spec cannot be turned into a Pod.
    pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
    /// `Ready` reason: the Session is being deleted.
    pub const REASON_TERMINATING: &str = "Terminating";
    /// `Ready` reason: the operator may not run sandboxes in the Session's namespace.
    pub const REASON_NAMESPACE_NOT_ENABLED: &str = "NamespaceNotEnabled";
    /// `Ready` reason: the sandbox has no runner binary (its runner volume is empty).
    pub const REASON_RUNNER_MISSING: &str = "RunnerMissing";

    /// Execution reason: the Session does not exist.
    pub const REASON_SESSION_NOT_FOUND: &str = "SessionNotFound";
    /// Execution reason: `workingDir` does not exist in the session (or is not a directory).
    pub const REASON_WORKING_DIR_NOT_FOUND: &str = "WorkingDirNotFound";
    /// Execution reason: a file path of the spec leaves the workspace once resolved (through a
    /// symlink the session's own code made).
    pub const REASON_INVALID_PATH: &str = "InvalidPath";
}

/// Builds the next version of a condition, keeping `lastTransitionTime` when the status did not
/// change (as the Kubernetes API conventions ask).
pub fn next_condition(
    previous: Option<&Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = match previous {
        Some(prev) if prev.status == status => prev.last_transition_time.clone(),
        _ => now,
    };
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time,
    }
}

/// Finds a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid timestamp"))
    }

    #[test]
    fn condition_keeps_transition_time_when_status_is_unchanged() {
        let first = next_condition(None, "Ready", true, "PodReady", "ok", Some(1), at(10));
        let again = next_condition(
            Some(&first),
            "Ready",
            true,
            "PodReady",
            "still",
            Some(2),
            at(20),
        );
        assert_eq!(again.last_transition_time, at(10));
        assert_eq!(again.message, "still");
        let flipped = next_condition(
            Some(&again),
            "Ready",
            false,
            "Idle",
            "idle",
            Some(2),
            at(30),
        );
        assert_eq!(flipped.last_transition_time, at(30));
        assert_eq!(flipped.status, "False");
    }
}
