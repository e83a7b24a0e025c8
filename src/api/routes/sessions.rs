//! `POST /sessions/create`, `GET /sessions/{id}`, `GET /sessions`, `DELETE /sessions/{id}`.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    Json,
};
use jiff::{SignedDuration, Timestamp};
use kube::api::ObjectMeta;

use super::find_session;
use crate::{
    api::{
        auth::Caller,
        cluster::Created,
        errors::{codes, ApiError, ApiResult},
        extract::ApiJson,
        keys::{random_name_suffix, sha256_hex, TENANT_LABEL},
        model::{
            CreateSessionRequest, DeleteSessionResponse, ResourceLimits, ResourceLimitsRequest,
            SessionList, SessionResponse,
        },
        preview::PreviewLinks,
        state::AppState,
        tiers::{Tier, TierLimits},
    },
    crd::{
        labels, quantity::Quantity, validate::validate_session, PoolReference, Session,
        SessionPhase, SessionPool, SessionPoolSpec, SessionPoolTemplate, SessionSpec,
        DEFAULT_TIMEOUT_SECONDS, DEFAULT_TTL_SECONDS, MAX_POOL_REPLICAS, MAX_TTL_SECONDS,
    },
};

/// Header making `POST /sessions/create` idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Annotation with the hash of the spec an idempotent create asked for.
pub const REQUEST_HASH_ANNOTATION: &str = "kubexec.dev/request-hash";
/// Default workspace size, in MiB.
pub const DEFAULT_DISK_MB: u64 = 1024;
/// Largest workspace, in MiB.
pub const MAX_DISK_MB: u64 = 10 * 1024;
const MIB: u128 = 1024 * 1024;

/// The Session spec for a create request, checked against the tier.
pub fn session_spec(request: &CreateSessionRequest, limits: &TierLimits) -> ApiResult<SessionSpec> {
    let ttl = request.ttl.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(ApiError::invalid(
            "ttl",
            format!("must be between 1 and {MAX_TTL_SECONDS} seconds"),
        ));
    }
    let size = sandbox_size(request.resource_limits.as_ref(), limits)?;
    let millicores = (size.cores * 1000.0).round().max(1.0) as u64;
    let (sleep_after_seconds, idle_timeout_seconds) = limits.idle_policy();
    let spec = SessionSpec {
        ttl_seconds: ttl,
        sleep_after_seconds,
        idle_timeout_seconds,
        default_timeout_seconds: Some(i32::try_from(size.timeout_seconds).unwrap_or(30)),
        metadata: metadata_as_strings(request),
        resources: crate::crd::SessionResources {
            cpu: Some(format!("{millicores}m")),
            memory: Some(format!("{}Mi", size.memory_mb)),
            ..Default::default()
        },
        // Persistent: the files outlive the Pod (a lost Pod, a deep sleep).
        workspace: crate::crd::WorkspaceSpec {
            size: format!("{}Mi", size.disk_mb),
            persistent: true,
            storage_class_name: None,
        },
        ..Default::default()
    };
    validate_session("ses-validate", &spec).map_err(|e| {
        let field = match e.field.as_str() {
            "spec.metadata" => "metadata",
            "spec.ttlSeconds" => "ttl",
            _ => "resourceLimits",
        };
        ApiError::invalid(field, e.message)
    })?;
    Ok(spec)
}

/// Name of the SessionPool of a tier in each tenant namespace.
pub fn pool_name(tier: Tier) -> String {
    format!("kubexec-{tier}")
}

/// The SessionPool the api keeps in a tenant namespace for `tier`: `poolSize` warm sandboxes
/// of the shape a create without `resourceLimits` asks for (the tier's default memory and
/// CPU, the default workspace size, persistent, the default image). `None` when the tier keeps
/// no pool.
pub fn tier_pool(namespace: &str, tier: Tier, limits: &TierLimits) -> Option<SessionPool> {
    if limits.pool_size == 0 {
        return None;
    }
    let shape = session_spec(&CreateSessionRequest::default(), limits).ok()?;
    let mut pool = SessionPool::new(
        &pool_name(tier),
        SessionPoolSpec {
            replicas: i32::try_from(limits.pool_size)
                .unwrap_or(MAX_POOL_REPLICAS)
                .min(MAX_POOL_REPLICAS),
            template: SessionPoolTemplate {
                image: shape.image,
                resources: shape.resources,
                workspace: shape.workspace,
                network: shape.network,
            },
        },
    );
    pool.metadata.namespace = Some(namespace.to_string());
    pool.metadata.labels = Some(BTreeMap::from([(
        labels::MANAGED_BY.to_string(),
        labels::MANAGED_BY_VALUE.to_string(),
    )]));
    Some(pool)
}

