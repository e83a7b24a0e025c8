//! `/healthz`, `/readyz` and `/metrics`.

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};

use crate::api::{model::HealthResponse, state::AppState};

/// Content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = HealthResponse)))]
pub async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
    })
}

/// Readiness: the key index is loaded and current (its watch is not broken, see
/// [`crate::api::keys::Freshness`]), and the apiserver answers.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = HealthResponse),
        (status = 503, description = "Not ready", body = HealthResponse)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<HealthResponse>) {
    let status = if !state.keys.is_synced() {
        "api keys not loaded yet"
    } else if state.keys.is_stale() {
        "api keys are stale: the watch of key Secrets is broken"
    } else if !state.cluster.ping().await {
        "kubernetes apiserver unreachable"
    } else {
        return (
            StatusCode::OK,
            Json(HealthResponse {
                status: "ok".into(),
            }),
        );
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(HealthResponse {
            status: status.into(),
        }),
    )
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Metrics in the OpenMetrics text format", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(e) => crate::api::errors::ApiError::internal("encode metrics", e).into_response(),
    }
}
