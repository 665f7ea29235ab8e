//! The HTTP API (axum): `fn router(state) -> Router`, the handlers, `ApiError`, auth.
//!
//! Versioned JSON under `/v1`; `/healthz` and `/readyz` need no token, everything else a bearer
//! token of the `read` role (status changes: `admin`). Bodies, query strings, page sizes and
//! request time are bounded, and so are connections (`connections`); every error is answered
//! with `ApiError`'s JSON.

pub mod auth;
mod connections;
mod error;
pub mod findings;
pub mod identities;
pub mod inventory;
mod names;
pub mod query;
mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use connections::ConnectionLimits;
pub use error::{ApiError, ErrorBody};

use crate::baseline::Baselines;
use crate::engine::Engine;
use crate::findings::store::FindingStore;
use crate::registry::Registry;
use crate::telemetry::metrics::Metrics;

/// `[http]`
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address; empty to serve no HTTP.
    pub listen: String,
    /// API tokens, by the SHA-256 of their secret.
    pub tokens: Vec<TokenConfig>,
    /// Serve `/metrics` without a token.
    pub metrics_open: bool,
    /// `/readyz` answers ready when the consumer is at most this many records behind.
    pub ready_max_lag: i64,
    /// Page size when a request gives none.
    pub default_page: usize,
    /// Largest page a request may ask for.
    pub max_page: usize,
    /// Requests taking longer are answered 408.
    pub request_timeout_seconds: u64,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most connections open at once; past it the one idle longest is closed to admit a new one.
    pub max_connections: usize,
    /// Most connections one client address (an IPv6 /64) may hold before presenting a valid
    /// token; 0 for no cap.
    pub max_unauthenticated_per_ip: usize,
    /// A new connection is closed when its first request head (request line and headers) has
    /// not wholly arrived this long after it was accepted.
    pub header_read_timeout_seconds: u64,
    /// A kept-alive connection is closed when its next request head has not wholly arrived this
    /// long after the previous response was sent.
    pub idle_timeout_seconds: u64,
    /// Append-only journal of findings and status changes; empty to keep them in memory only.
    pub findings_journal: std::path::PathBuf,
    /// Findings kept in memory (past it resolved ones go first, then the oldest by creation).
    pub max_findings: usize,
}

/// `[[http.tokens]]`
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (recorded with status changes; never the secret).
    pub name: String,
    /// What it may do.
    pub role: auth::Role,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish()
    }
}

/// Longest query string accepted.
pub const MAX_QUERY_BYTES: usize = 2048;
/// Longest text of a rejection passed on as an error's message.
const MAX_REJECTION_TEXT: usize = 1024;

/// Bounds of the API.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Page size when none is asked for.
    pub default_page: usize,
    /// Largest page.
    pub max_page: usize,
    /// Largest body.
    pub max_body: usize,
    /// Longest request.
    pub timeout: Duration,
    /// Longest request to the SQL endpoints (above the query time limit).
    pub query_timeout: Duration,
}

/// How much longer than its query a SQL request may take: starting the query process and
/// encoding the answer.
const QUERY_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

impl Limits {
    /// The page size a request asked for (or the default), if within bounds.
    pub fn page(&self, requested: Option<usize>) -> Result<usize, ApiError> {
        let limit = requested.unwrap_or(self.default_page);
        if limit == 0 || limit > self.max_page {
            return Err(ApiError::bad_query(format!(
                "limit must be between 1 and {}",
                self.max_page
            )));
        }
        Ok(limit)
    }

