//! The archive and its SQL surface: a generated scenario archived through the engine, then
//! queried; answers checked against what was archived; writes, file access and runaway queries
//! refused.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::common::ScalarValue;
use nhiwatch::archive::{Archive, Limits as ArchiveLimits};
use nhiwatch::baseline;
use nhiwatch::detect::Detectors;
use nhiwatch::engine::{Detection, Engine};
use nhiwatch::event::Event;
use nhiwatch::generate::{Options, generate};
use nhiwatch::registry::Registry;
use nhiwatch::replay::{Answer, Limits, QueryError, Sql};

use crate::support::*;

/// Archives a small scenario into `dir`; returns its events and findings.
fn archive_scenario(dir: &Path) -> (Vec<Event>, Vec<nhiwatch::findings::Finding>) {
    let (events, findings, _) = archive_scenario_with_registry(dir);
    (events, findings)
}

fn scenario() -> nhiwatch::generate::Scenario {
    generate(&Options {
        identities: 16,
        days: 20,
        seed: 9,
        ..Options::default()
    })
}

/// The registry of [`archive_scenario`] as a file's text.
fn registry_text() -> String {
    scenario().registry
}

/// As [`archive_scenario`], with the scenario's registry.
fn archive_scenario_with_registry(dir: &Path) -> (Vec<Event>, Vec<nhiwatch::findings::Finding>, Registry) {
    let scenario = scenario();
    let registry = Registry::parse(&scenario.registry, Path::new("registry.toml")).expect("registry");
    let mut events = normalized(&scenario.records);
    // Small flushes: several files per day partition, as a live run writes them.
    let detection = detect_and_archive(&registry, &mut events, dir, 20_000);
    (events, detection.findings().to_vec(), registry)
}

fn int(answer: &Answer, column: usize, row: usize) -> i64 {
    let mut seen = 0;
    for b in &answer.batches {
        if row < seen + b.num_rows() {
            return b.column(column).as_primitive::<Int64Type>().value(row - seen);
        }
        seen += b.num_rows();
    }
    panic!("no row {row}")
}

