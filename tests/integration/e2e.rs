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
