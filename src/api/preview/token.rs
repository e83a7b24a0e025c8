//! Preview tokens: what lets a browser open a preview without the API key. A token names one
//! session, one port, the API key it was made for and when it expires, and carries an
//! HMAC-SHA256 of those under the api's preview signing secret:
//!
//! `v1.<session>.<port>.<key id>.<expires, unix seconds>.<mac, base64url>`
//!
//! Session names are DNS labels and key ids are hex, so none of the parts holds a dot. Nothing
//! here does IO or reads the clock: callers pass `now`.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const VERSION: &str = "v1";
/// The fewest bytes a signing secret may have.
pub const MIN_SECRET_BYTES: usize = 32;

/// What a token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The session (the Session's name).
    pub session: String,
    /// The sandbox port.
    pub port: u16,
    /// The id of the API key the token was made for; revoking the key revokes the token.
    pub key_id: String,
    /// When the token stops working, in seconds since the Unix epoch.
    pub expires: u64,
}

/// Why a token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this api: malformed, or signed under another secret.
    #[error("the preview token is not valid")]
    Invalid,
    /// Past its expiry.
    #[error("the preview token has expired")]
    Expired,
}

/// A signing secret that is too short to be one.
#[derive(Debug, thiserror::Error)]
#[error("the preview signing secret has {0} bytes; it needs at least {MIN_SECRET_BYTES}")]
pub struct WeakSecret(pub usize);

/// Signs and checks tokens under one secret.
#[derive(Clone)]
pub struct Signer {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer over `secret` (surrounding whitespace, as a Secret file may end in a newline,
    /// is not part of it).
    pub fn new(secret: &[u8]) -> Result<Self, WeakSecret> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(WeakSecret(secret.len()));
        }
        Ok(Self {
            secret: secret.to_vec(),
        })
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
        mac.update(payload.as_bytes());
        mac
    }

    /// The token for `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = format!(
            "{VERSION}.{}.{}.{}.{}",
            claims.session, claims.port, claims.key_id, claims.expires
        );
        let tag = self.mac(&payload).finalize().into_bytes();
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The claims of a token this signer made, if it has not expired at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let (payload, tag) = token.rsplit_once('.').ok_or(TokenError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Invalid)?;
        // Constant-time comparison.
        self.mac(payload)
            .verify_slice(&tag)
            .map_err(|_| TokenError::Invalid)?;
        let mut parts = payload.split('.');
        let (Some(VERSION), Some(session), Some(port), Some(key_id), Some(expires), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Invalid);
        };
        let claims = Claims {
            session: session.to_string(),
            port: port.parse().map_err(|_| TokenError::Invalid)?,
            key_id: key_id.to_string(),
            expires: expires.parse().map_err(|_| TokenError::Invalid)?,
        };
        if now >= claims.expires {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(secret: &str) -> Signer {
        Signer::new(secret.repeat(32).as_bytes()).expect("long enough")
    }

    fn claims() -> Claims {
        Claims {
            session: "ses-abc".into(),
            port: 8080,
            key_id: "0a1b2c3d".into(),
            expires: 1_000,
        }
    }

    #[test]
    fn a_token_round_trips_until_it_expires() {
        let s = signer("k");
        let token = s.sign(&claims());
        assert!(
            token.starts_with("v1.ses-abc.8080.0a1b2c3d.1000."),
            "{token}"
        );
        assert_eq!(s.verify(&token, 999), Ok(claims()));
        assert_eq!(s.verify(&token, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn a_changed_or_foreign_token_is_invalid() {
        let s = signer("k");
        let token = s.sign(&claims());
        assert_eq!(
            signer("j").verify(&token, 0),
            Err(TokenError::Invalid),
            "another secret"
        );
        for (from, to) in [
            ("ses-abc", "ses-abd"),
            (".8080.", ".8081."),
            ("0a1b2c3d", "0a1b2c3e"),
            (".1000.", ".9000."),
        ] {
            let forged = token.replacen(from, to, 1);
            assert_eq!(s.verify(&forged, 0), Err(TokenError::Invalid), "{forged}");
        }
        for junk in ["", ".", "v1", "v1.a.b.c.d.e", "v1.ses.8080.k.1.!!!"] {
            assert_eq!(s.verify(junk, 0), Err(TokenError::Invalid), "{junk:?}");
        }
        // A well-signed payload of another shape is refused too.
        let odd = format!(
            "v2.ses.8080.k.5.{}",
            URL_SAFE_NO_PAD.encode(s.mac("v2.ses.8080.k.5").finalize().into_bytes())
        );
        assert_eq!(s.verify(&odd, 0), Err(TokenError::Invalid));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Signer::new(b"short").is_err());
        assert!(Signer::new(format!("{}\n", "x".repeat(31)).as_bytes()).is_err());
        assert!(Signer::new("x".repeat(32).as_bytes()).is_ok());
    }
}
