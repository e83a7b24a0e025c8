//! The REST API (`kubexec api`): a buntime-compatible HTTP facade over the Session and
//! Execution resources, with API keys, tenants, tier limits and SSE streaming. It maps
//! requests onto the resources and reads (watches) their status back; it runs nothing itself.
//!
//! Modules: [`server`] (router and middleware), [`routes`] (handlers), [`auth`] (bearer keys),
//! [`rate_limit`] (the per-key request rate), [`keys`] (key storage), [`tiers`] (limits),
//! [`errors`] (the error type), [`extract`] (JSON extractors), [`files`] (validation and
//! streamed delivery), [`outcome`] (an Execution's result as the api reports it), [`stream`]
//! (SSE), [`openapi`], [`metrics`], [`cluster`] (the Kubernetes seam), [`state`], [`config`].

pub mod auth;
pub mod cluster;
pub mod config;
pub mod errors;
pub mod extract;
pub mod files;
pub mod informer;
pub mod keys;
pub mod keys_cli;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod outcome;
pub mod rate_limit;
pub mod routes;
pub mod sandbox_errors;
pub mod server;
pub mod state;
pub mod stream;
pub mod tiers;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use config::{ApiArgs, KeysArgs};
pub use server::app;
pub use state::{AppState, Settings};

use crate::shared::Shutdown;

/// Runs the api until SIGTERM or SIGINT.
pub async fn run(args: ApiArgs) -> Result<(), String> {
    let tiers = match &args.tiers_file {
        Some(path) => tiers::Tiers::from_file(path)?,
        None => tiers::Tiers::default(),
    };
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("kubernetes client: {e}"))?;
    let keys = keys::KeyCache::new();
    tokio::spawn(keys::watch_keys(
        client.clone(),
        args.tenancy.keys_namespace.clone(),
        keys.clone(),
    ));
    let settings = Settings {
        tenancy: args.tenancy.clone(),
        session_ready_timeout: args.ready_timeout(),
        public_url: args.public_url(),
        execution_ttl: args.execution_ttl,
        request_timeout: Duration::from_secs(args.request_timeout),
    };
    let state = AppState::new(
        cluster::KubeCluster::new(client),
        keys,
        tiers,
        settings,
        metrics::HttpMetrics::new(),
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", args.listen))?;
    if let Ok(addr) = listener.local_addr() {
        // Tests and scripts read this line to learn the port of `--listen 127.0.0.1:0`.
        tracing::info!(%addr, "listening");
        eprintln!("kubexec api listening on {addr}");
    }
    let shutdown = Shutdown::on_signals();
    server::serve(listener, state, shutdown.wait(), Duration::from_secs(30))
        .await
        .map_err(|e| format!("server: {e}"))
}
