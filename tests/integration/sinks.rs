//! SIEM delivery against real receivers on loopback: an HTTP receiver (HEC and webhook) that
//! fails for a while, the embedded Kafka broker read back by kcat and rdkafka, tansu, rsyslog,
//! and a `kill -9` with deliveries pending in the outbox.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::Mac as _;
use nhiwatch::config::Settings;
use nhiwatch::findings::store::{FindingStore, StatusChange};
use nhiwatch::findings::{Confidence, DetectorId, Finding, IdentityRef, Severity, Status};
use nhiwatch::sink::Sinks;
use serde_json::Value;

use crate::ocsf::assert_detection_finding;
use crate::support::{self, Reaped, free_port, generated_inputs};

const HEC_TOKEN: &str = "hec-token-for-this-test";
const HOOK_SECRET: &str = "webhook-secret-for-this-test";

fn finding(n: u32, identity: &str) -> Finding {
    let t = chrono::DateTime::from_timestamp(1_767_571_200 + i64::from(n) * 60, 0).expect("valid");
    Finding {
        id: format!("{n:032x}"),
        detector: DetectorId::ScopeDrift,
        severity: Severity::High,
        confidence: Confidence::Medium,
        status: Status::New,
        identity: IdentityRef {
            id: identity.into(),
            name: Some("Lab | results feed".into()),
            owner: Some("lab-team@example.org".into()),
            registered: true,
        },
        event_time: t,
        last_event_time: t,
        detected_at: t,
        title: format!("Scope drift #{n} by lab|feed \\ v2"),
        explanation: "scope system/Observation.rs=new\nsecond line".into(),
        analysis: Vec::new(),
        count: 1,
        evidence: Vec::new(),
        controls: nhiwatch::findings::controls::of(DetectorId::ScopeDrift).to_vec(),
        // Each a problem of its own: findings of one detector and identity aggregate by cause.
        cause: Some(format!("cause {n}")),
    }
}

/// Settings with `sinks` (TOML) and a fresh outbox in `dir`, retrying quickly.
fn settings(dir: &Path, sinks: &str) -> Settings {
    let path = dir.join("nhiwatch.toml");
    let text = format!(
        "[outbox]\ndir = {:?}\nretry_initial_ms = 50\nretry_max_seconds = 1\n{sinks}",
        dir.join("outbox")
    );
    std::fs::write(&path, text).expect("write config");
    Settings::load_with_env(Some(&path), &[]).expect("valid config")
}

fn env(var: &str) -> Option<String> {
    match var {
        "TEST_HEC_TOKEN" => Some(HEC_TOKEN.into()),
        "TEST_HOOK_SECRET" => Some(HOOK_SECRET.into()),
        _ => None,
    }
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- HTTP receiver

#[derive(Default)]
struct Received {
    hec: Vec<Value>,
    hooks: Vec<Value>,
    problems: Vec<String>,
}

#[derive(Clone)]
struct Receiver {
    mode: Arc<AtomicU8>,
    got: Arc<Mutex<Received>>,
}

const OK: u8 = 0;
const FAIL: u8 = 1;

async fn hec(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if r.mode.load(Ordering::SeqCst) == FAIL {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let mut got = r.got.lock().expect("lock");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Splunk {HEC_TOKEN}")) {
        got.problems.push("HEC without the token".into());
        return StatusCode::UNAUTHORIZED;
    }
    let mut text = String::new();
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .expect("gzip body");
    } else {
        got.problems.push("HEC body not gzipped".into());
        text = String::from_utf8_lossy(&body).into_owned();
    }
    for line in text.lines() {
        got.hec.push(serde_json::from_str(line).expect("HEC event is JSON"));
    }
    StatusCode::OK
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if r.mode.load(Ordering::SeqCst) == FAIL {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let mut got = r.got.lock().expect("lock");
    let sig = headers
        .get("x-nhiwatch-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (t, v1) = sig
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .unwrap_or_default();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).expect("key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(&body);
    if hex::decode(v1).map_or(true, |v| mac.verify_slice(&v).is_err()) {
        got.problems.push(format!("bad webhook signature {sig:?}"));
        return StatusCode::UNAUTHORIZED;
    }
    let event: Value = serde_json::from_slice(&body).expect("webhook body is JSON");
    let delivery = headers.get("x-nhiwatch-delivery").and_then(|v| v.to_str().ok());
    if delivery != event["metadata"]["uid"].as_str() {
        got.problems.push("delivery header is not metadata.uid".into());
    }
    got.hooks.push(event);
    StatusCode::OK
}

async fn serve_receiver(addr: SocketAddr, r: Receiver) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let app = axum::Router::new()
        .route("/services/collector/event", post(hec))
        .route("/hook", post(hook))
        .with_state(r);
    // Restarting on the same address waits for the previous server to let go of it.
    let mut tries = 0;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 200 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("bind receiver {addr}: {e}"),
        }
    };
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
    });
    (addr, tx)
}

