//! kubexec: Kubernetes-native code-execution sandboxes.
//!
//! One library, thin binaries. [`crd`] holds the resource types, [`crdgen`] renders them as
//! CRDs, [`operator`] reconciles them, [`api`] serves REST and MCP, [`mcp_bridge`] is the MCP
//! server over stdio, and [`cli`] is the `kubexec` command line.

pub mod api;
pub mod cli;
pub mod crd;
pub mod crdgen;
pub mod layout;
pub mod mcp_bridge;
pub mod operator;
pub mod sandbox;
pub mod shared;

#[cfg(test)]
mod fixtures;