/// True when a Session of `spec` has the shape of `pool`'s warm sandboxes, so it may adopt
/// one (the operator checks again, by the shape hash).
pub fn fits_pool(spec: &SessionSpec, pool: &SessionPool) -> bool {
    let template = &pool.spec.template;
    spec.image == template.image
        && spec.resources == template.resources
        && spec.workspace == template.workspace
}

/// The sandbox a create request asks for, each limit defaulted and within the tier.
struct SandboxSize {
    memory_mb: u64,
    cores: f64,
    timeout_seconds: u32,
    disk_mb: u64,
}

fn sandbox_size(
    requested: Option<&ResourceLimitsRequest>,
    limits: &TierLimits,
) -> ApiResult<SandboxSize> {
    let memory_mb = requested.and_then(|r| r.memory).unwrap_or(limits.memory_mb);
    if memory_mb == 0 || memory_mb > limits.memory_mb {
        return Err(ApiError::invalid(
            "resourceLimits.memory",
            format!("must be between 1 and {} MB on this tier", limits.memory_mb),
        ));
    }
    let cores = requested.and_then(|r| r.cpu).unwrap_or(limits.cpu.min(1.0));
    if !(cores.is_finite() && cores >= 0.001 && cores <= limits.cpu) {
        return Err(ApiError::invalid(
            "resourceLimits.cpu",
            format!(
                "must be between 0.001 and {} cores on this tier",
                limits.cpu
            ),
        ));
    }
    let timeout_seconds = requested.and_then(|r| r.timeout).unwrap_or(
        u32::try_from(DEFAULT_TIMEOUT_SECONDS)
            .unwrap_or(30)
            .min(limits.timeout_seconds),
    );
    if timeout_seconds == 0 || timeout_seconds > limits.timeout_seconds {
        return Err(ApiError::invalid(
            "resourceLimits.timeout",
            format!(
                "must be between 1 and {} seconds on this tier",
                limits.timeout_seconds
            ),
        ));
    }
    let disk_mb = requested.and_then(|r| r.disk).unwrap_or(DEFAULT_DISK_MB);
    if disk_mb == 0 || disk_mb > MAX_DISK_MB {
        return Err(ApiError::invalid(
            "resourceLimits.disk",
            format!("must be between 1 and {MAX_DISK_MB} MB"),
        ));
    }
    Ok(SandboxSize {
        memory_mb,
        cores,
        timeout_seconds,
        disk_mb,
    })
}

/// Annotation listing (as a JSON array) the metadata keys whose values are not strings: the
/// Session's `spec.metadata` holds strings, so those are stored as JSON text and parsed back
/// when the session is read, keeping numbers, booleans, null, arrays and objects as given.
pub const METADATA_JSON_ANNOTATION: &str = "kubexec.dev/metadata-json-keys";

/// The metadata keys whose values are not strings, as [`METADATA_JSON_ANNOTATION`] holds them;
/// `None` when every value is a string.
fn json_typed_keys(request: &CreateSessionRequest) -> Option<String> {
    let keys: Vec<&String> = request
        .metadata
        .iter()
        .flatten()
        .filter(|(_, v)| !v.is_string())
        .map(|(k, _)| k)
        .collect();
    (!keys.is_empty()).then(|| serde_json::to_string(&keys).unwrap_or_default())
}

/// A stored metadata map back as the client gave it (see [`METADATA_JSON_ANNOTATION`]).
fn metadata_as_given(session: &Session) -> BTreeMap<String, serde_json::Value> {
    let json_keys: Vec<String> = session
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(METADATA_JSON_ANNOTATION))
        .and_then(|keys| serde_json::from_str(keys).ok())
        .unwrap_or_default();
    session
        .spec
        .metadata
        .iter()
        .map(|(k, v)| {
            let typed = json_keys
                .contains(k)
                .then(|| serde_json::from_str(v).ok())
                .flatten();
            (
                k.clone(),
                typed.unwrap_or_else(|| serde_json::Value::String(v.clone())),
            )
        })
        .collect()
}

