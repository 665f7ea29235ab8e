//! The HTTP API under load while ingest runs, measured side by side in one run.
//!
//! `cargo bench --bench api` stores 100,000 findings, serves the API on 127.0.0.1, and times the
//! same ingest work (normalize + engine over a generated scenario) twice: alone, and while `wrk`
//! (Debian's package) drives `GET /v1/findings` with a read token. It prints wrk's requests/s and
//! latency quantiles and the ingest rate in both runs, with their ratio (target ≥ 0.9). The load
//! is bounded by the ingest run's duration.
//!
//! `cargo bench --bench api -- idle-connections` instead measures `GET /healthz` (a new connection
//! per probe, from 127.0.0.2) while 20,000 idle connections are opened and held against the
//! server by two child processes (10,000 each: the open-file hard limit is 20,000 per process),
//! first all from one address, then from 334 addresses of at most 60 (under the per-address cap, so the
//! connection cap and its eviction do the work). The server runs the default `[http]` limits but
//! with header and idle timeouts of 10 minutes, so that nothing idle is closed by a deadline
//! during the measurement.
#![allow(clippy::print_stdout)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use chrono::DateTime;
use nhiwatch::baseline;
use nhiwatch::config::Settings;
use nhiwatch::detect::Detectors;
use nhiwatch::engine::Engine;
use nhiwatch::findings::store::FindingStore;
use nhiwatch::findings::{Confidence, DetectorId, Finding, IdentityRef, Severity, Status};
use nhiwatch::generate::{Options, generate};
use nhiwatch::http::auth::Auth;
use nhiwatch::http::{AppState, ConnectionLimits};
use nhiwatch::normalize::{DEFAULT_MAX_RECORD_BYTES, Normalizer, Pseudonymizer, RecordMeta};
use nhiwatch::registry::Registry;
use nhiwatch::telemetry::metrics::Metrics;

const TOKEN: &str = "benchmark-read-token";

fn finding(n: u64) -> Finding {
    let t = DateTime::from_timestamp(1_767_571_200 + n as i64 * 30, 0).expect("valid");
    Finding {
        id: format!("{n:032x}"),
        detector: DetectorId::ALL[n as usize % DetectorId::ALL.len()],
        severity: Severity::ALL[n as usize % Severity::ALL.len()],
        confidence: Confidence::High,
        status: Status::New,
        identity: IdentityRef {
            id: format!("integration-{}", n % 5000),
            name: None,
            owner: Some("owner@example.org".into()),
            registered: true,
        },
        event_time: t,
        last_event_time: t,
        detected_at: t,
        title: format!("Finding number {n}"),
        explanation: "An explanation of realistic length: observed this, the baseline was that, and the threshold \
                      crossed was the highest of four limits."
            .into(),
        analysis: Vec::new(),
        count: 1,
        evidence: Vec::new(),
        controls: nhiwatch::findings::controls::of(DetectorId::ALL[n as usize % DetectorId::ALL.len()]).to_vec(),
        cause: Some(format!("cause {n}")),
    }
}

