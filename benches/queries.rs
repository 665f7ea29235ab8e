//! `/healthz` while heavy SQL runs (issue 19): does the service keep answering?
//!
//! `cargo bench --bench queries` serves the API on 127.0.0.1 with SQL over an empty archive (the
//! heavy queries make their own rows) and probes `GET /healthz` every 10 ms on a keep-alive
//! connection from a plain thread: first with nothing else running (the peer), then while four
//! heavy queries are sent at once — with the default `archive.query_concurrency` of 2 (two run,
//! two are answered 429) and with 4 (all four run, each in its own process with two threads, on a
//! 2-core machine). Each query is stopped at a 10 s limit. Prints p50/p99/max of the probes and
//! how the queries were answered. Reported, never asserted on.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use nhiwatch::baseline;
use nhiwatch::config::Settings;
use nhiwatch::detect::Detectors;
use nhiwatch::engine::Engine;
use nhiwatch::findings::store::FindingStore;
use nhiwatch::http::AppState;
use nhiwatch::http::auth::Auth;
use nhiwatch::replay::Limits;
use nhiwatch::replay::sandbox::Sandbox;
use nhiwatch::telemetry::metrics::Metrics;

const TOKEN: &str = "benchmark-read-token";

/// Heavy in CPU (a sort of a billion rows) and in memory (a cross join that grows until the
/// limit), as an analyst's mistake or a hostile token would send them.
const HEAVY: [&str; 4] = [
    "SELECT x FROM generate_series(1, 1000000000) AS t(x) ORDER BY x DESC LIMIT 5",
    "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b WHERE a.value + b.value = 7",
    "SELECT a.value, b.value FROM generate_series(1, 30000) a, generate_series(1, 30000) b ORDER BY a.value * b.value DESC LIMIT 3",
    "SELECT length(string_agg(repeat('x', 1000), ',')) FROM generate_series(1, 10000000)",
];

/// One keep-alive HTTP/1.1 connection.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    addr: SocketAddr,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connects");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        Client {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
            addr,
        }
    }

    /// Sends one request; returns the status and body.
    fn send(&mut self, method: &str, path: &str, body: Option<&str>) -> (u16, Vec<u8>) {
        let body = body.unwrap_or("");
        write!(
            self.writer,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("writes");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut rest = vec![0; length];
        self.reader.read_exact(&mut rest).expect("body");
        (status, rest)
    }
}

/// Probes `/healthz` every 10 ms until `stop`; the histogram of latencies in microseconds.
fn probe(addr: SocketAddr, stop: &AtomicBool) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let mut client = Client::connect(addr);
    while !stop.load(Ordering::Acquire) {
        let t = Instant::now();
        assert_eq!(client.send("GET", "/healthz", None).0, 200);
        h.record(t.elapsed().as_micros() as u64).expect("recorded");
        std::thread::sleep(Duration::from_millis(10));
    }
    h
}

fn report(what: &str, h: &Histogram<u64>) {
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "  {what:<44} probes {:>5}  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    );
}

fn serve(runtime: &tokio::runtime::Runtime, archive: &std::path::Path, concurrency: usize) -> SocketAddr {
    let settings = Settings::load_with_env(None, &[]).expect("defaults");
    let engine = Engine::new(Detectors::default(), None, baseline::Settings::default());
    let state = AppState::new(
        &engine,
        Arc::new(FindingStore::in_memory(10)),
        Auth::new(&settings.raw.http, Some(TOKEN), None),
        &settings.raw.http,
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(true)),
    )
    .with_sql(Arc::new(Sandbox::new(
        env!("CARGO_BIN_EXE_nhiwatch").into(),
        archive.to_str().expect("utf-8"),
        None,
        Limits {
            timeout: Duration::from_secs(10),
            memory_bytes: 2 << 30,
            max_rows: 100_000,
        },
        concurrency,
    )));
    let (addr, _task) = runtime
        .block_on(nhiwatch::http::serve(
            "127.0.0.1:0",
            state,
            nhiwatch::http::ConnectionLimits::from_config(&settings.raw.http),
        ))
        .expect("serves");
    addr
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let archive = std::env::temp_dir().join(format!("nhiwatch-bench-queries-{}", std::process::id()));
    // The service's API runtime: two workers, as `run` builds it on two cores.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("GET /healthz every 10 ms on a keep-alive connection (2 cores; queries stopped at 10 s):");
    for concurrency in [2, 4] {
        let addr = serve(&runtime, &archive, concurrency);
        let stop = AtomicBool::new(false);
        let idle = std::thread::scope(|s| {
            let p = s.spawn(|| probe(addr, &stop));
            std::thread::sleep(Duration::from_secs(3));
            stop.store(true, Ordering::Release);
            p.join().expect("prober")
        });
        stop.store(false, Ordering::Release);
        let started = Instant::now();
        let (loaded, answers) = std::thread::scope(|s| {
            let p = s.spawn(|| probe(addr, &stop));
            let queries: Vec<_> = HEAVY
                .iter()
                .map(|sql| {
                    s.spawn(move || {
                        let body = serde_json::json!({ "sql": sql }).to_string();
                        let (status, answer) = Client::connect(addr).send("POST", "/v1/query", Some(&body));
                        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
                        match answer["error"]["code"].as_str() {
                            Some(code) => format!("{status} {code}"),
                            None => status.to_string(),
                        }
                    })
                })
                .collect();
            let answers: Vec<String> = queries.into_iter().map(|q| q.join().expect("query")).collect();
            stop.store(true, Ordering::Release);
            (p.join().expect("prober"), answers)
        });
        println!("archive.query_concurrency = {concurrency}:");
        report("alone (peer, same run)", &idle);
        report(
            &format!("4 heavy queries ({:.1} s)", started.elapsed().as_secs_f64()),
            &loaded,
        );
        println!("    answered: {}", answers.join(", "));
    }
    let _ = std::fs::remove_dir_all(&archive);
}
