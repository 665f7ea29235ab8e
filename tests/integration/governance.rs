//! Governance: the inventory gaps over HTTP and as saved queries, on a generated scenario whose
//! registry is edited to hold one case of each gap; both answers equal what the test computes
//! from the events and the registry.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, Utc};
use datafusion::common::ScalarValue;
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
    let events = normalized(&scenario.records);
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

    let (text, [ghost, unpurposed, expired], mut events) = planted();
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

    let dir = tempfile::tempdir().expect("tempdir");
    let detection = detect_and_archive(&registry, &mut events, dir.path(), 50_000);

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

/// The Monday starting the week of `t`, `YYYY-MM-DD`.
fn monday(t: DateTime<Utc>) -> String {
    use chrono::Datelike;
    (t.date_naive() - chrono::Duration::days(i64::from(t.weekday().num_days_from_monday()))).to_string()
}

/// `nhiwatch attest` over the planted scenario's archive: its JSON equals what the test computes
/// from the events and the registry; its HTML renders in headless Chromium with a section, a
/// chart and the right numbers per integration; its CSV has a row per integration.
#[test]
fn the_attestation_report_equals_the_events_and_renders_in_chromium() {
    use std::collections::BTreeSet;
    use std::process::Command;

    let (text, [ghost, unpurposed, expired], mut events) = planted();
    let registry = Registry::parse(&text, Path::new("registry.toml")).expect("edited registry");
    let dir = tempfile::tempdir().expect("tempdir");
    let archive_dir = dir.path().join("archive");
    let detection = detect_and_archive(&registry, &mut events, &archive_dir, 50_000);
    let registry_file = dir.path().join("registry.toml");
    std::fs::write(&registry_file, &text).expect("registry file");

    // The default end is the end of the newest archived day; the period is the 14 days before.
    let newest = events.iter().map(|e| e.time).max().expect("events");
    let to = newest.date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc() + chrono::Duration::days(1);
    let from = to - chrono::Duration::days(14);
    let attest = |format: &str, out: &Path| {
        let run = Command::new(env!("CARGO_BIN_EXE_nhiwatch"))
            .args(["attest", "--period", "14d", "--format", format, "--registry"])
            .arg(&registry_file)
            .arg("--archive")
            .arg(&archive_dir)
            .arg("--out")
            .arg(out)
            .output()
            .expect("runs");
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    };
    let json_file = dir.path().join("report.json");
    attest("json", &json_file);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_file).expect("report")).expect("JSON");
    assert_eq!(secs(report["from"].as_str().expect("from")), from.timestamp());
    assert_eq!(secs(report["to"].as_str().expect("to")), to.timestamp());

    // Expectations from the events, the plain way.
    let in_period = |e: &&Event| e.time >= from && e.time < to;
    let canonical = |e: &Event| registry.resolve(&e.identity).map(|r| r.id.clone());
    #[derive(Default, Debug, PartialEq)]
    struct Want {
        events: u64,
        last_use: Option<i64>,
        patients: BTreeSet<String>,
        weekly: BTreeMap<String, BTreeSet<String>>,
        granted: BTreeSet<String>,
        findings: BTreeSet<String>,
    }
    let mut want: BTreeMap<String, Want> = registry
        .entries()
        .iter()
        .map(|e| (e.id.clone(), Want::default()))
        .collect();
    let mut strangers: BTreeMap<String, u64> = BTreeMap::new();
    for e in events.iter().filter(|e| is_activity(e)) {
        let Some(id) = canonical(e) else {
            if in_period(&e) && e.identity_type.is_non_human() {
                *strangers.entry(e.identity.clone()).or_default() += 1;
            }
            continue;
        };
        let w = want.get_mut(&id).expect("registered");
        if e.time < to {
            w.last_use = w.last_use.max(Some(e.time.timestamp()));
        }
        if !in_period(&e) {
            continue;
        }
        w.events += 1;
        w.granted.extend(e.scopes.iter().map(|s| s.to_string()));
        if e.kind.as_str() == "data_access" {
            w.patients.extend(e.patients.iter().cloned());
            w.weekly
                .entry(monday(e.time))
                .or_default()
                .extend(e.patients.iter().cloned());
        }
    }
    for f in detection.findings() {
        if f.event_time >= from && f.event_time < to {
            want.get_mut(&f.identity.id).map(|w| w.findings.insert(f.id.clone()));
        }
    }
    let weeks: Vec<String> = {
        let mut w = vec![monday(from)];
        while let Some(next) = chrono::NaiveDate::parse_from_str(w.last().expect("week"), "%Y-%m-%d")
            .ok()
            .map(|d| d + chrono::Duration::days(7))
            .filter(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc() < to)
        {
            w.push(next.to_string());
        }
        w
    };

    let integrations = report["integrations"].as_array().expect("integrations");
    assert_eq!(integrations.len(), registry.entries().len());
    let mut busiest = (0, String::new());
    let mut unjudged = 0;
    for a in integrations {
        let id = a["id"].as_str().expect("id");
        let w = &want[id];
        let entry = registry.resolve(id).expect("entry");
        assert_eq!(a["events"].as_u64(), Some(w.events), "{id} events");
        assert_eq!(a["last_use"].as_str().map(secs), w.last_use, "{id} last use");
        assert_eq!(a["patients"].as_u64(), Some(w.patients.len() as u64), "{id} patients");
        let weekly: Vec<(String, u64)> = a["weekly_patients"]
            .as_array()
            .expect("weeks")
            .iter()
            .map(|x| {
                (
                    x["week"].as_str().expect("week").to_owned(),
                    x["patients"].as_u64().expect("n"),
                )
            })
            .collect();
        let expected_weeks: Vec<(String, u64)> = weeks
            .iter()
            .map(|wk| (wk.clone(), w.weekly.get(wk).map_or(0, |s| s.len() as u64)))
            .collect();
        assert_eq!(weekly, expected_weeks, "{id} patients per week");
        let scopes = a["scopes"].as_array().expect("scopes");
        let approved: Vec<&str> = scopes
            .iter()
            .filter(|s| s["approved"] == true)
            .map(|s| s["scope"].as_str().expect("scope"))
            .collect();
        let registered: Vec<String> = entry.approved_scopes.iter().map(|s| s.to_string()).collect();
        assert_eq!(approved, registered, "{id} approved scopes");
        let outside = |judged: bool| -> BTreeSet<&str> {
            scopes
                .iter()
                .filter(|s| s["approved"] == false && s["judged"] == judged)
                .map(|s| s["scope"].as_str().expect("scope"))
                .collect()
        };
        // README ("Identity registry", "Attestation"): SMART scopes are compared by
        // containment; opaque ones (an Entra `<resource>/.default`) only when the entry lists
        // an opaque scope.
        let opaque_listed = entry.approved_scopes.iter().any(|s| s.as_smart().is_none());
        let (mut want_judged, mut want_unjudged) = (BTreeSet::new(), BTreeSet::new());
        for g in &w.granted {
            let scope = nhiwatch::scope::Scope::parse(g);
            if entry.approved_scopes.iter().any(|s| s.contains(&scope)) {
                continue;
            }
            if scope.as_smart().is_some() || opaque_listed {
                want_judged.insert(g.as_str());
            } else {
                want_unjudged.insert(g.as_str());
            }
        }
        assert_eq!(outside(true), want_judged, "{id} scopes outside approval");
        assert_eq!(outside(false), want_unjudged, "{id} scopes granted, not judged");
        unjudged += want_unjudged.len();
        let findings: BTreeSet<String> = a["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .map(|f| f["id"].as_str().expect("id").to_owned())
            .collect();
        assert_eq!(findings, w.findings, "{id} findings");
        if w.patients.len() > busiest.0 {
            busiest = (w.patients.len(), id.to_owned());
        }
    }
    assert!(
        unjudged > 0,
        "the scenario grants opaque scopes (Entra `.default`) to SMART-approved integrations"
    );
    let attention = |id: &str| -> Vec<(String, bool)> {
        let a = integrations.iter().find(|a| a["id"] == id).expect("integration");
        a["attention"]
            .as_array()
            .expect("attention")
            .iter()
            .map(|t| (t["text"].as_str().expect("text").to_owned(), t["serious"] == true))
            .collect()
    };
    assert!(attention(&ghost).contains(&("no activity in the period".into(), false)));
    assert!(
        attention("fresh-feed")
            .iter()
            .any(|(t, serious)| !serious && t.starts_with("not used since onboarding")),
        "{:?}",
        attention("fresh-feed")
    );
    assert!(attention(&unpurposed).contains(&("no purpose on record".into(), false)));
    assert!(
        attention(&expired)
            .iter()
            .any(|(t, serious)| *serious && t.starts_with("active after its expires_at")),
        "{:?}",
        attention(&expired)
    );
    let got_strangers: BTreeMap<String, u64> = report["unregistered"]
        .as_array()
        .expect("unregistered")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().expect("id").to_owned(),
                s["events"].as_u64().expect("events"),
            )
        })
        .collect();
    assert_eq!(got_strangers, strangers);
    assert!(!strangers.is_empty(), "the scenario has unregistered identities");

    // CSV: a header and one row per integration, with the same numbers.
    let csv_file = dir.path().join("report.csv");
    attest("csv", &csv_file);
    let csv = std::fs::read_to_string(&csv_file).expect("csv");
    let mut lines = csv.lines();
    assert!(lines.next().expect("header").starts_with("id,name,owner,purpose,"));
    assert_eq!(lines.count(), registry.entries().len());

    // HTML in a real browser: no script, no fetch; a section and a chart per integration.
    let html_file = dir.path().join("report.html");
    attest("html", &html_file);
    let html = std::fs::read_to_string(&html_file).expect("html");
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("url("));
    let url = format!("file://{}", html_file.display());
    let dom = String::from_utf8_lossy(&crate::support::chromium(&url, &["--dump-dom"]).stdout).into_owned();
    let n = registry.entries().len();
    assert_eq!(dom.matches("<section class=\"integration\"").count(), n);
    assert_eq!(dom.matches("<svg class=\"chart\"").count(), n);
    assert!(dom.contains(&format!("id=\"count-integrations\">{n}<")));
    assert!(dom.contains(&format!("id=\"count-unregistered\">{}<", strangers.len())));
    let noun = if strangers.len() == 1 { "identity" } else { "identities" };
    assert!(
        dom.contains(&format!(
            "id=\"count-unregistered\">{}</b> unregistered {noun} active",
            strangers.len()
        )),
        "{noun}"
    );
    let serious = integrations
        .iter()
        .filter(|a| {
            a["attention"]
                .as_array()
                .is_some_and(|t| t.iter().any(|x| x["serious"] == true))
        })
        .count();
    assert!(serious >= 1, "the expired-but-active integration is serious");
    assert!(dom.contains(&format!("id=\"count-serious\">{serious}<")));
    // The busiest integration's chart has a bar per week with its distinct patients.
    let section = {
        let start = dom.find(&format!("id=\"i-{}\"", busiest.1)).expect("busiest section");
        let end = dom[start..].find("</section>").expect("section end") + start;
        &dom[start..end]
    };
    for wk in &weeks {
        let p = want[&busiest.1].weekly.get(wk).map_or(0, |s| s.len());
        assert!(
            section.contains(&format!("data-week=\"{wk}\" data-patients=\"{p}\"")),
            "week {wk}: {p} patients"
        );
    }
    assert!(
        dom.contains("class=\"tag serious\">active after its expires_at"),
        "the expired-but-active integration is flagged"
    );
    // The summary table leads with what is serious: the integrations active after their
    // expiry or offboarding (the planted one among them) are the first rows, every
    // integration with a serious item comes before any with housekeeping only, and those
    // before the ones with nothing to look at.
    let table = {
        let start = dom.find("id=\"summary-table\"").expect("summary table");
        &dom[start..start + dom[start..].find("</table>").expect("table end")]
    };
    let rows: Vec<&str> = table
        .split("<tr data-id=\"")
        .skip(1)
        .map(|r| r.split('"').next().expect("id"))
        .collect();
    assert_eq!(rows.len(), n);
    let retired = |id: &str| {
        attention(id)
            .iter()
            .any(|(t, serious)| *serious && t.starts_with("active after"))
    };
    let leading = rows.iter().take_while(|id| retired(id)).count();
    assert!(rows[..leading].contains(&expired.as_str()), "{rows:?}");
    assert!(!rows[leading..].iter().any(|id| retired(id)), "{rows:?}");
    let class = |id: &str| {
        let items = attention(id);
        match (items.iter().any(|(_, serious)| *serious), items.is_empty()) {
            (true, _) => 0,
            (false, false) => 1,
            (false, true) => 2,
        }
    };
    let classes: Vec<u8> = rows.iter().map(|id| class(id)).collect();
    assert!(
        classes.is_sorted(),
        "{:?}",
        rows.iter().zip(&classes).collect::<Vec<_>>()
    );
    assert!(dom.contains(&format!(
        "id=\"count-hygiene\">{}<",
        classes.iter().filter(|c| **c == 1).count()
    )));
    // A 14-day period ending at midnight after the newest day: its first and last weeks are
    // cut unless it starts on a Monday; each week's bar says how many of its days count.
    for wk in &weeks {
        let monday = chrono::NaiveDate::parse_from_str(wk, "%Y-%m-%d")
            .expect("week")
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc();
        let days = (0..7)
            .filter(|d| {
                let day = monday + chrono::Duration::days(*d);
                day >= from && day < to
            })
            .count();
        assert!(section.contains(&format!("data-week=\"{wk}\"")));
        // This week's bar alone: from its data-week to the end of its rect.
        let bar = &section[section.find(&format!("data-week=\"{wk}\"")).expect("bar")..];
        let bar = &bar[..bar.find("</rect>").expect("rect end")];
        assert!(bar.contains(&format!("data-days=\"{days}\"")), "week {wk}: {days} days");
        assert_eq!(bar.contains("partial week"), days < 7, "week {wk}");
    }
    assert!(dom.contains("Reviewed by") && dom.contains("Signature"));
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("nhiwatch-attest.png");
    crate::support::chromium(&url, &[&format!("--screenshot={}", shot.display())]);
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "screenshot written"
    );
    eprintln!("attestation report screenshot: {}", shot.display());
}