/// Normalize + engine over the scenario's lines; returns events/s.
fn ingest(lines: &[&[u8]], registry: &Registry, normalizer: &Normalizer) -> f64 {
    let meta = RecordMeta::default();
    let started = Instant::now();
    let mut engine = Engine::new(
        Detectors::default(),
        Some(registry.clone()),
        baseline::Settings::default(),
    );
    let mut updates = Vec::new();
    let mut out = Vec::with_capacity(4);
    let mut events = 0u64;
    for line in lines {
        out.clear();
        normalizer.normalize_into(line, &meta, &mut out).expect("normalizes");
        for e in &out {
            engine.process(e, e.time, &mut updates);
            events += 1;
        }
        updates.clear();
    }
    events as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "hold-idle") {
        hold_idle(&args[i + 1..]);
        return;
    }
    if args.iter().any(|a| a == "idle-connections") {
        idle_connections();
        return;
    }
    let store = Arc::new(FindingStore::in_memory(200_000));
    for n in 0..100_000 {
        store.upsert(finding(n)).expect("stored");
    }
    let settings = Settings::load_with_env(None, &[]).expect("defaults");
    let engine = Engine::new(Detectors::default(), None, baseline::Settings::default());
    let state = AppState::new(
        &engine,
        store,
        Auth::new(&settings.raw.http, Some(TOKEN), None),
        &settings.raw.http,
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(true)),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (addr, _server) = runtime
        .block_on(nhiwatch::http::serve(
            "127.0.0.1:0",
            state,
            ConnectionLimits::from_config(&settings.raw.http),
        ))
        .expect("serves");

    let scenario = generate(&Options {
        identities: 60,
        days: 21,
        ..Options::default()
    });
    let registry = Registry::parse(&scenario.registry, std::path::Path::new("registry.toml")).expect("valid");
    let normalizer = Normalizer::new(
        Pseudonymizer::new(b"benchmark-key-not-a-secret").expect("long enough"),
        DEFAULT_MAX_RECORD_BYTES,
    );
    let lines: Vec<&[u8]> = scenario.records.iter().map(|r| r.line.as_bytes()).collect();
    // Median of three runs each way: single runs vary by tens of percent on a shared machine.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    ingest(&lines, &registry, &normalizer); // warm-up
    let alone = median((0..3).map(|_| ingest(&lines, &registry, &normalizer)).collect());
    let duration = Duration::from_secs_f64((3.0 * lines.len() as f64 / alone * 1.3).max(5.0));

    let wrk = std::thread::spawn(move || {
        Command::new("wrk")
            .args(["-t1", "-c16", "--latency"])
            .arg(format!("-d{}s", duration.as_secs().max(5)))
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .arg(format!("http://{addr}/v1/findings?limit=50"))
            .output()
    });
    std::thread::sleep(Duration::from_millis(500));
    let loaded = median((0..3).map(|_| ingest(&lines, &registry, &normalizer)).collect());
    let out = wrk.join().expect("wrk thread").expect("wrk runs (apt-get install wrk)");
    // Alone again after the load, so that drift (warming allocator, CPU clocks) shows.
    let after = median((0..3).map(|_| ingest(&lines, &registry, &normalizer)).collect());
    let report = String::from_utf8_lossy(&out.stdout);
    let grab = |prefix: &str| {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| format!("{prefix} ?"))
    };
    println!("GET /v1/findings?limit=50 with 100,000 findings stored (wrk -t1 -c16, server on 1 worker thread):");
    println!("  {}", grab("Requests/sec"));
    for q in ["50%", "90%", "99%"] {
        println!(
            "  latency p{}: {}",
            q.trim_end_matches('%'),
            grab(q).trim_start_matches(q).trim()
        );
    }
    let non_2xx = report
        .lines()
        .find(|l| l.contains("Non-2xx"))
        .map_or("non-2xx responses: 0".to_owned(), |l| l.trim().to_owned());
    println!("  {non_2xx}");
    println!(
        "ingest (normalize + engine, {} records, median of 3): alone before {:.0} events/s, under API load {:.0} \
         events/s, alone after {:.0} events/s; ratio under load / alone after {:.3} (target >= 0.9)",
        lines.len(),
        alone,
        loaded,
        after,
        loaded / after
    );
}

/// Idle connections opened by each child process.
const IDLE_PER_CHILD: usize = 10_000;
/// Health probes measured in each phase.
const PROBES: usize = 1000;

/// The loopback address of source number `index` (127.1.0.1, 127.1.0.2, …).
fn source(index: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(127, 1, (index / 250) as u8, (index % 250 + 1) as u8)
}

/// Child mode, `hold-idle SERVER COUNT FIRST_SOURCE PER_SOURCE`: opens COUNT connections to
/// SERVER, PER_SOURCE from each source address from FIRST_SOURCE on, sends nothing, prints how
/// many opened, and holds them until its standard input closes.
fn hold_idle(args: &[String]) {
    let [server, count, first, per] = args else {
        panic!("hold-idle SERVER COUNT FIRST_SOURCE PER_SOURCE")
    };
    let server: std::net::SocketAddr = server.parse().expect("server address");
    let count: usize = count.parse().expect("count");
    let first: usize = first.parse().expect("first source");
    let per: usize = per.parse().expect("per source");
    rlimit::increase_nofile_limit(u64::MAX).expect("open-file limit");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (held, failed) = runtime.block_on(async {
        let mut held = Vec::with_capacity(count);
        let mut failed = 0usize;
        for i in 0..count {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind(std::net::SocketAddr::from((source(first + i / per), 0)))
                .expect("bind");
            match tokio::time::timeout(Duration::from_secs(10), socket.connect(server)).await {
                Ok(Ok(stream)) => held.push(stream),
                _ => failed += 1,
            }
        }
        (held, failed)
    });
    println!("held {} failed {failed}", held.len());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(held);
}

/// One `GET /healthz` on a new connection from 127.0.0.2: its latency, or what went wrong.
async fn probe(server: std::net::SocketAddr) -> Result<Duration, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 2], 0)))
        .map_err(|e| e.to_string())?;
    let mut stream = socket.connect(server).await.map_err(|e| format!("connect: {e}"))?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: nhiwatch\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    if answer.starts_with("HTTP/1.1 200") && answer.ends_with(r#"{"status":"ok"}"#) {
        Ok(started.elapsed())
    } else {
        Err(answer.lines().next().unwrap_or("closed without an answer").to_owned())
    }
}

