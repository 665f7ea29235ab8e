//! Delivery to SIEMs.
//!
//! A finding change that passes the delivery policy ([`delivers`]) is appended to the durable
//! [`outbox`]; one worker per configured sink reads from its own cursor, encodes, sends, and
//! confirms only what the receiver accepted, retrying with exponential backoff and jitter.
//! Encodings: OCSF Detection Finding JSON (`crate::findings::ocsf`) for Kafka, HEC and webhooks;
//! CEF ([`cef`]) inside RFC 5424 for syslog ([`syslog`]); the Splunk HEC envelope ([`hec`]).
//!
//! Few and right alerts: a finding is delivered when it is created, escalated, changes status,
//! or reopens; repeated hits folding into an open finding are delivered when its count reaches
//! 2, 4, 8, 16… so the SIEM's copy stays current without one message per hit.

pub mod cef;
pub mod hec;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod outbox;
pub mod syslog;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use rand::Rng as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::findings::Severity;
use crate::kafka::KafkaConfig;
use outbox::OutboxConfig;
use outbox::{Delivery, Outbox};

pub use crate::findings::store::delivers;

/// A failed delivery attempt: how many of the batch's first deliveries did get through, and why
/// the rest did not.
#[derive(Debug)]
pub struct SendError {
    /// Deliveries at the head of the batch that the receiver accepted.
    pub delivered: usize,
    /// Why the rest failed (no secrets).
    pub reason: String,
}

impl SendError {
    /// An error after `delivered` deliveries went through.
    pub fn new(delivered: usize, reason: impl Into<String>) -> SendError {
        SendError {
            delivered,
            reason: reason.into(),
        }
    }
}

/// Counters of one sink, read by `/metrics`.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// The sink's name.
    pub name: String,
    /// Deliveries the receiver accepted.
    pub delivered: AtomicU64,
    /// Attempts that were retried after a failure.
    pub retried: AtomicU64,
    /// Failed attempts.
    pub failed: AtomicU64,
    /// Deliveries dropped unsent because the outbox was full.
    pub dropped: AtomicU64,
    /// Deliveries skipped by `min_severity`.
    pub filtered: AtomicU64,
    /// Last confirmed outbox sequence.
    pub cursor: AtomicU64,
}

/// The sinks of a process and their outbox.
pub struct Sinks {
    /// The outbox they read.
    pub outbox: Arc<Outbox>,
    /// One per sink, in configuration order.
    pub stats: Vec<Arc<SinkStats>>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Sinks {
    /// Their metric families, to register with [`crate::telemetry::metrics::Metrics::register`].
    pub fn exposition(&self) -> Arc<metrics::SinkMetrics> {
        Arc::new(metrics::SinkMetrics {
            outbox: Arc::clone(&self.outbox),
            stats: self.stats.clone(),
        })
    }
}

impl std::fmt::Debug for Sinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sinks").field("sinks", &self.stats.len()).finish()
    }
}

enum Transport {
    Kafka(kafka::KafkaSink),
    Hec(http::HecSink),
    Webhook(http::WebhookSink),
    Syslog(syslog::SyslogSink),
}

impl Transport {
    async fn send(&mut self, batch: &[&Delivery]) -> Result<(), SendError> {
        match self {
            Transport::Kafka(s) => s.send(batch).await,
            Transport::Hec(s) => s.send(batch).await,
            Transport::Webhook(s) => s.send(batch).await,
            Transport::Syslog(s) => s.send(batch).await,
        }
    }
}

/// `[[sinks]]`: one delivery target, typed by its `kind`.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Name: metrics label and cursor file (`[a-z0-9_-]`, unique).
    pub name: String,
    /// Deliver findings of at least this severity.
    pub min_severity: Severity,
    /// Deliveries per request or produce batch.
    pub batch: Option<usize>,
    /// Seconds one delivery attempt may take.
    pub timeout_seconds: Option<u64>,
    /// Where and how.
    pub target: Target,
}

