//! `/v1/identities`: the inventory of every identity seen, registered or not, and one
//! identity's baseline in plain fields.
//!
//! Times are judged "as of" the newest event seen, not the wall clock, so a replayed or demo
//! stream reads the same as a live one.

use std::collections::HashMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::Role;
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::baseline::{IdentityState, net};
use crate::detect::rfc3339;
use crate::registry::Integration;
use crate::scope::Scope;

/// Silence after which the inventory calls an identity dormant, in days.
pub const DORMANT_DAYS: f64 = 30.0;

/// One identity in the inventory.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IdentitySummary {
    /// Canonical id (the registry id when registered).
    pub id: String,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Owner, from the registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Whether the registry lists it.
    pub registered: bool,
    /// First activity.
    pub first_seen: String,
    /// Latest activity, if it ever acted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Days between its latest activity and the newest event seen.
    pub silent_days: f64,
    /// Silent for 30 days or more.
    pub dormant: bool,
    /// Past its learning period.
    pub established: bool,
    /// Activity events seen.
    pub events: u32,
    /// Scopes it used (minimal under containment).
    pub scopes_used: Vec<String>,
    /// Scopes the registry approves.
    pub scopes_approved: Vec<String>,
    /// Approved scopes it never used: candidates for least privilege.
    pub scopes_unused: Vec<String>,
    /// Used scopes outside the approval.
    pub scopes_outside_approval: Vec<String>,
    /// Open (new or acknowledged) findings.
    pub open_findings: u64,
    /// Higher is worse: open findings by severity, unregistered, dormant, scope outside approval.
    pub risk: u32,
}

/// Sort and page of `GET /v1/identities`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IdentityParams {
    /// `risk` (default, highest first), `last_seen` (most recent first) or `id`.
    pub sort: Option<String>,
    /// Only unregistered (`false`) or registered (`true`) identities.
    pub registered: Option<bool>,
    /// Only dormant ones.
    pub dormant: Option<bool>,
    /// Page size (capped by `http.max_page`).
    pub limit: Option<usize>,
    /// Items to skip.
    pub offset: Option<usize>,
}

/// A page of the inventory.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentityPage {
    /// Identities matching, in all.
    pub total: usize,
    /// The newest event time seen: what `silent_days` is measured against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// This page.
    pub items: Vec<IdentitySummary>,
}

fn summarise(
    id: &str,
    s: &IdentityState,
    entry: Option<&Integration>,
    as_of: i64,
    open: &HashMap<String, (u64, u32)>,
    state: &AppState,
) -> IdentitySummary {
    let used: Vec<&Scope> = s.scopes.iter().map(|x| x.scope.as_ref()).collect();
    let approved: Vec<Scope> = entry.map(|e| e.approved_scopes.clone()).unwrap_or_default();
    let unused = approved
        .iter()
        .filter(|a| !used.iter().any(|u| a.contains(u) || u.contains(a)))
        .map(ToString::to_string)
        .collect();
    let outside: Vec<String> = match entry {
        Some(e) => used
            .iter()
            .filter(|u| e.approves_scope(u) == Some(false))
            .map(|u| u.to_string())
            .collect(),
        None => Vec::new(),
    };
    let last = s.last_seen;
    let silent_days = last.map_or(0.0, |l| ((as_of - l) as f64 / 86_400.0 * 10.0).round() / 10.0);
    let dormant = last.is_some() && silent_days >= DORMANT_DAYS;
    let (open_findings, severity_weight) = open.get(id).copied().unwrap_or_default();
    let risk = severity_weight
        + if entry.is_none() { 20 } else { 0 }
        + if dormant { 10 } else { 0 }
        + 15 * outside.len() as u32;
    IdentitySummary {
        id: id.to_owned(),
        name: entry
            .and_then(|e| e.name.clone())
            .or(s.name.as_deref().map(str::to_owned)),
        owner: entry.and_then(|e| e.owner.clone()),
        registered: entry.is_some(),
        first_seen: rfc3339(s.first_seen),
        last_seen: last.map(rfc3339),
        silent_days,
        dormant,
        established: s.established(&state.baseline.settings(), as_of),
        events: s.events,
        scopes_used: used.iter().map(|u| u.to_string()).collect(),
        scopes_approved: approved.iter().map(ToString::to_string).collect(),
        scopes_unused: unused,
        scopes_outside_approval: outside,
        open_findings,
        risk,
    }
}

/// Open findings and their severity weight, per identity.
fn open_findings(state: &AppState) -> HashMap<String, (u64, u32)> {
    let mut out: HashMap<String, (u64, u32)> = HashMap::new();
    for (id, severity) in state.store.open_severities() {
        let e = out.entry(id).or_default();
        e.0 += 1;
        e.1 += match severity {
            crate::findings::Severity::Critical => 40,
            crate::findings::Severity::High => 20,
            crate::findings::Severity::Medium => 8,
            crate::findings::Severity::Low => 3,
            crate::findings::Severity::Info => 1,
        };
    }
    out
}

fn as_of(state: &AppState) -> Option<i64> {
    let mut newest: Option<i64> = None;
    state
        .baseline
        .for_each(|_, s| newest = Some(newest.map_or(s.last_event, |n| n.max(s.last_event))));
    newest
}