/// The outbox sequences of OCSF events, checked valid, in arrival order.
fn sequences(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            assert_detection_finding(e);
            e["metadata"]["sequence"].as_u64().expect("sequence")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hec_and_webhook_survive_errors_and_refused_connections_without_loss_or_reordering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = Receiver {
        mode: Arc::new(AtomicU8::new(OK)),
        got: Arc::default(),
    };
    let (addr, stop) = serve_receiver("127.0.0.1:0".parse().expect("addr"), r.clone()).await;
    let settings = settings(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"splunk\"\nkind = \"splunk_hec\"\nurl = \"http://{addr}/services/collector/event\"\n\
             token_env = \"TEST_HEC_TOKEN\"\nindex = \"security\"\nbatch = 2\ntimeout_seconds = 2\n\
             [[sinks]]\nname = \"soar\"\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\nsecret_env = \"TEST_HOOK_SECRET\"\ntimeout_seconds = 2\n"
        ),
    );
    let sinks = Sinks::start_with_env(settings.sink_setup(), &env).expect("sinks start");
    let store = FindingStore::in_memory(100).with_outbox(Arc::clone(&sinks.outbox));
    let upsert = |n: u32| {
        store.upsert(finding(n, "lab-feed")).expect("upsert");
    };
    let counts = |r: &Receiver| {
        let g = r.got.lock().expect("lock");
        (g.hec.len(), g.hooks.len())
    };

    // Up: delivered.
    for n in 1..=3 {
        upsert(n);
    }
    wait_until("first deliveries", Duration::from_secs(20), || counts(&r) == (3, 3)).await;

    // Answering 500/503: retried, nothing accepted.
    r.mode.store(FAIL, Ordering::SeqCst);
    for n in 4..=6 {
        upsert(n);
    }
    let failed = |i: usize| sinks.stats[i].failed.load(Ordering::Relaxed);
    wait_until("failures on both sinks", Duration::from_secs(20), || {
        failed(0) >= 2 && failed(1) >= 2
    })
    .await;

    // Down: connection refused.
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = (failed(0), failed(1));
    upsert(7);
    // A status change is delivered too (OCSF update, then close).
    store
        .set_status(
            &finding(2, "").id,
            StatusChange {
                status: Status::Resolved,
                by: "analyst".into(),
                at: chrono::Utc::now(),
                reason: "expected".into(),
                expires_at: None,
            },
        )
        .expect("status");
    wait_until("refused connections", Duration::from_secs(20), || {
        failed(0) > before.0 + 1 && failed(1) > before.1 + 1
    })
    .await;
    assert_eq!(counts(&r), (3, 3), "nothing accepted while failing");
    assert_eq!(sinks.stats[0].cursor.load(Ordering::Relaxed), 3);

    // Back up on the same address: everything pending arrives, in order.
    r.mode.store(OK, Ordering::SeqCst);
    let (_, _stop) = serve_receiver(addr, r.clone()).await;
    assert!(sinks.drain(Duration::from_secs(30)).await, "sinks caught up");

    let got = std::mem::take(&mut *r.got.lock().expect("lock"));
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    let all: Vec<u64> = (1..=8).collect();
    let hec_events: Vec<Value> = got.hec.iter().map(|e| e["event"].clone()).collect();
    assert_eq!(sequences(&hec_events), all, "HEC: every delivery once, in order");
    assert_eq!(sequences(&got.hooks), all, "webhook: every delivery once, in order");
    for e in &got.hec {
        assert_eq!(
            (e["index"].as_str(), e["sourcetype"].as_str()),
            (Some("security"), Some("ocsf:detection_finding"))
        );
    }
    let last = &got.hooks[7];
    assert_eq!(
        (last["activity_id"].as_u64(), last["status_id"].as_u64()),
        (Some(3), Some(4)),
        "the resolve is a close"
    );
    assert_eq!(last["finding_info"]["uid"], finding(2, "").id);
    let delivered = sinks.stats[1].delivered.load(Ordering::Relaxed);
    let retried = sinks.stats[1].retried.load(Ordering::Relaxed);
    assert_eq!(delivered, 8);
    assert!(retried >= 4, "{retried}");
    sinks.stop().await;
}