/// `n` probes one after another (or until `stop`): latency p50/p99/max and failures, as a line.
async fn probes(server: std::net::SocketAddr, n: usize, stop: Option<&AtomicBool>) -> String {
    let mut latency = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut failures: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for _ in 0..n {
        if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Acquire)) {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(30), probe(server)).await {
            Ok(Ok(took)) => latency.saturating_record(took.as_micros() as u64),
            Ok(Err(why)) => *failures.entry(why).or_default() += 1,
            Err(_) => *failures.entry("no answer in 30 s".into()).or_default() += 1,
        }
    }
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "{} answered: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; failed: {}",
        latency.len(),
        ms(0.5),
        ms(0.99),
        latency.max() as f64 / 1000.0,
        if failures.is_empty() {
            "none".to_owned()
        } else {
            format!("{failures:?}")
        }
    )
}

/// The server's connection metrics, as one line.
fn connection_metrics(metrics: &Metrics) -> String {
    let text = metrics.render();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or("?")
            .to_owned()
    };
    format!(
        "open {}, idle ones closed for new ones {}, refused per address {}, refused at the cap {}",
        value("nhiwatch_http_connections"),
        value("nhiwatch_http_connections_evicted_total"),
        value("nhiwatch_http_connections_refused_total{reason=\"per_ip\"}"),
        value("nhiwatch_http_connections_refused_total{reason=\"capacity\"}"),
    )
}

fn idle_connections() {
    rlimit::increase_nofile_limit(u64::MAX).expect("open-file limit");
    let mut settings = Settings::load_with_env(None, &[]).expect("defaults");
    settings.raw.http.header_read_timeout_seconds = 600;
    settings.raw.http.idle_timeout_seconds = 600;
    let http = &settings.raw.http;
    println!(
        "GET /healthz, a new connection per probe from 127.0.0.2, server on 1 worker thread; \
         [http] max_connections {}, max_unauthenticated_per_ip {}, header and idle timeouts {} s",
        http.max_connections, http.max_unauthenticated_per_ip, http.header_read_timeout_seconds
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // (scenario, connections per source address, the second child's first source address)
    let many = IDLE_PER_CHILD.div_ceil(60);
    for (scenario, per_source, second) in [
        ("one address (127.1.0.1)", IDLE_PER_CHILD, 0),
        ("334 addresses of at most 60", 60, many),
    ] {
        let metrics = Arc::new(Metrics::default());
        let engine = Engine::new(Detectors::default(), None, baseline::Settings::default());
        let state = AppState::new(
            &engine,
            Arc::new(FindingStore::in_memory(10)),
            Auth::new(http, Some(TOKEN), None),
            http,
            Arc::clone(&metrics),
            Arc::new(AtomicBool::new(true)),
        );
        let (addr, server) = runtime
            .block_on(nhiwatch::http::serve(
                "127.0.0.1:0",
                state,
                ConnectionLimits::from_config(http),
            ))
            .expect("serves");
        println!("{} idle connections from {scenario}:", 2 * IDLE_PER_CHILD);
        println!("  before: {}", client.block_on(probes(addr, PROBES, None)));
        let opened = Instant::now();
        let mut children: Vec<std::process::Child> = (0..2)
            .map(|c| {
                let first = c * second;
                Command::new(std::env::current_exe().expect("this benchmark"))
                    .args(["hold-idle", &addr.to_string()])
                    .args([IDLE_PER_CHILD, first, per_source].map(|n| n.to_string()))
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("child")
            })
            .collect();
        // Probes while the connections arrive, until both children hold theirs.
        let done = Arc::new(AtomicBool::new(false));
        let reports = {
            let done = Arc::clone(&done);
            let outputs: Vec<_> = children.iter_mut().map(|c| c.stdout.take().expect("stdout")).collect();
            std::thread::spawn(move || {
                let lines: Vec<String> = outputs
                    .into_iter()
                    .map(|out| {
                        let mut line = String::new();
                        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
                        line.trim().to_owned()
                    })
                    .collect();
                done.store(true, std::sync::atomic::Ordering::Release);
                lines
            })
        };
        let during = client.block_on(probes(addr, usize::MAX, Some(&done)));
        let reports = reports.join().expect("children report");
        println!(
            "  while they arrive ({:.1} s): {during}",
            opened.elapsed().as_secs_f64()
        );
        println!("  children: {}", reports.join("; "));
        println!("  server: {}", connection_metrics(&metrics));
        println!("  while held: {}", client.block_on(probes(addr, PROBES, None)));
        println!("  server: {}", connection_metrics(&metrics));
        for mut child in children {
            drop(child.stdin.take());
            let _ = child.wait();
        }
        server.abort();
    }
}
