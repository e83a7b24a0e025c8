//! What a watch cache of Executions keeps. The operator and the api both watch every
//! Execution; neither reads an Execution's output or its field managers from the cache, and
//! those are most of an object's size. Both caches pass each object through
//! [`slim_execution`] (with kube's `WatchStreamExt::modify`) before they store it, so their
//! memory follows the number of Executions, not what tenants print.

use crate::crd::Execution;

/// The annotation `kubectl apply` keeps a full copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no cache reader needs: `managedFields`, kubectl's last-applied copy, and the
/// captured `stdout`/`stderr` in the status. Whoever needs the output reads the object with a
/// GET, or keeps the versions it waits for whole (the api's waiters, see `api::informer`).
pub fn slim_execution(execution: &mut Execution) {
    execution.metadata.managed_fields = None;
    if let Some(annotations) = execution.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
    if let Some(status) = execution.status.as_mut() {
        status.stdout = None;
        status.stderr = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ExecutionSpec, ExecutionStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    #[test]
    fn the_cache_keeps_no_output_and_no_field_managers() {
        let mut execution = Execution::new("exe-1", ExecutionSpec::default());
        execution.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        execution.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "x".repeat(100_000)),
                ("team".to_string(), "a".to_string()),
            ]
            .into(),
        );
        execution.status = Some(ExecutionStatus {
            stdout: Some("y".repeat(100_000)),
            stderr: Some("z".into()),
            exit_code: Some(3),
            ..Default::default()
        });
        slim_execution(&mut execution);
        let kept = serde_json::to_string(&execution).expect("json");
        assert!(kept.len() < 1000, "{} bytes kept", kept.len());
        let status = execution.status.expect("status");
        assert_eq!(status.exit_code, Some(3));
        assert!(status.stdout.is_none() && status.stderr.is_none());
        assert_eq!(
            execution
                .metadata
                .annotations
                .and_then(|a| a.get("team").cloned()),
            Some("a".into())
        );
    }
}