/// The request's metadata as the Session stores it: strings as given, other values as JSON text.
fn metadata_as_strings(request: &CreateSessionRequest) -> BTreeMap<String, String> {
    request
        .metadata
        .iter()
        .flatten()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

fn mib(quantity: Option<&str>, default: u64) -> u64 {
    quantity
        .and_then(|q| Quantity::parse(q).ok())
        .map(|q| u64::try_from(q.units_ceil().div_ceil(MIB)).unwrap_or(u64::MAX))
        .unwrap_or(default)
}

/// The base of preview URLs for a request: `--public-url`, else the scheme and host the
/// client used (as a proxy forwards them, or the `Host` header).
pub fn public_base(settings: &crate::api::state::Settings, headers: &HeaderMap) -> String {
    if let Some(url) = &settings.public_url {
        return url.clone();
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or_default().trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let proto = header("x-forwarded-proto")
        .filter(|p| p == "http" || p == "https")
        .unwrap_or_else(|| "http".into());
    let valid = |h: &String| {
        h.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
    };
    let host = header("x-forwarded-host")
        .filter(valid)
        .or_else(|| header("host").filter(valid))
        .unwrap_or_else(|| "localhost".into());
    format!("{proto}://{host}")
}

/// The API's view of a Session.
pub fn session_response(session: &Session, links: &PreviewLinks) -> SessionResponse {
    let name = session.metadata.name.clone().unwrap_or_default();
    let created = session
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let expires = session
        .status
        .as_ref()
        .and_then(|s| s.expires_at.as_ref())
        .map(|t| t.0)
        .or_else(|| {
            created
                .checked_add(SignedDuration::from_secs(session.spec.ttl_seconds))
                .ok()
        })
        .unwrap_or(created);
    let cpu = session
        .spec
        .resources
        .cpu
        .as_deref()
        .and_then(|q| Quantity::parse(q).ok())
        .map(|q| q.millis() as f64 / 1000.0)
        .unwrap_or(1.0);
    SessionResponse {
        preview_url: links.url(&name),
        session_id: name,
        status: session.phase().as_str().to_ascii_lowercase(),
        created_at: created.to_string(),
        expires_at: expires.to_string(),
        resource_limits: ResourceLimits {
            memory: mib(session.spec.resources.memory.as_deref(), 512),
            cpu,
            timeout: session
                .spec
                .default_timeout_seconds
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(30),
            disk: mib(Some(&session.spec.workspace.size), DEFAULT_DISK_MB),
        },
        metadata: metadata_as_given(session),
    }
}

fn counts_against_limit(session: &Session) -> bool {
    session.metadata.deletion_timestamp.is_none()
        && !matches!(
            session.phase(),
            SessionPhase::Expired | SessionPhase::Terminating
        )
}

/// Creates a session.
#[utoipa::path(post, path = "/sessions/create", tag = "sessions",
    request_body = CreateSessionRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Repeating a create with the same key returns the same session")),
    responses(
        (status = 201, description = "Created", body = SessionResponse),
        (status = 200, description = "Returned again for a repeated Idempotency-Key", body = SessionResponse),
        (status = 400, description = "Bad input", body = crate::api::errors::ErrorBody),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 409, description = "Idempotency-Key reused with a different request", body = crate::api::errors::ErrorBody),
        (status = 429, description = "Too many sessions or requests", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_session(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateSessionRequest>,
) -> ApiResult<(StatusCode, Json<SessionResponse>)> {
    let mut spec = session_spec(&request, &caller.limits)?;
    let spec_hash = sha256_hex(&serde_json::to_vec(&spec).unwrap_or_default());
    let idempotency = idempotency_key(&headers)?;
    let name = session_name(&caller, idempotency.as_deref())?;
    let ns = &caller.namespace;
    if idempotency.is_some() {
        if let Some(existing) = state.cluster.get_session(ns, &name).await? {
            return replay(&state, &caller, &existing, &spec_hash);
        }
    }
    // A session of the tier pool's shape names the pool and adopts a warm sandbox; another
    // shape, or an empty pool, takes the cold path. The pool is applied first (at most every
    // few minutes per api replica); failing to apply it never fails the create.
    if let Some(pool) = tier_pool(ns, caller.tier, &caller.limits) {
        if fits_pool(&spec, &pool) {
            if let Err(e) = state.cluster.ensure_pool(ns, &pool).await {
                tracing::warn!(error = %e, namespace = %ns, "could not apply the tier's SessionPool");
            }
            spec.pool_ref = Some(PoolReference {
                name: pool.metadata.name.clone().unwrap_or_default(),
            });
        }
    }
    let mut session = new_session(&name, &caller, spec, &spec_hash);
    if let (Some(keys), Some(annotations)) = (
        json_typed_keys(&request),
        session.metadata.annotations.as_mut(),
    ) {
        annotations.insert(METADATA_JSON_ANNOTATION.to_string(), keys);
    }
    match create_within_limit(&state, &caller, &session).await? {
        Created::New(created) => {
            tracing::info!(session = %name, tenant = %caller.tenant, "session created");
            Ok((
                StatusCode::CREATED,
                Json(session_response(
                    &created,
                    &PreviewLinks::for_caller(&state, &caller),
                )),
            ))
        }
        Created::Exists => match state.cluster.get_session(ns, &name).await? {
            Some(existing) if idempotency.is_some() => {
                replay(&state, &caller, &existing, &spec_hash)
            }
            _ => Err(ApiError::internal("create session", "name collision")),
        },
    }
}

/// The `Idempotency-Key` header, if the request has one.
pub fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| ApiError::invalid("Idempotency-Key", "must be visible ASCII"))?;
    if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 255) {
        return Err(ApiError::invalid(
            "Idempotency-Key",
            "must be 1 to 255 characters",
        ));
    }
    Ok(key)
}

