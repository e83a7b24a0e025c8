//! What the `kubexec api` preview flags ([`PreviewArgs`]) become: where previews are served, the origin
//! of each preview (`<session>-<port>.<domain>`), the ports that may be previewed, how long a
//! link works, and the signing secret. Parsing Host headers and building preview URLs is here
//! too, so that both directions read one definition.

use std::{path::PathBuf, time::Duration};

use super::token::{Signer, WeakSecret};
use crate::api::config::{is_dns_label, PreviewArgs};
use crate::layout::PREVIEW_PORT;

/// The query parameter that carries a token on a preview link's first visit.
pub const TOKEN_PARAM: &str = "kubexec_token";
/// The cookie that carries the token afterwards (host-only, so per preview origin).
pub const COOKIE: &str = "kubexec_preview";

/// Why the preview flags were refused.
#[derive(Debug, thiserror::Error)]
pub enum PreviewConfigError {
    /// `--preview-ports` is not a port or a range holding the preview port.
    #[error("--preview-ports {text:?}: {why}")]
    Ports {
        /// The flag's value.
        text: String,
        /// What is wrong.
        why: String,
    },
    /// `--preview-url` is not `http(s)://<domain>[:port]`.
    #[error("--preview-url {0:?}: expected http(s)://<domain>[:port], without a path")]
    Url(String),
    /// `--preview-token-ttl` is 0.
    #[error("--preview-token-ttl must be at least 1 second")]
    Ttl,
    /// The secret file could not be read.
    #[error("--preview-secret-file {path:?}: {source}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The secret is too short.
    #[error(transparent)]
    WeakSecret(#[from] WeakSecret),
    /// No randomness for a per-process secret.
    #[error(transparent)]
    NoRandomness(#[from] crate::api::keys::NoRandomness),
}

pub use crate::shared::ports::PortRange;

/// Where preview origins live: `<scheme>://<label>.<domain>[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewOrigin {
    /// `http` or `https`.
    pub scheme: String,
    /// The domain under which each preview gets a name (lowercase).
    pub domain: String,
    /// The port in URLs, if not the scheme's default.
    pub port: Option<u16>,
}

impl PreviewOrigin {
    /// Parses `http(s)://<domain>[:port]` (a trailing `/` is allowed).
    pub fn parse(url: &str) -> Result<Self, PreviewConfigError> {
        let bad = || PreviewConfigError::Url(url.to_string());
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        if scheme != "http" && scheme != "https" {
            return Err(bad());
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (domain, port) = match rest.rsplit_once(':') {
            Some((domain, port)) => (domain, Some(port.parse::<u16>().map_err(|_| bad())?)),
            None => (rest, None),
        };
        let domain = domain.to_ascii_lowercase();
        if domain.is_empty() || !domain.split('.').all(is_dns_label) {
            return Err(bad());
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        Ok(Self {
            scheme: scheme.to_string(),
            domain,
            port: port.filter(|p| *p != default_port),
        })
    }

    /// The origin of one session's port, e.g. `http://ses-abc-8080.preview.localhost:18081`.
    pub fn origin_of(&self, session: &str, port: u16) -> String {
        let authority = match self.port {
            Some(p) => format!("{session}-{port}.{}:{p}", self.domain),
            None => format!("{session}-{port}.{}", self.domain),
        };
        format!("{}://{authority}", self.scheme)
    }

    /// The session and port a `Host` header names, if it is a preview origin of this domain.
    /// The header's port is not checked: a proxy in front may use another.
    pub fn parse_host(&self, host: &str) -> Option<(String, u16)> {
        let host = host.trim().to_ascii_lowercase();
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host.as_str(),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let label = name.strip_suffix(&self.domain)?.strip_suffix('.')?;
        let (session, port) = label.rsplit_once('-')?;
        if !is_dns_label(session) || port.starts_with('0') {
            return None;
        }
        Some((session.to_string(), port.parse().ok()?))
    }

    /// True for an `https` origin (the preview cookie is then `Secure`).
    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }
}

/// The preview settings the api runs with.
#[derive(Clone, Debug)]
pub struct PreviewSettings {
    /// Where preview origins live.
    pub origin: PreviewOrigin,
    /// Ports that may be previewed.
    pub ports: PortRange,
    /// How long a link works, and the most a caller may ask for.
    pub token_ttl: Duration,
    /// Signs and checks tokens.
    pub signer: Signer,
}

impl PreviewSettings {
    /// Settings from the flags; `bound_port` is the preview listener's port, for the default
    /// `--preview-url`.
    pub fn from_args(args: &PreviewArgs, bound_port: u16) -> Result<Self, PreviewConfigError> {
        let origin = match args.preview_url.as_deref() {
            Some(url) if !url.trim().is_empty() => PreviewOrigin::parse(url.trim())?,
            _ => PreviewOrigin::local(bound_port),
        };
        if args.preview_token_ttl == 0 {
            return Err(PreviewConfigError::Ttl);
        }
        let signer = match &args.preview_secret_file {
            Some(path) => Signer::new(&std::fs::read(path).map_err(|source| {
                PreviewConfigError::SecretFile {
                    path: path.clone(),
                    source,
                }
            })?)?,
            None => Signer::new(crate::api::keys::random_name_suffix(48)?.as_bytes())?,
        };
        Ok(Self {
            origin,
            ports: PortRange::parse_preview(&args.preview_ports).map_err(|why| {
                PreviewConfigError::Ports {
                    text: args.preview_ports.clone(),
                    why,
                }
            })?,
            token_ttl: Duration::from_secs(args.preview_token_ttl),
            signer,
        })
    }

