//! Preview links: the api's previews (settings and open exchanges) and the signed links to
//! them. No IO beyond the clock in [`unix_now`].

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{
    config::{PreviewSettings, TOKEN_PARAM},
    registry::OpenPreviews,
    token::Claims,
};

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
        let separator = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{path_and_query}{separator}{TOKEN_PARAM}={}",
            self.origin, self.token
        )
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
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
