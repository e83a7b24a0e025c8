//! Status (IO): write the Session status with server-side apply.

use kube::{
    api::{Patch, PatchParams},
    Api, ResourceExt,
};
use serde_json::json;

use crate::crd::{Session, SessionStatus, API_VERSION};
use crate::operator::{Error, Result};

/// Field manager of the Session controller's status writes.
pub const FIELD_MANAGER: &str = "kubexec-session-controller";

/// The apply patch for the fields this controller owns. `lastActivityAt` is left out: it
/// belongs to the execution path (see [`crate::shared::activity`]).
pub fn status_patch(status: &SessionStatus) -> serde_json::Value {
    let owned = SessionStatus {
        last_activity_at: None,
        ..status.clone()
    };
    json!({
        "apiVersion": API_VERSION,
        "kind": "Session",
        "status": owned,
    })
}

/// Writes the status (server-side apply, forced: this controller owns these fields).
pub async fn write(client: &kube::Client, session: &Session, status: &SessionStatus) -> Result<()> {
    let namespace = session
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let sessions: Api<Session> = Api::namespaced(client.clone(), &namespace);
    sessions
        .patch_status(
            &session.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(status_patch(status)),
        )
        .await
        .map_err(Error::kube("write session status"))?;
    Ok(())
}
