//! Session activity: the status field that says when a Session was last used.
//!
//! The execution path (the operator's runs, the api's helpers) sets `status.lastActivityAt`
//! to the current time when an execution starts or finishes. A Ready Session's idle clock
//! restarts from it, and a Session suspended for idling resumes as soon as it is more recent
//! than `idleTimeoutSeconds` ago. It never overrides `spec.suspend: true`, which only the user
//! lifts. The Session controller's own status writes leave this field out.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    api::{Patch, PatchParams},
    Api,
};
use serde_json::json;

use crate::crd::{Session, API_VERSION};

/// The status field that records activity (and resumes an idle Session).
pub const RESUME_FIELD: &str = "status.lastActivityAt";

/// Who records activity: each component applies under its own field manager, so that
/// `kubectl get -o yaml --show-managed-fields` tells which one last touched a Session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivityWriter {
    field_manager: &'static str,
}

impl ActivityWriter {
    /// The operator, when an Execution starts or finishes, or resumes an idle Session.
    pub const OPERATOR: Self = Self {
        field_manager: "kubexec-operator-activity",
    };
    /// The api, when a request uses a Session without running an Execution (files,
    /// processes, previews).
    pub const API: Self = Self {
        field_manager: "kubexec-api-activity",
    };
    /// The name every component used before each got its own. Objects last written under it
    /// are still updated: the apply is forced, so the field changes hands.
    pub const LEGACY_FIELD_MANAGER: &'static str = "kubexec-execution-controller";

    /// The server-side apply field manager.
    pub fn field_manager(self) -> &'static str {
        self.field_manager
    }

    /// Records activity on a Session at `now`, which also resumes it if it is suspended for
    /// idling.
    pub async fn record(
        self,
        client: &kube::Client,
        namespace: &str,
        name: &str,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let sessions: Api<Session> = Api::namespaced(client.clone(), namespace);
        sessions
            .patch_status(
                name,
                &PatchParams::apply(self.field_manager).force(),
                &Patch::Apply(activity_patch(now)),
            )
            .await?;
        Ok(())
    }
}

/// The server-side apply patch that records activity at `now` (see [`RESUME_FIELD`]).
pub fn activity_patch(now: Timestamp) -> serde_json::Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "Session",
        "status": { "lastActivityAt": Time(now) },
    })
}

#[cfg(test)]
mod tests {
    use http::{Method, Request, Response};
    use kube::client::Body;
    use tower_test::mock;

    use super::*;

    #[test]
    fn activity_patch_sets_only_last_activity() {
        let now = Timestamp::from_second(1_700_000_000).expect("valid");
        let patch = activity_patch(now);
        assert_eq!(
            patch["status"],
            json!({"lastActivityAt": "2023-11-14T22:13:20Z"})
        );
        assert_eq!(RESUME_FIELD, "status.lastActivityAt");
    }

    #[test]
    fn each_writer_has_its_own_field_manager() {
        let names = [
            ActivityWriter::OPERATOR.field_manager(),
            ActivityWriter::API.field_manager(),
            ActivityWriter::LEGACY_FIELD_MANAGER,
        ];
        assert_eq!(
            names
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            3
        );
    }

    /// A Session whose `lastActivityAt` was last written under the old shared field manager is
    /// still updated by the renamed writers: the apply is forced, so the apiserver moves the
    /// field to the new manager instead of answering 409 Conflict.
    #[tokio::test]
    async fn a_field_owned_by_the_old_manager_is_still_updated() {
        let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "testns");
        let now = Timestamp::from_second(1_700_000_000).expect("valid");
        let server = tokio::spawn(async move {
            for writer in [ActivityWriter::OPERATOR, ActivityWriter::API] {
                let (request, send) = handle.next_request().await.expect("a request");
                assert_eq!(request.method(), Method::PATCH);
                assert_eq!(
                    request.uri().path(),
                    "/apis/kubexec.dev/v1alpha1/namespaces/testns/sessions/demo/status"
                );
                let query = request.uri().query().unwrap_or_default().to_string();
                assert!(
                    query.contains(&format!("fieldManager={}", writer.field_manager())),
                    "{query}"
                );
                // Without force, an apply that takes a field from another manager conflicts.
                assert!(query.contains("force=true"), "{query}");
                let body = request.into_body().collect_bytes().await.expect("body");
                let patch: serde_json::Value = serde_json::from_slice(&body).expect("json");
                assert_eq!(patch["status"]["lastActivityAt"], "2023-11-14T22:13:20Z");
                // Before: the field belonged to the old manager. After: to the writer.
                let mut session = Session::new("demo", Default::default());
                session.metadata.namespace = Some("testns".into());
                session.metadata.managed_fields = Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                        manager: Some(writer.field_manager().into()),
                        operation: Some("Apply".into()),
                        subresource: Some("status".into()),
                        ..Default::default()
                    },
                ]);
                session.status = Some(crate::crd::SessionStatus {
                    last_activity_at: Some(Time(now)),
                    ..Default::default()
                });
                let reply = serde_json::to_vec(&session).expect("json");
                send.send_response(
                    Response::builder()
                        .body(Body::from(reply))
                        .expect("response"),
                );
            }
        });
        for writer in [ActivityWriter::OPERATOR, ActivityWriter::API] {
            writer
                .record(&client, "testns", "demo", now)
                .await
                .expect("recorded");
        }
        server.await.expect("the apiserver saw both writes");
    }
}
