//! The `kubexec.dev/v1alpha1` resources: [`Session`], [`Execution`] and [`SessionPool`].
//!
//! The Rust types are the source of truth: `kubexec crdgen` prints the CRDs from them, and the
//! schema carries the validation (OpenAPI bounds plus CEL rules) that the apiserver enforces.
//! [`validate`] mirrors the rules that the operator and the api must also check in code.

mod common;
mod execution;
mod pool;
pub mod quantity;
mod session;
pub mod validate;

#[cfg(test)]
mod samples;

pub use common::*;
pub use execution::*;
pub use pool::*;
pub use session::*;

/// The API group of every kubexec resource.
pub const GROUP: &str = "kubexec.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every kubexec resource, as it appears in manifests and apply patches.
pub const API_VERSION: &str = "kubexec.dev/v1alpha1";

/// Well-known label keys and values put on everything kubexec creates.
pub mod labels {
    /// The standard `managed-by` label key.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The value of [`MANAGED_BY`] on objects created by kubexec.
    pub const MANAGED_BY_VALUE: &str = "kubexec";
    /// Names the Session that owns a Pod or a PersistentVolumeClaim.
    pub const SESSION: &str = "kubexec.dev/session";
    /// The standard `component` label key (`sandbox` or `workspace`).
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// The value of [`COMPONENT`] on sandbox Pods, which the NetworkPolicies select.
    pub const SANDBOX_COMPONENT: &str = "sandbox";
    /// Label selector matching every object that kubexec manages.
    pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=kubexec";
    /// On a sandbox Pod: its Session's `spec.network.egress` (`Allow` or `Deny`). The
    /// operator's NetworkPolicies select on it, so changing egress is a label patch on the
    /// running Pod.
    pub const EGRESS: &str = "kubexec.dev/egress";
    /// On a warm Pod of a SessionPool: the pool's name. Adoption removes it (and sets
    /// [`SESSION`]); nothing else selects on it, the NetworkPolicies least of all.
    pub const WARM_POOL: &str = "kubexec.dev/warm-pool";
    /// On a Pod a SessionPool built: the pool's name, kept after adoption (the pool counts its
    /// adopted Pods by it). Such a Pod's [`SPEC_HASH`](super::annotations::SPEC_HASH) hashes
    /// only the fields that shape the Pod (no env), which is what an adopting Session's spec is
    /// compared with.
    pub const FROM_POOL: &str = "kubexec.dev/from-pool";
}

/// Well-known annotation keys.
pub mod annotations {
    /// On a sandbox Pod: a hash of the Session spec fields the Pod was built from. When the
    /// Session's spec changes in a way that affects the Pod, the operator replaces the Pod.
    pub const SPEC_HASH: &str = "kubexec.dev/spec-hash";
}