// ---------------------------------------------------------------- Kafka

fn produce_to_kafka(brokers: &str, topic: &str, dir: &Path) -> Vec<Finding> {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let settings = settings(
        dir,
        &format!(
            "[kafka]\nbrokers = \"{brokers}\"\n[[sinks]]\nname = \"topic\"\nkind = \"kafka\"\ntopic = \"{topic}\"\n"
        ),
    );
    let findings: Vec<Finding> = (1..=20)
        .map(|n| finding(n, if n % 2 == 0 { "ehr-a" } else { "lab-b" }))
        .collect();
    runtime.block_on(async {
        let sinks = Sinks::start_with_env(settings.sink_setup(), &env).expect("sinks start");
        let store = FindingStore::in_memory(100).with_outbox(Arc::clone(&sinks.outbox));
        for f in &findings {
            store.upsert(f.clone()).expect("upsert");
        }
        assert!(sinks.drain(Duration::from_secs(60)).await, "delivered to Kafka");
        assert_eq!(sinks.stats[0].delivered.load(Ordering::Relaxed), 20);
        sinks.stop().await;
    });
    findings
}

/// Reads `topic` from the beginning with rdkafka: (key, OCSF event) in partition order.
fn read_topic(brokers: &str, topic: &str, expect: usize) -> Vec<(String, Value)> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::Message as _;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < expect && start.elapsed() < Duration::from_secs(60) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let value: Value = serde_json::from_slice(m.payload().unwrap_or_default()).expect("record is JSON");
            out.push((key, value));
        }
    }
    out
}

fn check_topic(records: &[(String, Value)], findings: &[Finding]) {
    assert_eq!(records.len(), findings.len());
    let mut by_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (key, event) in records {
        assert_detection_finding(event);
        let id = event["finding_info"]["uid"].as_str().expect("uid");
        let f = findings.iter().find(|f| f.id == id).expect("a finding we sent");
        assert_eq!(key, &f.identity.id, "keyed by identity");
        by_key
            .entry(key)
            .or_default()
            .push(event["metadata"]["sequence"].as_u64().expect("seq"));
    }
    for (key, seqs) in by_key {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key}: in order {seqs:?}");
        assert_eq!(seqs.len(), 10);
    }
}

