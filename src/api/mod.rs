//! The REST API (`kubexec api`): a buntime-compatible HTTP facade over the Session and
//! Execution resources, with API keys, tenants, tier limits and SSE streaming. It maps
//! requests onto the resources and reads (watches) their status back; it runs nothing itself.
//!
//! Modules: [`server`] (router and middleware), [`routes`] (handlers), [`auth`] (bearer keys),
//! [`rate_limit`] (the per-key request rate), [`quota`] (per-tenant quotas), [`keys`] (key storage), [`tiers`] (limits),
//! [`body_limit`] (per-route body caps), [`errors`] (the error type), [`extract`] (JSON extractors), [`files`] (validation and
//! streamed delivery), [`file_read`] (`/files/read` in constant memory), [`outcome`] (an Execution's result as the api reports it), [`run_gc`] (bounded run outputs), [`stream`]
//! (SSE), [`openapi`], [`metrics`], [`cluster`] (the Kubernetes seam), [`state`], [`config`],
//! [`startup`] (`kubexec api` itself), [`keys_cli`] (`kubexec keys`), [`mcp`] (the MCP server
//! at `/mcp`), [`preview`] (browser-ready previews on origins of their own).

pub mod auth;
pub mod body_limit;
pub mod cluster;
pub mod config;
pub mod errors;
pub mod extract;
pub mod file_read;
pub mod files;
pub mod informer;
pub mod keys;
pub mod keys_cli;
pub mod mcp;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod outcome;
pub mod preview;
pub mod quota;
pub mod rate_limit;
pub mod routes;
pub mod run_gc;
pub mod sandbox_errors;
pub mod server;
pub mod startup;
pub mod state;
pub mod stream;
pub mod tiers;
pub mod tls;

#[cfg(test)]
mod tests;

pub use config::{ApiArgs, KeysArgs};
pub use server::app;
pub use startup::{run, ServeError};
pub use state::{AppState, Settings};
