//! `kubexec api`: reads the tiers, connects to Kubernetes, binds the listener, and serves until
//! SIGTERM or SIGINT.

use std::{net::SocketAddr, time::Duration};

use super::{
    cluster::KubeCluster,
    config::ApiArgs,
    keys::{watch_keys, KeyCache},
    metrics::HttpMetrics,
    preview::{config::PreviewSettings, proxy::preview_app, run_sweeper, Previews},
    server::{serve, serve_router},
    state::{AppState, Settings},
    tiers::{Tiers, TiersError},
};
use crate::shared::Shutdown;

/// How long in-flight requests may finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(30);

/// Why `kubexec api` could not start, or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `--tiers-file` could not be read or was refused.
    #[error(transparent)]
    Tiers(#[from] TiersError),
    /// `--tls-cert`/`--tls-key` could not be used.
    #[error(transparent)]
    Tls(#[from] crate::api::tls::TlsError),
    /// No Kubernetes client (no kubeconfig, no in-cluster service account).
    #[error("kubernetes client: {0}")]
    KubeClient(#[source] kube::Error),
    /// `--listen` could not be bound.
    #[error("listen on {addr}: {source}")]
    Bind {
        /// The `--listen` address.
        addr: SocketAddr,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The preview flags were refused.
    #[error(transparent)]
    Preview(#[from] crate::api::preview::config::PreviewConfigError),
    /// The server failed while serving.
    #[error("server: {0}")]
    Server(#[source] std::io::Error),
}

/// Runs the api until SIGTERM or SIGINT.
pub async fn run(args: ApiArgs) -> Result<(), ServeError> {
    let tiers = match &args.tiers_file {
        Some(path) => Tiers::from_file(path)?,
        None => Tiers::default(),
    };
    let client = kube::Client::try_default()
        .await
        .map_err(ServeError::KubeClient)?;
    let keys = KeyCache::stale_after(Duration::from_secs(args.keys_stale_after.max(1)));
    tokio::spawn(watch_keys(
        client.clone(),
        args.tenancy.keys_namespace.clone(),
        keys.clone(),
    ));
    let preview_listener = bind(args.preview.preview_listen).await?;
    let preview_port = preview_listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_default();
    let previews = Previews::new(PreviewSettings::from_args(&args.preview, preview_port)?);
    let state = AppState::new(
        KubeCluster::new(client),
        keys,
        tiers,
        settings(&args),
        HttpMetrics::new(),
    )
    .with_previews(previews);
    let listener = bind(args.listen).await?;
    if let Ok(addr) = listener.local_addr() {
        // Tests and scripts read this line to learn the port of `--listen 127.0.0.1:0`.
        tracing::info!(%addr, "listening");
        eprintln!("kubexec api listening on {addr}");
    }
    if let Ok(addr) = preview_listener.local_addr() {
        // And this one for `--preview-listen 127.0.0.1:0`.
        eprintln!("kubexec api previews listening on {addr}");
    }
    let shutdown = Shutdown::on_signals();
    tokio::spawn(run_sweeper(state.clone()));
    let preview_server = serve_router(
        preview_listener,
        preview_app(state.clone()),
        "previews",
        shutdown.wait(),
        DRAIN,
    );
    tokio::spawn(async move {
        if let Err(error) = preview_server.await {
            tracing::error!(%error, "the preview listener failed");
        }
    });
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let config = crate::api::tls::server_config(cert, key)?;
            let listener =
                crate::api::tls::TlsListener::new(listener, config).map_err(ServeError::Server)?;
            tracing::info!("serving HTTPS");
            serve(listener, state, shutdown.wait(), DRAIN).await
        }
        _ => serve(listener, state, shutdown.wait(), DRAIN).await,
    }
    .map_err(ServeError::Server)
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

fn settings(args: &ApiArgs) -> Settings {
    Settings {
        tenancy: args.tenancy.clone(),
        session_ready_timeout: args.ready_timeout(),
        public_url: args.public_url(),
        execution_ttl: args.execution_ttl,
        request_timeout: Duration::from_secs(args.request_timeout),
        result_retention: Duration::from_secs(args.result_retention),
        run_gc_interval: Some(Duration::from_secs(args.run_gc_interval)),
        answer_from_runner: args.answer_from_runner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tiers::Tier;

    /// `kubexec api: <error>` reads as it did when the errors were strings.
    #[test]
    fn startup_errors_keep_their_messages() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().expect("address");
        let bind = ServeError::Bind {
            addr,
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert!(
            bind.to_string().starts_with("listen on 127.0.0.1:8080: "),
            "{bind}"
        );
        let server = ServeError::Server(std::io::Error::other("boom"));
        assert_eq!(server.to_string(), "server: boom");
        let tiers = ServeError::from(TiersError::NotAMapping(Tier::Free));
        assert_eq!(tiers.to_string(), "tiers file: free must be a mapping");
    }
}
