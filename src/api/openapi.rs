//! `GET /openapi.json`, generated from the handlers' `#[utoipa::path]` attributes.

use axum::Json;
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

use super::{errors, mcp, model, routes};

/// The OpenAPI document of the REST API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "kubexec REST API",
        description = "Code-execution sandboxes on Kubernetes, wire-compatible with the buntime.sh API."
    ),
    paths(
        routes::sessions::create_session,
        routes::sessions::get_session,
        routes::sessions::list_sessions,
        routes::sessions::delete_session,
        routes::execute::execute,
        routes::executions::get_execution,
        routes::executions::list_executions,
        routes::executions::execution_output,
        routes::executions::execution_events,
        routes::files::write_files,
        routes::files::list_files,
        routes::files::read_file,
        routes::processes::list_processes,
        routes::processes::kill_process,
        mcp::endpoint,
        routes::preview::preview_link,
        routes::preview::preview_root,
        routes::preview::preview_path,
        routes::health::healthz,
        routes::health::readyz,
        routes::health::metrics,
        openapi_json,
    ),
    components(schemas(
        errors::ErrorBody,
        errors::ErrorDetail,
        model::CreateSessionRequest,
        model::ResourceLimitsRequest,
        model::ResourceLimits,
        model::SessionResponse,
        model::SessionList,
        model::DeleteSessionResponse,
        model::Encoding,
        model::FileInput,
        model::ExecuteRequest,
        model::ExecuteResponse,
        model::ExecutionRecord,
        model::ExecutionSummary,
        model::ExecutionList,
        model::WriteFilesRequest,
        model::WriteFilesResponse,
        model::FileInfo,
        model::FileListResponse,
        model::FileContent,
        model::ProcessResponse,
        model::ProcessListResponse,
        model::KillProcessRequest,
        model::KillProcessResponse,
        model::HealthResponse,
        routes::preview::PreviewLink,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("kx_<64 hex digits>")
                        .build(),
                ),
            );
        }
    }
}

/// The OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "health",
    responses((status = 200, description = "This API's OpenAPI document")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