async fn sql(dir: &Path, limits: Limits) -> Sql {
    Sql::open(dir.to_str().expect("utf-8"), limits).await.expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_exactly_what_was_archived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (events, findings) = archive_scenario(dir.path());
    let db = sql(dir.path(), Limits::default()).await;
    let none = HashMap::new();

    let a = db.query("SELECT count(*) FROM events", &none).await.expect("count");
    assert_eq!(int(&a, 0, 0), events.len() as i64);

    // Per day: the partitions hold each event on its event day.
    let a = db
        .query("SELECT date, count(*) FROM events GROUP BY date ORDER BY date", &none)
        .await
        .expect("per day");
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for e in &events {
        *expected.entry(e.time.format("%Y-%m-%d").to_string()).or_default() += 1;
    }
    let mut got = BTreeMap::new();
    for b in &a.batches {
        for i in 0..b.num_rows() {
            got.insert(
                b.column(0).as_string::<i32>().value(i).to_owned(),
                b.column(1).as_primitive::<Int64Type>().value(i),
            );
        }
    }
    assert_eq!(got, expected);

    // One identity, one day, with bound parameters (never spliced into the text).
    let who = &events[events.len() / 2];
    let day = who.time.format("%Y-%m-%d").to_string();
    let params = HashMap::from([
        ("who".to_owned(), ScalarValue::Utf8(Some(who.identity.clone()))),
        ("day".to_owned(), ScalarValue::Utf8(Some(day.clone()))),
    ]);
    let a = db
        .query(
            "SELECT count(*), count(DISTINCT event_id) FROM events WHERE identity = $who AND date = $day",
            &params,
        )
        .await
        .expect("one identity one day");
    let theirs: Vec<&Event> = events
        .iter()
        .filter(|e| e.identity == who.identity && e.time.format("%Y-%m-%d").to_string() == day)
        .collect();
    // The archive keeps a record delivered twice (README: in SQL, dedupe by `event_id`).
    let distinct: std::collections::BTreeSet<&str> = theirs.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        (int(&a, 0, 0), int(&a, 1, 0)),
        (theirs.len() as i64, distinct.len() as i64)
    );
    // A parameter holding SQL stays a value.
    let hostile = HashMap::from([("who".to_owned(), ScalarValue::Utf8(Some("x' OR '1'='1".into())))]);
    let a = db
        .query("SELECT count(*) FROM events WHERE identity = $who", &hostile)
        .await
        .expect("bound");
    assert_eq!(int(&a, 0, 0), 0);

    let a = db
        .query("SELECT count(*), sum(count) FROM findings", &none)
        .await
        .expect("findings");
    assert_eq!(int(&a, 0, 0), findings.len() as i64);

    // scope_contains over archived scopes.
    let a = db
        .query(
            "SELECT count(*) FROM (SELECT unnest(scopes) AS s FROM events) WHERE scope_contains('system/*.*', s)",
            &none,
        )
        .await
        .expect("udf");
    let smart: i64 = events
        .iter()
        .flat_map(|e| &e.scopes)
        .filter(|s| s.to_string().starts_with("system/"))
        .count() as i64;
    assert_eq!(int(&a, 0, 0), smart);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_surface_is_read_only_and_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    archive_scenario(dir.path());
    let none = HashMap::new();
    let db = sql(dir.path(), Limits::default()).await;
    let outside = dir.path().join("copied.csv");
    for statement in [
        format!("COPY (SELECT * FROM events) TO '{}'", outside.display()),
        "CREATE EXTERNAL TABLE passwd STORED AS CSV LOCATION '/etc/passwd'".into(),
        "CREATE TABLE t AS SELECT 1".into(),
        "INSERT INTO findings SELECT * FROM findings".into(),
        "DROP TABLE events".into(),
        "SET datafusion.execution.target_partitions = 64".into(),
    ] {
        let e = db.query(&statement, &none).await.expect_err(&statement);
        assert!(matches!(e, QueryError::NotAllowed(_)), "{statement}: {e}");
    }
    assert!(!outside.exists(), "nothing was written");
    let e = db
        .query("SELECT * FROM '/etc/passwd'", &none)
        .await
        .expect_err("file paths are not tables");
    assert!(e.to_string().contains("not found"), "{e}");
    // The tables are still there.
    assert!(db.query("SELECT count(*) FROM events", &none).await.is_ok());

    // Row cap: more rows than allowed are cut and flagged.
    let capped = sql(
        dir.path(),
        Limits {
            max_rows: 7,
            ..Limits::default()
        },
    )
    .await;
    let a = capped
        .query("SELECT event_id FROM events", &none)
        .await
        .expect("capped");
    assert_eq!((a.rows(), a.truncated), (7, true));
    let a = capped
        .query("SELECT event_id FROM events LIMIT 7", &none)
        .await
        .expect("exact");
    assert_eq!((a.rows(), a.truncated), (7, false));

    // Time limit: a runaway cross join is stopped.
    let slow = sql(
        dir.path(),
        Limits {
            timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    )
    .await;
    let e = slow
        .query(
            "SELECT count(*) FROM events a, events b, events c WHERE a.records + b.records = c.records",
            &none,
        )
        .await
        .expect_err("runaway");
    assert!(matches!(e, QueryError::Timeout(_)), "{e}");

    // Memory limit: a query needing more than the pool fails cleanly (no spilling to disk).
    let small = sql(
        dir.path(),
        Limits {
            memory_bytes: 2 << 20,
            ..Limits::default()
        },
    )
    .await;
    let e = small
        .query(
            "SELECT event_id, array_agg(user_agent) FROM events GROUP BY event_id ORDER BY 1",
            &none,
        )
        .await
        .expect_err("over the memory limit");
    assert!(matches!(e, QueryError::Memory(_)), "{e}");
}

#[test]
fn query_command_prints_table_json_and_csv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (events, _) = archive_scenario(dir.path());
    let run = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nhiwatch"))
            .args(["query", "--archive"])
            .arg(dir.path())
            .args([
                "--format",
                format,
                "-p",
                "kind=data_access",
                "SELECT count(*) AS n FROM events WHERE kind = $kind",
            ])
            .output()
            .expect("runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let n = events.iter().filter(|e| e.kind.as_str() == "data_access").count();
    assert!(n > 0);
    assert_eq!(run("json").trim(), format!("{{\"n\":{n}}}"));
    assert_eq!(run("csv"), format!("n\n{n}\n"));
    assert!(run("table").contains(&format!("| {n} ")));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nhiwatch"))
        .args(["query", "--archive"])
        .arg(dir.path())
        .arg("DELETE FROM events")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only queries are allowed"));
}

// ---------------------------------------------------------------- saved queries

/// Rows of an answer as display strings.
fn rows(answer: &Answer) -> Vec<Vec<String>> {
    use datafusion::arrow::util::display::array_value_to_string;
    let mut out = Vec::new();
    for b in &answer.batches {
        for r in 0..b.num_rows() {
            out.push(
                (0..b.num_columns())
                    .map(|c| array_value_to_string(b.column(c), r).expect("displayable"))
                    .collect(),
            );
        }
    }
    out
}

pub async fn saved(db: &Sql, name: &str, params: &[(&str, ScalarValue)]) -> Vec<Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("replay")
        .join(format!("{name}.sql"));
    let text = read(&path);
    assert!(text.starts_with("-- "), "{name}: starts with its header comment");
    assert!(text.contains("-- Parameters:"), "{name}: names its parameters");
    let params: HashMap<String, ScalarValue> = params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    rows(&db.query(&text, &params).await.unwrap_or_else(|e| panic!("{name}: {e}")))
}

fn text(s: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(s.into()))
}