/// The new Session's name: derived from the idempotency key, so two concurrent creates with
/// the same key cannot both succeed; random without one.
fn session_name(caller: &Caller, idempotency: Option<&str>) -> ApiResult<String> {
    Ok(match idempotency {
        Some(key) => {
            let digest = sha256_hex(format!("{}\0{key}", caller.tenant).as_bytes());
            format!("ses-{}", &digest[..24])
        }
        None => format!(
            "ses-{}",
            random_name_suffix(16).map_err(ApiError::internal_from("random name"))?
        ),
    })
}

/// How often a create is tried again when the tenant's ResourceQuota refuses it although the
/// caller's count of active sessions has room (a deleted Session is counted until the quota
/// controller sees it gone), and how long apart.
const QUOTA_LAG_RETRIES: u32 = 3;
const QUOTA_LAG_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// Creates the Session if the tenant has room for it. The list of active sessions gives the
/// usual answer; the tenant namespace's ResourceQuota (`count/sessions.kubexec.dev`, exactly
/// the tier's limit) is what makes concurrent creates race-free: the apiserver counts them
/// atomically, and its refusal is the same `SESSION_LIMIT_REACHED`.
async fn create_within_limit(
    state: &AppState,
    caller: &Caller,
    session: &Session,
) -> ApiResult<Created<Session>> {
    let mut attempt = 0;
    loop {
        check_session_limit(state, caller).await?;
        match state
            .cluster
            .create_session(&caller.namespace, session)
            .await
        {
            Err(ApiError::TooMany {
                code: codes::QUOTA_EXCEEDED,
                ..
            }) if attempt < QUOTA_LAG_RETRIES => {
                attempt += 1;
                tokio::time::sleep(QUOTA_LAG_PAUSE).await;
            }
            Err(ApiError::TooMany {
                code: codes::QUOTA_EXCEEDED,
                ..
            }) => return Err(session_limit(caller, 5)),
            other => return other,
        }
    }
}

/// Refuses a create once the caller has as many active sessions as the tier allows.
async fn check_session_limit(state: &AppState, caller: &Caller) -> ApiResult<()> {
    let active = state
        .cluster
        .list_sessions(&caller.namespace)
        .await?
        .iter()
        .filter(|s| counts_against_limit(s))
        .count();
    if active >= caller.limits.max_sessions {
        return Err(session_limit(caller, 60));
    }
    Ok(())
}

