//! The operator's error type.

use thiserror::Error;

use crate::crd::validate::ValidationError;

/// Everything that can go wrong while running the operator or reconciling a resource.
#[derive(Debug, Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done, e.g. `create pod`.
        action: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },

    /// The spec cannot be turned into a Pod; waits for the user to fix it.
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] ValidationError),

    /// An object lacks a field the apiserver always sets (namespace, uid).
    #[error("object has no {0}")]
    MissingField(&'static str),

    /// A bad flag or setting.
    #[error("configuration: {0}")]
    Config(String),

    /// The metrics server failed.
    #[error("metrics server: {0}")]
    Server(#[source] std::io::Error),

    /// Creating the Kubernetes client failed.
    #[error("kubernetes client: {0}")]
    Client(#[source] kube::Error),

    /// The system's random number generator failed (a run's result key could not be made).
    #[error("no randomness: {0}")]
    NoRandomness(getrandom::Error),

    /// Another replica took the leader-election Lease, or it could not be renewed in time.
    #[error("lost the leader-election lease")]
    LeadershipLost,
}

/// Result with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(status) if status.code == 409 => "conflict",
                kube::Error::Api(status) if status.code == 404 => "not_found",
                kube::Error::Api(status) if status.code == 422 => "invalid",
                kube::Error::Api(status) if status.code == 403 => "forbidden",
                kube::Error::Api(_) => "api",
                _ => "transport",
            },
            Error::InvalidSpec(_) => "invalid_spec",
            Error::MissingField(_) => "missing_field",
            Error::Config(_) => "config",
            Error::Server(_) => "server",
            Error::Client(_) => "client",
            Error::NoRandomness(_) => "no_randomness",
            Error::LeadershipLost => "leadership_lost",
        }
    }

    /// True when the apiserver refused what was sent (bad request, too large, invalid), as
    /// opposed to a conflict, a throttle or a failure to reach it: sending the same again is
    /// refused again.
    pub fn is_refused_content(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(status), .. } if matches!(status.code, 400 | 413 | 422))
    }

    /// True when retrying cannot help until the object changes.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::InvalidSpec(_) | Error::MissingField(_))
    }

    /// True when the apiserver refused the call (403): RBAC does not reach the namespace.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(status), .. } if status.code == 403)
    }

    /// What was being done, for a kube error.
    pub fn action(&self) -> Option<&'static str> {
        match self {
            Error::Kube { action, .. } => Some(action),
            _ => None,
        }
    }

    /// Wraps a client error with what was being done.
    pub fn kube(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube { action, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> Error {
        let status = kube::core::Status::failure("refused", "Invalid").with_code(code);
        Error::Kube {
            action: "write execution status",
            source: kube::Error::Api(Box::new(status)),
        }
    }

    #[test]
    fn only_refused_content_is_told_apart_from_transient_failures() {
        for code in [400, 413, 422] {
            assert!(api_error(code).is_refused_content(), "{code}");
        }
        for code in [404, 409, 429, 500, 503] {
            assert!(!api_error(code).is_refused_content(), "{code}");
        }
    }
}
