//! The HTTP API through `tower::ServiceExt::oneshot`, without a socket: every endpoint, auth,
//! limits and error bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::DateTime;
use http_body_util::BodyExt;
use nhiwatch::baseline;
use nhiwatch::config::Settings;
use nhiwatch::detect::Detectors;
use nhiwatch::engine::Engine;
use nhiwatch::event::{Event, EventKind, IdentityType, Outcome, SourceFormat};
use nhiwatch::findings::store::FindingStore;
use nhiwatch::findings::{Confidence, DetectorId, Finding, IdentityRef, Severity, Status};
use nhiwatch::http::auth::Auth;
use nhiwatch::http::{AppState, Limits, router};
use nhiwatch::registry::Registry;
use nhiwatch::scope::Scope;
use nhiwatch::telemetry::metrics::Metrics;
use serde_json::{Value, json};
use tower::ServiceExt;

pub const READ: &str = "read-token-for-tests";
const ADMIN: &str = "admin-token-for-tests";

pub fn finding(n: i64, detector: DetectorId, severity: Severity) -> Finding {
    let t = DateTime::from_timestamp(1_767_571_200 + n * 3600, 0).expect("valid");
    Finding {
        id: format!("{n:032x}"),
        detector,
        severity,
        confidence: Confidence::High,
        status: Status::New,
        identity: IdentityRef {
            id: format!("app-{}", n % 3),
            name: None,
            owner: Some("owner@example.org".into()),
            registered: true,
        },
        event_time: t,
        last_event_time: t,
        detected_at: t,
        title: format!("finding {n}"),
        explanation: "observed vs baseline".into(),
        analysis: Vec::new(),
        count: 1,
        evidence: Vec::new(),
        controls: nhiwatch::findings::controls::of(detector).to_vec(),
        // Each a problem of its own: findings of one detector and identity aggregate by cause.
        cause: Some(format!("cause {n}")),
    }
}

pub fn state(store: Arc<FindingStore>) -> AppState {
    state_with(
        store,
        Engine::new(Detectors::default(), None, baseline::Settings::default()),
    )
}

fn state_with(store: Arc<FindingStore>, engine: Engine) -> AppState {
    state_of(store, &engine)
}

/// The API over `engine`'s identities, with small bounds so the tests can reach them.
pub fn state_of(store: Arc<FindingStore>, engine: &Engine) -> AppState {
    let settings = Settings::load_with_env(None, &[]).expect("defaults");
    let auth = Auth::new(&settings.raw.http, Some(READ), Some(ADMIN));
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    // Small bounds so the tests can reach them.
    AppState {
        ready_max_lag: 100,
        limits: Limits {
            default_page: 3,
            max_page: 5,
            max_body: 512,
            timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
        },
        ..AppState::new(engine, store, auth, &settings.raw.http, metrics, ready)
    }
}

fn seeded() -> AppState {
    let store = Arc::new(FindingStore::in_memory(1000));
    for n in 0..8 {
        let (detector, severity) = match n % 4 {
            0 => (DetectorId::PhiVolume, Severity::High),
            1 => (DetectorId::OffHours, Severity::Low),
            2 => (DetectorId::NewNetwork, Severity::Medium),
            _ => (DetectorId::BreakGlass, Severity::Critical),
        };
        store.upsert(finding(n, detector, severity)).expect("stored");
    }
    state(store)
}

pub async fn call(
    app: &AppState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let response = router(app.clone())
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["title"].as_str().expect("title").to_owned())
        .collect()
}

#[tokio::test]
async fn health_needs_no_token_and_readiness_follows_the_consumer() {
    let app = seeded();
    assert_eq!(
        call(&app, "GET", "/healthz", None, None).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        call(&app, "GET", "/readyz", None, None).await,
        (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "starting"}))
    );
    app.ready.store(true, Ordering::Release);
    // Subscribed, but no lag measured yet: still starting.
    assert_eq!(
        call(&app, "GET", "/readyz", None, None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    app.metrics.set_lag(5000);
    assert_eq!(
        call(&app, "GET", "/readyz", None, None).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "catching_up", "lag": 5000})
        )
    );
    app.metrics.set_lag(12);
    assert_eq!(
        call(&app, "GET", "/readyz", None, None).await,
        (StatusCode::OK, json!({"status": "ready", "lag": 12}))
    );
}

