//! `GET /v1/findings/stream`: Server-Sent Events of new and updated findings, with the list's
//! filters. Each event's id is the change's sequence number; a client that reconnects with
//! `Last-Event-ID` first receives every change it missed (from the store), then live ones. A
//! client too slow for the live feed is disconnected rather than silently skipped, so that its
//! reconnection replays what it missed.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

use super::auth::Role;
use super::error::ErrorBody;
use super::findings::ListParams;
use super::{ApiError, AppState};
use crate::findings::store::Stored;

fn sse_event(kind: &str, stored: &Stored) -> Event {
    Event::default()
        .id(stored.seq.to_string())
        .event(kind)
        .json_data(stored)
        .unwrap_or_else(|_| Event::default().comment("unserializable finding"))
}

/// Server-Sent Events of new and updated findings (`Last-Event-ID` resumes).
#[utoipa::path(get, path = "/v1/findings/stream", operation_id = "stream_findings", tag = "findings",
    params(("since" = Option<String>, Query), ("until" = Option<String>, Query), ("detector" = Option<String>, Query),
        ("identity" = Option<String>, Query), ("severity" = Option<String>, Query), ("status" = Option<String>, Query),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this change")),
    responses((status = 200, description = "text/event-stream of `new`, `updated`, `status` and `replay` events whose data is a stored finding", content_type = "text/event-stream", body = Stored),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    state.auth.check(&headers, Role::Read)?;
    let Query(params) = params.map_err(|e| ApiError::bad_query(e.body_text()))?;
    if params.limit.is_some() || params.cursor.is_some() {
        return Err(ApiError::bad_query("limit and cursor do not apply to the stream"));
    }
    let last_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_query("Last-Event-ID is not an id this server sent"))
        })
        .transpose()?;
    let query = params.query(&state)?;
    // Subscribe before reading the backlog, so nothing falls between the two.
    let live = BroadcastStream::new(state.store.subscribe());
    let backlog = last_id
        .map(|after| state.store.changes_since(after, &query))
        .unwrap_or_default();
    let replayed_up_to = backlog.last().map_or(last_id.unwrap_or(0), |s| s.seq);
    let backlog = tokio_stream::iter(backlog.into_iter().map(|s| Ok(sse_event("replay", &s))));
    let live = live.take_while(Result::is_ok).filter_map(move |item| {
        let item = item.ok()?;
        (item.stored.seq > replayed_up_to && query.matches(&item.stored))
            .then(|| Ok(sse_event(item.change, &item.stored)))
    });
    Ok(Sse::new(backlog.chain(live)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
