//! Prometheus metrics of the api.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `kubexec_api_requests_total` | counter | `method`, `route`, `status` |
//! | `kubexec_api_request_duration_seconds` | histogram | `method`, `route` |
//! | `kubexec_api_executions_total` | counter | `result` (`ok`, `timed_out`, `failed`, `error`) |

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{exponential_buckets, Histogram},
    },
    registry::Registry,
};

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// The route template (`/sessions/{id}`), never the raw path, so cardinality stays bounded.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a request's duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method.
    pub method: String,
    /// The route template.
    pub route: String,
}

/// Labels of an execution outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExecutionLabels {
    /// `ok`, `timed_out`, `failed` or `error`.
    pub result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// The api's metrics.
#[derive(Debug)]
pub struct HttpMetrics {
    /// Requests by method, route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Request latency by method and route.
    pub latency: HistogramFamily<RouteLabels>,
    /// Executions by outcome.
    pub executions: Family<ExecutionLabels, Counter>,
    /// The registry everything is in, for `/metrics`.
    pub registry: Registry,
}

impl HttpMetrics {
    /// Creates and registers the metrics.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily<RouteLabels> = Family::new_with_constructor(latency_histogram);
        let executions = Family::<ExecutionLabels, Counter>::default();
        registry.register(
            "kubexec_api_requests",
            "API requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "kubexec_api_request_duration_seconds",
            "API request latency in seconds",
            latency.clone(),
        );
        registry.register(
            "kubexec_api_executions",
            "Executions by outcome",
            executions.clone(),
        );
        Arc::new(Self {
            requests,
            latency,
            executions,
            registry,
        })
    }

    /// Counts an execution outcome.
    pub fn execution(&self, result: &'static str) {
        self.executions
            .get_or_create(&ExecutionLabels { result })
            .inc();
    }

    /// Renders the OpenMetrics text.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        crate::shared::metrics::render(&self.registry)
    }
}

/// Middleware: counts and times every request by its route template.
pub async fn track(
    State(metrics): State<Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .latency
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
