//! `nhiwatch demo`: librdkafka's mock cluster (a real Kafka-protocol broker on 127.0.0.1) with
//! generated traffic streamed into it in event-time order, consumed through the same Kafka
//! ingest, pipeline and detection engine as `run`; findings are printed as they are raised and
//! scored against the generator's labels at the end.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::kafka::embedded::Embedded;
use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::baseline;
use crate::config::KafkaConfig;
use crate::detect::Detectors;
use crate::engine::{Detection, Engine};
use crate::findings::store::FindingStore;
use crate::generate::{GenRecord, Stream};
use crate::http::auth::Auth;
use crate::http::{AppState, ConnectionLimits};
use crate::ingest::Offsets;
use crate::ingest::dead_letter::FileDeadLetter;
use crate::kafka;
use crate::normalize::{DEFAULT_MAX_RECORD_BYTES, Normalizer, Pseudonymizer};
use crate::registry::Registry;
use crate::runtime::{Announce, Normalize, Outputs, Runtime, Single};
use crate::sink::Sinks;
use crate::sink::kafka::KafkaSinkConfig;
use crate::sink::{SinkConfig, Target};
use crate::telemetry::metrics::Metrics;
use clap::Args;
use std::path::PathBuf;

/// Scenario size, shared by `demo` and `generate`.
#[derive(Debug, Clone, Args)]
pub struct ScenarioArgs {
    /// Number of integrations.
    #[arg(long, default_value_t = 40)]
    pub identities: usize,
    /// Days of traffic.
    #[arg(long, default_value_t = 45)]
    pub days: u32,
    /// Random seed (same seed, same output).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// The generator options these arguments select.
impl ScenarioArgs {
    pub fn options(&self) -> crate::generate::Options {
        crate::generate::Options {
            identities: self.identities,
            days: self.days,
            seed: self.seed,
            ..crate::generate::Options::default()
        }
    }
}

/// `demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Scenario to stream.
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Records per second to produce (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    /// Partitions per topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// How many identities to list in the summary.
    #[arg(long, default_value_t = 15)]
    pub top: usize,
    /// Where to serve the HTTP API (loopback; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// After the stream is consumed, keep serving the API this many seconds (Ctrl-C stops
    /// sooner; 0 exits at once).
    #[arg(long, default_value_t = 300)]
    pub serve_for: u64,
    /// A configuration whose `[[sinks]]` also receive the demo's findings (e.g. a test Splunk
    /// or syslog collector). Findings always go to the `nhiwatch-findings` topic on the
    /// embedded broker.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// Hours of event time the demo's reorder buffer waits (README, "The two commands"): its nine
/// partitions are fetched unevenly while generated days stream by in seconds.
pub const REORDER_HOURS: i64 = 48;

/// The embedded broker's topic of OCSF findings.
pub const FINDINGS_TOPIC: &str = "nhiwatch-findings";

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    crate::telemetry::init("warn", false);
    let started = Instant::now();
    let mut scenario = crate::generate::generate(&args.scenario.options());
    println!(
        "Generated {} records from {} integrations over {} days ({} labelled anomalies).",
        scenario.records.len(),
        args.scenario.identities,
        args.scenario.days,
        scenario.labels.len()
    );

    let cluster = Embedded::start().context("starting the embedded Kafka broker")?;
    let brokers = cluster.brokers();
    for stream in [Stream::FhirAudit, Stream::Gateway, Stream::Idp] {
        cluster.create_topic(stream.topic(), args.partitions)?;
    }
    println!("Embedded Kafka broker on {brokers}; topics fhir-audit, gateway-access, idp-audit.");
    println!("Patient references are pseudonymised under a random key made for this run.");

    let producer_brokers = brokers.clone();
    let records = std::mem::take(&mut scenario.records);
    let total = records.len() as u64;
    let rate = args.rate;
    let progress = Arc::new(AtomicU64::new(0));
    let consumed_so_far = Arc::clone(&progress);
    let producer = std::thread::spawn(move || produce(&producer_brokers, &records, rate, &consumed_so_far));

    let dead_letter_path =
        std::env::temp_dir().join(format!("nhiwatch-demo-dead-letter-{}.ndjson", std::process::id()));
    let dead_letter = FileDeadLetter::open(&dead_letter_path)?;
    let metrics = Arc::new(Metrics::default());
    let normalize = Normalize::new(
        Normalizer::new(Pseudonymizer::random(), DEFAULT_MAX_RECORD_BYTES),
        Box::new(dead_letter),
        DEFAULT_MAX_RECORD_BYTES,
    )
    .with_metrics(Arc::clone(&metrics))
    .with_workers(crate::ingest::one_per_core());
    let cfg = KafkaConfig {
        brokers: brokers.clone(),
        group_id: "nhiwatch-demo".into(),
        topics: vec!["fhir-audit".into(), "gateway-access".into(), "idp-audit".into()],
        auto_offset_reset: crate::kafka::OffsetReset::Earliest,
        instance_id: String::new(),
        properties: Default::default(),
        ..crate::config::Settings::load(None)?.raw.kafka
    };
    let registry = Registry::parse(&scenario.registry, std::path::Path::new("generated registry.toml"))?;
    let engine = Engine::new(Detectors::default(), Some(registry), baseline::Settings::default());
    // Generated days stream by in seconds and nine partitions are fetched unevenly, so events
    // may arrive days of event time apart: the demo's lateness bound is wider than a live one's.
    let detection = Detection::new(engine, chrono::Duration::hours(REORDER_HOURS), true);
    // Findings go to SIEM sinks through the outbox, as in `run`: always the embedded broker's
    // `nhiwatch-findings` topic, plus any sinks of `--config`.
    let mut settings = match &args.config {
        Some(path) => crate::config::Settings::load(Some(path))?,
        None => crate::config::Settings::load_with_env(None, &[])?,
    };
    cluster.create_topic(FINDINGS_TOPIC, 1)?;
    settings.raw.kafka.brokers = brokers.clone();
    settings.raw.kafka.properties.clear();
    let outbox_dir = std::env::temp_dir().join(format!("nhiwatch-demo-outbox-{}", std::process::id()));
    settings.raw.outbox.dir = outbox_dir.clone();
    let topic = KafkaSinkConfig {
        topic: FINDINGS_TOPIC.into(),
        ..KafkaSinkConfig::default()
    };
    settings
        .sinks
        .insert(0, SinkConfig::new("demo-topic", Target::Kafka(topic)));
    let runtime = tokio::runtime::Runtime::new()?;
    let sinks = {
        let _guard = runtime.enter();
        Sinks::start(settings.sink_setup())?
    };
    metrics.register(sinks.exposition());
    let store = Arc::new(
        FindingStore::in_memory(100_000)
            .with_quiet(detection.engine().detectors().quiet_periods())
            .with_outbox(Arc::clone(&sinks.outbox)),
    );
    let read_token = random_token();
    let admin_token = random_token();
    let ready = Arc::new(AtomicBool::new(false));
    // An archive for this run, so that the query API and the dashboard's evidence have events
    // to read: a fresh private directory, removed when the demo ends however it ends.
    let archive_dir = tempfile::Builder::new()
        .prefix("nhiwatch-demo-archive-")
        .tempdir()
        .context("creating the demo's archive directory")?;
    let archive_location = archive_dir.path().display().to_string();
    let archive = crate::archive::Archive::open(&archive_location, settings.archive_limits())?;
    let queries = crate::replay::sandbox::Sandbox::for_archive(&archive_location, None, &settings.raw.archive)
        .context("finding this executable to run queries in")?;
    let state = AppState::new(
        detection.engine(),
        Arc::clone(&store),
        Auth::new(&settings.raw.http, Some(&read_token), Some(&admin_token)),
        &settings.raw.http,
        Arc::clone(&metrics),
        Arc::clone(&ready),
    )
    .with_sql(Arc::new(queries));
    let (addr, _server) = runtime
        .block_on(crate::http::serve(
            &args.listen,
            state,
            ConnectionLimits::from_config(&settings.raw.http),
        ))
        .with_context(|| format!("listening on {} (choose another with --listen)", args.listen))?;
    println!("Dashboard: http://{addr}/#token={read_token}");
    println!("HTTP API on http://{addr}/ — read token {read_token}, admin token {admin_token} (this run only).");
    println!("  curl -H 'Authorization: Bearer {read_token}' http://{addr}/v1/findings");
    println!("Findings as they are raised (event time, severity, detector, title):");
    // As the analyst sees them: each aggregated into the open finding of its detector ×
    // identity × cause, printed when new or changed.
    let outputs = Outputs::none()
        .archive(Some(archive), crate::runtime::ArchiveFindings::EachChange)
        .store(Arc::clone(&store))
        .metrics(Arc::clone(&metrics))
        .announce(Announce::Print(crate::report::finding_line));
    let mut demo = Runtime::new(normalize, Single::new(detection), outputs);
    let consumed = runtime.block_on(async {
        let consumer = kafka::subscribe(&cfg, Some(Arc::clone(&metrics)), Offsets::default())?;
        ready.store(true, Ordering::Release);
        let deadline = tokio::time::sleep(Duration::from_secs(600));
        let n = kafka::consume(
            &consumer,
            &mut demo,
            kafka::Options {
                limit: Some(total),
                progress: Some(&progress),
                metrics: Some(&metrics),
                ..kafka::Options::default()
            },
            deadline,
        )
        .await?;
        anyhow::Ok(n)
    })?;
    let produced = producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
    demo.finish();
    let Runtime {
        normalize: pipeline,
        judge: Single { detection, .. },
        mut outputs,
    } = demo;
    // Everything consumed is in the archive before the API serves queries over it.
    outputs.durable()?;
    let elapsed = started.elapsed();
    println!();
    print!("{}", crate::report::summary(pipeline.stats(), args.top));
    println!();
    // As the analyst sees them: one finding per problem.
    let findings = crate::findings::aggregate(detection.findings());
    print!("{}", crate::report::findings_summary(&findings));
    println!(
        "{} events arrived later than the {REORDER_HOURS}-hour reorder bound (processed, counted).",
        detection.late()
    );
    let labels = &scenario.labels;
    let scored: Vec<crate::score::Scored> = findings.iter().map(crate::score::Scored::from).collect();
    println!();
    println!("Accuracy against the {} injected anomalies:", labels.len());
    print!(
        "{}",
        crate::score::table(&crate::score::score(labels, &scored, chrono::Duration::minutes(5)))
    );
    let drained = runtime.block_on(sinks.drain(Duration::from_secs(30)));
    println!();
    println!(
        "Finding changes delivered to SIEM sinks through the outbox ({} queued{}):",
        sinks.outbox.head(),
        if drained { "" } else { "; some still pending" }
    );
    for (cfg, st) in settings.sinks.iter().zip(&sinks.stats) {
        println!(
            "  {:<12} {:<10} {:<28} delivered {:>5}  failed attempts {:>3}  filtered {:>3}",
            st.name,
            cfg.target.kind(),
            cfg.target.destination(),
            st.delivered.load(Ordering::Relaxed),
            st.failed.load(Ordering::Relaxed),
            st.filtered.load(Ordering::Relaxed)
        );
    }
    println!();
    println!(
        "Produced {produced} and consumed {consumed} records through Kafka in {:.1} s ({:.0} records/s end to end).",
        elapsed.as_secs_f64(),
        consumed as f64 / elapsed.as_secs_f64()
    );
    if pipeline.stats().dead_lettered() > 0 {
        println!("Dead letters: {}", dead_letter_path.display());
    } else {
        let _ = std::fs::remove_file(&dead_letter_path);
    }
    if consumed < total {
        anyhow::bail!("consumed {consumed} of {total} records before the deadline");
    }
    if args.serve_for > 0 {
        println!();
        println!(
            "Serving http://{addr}/ (read token {read_token}) for {} more seconds; Ctrl-C to stop sooner.",
            args.serve_for
        );
        runtime.block_on(async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                () = tokio::time::sleep(Duration::from_secs(args.serve_for)) => {}
            }
        });
    }
    // The broker lives while the API does: status changes made on the dashboard are delivered
    // to the sinks too.
    runtime.block_on(sinks.stop());
    let _ = std::fs::remove_dir_all(&outbox_dir);
    drop(archive_dir);
    drop(cluster);
    Ok(ExitCode::SUCCESS)
}

