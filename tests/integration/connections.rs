//! The API over real sockets, as a client (or an attacker) meets it: connection caps, the header
//! and idle timeouts, a 413 that does not wait for the body, and `ApiError`'s JSON for every
//! error the router's layers answer. Servers listen on 127.0.0.1; every loopback address
//! (127.0.0.2, 127.0.0.3, ...) is a client address of its own. Every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nhiwatch::findings::store::FindingStore;
use nhiwatch::findings::{DetectorId, Severity};
use nhiwatch::http::{AppState, ConnectionLimits, serve};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::http::{READ, finding, state};

/// Longest wait for anything the server should do; far longer than any timeout configured
/// below that the test waits for, far shorter than any it must not reach.
const WAIT: Duration = Duration::from_secs(20);

fn limits(max: usize, per_ip: usize, header_read: Duration, idle: Duration) -> ConnectionLimits {
    ConnectionLimits {
        max,
        max_unauthenticated_per_ip: per_ip,
        header_read_timeout: header_read,
        idle_timeout: idle,
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// The API (bodies up to 512 bytes) on a free port of 127.0.0.1, with `request_timeout`.
async fn start(limits: ConnectionLimits, request_timeout: Duration) -> (SocketAddr, AppState) {
    let mut app = state(Arc::new(FindingStore::in_memory(100)));
    app.limits.timeout = request_timeout;
    let (addr, _task) = serve("127.0.0.1:0", app.clone(), limits).await.expect("serves");
    (addr, app)
}

/// A connection to `server` from the loopback address `source`.
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("address"))
        .expect("bind");
    tokio::time::timeout(WAIT, socket.connect(server))
        .await
        .expect("connected in time")
        .expect("connects")
}

/// One HTTP response as read off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Asserts `status` with an `ApiError` body of `code` and a message.
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(body["error"]["code"].as_str(), Some(code), "{self:?}");
        assert!(
            body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{self:?}"
        );
    }
}

/// Reads one response (a `Content-Length` or chunked body); `None` when the server closed the
/// connection before answering.
async fn read_answer(stream: &mut TcpStream) -> Option<Answer> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("an answer in time")
        {
            Ok(0) | Err(_) if bytes.is_empty() => return None,
            Ok(0) | Err(_) => panic!("closed mid-answer: {}", String::from_utf8_lossy(&bytes)),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = bytes[head_end..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let complete = |body: &[u8]| match length {
        Some(n) => body.len() >= n,
        None => !chunked || body.ends_with(b"0\r\n\r\n"),
    };
    while !complete(&body) {
        match tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("the body in time")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let body = if chunked { dechunk(&body) } else { body };
    Some(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..i]).trim(), 16).unwrap_or(0);
        if size == 0 || raw.len() < i + 2 + size {
            break;
        }
        out.extend_from_slice(&raw[i + 2..i + 2 + size]);
        raw = &raw[(i + 4 + size).min(raw.len())..];
    }
    out
}

/// Sends `request` whole and reads the answer.
async fn exchange(stream: &mut TcpStream, request: &str) -> Option<Answer> {
    stream.write_all(request.as_bytes()).await.ok()?;
    read_answer(stream).await
}

fn get(path: &str, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!("GET {path} HTTP/1.1\r\nHost: nhiwatch\r\n{auth}\r\n")
}

/// `GET /healthz` on a new connection from `source`.
async fn probe(source: &str, server: SocketAddr) -> Option<Answer> {
    let mut stream = connect_from(source, server).await;
    exchange(&mut stream, &get("/healthz", None)).await
}

