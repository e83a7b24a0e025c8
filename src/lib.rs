//! kubexec: Kubernetes-native code-execution sandboxes.
//!
//! One library, thin binaries. [`crd`] holds the resource types, [`crdgen`] renders them as
//! CRDs, [`operator`] reconciles them, and [`cli`] is the `kubexec` command line.

pub mod api;
pub mod cli;
pub mod crd;
pub mod crdgen;
pub mod layout;
pub mod operator;
pub mod sandbox;
pub mod shared;

#[cfg(test)]
mod fixtures;
