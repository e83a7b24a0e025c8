//! What every request handler shares.

use std::{sync::Arc, time::Duration};

use super::{
    cluster::Cluster, config::TenancyArgs, keys::KeyCache, metrics::HttpMetrics,
    preview::links::Previews, quota::TenantQuotas, rate_limit::RateLimiter, tiers::Tiers,
};

/// Settings of the api that handlers read.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Tenant → namespace mapping.
    pub tenancy: TenancyArgs,
    /// How long to wait for a session to become ready.
    pub session_ready_timeout: Duration,
    /// Base of `previewUrl` (`--public-url`), without a trailing slash. Unset: taken from each
    /// request's `Host` (and `X-Forwarded-Proto`/`X-Forwarded-Host`).
    pub public_url: Option<String>,
    /// `ttlSecondsAfterFinished` of the Executions the api creates.
    pub execution_ttl: i32,
    /// Upper bound of a non-streaming request.
    pub request_timeout: Duration,
    /// How long a finished execution's result can be looked up (`--result-retention`).
    pub result_retention: Duration,
    /// Least time between two collections of one session's run directories
    /// (`--run-gc-interval`); `None`: never collected (the default here, for route tests;
    /// `kubexec api` always sets it).
    pub run_gc_interval: Option<Duration>,
    /// Answer from the runner's sealed result when it comes first (`--answer-from-runner`).
    pub answer_from_runner: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tenancy: TenancyArgs {
                keys_namespace: super::config::DEFAULT_KEYS_NAMESPACE.into(),
                namespace_prefix: super::config::DEFAULT_NAMESPACE_PREFIX.into(),
            },
            session_ready_timeout: Duration::from_secs(60),
            public_url: None,
            execution_ttl: super::config::DEFAULT_EXECUTION_TTL,
            request_timeout: Duration::from_secs(420),
            result_retention: Duration::from_secs(super::config::DEFAULT_RESULT_RETENTION),
            run_gc_interval: None,
            answer_from_runner: true,
        }
    }
}

/// Shared state, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The cluster.
    pub cluster: Arc<dyn Cluster>,
    /// Valid keys.
    pub keys: Arc<KeyCache>,
    /// Tier limits.
    pub tiers: Arc<Tiers>,
    /// Request rate per key.
    pub limiter: Arc<RateLimiter>,
    /// Per-tenant quotas on live Executions, stored bytes and streams.
    pub quotas: Arc<TenantQuotas>,
    /// HTTP metrics.
    pub metrics: Arc<HttpMetrics>,
    /// Settings.
    pub settings: Arc<Settings>,
    /// Previews (`None`: this api serves none, and `previewUrl` is empty).
    pub previews: Option<Arc<Previews>>,
    /// When each session's run directories were last collected (see [`crate::api::run_gc`]).
    pub run_gc: Arc<crate::api::run_gc::RunGc>,
}

impl AppState {
    /// State over a cluster, with the given keys, tiers and settings.
    pub fn new(
        cluster: Arc<dyn Cluster>,
        keys: Arc<KeyCache>,
        tiers: Tiers,
        settings: Settings,
        metrics: Arc<HttpMetrics>,
    ) -> Self {
        Self {
            cluster,
            keys,
            tiers: Arc::new(tiers),
            limiter: Arc::new(RateLimiter::default()),
            quotas: Arc::new(TenantQuotas::default()),
            metrics,
            settings: Arc::new(settings),
            previews: None,
            run_gc: Arc::default(),
        }
    }

    /// The same state, serving `previews`.
    pub fn with_previews(mut self, previews: Arc<Previews>) -> Self {
        self.previews = Some(previews);
        self
    }
}