#[test]
fn kafka_sink_on_the_embedded_broker_read_back_by_rdkafka_and_kcat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("findings", 3, 1).expect("topic");
    let brokers = cluster.bootstrap_servers();
    let findings = produce_to_kafka(&brokers, "findings", dir.path());
    check_topic(&read_topic(&brokers, "findings", 20), &findings);

    // kcat (Debian's, librdkafka 2.0): an independent consumer of the same topic.
    let out = Command::new("kcat")
        .args([
            "-C",
            "-b",
            &brokers,
            "-t",
            "findings",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k\t%s\n",
        ])
        .output()
        .expect("kcat is installed (.ci/run installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<(String, Value)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (k, v) = l.split_once('\t').expect("key\tvalue");
            (k.to_owned(), serde_json::from_str(v).expect("JSON"))
        })
        .collect();
    check_topic(&records, &findings);
}

#[test]
fn kafka_sink_on_tansu() {
    let (_tansu, brokers) = support::tansu();
    support::create_topic(&brokers, "findings", 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let findings = produce_to_kafka(&brokers, "findings", dir.path());
    check_topic(&read_topic(&brokers, "findings", 20), &findings);
}

// ---------------------------------------------------------------- syslog

fn rsyslog(dir: &Path, tcp: u16, udp: u16) -> (Reaped, PathBuf) {
    let out = dir.join("received.log");
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{work}\")\n\
             module(load=\"imtcp\")\nmodule(load=\"imudp\")\n\
             template(name=\"fields\" type=\"string\" string=\"%pri%|%hostname%|%app-name%|%msgid%|%inputname%|%msg%\\n\")\n\
             ruleset(name=\"nh\") {{ action(type=\"omfile\" file=\"{out}\" template=\"fields\") }}\n\
             input(type=\"imtcp\" port=\"{tcp}\" address=\"127.0.0.1\" ruleset=\"nh\")\n\
             input(type=\"imudp\" port=\"{udp}\" address=\"127.0.0.1\" ruleset=\"nh\")\n",
            work = dir.display(),
            out = out.display()
        ),
    )
    .expect("write rsyslog.conf");
    (spawn_rsyslog(dir, &conf, tcp), out)
}

/// Starts `rsyslogd -n -f conf` and waits for its TCP input on `port`.
fn spawn_rsyslog(dir: &Path, conf: &Path, port: u16) -> Reaped {
    let child = Command::new("rsyslogd")
        .arg("-n")
        .arg("-f")
        .arg(conf)
        .arg("-i")
        .arg(dir.join("rsyslog.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("rsyslogd is installed (.ci/run installs rsyslog and rsyslog-gnutls)");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(30), "rsyslogd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Reaped(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_cef_reaches_rsyslog_over_tcp_and_udp_parsed_and_escaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tcp, udp) = (free_port(), free_port());
    let (_rsyslog, out) = rsyslog(dir.path(), tcp, udp);
    let settings = settings(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"collector\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{tcp}\"\ntransport = \"tcp\"\nfacility = \"local4\"\nhostname = \"nhiwatch-test\"\n\
             [[sinks]]\nname = \"collector-udp\"\nkind = \"syslog\"\naddress = \"127.0.0.1:{udp}\"\ntransport = \"udp\"\nhostname = \"nhiwatch-test\"\n"
        ),
    );
    let sinks = Sinks::start_with_env(settings.sink_setup(), &env).expect("sinks start");
    let store = FindingStore::in_memory(100).with_outbox(Arc::clone(&sinks.outbox));
    for n in 1..=3 {
        store.upsert(finding(n, "lab|feed")).expect("upsert");
    }
    assert!(sinks.drain(Duration::from_secs(30)).await);
    let lines = |want: usize| {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= want || start.elapsed() > Duration::from_secs(20) {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let got = lines(6);
    assert_eq!(got.len(), 6, "{got:#?}");
    let by_input: BTreeMap<&str, Vec<&str>> = got.iter().fold(BTreeMap::new(), |mut m, l| {
        let input = l.split('|').nth(4).unwrap_or_default();
        m.entry(input).or_insert_with(Vec::new).push(l.as_str());
        m
    });
    assert_eq!(
        by_input.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["imtcp", "imudp"])
    );
    for (input, lines) in by_input {
        assert_eq!(lines.len(), 3, "{input}");
        for (i, line) in lines.iter().enumerate() {
            let f = finding(i as u32 + 1, "lab|feed");
            // rsyslog parsed the RFC 5424 header: PRI (local4 = 20 or auth = 4, err = 3),
            // host, app, msgid; the CEF line is the message, escaped as the specification says.
            let pri = if input == "imtcp" { 20 * 8 + 3 } else { 4 * 8 + 3 };
            let expected = format!(
                "{pri}|nhiwatch-test|nhiwatch|scope_drift|{input}|{}",
                nhiwatch::sink::cef::encode(&f, nhiwatch::findings::ocsf::Activity::Create)
            );
            assert_eq!(line, &expected);
            assert!(line.contains("Scope drift #") && line.contains("by lab\\|feed \\\\ v2|8|"));
            assert!(line.contains("msg=scope system/Observation.rs\\=new\\nsecond line"));
        }
    }
    sinks.stop().await;
}

// ---------------------------------------------------------------- kill -9 with pending deliveries

/// Outbox sequences waiting on disk.
fn outbox_sequences(dir: &Path) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("outbox dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    files.sort();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap_or_default().lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                seqs.push(v["seq"].as_u64().expect("seq"));
            }
        }
    }
    seqs
}