fn session_limit(caller: &Caller, retry_after: u64) -> ApiError {
    ApiError::TooMany {
        code: codes::SESSION_LIMIT,
        message: format!(
            "the {} tier allows {} sessions at once; delete one first",
            caller.tier, caller.limits.max_sessions
        ),
        retry_after,
    }
}

/// The Session to create, labelled with its tenant and annotated with the hash of its spec.
fn new_session(name: &str, caller: &Caller, spec: SessionSpec, spec_hash: &str) -> Session {
    Session {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(caller.namespace.clone()),
            labels: Some(BTreeMap::from([
                (
                    labels::MANAGED_BY.to_string(),
                    labels::MANAGED_BY_VALUE.to_string(),
                ),
                (TENANT_LABEL.to_string(), caller.tenant.clone()),
            ])),
            annotations: Some(BTreeMap::from([(
                REQUEST_HASH_ANNOTATION.to_string(),
                spec_hash.to_string(),
            )])),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

fn replay(
    state: &AppState,
    caller: &Caller,
    existing: &Session,
    spec_hash: &str,
) -> ApiResult<(StatusCode, Json<SessionResponse>)> {
    let stored = existing
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REQUEST_HASH_ANNOTATION));
    if stored.is_some_and(|h| h != spec_hash) {
        return Err(ApiError::Conflict {
            code: codes::IDEMPOTENCY_CONFLICT,
            message: "this Idempotency-Key was used for a different request".into(),
        });
    }
    Ok((
        StatusCode::OK,
        Json(session_response(
            existing,
            &PreviewLinks::for_caller(state, caller),
        )),
    ))
}

/// Gets a session.
#[utoipa::path(get, path = "/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "The session", body = SessionResponse),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 404, description = "No such session", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionResponse>> {
    let session = find_session(&state, &caller, &id).await?;
    Ok(Json(session_response(
        &session,
        &PreviewLinks::for_caller(&state, &caller),
    )))
}

/// Lists the caller's sessions.
#[utoipa::path(get, path = "/sessions", tag = "sessions",
    responses(
        (status = 200, description = "The tenant's sessions", body = SessionList),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    // Kept for callers of this handler (MCP): preview links no longer come from the request.
    _headers: HeaderMap,
) -> ApiResult<Json<SessionList>> {
    let links = PreviewLinks::for_caller(&state, &caller);
    let mut sessions: Vec<Session> = state
        .cluster
        .list_sessions(&caller.namespace)
        .await?
        .into_iter()
        .filter(counts_against_limit)
        .collect();
    sessions.sort_by(|a, b| {
        b.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .cmp(&a.metadata.creation_timestamp.as_ref().map(|t| t.0))
    });
    Ok(Json(SessionList {
        sessions: sessions
            .iter()
            .map(|s| session_response(s, &links))
            .collect(),
    }))
}

