//! `GET /v1/inventory/gaps`: the registry against the stream ([`crate::inventory`]).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::auth::Role;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::inventory::{Gaps, Seen, gaps};

/// Parameters of `GET /v1/inventory/gaps`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GapParams {
    /// Days of silence after which a registered integration is stale (default 30, at most 3650).
    pub unseen_days: Option<u32>,
}

/// Identities seen but not registered, registered integrations unseen (stale), registry entries
/// without owner, purpose or expiry, and retired integrations still active.
#[utoipa::path(get, path = "/v1/inventory/gaps", operation_id = "inventory_gaps", tag = "identities", params(GapParams),
    responses((status = 200, description = "The four inventory gaps", body = Gaps),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn gaps_handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<GapParams>, QueryRejection>,
) -> Result<Json<Gaps>, ApiError> {
    state.auth.check(&headers, Role::Read)?;
    let Query(params) = params.map_err(|e| ApiError::bad_query(e.body_text()))?;
    let unseen_days = params.unseen_days.unwrap_or(super::identities::DORMANT_DAYS as u32);
    if unseen_days == 0 || unseen_days > 3650 {
        return Err(ApiError::bad_query("unseen_days must be between 1 and 3650"));
    }
    let mut seen = Vec::new();
    state.baseline.for_each(|id, s| {
        seen.push(Seen {
            id: id.to_owned(),
            name: s.name.as_deref().map(str::to_owned),
            last_seen: s.last_seen,
            last_event: s.last_event,
            events: u64::from(s.events),
        })
    });
    Ok(Json(gaps(state.registry.as_deref(), &seen, unseen_days)))
}
