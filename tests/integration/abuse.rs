//! The abuse cases of issue 19 against the SQL surface, kept as regression tests: each probe is
//! sent as a read-token holder would send it (through the API, or `nhiwatch query`), and each
//! must be answered with its own error while the service goes on answering.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use nhiwatch::findings::store::FindingStore;
use nhiwatch::http::{AppState, router};
use nhiwatch::replay::sandbox::Sandbox;
use nhiwatch::replay::{Limits, QueryError};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::http::{READ, state};

/// A sandbox over an empty archive in `dir` (the probes need no data: `generate_series` makes
/// rows), with small limits.
fn sandbox(dir: &std::path::Path, limits: Limits, concurrency: usize) -> Sandbox {
    empty_archive(dir);
    Sandbox::new(
        env!("CARGO_BIN_EXE_nhiwatch").into(),
        dir.to_str().expect("utf-8"),
        None,
        limits,
        concurrency,
    )
}

/// An archive with nothing in it yet, as the service's writer creates it.
fn empty_archive(dir: &std::path::Path) {
    for table in ["events", "findings"] {
        std::fs::create_dir_all(dir.join(table)).expect("table directory");
    }
}

fn small() -> Limits {
    Limits {
        timeout: Duration::from_secs(3),
        memory_bytes: 256 << 20,
        max_rows: 1000,
    }
}

/// The API with `sandbox`, taking bodies of 16 KiB as the default configuration does.
fn app(sandbox: Sandbox) -> AppState {
    let mut app = state(Arc::new(FindingStore::in_memory(10)));
    app.limits.max_body = 16 << 10;
    app.with_sql(Arc::new(sandbox))
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn code(&self) -> (StatusCode, String) {
        (
            self.status,
            self.json()["error"]["code"]
                .as_str()
                .unwrap_or("<no error code>")
                .to_owned(),
        )
    }
}

