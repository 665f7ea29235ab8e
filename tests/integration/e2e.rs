//! End to end: the real binary's `demo` (embedded Kafka broker, engine, HTTP API), read over
//! HTTP while it streams, and its dashboard rendered by headless Chromium (Debian's `chromium`,
//! installed by `.ci/run`). Everything listens on 127.0.0.1 and every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running `nhiwatch demo`, killed when dropped.
struct Demo {
    child: Child,
    addr: String,
    token: String,
    admin: String,
    lines: mpsc::Receiver<String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// Starts a demo and waits (at most 60 s) for its API address and read token.
    fn start(args: &[&str]) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nhiwatch"))
            .args(["demo", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("demo starts");
        let stdout = child.stdout.take();
        let (tx, lines) = mpsc::channel();
        // From here the guard kills and reaps the child, whatever happens.
        let mut demo = Demo {
            child,
            addr: String::new(),
            token: String::new(),
            admin: String::new(),
            lines,
        };
        let stdout = stdout.expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = demo
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the demo prints its API address within 60 s");
            if let Some(rest) = line.strip_prefix("HTTP API on http://") {
                demo.addr = rest.split('/').next().expect("address").to_owned();
                demo.token = rest
                    .split("read token ")
                    .nth(1)
                    .and_then(|t| t.split(',').next())
                    .expect("read token")
                    .to_owned();
                demo.admin = rest
                    .split("admin token ")
                    .nth(1)
                    .and_then(|t| t.split_whitespace().next())
                    .expect("admin token")
                    .to_owned();
                return demo;
            }
        }
    }