/// A sink's kind (`kind` in `[[sinks]]`) and the settings of that kind, each in its sink's file.
#[derive(Debug, Clone)]
pub enum Target {
    /// OCSF JSON records on a Kafka topic.
    Kafka(kafka::KafkaSinkConfig),
    /// Splunk's HTTP Event Collector.
    SplunkHec(http::HecConfig),
    /// RFC 5424 syslog with CEF.
    Syslog(syslog::SyslogConfig),
    /// OCSF JSON POSTed, HMAC-signed.
    Webhook(http::WebhookConfig),
}

/// Each kind with the keys that apply to it (beside `name`, `kind`, `min_severity`, `batch` and
/// `timeout_seconds`).
pub const SINK_KINDS: [(&str, &[&str]); 4] = [
    ("kafka", kafka::KafkaSinkConfig::KEYS),
    ("splunk_hec", http::HecConfig::KEYS),
    ("syslog", syslog::SyslogConfig::KEYS),
    ("webhook", http::WebhookConfig::KEYS),
];

/// The keys every kind has.
const COMMON: [&str; 5] = ["name", "kind", "min_severity", "batch", "timeout_seconds"];

/// The settings of one kind from the rest of its table. Parsed by kind rather than through a
/// `#[serde(tag = "kind")]` enum: serde buffers a tagged enum's table, and the path to a refused
/// value (`gzip = "yes"`, a bad `transport`) would be lost; this way the error names its key.
fn typed<T: serde::de::DeserializeOwned>(rest: toml::Table) -> Result<T, (Option<String>, String)> {
    serde_path_to_error::deserialize(toml::Value::Table(rest)).map_err(|e| {
        let key = e.path().to_string();
        let why = e.inner().message().trim_end().to_owned();
        // An unknown key is the table's fault: serde names it and lists the keys there are.
        ((key != "." && !why.starts_with("unknown field")).then_some(key), why)
    })
}

fn required(kind: &str) -> String {
    format!("is required for kind \"{kind}\"")
}

impl Target {
    /// Its `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Kafka(_) => "kafka",
            Target::SplunkHec(_) => "splunk_hec",
            Target::Syslog(_) => "syslog",
            Target::Webhook(_) => "webhook",
        }
    }

    /// Where it delivers: topic, URL or address.
    pub fn destination(&self) -> &str {
        match self {
            Target::Kafka(c) => &c.topic,
            Target::SplunkHec(c) => &c.url,
            Target::Syslog(c) => &c.address,
            Target::Webhook(c) => &c.url,
        }
    }

    /// The environment variable holding its secret, if it has one.
    pub fn secret_env(&self) -> Option<&str> {
        match self {
            Target::SplunkHec(c) => Some(&c.token_env),
            Target::Webhook(c) => Some(&c.secret_env),
            Target::Kafka(_) | Target::Syslog(_) => None,
        }
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        match self {
            Target::Kafka(c) => c.validate(),
            Target::SplunkHec(c) => c.validate(),
            Target::Syslog(c) => c.validate(),
            Target::Webhook(c) => c.validate(),
        }
    }
}

impl SinkConfig {
    /// A sink of `target` named `name`, with the defaults.
    pub fn new(name: &str, target: Target) -> SinkConfig {
        SinkConfig {
            name: name.to_owned(),
            min_severity: Severity::Info,
            batch: None,
            timeout_seconds: None,
            target,
        }
    }