#[tokio::test]
async fn auth_distinguishes_missing_wrong_and_insufficient_tokens() {
    let app = seeded();
    let (status, body) = call(&app, "GET", "/v1/findings", None, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, _) = call(&app, "GET", "/v1/findings", Some("not-a-token"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let id = format!("{:032x}", 1);
    let change = json!({"status": "acknowledged", "reason": "looking"});
    let (status, body) = call(
        &app,
        "POST",
        &format!("/v1/findings/{id}/status"),
        Some(READ),
        Some(change),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let request = Request::builder()
        .uri("/v1/findings")
        .body(Body::empty())
        .expect("request");
    let response = router(app.clone()).oneshot(request).await.expect("response");
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
}

#[tokio::test]
async fn lists_newest_first_with_filters_and_stable_cursors() {
    let app = seeded();
    let (status, page) = call(&app, "GET", "/v1/findings", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&page), ["finding 7", "finding 6", "finding 5"]);
    let cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
    // A finding arrives between pages: the next page continues where the first ended.
    app.store
        .upsert(finding(8, DetectorId::PhiVolume, Severity::High))
        .expect("stored");
    let (_, page) = call(&app, "GET", &format!("/v1/findings?cursor={cursor}"), Some(READ), None).await;
    assert_eq!(ids(&page), ["finding 4", "finding 3", "finding 2"]);

    let (_, page) = call(&app, "GET", "/v1/findings?severity=high&limit=5", Some(READ), None).await;
    assert_eq!(
        ids(&page),
        ["finding 8", "finding 7", "finding 4", "finding 3", "finding 0"]
    );
    assert!(page.get("next_cursor").is_none());
    let (_, page) = call(
        &app,
        "GET",
        "/v1/findings?detector=off_hours&identity=app-2",
        Some(READ),
        None,
    )
    .await;
    assert_eq!(ids(&page), ["finding 5"]);
    let (_, page) = call(
        &app,
        "GET",
        "/v1/findings?since=2026-01-05T02:00:00Z&until=2026-01-05T04:00:00Z",
        Some(READ),
        None,
    )
    .await;
    assert_eq!(ids(&page), ["finding 3", "finding 2"]);
}

/// `sort=severity` is a triage queue: critical first, then high, medium, low, newest first
/// within each (the seeded findings: n % 4 gives the severity, n the order of creation); its
/// cursor continues after the last finding of a page, so one arriving meanwhile shifts nothing.
#[tokio::test]
async fn sorted_by_severity_most_severe_first_then_newest() {
    let app = seeded();
    let mut cursor = String::new();
    for want in [
        &["finding 7", "finding 3", "finding 4"][..],
        &["finding 0", "finding 6", "finding 2"],
        &["finding 5", "finding 1"],
    ] {
        let (status, page) = call(
            &app,
            "GET",
            &format!("/v1/findings?sort=severity&limit=3{cursor}"),
            Some(READ),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids(&page), want);
        cursor = page["next_cursor"]
            .as_str()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        // A critical finding arrives after the first page: it is the next reader's first row,
        // not this reader's fourth.
        app.store
            .upsert(finding(9, DetectorId::BreakGlass, Severity::Critical))
            .expect("stored");
    }
    assert!(cursor.is_empty(), "the last page has no cursor");
    // Filters apply as with the default order.
    let (_, page) = call(
        &app,
        "GET",
        "/v1/findings?sort=severity&severity=high",
        Some(READ),
        None,
    )
    .await;
    assert_eq!(ids(&page), ["finding 9", "finding 7", "finding 3"]);
    let (status, body) = call(&app, "GET", "/v1/findings?sort=risk", Some(READ), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// `GET /v1/token` tells a client its token's role, so that it offers only what it may do.
#[tokio::test]
async fn the_token_endpoint_names_the_role() {
    let app = seeded();
    let (status, body) = call(&app, "GET", "/v1/token", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["role"], "read");
    let (_, body) = call(&app, "GET", "/v1/token", Some(ADMIN), None).await;
    assert_eq!(body["role"], "admin");
    let (status, _) = call(&app, "GET", "/v1/token", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_queries_and_limits_get_stable_error_codes() {
    let app = seeded();
    for (uri, code) in [
        ("/v1/findings?limit=6", "bad_query"),
        ("/v1/findings?limit=0", "bad_query"),
        ("/v1/findings?severity=urgent", "bad_query"),
        ("/v1/findings?colour=red", "bad_query"),
        ("/v1/findings?cursor=abc", "bad_query"),
        ("/v1/findings?since=yesterday", "bad_query"),
        ("/v1/nothing", "not_found"),
    ] {
        let (status, body) = call(&app, "GET", uri, Some(READ), None).await;
        assert_eq!(body["error"]["code"].as_str(), Some(code), "{uri}: {status} {body}");
    }
    let long = format!("/v1/findings?identity={}", "x".repeat(3000));
    let (status, body) = call(&app, "GET", &long, Some(READ), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::URI_TOO_LONG, Some("query_too_long"))
    );
    let id = format!("{:032x}", 1);
    let huge = json!({"status": "acknowledged", "reason": "x".repeat(1000)});
    let (status, body) = call(
        &app,
        "POST",
        &format!("/v1/findings/{id}/status"),
        Some(ADMIN),
        Some(huge),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
}

#[tokio::test]
async fn one_finding_and_status_changes_with_who_and_why() {
    let app = seeded();
    let id = format!("{:032x}", 2);
    let (status, body) = call(&app, "GET", &format!("/v1/findings/{id}"), Some(READ), None).await;
    assert_eq!(
        (status, body["detector"].as_str()),
        (StatusCode::OK, Some("new_network"))
    );
    let (status, body) = call(&app, "GET", "/v1/findings/ffff", Some(READ), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    let uri = format!("/v1/findings/{id}/status");
    for (body, code) in [
        (json!({"status": "new", "reason": "x"}), "bad_request"),
        (json!({"status": "resolved", "reason": "  "}), "bad_request"),
        (
            json!({"status": "resolved", "reason": "ok", "expires_at": "2099-01-01T00:00:00Z"}),
            "bad_request",
        ),
        (
            json!({"status": "suppressed", "reason": "ok", "expires_at": "2001-01-01T00:00:00Z"}),
            "bad_request",
        ),
        (json!({"status": "closed", "reason": "ok"}), "bad_request"),
    ] {
        let (status, reply) = call(&app, "POST", &uri, Some(ADMIN), Some(body.clone())).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{body}"
        );
    }
    let change = json!({"status": "suppressed", "reason": "planned migration", "expires_at": "2099-01-01T00:00:00Z"});
    let (status, body) = call(&app, "POST", &uri, Some(ADMIN), Some(change)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "suppressed");
    let history = &body["status_history"][0];
    assert_eq!(
        (
            history["by"].as_str(),
            history["reason"].as_str(),
            history["expires_at"].as_str()
        ),
        (
            Some("env-admin"),
            Some("planned migration"),
            Some("2099-01-01T00:00:00Z")
        )
    );
    let (_, page) = call(&app, "GET", "/v1/findings?status=suppressed", Some(READ), None).await;
    assert_eq!(ids(&page), ["finding 2"]);
    let (status, _) = call(
        &app,
        "POST",
        "/v1/findings/ffff/status",
        Some(ADMIN),
        Some(json!({"status": "resolved", "reason": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Reads SSE frames until `n` events (blocks ending in a blank line with an `id:`) arrived.
async fn sse_events(body: Body, n: usize) -> Vec<(String, String, Value)> {
    let mut body = body;
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an event within 5 s")
            .expect("stream open")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_owned()))
            };
            if let (Some(id), Some(event), Some(data)) = (field("id"), field("event"), field("data")) {
                events.push((id, event, serde_json::from_str(&data).expect("data is JSON")));
            }
        }
    }
    events
}

async fn open_stream(app: &AppState, uri: &str, last_event_id: Option<&str>) -> axum::response::Response {
    let mut req = Request::builder()
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {READ}"));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    router(app.clone())
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("response")
}

#[tokio::test]
async fn the_stream_sends_new_findings_that_match_its_filters() {
    let app = seeded();
    let response = open_stream(&app, "/v1/findings/stream?detector=phi_volume", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    app.store
        .upsert(finding(20, DetectorId::OffHours, Severity::Low))
        .expect("stored");
    app.store
        .upsert(finding(21, DetectorId::PhiVolume, Severity::High))
        .expect("stored");
    let events = sse_events(response.into_body(), 1).await;
    assert_eq!(events[0].0, "10", "the 10th change of the store");
    assert_eq!(events[0].1, "new");
    assert_eq!(events[0].2["title"], "finding 21");
}

#[tokio::test]
async fn the_stream_resumes_after_last_event_id() {
    let app = seeded();
    let response = open_stream(&app, "/v1/findings/stream", Some("6")).await;
    let events = sse_events(response.into_body(), 2).await;
    let got: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|(id, kind, data)| (id.as_str(), kind.as_str(), data["title"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(got, [("7", "replay", "finding 6"), ("8", "replay", "finding 7")]);

    let (status, body) = call(&app, "GET", "/v1/findings/stream", None, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let bad = open_stream(&app, "/v1/findings/stream", Some("yesterday")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

fn token(identity: &str, day: i64, ip: &str, scopes: &str) -> Event {
    let t = DateTime::from_timestamp(1_767_571_200 + day * 86_400 + 9 * 3600, 0).expect("valid");
    let mut e = Event::new(
        format!("{identity}-{day}"),
        t,
        SourceFormat::Okta,
        EventKind::TokenIssued,
        identity.into(),
    );
    e.identity_type = IdentityType::Application;
    e.outcome = Outcome::Success;
    e.src_ip = Some(ip.into());
    e.scopes = Scope::parse_list(scopes);
    e
}

fn inventory() -> AppState {
    let registry = Registry::parse(
        "[[integration]]\nid = \"cds-app\"\naliases = [\"0oa-cds\"]\nowner = \"cds@example.org\"\n\
         purpose = \"Decision support\"\n\
         approved_scopes = [\"system/Patient.rs\", \"system/Observation.rs\", \"system/Encounter.rs\"]\n",
        std::path::Path::new("registry.toml"),
    )
    .expect("valid");
    let mut engine = Engine::new(Detectors::default(), Some(registry), baseline::Settings::default());
    let mut updates = Vec::new();
    let mut events = vec![token("old-job", 0, "10.9.9.9", "system/Patient.r")];
    for day in 0..41 {
        events.push(token(
            "0oa-cds",
            day,
            "10.20.1.15",
            "system/Observation.read system/Patient.rs",
        ));
    }
    events.push(token("stranger", 40, "172.16.0.4", "system/*.rs"));
    for e in &events {
        engine.process(e, e.time, &mut updates);
    }
    let store = Arc::new(FindingStore::in_memory(100));
    let mut f = finding(1, DetectorId::UnregisteredIdentity, Severity::High);
    f.identity.id = "stranger".into();
    store.upsert(f).expect("stored");
    state_with(store, engine)
}

#[tokio::test]
async fn the_inventory_lists_every_identity_by_risk_with_scopes_used_and_approved() {
    let app = inventory();
    let (status, page) = call(&app, "GET", "/v1/identities", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 3);
    assert_eq!(page["as_of"], "2026-02-14T09:00:00Z");
    let order: Vec<(&str, u64)> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap_or_default(),
                i["risk"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    // stranger: unregistered (20) + an open high finding (20); old-job: unregistered (20) +
    // dormant (10); cds-app: registered, active, within its approval.
    assert_eq!(order, [("stranger", 40), ("old-job", 30), ("cds-app", 0)]);
    let cds = &page["items"][2];
    assert_eq!(
        cds["scopes_used"],
        json!(["system/Observation.rs", "system/Patient.rs"])
    );
    assert_eq!(cds["scopes_unused"], json!(["system/Encounter.rs"]));
    assert_eq!(cds["owner"], "cds@example.org");
    assert_eq!(page["items"][1]["silent_days"], 40.0);
    assert_eq!(page["items"][1]["dormant"], true);

    let (_, page) = call(&app, "GET", "/v1/identities?dormant=true", Some(READ), None).await;
    assert_eq!(page["items"][0]["id"], "old-job");
    assert_eq!(page["total"], 1);
    let (_, page) = call(
        &app,
        "GET",
        "/v1/identities?registered=false&sort=id&limit=1&offset=1",
        Some(READ),
        None,
    )
    .await;
    assert_eq!(
        (page["total"].as_u64(), page["items"][0]["id"].as_str()),
        (Some(2), Some("stranger"))
    );
    let (status, body) = call(&app, "GET", "/v1/identities?sort=name", Some(READ), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_query"))
    );
    let (status, _) = call(&app, "GET", "/v1/identities", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn one_identity_explains_its_baseline_and_resolves_aliases() {
    let app = inventory();
    let (status, body) = call(&app, "GET", "/v1/identities/0oa-cds", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], "cds-app");
    assert_eq!(body["purpose"], "Decision support");
    assert_eq!(body["active_days"], 41);
    assert_eq!(body["longest_silence_hours"], 24.0);
    assert_eq!(body["networks"][0]["prefix"], "10.20.1.0/24");
    // 41 days but only 41 events: still learning (50 are needed).
    assert_eq!(
        (body["events"].as_u64(), body["established"].as_bool()),
        (Some(41), Some(false))
    );
    // Daily at 09:00 for six weeks: every day of the week at 09.
    assert_eq!(
        body["active_hours_of_week"],
        json!([
            "Mon 09:00",
            "Tue 09:00",
            "Wed 09:00",
            "Thu 09:00",
            "Fri 09:00",
            "Sat 09:00",
            "Sun 09:00"
        ])
    );
    let (status, body) = call(&app, "GET", "/v1/identities/nobody", Some(READ), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

/// An identity is found by its canonical id, a registry alias or its display name (registry
/// name, or the source's for an unregistered identity), ignoring case; a display name two
/// integrations share is refused with both ids.
#[tokio::test]
async fn identities_and_findings_are_found_by_id_alias_or_display_name() {
    let registry = Registry::parse(
        "[[integration]]\nid = \"cds-app\"\naliases = [\"0oa-cds\"]\nname = \"Clinical Decision Support\"\n\
         [[integration]]\nid = \"twin-a\"\nname = \"Twin feed\"\n\
         [[integration]]\nid = \"twin-b\"\nname = \"twin FEED\"\n",
        std::path::Path::new("registry.toml"),
    )
    .expect("valid");
    let mut engine = Engine::new(Detectors::default(), Some(registry), baseline::Settings::default());
    let mut stranger = token("stranger", 1, "172.16.0.4", "system/*.rs");
    stranger.identity_name = Some("Night Batch".into());
    let mut updates = Vec::new();
    for e in [
        token("0oa-cds", 0, "10.20.1.15", "system/Patient.rs"),
        token("twin-a", 0, "10.20.1.16", "system/Patient.rs"),
        token("twin-b", 0, "10.20.1.17", "system/Patient.rs"),
        stranger,
    ] {
        engine.process(&e, e.time, &mut updates);
    }
    let store = Arc::new(FindingStore::in_memory(100));
    for (n, who) in [(1, "cds-app"), (2, "twin-a"), (3, "stranger")] {
        let mut f = finding(n, DetectorId::NewNetwork, Severity::Medium);
        f.identity.id = who.into();
        store.upsert(f).expect("stored");
    }
    let app = state_with(store, engine);

    for given in [
        "cds-app",
        "0oa-cds",
        "Clinical%20Decision%20Support",
        "clinical%20decision%20SUPPORT",
    ] {
        let (status, body) = call(&app, "GET", &format!("/v1/identities/{given}"), Some(READ), None).await;
        assert_eq!(
            (status, body["id"].as_str()),
            (StatusCode::OK, Some("cds-app")),
            "{given}: {body}"
        );
        let (status, page) = call(&app, "GET", &format!("/v1/findings?identity={given}"), Some(READ), None).await;
        assert_eq!(status, StatusCode::OK, "{given}: {page}");
        assert_eq!(ids(&page), ["finding 1"], "{given}");
    }
    let (status, body) = call(&app, "GET", "/v1/identities/night%20batch", Some(READ), None).await;
    assert_eq!(
        (status, body["id"].as_str()),
        (StatusCode::OK, Some("stranger")),
        "{body}"
    );
    let (_, page) = call(&app, "GET", "/v1/findings?identity=Night%20Batch", Some(READ), None).await;
    assert_eq!(ids(&page), ["finding 3"]);

    let refused = "the name \"Twin Feed\" is the display name of 2 identities: twin-a, twin-b; give one of their ids";
    for uri in ["/v1/identities/Twin%20Feed", "/v1/findings?identity=Twin%20Feed"] {
        let (status, body) = call(&app, "GET", uri, Some(READ), None).await;
        assert_eq!(
            (
                status,
                body["error"]["code"].as_str(),
                body["error"]["message"].as_str()
            ),
            (StatusCode::BAD_REQUEST, Some("bad_query"), Some(refused)),
            "{uri}"
        );
    }
    // Its id is never ambiguous; a name nobody has matches nothing.
    let (_, page) = call(&app, "GET", "/v1/findings?identity=twin-a", Some(READ), None).await;
    assert_eq!(ids(&page), ["finding 2"]);
    let (status, page) = call(&app, "GET", "/v1/findings?identity=Nobody", Some(READ), None).await;
    assert_eq!((status, ids(&page).len()), (StatusCode::OK, 0));
    let (status, _) = call(&app, "GET", "/v1/identities/Nobody", Some(READ), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_are_prometheus_text_behind_a_token_unless_open() {
    let mut app = seeded();
    app.metrics.event(SourceFormat::GatewayAccess);
    app.metrics.finding(DetectorId::PhiVolume);
    let (status, _) = call(&app, "GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let request = || {
        Request::builder()
            .uri("/metrics")
            .header(header::AUTHORIZATION, format!("Bearer {READ}"))
            .body(Body::empty())
            .expect("request")
    };
    let response = router(app.clone()).oneshot(request()).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text =
        String::from_utf8(response.into_body().collect().await.expect("body").to_bytes().to_vec()).expect("utf-8");
    assert!(
        text.lines()
            .any(|l| l == "nhiwatch_events_total{format=\"gateway_access\"} 1"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "nhiwatch_findings_total{detector=\"phi_volume\"} 1"),
        "{text}"
    );
    app.metrics_open = true;
    let open = Request::builder().uri("/metrics").body(Body::empty()).expect("request");
    assert_eq!(
        router(app).oneshot(open).await.expect("response").status(),
        StatusCode::OK
    );
}

/// Every route the router serves.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/v1/findings"),
    ("get", "/v1/findings/stream"),
    ("get", "/v1/findings/{id}"),
    ("post", "/v1/findings/{id}/status"),
    ("get", "/v1/identities"),
    ("get", "/v1/identities/{id}"),
    ("get", "/v1/inventory/gaps"),
    ("post", "/v1/query"),
    ("get", "/v1/replay/queries"),
    ("post", "/v1/replay/queries/{name}"),
    ("get", "/v1/token"),
];

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_validates() {
    let app = seeded();
    let (status, _) = call(&app, "GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, doc) = call(&app, "GET", "/openapi.json", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    let mut listed: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .expect("operations")
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    listed.sort();
    let mut expected: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    expected.sort();
    assert_eq!(listed, expected);
    // Every route is served (no 404 from the fallback) — the list above is the router's.
    for (method, path) in ROUTES {
        let path = path.replace("{id}", "x").replace("{name}", "phi_access");
        if path.ends_with("/stream") {
            continue;
        }
        let (status, body) = call(&app, &method.to_uppercase(), &path, Some(ADMIN), None).await;
        assert!(
            status != StatusCode::NOT_FOUND || body["error"]["message"] != "no such endpoint",
            "{method} {path} is not routed"
        );
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(doc["components"]["schemas"]["Finding"]["properties"]["explanation"].is_object());

    // A well-kept validator: openapi-spec-validator (PyPI), installed by .ci/run.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).expect("write");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('valid')",
        ])
        .arg(&file)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "openapi-spec-validator (pip install openapi-spec-validator) rejected the document:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
