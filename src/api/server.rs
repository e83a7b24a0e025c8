//! The router: every route in one table (which the OpenAPI test checks against the generated
//! document), the middleware stack, and serving with graceful shutdown.

use std::{
    future::{Future, IntoFuture},
    net::SocketAddr,
    time::Duration,
};

use axum::{
    extract::{DefaultBodyLimit, Request},
    http::{Method, StatusCode},
    middleware,
    response::IntoResponse,
    routing::{any, delete, get, post, MethodRouter},
    Router,
};
use tower_http::{
    limit::RequestBodyLimitLayer,
    timeout::TimeoutLayer,
    trace::{DefaultOnResponse, TraceLayer},
};

use super::{
    auth::authenticate,
    body_limit::{json_layer_errors, LayerLimits},
    errors::{codes, ApiError},
    mcp,
    metrics::track,
    openapi::openapi_json,
    routes::{execute, executions, files, health, preview, processes, sessions},
    state::AppState,
};

/// One route: its method (as documented), path, handler and whether it needs a key.
pub struct Route {
    /// The documented method (`any` routes are documented as GET).
    pub method: Method,
    /// The path, in axum's syntax.
    pub path: &'static str,
    /// The handler.
    pub handler: MethodRouter<AppState>,
    /// Whether an API key is required.
    pub authenticated: bool,
}

fn route(
    method: Method,
    path: &'static str,
    handler: MethodRouter<AppState>,
    authenticated: bool,
) -> Route {
    Route {
        method,
        path,
        handler,
        authenticated,
    }
}

/// Every route of the API.
pub fn routes() -> Vec<Route> {
    vec![
        route(
            Method::POST,
            "/sessions/create",
            post(sessions::create_session),
            true,
        ),
        route(Method::GET, "/sessions", get(sessions::list_sessions), true),
        route(
            Method::GET,
            "/sessions/{id}",
            get(sessions::get_session),
            true,
        ),
        route(
            Method::DELETE,
            "/sessions/{id}",
            delete(sessions::delete_session),
            true,
        ),
        route(Method::POST, "/execute", post(execute::execute), true),
        route(
            Method::GET,
            "/executions",
            get(executions::list_executions),
            true,
        ),
        route(
            Method::GET,
            "/executions/{id}",
            get(executions::get_execution),
            true,
        ),
        route(
            Method::GET,
            "/executions/{id}/output",
            get(executions::execution_output),
            true,
        ),
        route(
            Method::GET,
            "/executions/{id}/events",
            get(executions::execution_events),
            true,
        ),
        route(Method::POST, "/files/write", post(files::write_files), true),
        route(Method::GET, "/files/list", get(files::list_files), true),
        route(Method::GET, "/files/read", get(files::read_file), true),
        route(
            Method::GET,
            "/processes/list",
            get(processes::list_processes),
            true,
        ),
        route(
            Method::POST,
            "/processes/kill",
            post(processes::kill_process),
            true,
        ),
        route(Method::POST, "/mcp", post(mcp::endpoint), true),
        route(
            Method::GET,
            "/preview/{id}",
            get(preview::preview_link),
            true,
        ),
        route(
            Method::GET,
            "/preview/{id}/",
            any(preview::preview_root),
            true,
        ),
        route(
            Method::GET,
            "/preview/{id}/{*path}",
            any(preview::preview_path),
            true,
        ),
        route(Method::GET, "/healthz", get(health::healthz), false),
        route(Method::GET, "/readyz", get(health::readyz), false),
        route(Method::GET, "/metrics", get(health::metrics), false),
        route(Method::GET, "/openapi.json", get(openapi_json), false),
    ]
}

async fn not_found() -> impl IntoResponse {
    ApiError::NotFound {
        code: codes::NOT_FOUND,
        message: "no such route".into(),
    }
}

/// The whole API, apart from any socket.
pub fn app(state: AppState) -> Router {
    let mut public = Router::new();
    let mut protected = Router::new();
    for route in routes() {
        if route.authenticated {
            protected = protected.route(route.path, route.handler);
        } else {
            public = public.route(route.path, route.handler);
        }
    }
    let protected =
        protected.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let largest_body = state.tiers.largest_request_bytes();
    let body_limit = usize::try_from(largest_body).unwrap_or(usize::MAX);
    let request_timeout = state.settings.request_timeout;
    let layer_limits = LayerLimits {
        body_bytes: largest_body,
        timeout_secs: request_timeout.as_secs(),
    };
    public
        .merge(protected)
        .fallback(not_found)
        .with_state(state.clone())
        // Streaming responses are not cut by this: it bounds the time to the response head.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            request_timeout,
        ))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(middleware::from_fn_with_state(
            layer_limits,
            json_layer_errors,
        ))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), track))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        tenant = tracing::field::Empty,
                    )
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
}

/// Serves [`app`] on `addr` until `shutdown` resolves, then lets in-flight requests finish
/// (up to `drain`).
pub async fn serve<L>(
    listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    serve_router(listener, app(state), "the REST API", shutdown, drain).await
}

/// Serves `router` (the API, or the previews) as [`serve`] does.
pub async fn serve_router<L>(
    listener: L,
    router: Router,
    what: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "serving {what}");
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopped_tx.send(());
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => result,
        () = async {
            let _ = stopped_rx.await;
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(?drain, "in-flight requests did not finish in time; stopping");
            Ok(())
        }
    }
}