    /// One `[[sinks]]` table, checked. An error names the key under the table (`None`: the
    /// table as a whole) and says why.
    pub fn parse(table: &toml::Table) -> Result<SinkConfig, (Option<String>, String)> {
        let text = |key: &str| table.get(key).and_then(toml::Value::as_str);
        let name = text("name").unwrap_or_default();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        let at = |key: &str, why: String| (Some(key.to_owned()), why);
        if !valid_name {
            return Err(at("name", "must be 1-64 characters of a-z, 0-9, _ and -".into()));
        }
        let kind = text("kind").unwrap_or_default();
        let Some((_, allowed)) = SINK_KINDS.iter().find(|(k, _)| *k == kind) else {
            let kinds: Vec<&str> = SINK_KINDS.iter().map(|(k, _)| *k).collect();
            return Err(at("kind", format!("must be one of {}", kinds.join(", "))));
        };
        // A key of another kind is named as such; one of no kind is left to the typed parse
        // below, which says it is unknown and lists the keys there are.
        if let Some(key) = table.keys().find(|k| {
            !COMMON.contains(&k.as_str())
                && !allowed.contains(&k.as_str())
                && SINK_KINDS.iter().any(|(_, keys)| keys.contains(&k.as_str()))
        }) {
            return Err(at(key, format!("does not apply to kind \"{kind}\"")));
        }
        let min_severity = match table.get("min_severity") {
            None => Severity::Info,
            Some(v) => v.as_str().and_then(|v| v.parse().ok()).ok_or_else(|| {
                at(
                    "min_severity",
                    "must be one of info, low, medium, high, critical".into(),
                )
            })?,
        };
        let number = |key: &str| -> Result<Option<u64>, (Option<String>, String)> {
            table
                .get(key)
                .map(|v| {
                    v.as_integer()
                        .and_then(|n| u64::try_from(n).ok())
                        .ok_or_else(|| at(key, "must be a whole number".into()))
                })
                .transpose()
        };
        let batch = number("batch")?;
        if batch == Some(0) || batch.is_some_and(|b| b > 10_000) {
            return Err(at("batch", "must be between 1 and 10000".into()));
        }
        let timeout_seconds = number("timeout_seconds")?;
        if timeout_seconds == Some(0) {
            return Err(at("timeout_seconds", "must be greater than 0".into()));
        }
        let mut rest = table.clone();
        for key in ["name", "min_severity", "batch", "timeout_seconds"] {
            rest.remove(key);
        }
        rest.remove("kind");
        let target = match kind {
            "kafka" => Target::Kafka(typed(rest)?),
            "splunk_hec" => Target::SplunkHec(typed(rest)?),
            "syslog" => Target::Syslog(typed(rest)?),
            _ => Target::Webhook(typed(rest)?),
        };
        target.validate().map_err(|(key, why)| at(key, why))?;
        Ok(SinkConfig {
            name: name.to_owned(),
            min_severity,
            batch: batch.map(|b| b as usize),
            timeout_seconds,
            target,
        })
    }
}

/// What the sinks are started from (see `Settings::sink_setup`).
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    /// `[outbox]`.
    pub outbox: &'a OutboxConfig,
    /// `[[sinks]]`, typed.
    pub sinks: &'a [SinkConfig],
    /// `[kafka]`: the brokers and properties of a Kafka sink that names none.
    pub kafka: &'a KafkaConfig,
    /// Where the configuration came from (for messages).
    pub origin: &'a str,
}

/// Looks up an environment variable.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The value of the environment variable a sink names for a secret.
fn secret(cfg: &SinkConfig, key: &str, var: &str, env: Env<'_>) -> anyhow::Result<String> {
    env(var)
        .filter(|v| !v.is_empty())
        .with_context(|| format!("sink `{}` ({key}): environment variable {var} is not set", cfg.name))
}

/// This machine's host name, for syslog and HEC.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "nhiwatch".into())
}

fn read_ca(cfg: &SinkConfig, file: Option<&std::path::PathBuf>) -> anyhow::Result<Option<Vec<u8>>> {
    file.map(|p| std::fs::read(p).with_context(|| format!("sink `{}`: reading ca_file {}", cfg.name, p.display())))
        .transpose()
}