#[test]
fn killed_with_deliveries_pending_then_restarted_delivers_each_at_most_once_more() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_nhiwatch"))
        .args(["generate", "--identities", "24", "--days", "30", "--seed", "5", "--out"])
        .arg(&data)
        .output()
        .expect("generate");
    assert!(out.status.success());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let r = Receiver {
        mode: Arc::new(AtomicU8::new(OK)),
        got: Arc::default(),
    };
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let config = dir.path().join("nhiwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[engine]\nregistry = {:?}\n[http]\nlisten = \"\"\nfindings_journal = \"\"\n[dead_letter]\npath = {:?}\n\
             [outbox]\ndir = {:?}\nretry_initial_ms = 50\nretry_max_seconds = 1\n\
             [[sinks]]\nname = \"soar\"\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\nsecret_env = \"TEST_HOOK_SECRET\"\ntimeout_seconds = 2\n",
            data.join("registry.toml"),
            dir.path().join("dead.ndjson"),
            dir.path().join("outbox"),
        ),
    )
    .expect("config");
    let run = |inputs: &[PathBuf]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nhiwatch"));
        cmd.env("NHIWATCH_PSEUDONYM_KEY", "integration-tests-only-key")
            .env("TEST_HOOK_SECRET", HOOK_SECRET)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for i in inputs {
            cmd.arg("--input").arg(i);
        }
        cmd.spawn().expect("nhiwatch run")
    };
    let inputs = generated_inputs(&data);

    // The receiver accepts the first three deliveries, then answers 503.
    let (_, stop) = runtime.block_on(serve_receiver(addr, r.clone()));
    let mut first = Reaped(run(&inputs));
    let start = Instant::now();
    loop {
        let accepted = r.got.lock().expect("lock").hooks.len();
        if accepted >= 3 {
            r.mode.store(FAIL, Ordering::SeqCst);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no deliveries");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let findings pile up in the outbox while the receiver refuses, then kill -9.
    let outbox = dir.path().join("outbox");
    let start = Instant::now();
    while outbox_sequences(&outbox).len() < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "findings did not reach the outbox"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.0.kill().expect("kill -9");
    let _ = first.0.wait();
    let _ = stop.send(());
    let pending = outbox_sequences(&outbox);
    let accepted_before = r.got.lock().expect("lock").hooks.len();
    assert!(pending.len() > accepted_before, "deliveries were pending at the kill");

    // Restart with nothing new to read: the outbox alone is delivered.
    r.mode.store(OK, Ordering::SeqCst);
    let (_, _stop) = runtime.block_on(serve_receiver(addr, r.clone()));
    let empty = dir.path().join("empty.ndjson");
    std::fs::write(&empty, "").expect("empty input");
    let second = run(&[empty]);
    let output = second.wait_with_output().expect("second run");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let got = r.got.lock().expect("lock");
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    let seqs = sequences(&got.hooks);
    let mut times: BTreeMap<u64, usize> = BTreeMap::new();
    for s in &seqs {
        *times.entry(*s).or_default() += 1;
    }
    let expected: BTreeSet<u64> = pending.iter().copied().collect();
    assert_eq!(
        times.keys().copied().collect::<BTreeSet<_>>(),
        expected,
        "every queued delivery arrived"
    );
    assert!(times.values().all(|&n| n <= 2), "at most once more: {times:?}");
    let mut firsts = Vec::new();
    for s in &seqs {
        if !firsts.contains(s) {
            firsts.push(*s);
        }
    }
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "in order: {firsts:?}");
}