/// A random API token for this run (128 bits, hex).
fn random_token() -> String {
    use rand::TryRngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system provides randomness");
    hex::encode(bytes)
}

/// How far the producer may run ahead of the consumer. librdkafka's mock cluster keeps only
/// the last few megabytes of each partition, so an unbounded producer would lose records.
const WINDOW: u64 = 5_000;

/// Produces every record to its topic, keyed by identity, at `rate` records/s (0: unpaced),
/// staying at most [`WINDOW`] records ahead of `consumed`.
fn produce(brokers: &str, records: &[GenRecord], rate: u64, consumed: &AtomicU64) -> anyhow::Result<u64> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    let started = Instant::now();
    for (n, r) in records.iter().enumerate() {
        let record = BaseRecord::to(r.stream.topic())
            .key(r.identity.as_bytes())
            .payload(r.line.as_bytes());
        kafka::send_waiting(&producer, record)?;
        producer.poll(Duration::ZERO);
        let waited = Instant::now();
        while n as u64 >= consumed.load(Ordering::Acquire) + WINDOW {
            producer.poll(Duration::from_millis(2));
            if waited.elapsed() > Duration::from_secs(120) {
                anyhow::bail!("the consumer made no progress for two minutes");
            }
        }
        if rate > 0 && n % 1000 == 999 {
            let due = Duration::from_secs_f64((n + 1) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(records.len() as u64)
}