fn build(cfg: &SinkConfig, defaults: &KafkaConfig, env: Env<'_>) -> anyhow::Result<Transport> {
    let timeout = Duration::from_secs(cfg.timeout_seconds.unwrap_or(10));
    Ok(match &cfg.target {
        Target::Kafka(k) => {
            let mut kafka = defaults.clone();
            if let Some(b) = &k.brokers {
                kafka.brokers = b.clone();
            }
            if let Some(p) = &k.properties {
                kafka.properties = p.clone();
            }
            Transport::Kafka(kafka::KafkaSink::new(&kafka, k.topic.clone(), timeout)?)
        }
        Target::SplunkHec(h) => {
            let token = secret(cfg, "token_env", &h.token_env, env)?;
            let target = hec::HecTarget {
                host: h.hostname.clone().unwrap_or_else(hostname),
                index: h.index.clone(),
                sourcetype: h
                    .sourcetype
                    .clone()
                    .unwrap_or_else(|| hec::HecTarget::default().sourcetype),
                ..hec::HecTarget::default()
            };
            Transport::Hec(http::HecSink::new(
                http::client(read_ca(cfg, h.ca_file.as_ref())?.as_deref(), timeout)?,
                h.url.clone(),
                &token,
                target,
                h.gzip.unwrap_or(true),
            ))
        }
        Target::Webhook(w) => {
            let secret = secret(cfg, "secret_env", &w.secret_env, env)?;
            Transport::Webhook(http::WebhookSink::new(
                http::client(read_ca(cfg, w.ca_file.as_ref())?.as_deref(), timeout)?,
                w.url.clone(),
                secret.into_bytes(),
            ))
        }
        Target::Syslog(l) => {
            let tls = if l.transport == syslog::Transport::Tls {
                let mut b = native_tls::TlsConnector::builder();
                if let Some(pem) = read_ca(cfg, l.ca_file.as_ref())? {
                    b.add_root_certificate(
                        native_tls::Certificate::from_pem(&pem)
                            .with_context(|| format!("sink `{}`: ca_file is not a PEM certificate", cfg.name))?,
                    );
                }
                Some(tokio_native_tls::TlsConnector::from(b.build()?))
            } else {
                None
            };
            Transport::Syslog(syslog::SyslogSink::new(
                l.address.clone(),
                l.transport,
                tls,
                syslog::facility(l.facility.as_deref().unwrap_or("auth")).unwrap_or(4),
                l.hostname.clone().unwrap_or_else(hostname),
                timeout,
            ))
        }
    })
}

impl Sinks {
    /// Opens the outbox and starts one worker per configured sink on the current runtime.
    /// Fails, before anything is sent, when a sink cannot be built (a missing secret, an
    /// unreadable CA file).
    pub fn start(setup: Setup<'_>) -> anyhow::Result<Sinks> {
        Sinks::start_with_env(setup, &|var| std::env::var(var).ok())
    }