/// The inventory: every identity seen, registered or not.
#[utoipa::path(get, path = "/v1/identities", operation_id = "list_identities", tag = "identities", params(IdentityParams),
    responses((status = 200, description = "A page of the inventory", body = IdentityPage),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<IdentityParams>, QueryRejection>,
) -> Result<Json<IdentityPage>, ApiError> {
    state.auth.check(&headers, Role::Read)?;
    let Query(params) = params.map_err(|e| ApiError::bad_query(e.body_text()))?;
    let limit = state.limits.page(params.limit)?;
    let sort = params.sort.as_deref().unwrap_or("risk");
    if !matches!(sort, "risk" | "last_seen" | "id") {
        return Err(ApiError::bad_query("sort must be risk, last_seen or id"));
    }
    let now = as_of(&state).unwrap_or(0);
    let open = open_findings(&state);
    let registry = state.registry.as_deref();
    let mut items = Vec::new();
    state.baseline.for_each(|id, s| {
        let entry = registry.and_then(|r| r.resolve(id));
        let summary = summarise(id, s, entry, now, &open, &state);
        if params.registered.is_none_or(|r| r == summary.registered)
            && params.dormant.is_none_or(|d| d == summary.dormant)
        {
            items.push(summary);
        }
    });
    match sort {
        "risk" => items.sort_by(|a, b| b.risk.cmp(&a.risk).then_with(|| a.id.cmp(&b.id))),
        "last_seen" => items.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| a.id.cmp(&b.id))),
        _ => items.sort_by(|a, b| a.id.cmp(&b.id)),
    }
    let total = items.len();
    let items = items.into_iter().skip(params.offset.unwrap_or(0)).take(limit).collect();
    Ok(Json(IdentityPage {
        total,
        as_of: (now > 0).then(|| rfc3339(now)),
        items,
    }))
}

/// One identity's baseline in plain fields.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentityDetail {
    /// The inventory line.
    #[serde(flatten)]
    pub summary: IdentitySummary,
    /// Why it exists, from the registry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Longest silence between two activities so far (its cadence), in hours.
    pub longest_silence_hours: f64,
    /// Days with activity.
    pub active_days: u32,
    /// Hours of the week it is active, e.g. `Mon 08:00`, UTC.
    pub active_hours_of_week: Vec<String>,
    /// Networks used, with first and latest use.
    pub networks: Vec<NetworkUse>,
    /// Typical distinct patients per active hour.
    pub typical_patients_per_hour: f64,
    /// Most patients in one hour learned.
    pub peak_patients_per_hour: u64,
    /// Active hours the volume estimate has learned.
    pub volume_hours_learned: u32,
    /// Usual failures per 10 minutes.
    pub usual_failures_per_10_minutes: f64,
    /// When the IdP deactivated it, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deactivated_at: Option<String>,
    /// When a credential was last added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_added_at: Option<String>,
    /// Registry dates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Registry dates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offboarded_at: Option<DateTime<Utc>>,
}

/// A network an identity used.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NetworkUse {
    /// `10.20.1.0/24`, `2001:db8::/64` or `a host name`.
    pub prefix: String,
    /// First use.
    pub first: String,
    /// Latest use.
    pub last: String,
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// One identity and its baseline (an alias or a display name resolves).
#[utoipa::path(get, path = "/v1/identities/{id}", operation_id = "get_identity", tag = "identities", params(("id" = String, Path, description = "Canonical id, registry alias or display name (ignoring case)")),
    responses((status = 200, description = "The identity", body = IdentityDetail),
        (status = 400, description = "A display name several identities share", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 404, description = "Never seen", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<IdentityDetail>, ApiError> {
    state.auth.check(&headers, Role::Read)?;
    let registry = state.registry.as_deref();
    // An alias or a display name finds the canonical identity.
    let canonical = super::names::canonical(&state, &id)?;
    let entry = registry.and_then(|r| r.resolve(&canonical));
    let now = as_of(&state).unwrap_or(0);
    let open = open_findings(&state);
    let detail = state.baseline.with(&canonical, |s| IdentityDetail {
        summary: summarise(&canonical, s, entry, now, &open, &state),
        purpose: entry.and_then(|e| e.purpose.clone()),
        longest_silence_hours: (s.max_gap as f64 / 360.0).round() / 10.0,
        active_days: s.active_days,
        active_hours_of_week: s
            .active_hour_list()
            .into_iter()
            .map(|(d, h)| format!("{} {h:02}:00", DAYS[usize::from(d)]))
            .collect(),
        networks: s
            .networks
            .iter()
            .map(|n| NetworkUse {
                prefix: net::key_label(n.key),
                first: rfc3339(n.first),
                last: rfc3339(n.last),
            })
            .collect(),
        typical_patients_per_hour: (s.volume.typical() * 10.0).round() / 10.0,
        peak_patients_per_hour: s.volume.peak,
        volume_hours_learned: s.volume.hours,
        usual_failures_per_10_minutes: (s.failures.mean * 100.0).round() / 100.0,
        deactivated_at: s.deactivated_at().map(rfc3339),
        credential_added_at: s.credential_added_at().map(rfc3339),
        expires_at: entry.and_then(|e| e.expires_at),
        offboarded_at: entry.and_then(|e| e.offboarded_at),
    });
    detail
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no identity {id} has been seen")))
}
