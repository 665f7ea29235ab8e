//! Governance: the inventory gaps over HTTP and as saved queries, on a generated scenario whose
//! registry is edited to hold one case of each gap; both answers equal what the test computes
//! from the events and the registry.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use datafusion::common::ScalarValue;
use nhiwatch::archive::{Archive, Limits as ArchiveLimits};
use nhiwatch::baseline;
use nhiwatch::detect::Detectors;
use nhiwatch::engine::{Detection, Engine};
use nhiwatch::event::Event;
use nhiwatch::generate::{Options, generate};
use nhiwatch::registry::Registry;
use nhiwatch::replay::{Limits, Sql};

use crate::replay::saved;
use crate::support::*;

const DAY: i64 = 86_400;
const UNSEEN_DAYS: i64 = 7;

fn is_activity(e: &Event) -> bool {
    matches!(e.kind.as_str(), "data_access" | "token_issued") && e.outcome.as_str() != "failure"
}

/// Seconds of a time printed by the API (RFC 3339) or by Arrow (no zone, fractions).
fn secs(s: &str) -> i64 {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp())
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc().timestamp()))
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// The scenario with one planted case of each gap; returns the edited registry's text, the ids
/// planted (stale, incomplete, retired-active) and the normalized events.
fn planted() -> (String, [String; 3], Vec<Event>) {
    let scenario = generate(&Options {
        identities: 16,
        days: 20,
        seed: 11,
        ..Options::default()
    });
    let normalizer = normalizer();
    let events: Vec<Event> = scenario
        .records
        .iter()
        .flat_map(|r| {
            normalizer
                .normalize(r.line.as_bytes(), &Default::default())
                .expect("normalizes")
        })
        .collect();
    let registry = Registry::parse(&scenario.registry, Path::new("registry.toml")).expect("registry");
    // The busiest registered identity with no retirement date expires in the middle of its use.
    let mut activity: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for e in events.iter().filter(|e| is_activity(e)) {
        if let Some(entry) = registry.resolve(&e.identity) {
            activity.entry(entry.id.clone()).or_default().push(e.time.timestamp());
        }
    }
    let (busy, times) = activity
        .iter()
        .filter(|(id, _)| registry.resolve(id).is_some_and(|e| e.retired_at().is_none()))
        .max_by_key(|(id, t)| (t.len(), (*id).clone()))
        .expect("an active registered identity");
    let mut times = times.clone();
    times.sort();
    let mid = DateTime::from_timestamp(times[times.len() / 2] / 60 * 60, 0).expect("valid");
    let mut doc: toml::Table = scenario.registry.parse().expect("TOML");
    let list = doc
        .get_mut("integration")
        .and_then(toml::Value::as_array_mut)
        .expect("integrations");
    let datetime = |t: DateTime<Utc>| -> toml::Value {
        toml::Value::Datetime(
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .parse()
                .expect("TOML datetime"),
        )
    };
    let mut unpurposed = None;
    for entry in list.iter_mut() {
        let table = entry.as_table_mut().expect("table");
        let id = table["id"].as_str().expect("id").to_owned();
        if id == *busy {
            table.insert("expires_at".into(), datetime(mid));
        } else if unpurposed.is_none() && table.contains_key("purpose") && table.contains_key("owner") {
            table.remove("purpose");
            unpurposed = Some(id);
        }
    }
    let long_ago = DateTime::from_timestamp(times[0] - 365 * DAY, 0).expect("valid");
    let mut ghost = toml::Table::new();
    ghost.insert("id".into(), "ghost-feed".into());
    ghost.insert("owner".into(), "ghost-owner@example.org".into());
    ghost.insert("purpose".into(), "A feed nobody turned off".into());
    ghost.insert("onboarded_at".into(), datetime(long_ago));
    ghost.insert("expires_at".into(), datetime(long_ago + chrono::Duration::days(3650)));
    list.push(toml::Value::Table(ghost));
    // Onboarded two days before the end and not used yet: new, not stale.
    let end = events.iter().map(|e| e.time).max().expect("events");
    let mut fresh = toml::Table::new();
    fresh.insert("id".into(), "fresh-feed".into());
    fresh.insert("onboarded_at".into(), datetime(end - chrono::Duration::days(2)));
    list.push(toml::Value::Table(fresh));
    (
        toml::to_string(&doc).expect("serializes"),
        [
            "ghost-feed".to_owned(),
            unpurposed.expect("an entry with a purpose"),
            busy.clone(),
        ],
        events,
    )
}

