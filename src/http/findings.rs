//! `/v1/findings`: list with filters and cursor, one finding, status changes.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Role;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::findings::store::{self, StatusChange, StoreError, Stored};
use crate::findings::{DetectorId, Severity, Status};

/// Filters and paging of `GET /v1/findings` (and the stream's filters).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Findings with activity at or after this event time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Findings first seen before this event time.
    pub until: Option<DateTime<Utc>>,
    /// Only this detector.
    pub detector: Option<DetectorId>,
    /// Only this identity: its canonical id, a registry alias or its display name (ignoring
    /// case; a name several identities share is refused).
    pub identity: Option<String>,
    /// At least this severity.
    pub severity: Option<Severity>,
    /// Only this status.
    pub status: Option<Status>,
    /// Page size (capped by `http.max_page`).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `time` (default): newest first; `severity`: most severe first, newest first within a
    /// severity (a triage queue; a finding whose severity rises between pages may be seen
    /// twice).
    #[param(inline)]
    pub sort: Option<Sort>,
}

/// Order of `GET /v1/findings`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sort {
    /// Newest first.
    #[default]
    Time,
    /// Most severe first, then newest.
    Severity,
}

impl ListParams {
    /// The store query these filters describe, the identity resolved to its canonical id.
    pub fn query(&self, state: &AppState) -> Result<store::Query, ApiError> {
        Ok(store::Query {
            since: self.since,
            until: self.until,
            detector: self.detector,
            identity: self
                .identity
                .as_deref()
                .map(|given| super::names::canonical(state, given))
                .transpose()?,
            severity: self.severity,
            status: self.status,
        })
    }
}

/// A page of findings, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page {
    /// The findings.
    pub items: Vec<Stored>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Findings, newest first, filtered and paged by cursor.
#[utoipa::path(get, path = "/v1/findings", operation_id = "list_findings", tag = "findings", params(ListParams),
    responses((status = 200, description = "A page of findings", body = Page),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    state.auth.check(&headers, Role::Read)?;
    let Query(params) = params.map_err(|e| ApiError::bad_query(e.body_text()))?;
    let limit = state.limits.page(params.limit)?;
    let foreign = || ApiError::bad_query("cursor is not one this server issued");
    let query = params.query(&state)?;
    let (items, next_cursor) = match params.sort.unwrap_or_default() {
        Sort::Time => {
            let before = params
                .cursor
                .as_deref()
                .map(|c| c.parse::<u64>().map_err(|_| foreign()))
                .transpose()?;
            let (items, next) = state.store.list(&query, before, limit);
            (items, next.map(|n| n.to_string()))
        }
        Sort::Severity => {
            // `severity.created_seq` of the last finding of the previous page.
            let after = params
                .cursor
                .as_deref()
                .map(|c| {
                    let (severity, seq) = c.split_once('.').ok_or_else(foreign)?;
                    Ok::<_, ApiError>((
                        severity.parse::<Severity>().map_err(|_| foreign())?,
                        seq.parse::<u64>().map_err(|_| foreign())?,
                    ))
                })
                .transpose()?;
            let (items, next) = state.store.list_by_severity(&query, after, limit);
            (items, next.map(|(severity, seq)| format!("{severity}.{seq}")))
        }
    };
    Ok(Json(Page { items, next_cursor }))
}

/// One finding with its status history.
#[utoipa::path(get, path = "/v1/findings/{id}", operation_id = "get_finding", tag = "findings", params(("id" = String, Path, description = "Finding id")),
    responses((status = 200, description = "The finding", body = Stored),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 404, description = "No such finding", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Stored>, ApiError> {
    state.auth.check(&headers, Role::Read)?;
    state
        .store
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no finding with id {id}")))
}

/// Body of `POST /v1/findings/{id}/status`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// `acknowledged`, `resolved` or `suppressed`.
    pub status: Status,
    /// Why (required, recorded).
    pub reason: String,
    /// For `suppressed`: until when (RFC 3339, in the future).
    pub expires_at: Option<DateTime<Utc>>,
}

const MAX_REASON: usize = 2000;

/// Changes a finding's status (admin); who, when and why are recorded.
#[utoipa::path(post, path = "/v1/findings/{id}/status", operation_id = "set_finding_status", tag = "findings",
    params(("id" = String, Path, description = "Finding id")), request_body = StatusRequest,
    responses((status = 200, description = "The finding after the change", body = Stored),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such finding", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<StatusRequest>, JsonRejection>,
) -> Result<Json<Stored>, ApiError> {
    let who = state.auth.check(&headers, Role::Admin)?;
    let Json(req) = body.map_err(|e| match e.status().as_u16() {
        413 => ApiError::payload_too_large(state.limits.max_body),
        _ => ApiError::bad_request(e.body_text()),
    })?;
    if req.status == Status::New {
        return Err(ApiError::bad_request(
            "status must be acknowledged, resolved or suppressed",
        ));
    }
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON {
        return Err(ApiError::bad_request(format!(
            "reason is required, at most {MAX_REASON} characters"
        )));
    }
    let now = Utc::now();
    match (req.status, req.expires_at) {
        (Status::Suppressed, Some(t)) if t <= now => {
            return Err(ApiError::bad_request("expires_at must be in the future"));
        }
        (Status::Acknowledged | Status::Resolved, Some(_)) => {
            return Err(ApiError::bad_request("expires_at applies to suppressed only"));
        }
        _ => {}
    }
    let change = StatusChange {
        status: req.status,
        by: who.name,
        at: now,
        reason: reason.to_owned(),
        expires_at: req.expires_at,
    };
    match state.store.set_status(&id, change) {
        Ok(stored) => Ok(Json(stored)),
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(format!("no finding with id {id}"))),
        Err(e) => Err(ApiError::internal(&e)),
    }
}
