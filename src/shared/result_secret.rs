//! The cluster's result secret: what lets the api verify a run's stored result after its
//! Execution (and the key the operator recorded in it) is gone.
//!
//! The operator and the api read the same secret from `KUBEXEC_RESULT_SECRET` (the chart puts
//! one random Secret into both). A run's result key is then derived from it and the run's
//! identity ([`ResultKey::derive`]) instead of drawn at random. The sandbox never sees the
//! secret, so user code still cannot seal a result. Without the secret, keys stay random, and
//! results can be read only while their Execution exists.

use std::sync::OnceLock;

use kubexec_runner::protocol::{ResultKey, MIN_RESULT_SECRET_BYTES};

/// The environment variable holding the secret (at least 32 bytes; hex or any text).
pub const RESULT_SECRET_ENV: &str = "KUBEXEC_RESULT_SECRET";

/// The process's result secret, read once; `None` when unset or too short.
pub fn result_secret() -> Option<&'static [u8]> {
    static SECRET: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    SECRET
        .get_or_init(|| {
            let secret = std::env::var(RESULT_SECRET_ENV).ok()?;
            let bytes = secret.trim().as_bytes().to_vec();
            if bytes.len() < MIN_RESULT_SECRET_BYTES {
                tracing::warn!(
                    "{RESULT_SECRET_ENV} is shorter than {MIN_RESULT_SECRET_BYTES} bytes; ignored"
                );
                return None;
            }
            Some(bytes)
        })
        .as_deref()
}

/// The result key of run `run_id` of the Execution `namespace/name`, when a secret is set.
pub fn derived_key(namespace: &str, name: &str, run_id: &str) -> Option<ResultKey> {
    ResultKey::derive(result_secret()?, namespace, name, run_id)
}