fn is_access(e: &Event) -> bool {
    e.kind.as_str() == "data_access" && e.outcome.as_str() == "success"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_queries_give_the_answers_computed_from_the_events() {
    use std::collections::{BTreeSet, HashSet};
    let dir = tempfile::tempdir().expect("tempdir");
    let (events, findings, registry) = archive_scenario_with_registry(dir.path());
    let db = sql(dir.path(), Limits::default()).await;
    db.register_registry(&registry).expect("registry table");
    let first = events.iter().map(|e| e.time).min().expect("events");
    let last = events.iter().map(|e| e.time).max().expect("events");
    // The second week: a period that cuts through the data.
    let (from, to) = (first + chrono::Duration::days(7), first + chrono::Duration::days(14));
    let rfc = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let period = [("from", text(&rfc(from))), ("to", text(&rfc(to)))];
    let in_period: Vec<&Event> = events.iter().filter(|e| e.time >= from && e.time < to).collect();

    // phi_access: distinct patients, calls, records, resource types per identity.
    /// Distinct patients, calls, records, resource types.
    type Access<'a> = (HashSet<&'a str>, u64, u64, BTreeSet<&'a str>);
    let mut expected: BTreeMap<String, Access> = BTreeMap::new();
    for e in in_period.iter().filter(|e| is_access(e)) {
        let row = expected.entry(e.identity.clone()).or_default();
        row.0.extend(e.patients.iter().map(String::as_str));
        row.1 += 1;
        row.2 += e.records.unwrap_or(0);
        row.3.extend(e.resource_type.as_deref());
    }
    let got = saved(&db, "phi_access", &period).await;
    assert_eq!(got.len(), expected.len());
    for row in &got {
        let (patients, calls, records, types) = &expected[&row[0]];
        let types: Vec<&str> = types.iter().copied().collect();
        assert_eq!(
            row[1..].to_vec(),
            [
                patients.len().to_string(),
                calls.to_string(),
                records.to_string(),
                types.join(",")
            ],
            "{}",
            row[0]
        );
    }

    // top_phi_identities: the same distinct counts, highest first, `$limit` of them.
    let mut top: Vec<(usize, &String)> = expected
        .iter()
        .map(|(k, v)| (v.0.len(), k))
        .filter(|(n, _)| *n > 0)
        .collect();
    top.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let got = saved(
        &db,
        "top_phi_identities",
        &[
            period[0].clone(),
            period[1].clone(),
            ("limit", ScalarValue::Int64(Some(3))),
        ],
    )
    .await;
    let want: Vec<(String, String)> = top.iter().take(3).map(|(n, k)| ((*k).clone(), n.to_string())).collect();
    assert_eq!(
        got.iter().map(|r| (r[0].clone(), r[1].clone())).collect::<Vec<_>>(),
        want
    );

    // dormant_inventory: silent for at least 5 days before the last event.
    let mut last_seen: BTreeMap<&str, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
    for e in &events {
        let t = last_seen.entry(&e.identity).or_insert(e.time);
        *t = (*t).max(e.time);
    }
    let as_of = last;
    let mut dormant: Vec<&str> = last_seen
        .iter()
        .filter(|(_, t)| **t < as_of && (as_of - **t).num_seconds() >= 5 * 86400)
        .map(|(k, _)| *k)
        .collect();
    dormant.sort_by_key(|k| (last_seen[k], *k));
    let got = saved(
        &db,
        "dormant_inventory",
        &[("as_of", text(&rfc(as_of))), ("days", ScalarValue::Int64(Some(5)))],
    )
    .await;
    assert_eq!(got.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), dormant);
    assert!(!dormant.is_empty(), "the scenario has a dormant identity");
    for row in &got {
        let owner = registry
            .resolve(&row[0])
            .and_then(|i| i.owner.clone())
            .unwrap_or_default();
        assert_eq!(row[1], owner);
    }

    // access_after_offboarding: successful events after the registry's retirement date.
    // One row per integration, with every id the sources wrote for it.
    type After = (BTreeSet<String>, usize, chrono::DateTime<chrono::Utc>);
    let mut after: BTreeMap<String, After> = BTreeMap::new();
    for e in events.iter().filter(|e| e.outcome.as_str() == "success") {
        if let Some(i) = registry
            .entries()
            .iter()
            .find(|i| i.id == e.identity || i.aliases.contains(&e.identity))
            && let Some((retired, _)) = i.retired_at()
            && e.time > retired
        {
            let entry = after.entry(i.id.clone()).or_insert((BTreeSet::new(), 0, e.time));
            entry.0.insert(e.source_id().to_owned());
            entry.1 += 1;
            entry.2 = entry.2.min(e.time);
        }
    }
    let got = saved(&db, "access_after_offboarding", &[]).await;
    assert!(!after.is_empty(), "the scenario has access after offboarding");
    assert_eq!(got.len(), after.len());
    for row in &got {
        let (seen_as, n, first_after) = &after[&row[0]];
        assert_eq!(row[1], seen_as.iter().cloned().collect::<Vec<_>>().join(","));
        assert_eq!(row[6], n.to_string());
        assert_eq!(row[4], first_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }

    // findings_by_detector over the whole range.
    let whole = [
        ("from", text(&rfc(first))),
        ("to", text(&rfc(last + chrono::Duration::seconds(1)))),
    ];
    let mut want: BTreeMap<(String, String, String), (usize, u64)> = BTreeMap::new();
    for f in &findings {
        let e = want
            .entry((f.detector.to_string(), f.status.to_string(), f.severity.to_string()))
            .or_default();
        e.0 += 1;
        e.1 += f.count;
    }
    let got = saved(&db, "findings_by_detector", &whole).await;
    let got: BTreeMap<(String, String, String), (usize, u64)> = got
        .iter()
        .map(|r| {
            (
                (r[0].clone(), r[1].clone(), r[2].clone()),
                (r[3].parse().expect("n"), r[4].parse().expect("hits")),
            )
        })
        .collect();
    assert_eq!(got, want);

    // least_privilege: every granted scope with the accesses it covers.
    let mut granted: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in &in_period {
        for s in &e.scopes {
            granted.entry((e.identity.clone(), s.to_string())).or_insert(0);
        }
    }
    for ((who, scope), uses) in granted.iter_mut() {
        let g = nhiwatch::scope::Scope::parse(scope);
        let context = scope.split('/').next().unwrap_or_default();
        *uses = in_period
            .iter()
            .filter(|e| is_access(e) && &e.identity == who)
            .filter_map(|e| {
                let perm = match e.interaction?.as_str() {
                    "read" | "vread" | "history" => "r",
                    "search" => "s",
                    "create" => "c",
                    "update" | "patch" => "u",
                    "delete" => "d",
                    _ => return None,
                };
                Some(format!("{context}/{}.{perm}", e.resource_type.as_deref()?))
            })
            .filter(|used| g.contains(&nhiwatch::scope::Scope::parse(used)))
            .count() as u64;
    }
    let got = saved(&db, "least_privilege", &period).await;
    let got: BTreeMap<(String, String), u64> = got
        .iter()
        .map(|r| ((r[0].clone(), r[1].clone()), r[2].parse().expect("uses")))
        .collect();
    assert_eq!(got, granted);
    assert!(granted.values().any(|&n| n == 0) && granted.values().any(|&n| n > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_answers_queries_and_saved_queries() {
    use crate::http::{READ, call, state};
    use axum::http::StatusCode;
    use serde_json::json;
    let dir = tempfile::tempdir().expect("tempdir");
    let (events, _, registry) = archive_scenario_with_registry(dir.path());
    let registry_file = dir.path().join("registry.toml");
    std::fs::write(&registry_file, registry_text()).expect("registry file");
    assert_eq!(
        Registry::load(&registry_file).expect("registry").entries().len(),
        registry.entries().len()
    );
    let db = nhiwatch::replay::sandbox::Sandbox::new(
        env!("CARGO_BIN_EXE_nhiwatch").into(),
        dir.path().to_str().expect("utf-8"),
        Some(registry_file),
        Limits::default(),
        2,
    );
    let store = std::sync::Arc::new(nhiwatch::findings::store::FindingStore::in_memory(10));
    let without = state(std::sync::Arc::clone(&store));
    let (status, body) = call(
        &without,
        "POST",
        "/v1/query",
        Some(READ),
        Some(json!({"sql": "SELECT 1"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    // Configured, but nothing archived there: "no archive", not an empty answer.
    let empty = dir.path().join("nothing-archived");
    std::fs::create_dir(&empty).expect("empty dir");
    let nowhere = nhiwatch::replay::sandbox::Sandbox::new(
        env!("CARGO_BIN_EXE_nhiwatch").into(),
        empty.to_str().expect("utf-8"),
        None,
        Limits::default(),
        2,
    );
    let at_empty = state(std::sync::Arc::clone(&store)).with_sql(std::sync::Arc::new(nowhere));
    let (status, body) = call(
        &at_empty,
        "POST",
        "/v1/query",
        Some(READ),
        Some(json!({"sql": "SELECT count(*) FROM events"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "no archive at {}: no events/ or findings/ partitions",
            empty.display()
        )),
        "{message}"
    );
    let app = state(store).with_sql(std::sync::Arc::new(db));

    let (status, _) = call(&app, "POST", "/v1/query", None, Some(json!({"sql": "SELECT 1"}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(
        &app,
        "POST",
        "/v1/query",
        Some(READ),
        Some(json!({"sql": "SELECT count(*) AS n FROM events WHERE identity = $who", "params": {"who": events[0].identity}})),
    )
    .await;
    let n = events.iter().filter(|e| e.identity == events[0].identity).count();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"columns": ["n"], "rows": [{"n": n}], "truncated": false}));
    let (status, body) = call(
        &app,
        "POST",
        "/v1/query",
        Some(READ),
        Some(json!({"sql": "DROP TABLE events"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("query_not_allowed"))
    );
    let (status, body) = call(&app, "POST", "/v1/query", Some(READ), Some(json!({"sql": "SELEC 1"}))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_sql"))
    );

    let (status, list) = call(&app, "GET", "/v1/replay/queries", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    // Every saved query checked in under replay/, by name, and nothing else.
    let mut on_disk: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/replay"))
        .expect("replay/")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".sql")?.to_owned())
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    listed.sort();
    assert_eq!(listed, on_disk);
    assert!(names.contains(&"least_privilege"));
    let (status, body) = call(
        &app,
        "POST",
        "/v1/replay/queries/top_phi_identities",
        Some(READ),
        Some(json!({"params": {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z", "limit": 2}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["columns"],
        json!(["identity", "distinct_patients", "patient_references"])
    );
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(2));
    let (status, body) = call(
        &app,
        "POST",
        "/v1/replay/queries/top_phi_identities",
        Some(READ),
        Some(json!({"params": {"from": "2000-01-01T00:00:00Z"}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("needs the parameter to")
    );
    let (status, _) = call(&app, "POST", "/v1/replay/queries/nope", Some(READ), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// An integration writing under its registry id and under an alias is archived as one
/// canonical identity with each source id kept, so `least_privilege` gives it one set of rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integration_seen_under_its_id_and_an_alias_is_archived_as_one_identity() {
    use nhiwatch::event::{EventKind, IdentityType, Interaction, Outcome, SourceFormat};
    use nhiwatch::runtime::{ArchiveFindings, Outputs};
    use nhiwatch::scope::Scope;
    use std::sync::Arc;

    let registry = Registry::parse(
        "[[integration]]\nid = \"lab-feed\"\naliases = [\"0oa-lab\"]\nname = \"Acme lab feed\"\n\
         approved_scopes = [\"system/Observation.rs\"]\n",
        Path::new("registry.toml"),
    )
    .expect("registry");
    let dir = tempfile::tempdir().expect("tempdir");
    let location = dir.path().to_str().expect("utf-8");
    let archive = Archive::open(
        location,
        ArchiveLimits {
            max_rows: 100,
            max_age: Duration::from_secs(3600),
        },
    )
    .expect("archive");
    let mut outputs = Outputs::none()
        .archive(Some(archive), ArchiveFindings::EachChange)
        .store(Arc::new(nhiwatch::findings::store::FindingStore::in_memory(10)))
        .metrics(Arc::new(nhiwatch::telemetry::metrics::Metrics::default()))
        .findings_out(Box::new(std::io::sink()));
    let engine = Engine::new(
        Detectors::default(),
        Some(registry.clone()),
        baseline::Settings::default(),
    );
    let mut detection = Detection::new(engine, chrono::Duration::minutes(5), false);
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z")
        .expect("time")
        .to_utc();
    let event = |n: i64, who: &str, kind: EventKind, interaction: Option<Interaction>, scopes: &[&str]| {
        let mut e = Event::new(
            format!("e{n}"),
            t0 + chrono::Duration::minutes(n),
            SourceFormat::GatewayAccess,
            kind,
            who.into(),
        );
        e.identity_type = IdentityType::Application;
        e.outcome = Outcome::Success;
        e.interaction = interaction;
        e.resource_type = interaction.map(|_| "Observation".into());
        e.scopes = scopes.iter().map(|s| Scope::parse(s)).collect();
        e
    };
    let granted = ["system/Observation.rs", "system/Patient.r"];
    for e in [
        event(0, "lab-feed", EventKind::TokenIssued, None, &granted),
        event(
            1,
            "0oa-lab",
            EventKind::DataAccess,
            Some(Interaction::Read),
            &granted[..1],
        ),
        event(
            2,
            "0oa-lab",
            EventKind::DataAccess,
            Some(Interaction::Search),
            &granted[..1],
        ),
    ] {
        outputs.detect(&mut detection, e);
    }
    detection.finish(&mut |u| outputs.report(u));
    outputs.durable().expect("durable");
    drop(outputs);

    let db = sql(dir.path(), Limits::default()).await;
    let got = rows(
        &db.query(
            "SELECT identity, COALESCE(source_identity, '-'), count(*) FROM events GROUP BY 1, 2 ORDER BY 2",
            &HashMap::new(),
        )
        .await
        .expect("identities"),
    );
    assert_eq!(
        got,
        [["lab-feed", "-", "1"], ["lab-feed", "0oa-lab", "2"]].map(|r| r.map(String::from).to_vec())
    );
    let period = [
        ("from", text("2026-03-02T00:00:00Z")),
        ("to", text("2026-03-03T00:00:00Z")),
    ];
    let got = saved(&db, "least_privilege", &period).await;
    let scope = |s: &str| Scope::parse(s).to_string();
    assert_eq!(
        got,
        [
            vec!["lab-feed".to_owned(), scope("system/Patient.r"), "0".to_owned()],
            vec!["lab-feed".to_owned(), scope("system/Observation.rs"), "2".to_owned()],
        ]
    );

    // A replay of the archive judges the canonical events as the live run judged them.
    let live: Vec<_> = detection.findings().to_vec();
    assert_eq!(
        live.iter()
            .map(|f| (f.detector.as_str(), f.identity.id.as_str()))
            .collect::<Vec<_>>(),
        [("scope_drift", "lab-feed")],
        "the unapproved Patient scope"
    );
    let engine = Engine::new(Detectors::default(), Some(registry), baseline::Settings::default());
    let mut replayed = Detection::new(engine, chrono::Duration::minutes(5), false);
    db.events_in(
        t0 - chrono::Duration::days(1),
        t0 + chrono::Duration::days(1),
        |_, events| {
            for e in events {
                replayed.push(e, &mut |_| {});
            }
            Ok(())
        },
    )
    .await
    .expect("replay");
    replayed.finish(&mut |_| {});
    assert_eq!(replayed.findings(), live.as_slice());
}

/// A Parquet file written before events carried `source_identity` is still read: the column
/// is null there, and a replay gets the events as they were written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_files_without_source_identity_still_read() {
    use datafusion::parquet::arrow::ArrowWriter;
    use nhiwatch::event::{EventKind, SourceFormat};

    let dir = tempfile::tempdir().expect("tempdir");
    let at = chrono::DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z")
        .expect("time")
        .to_utc();
    let events: Vec<Event> = (0..2)
        .map(|n| {
            Event::new(
                format!("e{n}"),
                at + chrono::Duration::minutes(n),
                SourceFormat::Okta,
                EventKind::TokenIssued,
                "0oa-lab".into(),
            )
        })
        .collect();
    let batch = nhiwatch::archive::schema::events_batch(&events).expect("batch");
    let at_column = batch.schema().index_of("source_identity").expect("column");
    let old = batch
        .project(&(0..batch.num_columns()).filter(|&i| i != at_column).collect::<Vec<_>>())
        .expect("older columns");
    let day = dir.path().join("events/date=2026-03-02");
    std::fs::create_dir_all(&day).expect("partition");
    let file = std::fs::File::create(day.join("part-old-000000.parquet")).expect("file");
    let mut writer = ArrowWriter::try_new(file, old.schema(), None).expect("writer");
    writer.write(&old).expect("write");
    writer.close().expect("close");

    let db = sql(dir.path(), Limits::default()).await;
    let got = rows(
        &db.query(
            "SELECT identity, COALESCE(source_identity, '-') FROM events ORDER BY event_id",
            &HashMap::new(),
        )
        .await
        .expect("query"),
    );
    assert_eq!(got, vec![vec!["0oa-lab".to_owned(), "-".to_owned()]; 2]);
    let mut replayed = Vec::new();
    let from = at - chrono::Duration::days(1);
    db.events_in(from, at + chrono::Duration::days(1), |_, e| {
        replayed.extend(e);
        Ok(())
    })
    .await
    .expect("replay");
    assert_eq!(replayed, events);
}

// ---------------------------------------------------------------- live parity

/// A generated scenario through the live path — the embedded Kafka broker, the pipeline, the
/// engine in live mode, the archive — then replayed from the archive: the same findings, ids
/// included.
#[test]
fn a_replay_of_the_archive_reproduces_the_live_findings() {
    use nhiwatch::config::KafkaConfig;
    use nhiwatch::ingest::dead_letter::FileDeadLetter;
    use nhiwatch::kafka;
    use nhiwatch::runtime::{ArchiveFindings, Normalize, Outputs, Runtime, Single};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = generate(&Options {
        identities: 16,
        days: 20,
        seed: 11,
        ..Options::default()
    });
    let registry = Registry::parse(&scenario.registry, Path::new("registry.toml")).expect("registry");
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("broker");
    // One partition, every format on it: Kafka order is the generator's event-time order.
    cluster.create_topic("audit", 1, 1).expect("topic");
    let brokers = cluster.bootstrap_servers();
    let total = scenario.records.len() as u64;
    let consumed = Arc::new(AtomicU64::new(0));
    let producer = {
        let (brokers, consumed) = (brokers.clone(), Arc::clone(&consumed));
        let lines: Vec<(String, String)> = scenario
            .records
            .iter()
            .map(|r| (r.identity.clone(), r.line.clone()))
            .collect();
        std::thread::spawn(move || {
            let p: BaseProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("linger.ms", "5")
                .create()
                .expect("producer");
            for (n, (key, line)) in lines.iter().enumerate() {
                // The mock broker keeps only the last megabytes: stay a window ahead.
                while n as u64 >= consumed.load(Ordering::Acquire) + 2_000 {
                    p.poll(Duration::from_millis(2));
                }
                let mut record = BaseRecord::to("audit").key(key.as_bytes()).payload(line.as_bytes());
                while let Err((_, back)) = p.send(record) {
                    p.poll(Duration::from_millis(5));
                    record = back;
                }
                p.poll(Duration::ZERO);
            }
            p.flush(Duration::from_secs(30)).expect("flush");
        })
    };
    let archive_dir = dir.path().join("archive");
    let location = archive_dir.to_str().expect("utf-8").to_owned();
    let archive = Archive::open(
        &location,
        ArchiveLimits {
            max_rows: 10_000,
            max_age: Duration::from_secs(3600),
        },
    )
    .expect("archive");
    let engine = Engine::new(
        Detectors::default(),
        Some(registry.clone()),
        baseline::Settings::default(),
    );
    let live = Detection::new(engine, chrono::Duration::minutes(5), true);
    let normalize = Normalize::new(
        normalizer(),
        Box::new(FileDeadLetter::open(&dir.path().join("dead.ndjson")).expect("dead letter")),
        nhiwatch::normalize::DEFAULT_MAX_RECORD_BYTES,
    );
    let cfg = KafkaConfig {
        brokers,
        group_id: "parity".into(),
        topics: vec!["audit".into()],
        auto_offset_reset: nhiwatch::kafka::OffsetReset::Earliest,
        instance_id: String::new(),
        properties: Default::default(),
        ..nhiwatch::config::Settings::load(None).expect("defaults").raw.kafka
    };
    // The live path as `run` assembles it: archived under the canonical identity, each
    // change of a finding archived as it happens.
    let outputs = Outputs::none().archive(Some(archive), ArchiveFindings::EachChange);
    let mut pipeline = Runtime::new(normalize, Single::new(live), outputs);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let n = runtime
        .block_on(async {
            let consumer = kafka::subscribe(&cfg, None, Default::default()).expect("consumer");
            kafka::consume(
                &consumer,
                &mut pipeline,
                kafka::Options {
                    limit: Some(total),
                    progress: Some(&consumed),
                    ..kafka::Options::default()
                },
                tokio::time::sleep(Duration::from_secs(300)),
            )
            .await
        })
        .expect("consumed");
    producer.join().expect("producer");
    assert_eq!(n, total);
    pipeline.finish();
    assert!(!pipeline.outputs.archive_failed());
    pipeline
        .outputs
        .archive
        .as_mut()
        .expect("archive")
        .flush()
        .expect("flush");
    let live = pipeline.judge.detection;
    assert_eq!(live.late(), 0);
    let live_findings = live.findings().to_vec();
    assert!(live_findings.len() >= 10, "{} findings", live_findings.len());

    // Replay from the archive alone, offline.
    let engine = Engine::new(Detectors::default(), Some(registry), baseline::Settings::default());
    let mut replayed = Detection::new(engine, chrono::Duration::minutes(5), false);
    let events = runtime.block_on(async {
        let db = sql(&archive_dir, Limits::default()).await;
        let from = chrono::DateTime::from_timestamp(0, 0).expect("epoch");
        let to = chrono::DateTime::from_timestamp(4_000_000_000, 0).expect("far");
        db.events_in(from, to, |_, events| {
            for e in events {
                replayed.push(e, &mut |_| {});
            }
            Ok(())
        })
        .await
        .expect("replay")
    });
    replayed.finish(&mut |_| {});
    assert_eq!(events, pipeline.normalize.stats().events);
    let strip = |fs: &[nhiwatch::findings::Finding]| -> Vec<nhiwatch::findings::Finding> {
        let mut v: Vec<_> = fs
            .iter()
            .map(|f| nhiwatch::findings::Finding {
                // The live run stamps the wall clock; everything else must agree.
                detected_at: chrono::DateTime::from_timestamp(0, 0).expect("epoch"),
                ..f.clone()
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    };
    assert_eq!(strip(replayed.findings()), strip(&live_findings));
}

/// `nhiwatch query --saved NAME` runs the compiled-in query from any directory: its answer is
/// the answer of the checked-in file under `replay/` (the file the saved query is, run with
/// `--file`); `--list` names every file there with the parameters its header declares; a
/// missing or unknown parameter, or an unknown name, is refused before anything runs.
#[test]
fn saved_queries_run_by_name_from_the_command_line() {
    use std::process::Command;
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("archive");
    archive_scenario(&archive);
    let replay_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("replay");
    let query = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_nhiwatch"))
            .current_dir(dir.path())
            .arg("query")
            .arg("--archive")
            .arg(&archive)
            .args(["--format", "csv"])
            .args(args)
            .output()
            .expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let params = [
        "-p",
        "from=2000-01-01T00:00:00Z",
        "-p",
        "to=2100-01-01T00:00:00Z",
        "-p",
        "limit=5",
    ];
    let file = replay_dir.join("top_phi_identities.sql");
    let (ok, by_file, err) = query(&[&["--file", file.to_str().expect("utf-8")][..], &params[..]].concat());
    assert!(ok, "{err}");
    let (ok, by_name, err) = query(&[&["--saved", "top_phi_identities"][..], &params[..]].concat());
    assert!(ok, "{err}");
    assert_eq!(by_name, by_file);
    assert_eq!(by_name.lines().count(), 6, "a header and five identities: {by_name}");

    let (ok, _, err) = query(&["--saved", "top_phi_identities", "-p", "from=2000-01-01T00:00:00Z"]);
    assert!(!ok);
    assert!(
        err.contains("top_phi_identities needs the parameter to (it takes from, to, limit)"),
        "{err}"
    );
    let (ok, _, err) = query(&["--saved", "access_after_offboarding", "-p", "who=x"]);
    assert!(!ok);
    assert!(err.contains("access_after_offboarding has no parameter who"), "{err}");
    let (ok, _, err) = query(&["--saved", "least_privlege"]);
    assert!(!ok);
    assert!(
        err.contains("no saved query least_privlege (`nhiwatch query --list` shows them)"),
        "{err}"
    );

    let list = Command::new(env!("CARGO_BIN_EXE_nhiwatch"))
        .args(["query", "--list"])
        .output()
        .expect("runs");
    assert!(list.status.success());
    let list = String::from_utf8_lossy(&list.stdout);
    let mut files = 0;
    for entry in std::fs::read_dir(&replay_dir).expect("replay/").flatten() {
        let name = entry.file_name().into_string().expect("utf-8");
        let Some(name) = name.strip_suffix(".sql") else {
            continue;
        };
        files += 1;
        let text = std::fs::read_to_string(entry.path()).expect("sql");
        // The parameters as the file's header declares them, each once, in order of mention.
        let mut declared: Vec<String> = Vec::new();
        for name in text
            .lines()
            .filter_map(|l| l.strip_prefix("-- Parameters:"))
            .flat_map(|p| p.split('$').skip(1))
            .map(|t| {
                t.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
        {
            if !declared.contains(&name) {
                declared.push(name);
            }
        }
        let line = list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed: {list}"));
        let listed: Vec<&str> = line.split_whitespace().filter_map(|w| w.strip_suffix("=…")).collect();
        assert_eq!(listed, declared, "{name}");
    }
    assert_eq!(list.lines().filter(|l| !l.starts_with(' ')).count(), files);
}

/// `nhiwatch replay --compare` over the whole archived period reproduces the live findings
/// (exit 0); over a later sub-period, whose baselines start cold, it exits 1 and says what
/// differs — each finding with its severity, detector, identity and times, as archived — and
/// why (before, bare ids).
#[test]
fn replay_compare_explains_what_differs() {
    use std::process::Command;
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("archive");
    let (events, live) = archive_scenario(&archive);
    let registry_file = dir.path().join("registry.toml");
    std::fs::write(&registry_file, registry_text()).expect("registry file");
    let first = events.iter().map(|e| e.time).min().expect("events").date_naive();
    let last = events.iter().map(|e| e.time).max().expect("events").date_naive();
    let compare = |from: chrono::NaiveDate| {
        let out = Command::new(env!("CARGO_BIN_EXE_nhiwatch"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["replay", "--compare", "--output"])
            .arg(dir.path().join("replayed.ndjson"))
            .arg("--archive")
            .arg(&archive)
            .arg("--registry")
            .arg(&registry_file)
            .args([
                "--from",
                &from.to_string(),
                "--to",
                &last.succ_opt().expect("day").to_string(),
            ])
            .output()
            .expect("runs");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = compare(first);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "compared with {} findings archived live: {} identical, 0 only in the replay, 0 only live, 0 different",
            live.len(),
            live.len()
        )),
        "{err}"
    );

    let (code, err) = compare(first + chrono::Duration::days(10));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("note: the replay starts with empty baselines at --from"),
        "{err}"
    );
    let mut described = 0;
    for line in err.lines() {
        let Some(rest) = line
            .strip_prefix("  only live: ")
            .or_else(|| line.strip_prefix("  only in the replay: "))
            .or_else(|| line.strip_prefix("  different: "))
        else {
            continue;
        };
        let id = rest.split_whitespace().next().expect("an id");
        if line.starts_with("  only in the replay") {
            continue;
        }
        let f = live.iter().find(|f| f.id == id).expect("a live finding");
        assert_eq!(
            rest,
            format!(
                "{} {} {} on {}, {} event(s) {} to {}",
                f.id,
                f.severity,
                f.detector,
                f.identity.id,
                f.count,
                f.event_time.to_rfc3339(),
                f.last_event_time.to_rfc3339()
            )
        );
        described += 1;
    }
    assert!(described > 0, "no live finding described: {err}");
}
