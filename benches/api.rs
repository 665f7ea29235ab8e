//! The HTTP API under load while ingest runs, measured side by side in one run.
//!
//! `cargo bench --bench api` stores 100,000 findings, serves the API on 127.0.0.1, and times the
//! same ingest work (normalize + engine over a generated scenario) twice: alone, and while `wrk`
//! (Debian's package) drives `GET /v1/findings` with a read token. It prints wrk's requests/s and
//! latency quantiles and the ingest rate in both runs, with their ratio (target ≥ 0.9). The load
//! is bounded by the ingest run's duration.
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
use nhiwatch::findings::{Change, Confidence, DetectorId, Finding, IdentityRef, Severity, Status};
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
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let store = Arc::new(FindingStore::in_memory(200_000));
    for n in 0..100_000 {
        store.upsert(finding(n), Change::New).expect("stored");
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