/// What the gaps must be, computed from the events and the registry in the plainest way.
struct Expected {
    as_of: i64,
    /// id → (last activity, activity events)
    unregistered: BTreeMap<String, (Option<i64>, u64)>,
    /// id → last activity
    stale: BTreeMap<String, Option<i64>>,
    /// id → missing keys
    incomplete: BTreeMap<String, Vec<&'static str>>,
    /// id → (retired at, the key that retired it, last activity)
    retired_active: BTreeMap<String, (i64, String, i64)>,
}

fn expected(registry: &Registry, events: &[Event]) -> Expected {
    let watched: Vec<&Event> = events
        .iter()
        .filter(|e| e.identity_type.is_non_human() && e.kind.as_str() != "sign_in")
        .collect();
    let as_of = watched.iter().map(|e| e.time.timestamp()).max().expect("events");
    let mut last: HashMap<String, Option<i64>> = HashMap::new();
    let mut count: HashMap<String, u64> = HashMap::new();
    for e in &watched {
        let id = registry
            .resolve(&e.identity)
            .map_or(e.identity.clone(), |r| r.id.clone());
        let slot = last.entry(id.clone()).or_default();
        if is_activity(e) {
            *slot = Some(slot.map_or(e.time.timestamp(), |l| l.max(e.time.timestamp())));
            *count.entry(id).or_default() += 1;
        }
    }
    let mut out = Expected {
        as_of,
        unregistered: BTreeMap::new(),
        stale: BTreeMap::new(),
        incomplete: BTreeMap::new(),
        retired_active: BTreeMap::new(),
    };
    for (id, l) in &last {
        if registry.resolve(id).is_none() {
            out.unregistered
                .insert(id.clone(), (*l, count.get(id).copied().unwrap_or(0)));
        }
    }
    let horizon = as_of - UNSEEN_DAYS * DAY;
    for e in registry.entries() {
        let l = last.get(&e.id).copied().flatten();
        let retired = e.retired_at().filter(|(t, _)| t.timestamp() <= as_of);
        if retired.is_none()
            && e.onboarded_at.is_none_or(|t| t.timestamp() <= horizon)
            && l.is_none_or(|l| l <= horizon)
        {
            out.stale.insert(e.id.clone(), l);
        }
        let mut missing = Vec::new();
        if e.owner.is_none() {
            missing.push("owner");
        }
        if e.purpose.is_none() {
            missing.push("purpose");
        }
        if e.expires_at.is_none() {
            missing.push("expires_at");
        }
        if !missing.is_empty() {
            out.incomplete.insert(e.id.clone(), missing);
        }
        if let (Some((r, by)), Some(l)) = (retired, l)
            && l > r.timestamp()
        {
            out.retired_active
                .insert(e.id.clone(), (r.timestamp(), by.to_owned(), l));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_gaps_over_http_and_sql_equal_the_registry_against_the_events() {
    use crate::http::{READ, call, state_of};
    use axum::http::StatusCode;

    let (text, [ghost, unpurposed, expired], events) = planted();
    let registry = Registry::parse(&text, Path::new("registry.toml")).expect("edited registry");
    let want = expected(&registry, &events);
    // Each planted case is there, so no list passes by being empty.
    assert_eq!(want.stale.get(&ghost), Some(&None), "never-seen entry is stale");
    assert!(!want.stale.contains_key("fresh-feed"), "a new entry is not stale yet");
    assert!(want.incomplete.get(&unpurposed).is_some_and(|m| m.contains(&"purpose")));
    assert_eq!(
        want.retired_active.get(&expired).map(|r| r.1.as_str()),
        Some("expires_at"),
        "the expired entry is still active"
    );
    assert!(
        !want.unregistered.is_empty(),
        "the scenario has unregistered identities"
    );

    let engine = Engine::new(
        Detectors::default(),
        Some(registry.clone()),
        baseline::Settings::default(),
    );
    let mut detection = Detection::new(engine, chrono::Duration::minutes(5), false);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut archive = Archive::open(
        dir.path().to_str().expect("utf-8"),
        ArchiveLimits {
            max_rows: 50_000,
            max_age: Duration::from_secs(3600),
        },
    )
    .expect("archive");
    for e in &events {
        archive.append_event(e).expect("append");
        detection.push(e.clone(), &mut |_| {});
    }
    detection.finish(&mut |_| {});
    archive.flush().expect("flush");

    // Over HTTP, from the engine's state.
    let store = Arc::new(nhiwatch::findings::store::FindingStore::in_memory(10));
    let app = state_of(store, detection.engine());
    let (status, _) = call(&app, "GET", "/v1/inventory/gaps", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&app, "GET", "/v1/inventory/gaps?unseen_days=0", Some(READ), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_query"))
    );
    let uri = format!("/v1/inventory/gaps?unseen_days={UNSEEN_DAYS}");
    let (status, g) = call(&app, "GET", &uri, Some(READ), None).await;
    assert_eq!(status, StatusCode::OK, "{g}");
    assert_eq!(secs(g["as_of"].as_str().expect("as_of")), want.as_of);
    let list = |key: &str| g[key].as_array().cloned().unwrap_or_default();
    let opt_secs = |v: &serde_json::Value| v.as_str().map(secs);
    let got: BTreeMap<String, (Option<i64>, u64)> = list("unregistered")
        .iter()
        .map(|u| {
            (
                u["id"].as_str().expect("id").to_owned(),
                (opt_secs(&u["last_seen"]), u["events"].as_u64().expect("events")),
            )
        })
        .collect();
    assert_eq!(got, want.unregistered);
    let got: BTreeMap<String, Option<i64>> = list("stale")
        .iter()
        .map(|s| (s["id"].as_str().expect("id").to_owned(), opt_secs(&s["last_seen"])))
        .collect();
    assert_eq!(got, want.stale);
    let got: BTreeMap<String, Vec<String>> = list("incomplete")
        .iter()
        .map(|i| {
            let missing = i["missing"].as_array().expect("missing");
            (
                i["id"].as_str().expect("id").to_owned(),
                missing.iter().map(|m| m.as_str().expect("key").to_owned()).collect(),
            )
        })
        .collect();
    let want_incomplete: BTreeMap<String, Vec<String>> = want
        .incomplete
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|s| s.to_string()).collect()))
        .collect();
    assert_eq!(got, want_incomplete);
    let got: BTreeMap<String, (i64, String, i64)> = list("retired_active")
        .iter()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_else(|| panic!("{k} in {r}"));
            (
                field("id").to_owned(),
                (
                    secs(field("retired_at")),
                    field("retired_by").to_owned(),
                    secs(field("last_seen")),
                ),
            )
        })
        .collect();
    assert_eq!(got, want.retired_active);

    // The same questions as saved queries over the archive.
    let db = Sql::open(dir.path().to_str().expect("utf-8"), Limits::default())
        .await
        .expect("open");
    db.register_registry(&registry).expect("registry");
    let as_of = ScalarValue::Utf8(Some(
        DateTime::from_timestamp(want.as_of, 0)
            .expect("valid")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    ));
    let days = ScalarValue::Int64(Some(UNSEEN_DAYS));
    let opt = |s: &str| (!s.is_empty()).then(|| secs(s));

    let got: BTreeMap<String, (Option<i64>, u64)> = saved(&db, "inventory_unregistered", &[("as_of", as_of.clone())])
        .await
        .into_iter()
        .map(|r| (r[0].clone(), (opt(&r[1]), r[2].parse().expect("count"))))
        .collect();
    assert_eq!(got, want.unregistered);
    let stale = saved(&db, "inventory_stale", &[("as_of", as_of.clone()), ("days", days)]).await;
    let got: BTreeMap<String, Option<i64>> = stale.iter().map(|r| (r[0].clone(), opt(&r[2]))).collect();
    assert_eq!(got, want.stale);
    let ghost_row = stale.iter().find(|r| r[0] == ghost).expect("ghost row");
    assert_eq!(
        (ghost_row[1].as_str(), ghost_row[3].as_str()),
        ("ghost-owner@example.org", "")
    );
    let got: BTreeMap<String, Vec<String>> = saved(&db, "inventory_incomplete", &[])
        .await
        .into_iter()
        .map(|r| (r[0].clone(), r[1].split(',').map(str::to_owned).collect()))
        .collect();
    assert_eq!(got, want_incomplete);
    let got: BTreeMap<String, (i64, String, i64)> = saved(&db, "inventory_retired_active", &[("as_of", as_of)])
        .await
        .into_iter()
        .map(|r| (r[0].clone(), (secs(&r[2]), r[3].clone(), secs(&r[4]))))
        .collect();
    assert_eq!(got, want.retired_active);
}