/// Deletes a session with its sandbox and workspace.
#[utoipa::path(delete, path = "/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "Deleted", body = DeleteSessionResponse),
        (status = 401, description = "No or bad key", body = crate::api::errors::ErrorBody),
        (status = 404, description = "No such session", body = crate::api::errors::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DeleteSessionResponse>> {
    find_session(&state, &caller, &id).await?;
    if !state.cluster.delete_session(&caller.namespace, &id).await? {
        return Err(ApiError::SessionNotFound(id));
    }
    tracing::info!(session = %id, tenant = %caller.tenant, "session deleted");
    Ok(Json(DeleteSessionResponse {
        success: true,
        session_id: id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::model::ResourceLimitsRequest;

    #[test]
    fn limits_map_onto_the_session_spec() {
        let request = CreateSessionRequest {
            ttl: Some(600),
            metadata: Some(BTreeMap::from([
                ("owner".into(), serde_json::json!("me")),
                ("n".into(), serde_json::json!(3)),
            ])),
            resource_limits: Some(ResourceLimitsRequest {
                memory: Some(512),
                cpu: Some(0.5),
                timeout: Some(20),
                disk: Some(2048),
            }),
        };
        let spec = session_spec(&request, &TierLimits::free()).expect("valid");
        assert_eq!(spec.ttl_seconds, 600);
        assert_eq!(spec.resources.memory.as_deref(), Some("512Mi"));
        assert_eq!(spec.resources.cpu.as_deref(), Some("500m"));
        assert_eq!(spec.workspace.size, "2048Mi");
        assert_eq!(spec.default_timeout_seconds, Some(20));
        assert_eq!(spec.metadata.get("n").map(String::as_str), Some("3"));

        let session = Session::new("ses-x", spec);
        let signer = crate::api::preview::token::Signer::new(&[1; 32]).expect("secret");
        let previews = crate::api::preview::Previews::new(
            crate::api::preview::config::PreviewSettings::local(18081, signer),
        );
        let links = PreviewLinks::new(Some(previews), "k1", 1_000);
        let view = session_response(&session, &links);
        assert!(
            view.preview_url.starts_with(
                "http://ses-x-8080.preview.localhost:18081/?kubexec_token=v1.ses-x.8080.k1.4600."
            ),
            "{}",
            view.preview_url
        );
        assert_eq!(
            view.resource_limits,
            ResourceLimits {
                memory: 512,
                cpu: 0.5,
                timeout: 20,
                disk: 2048
            }
        );
    }

    #[test]
    fn metadata_keeps_its_json_types() {
        let given = BTreeMap::from([
            ("s".to_string(), serde_json::json!("3")),
            ("n".to_string(), serde_json::json!(3)),
            ("b".to_string(), serde_json::json!(true)),
            ("o".to_string(), serde_json::json!({"a": [1, null]})),
        ]);
        let request = CreateSessionRequest {
            metadata: Some(given.clone()),
            ..Default::default()
        };
        let spec = session_spec(&request, &TierLimits::free()).expect("valid");
        let mut session = Session::new("ses-x", spec);
        session.metadata.annotations = Some(BTreeMap::from([(
            METADATA_JSON_ANNOTATION.to_string(),
            json_typed_keys(&request).expect("some keys are typed"),
        )]));
        assert_eq!(
            session_response(&session, &PreviewLinks::new(None, "k1", 0)).metadata,
            given
        );
        // Without the annotation (a kubectl Session, or one made before it), all are strings.
        session.metadata.annotations = None;
        assert_eq!(
            session_response(&session, &PreviewLinks::new(None, "k1", 0)).metadata["n"],
            serde_json::json!("3")
        );
    }

    #[test]
    fn preview_urls_follow_the_public_url_or_the_request() {
        let mut settings = crate::api::state::Settings::default();
        let mut headers = HeaderMap::new();
        headers.insert("host", "api.local:8080".parse().expect("header"));
        assert_eq!(public_base(&settings, &headers), "http://api.local:8080");
        headers.insert("x-forwarded-proto", "https".parse().expect("header"));
        headers.insert(
            "x-forwarded-host",
            "sandbox.example.com".parse().expect("header"),
        );
        assert_eq!(
            public_base(&settings, &headers),
            "https://sandbox.example.com"
        );
        headers.insert(
            "x-forwarded-host",
            "evil.com/<script>".parse().expect("header"),
        );
        assert_eq!(public_base(&settings, &headers), "https://api.local:8080");
        settings.public_url = Some("https://run.example.com".into());
        assert_eq!(public_base(&settings, &headers), "https://run.example.com");
    }

    #[test]
    fn limits_beyond_the_tier_name_their_field() {
        let field =
            |request: CreateSessionRequest| match session_spec(&request, &TierLimits::free()) {
                Err(ApiError::Invalid { field, .. }) => field,
                other => panic!("expected a 400, got {other:?}"),
            };
        let limits = |r: ResourceLimitsRequest| CreateSessionRequest {
            resource_limits: Some(r),
            ..Default::default()
        };
        assert_eq!(
            field(limits(ResourceLimitsRequest {
                memory: Some(2048),
                ..Default::default()
            })),
            "resourceLimits.memory"
        );
        assert_eq!(
            field(limits(ResourceLimitsRequest {
                timeout: Some(31),
                ..Default::default()
            })),
            "resourceLimits.timeout"
        );
        assert_eq!(
            field(CreateSessionRequest {
                ttl: Some(0),
                ..Default::default()
            }),
            "ttl"
        );
    }
}
