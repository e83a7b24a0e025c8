//! Browser-ready previews. Every session and port gets an origin of its own,
//! `<session>-<port>.<preview domain>`, served on a listener of its own (`--preview-listen`)
//! and routed by the Host header, so that a sandbox's pages never run with the API's origin
//! (or another sandbox's) authority. A browser opens a preview without the API key: the link
//! carries a signed, expiring [token](token) naming the session, the port and the key; the
//! first visit trades it for a host-only cookie and redirects to the same URL without it.
//!
//! Revoking the key, deleting the session or the token expiring closes the preview, open
//! WebSockets included ([`registry`], [`sweep`]). Open previews count against the key's
//! stream quota.
//!
//! Modules: [`config`] (flags, origins and ports), [`token`] (signing), [`headers`] (what is
//! passed on), [`links`] (signed links), [`registry`] (open previews), [`proxy`] (the
//! listener's handler).

pub mod config;
pub mod headers;
pub mod links;
pub mod proxy;
pub mod registry;
pub mod token;

use std::{collections::HashSet, sync::Arc, time::Duration};

use crate::layout::PREVIEW_PORT;

pub use self::links::{unix_now, Link, Previews};
use self::registry::to_close;
use super::{auth::Caller, routes::is_gone, state::AppState};

/// How often open previews are checked against keys, sessions and expiry.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The `previewUrl` of sessions as one caller sees them: port 8080, a link made for the
/// caller's key that works for `--preview-token-ttl`.
pub struct PreviewLinks {
    previews: Option<Arc<Previews>>,
    key_id: String,
    now: u64,
}

impl PreviewLinks {
    /// Links for `caller`, made now.
    pub fn for_caller(state: &AppState, caller: &Caller) -> Self {
        Self::new(state.previews.clone(), &caller.key_id, unix_now())
    }

    /// Links of `previews` for the key `key_id`, made at `now` (Unix seconds).
    pub fn new(previews: Option<Arc<Previews>>, key_id: &str, now: u64) -> Self {
        Self {
            previews,
            key_id: key_id.to_string(),
            now,
        }
    }

    /// The previewUrl of `session` (empty when the api serves no previews).
    pub fn url(&self, session: &str) -> String {
        match &self.previews {
            Some(previews) => previews
                .link(
                    &self.key_id,
                    session,
                    PREVIEW_PORT,
                    previews.settings.token_ttl,
                    self.now,
                )
                .url("/"),
            None => String::new(),
        }
    }
}

/// Closes the open previews whose key was revoked, whose session is gone or whose token
/// expired. Sessions are looked up only while one of their previews is open.
pub async fn sweep(state: &AppState) {
    sweep_at(state, unix_now()).await;
}

/// [`sweep`] as of `now` (Unix seconds).
pub async fn sweep_at(state: &AppState, now: u64) {
    let Some(previews) = &state.previews else {
        return;
    };
    let open = previews.open.snapshot();
    if open.is_empty() {
        return;
    }
    let sessions: HashSet<(String, String)> = open
        .iter()
        .map(|p| (p.target.namespace.clone(), p.target.session.clone()))
        .collect();
    let mut gone = HashSet::new();
    for (namespace, name) in sessions {
        match state.cluster.get_session(&namespace, &name).await {
            Ok(Some(session)) if !is_gone(&session) => {}
            Ok(_) => {
                gone.insert((namespace, name));
            }
            // Unknown for now: checked again on the next round.
            Err(error) => tracing::debug!(%error, session = %name, "checking a previewed session"),
        }
    }
    let closing = to_close(
        &open,
        now,
        |key_id| state.keys.get_by_id(key_id).is_some(),
        &gone,
    );
    for (id, reason) in &closing {
        tracing::info!(id, reason = reason.as_str(), "closing a preview");
    }
    previews.open.close(&closing);
}

/// Runs [`sweep`] every [`SWEEP_EVERY`], forever.
pub async fn run_sweeper(state: AppState) {
    loop {
        sweep(&state).await;
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}
