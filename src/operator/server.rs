//! The operator's HTTP endpoint: `/metrics` (Prometheus text format) and `/healthz`.

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus_client::registry::Registry;
use tracing::{error, info};

use super::{Error, Result};

/// Content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The routes, apart from any socket so tests can call them directly.
pub fn app(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(registry)
}

async fn render_metrics(State(registry): State<Arc<Registry>>) -> Response {
    match crate::shared::metrics::render(&registry) {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(e) => {
            error!(error = %e, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves [`app`] on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(Error::Server)?;
    info!(%addr, "serving /metrics and /healthz");
    axum::serve(listener, app(registry))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http::Request;
    use tower::ServiceExt;

    async fn get(path: &str) -> (StatusCode, String) {
        let mut registry = Registry::default();
        let metrics = crate::operator::Metrics::register(&mut registry);
        metrics.reconcile_started("session").finish("ok");
        let response = app(Arc::new(registry))
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn serves_metrics() {
        let (status, body) = get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("kubexec_reconciliations_total{controller=\"session\",result=\"ok\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("kubexec_reconcile_duration_seconds_bucket"),
            "{body}"
        );
        assert!(
            body.contains("kubexec_session_pods_created_total 0"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn serves_health() {
        assert_eq!(get("/healthz").await, (StatusCode::OK, "ok".to_string()));
    }
}