async fn post(app: &AppState, sql: &str, accept: &str) -> Answer {
    let request = Request::builder()
        .method("POST")
        .uri("/v1/query")
        .header(header::AUTHORIZATION, format!("Bearer {READ}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, accept)
        .body(Body::from(json!({ "sql": sql }).to_string()))
        .expect("request");
    let response = router(app.clone()).oneshot(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    Answer { status, headers, body }
}

async fn query(app: &AppState, sql: &str) -> Answer {
    post(app, sql, "application/json").await
}

/// The service still answers queries.
async fn alive(app: &AppState) {
    let a = query(app, "SELECT 41 + 1 AS n").await;
    assert_eq!(a.status, StatusCode::OK, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["rows"], json!([{"n": 42}]));
}

/// Query processes of this test process still running (nextest runs each test in a process of
/// its own, so these are this test's).
fn running_workers() -> usize {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            let p = e.path();
            let status = std::fs::read_to_string(p.join("status")).unwrap_or_default();
            let parent = status.lines().find_map(|l| l.strip_prefix("PPid:")).map(str::trim);
            let cmdline = std::fs::read(p.join("cmdline")).unwrap_or_default();
            parent == Some(me.as_str()) && String::from_utf8_lossy(&cmdline).contains("query-worker")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_expressions_are_refused_before_planning_and_the_service_answers_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(sandbox(dir.path(), small(), 2));
    // Issue 19's probe: ~600 terms in a 1.2 KB body overflowed a runtime thread's stack.
    let sum = format!("SELECT {}", vec!["1"; 600].join("+"));
    let a = query(&app, &sum).await;
    assert_eq!(a.code(), (StatusCode::BAD_REQUEST, "query_too_complex".into()));
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nested more than 256")
    );
    // 100k OR terms do not fit a 16 KiB body: a 413, not a crash.
    let ors = format!("SELECT * FROM events WHERE {}", vec!["x = 1"; 100_000].join(" OR "));
    assert_eq!(query(&app, &ors).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Parentheses nested past DataFusion's parser limit (50): its own error; deeper still,
    // past the gate's token count.
    let nested = |n: usize| format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n));
    let a = query(&app, &nested(2000)).await;
    assert_eq!(a.code(), (StatusCode::BAD_REQUEST, "bad_sql".into()));
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("RecursionLimitExceeded")
    );
    let a = query(&app, &nested(5000)).await;
    assert_eq!(a.code(), (StatusCode::BAD_REQUEST, "query_too_complex".into()));
    alive(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_beyond_the_query_memory_stop_the_query_process_not_the_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Time enough that the memory limit is what stops them, even in a debug build.
    let limits = Limits {
        timeout: Duration::from_secs(30),
        ..small()
    };
    let app = app(sandbox(dir.path(), limits, 2));
    for sql in [
        // Issue 19's probes: an 80 GB allocation aborted the service; a 2 GB string went past
        // the memory pool (7.9 GB peak under a 256 MiB limit).
        "SELECT cardinality(array_repeat(array_repeat(1, 100000), 100000))",
        "SELECT length(repeat('a', 2000000000))",
        // A regular expression whose output passes 2 GB panicked and dropped the connection.
        "SELECT length(regexp_replace(repeat('a', 3000000), 'a', repeat('b', 1000), 'g'))",
    ] {
        let a = query(&app, sql).await;
        assert_eq!(
            a.code(),
            (StatusCode::UNPROCESSABLE_ENTITY, "query_memory".into()),
            "{sql}: {}",
            String::from_utf8_lossy(&a.body)
        );
    }
    assert_eq!(running_workers(), 0);
    alive(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_time_is_stopped_and_answered_query_timeout_not_408() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(sandbox(dir.path(), small(), 2));
    // The HTTP timer of the test state is 5 s; the query's 3 s limit is what the client sees.
    assert!(app.limits.query_timeout > small().timeout);
    let a = query(
        &app,
        "SELECT count(*) FROM generate_series(1, 1000000000000) ORDER BY 1",
    )
    .await;
    assert_eq!(a.code(), (StatusCode::UNPROCESSABLE_ENTITY, "query_timeout".into()));
    // Stopped, not left burning CPU: its process is gone.
    assert_eq!(running_workers(), 0);
    alive(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_beyond_the_concurrency_are_told_to_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(sandbox(dir.path(), small(), 1));
    let slow = {
        let app = app.clone();
        tokio::spawn(async move { query(&app, "SELECT count(*) FROM generate_series(1, 1000000000000)").await })
    };
    // Wait (bounded) until the slow query's process runs.
    for _ in 0..200 {
        if running_workers() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(running_workers(), 1);
    let a = query(&app, "SELECT 1").await;
    assert_eq!(a.code(), (StatusCode::TOO_MANY_REQUESTS, "too_many_queries".into()));
    assert_eq!(
        a.headers.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert_eq!(
        slow.await.expect("slow query").code(),
        (StatusCode::UNPROCESSABLE_ENTITY, "query_timeout".into())
    );
    alive(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_answers_its_plan_and_csv_carries_list_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app(sandbox(dir.path(), small(), 2));
    // EXPLAIN answered DataFusion's "internal error … bug" text.
    let a = query(&app, "EXPLAIN SELECT identity, count(*) FROM events GROUP BY identity").await;
    assert_eq!(a.status, StatusCode::OK, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["columns"], json!(["plan_type", "plan"]));
    let plans: Vec<&str> = a.json()["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["plan_type"].as_str())
        .map(|s| {
            if s.starts_with("logical") {
                "logical_plan"
            } else {
                "physical_plan"
            }
        })
        .collect();
    assert_eq!(plans, ["logical_plan", "physical_plan"]);
    // No rows: an empty list, and the JSON is whole.
    let a = query(&app, "SELECT 1 AS n WHERE false").await;
    assert_eq!(a.json(), json!({"columns": ["n"], "rows": [], "truncated": false}));
    // A list column in CSV was a 500.
    let a = post(
        &app,
        "SELECT 'x' AS id, make_array('system/Patient.read', 'a,b\"c') AS scopes",
        "text/csv",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", String::from_utf8_lossy(&a.body));
    let mut csv = csv::Reader::from_reader(a.body.as_slice());
    assert_eq!(
        csv.headers().expect("header").iter().collect::<Vec<_>>(),
        ["id", "scopes"]
    );
    let row = csv.records().next().expect("a row").expect("csv");
    assert_eq!(&row[0], "x");
    // The list as JSON text in its cell (RFC 4180 quoting around it).
    assert_eq!(
        serde_json::from_str::<Value>(&row[1]).expect("JSON list"),
        json!(["system/Patient.read", "a,b\"c"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_answers_like_the_in_process_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = sandbox(dir.path(), small(), 2);
    let params = BTreeMap::from([("n".to_owned(), json!(7)), ("who".to_owned(), json!("svc-a"))]);
    let a = s
        .query(
            "SELECT $n * 6 AS answer, $who AS who FROM generate_series(1, 2000)",
            &params,
        )
        .await
        .expect("answer");
    // Capped at max_rows, and said so.
    assert_eq!((a.rows(), a.truncated), (1000, true));
    assert_eq!(
        a.schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(),
        ["answer", "who"]
    );
    let e = s
        .query("DROP TABLE events", &BTreeMap::new())
        .await
        .expect_err("refused");
    assert!(matches!(e, QueryError::NotAllowed(_)), "{e}");
    let e = s
        .query("SELECT nope FROM events", &BTreeMap::new())
        .await
        .expect_err("invalid");
    assert!(matches!(e, QueryError::Invalid(ref m) if m.contains("nope")), "{e}");
}

#[test]
fn the_query_command_answers_every_probe_with_an_error_and_exits_cleanly() {
    use std::os::unix::process::ExitStatusExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("nhiwatch.toml");
    std::fs::write(
        &config,
        "[archive]\nquery_timeout_seconds = 3\nquery_memory_bytes = 268435456\n",
    )
    .expect("config");
    empty_archive(&dir.path().join("archive"));
    let run = |sql: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nhiwatch"))
            .args(["query", "--config"])
            .arg(&config)
            .arg("--archive")
            .arg(dir.path().join("archive"))
            .arg(sql)
            .output()
            .expect("runs");
        // Ended by itself (no signal: no stack overflow, no abort), with an error.
        assert_eq!(out.status.signal(), None, "{sql}");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // 3,000 terms killed `nhiwatch query` with a stack overflow.
    let (code, err) = run(&format!("SELECT {}", vec!["1"; 3000].join("+")));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("the query is too complex: expressions nested more than 256"),
        "{err}"
    );
    let (code, err) = run("SELECT length(repeat('a', 2000000000))");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("it needed more than archive.query_memory_bytes (256 MiB) and was stopped"),
        "{err}"
    );
    let (code, err) = run("SELECT count(*) FROM generate_series(1, 1000000000000)");
    assert_eq!(code, Some(1));
    assert!(err.contains("the query ran longer than 3s and was stopped"), "{err}");
    // A value from a record (an identity with a newline, ESC and a bidi override) cannot forge
    // table rows or drive the terminal: one row, escaped.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nhiwatch"))
        .args(["query", "--config"])
        .arg(&config)
        .arg("--archive")
        .arg(dir.path().join("archive"))
        .arg(
            "SELECT 'etl' || chr(10) || '| forged |' || chr(27) || '[31m' || chr(8238) AS who, make_array(chr(7)) AS l",
        )
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        !table.chars().any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
        "{table:?}"
    );
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[3].contains(r"etl\n| forged |\u{1b}[31m\u{202e}"), "{table}");
}

/// SQL-shaped text from SQL's own pieces, in any order, through the query process: every one is
/// answered — rows or a refusal — and none ends any other way.
#[test]
fn any_sql_shaped_text_gets_an_answer_from_the_query_process() {
    use proptest::prelude::*;
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let s = sandbox(dir.path(), small(), 2);
    let pieces = vec![
        "SELECT",
        "FROM",
        "WHERE",
        "GROUP BY",
        "ORDER BY",
        "(",
        ")",
        "1",
        "'a'",
        "+",
        "OR",
        "AND",
        "NOT",
        ",",
        "events",
        "findings",
        "identity",
        "time",
        "count(*)",
        "IN",
        "CASE",
        "WHEN",
        "THEN",
        "END",
        "EXPLAIN",
        "repeat('x', 3)",
        "make_array(1, 2)",
        "generate_series(1, 3)",
        "UNION ALL",
        "JOIN",
        "ON",
        "$p",
        "NULL",
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(prop::sample::select(pieces), 1..40), |parts| {
            let sql = parts.join(" ");
            let params = BTreeMap::from([("p".to_owned(), json!(1))]);
            match runtime.block_on(s.query(&sql, &params)) {
                Ok(_)
                | Err(
                    QueryError::Invalid(_)
                    | QueryError::NotAllowed(_)
                    | QueryError::TooComplex(_)
                    | QueryError::Memory(_)
                    | QueryError::Timeout(_),
                ) => Ok(()),
                Err(other) => Err(TestCaseError::fail(format!("{sql}: {other:?}"))),
            }
        })
        .expect("every query answered");
}