    /// From `[http]`.
    pub fn from_config(cfg: &HttpConfig) -> Limits {
        Limits {
            default_page: cfg.default_page,
            max_page: cfg.max_page,
            max_body: cfg.max_body_bytes,
            timeout: Duration::from_secs(cfg.request_timeout_seconds),
            query_timeout: Duration::from_secs(cfg.request_timeout_seconds),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Findings.
    pub store: Arc<FindingStore>,
    /// Tokens.
    pub auth: Arc<auth::Auth>,
    /// Bounds.
    pub limits: Limits,
    /// Set once the consumer is assigned and caught up.
    pub ready: Arc<AtomicBool>,
    /// Per-identity state, read for the inventory.
    pub baseline: Baselines,
    /// The registry, if configured.
    pub registry: Option<Arc<Registry>>,
    /// Counters and latency for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Serve `/metrics` without a token.
    pub metrics_open: bool,
    /// Ready when at most this many records behind.
    pub ready_max_lag: i64,
    /// Whether readiness waits for the consumer's lag to be known: false when the source is
    /// files or stdin, which have no lag (ready once reading).
    pub lag_gates_readiness: bool,
    /// SQL over the archive, when one is configured: each query in its own process.
    pub sql: Option<Arc<crate::replay::sandbox::Sandbox>>,
}

impl AppState {
    /// The state of a service reading files or stdin: ready once reading, with no lag to wait for.
    pub fn reading_files(mut self) -> AppState {
        self.lag_gates_readiness = false;
        self
    }

    /// The state reading the identities of `baselines` instead (a group member's partitions).
    pub fn with_baselines(mut self, baselines: Baselines) -> AppState {
        self.baseline = baselines;
        self
    }

    /// The state serving `engine`'s identities and `store`'s findings under `[http]` settings.
    pub fn new(
        engine: &Engine,
        store: Arc<FindingStore>,
        auth: auth::Auth,
        cfg: &HttpConfig,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
    ) -> AppState {
        AppState {
            store,
            auth: Arc::new(auth),
            limits: Limits::from_config(cfg),
            ready,
            baseline: Baselines::single(Arc::clone(engine.baseline())),
            registry: engine.registry().cloned(),
            metrics,
            metrics_open: cfg.metrics_open,
            ready_max_lag: cfg.ready_max_lag,
            lag_gates_readiness: true,
            sql: None,
        }
    }

    /// Serves SQL over `sql`'s archive too. The query endpoints' request time limit is set
    /// above the query's, so that a slow query is answered `query_timeout` (and stopped), not
    /// cut off by the HTTP timer.
    pub fn with_sql(mut self, sql: Arc<crate::replay::sandbox::Sandbox>) -> AppState {
        self.limits.query_timeout = self.limits.timeout.max(sql.limits().timeout + QUERY_TIMEOUT_MARGIN);
        self.sql = Some(sql);
        self
    }
}

/// The API.
pub fn router(state: AppState) -> Router {
    let limits = state.limits;
    let sql = Router::new()
        .route("/v1/query", post(query::query))
        .route("/v1/replay/queries/{name}", post(query::run_saved))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.query_timeout,
        ));
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/findings", get(findings::list))
        .route("/v1/findings/stream", get(stream::stream))
        .route("/v1/findings/{id}", get(findings::get))
        .route("/v1/findings/{id}/status", post(findings::set_status))
        .route("/v1/identities", get(identities::list))
        .route("/v1/identities/{id}", get(identities::get))
        .route("/v1/inventory/gaps", get(inventory::gaps_handler))
        .route("/v1/replay/queries", get(query::list))
        .route("/v1/token", get(token))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.timeout,
        ))
        .merge(sql)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(middleware::from_fn(bound_query))
        .layer(DefaultBodyLimit::max(limits.max_body))
        // A declared Content-Length over the limit is answered at once, before any body is read
        // (the extractors alone would wait for the body, then for the timeout).
        .layer(RequestBodyLimitLayer::new(limits.max_body))
        .layer(middleware::from_fn_with_state(limits, json_errors))
        .with_state(state)
}

