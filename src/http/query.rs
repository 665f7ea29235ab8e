//! SQL over the archive: `POST /v1/query` and the saved compliance queries
//! (`GET /v1/replay/queries`, `POST /v1/replay/queries/{name}`). Read role. The answer's form
//! follows `Accept`: JSON (default; `{"columns", "rows", "truncated"}`), `text/csv`, or Arrow
//! IPC stream (`application/vnd.apache.arrow.stream`).

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::auth::Role;
use super::error::{ApiError, ErrorBody};
use crate::replay::saved::{self, Saved};
use crate::replay::{Answer, QueryError};

/// A query request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// The SQL (one read-only query).
    pub sql: String,
    /// Values of its `$name` parameters.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
}

/// Parameters of a saved query.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SavedRequest {
    /// Values of its parameters.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
}

fn params(raw: &BTreeMap<String, Value>) -> Result<BTreeMap<String, Value>, ApiError> {
    // Checked here so a bad value is the client's 400 before a query process starts.
    for (k, v) in raw {
        crate::replay::param_value(k, v).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    Ok(raw.clone())
}

fn query_error(e: QueryError) -> ApiError {
    match e {
        QueryError::NotAllowed(m) => ApiError::custom(
            axum::http::StatusCode::FORBIDDEN,
            "query_not_allowed",
            format!("only queries are allowed: {m}"),
        ),
        QueryError::Timeout(d) => ApiError::custom(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "query_timeout",
            format!("the query ran longer than {d:?}"),
        ),
        QueryError::Memory(m) => ApiError::custom(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "query_memory",
            format!("the query needs more memory than allowed: {m}"),
        ),
        QueryError::TooComplex(m) => ApiError::custom(
            axum::http::StatusCode::BAD_REQUEST,
            "query_too_complex",
            format!("the query is too complex: {m}"),
        ),
        QueryError::Busy(_) => ApiError::custom(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_queries",
            e.to_string(),
        ),
        QueryError::Invalid(m) => ApiError::custom(axum::http::StatusCode::BAD_REQUEST, "bad_sql", m),
        // As with none configured: a local archive is created before the API starts, so a
        // missing one is a location nothing writes to (an object store's, nothing written yet).
        QueryError::NoArchive(_) => ApiError::not_found(e.to_string()),
        QueryError::Archive { .. } | QueryError::Failed(_) => ApiError::internal(&e),
    }
}

fn encode(answer: &Answer, headers: &HeaderMap) -> Result<Response, ApiError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let batches: Vec<_> = answer.batches.iter().collect();
    let fail = |e: datafusion::arrow::error::ArrowError| ApiError::internal(&e);
    let (body, kind) = if accept.contains("application/vnd.apache.arrow.stream") {
        let mut out = Vec::new();
        let mut w = datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut out, &answer.schema).map_err(fail)?;
        for b in &batches {
            w.write(b).map_err(fail)?;
        }
        w.finish().map_err(fail)?;
        drop(w);
        (out, "application/vnd.apache.arrow.stream")
    } else if accept.contains("text/csv") {
        let mut out = Vec::new();
        let mut w = datafusion::arrow::csv::Writer::new(&mut out);
        for b in &batches {
            w.write(&crate::replay::for_csv(b).map_err(fail)?).map_err(fail)?;
        }
        drop(w);
        (out, "text/csv")
    } else {
        // `{"columns", "rows", "truncated"}` written around the rows Arrow's writer makes, never
        // as a tree of values (a wide answer would take many times its size in the service).
        let columns: Vec<&str> = answer.schema.fields().iter().map(|f| f.name().as_str()).collect();
        let mut body = Vec::new();
        body.extend_from_slice(b"{\"columns\":");
        serde_json::to_writer(&mut body, &columns).map_err(|e| ApiError::internal(&e))?;
        body.extend_from_slice(b",\"rows\":");
        let start = body.len();
        let mut w = datafusion::arrow::json::ArrayWriter::new(&mut body);
        w.write_batches(&batches).map_err(fail)?;
        w.finish().map_err(fail)?;
        drop(w);
        if body.len() == start {
            body.extend_from_slice(b"[]");
        }
        body.extend_from_slice(format!(",\"truncated\":{}}}", answer.truncated).as_bytes());
        (body, "application/json")
    };
    let mut response = Bytes::from(body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if answer.truncated {
        response
            .headers_mut()
            .insert("x-nhiwatch-truncated", HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn run(
    state: &AppState,
    sql: &str,
    params: BTreeMap<String, Value>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let engine = state
        .sql
        .as_ref()
        .ok_or_else(|| ApiError::not_found("no archive is configured (archive.location)"))?;
    // Each query in its own process (`replay::sandbox`); when all slots are taken the client is
    // told to come back rather than queued behind minutes of work.
    let answer = engine.try_query(sql, &params).await.map_err(query_error)?;
    encode(&answer, headers)
}

/// Runs one read-only SQL query over the archive.
#[utoipa::path(post, path = "/v1/query", operation_id = "query", tag = "archive", request_body = QueryRequest,
    responses((status = 200, description = "The answer: JSON {columns, rows, truncated}, CSV or Arrow IPC by Accept", body = Object),
        (status = 400, description = "Not valid SQL or parameters", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not a read-only query", body = ErrorBody),
        (status = 404, description = "No archive configured, or none at the configured location", body = ErrorBody),
        (status = 422, description = "Over the time or memory limit", body = ErrorBody),
        (status = 429, description = "As many queries as archive.query_concurrency are running; Retry-After says when to try again", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn query(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    state.auth.check(&headers, Role::Read)?;
    let req: QueryRequest = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    run(&state, &req.sql, params(&req.params)?, &headers).await
}

/// The saved compliance queries.
#[utoipa::path(get, path = "/v1/replay/queries", operation_id = "list_saved_queries", tag = "archive",
    responses((status = 200, description = "Name, description and parameters of each", body = Vec<Saved>),
        (status = 401, description = "No or unknown token", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Vec<Saved>>, ApiError> {
    state.auth.check(&headers, Role::Read)?;
    Ok(Json(saved::all()))
}

/// Runs a saved query with its parameters.
#[utoipa::path(post, path = "/v1/replay/queries/{name}", operation_id = "run_saved_query", tag = "archive",
    params(("name" = String, Path, description = "Saved query name")), request_body = SavedRequest,
    responses((status = 200, description = "The answer, as for /v1/query", body = Object),
        (status = 400, description = "Missing or unknown parameters", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 404, description = "No such saved query, or no archive (none configured, or none at the location)", body = ErrorBody),
        (status = 422, description = "Over the time or memory limit", body = ErrorBody),
        (status = 429, description = "As many queries as archive.query_concurrency are running; Retry-After says when to try again", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn run_saved(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    state.auth.check(&headers, Role::Read)?;
    let q = saved::get(&name).ok_or_else(|| ApiError::not_found(format!("no saved query {name}")))?;
    let req: SavedRequest = if body.is_empty() {
        SavedRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    q.check_params(req.params.keys().map(String::as_str))
        .map_err(ApiError::bad_request)?;
    run(&state, q.sql, params(&req.params)?, &headers).await
}
