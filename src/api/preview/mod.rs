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
//! passed on), [`registry`] (open previews), [`proxy`] (the listener's handler).

pub mod config;
pub mod headers;
pub mod proxy;
pub mod registry;
pub mod token;

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::layout::PREVIEW_PORT;

use self::{
    config::{PreviewSettings, TOKEN_PARAM},
    registry::{to_close, OpenPreviews},
    token::Claims,
};
use super::{auth::Caller, routes::is_gone, state::AppState};

/// How often open previews are checked against keys, sessions and expiry.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The api's previews: their settings and the open ones.
pub struct Previews {
    /// Settings.
    pub settings: PreviewSettings,
    /// Open exchanges.
    pub open: Arc<OpenPreviews>,
}

impl Previews {
    /// Previews with `settings`, none open.
    pub fn new(settings: PreviewSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            open: Arc::default(),
        })
    }

    /// A link to `port` of `session` for `key_id`, working for `ttl` from `now` (Unix
    /// seconds), and when it stops working.
    pub fn link(&self, key_id: &str, session: &str, port: u16, ttl: Duration, now: u64) -> Link {
        let expires = now.saturating_add(ttl.as_secs().max(1));
        let token = self.settings.signer.sign(&Claims {
            session: session.to_string(),
            port,
            key_id: key_id.to_string(),
            expires,
        });
        Link {
            origin: self.settings.origin.origin_of(session, port),
            token,
            expires,
        }
    }
}

/// A preview link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// The preview's origin.
    pub origin: String,
    /// The token.
    pub token: String,
    /// When the token expires (Unix seconds).
    pub expires: u64,
}

impl Link {
    /// The URL of `path` (with its query, if any) on the preview, carrying the token.
    pub fn url(&self, path_and_query: &str) -> String {
        let path_and_query = if path_and_query.starts_with('/') {
            path_and_query.to_string()
        } else {
            format!("/{path_and_query}")
        };
        let separator = if path_and_query.contains('?') { '&' } else { '?' };
        format!(
            "{}{path_and_query}{separator}{TOKEN_PARAM}={}",
            self.origin, self.token
        )
    }
}

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

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::preview::token::Signer;

    #[test]
    fn links_carry_a_token_for_their_session_and_port() {
        let signer = Signer::new(&[7u8; 32]).expect("secret");
        let previews = Previews::new(PreviewSettings::local(18081, signer.clone()));
        let link = previews.link("k1", "ses-a", 3000, Duration::from_secs(60), 1_000);
        assert_eq!(link.origin, "http://ses-a-3000.preview.localhost:18081");
        assert_eq!(link.expires, 1_060);
        let url = link.url("/app?x=1");
        assert!(
            url.starts_with("http://ses-a-3000.preview.localhost:18081/app?x=1&kubexec_token=v1.ses-a.3000.k1.1060."),
            "{url}"
        );
        let claims = signer.verify(&link.token, 1_059).expect("valid");
        assert_eq!((claims.session.as_str(), claims.port), ("ses-a", 3000));
        assert!(link.url("").contains("18081/?kubexec_token="));
    }
}
