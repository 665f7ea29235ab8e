//! Shared helpers: locating `../shared/fixtures`, a fixed pseudonymisation key, record splitting.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use nhiwatch::event::Event;
use nhiwatch::normalize::{Normalizer, ParseError, Pseudonymizer, RecordMeta};

/// The key every test uses; pseudonyms in assertions are computed with it, never hard-coded.
pub const TEST_KEY: &[u8] = b"integration-tests-only-key";

pub fn pseudonymizer() -> Pseudonymizer {
    Pseudonymizer::new(TEST_KEY).expect("test key is long enough")
}

pub fn normalizer() -> Normalizer {
    Normalizer::new(pseudonymizer(), nhiwatch::normalize::DEFAULT_MAX_RECORD_BYTES)
}

/// `../shared/fixtures/external`, beside the repository.
pub fn external() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/external");
    assert!(
        dir.is_dir(),
        "fixtures not found at {}: clone the repository beside shared/",
        dir.display()
    );
    dir
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The arrival time given to records of the fixture files (dates Keycloak's time-only lines).
pub fn received() -> DateTime<Utc> {
    "2021-10-22T23:59:00Z".parse().expect("valid time")
}

/// The real binary, with no HTTP server and no findings journal unless a test asks (tests run
/// in parallel), no pseudonymisation key and warnings logged.
pub fn nhiwatch() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nhiwatch"));
    cmd.env_remove("NHIWATCH_PSEUDONYM_KEY")
        .env("RUST_LOG", "warn")
        .env("NHIWATCH__HTTP__LISTEN", "")
        .env("NHIWATCH__HTTP__FINDINGS_JOURNAL", "");
    cmd
}

/// Normalizes one record, with the given arrival time.
pub fn normalize(record: &str) -> Result<Vec<Event>, ParseError> {
    let meta = RecordMeta {
        origin: None,
        received: Some(received()),
    };
    normalizer().normalize(record.as_bytes(), &meta)
}

/// Normalizes one record that must yield exactly one event.
pub fn one(record: &str) -> Event {
    let mut events = normalize(record).unwrap_or_else(|e| panic!("record did not normalize: {e}\n{record}"));
    assert_eq!(events.len(), 1, "expected one event from {record}");
    events.remove(0)
}

/// Every non-empty line of a file.
pub fn lines(path: &Path) -> Vec<String> {
    read(path)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

pub fn time(s: &str) -> DateTime<Utc> {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The NDJSON files `nhiwatch generate --out dir` writes, one per format.
pub fn generated_inputs(dir: &Path) -> Vec<PathBuf> {
    [
        "fhir-audit",
        "gateway-access",
        "okta",
        "keycloak",
        "entra-signin",
        "entra-audit",
        "gcp-audit",
    ]
    .iter()
    .map(|f| dir.join(format!("{f}.ndjson")))
    .collect()
}

/// Debian's `chromium` (installed by `.ci/run`), headless with a fresh profile (kept while the
/// returned directory lives), its log on stderr, a window of `size` (`WIDTH,HEIGHT`).
pub fn chromium_command(size: &str) -> (std::process::Command, tempfile::TempDir) {
    use std::process::Command;
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Debian's chromium is installed (.ci/run installs it)");
    let profile = tempfile::tempdir().expect("profile dir");
    let mut command = Command::new(browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--window-size={size}"))
        .arg(format!("--user-data-dir={}", profile.path().display()));
    (command, profile)
}

/// Debian's `chromium` (installed by `.ci/run`), headless, on `url` with `extra` flags (e.g.
/// `--dump-dom`, `--screenshot=PATH`); panics when it fails, with its log. Console errors in its
/// log fail the call too.
pub fn chromium(url: &str, extra: &[&str]) -> std::process::Output {
    let (mut command, _profile) = chromium_command("1400,1800");
    let out = command
        .args(["--virtual-time-budget=8000"])
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let console = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = console
        .lines()
        .filter(|l| l.contains(":CONSOLE") && (l.contains("Uncaught") || l.contains("rror")))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    out
}

/// Runs the engine (default detectors, `registry`) over `events` in order, archiving them and
/// then the findings under `dir` in files of at most `max_rows` rows; returns the detection.
pub fn detect_and_archive(
    registry: &nhiwatch::registry::Registry,
    events: &mut [Event],
    dir: &Path,
    max_rows: usize,
) -> nhiwatch::engine::Detection {
    use nhiwatch::archive::{Archive, Limits};
    use nhiwatch::engine::{Detection, Engine};
    let engine = Engine::new(
        nhiwatch::detect::Detectors::default(),
        Some(registry.clone()),
        nhiwatch::baseline::Settings::default(),
    );
    let mut detection = Detection::new(engine, chrono::Duration::minutes(5), false);
    let mut archive = Archive::open(
        dir.to_str().expect("utf-8"),
        Limits {
            max_rows,
            max_age: std::time::Duration::from_secs(3600),
        },
    )
    .expect("archive");
    for e in events {
        detection.engine().canonicalize(e);
        archive.append_event(e).expect("append");
        detection.push(e.clone(), &mut |_| {});
    }
    detection.finish(&mut |_| {});
    for f in detection.findings() {
        archive.append_finding(f).expect("append finding");
    }
    archive.flush().expect("flush");
    detection
}

/// Generated records normalized with the test key, in order.
pub fn normalized(records: &[nhiwatch::generate::GenRecord]) -> Vec<Event> {
    nhiwatch::generate::normalize_all(records, &normalizer()).expect("generated records normalize")
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process killed and reaped when dropped.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `tansu` broker (an independent Kafka implementation) on a free loopback port, keeping its
/// data in memory; and its bootstrap address.
pub fn tansu() -> (Reaped, String) {
    use std::process::{Command, Stdio};
    let port = free_port();
    let tansu = Command::new("tansu")
        .args([
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu is installed (.ci/run installs it)");
    let tansu = Reaped(tansu);
    let brokers = format!("127.0.0.1:{port}");
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(&brokers).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "tansu did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (tansu, brokers)
}

/// Creates `topic` with `partitions` on `brokers`.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let results = runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .expect("create topic");
    for r in results {
        r.expect("topic created");
    }
}

/// `GET path` over `stream` (HTTP/1.0, bearer `token`): the JSON body of a 200 answer.
pub fn get_json(mut stream: std::net::TcpStream, path: &str, token: &str) -> serde_json::Value {
    let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    std::io::Write::write_all(&mut stream, request.as_bytes()).expect("request");
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}\n{body}"
    );
    serde_json::from_str(body).expect("json")
}
