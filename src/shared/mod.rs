//! The shared layer: what both the operator and the api need, and nothing that belongs to
//! either. It sits on the CRD types, the sandbox layout and the runner protocol, and never
//! imports the operator or the api.
//!
//! - [`cache`]: what the watch caches of Executions keep;
//! - [`activity`]: recording that a Session was used (which also resumes an idle one);
//! - [`shutdown`]: the SIGTERM/SIGINT signal every long-running command waits on;
//! - [`metrics`]: rendering a Prometheus registry as text;
//! - [`deadlines`]: how long a run may take before its result is given up on;
//! - [`kube_status`]: reading the apiserver's status codes out of client errors;
//! - [`ports`]: the preview port range both the api and the NetworkPolicies use;
//! - [`result_secret`]: the secret that run result keys are derived from;
//! - [`status_fit`]: what of a run's result the status (and every REST answer) keeps.
//!
//! The exec client, [`crate::sandbox`], belongs to this layer too.

pub mod activity;
pub mod cache;
pub mod deadlines;
pub mod kube_status;
pub mod metrics;
pub mod ports;
pub mod result_secret;
pub mod shutdown;
pub mod status_fit;

pub use shutdown::Shutdown;