    /// Settings for tests and for an api that serves previews on `127.0.0.1:<port>`.
    pub fn local(port: u16, signer: Signer) -> Self {
        Self {
            origin: PreviewOrigin::local(port),
            ports: PortRange::single(PREVIEW_PORT),
            token_ttl: Duration::from_secs(3600),
            signer,
        }
    }
}

impl PreviewOrigin {
    /// `http://preview.localhost:<port>`.
    pub fn local(port: u16) -> Self {
        Self {
            scheme: "http".into(),
            domain: "preview.localhost".into(),
            port: (port != 80).then_some(port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_round_trip_through_the_host_header() {
        let origin = PreviewOrigin::parse("https://Preview.Example.com/").expect("valid");
        assert_eq!(
            origin.origin_of("ses-abc", 8080),
            "https://ses-abc-8080.preview.example.com"
        );
        assert_eq!(
            origin.parse_host("ses-abc-8080.preview.example.com"),
            Some(("ses-abc".into(), 8080))
        );
        assert_eq!(
            origin.parse_host("SES-abc-3000.preview.example.com:443"),
            Some(("ses-abc".into(), 3000))
        );
        let local = PreviewOrigin::local(18081);
        assert_eq!(
            local.origin_of("ses-x", 8080),
            "http://ses-x-8080.preview.localhost:18081"
        );
        assert_eq!(
            local.parse_host("ses-x-8080.preview.localhost:18081"),
            Some(("ses-x".into(), 8080))
        );
        for host in [
            "preview.localhost",
            "ses-x.preview.localhost",
            "ses-x-08080.preview.localhost",
            "ses-x-99999.preview.localhost",
            "a.ses-x-8080.preview.localhost",
            "ses-x-8080.otherpreview.localhost",
            "ses-x-8080.preview.localhost.evil.com",
            "-8080.preview.localhost",
            "127.0.0.1:18081",
        ] {
            assert_eq!(local.parse_host(host), None, "{host}");
        }
        assert_eq!(
            PreviewOrigin::parse("http://p.example.com:80")
                .map(|o| o.port)
                .ok(),
            Some(None)
        );
        for bad in [
            "p.example.com",
            "ftp://p.example.com",
            "http://",
            "http://p/x",
            "http://a_b.c",
        ] {
            assert!(PreviewOrigin::parse(bad).is_err(), "{bad}");
        }
    }
}