/// Whether the server closes the connection (with no answer) within `WAIT`.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(n)) => panic!("unexpected bytes: {}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_and_a_silent_connection_are_closed_after_the_header_timeout() {
    let (addr, _) = start(limits(100, 0, Duration::from_millis(500), MINUTE), MINUTE).await;
    // One byte every 100 ms of a head that never ends: a slowloris.
    let mut slow = connect_from("127.0.0.1", addr).await;
    let head = b"GET /healthz HTTP/1.1\r\nHost: nhiwatch\r\nX-Slow: ";
    let mut closed = false;
    for i in 0..200 {
        let byte = head.get(i).copied().unwrap_or(b'a');
        if slow.write_all(&[byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => panic!("an answer to half a head: {}", String::from_utf8_lossy(&buf[..n])),
            Err(_) => {}
        }
    }
    assert!(closed, "the slow head was still open after 20 s");
    let mut silent = connect_from("127.0.0.1", addr).await;
    assert!(closed_by_server(&mut silent).await, "a connection that sends nothing");
    // The server itself is fine.
    assert_eq!(probe("127.0.0.1", addr).await.map(|a| a.status), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_reused_then_closed_after_the_idle_timeout() {
    // The header timeout is a minute: a close within `WAIT` is the idle timeout's.
    let (addr, _) = start(limits(100, 0, MINUTE, Duration::from_millis(500)), MINUTE).await;
    let mut stream = connect_from("127.0.0.1", addr).await;
    for _ in 0..3 {
        let answer = exchange(&mut stream, &get("/healthz", None)).await.expect("answered");
        assert_eq!((answer.status, answer.body.as_str()), (200, r#"{"status":"ok"}"#));
    }
    assert!(
        closed_by_server(&mut stream).await,
        "idle kept-alive connection still open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_findings_stream_outlives_both_timeouts() {
    let short = Duration::from_millis(300);
    let (addr, app) = start(limits(100, 0, short, short), MINUTE).await;
    let mut stream = connect_from("127.0.0.1", addr).await;
    stream
        .write_all(get("/v1/findings/stream", Some(READ)).as_bytes())
        .await
        .expect("request sent");
    let mut text = String::new();
    let mut chunk = [0u8; 4096];
    while !text.contains("\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("head in time")
            .expect("read");
        assert!(n > 0, "closed before the stream's head: {text}");
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("content-type: text/event-stream"),
        "{text}"
    );
    // Ten times both timeouts with nothing to send (the keep-alive comment is every 15 s).
    tokio::time::sleep(short * 10).await;
    app.store
        .upsert(finding(40, DetectorId::PhiVolume, Severity::High))
        .expect("stored");
    while !(text.contains("event: new") && text.contains("finding 40")) {
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("the event in time")
            .expect("read");
        assert!(n > 0, "the stream was closed: {text}");
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_over_its_share_is_refused_and_a_token_frees_a_slot() {
    let (addr, _) = start(limits(100, 4, MINUTE, MINUTE), MINUTE).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from("127.0.0.1", addr).await);
    }
    let mut fifth = connect_from("127.0.0.1", addr).await;
    let refused = read_answer(&mut fifth).await.expect("an answer before the close");
    refused.assert_error(429, "too_many_connections");
    assert!(closed_by_server(&mut fifth).await);
    // Another address has its own share.
    let other = probe("127.0.0.2", addr).await.expect("answered");
    assert_eq!(other.status, 200);
    // A valid token on one held connection takes it out of the count.
    let answer = exchange(&mut held[0], &get("/v1/findings", Some(READ)))
        .await
        .expect("answered");
    assert_eq!(answer.status, 200, "{answer:?}");
    let mut freed = connect_from("127.0.0.1", addr).await;
    let answer = exchange(&mut freed, &get("/healthz", None)).await.expect("answered");
    assert_eq!(answer.status, 200);
    // `freed` stays open without a token: the share is full again.
    let answer = probe("127.0.0.1", addr).await.expect("answered");
    answer.assert_error(429, "too_many_connections");
    // A wrong token does not count as one.
    let answer = exchange(&mut held[1], &get("/v1/findings", Some("not-a-token")))
        .await
        .expect("answered");
    answer.assert_error(401, "unauthorized");
    probe("127.0.0.1", addr)
        .await
        .expect("answered")
        .assert_error(429, "too_many_connections");
}

/// `name`'s value in the Prometheus text `metrics`.
fn metric(metrics: &str, name: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_cap_do_not_keep_health_probes_out() {
    const CAP: usize = 16;
    const IDLE: usize = 2000;
    // No per-address cap: every connection, probes too, comes from 127.0.0.1.
    let (addr, _) = start(limits(CAP, 0, MINUTE, MINUTE), MINUTE).await;
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(connect_from("127.0.0.1", addr).await);
    }
    for _ in 0..20 {
        let answer = probe("127.0.0.1", addr).await.expect("a probe is answered");
        assert_eq!((answer.status, answer.body.as_str()), (200, r#"{"status":"ok"}"#));
    }
    // The longest idle were closed to make room, in order.
    for (i, stream) in idle.iter_mut().take(IDLE - 100).enumerate() {
        assert!(closed_by_server(stream).await, "idle connection {i} is still open");
    }
    // The server holds no more than its cap once the connections it closed are gone (they
    // close as soon as their tasks run; the probes' as soon as the server reads their end).
    let mut client = connect_from("127.0.0.2", addr).await;
    let mut metrics = String::new();
    for _ in 0..100 {
        let answer = exchange(&mut client, &get("/metrics", Some(READ)))
            .await
            .expect("answered");
        assert_eq!(answer.status, 200);
        metrics = answer.body;
        if metric(&metrics, "nhiwatch_http_connections") <= CAP as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metric(&metrics, "nhiwatch_http_connections") <= CAP as i64, "{metrics}");
    assert!(
        metric(&metrics, "nhiwatch_http_connections_evicted_total") >= (IDLE - CAP) as i64,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_with_every_connection_busy_a_new_one_is_answered_503() {
    let (addr, _) = start(limits(2, 0, MINUTE, MINUTE), MINUTE).await;
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from("127.0.0.1", addr).await;
        stream
            .write_all(get("/v1/findings/stream", Some(READ)).as_bytes())
            .await
            .expect("sent");
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("the stream's head in time")
            .expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        streams.push(stream);
    }
    probe("127.0.0.2", addr)
        .await
        .expect("an answer before the close")
        .assert_error(503, "unavailable");
    // Once a stream ends, there is room again.
    drop(streams.pop());
    let mut answered = None;
    for _ in 0..100 {
        match probe("127.0.0.2", addr).await {
            Some(a) if a.status == 200 => {
                answered = Some(a);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(answered.is_some(), "no room after a stream ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_answered_413_in_json_without_waiting_for_it() {
    // A request timeout of a minute: a 408 could only come after `WAIT`; a 413 is at once.
    let (addr, _) = start(limits(100, 0, MINUTE, MINUTE), MINUTE).await;
    let post = |path: &str, headers: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: nhiwatch\r\nAuthorization: Bearer {READ}\r\n\
             Content-Type: application/json\r\n{headers}\r\n{body}"
        )
    };
    // A Content-Length of 100 MB, and no body sent.
    let mut stream = connect_from("127.0.0.1", addr).await;
    let answer = exchange(&mut stream, &post("/v1/query", "Content-Length: 100000000\r\n", ""))
        .await
        .expect("answered");
    answer.assert_error(413, "payload_too_large");
    assert_eq!(
        answer.json()["error"]["message"],
        "the request body is larger than 512 bytes"
    );
    // The body sent whole with its length.
    let big = format!(r#"{{"sql": "SELECT 1 -- {}"}}"#, "x".repeat(2000));
    let mut stream = connect_from("127.0.0.1", addr).await;
    let headers = format!("Content-Length: {}\r\n", big.len());
    exchange(&mut stream, &post("/v1/replay/queries/phi_access", &headers, &big))
        .await
        .expect("answered")
        .assert_error(413, "payload_too_large");
    // Chunked, so that only reading it finds it too large.
    let chunked = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let mut stream = connect_from("127.0.0.1", addr).await;
    exchange(
        &mut stream,
        &post("/v1/query", "Transfer-Encoding: chunked\r\n", &chunked),
    )
    .await
    .expect("answered")
    .assert_error(413, "payload_too_large");
    // Within the limit the endpoint answers for itself (a read token may not change a status).
    let small = r#"{"status": "resolved", "reason": "fixed"}"#;
    let mut stream = connect_from("127.0.0.1", addr).await;
    let headers = format!("Content-Length: {}\r\n", small.len());
    exchange(&mut stream, &post("/v1/findings/x/status", &headers, small))
        .await
        .expect("answered")
        .assert_error(403, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_the_router_makes_is_api_error_json() {
    let (addr, _) = start(limits(100, 0, MINUTE, MINUTE), Duration::from_secs(1)).await;
    let send = |request: String| async move {
        let mut stream = connect_from("127.0.0.1", addr).await;
        exchange(&mut stream, &request).await.expect("answered")
    };
    send(get("/nope", None)).await.assert_error(404, "not_found");
    let answer = send("DELETE /healthz HTTP/1.1\r\nHost: nhiwatch\r\n\r\n".into()).await;
    answer.assert_error(405, "method_not_allowed");
    assert!(answer.header("allow").is_some_and(|a| a.contains("GET")), "{answer:?}");
    // A path that is not UTF-8: the extractor's plain-text rejection, as JSON.
    let answer = send(get("/v1/findings/%FF", Some(READ))).await;
    answer.assert_error(400, "bad_request");
    // A body that never arrives: the request timeout (1 s here).
    let answer = send(format!(
        "POST /v1/query HTTP/1.1\r\nHost: nhiwatch\r\nAuthorization: Bearer {READ}\r\n\
         Content-Length: 100\r\n\r\n{{\"sql\""
    ))
    .await;
    answer.assert_error(408, "timeout");
    assert_eq!(answer.json()["error"]["message"], "the request took longer than 1 s");
    // The handlers' own errors are unchanged.
    send(get("/v1/findings", None)).await.assert_error(401, "unauthorized");
    send(get("/v1/findings?limit=0", Some(READ)))
        .await
        .assert_error(400, "bad_query");
}
