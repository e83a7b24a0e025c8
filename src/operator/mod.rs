//! The operator: the Session controller and the Execution controller, a metrics endpoint, and
//! graceful shutdown.

pub mod config;
pub mod context;
mod error;
pub mod execution;
pub mod leader;
pub mod metrics;
pub mod reconciler;
pub mod server;
pub mod session;

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tracing::info;

pub use config::{OperatorArgs, SandboxConfig};
pub use context::Context;
pub use error::{Error, Result};
pub use metrics::Metrics;

use crate::shared::Shutdown;

/// Runs the operator until SIGTERM or SIGINT: connects with the ambient kubeconfig (or the
/// in-cluster service account), serves metrics, and runs the controllers.
pub async fn run(args: OperatorArgs) -> Result<()> {
    let config = args.sandbox_config()?;
    let client = kube::Client::try_default().await.map_err(Error::Client)?;
    let shutdown = Shutdown::on_signals();

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let ctx = Arc::new(Context::new(client, metrics, config, args.identity.clone()));

    let (sessions, session_store) = session::controller(
        ctx.clone(),
        args.namespace.as_deref(),
        args.concurrency,
        shutdown.wait(),
    );
    registry.register_collector(Box::new(session::SessionPhases(session_store)));
    let executions = execution::controller(
        ctx.clone(),
        args.namespace.as_deref(),
        args.execution_concurrency,
        shutdown.wait(),
    );
    let registry = Arc::new(registry);

    info!(
        namespace = args.namespace.as_deref().unwrap_or("*"),
        "starting the operator"
    );
    let server = server::serve(args.metrics_addr, registry, shutdown.wait());
    let elector = args
        .leader_config()
        .map(|config| leader::LeaderElector::new(ctx.client.clone(), config));
    let controllers = async {
        tokio::join!(sessions, executions);
    };
    let work = async {
        let Some(elector) = &elector else {
            controllers.await;
            return Ok(());
        };
        // A standby replica serves /healthz and waits; only the Lease holder reconciles.
        if !elector.acquire(shutdown.wait()).await {
            return Ok(());
        }
        tokio::select! {
            () = controllers => {
                // Hand over at once: Running executions are recovered by the next leader.
                elector.release().await;
                Ok(())
            }
            () = elector.hold() => Err(Error::LeadershipLost),
        }
    };
    // A server that cannot start ends the operator; otherwise both stop on the signal.
    tokio::try_join!(server, work)?;
    info!("operator stopped");
    Ok(())
}