    /// Waits (bounded) for a line of the demo's output that starts with `prefix`.
    fn wait_for_line(&self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no line starting with {prefix:?} within {within:?}"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }
}

/// The JSON body of a GET with the bearer token (the whole answer read).
fn get_json(addr: &str, path: &str, token: &str) -> serde_json::Value {
    let mut text = String::new();
    get(addr, path, token).read_to_string(&mut text).expect("answer");
    let body = text.split("\r\n\r\n").nth(1).expect("a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The JSON answer of a POST of `body` with the bearer token.
fn post_json(addr: &str, path: &str, token: &str, body: &serde_json::Value) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let body = body.to_string();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("answer");
    let body = text.split("\r\n\r\n").nth(1).expect("a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Opens a GET with the bearer token; returns the connected stream after the request is sent.
fn get(addr: &str, path: &str, token: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    s
}

#[test]
fn the_demo_streams_new_findings_over_sse_while_it_runs() {
    // Paced so the stream lasts several seconds after the API is up.
    let demo = Demo::start(&[
        "--identities",
        "12",
        "--days",
        "45",
        "--rate",
        "4000",
        "--serve-for",
        "0",
    ]);
    let mut stream = get(&demo.addr, "/v1/findings/stream", &demo.token);
    let mut reader = BufReader::new(&mut stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_new = None;
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if line.trim() == "event: new" {
            line.clear();
            reader.read_line(&mut line).expect("data line");
            seen_new = Some(line.clone());
            break;
        }
    }
    let data = seen_new.expect("a new finding arrived on the stream within 60 s");
    let json: serde_json::Value =
        serde_json::from_str(data.trim().trim_start_matches("data:").trim()).expect("finding JSON");
    assert!(
        json["detector"].is_string() && json["identity"]["id"].is_string(),
        "{json}"
    );

    // And the list endpoint has it too.
    let mut list = String::new();
    get(&demo.addr, "/v1/findings?limit=5", &demo.token)
        .read_to_string(&mut list)
        .expect("response");
    assert!(list.starts_with("HTTP/1.1 200"), "{list}");
    assert!(list.contains(json["id"].as_str().expect("id")), "{list}");
}

#[test]
fn the_dashboard_renders_findings_and_the_inventory_in_chromium() {
    let demo = Demo::start(&["--identities", "12", "--days", "45", "--serve-for", "120"]);
    demo.wait_for_line("Serving http://", Duration::from_secs(120));
    let url = format!("http://{}/#token={}", demo.addr, demo.token);
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nhiwatch-dashboard.png");
    let out = crate::support::chromium(&url, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&out.stdout);
    let finding_rows = dom.matches("class=\"clickable finding\"").count();
    assert!(finding_rows >= 11, "findings table rows: {finding_rows}\n{dom}");
    for detector in [
        "break_glass",
        "phi_volume",
        "access_after_offboarding",
        "credential_sharing",
    ] {
        assert!(dom.contains(&format!("<td>{detector}</td>")), "{detector} row missing");
    }
    assert!(dom.contains("class=\"clickable identity"), "inventory rows missing");
    assert!(
        dom.contains("tag-unregistered"),
        "the unregistered identity is highlighted"
    );
    assert!(
        dom.contains("data-severity=\"critical\">1<"),
        "one critical finding in the summary"
    );
    crate::support::chromium(&url, &[&format!("--screenshot={}", shot.display())]);
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "screenshot written"
    );
    eprintln!("dashboard screenshot: {}", shot.display());
}

/// Triage in a real browser, with real clicks (DevTools protocol): the findings table is most
/// severe first, as the API's `sort=severity` orders them; a click opens the finding in a side
/// panel with a deep link, its owner and controls as the API gives them and analysis values
/// without JSON quotes; with an admin token, a reason typed and "Resolve" clicked resolve it —
/// the panel, the table and the API say so, with the reason and who; Escape closes the panel;
/// `#identity=` opens an identity.
#[test]
fn an_analyst_triages_a_finding_in_the_dashboard() {
    use crate::browser::Browser;
    let demo = Demo::start(&["--identities", "12", "--days", "45", "--serve-for", "120"]);
    demo.wait_for_line("Serving http://", Duration::from_secs(120));
    let mut b = Browser::open(&format!("http://{}/#token={}", demo.addr, demo.admin));
    b.wait_for(
        "document.querySelectorAll('tr.finding').length >= 11",
        Duration::from_secs(30),
    );

    let rows = b.eval(
        "[...document.querySelectorAll('tr.finding')].map(r => [r.dataset.id, r.children[1].textContent.trim()])",
    );
    let rows: Vec<(String, String)> = serde_json::from_value(rows).expect("rows");
    let rank = |s: &str| {
        ["info", "low", "medium", "high", "critical"]
            .iter()
            .position(|x| *x == s)
            .expect("severity")
    };
    assert!(
        rows.windows(2).all(|w| rank(&w[0].1) >= rank(&w[1].1)),
        "most severe first: {rows:?}"
    );
    assert_eq!(rows[0].1, "critical", "the one critical finding leads");
    let api = get_json(&demo.addr, "/v1/findings?sort=severity&limit=100", &demo.token);
    let api_ids: Vec<&str> = api["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|f| f["id"].as_str().expect("id"))
        .collect();
    assert_eq!(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), api_ids);

    // Open the first finding with a click.
    let id = rows[0].0.clone();
    b.click("tr.finding");
    b.wait_for(
        "!document.getElementById('panel').hidden && document.getElementById('detail-status')",
        Duration::from_secs(10),
    );
    let finding = get_json(&demo.addr, &format!("/v1/findings/{id}"), &demo.token);
    assert_eq!(b.eval("location.hash"), format!("#finding={id}"));
    assert_eq!(
        b.eval("document.getElementById('detail-title').textContent"),
        finding["title"]
    );
    let owner = finding["identity"]["owner"].as_str().unwrap_or("none on record");
    assert_eq!(b.eval("document.getElementById('detail-owner').textContent"), owner);
    let controls = b.eval("document.getElementById('detail-controls').textContent");
    for c in finding["controls"].as_array().expect("controls") {
        assert!(
            controls.as_str().expect("text").contains(c["id"].as_str().expect("id")),
            "{c} in {controls}"
        );
    }
    // The evidence's events as the archive holds them (the demo archives its run), asked here
    // with SQL of the test's own.
    b.wait_for(
        "document.getElementById('evidence-note').textContent.startsWith('Details from the archive')",
        Duration::from_secs(20),
    );
    let shown = b.eval(
        "[...document.querySelectorAll('#evidence tr[data-event]')].map(tr => [tr.dataset.event, tr.querySelector('.ev-resource').textContent, tr.querySelector('.ev-ip').textContent])",
    );
    let shown: Vec<(String, String, String)> = serde_json::from_value(shown).expect("evidence rows");
    assert!(!shown.is_empty(), "the finding has evidence");
    let archived = post_json(
        &demo.addr,
        "/v1/query",
        &demo.token,
        &serde_json::json!({"sql": "SELECT event_id, resource_type, src_ip FROM events WHERE identity = $who", "params": {"who": finding["identity"]["id"]}}),
    );
    for (event, resource, ip) in &shown {
        let row = archived["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["event_id"] == event.as_str())
            .unwrap_or_else(|| panic!("{event} archived"));
        assert_eq!(resource, row["resource_type"].as_str().unwrap_or("—"), "{event}");
        assert_eq!(ip, row["src_ip"].as_str().unwrap_or("—"), "{event}");
    }
    // The live feed opens with the latest findings raised, newest first, each a link.
    let newest = get_json(&demo.addr, "/v1/findings?limit=1", &demo.token);
    assert_eq!(
        b.eval("document.querySelector('#feed li a').getAttribute('href')"),
        format!("#finding={}", newest["items"][0]["id"].as_str().expect("id"))
    );
    let cells = b.eval("[...document.querySelectorAll('#detail table:first-of-type td')].map(td => td.textContent)");
    assert!(
        cells
            .as_array()
            .expect("cells")
            .iter()
            .all(|c| !c.as_str().expect("text").starts_with('"')),
        "analysis values in JSON quotes: {cells}"
    );

    // Resolve it: a reason typed, the button clicked.
    b.click("#reason");
    b.type_text("planned bulk export, confirmed with the owner");
    b.click("#actions button[data-status=resolved]");
    b.wait_for(
        "document.getElementById('detail-status').textContent === 'resolved'",
        Duration::from_secs(10),
    );
    b.wait_for(
        &format!("document.querySelector('tr.finding[data-id=\"{id}\"] td.status').textContent === 'resolved'"),
        Duration::from_secs(10),
    );
    let after = get_json(&demo.addr, &format!("/v1/findings/{id}"), &demo.token);
    assert_eq!(after["status"], "resolved");
    let change = after["status_history"]
        .as_array()
        .and_then(|h| h.last())
        .expect("a change");
    assert_eq!(change["reason"], "planned bulk export, confirmed with the owner");
    assert_eq!(change["status"], "resolved");
    assert!(
        b.eval("document.getElementById('history').textContent")
            .as_str()
            .expect("text")
            .contains("planned bulk export"),
        "the panel shows the recorded change"
    );
    b.wait_for(
        "document.getElementById('evidence-note').textContent.startsWith('Details from the archive')",
        Duration::from_secs(20),
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nhiwatch-triage.png");
    b.screenshot(&shot);
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "screenshot written"
    );
    eprintln!("triage screenshot: {}", shot.display());

    // Escape closes the panel and the link with it; a deep link opens an identity.
    b.key("Escape", 27);
    b.wait_for(
        "document.getElementById('panel').hidden && location.hash === ''",
        Duration::from_secs(5),
    );
    let who = finding["identity"]["id"].as_str().expect("identity");
    b.eval(&format!("location.hash = 'identity=' + encodeURIComponent({who:?})"));
    b.wait_for(
        "!document.getElementById('panel').hidden && document.getElementById('panel').dataset.kind === 'identity'",
        Duration::from_secs(10),
    );
    assert_eq!(b.eval("document.getElementById('panel').dataset.id"), who);
    assert!(b.console_errors().is_empty(), "{:?}", b.console_errors());
}
