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
pub mod outbox;
pub mod syslog;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use rand::Rng as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{OutboxConfig, Settings, SinkConfig};
use crate::findings::Severity;
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

/// Looks up an environment variable.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The value of the environment variable a sink names for a secret.
fn secret(cfg: &SinkConfig, key: &str, var: Option<&String>, env: Env<'_>) -> anyhow::Result<String> {
    let var = var.map(String::as_str).unwrap_or_default();
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

fn read_ca(cfg: &SinkConfig) -> anyhow::Result<Option<Vec<u8>>> {
    cfg.ca_file
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("sink `{}`: reading ca_file {}", cfg.name, p.display())))
        .transpose()
}

fn build(cfg: &SinkConfig, settings: &Settings, env: Env<'_>) -> anyhow::Result<Transport> {
    let timeout = Duration::from_secs(cfg.timeout_seconds.unwrap_or(10));
    Ok(match cfg.kind.as_str() {
        "kafka" => {
            let mut kafka = settings.raw.kafka.clone();
            if let Some(b) = &cfg.brokers {
                kafka.brokers = b.clone();
            }
            if let Some(p) = &cfg.properties {
                kafka.properties = p.clone();
            }
            Transport::Kafka(kafka::KafkaSink::new(
                &kafka,
                cfg.topic.clone().unwrap_or_default(),
                timeout,
            )?)
        }
        "splunk_hec" => {
            let token = secret(cfg, "token_env", cfg.token_env.as_ref(), env)?;
            let target = hec::HecTarget {
                host: cfg.hostname.clone().unwrap_or_else(hostname),
                index: cfg.index.clone(),
                sourcetype: cfg
                    .sourcetype
                    .clone()
                    .unwrap_or_else(|| hec::HecTarget::default().sourcetype),
                ..hec::HecTarget::default()
            };
            Transport::Hec(http::HecSink::new(
                http::client(read_ca(cfg)?.as_deref(), timeout)?,
                cfg.url.clone().unwrap_or_default(),
                &token,
                target,
                cfg.gzip.unwrap_or(true),
            ))
        }
        "webhook" => {
            let secret = secret(cfg, "secret_env", cfg.secret_env.as_ref(), env)?;
            Transport::Webhook(http::WebhookSink::new(
                http::client(read_ca(cfg)?.as_deref(), timeout)?,
                cfg.url.clone().unwrap_or_default(),
                secret.into_bytes(),
            ))
        }
        _ => {
            let transport = match cfg.transport.as_deref().unwrap_or("tcp") {
                "udp" => syslog::Transport::Udp,
                "tls" => syslog::Transport::Tls,
                _ => syslog::Transport::Tcp,
            };
            let tls = if transport == syslog::Transport::Tls {
                let mut b = native_tls::TlsConnector::builder();
                if let Some(pem) = read_ca(cfg)? {
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
                cfg.address.clone().unwrap_or_default(),
                transport,
                tls,
                syslog::facility(cfg.facility.as_deref().unwrap_or("auth")).unwrap_or(4),
                cfg.hostname.clone().unwrap_or_else(hostname),
                timeout,
            ))
        }
    })
}

impl Sinks {
    /// Opens the outbox and starts one worker per configured sink on the current runtime.
    /// Fails, before anything is sent, when a sink cannot be built (a missing secret, an
    /// unreadable CA file).
    pub fn start(settings: &Settings) -> anyhow::Result<Sinks> {
        Sinks::start_with_env(settings, &|var| std::env::var(var).ok())
    }

    /// As [`Sinks::start`], with secrets looked up in `env`.
    pub fn start_with_env(settings: &Settings, env: Env<'_>) -> anyhow::Result<Sinks> {
        let cfg = &settings.raw.outbox;
        let outbox = Arc::new(
            Outbox::open(
                &cfg.dir,
                outbox::Limits {
                    max_bytes: cfg.max_bytes,
                    segment_bytes: cfg.segment_bytes,
                },
            )
            .with_context(|| format!("opening the outbox (outbox.dir in {})", settings.origin))?,
        );
        let mut transports = Vec::new();
        for sink in &settings.raw.sinks {
            transports.push((sink.clone(), build(sink, settings, env)?));
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
                min_severity: sink
                    .min_severity
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(Severity::Info),
                batch: if sink.kind == "webhook" {
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