    /// As [`Sinks::start`], with secrets looked up in `env`.
    pub fn start_with_env(setup: Setup<'_>, env: Env<'_>) -> anyhow::Result<Sinks> {
        let cfg = setup.outbox;
        let outbox = Arc::new(
            Outbox::open(
                &cfg.dir,
                outbox::Limits {
                    max_bytes: cfg.max_bytes,
                    segment_bytes: cfg.segment_bytes,
                },
            )
            .with_context(|| format!("opening the outbox (outbox.dir in {})", setup.origin))?,
        );
        let mut transports = Vec::new();
        for sink in setup.sinks {
            transports.push((sink.clone(), build(sink, setup.kafka, env)?));
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut stats = Vec::new();
        let mut tasks = Vec::new();
        for (sink, transport) in transports {
            let cursor = outbox.register(&sink.name)?;
            let s = Arc::new(SinkStats {
                name: sink.name.clone(),
                cursor: AtomicU64::new(cursor),
                ..SinkStats::default()
            });
            stats.push(Arc::clone(&s));
            let worker = Worker {
                outbox: Arc::clone(&outbox),
                stats: s,
                transport,
                min_severity: sink.min_severity,
                batch: if matches!(sink.target, Target::Webhook(_)) {
                    1
                } else {
                    sink.batch.unwrap_or(100)
                },
                backoff: Backoff::of(cfg),
            };
            tasks.push(tokio::spawn(worker.run(stop_rx.clone())));
        }
        Ok(Sinks {
            outbox,
            stats,
            tasks,
            stop,
        })
    }

    /// Waits until every sink delivered everything appended so far, or `limit` passes; true
    /// when all caught up.
    pub async fn drain(&self, limit: Duration) -> bool {
        let head = self.outbox.head();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.stats.iter().all(|s| s.cursor.load(Ordering::Acquire) >= head) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the workers; what they have not delivered stays in the outbox for the next start.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    fn of(cfg: &OutboxConfig) -> Backoff {
        Backoff {
            initial: Duration::from_millis(cfg.retry_initial_ms),
            max: Duration::from_secs(cfg.retry_max_seconds),
        }
    }

    /// Delay before retry `attempt` (1-based): doubling from `initial` up to `max`, with "full
    /// jitter" over its upper half so that sinks recovering together do not retry in step.
    fn delay(&self, attempt: u32) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let cap = exp.min(self.max);
        let half = cap / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

struct Worker {
    outbox: Arc<Outbox>,
    stats: Arc<SinkStats>,
    transport: Transport,
    min_severity: Severity,
    batch: usize,
    backoff: Backoff,
}

impl Worker {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut head = self.outbox.watch();
        let name = self.stats.name.clone();
        loop {
            if *stop.borrow() {
                return;
            }
            let cursor = self.stats.cursor.load(Ordering::Acquire);
            let (batch, skipped) = self.outbox.read(cursor, self.batch);
            if skipped > 0 {
                self.stats.dropped.fetch_add(skipped, Ordering::Relaxed);
                tracing::error!(sink = %name, from = cursor + 1, to = cursor + skipped, "Findings dropped from the full outbox before this sink delivered them.");
                self.confirm(cursor + skipped);
                continue;
            }
            if batch.is_empty() {
                tokio::select! {
                    _ = head.changed() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let last = batch.last().map_or(cursor, |d| d.seq);
            let wanted: Vec<&Delivery> = batch
                .iter()
                .map(Arc::as_ref)
                .filter(|d| d.finding.severity >= self.min_severity)
                .collect();
            self.stats
                .filtered
                .fetch_add((batch.len() - wanted.len()) as u64, Ordering::Relaxed);
            let mut sent = 0;
            let mut attempt = 0u32;
            while sent < wanted.len() {
                match self.transport.send(&wanted[sent..]).await {
                    Ok(()) => {
                        self.stats
                            .delivered
                            .fetch_add((wanted.len() - sent) as u64, Ordering::Relaxed);
                        sent = wanted.len();
                    }
                    Err(e) => {
                        if e.delivered > 0 {
                            self.stats.delivered.fetch_add(e.delivered as u64, Ordering::Relaxed);
                            sent += e.delivered;
                            self.confirm(wanted[sent - 1].seq);
                            attempt = 0;
                        }
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        attempt += 1;
                        let delay = self.backoff.delay(attempt);
                        if attempt == 1 || attempt.is_power_of_two() {
                            tracing::warn!(sink = %name, attempt, retry_in_ms = delay.as_millis() as u64, reason = %e.reason, "Delivery failed; will retry.");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = stop.changed() => return,
                        }
                        self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if attempt > 0 {
                tracing::info!(sink = %name, attempts = attempt + 1, "Delivery recovered.");
            }
            self.confirm(last);
        }
    }

    fn confirm(&self, seq: u64) {
        if let Err(error) = self.outbox.confirm(&self.stats.name, seq) {
            // The cursor stays in memory; after a restart the sink would resend from the last
            // cursor that was written (at-least-once).
            tracing::error!(sink = %self.stats.name, %error, "Could not record delivery progress.");
        }
        self.stats.cursor.store(seq, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::ocsf::Activity;
    use crate::findings::{Change, Status};

    #[test]
    fn folded_hits_are_delivered_at_powers_of_two() {
        let sent: Vec<u64> = (2..=40)
            .filter(|&n| delivers(Change::Folded, n, false, Status::New).is_some())
            .collect();
        assert_eq!(sent, [2, 4, 8, 16, 32]);
        assert_eq!(delivers(Change::New, 1, false, Status::New), Some(Activity::Create));
        assert_eq!(
            delivers(Change::Escalated, 3, false, Status::Acknowledged),
            Some(Activity::Update)
        );
        assert_eq!(delivers(Change::Folded, 3, true, Status::New), Some(Activity::Update));
    }

    fn table(text: &str) -> toml::Table {
        text.parse().expect("toml")
    }

    /// The keys `[[sinks]]` documents per kind are the fields of that kind's struct: serde lists
    /// the fields it knows when refusing an unknown one.
    #[test]
    fn each_kinds_keys_are_its_structs_fields() {
        for (kind, keys) in SINK_KINDS {
            let (key, why) =
                SinkConfig::parse(&table(&format!("name = \"a\"\nkind = \"{kind}\"\nnot_a_key = 1\n"))).unwrap_err();
            assert_eq!(key, None);
            let listed = why.split_once("expected").map(|(_, l)| l).unwrap_or_default();
            let mut fields: Vec<&str> = listed.split('`').skip(1).step_by(2).collect();
            fields.sort_unstable();
            let mut keys = keys.to_vec();
            keys.sort_unstable();
            assert_eq!(fields, keys, "{kind}: {why}");
        }
    }

    #[test]
    fn a_sink_is_typed_by_its_kind() {
        let sink = SinkConfig::parse(&table(
            "name = \"siem\"\nkind = \"syslog\"\naddress = \"collector:6514\"\ntransport = \"tls\"\nmin_severity = \"high\"\nbatch = 5\n",
        ))
        .expect("valid");
        assert_eq!(
            (sink.name.as_str(), sink.min_severity, sink.batch),
            ("siem", Severity::High, Some(5))
        );
        let Target::Syslog(syslog) = &sink.target else {
            panic!("{sink:?}");
        };
        assert_eq!(syslog.transport, syslog::Transport::Tls);
        assert_eq!(
            (sink.target.kind(), sink.target.destination()),
            ("syslog", "collector:6514")
        );
        let (key, why) = SinkConfig::parse(&table(
            "name = \"siem\"\nkind = \"syslog\"\naddress = \"collector:6514\"\ntransport = \"sctp\"\n",
        ))
        .unwrap_err();
        assert_eq!(key.as_deref(), Some("transport"));
        assert_eq!(why, "must be \"tcp\", \"tls\" or \"udp\"");
        let (key, why) = SinkConfig::parse(&table(
            "name = \"s\"\nkind = \"splunk_hec\"\nurl = \"https://x\"\ntoken_env = \"T\"\ngzip = \"yes\"\n",
        ))
        .unwrap_err();
        assert_eq!(key.as_deref(), Some("gzip"), "{why}");
        assert!(!why.ends_with('\n'), "{why:?}");
        let (key, _) =
            SinkConfig::parse(&table("name = \"w\"\nkind = \"webhook\"\nurl = \"https://x\"\n")).unwrap_err();
        assert_eq!(key.as_deref(), Some("secret_env"));
        let hec = SinkConfig::parse(&table(
            "name = \"s\"\nkind = \"splunk_hec\"\nurl = \"https://x\"\ntoken_env = \"T\"\n",
        ))
        .expect("valid");
        assert_eq!(hec.target.secret_env(), Some("T"));
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for (attempt, cap) in [(1, 100), (2, 200), (3, 400), (6, 2000), (30, 2000)] {
            for _ in 0..20 {
                let d = b.delay(attempt).as_millis() as u64;
                assert!((cap / 2..=cap).contains(&d), "attempt {attempt}: {d} ms");
            }
        }
    }
}