// ---------------------------------------------------------------- syslog over TLS

/// A CA and a server certificate for `localhost` signed by it, made with the openssl CLI.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=nhiwatch test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tls_trusts_the_configured_ca_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates(dir.path());
    let port = free_port();
    let out = dir.path().join("received.log");
    let conf = dir.path().join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{work}\" DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{ca}\" \
             DefaultNetstreamDriverCertFile=\"{cert}\" DefaultNetstreamDriverKeyFile=\"{key}\")\n\
             module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")\n\
             template(name=\"fields\" type=\"string\" string=\"%pri%|%msgid%|%msg%\\n\")\n\
             ruleset(name=\"nh\") {{ action(type=\"omfile\" file=\"{out}\" template=\"fields\") }}\n\
             input(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\" ruleset=\"nh\")\n",
            work = dir.path().display(),
            ca = ca.display(),
            cert = cert.display(),
            key = key.display(),
            out = out.display()
        ),
    )
    .expect("conf");
    let _rsyslog = spawn_rsyslog(dir.path(), &conf, port);
    let sink = |name: &str, ca: Option<&Path>| {
        let ca = ca.map(|p| format!("ca_file = {:?}\n", p)).unwrap_or_default();
        format!(
            "[[sinks]]\nname = \"{name}\"\nkind = \"syslog\"\naddress = \"localhost:{port}\"\ntransport = \"tls\"\ntimeout_seconds = 2\n{ca}"
        )
    };
    let settings = settings(
        dir.path(),
        &format!("{}{}", sink("trusted", Some(&ca)), sink("untrusted", None)),
    );
    let sinks = Sinks::start_with_env(settings.sink_setup(), &env).expect("sinks start");
    let store = FindingStore::in_memory(10).with_outbox(Arc::clone(&sinks.outbox));
    store.upsert(finding(1, "lab-feed")).expect("upsert");
    let trusted = &sinks.stats[0];
    let untrusted = &sinks.stats[1];
    wait_until(
        "the trusted sink delivered and the untrusted one failed",
        Duration::from_secs(30),
        || trusted.delivered.load(Ordering::Relaxed) == 1 && untrusted.failed.load(Ordering::Relaxed) >= 2,
    )
    .await;
    assert_eq!(
        untrusted.delivered.load(Ordering::Relaxed),
        0,
        "a certificate from an unknown CA is refused"
    );
    let start = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if !text.is_empty() || start.elapsed() > Duration::from_secs(20) {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expected = format!(
        "{}|scope_drift|{}\n",
        4 * 8 + 3,
        nhiwatch::sink::cef::encode(&finding(1, "lab-feed"), nhiwatch::findings::ocsf::Activity::Create)
    );
    assert_eq!(text, expected);
    sinks.stop().await;
}
