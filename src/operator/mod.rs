//! The operator: the Session controller, the Execution controller and the NetworkPolicy
//! controller, a metrics endpoint, and graceful shutdown.

pub mod config;
pub mod context;
mod error;
pub mod execution;
pub mod faults;
pub mod leader;
pub mod metrics;
pub mod netpol;
pub mod pool;
pub mod reconciler;
pub mod server;
pub mod session;

use std::sync::Arc;

use futures::future::OptionFuture;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

pub use config::{OperatorArgs, SandboxConfig};
pub use context::Context;
pub use error::{Error, Result};
pub use metrics::Metrics;

use crate::shared::Shutdown;

/// Runs the operator until SIGTERM or SIGINT: connects with the ambient kubeconfig (or the
/// in-cluster service account), serves metrics, and runs the controllers.
pub async fn run(args: OperatorArgs) -> Result<()> {
    let config = args.sandbox_config()?;
    let policies = network_policies(&args)?;
    let client = kube::Client::try_default().await.map_err(Error::Client)?;
    let shutdown = Shutdown::on_signals();

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    // Filled by the controllers' watches, read by the Execution controller before a run.
    let (session_cache, session_writer) = kube::runtime::reflector::store();
    let (pod_cache, pod_writer) = kube::runtime::reflector::store();
    let channels = args.channel_config().map(|pool| {
        let counters = crate::sandbox::ChannelMetrics::default();
        metrics::register_channels(&mut registry, &counters);
        crate::sandbox::ChannelPool::kube(client.clone(), pool, counters)
    });
    let ctx = Context::new(client, metrics, config, args.identity.clone())
        .with_network_policies(policies)
        .with_execution_settings(args.execution_settings())
        .with_caches(execution::observe::Caches {
            sessions: session_cache,
            pods: pod_cache,
        })
        .with_channels(channels);
    let ctx = Arc::new(ctx);

    let (sessions, session_store) = session::controller(
        ctx.clone(),
        args.namespace.as_deref(),
        args.concurrency,
        pod_writer,
        shutdown.wait(),
    );
    registry.register_collector(Box::new(session::SessionPhases(session_store)));
    let executions = execution::controller(
        ctx.clone(),
        args.namespace.as_deref(),
        args.execution_concurrency,
        session_writer,
        shutdown.wait(),
    );
    let pools = pool::controller(ctx.clone(), args.namespace.as_deref(), shutdown.wait());
    let network = ctx
        .network_policies
        .as_ref()
        .map(|_| netpol::controller(ctx.clone(), args.namespace.as_deref(), shutdown.wait()));
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
        tokio::join!(sessions, executions, pools, OptionFuture::from(network));
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

/// Checks the network flags and builds the policies from them (`None` when they are off).
/// Says what the policies will allow, and warns about settings that leave sandboxes without
/// DNS or without protection.
fn network_policies(args: &OperatorArgs) -> Result<Option<netpol::build::PolicySet>> {
    let read_resolv_conf = || std::fs::read_to_string("/etc/resolv.conf");
    let Some(network) = args.network.network_config(read_resolv_conf)? else {
        warn!("--network-policies is off: sandboxes are isolated only if something else does it");
        return Ok(None);
    };
    let list = |nets: &[ipnet::Ipv4Net]| {
        nets.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    if network.dns_resolvers.is_empty() && network.dns_pods.is_none() {
        warn!("no DNS resolvers and no DNS Pods: sandboxes with egress Allow cannot resolve names");
    }
    info!(
        api_namespace = %network.api.namespace,
        preview_ports = %format!("{}-{}", network.preview_ports.first, network.preview_ports.last),
        dns_resolvers = %list(&network.dns_resolvers),
        blocked = %list(&network.blocked),
        "keeping the sandboxes' NetworkPolicies"
    );
    Ok(Some(netpol::build::PolicySet::new(&network)))
}