/// Gives the error answers made outside the handlers — the router's 405, the extractors'
/// rejections (plain text), the body limit's 413 and the timeout's 408 (no body) — the body of
/// an `ApiError`, so that clients read one shape; headers such as `Allow` are kept.
async fn json_errors(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    // A rejection's text describes the client's own request (e.g. where its JSON is wrong).
    let text = axum::body::to_bytes(body, MAX_REJECTION_TEXT)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_ascii_lowercase());
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::not_found("no such endpoint"),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::method_not_allowed(method.as_str()),
        StatusCode::REQUEST_TIMEOUT => ApiError::timeout(limits.timeout),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(limits.max_body),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::unsupported_media_type(text),
        status if status.is_server_error() => ApiError::internal(&text),
        status => ApiError::custom(status, "bad_request", text),
    };
    let mut answer = error.into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(value) = parts.headers.get(&name) {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}

async fn bound_query(request: Request, next: Next) -> Response {
    if request.uri().query().is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
        return ApiError::query_too_long(MAX_QUERY_BYTES).into_response();
    }
    next.run(request).await
}

/// The OpenAPI document, generated from the handlers' annotations and the types they return.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "nhiwatch", description = "Findings about non-human identities in healthcare interoperability audit logs."),
    paths(
        findings::list, findings::get, findings::set_status, stream::stream,
        identities::list, identities::get, inventory::gaps_handler, query::query, query::list, query::run_saved, metrics, healthz, readyz, dashboard, openapi, token
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The token presented: its name and role, so that a client offers only what it may do (the
/// dashboard shows status actions to an admin token).
#[utoipa::path(get, path = "/v1/token", operation_id = "get_token", tag = "operations",
    responses((status = 200, description = "`{\"name\", \"role\"}` of the token", body = Object),
        (status = 401, description = "No or unknown token", body = ErrorBody)),
    security(("bearer" = [])))]
async fn token(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    let who = state.auth.check(&headers, auth::Role::Read)?;
    Ok(Json(json!({"name": who.name, "role": who.role.as_str()})).into_response())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object),
        (status = 401, description = "No or unknown token", body = ErrorBody)),
    security(("bearer" = [])))]
async fn openapi(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    state.auth.check(&headers, auth::Role::Read)?;
    Ok(Json(<ApiDoc as utoipa::OpenApi>::openapi()).into_response())
}

/// Binds `addr` and serves the API in a task of the current runtime, within `limits`; returns
/// the bound address (so `127.0.0.1:0` works) and the task.
pub async fn serve(
    addr: &str,
    state: AppState,
    limits: ConnectionLimits,
) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let auth = Arc::clone(&state.auth);
    let metrics = Arc::clone(&state.metrics);
    let app = router(state);
    let task = tokio::spawn(connections::accept(listener, app, auth, metrics, limits));
    Ok((local, task))
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 401, description = "No or unknown token (unless http.metrics_open)", body = ErrorBody)),
    security(("bearer" = [])))]
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Result<Response, ApiError> {
    if !state.metrics_open {
        state.auth.check(&headers, auth::Role::Read)?;
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response())
}

/// The dashboard, one page embedded in the binary. It holds no data: it asks for a token and
/// reads the API with it.
#[utoipa::path(get, path = "/", tag = "operations",
    responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String)))]
async fn dashboard() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
                 img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
            (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (axum::http::header::REFERRER_POLICY, "no-referrer"),
        ],
        include_str!("dashboard.html"),
    )
        .into_response()
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Up", body = Object)))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the consumer is subscribed and at most `http.ready_max_lag` records behind (a
/// service reading files or stdin: reading them).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Object), (status = 503, description = "Starting", body = Object)))]
async fn readyz(State(state): State<AppState>) -> Response {
    let lag = state.metrics.lag();
    match (state.ready.load(Ordering::Acquire), lag) {
        (true, Some(lag)) if lag <= state.ready_max_lag => Json(json!({"status": "ready", "lag": lag})).into_response(),
        (true, None) if !state.lag_gates_readiness => Json(json!({"status": "ready"})).into_response(),
        (true, Some(lag)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "catching_up", "lag": lag})),
        )
            .into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "starting"}))).into_response(),
    }
}
