//! `nhiwatch bench`: the end-to-end benchmark on a real Kafka broker, side by side with kcat.
//!
//! In one run, on one broker (the embedded mock cluster, or `--brokers`):
//! 1. the state of `--state-identities` identities of the common case, as resident-set growth
//!    per identity (first, on a fresh heap);
//! 2. a fixed generated event set (`--events`, `--identities`, seed 1) produced to one topic
//!    (lz4, large batches: the mock cluster keeps 5 MB per partition, so the topic has
//!    `--partitions` partitions, and the run checks that nothing was dropped);
//! 3. Debian's `kcat -C -o beginning -e -q` reading the whole topic to `/dev/null`: the reference
//!    rate of raw consumption on this broker and machine;
//! 4. nhiwatch consuming the same topic through the whole pipeline (normalize, state, detectors,
//!    findings, archive to a temporary directory) to the end;
//! 5. nhiwatch at half of the rate it just reached, fed by a paced producer on a second topic,
//!    with the latency from producer append to judged by the detectors (HdrHistogram
//!    p50/p99/p99.9; reorder bound 0, after a warm-up that covers the group join).
//!
//! It prints one table and, with `--json`, writes the same figures for tracking. Nothing in it
//! asserts on time.
// A command: its report is its standard output.
#![allow(clippy::print_stdout)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::kafka::embedded::Embedded;
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use rdkafka::ClientConfig;
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use serde::Serialize;

use crate::baseline;
use crate::config::KafkaConfig;
use crate::detect::Detectors;
use crate::engine::{Detection, Engine};
use crate::event::{Event, EventKind, IdentityType, Interaction, Outcome, SourceFormat};
use crate::ingest::Offsets;
use crate::ingest::dead_letter::FileDeadLetter;
use crate::kafka;
use crate::normalize::{DEFAULT_MAX_RECORD_BYTES, Normalizer, Pseudonymizer};
use crate::registry::Registry;
use crate::runtime::{ArchiveFindings, Judge, Normalize, Outputs, Runtime, Single};
use crate::scope::Scope;
use crate::telemetry::metrics::Metrics;

/// `bench` options.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Events in the fixed set (the defaults make a run of about two minutes on a laptop; the
    /// large run is `--events 5000000 --identities 10000 --state-identities 1000000
    /// --latency-seconds 20`).
    #[arg(long, default_value_t = 500_000)]
    pub events: usize,
    /// Identities they come from.
    #[arg(long, default_value_t = 2_000)]
    pub identities: usize,
    /// A Kafka bootstrap address (e.g. a `tansu` broker); default: the embedded mock cluster.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Partitions of the benchmark topics; default: one per 10,000 events (at least 4), which
    /// the embedded broker's 5 MB per partition holds.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Identities of state for the memory figure.
    #[arg(long, default_value_t = 200_000)]
    pub state_identities: usize,
    /// Seconds of the paced latency run.
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// The reference consumer.
    #[arg(long, default_value = "kcat")]
    pub kcat: String,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// Events in the set.
    pub events: u64,
    /// Identities in the set.
    pub identities: usize,
    /// Bytes of the raw records.
    pub bytes: u64,
    /// The broker: `embedded` or the bootstrap address.
    pub broker: String,
    /// Partitions of the topics.
    pub partitions: i32,
    /// Producing the set, events/s.
    pub produce_events_per_s: f64,
    /// kcat reading the topic, events/s (`None` when kcat is not installed).
    pub kcat_events_per_s: Option<f64>,
    /// nhiwatch's whole pipeline, events/s.
    pub nhiwatch_events_per_s: f64,
    /// Threads normalizing records in that run (`ingest.workers`' default: one per core).
    pub workers: usize,
    /// The same pipeline normalizing on one thread (as before issue 22), events/s.
    pub one_worker_events_per_s: f64,
    /// nhiwatch / kcat.
    pub ratio_to_kcat: Option<f64>,
    /// Findings raised by the pipeline run.
    pub findings: usize,
    /// The paced rate of the latency run, events/s.
    pub paced_events_per_s: f64,
    /// Events of the latency run.
    pub paced_events: u64,
    /// Append-to-processed latency, milliseconds: p50, p99, p99.9.
    pub latency_ms: [f64; 3],
    /// Identities of state measured.
    pub state_identities: usize,
    /// Resident-set growth per identity, bytes.
    pub state_bytes_per_identity: f64,
    /// Size of a checkpoint of that state, bytes.
    pub checkpoint_bytes: u64,
    /// Seconds to write it (encode, write, sync).
    pub checkpoint_write_s: f64,
    /// Seconds to restore it at start (read, verify, decode).
    pub checkpoint_restore_s: f64,
    /// Seconds from a restart with that state (restore, group join) to having read the whole
    /// set again as its backlog.
    pub recovery_s: f64,
    /// Identities of one partition's share of that state.
    pub partition_identities: usize,
    /// Size of that partition's changelog record, bytes.
    pub partition_state_bytes: u64,
    /// Seconds to write it to the changelog at a commit point (encode, send, acknowledged).
    pub partition_write_s: f64,
    /// Seconds for the new owner to restore it when the partition moves (read, verify, decode).
    pub partition_restore_s: f64,
}

/// The events one identity of the common case shows: a token with three scopes, then reads
/// and searches, from one address, hourly, for six hours.
pub fn common_case(identity: &str, start: DateTime<Utc>, out: &mut Vec<Event>) {
    for h in 0..6 {
        let t = start + chrono::Duration::hours(h);
        let mut token = Event::new(
            format!("{identity}-t{h}"),
            t,
            SourceFormat::Okta,
            EventKind::TokenIssued,
            identity.into(),
        );
        token.identity_type = IdentityType::Application;
        token.outcome = Outcome::Success;
        token.src_ip = Some("10.20.1.15".into());
        token.user_agent = Some("Mirth Connect/4.4.1".into());
        token.scopes = Scope::parse_list("system/Patient.rs system/Observation.rs system/Encounter.rs");
        out.push(token);
        for (n, (interaction, resource)) in [
            (Interaction::Read, "Patient"),
            (Interaction::Search, "Observation"),
            (Interaction::Search, "Encounter"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = Event::new(
                format!("{identity}-{h}-{n}"),
                t + chrono::Duration::minutes(10 + n as i64),
                SourceFormat::FhirAuditEvent,
                EventKind::DataAccess,
                identity.into(),
            );
            e.identity_type = IdentityType::Application;
            e.outcome = Outcome::Success;
            e.interaction = Some(interaction);
            e.resource_type = Some(resource.into());
            e.patient_count = Some(2);
            e.src_ip = Some("10.20.1.15".into());
            e.user_agent = Some("Mirth Connect/4.4.1".into());
            out.push(e);
        }
    }
}

/// Resident-set growth per identity after `n` identities of the common case went through the
/// engine; returns (identities held, bytes per identity).
pub fn state_memory(n: usize) -> (usize, f64) {
    let start: DateTime<Utc> = DateTime::from_timestamp(1_767_571_200, 0).unwrap_or_default();
    // The record ids remembered to drop repeats are bounded by `engine.dedupe_max_ids` however
    // many identities there are: they are not part of the per-identity figure.
    let mut engine = Engine::new(Detectors::default(), None, baseline::Settings::default())
        .with_dedupe(crate::engine::Dedupe::new(0, 0));
    let mut updates = Vec::new();
    let mut events = Vec::with_capacity(32);
    let before = crate::telemetry::metrics::resident_bytes();
    for i in 0..n {
        events.clear();
        common_case(&format!("integration-{i:07}"), start, &mut events);
        for e in &events {
            engine.process(e, e.time, &mut updates);
        }
        updates.clear();
    }
    let grown = crate::telemetry::metrics::resident_bytes().saturating_sub(before);
    (engine.baseline().len(), grown as f64 / n.max(1) as f64)
}

/// Detection holding `n` identities of the common case.
fn common_state(n: usize) -> crate::engine::Detection {
    let start: DateTime<Utc> = DateTime::from_timestamp(1_767_571_200, 0).unwrap_or_default();
    let engine = Engine::new(Detectors::default(), None, baseline::Settings::default());
    let mut detection = crate::engine::Detection::new(engine, chrono::Duration::zero(), false);
    let mut events = Vec::with_capacity(32);
    for i in 0..n {
        events.clear();
        common_case(&format!("integration-{i:07}"), start, &mut events);
        for e in events.drain(..) {
            detection.push(e, &mut |_| {});
        }
    }
    detection
}

/// What moving one partition holding `n` identities costs a group member, besides the
/// group's own rebalance: the partition's state written to the changelog at a commit point
/// (encode, send, acknowledged), and read back and restored by the member it is assigned to
/// (read to the end, verify, decode). Returns (record bytes, write, restore).
pub fn partition_move_cost(
    brokers: &str,
    cluster: Option<&crate::kafka::embedded::Embedded>,
    n: usize,
) -> anyhow::Result<(u64, Duration, Duration)> {
    use crate::kafka::Owner as _;
    let suffix = std::process::id();
    let cfg = crate::config::KafkaConfig {
        brokers: brokers.to_owned(),
        events_topic: format!("bench-events-{suffix}"),
        changelog_topic: format!("bench-changelog-{suffix}"),
        changelog_replication: 1,
        ..crate::config::Settings::load(None)?.raw.kafka
    };
    match cluster {
        Some(c) => {
            c.create_topic(&cfg.events_topic, 1)?;
            c.create_topic(&cfg.changelog_topic, 1)?;
        }
        None => create_topics(brokers, &[&cfg.events_topic], 1)?,
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let changelog = runtime.block_on(crate::group::Changelog::open(&cfg))?;
    let detection = common_state(n);
    let written = Instant::now();
    let mut offsets = crate::ingest::Offsets::default();
    offsets.advance(&cfg.events_topic, 0, 1);
    let payload = crate::engine::state::encode(&detection, &offsets)?;
    let before = changelog.failures();
    changelog.write(0, 1, &payload)?;
    changelog.flush(before)?;
    let write = written.elapsed();
    drop(detection);
    let engine = Engine::new(Detectors::default(), None, baseline::Settings::default());
    let partitions = crate::group::Partitions::new(
        &cfg.events_topic,
        changelog,
        engine,
        chrono::Duration::zero(),
        1,
        usize::MAX,
    );
    let restored = Instant::now();
    let start = partitions.assigned(&cfg.events_topic, 0);
    let restore = restored.elapsed();
    let held: usize = {
        let mut count = 0;
        partitions.baselines().for_each(|_, _| count += 1);
        count
    };
    anyhow::ensure!(
        start == Some(1) && held == n,
        "restored {held} identities of {n}, from {start:?}"
    );
    Ok((
        crate::engine::checkpoint::seal(1, &payload).len() as u64,
        write,
        restore,
    ))
}

/// What a checkpoint of `n` identities of the common case costs: its size in bytes, the time to
/// write it (encode, write, sync) and the time to restore it at start (read, verify, decode).
pub fn checkpoint_cost(n: usize) -> anyhow::Result<(u64, Duration, Duration)> {
    let engine = || Engine::new(Detectors::default(), None, baseline::Settings::default());
    let detection = common_state(n);
    let dir = std::env::temp_dir().join(format!("nhiwatch-bench-checkpoint-{}", std::process::id()));
    let open = || crate::engine::state::StateStore::open(&dir, 2, engine(), chrono::Duration::zero(), false);
    let (mut store, _) = open()?;
    let written = Instant::now();
    let path = store.save(&detection, &crate::ingest::Offsets::default())?;
    let write = written.elapsed();
    let bytes = std::fs::metadata(&path)?.len();
    drop(detection);
    let restored = Instant::now();
    let (_, back) = open()?;
    let restore = restored.elapsed();
    std::fs::remove_dir_all(&dir)?;
    anyhow::ensure!(
        back.detection.engine().baseline().len() == n,
        "restored {} identities of {n}",
        back.detection.engine().baseline().len()
    );
    Ok((bytes, write, restore))
}

/// Produces `records` to `topic`: as fast as the broker takes them, round-robin over its
/// `partitions` (even, so that no partition of the embedded broker overflows first), or at
/// `rate` records/s, partitioned by librdkafka.
fn produce(
    brokers: &str,
    topic: &str,
    partitions: i32,
    records: &[String],
    rate: Option<f64>,
) -> anyhow::Result<Duration> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576");
    if rate.is_some() {
        // Latency run: small batches, no compression delay to speak of.
        config.set("linger.ms", "1");
    } else {
        config
            .set("linger.ms", "50")
            .set("batch.size", "1000000")
            .set("compression.type", "lz4");
    }
    let producer: BaseProducer = config.create()?;
    let started = Instant::now();
    for (n, line) in records.iter().enumerate() {
        let record = BaseRecord::<(), [u8]>::to(topic).payload(line.as_bytes());
        // Paced, librdkafka's sticky partitioner fills one partition's batch at a time, as a
        // service's keyless producer does; round-robin would send a batch of one record per
        // partition, and the embedded broker, which scans its batches per fetch, would take a
        // core from the pipeline being measured.
        let record = match rate {
            Some(_) => record,
            None => record.partition((n % partitions.max(1) as usize) as i32),
        };
        kafka::send_waiting(&producer, record)?;
        producer.poll(Duration::ZERO);
        if let Some(rate) = rate
            && n % 100 == 99
        {
            let due = Duration::from_secs_f64((n + 1) as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(started.elapsed())
}

/// Checks that every one of `expected` messages is still in `topic` (the mock cluster drops
/// the oldest beyond 5 MB per partition).
fn check_kept(brokers: &str, topic: &str, partitions: i32, expected: u64) -> anyhow::Result<()> {
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "nhiwatch-bench-watermarks")
        .create()?;
    let (mut kept, mut dropped) = (0i64, 0i64);
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        kept += high - low;
        dropped += low;
    }
    if dropped > 0 || kept as u64 != expected {
        bail!(
            "the broker holds {kept} of {expected} messages of {topic} ({dropped} dropped): the embedded broker keeps \
             5 MB per partition; give more --partitions"
        );
    }
    Ok(())
}

/// Times the reference consumer reading the whole topic; `None` when it is not installed.
fn time_kcat(kcat: &str, brokers: &str, topic: &str) -> anyhow::Result<Option<Duration>> {
    let installed = Command::new(kcat)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !installed {
        return Ok(None);
    }
    let started = Instant::now();
    let status = Command::new(kcat)
        .args(["-C", "-b", brokers, "-t", topic, "-o", "beginning", "-e", "-q"])
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {kcat}"))?;
    let took = started.elapsed();
    if !status.success() {
        bail!("{kcat} failed: {status}");
    }
    Ok(Some(took))
}

/// How a pipeline run is set up.
struct Run {
    /// The reorder buffer's lateness bound.
    lateness: chrono::Duration,
    /// Where the latency histogram goes.
    metrics: Arc<Metrics>,
    /// Kept equal to the records processed so far.
    progress: Arc<AtomicU64>,
    /// A checkpoint directory to restore first (a restart after `kill -9`): then the time
    /// returned runs from before the restore, the group's join included, to the last record.
    restore_from: Option<std::path::PathBuf>,
    /// Threads normalizing records.
    workers: usize,
}

impl Run {
    /// A run with reorder bound `lateness`, fresh metrics and progress, normalizing on one
    /// thread per core.
    fn new(lateness: chrono::Duration) -> Run {
        Run {
            lateness,
            metrics: Arc::new(Metrics::default()),
            progress: Arc::new(AtomicU64::new(0)),
            restore_from: None,
            workers: crate::ingest::one_per_core(),
        }
    }
}

/// nhiwatch's pipeline over `limit` records of `topic`: normalize, engine, findings, archive.
/// Returns (time from the first record to the last processed and the archive flushed — the
/// consumer group's join, which kcat's simple consumer does not make, is left out — findings,
/// the append-to-processed latency's p50/p99/p99.9 in ms).
fn pipeline_run(
    brokers: &str,
    topic: &str,
    limit: u64,
    registry: &Registry,
    archive_dir: &std::path::Path,
    run: &Run,
) -> anyhow::Result<(Duration, usize, [f64; 3])> {
    let metrics = Arc::clone(&run.metrics);
    let dead_letter = FileDeadLetter::open(&archive_dir.join("dead-letter.ndjson"))?;
    let normalize = Normalize::new(
        Normalizer::new(Pseudonymizer::random(), DEFAULT_MAX_RECORD_BYTES),
        Box::new(dead_letter),
        DEFAULT_MAX_RECORD_BYTES,
    )
    .with_metrics(Arc::clone(&metrics))
    .with_workers(run.workers);
    let engine = Engine::new(
        Detectors::default(),
        Some(registry.clone()),
        baseline::Settings::default(),
    );
    let called = Instant::now();
    let (detection, group) = match &run.restore_from {
        Some(dir) => (
            crate::engine::state::StateStore::open(dir, 2, engine, run.lateness, false)?
                .1
                .detection,
            format!("nhiwatch-bench-{topic}-restarted-{}", run.workers),
        ),
        None => (
            Detection::new(engine, run.lateness, false),
            format!("nhiwatch-bench-{topic}-{}", run.workers),
        ),
    };
    let archive = crate::archive::Archive::open(
        archive_dir.join(topic).to_str().context("archive path")?,
        crate::archive::Limits::default(),
    )?;
    let cfg = KafkaConfig {
        brokers: brokers.to_owned(),
        group_id: group,
        topics: vec![topic.to_owned()],
        auto_offset_reset: crate::kafka::OffsetReset::Earliest,
        instance_id: String::new(),
        // librdkafka's mock broker answers a fetch that finds no data only after the whole
        // `fetch.wait.max.ms` (default 500), where Kafka answers as soon as data arrives: left
        // at the default, the latency figure would measure that wait.
        properties: [("fetch.wait.max.ms".to_owned(), "10".to_owned())]
            .into_iter()
            .collect(),
        ..crate::config::Settings::load(None)?.raw.kafka
    };
    // The archive takes the canonical identity of each event and every change of a finding,
    // as `run`'s does.
    let outputs = Outputs::none().archive(Some(archive), ArchiveFindings::EachChange);
    let judge = FirstEvent {
        judge: Single::new(detection),
        first: None,
    };
    let mut pipeline = Runtime::new(normalize, judge, outputs);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let consumer = kafka::subscribe(&cfg, None, Offsets::default())?;
        let n = kafka::consume(
            &consumer,
            &mut pipeline,
            kafka::Options {
                limit: Some(limit),
                progress: Some(&run.progress),
                metrics: Some(&metrics),
                ..kafka::Options::default()
            },
            tokio::time::sleep(Duration::from_secs(3600)),
        )
        .await?;
        if n < limit {
            bail!("consumed {n} of {limit} records within an hour");
        }
        anyhow::Ok(())
    })?;
    pipeline.finish();
    let Runtime { judge, mut outputs, .. } = pipeline;
    if outputs.archive_failed() {
        bail!("the archive stopped taking rows (see the log)");
    }
    if let Some(a) = &mut outputs.archive {
        a.flush()?;
    }
    let (detection, first) = (judge.judge.detection, judge.first);
    let took = match run.restore_from {
        Some(_) => called.elapsed(),
        None => first.map_or(Duration::ZERO, |t| t.elapsed()),
    };
    let q = metrics.latency_quantiles(&[0.5, 0.99, 0.999]);
    Ok((took, detection.findings().len(), [q[0], q[1], q[2]]))
}

/// A judge that notes when the first event reached it (the benchmark's clock starts there).
struct FirstEvent<J> {
    judge: J,
    first: Option<Instant>,
}

impl<J: Judge> Judge for FirstEvent<J> {
    fn event(&mut self, partition: Option<i32>, event: Event, out: &mut Outputs) {
        self.first.get_or_insert_with(Instant::now);
        self.judge.event(partition, event, out);
    }

    fn durable(&mut self, offsets: &Offsets, out: &mut Outputs) -> anyhow::Result<()> {
        self.judge.durable(offsets, out)
    }

    fn finish(&mut self, out: &mut Outputs) {
        self.judge.finish(out);
    }
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    crate::telemetry::init("warn", false);
    println!(
        "nhiwatch bench: {} events from {} identities; state of {} identities",
        args.events, args.identities, args.state_identities
    );
    let (held, per_identity) = state_memory(args.state_identities);
    println!("  state: {held} identities, {per_identity:.0} bytes each (resident-set growth)");
    let (checkpoint_bytes, write, restore) = checkpoint_cost(args.state_identities)?;
    println!(
        "  checkpoint of {held} identities: {:.1} MB, written in {:.2} s, restored in {:.2} s",
        checkpoint_bytes as f64 / 1e6,
        write.as_secs_f64(),
        restore.as_secs_f64()
    );

    // A fixed set: the generator at scale, seed 1, cut to the requested count.
    let per_identity_day = 60.0;
    let days = ((args.events as f64 / (args.identities as f64 * per_identity_day)).ceil() as u32).max(1) + 1;
    let scenario = crate::generate::generate(&crate::generate::Options {
        identities: args.identities,
        days,
        seed: 1,
        ..Default::default()
    });
    let registry = Registry::parse(&scenario.registry, std::path::Path::new("generated registry.toml"))?;
    let mut lines: Vec<String> = scenario.records.into_iter().map(|r| r.line).collect();
    if lines.len() < args.events {
        bail!(
            "the generator made {} records for {} identities over {days} days, fewer than --events {}",
            lines.len(),
            args.identities,
            args.events
        );
    }
    lines.truncate(args.events);
    let bytes: u64 = lines.iter().map(|l| l.len() as u64).sum();
    println!("  generated {} records, {:.1} MB", lines.len(), bytes as f64 / 1e6);

    let cluster = match &args.brokers {
        Some(_) => None,
        None => Some(Embedded::start().context("starting the embedded Kafka broker")?),
    };
    let brokers = match (&args.brokers, &cluster) {
        (Some(b), _) => b.clone(),
        (None, Some(c)) => c.brokers(),
        (None, None) => unreachable!("a cluster is started when no brokers are given"),
    };
    let partitions = args
        .partitions
        .unwrap_or_else(|| i32::try_from(args.events.div_ceil(10_000)).unwrap_or(i32::MAX).max(4));
    let suffix = std::process::id();
    let (topic, paced_topic) = (format!("bench-{suffix}"), format!("bench-paced-{suffix}"));
    if let Some(c) = &cluster {
        c.create_topic(&topic, partitions)?;
        c.create_topic(&paced_topic, partitions)?;
    } else {
        create_topics(&brokers, &[&topic, &paced_topic], partitions)?;
    }

    let per_partition = args.state_identities / usize::try_from(partitions.max(1))?;
    let (move_bytes, move_write, move_restore) = partition_move_cost(&brokers, cluster.as_ref(), per_partition)?;
    println!(
        "  moving a partition of {per_partition} identities: {:.1} MB to the changelog in {:.2} s, restored in {:.2} s",
        move_bytes as f64 / 1e6,
        move_write.as_secs_f64(),
        move_restore.as_secs_f64()
    );

    let produced = produce(&brokers, &topic, partitions, &lines, None)?;
    check_kept(&brokers, &topic, partitions, lines.len() as u64)?;
    let n = lines.len() as f64;
    println!("  produced in {:.1} s", produced.as_secs_f64());
    let kcat = time_kcat(&args.kcat, &brokers, &topic)?;
    match kcat {
        Some(d) => println!("  {} read the topic in {:.1} s", args.kcat, d.as_secs_f64()),
        None => println!("  {} is not installed: no reference rate", args.kcat),
    }
    let work = std::env::temp_dir().join(format!("nhiwatch-bench-{suffix}"));
    std::fs::create_dir_all(&work)?;
    // The service's default reorder bound.
    let lateness = crate::config::Settings::load_with_env(None, &[])?
        .raw
        .engine
        .lateness_seconds;
    let full = Run::new(chrono::Duration::seconds(i64::from(lateness)));
    let (took, findings, _) = pipeline_run(&brokers, &topic, lines.len() as u64, &registry, &work, &full)?;
    let rate = n / took.as_secs_f64();
    println!(
        "  nhiwatch processed the topic in {:.1} s, normalizing on {} threads",
        took.as_secs_f64(),
        full.workers
    );
    // The same on one normalizing thread, in this run: what the workers add.
    let one = Run {
        workers: 1,
        ..Run::new(chrono::Duration::seconds(i64::from(lateness)))
    };
    let (took_one, _, _) = pipeline_run(&brokers, &topic, lines.len() as u64, &registry, &work, &one)?;
    println!("  on one normalizing thread: {:.1} s", took_one.as_secs_f64());

    // Recovery after `kill -9`: a process restoring the checkpoint of the state measured above
    // and reading the topic again as its backlog (another group, so the join is counted).
    let recovery_dir = work.join("recovery-state");
    {
        let engine = Engine::new(Detectors::default(), None, baseline::Settings::default());
        let (mut store, _) =
            crate::engine::state::StateStore::open(&recovery_dir, 2, engine, chrono::Duration::zero(), false)?;
        store.save(&common_state(args.state_identities), &Offsets::default())?;
    }
    let restarted = Run {
        restore_from: Some(recovery_dir),
        ..Run::new(chrono::Duration::seconds(i64::from(lateness)))
    };
    let (recovery, _, _) = pipeline_run(&brokers, &topic, lines.len() as u64, &registry, &work, &restarted)?;
    println!(
        "  restarted with {} identities of state and the topic as backlog: caught up in {:.1} s",
        args.state_identities,
        recovery.as_secs_f64()
    );

    // Latency at half the rate just reached, on a fresh topic and engine. The reorder bound is
    // 0 here, so an event is judged by the detectors as soon as it is processed: the figure is
    // append-to-judged, the time a finding waits for the pipeline. In the service a finding also
    // waits for the configured bound of event time (`engine.lateness_seconds`), by design.
    let paced_rate = rate / 2.0;
    let paced_n = ((paced_rate * args.latency_seconds as f64) as usize).clamp(1, lines.len());
    let warm_up = (partitions as usize).min(paced_n);
    let paced_lines: Vec<String> = lines[..paced_n].to_vec();
    drop(lines);
    let paced = Run::new(chrono::Duration::zero());
    let producer = {
        let (brokers, topic) = (brokers.clone(), paced_topic.clone());
        let (metrics, progress) = (Arc::clone(&paced.metrics), Arc::clone(&paced.progress));
        std::thread::spawn(move || -> anyhow::Result<()> {
            // One record per partition first; once the consumer has processed them it has
            // joined its group and fetches from every partition. Their latency includes the
            // join and is forgotten; the paced records are measured.
            produce(&brokers, &topic, partitions, &paced_lines[..warm_up], None)?;
            let deadline = Instant::now() + Duration::from_secs(120);
            while progress.load(Ordering::Acquire) < warm_up as u64 {
                if Instant::now() > deadline {
                    bail!("the consumer took no record of the warm-up within two minutes");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            metrics.reset_latency();
            produce(&brokers, &topic, partitions, &paced_lines[warm_up..], Some(paced_rate))?;
            Ok(())
        })
    };
    let (_, _, latency) = pipeline_run(&brokers, &paced_topic, paced_n as u64, &registry, &work, &paced)?;
    let _ = std::fs::remove_dir_all(&work);
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("the paced producer panicked"))??;

    let figures = Figures {
        events: n as u64,
        identities: args.identities,
        bytes,
        broker: args.brokers.clone().unwrap_or_else(|| "embedded".into()),
        partitions,
        produce_events_per_s: n / produced.as_secs_f64(),
        kcat_events_per_s: kcat.map(|d| n / d.as_secs_f64()),
        nhiwatch_events_per_s: rate,
        workers: full.workers,
        one_worker_events_per_s: n / took_one.as_secs_f64(),
        ratio_to_kcat: kcat.map(|d| rate / (n / d.as_secs_f64())),
        findings,
        paced_events_per_s: paced_rate,
        paced_events: paced_n as u64,
        latency_ms: latency,
        state_identities: held,
        state_bytes_per_identity: per_identity,
        checkpoint_bytes,
        checkpoint_write_s: write.as_secs_f64(),
        checkpoint_restore_s: restore.as_secs_f64(),
        recovery_s: recovery.as_secs_f64(),
        partition_identities: per_partition,
        partition_state_bytes: move_bytes,
        partition_write_s: move_write.as_secs_f64(),
        partition_restore_s: move_restore.as_secs_f64(),
    };
    print!("{}", table(&figures));
    if let Some(path) = &args.json {
        let mut f = std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
        serde_json::to_writer_pretty(&mut f, &figures)?;
        f.write_all(b"\n")?;
    }
    drop(cluster);
    Ok(std::process::ExitCode::SUCCESS)
}

/// Creates the topics on an external broker (ignoring ones that exist).
fn create_topics(brokers: &str, topics: &[&str], partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{NewTopic, TopicReplication};
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(crate::kafka::admin::create_topics(&config, &new))?;
    Ok(())
}

/// The one table.
pub fn table(f: &Figures) -> String {
    let rate = |r: Option<f64>| r.map_or_else(|| "—".to_owned(), |r| format!("{:.0}", r));
    let mut out = String::new();
    out.push_str(&format!(
        "\n{} events ({:.1} MB) from {} identities on the {} broker, {} partitions\n",
        f.events,
        f.bytes as f64 / 1e6,
        f.identities,
        f.broker,
        f.partitions
    ));
    out.push_str("| measure | value |\n|---|---:|\n");
    out.push_str(&format!("| produce, events/s | {:.0} |\n", f.produce_events_per_s));
    out.push_str(&format!("| kcat read, events/s | {} |\n", rate(f.kcat_events_per_s)));
    out.push_str(&format!(
        "| nhiwatch full pipeline, events/s ({} normalizing threads) | {:.0} |\n",
        f.workers, f.nhiwatch_events_per_s
    ));
    out.push_str(&format!(
        "| the same on one normalizing thread, events/s | {:.0} |\n",
        f.one_worker_events_per_s
    ));
    out.push_str(&format!(
        "| nhiwatch / kcat | {} |\n",
        f.ratio_to_kcat.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}"))
    ));
    out.push_str(&format!("| findings | {} |\n", f.findings));
    out.push_str(&format!(
        "| append-to-judged latency at {:.0} events/s ({} events), p50 / p99 / p99.9 ms | {:.1} / {:.1} / {:.1} |\n",
        f.paced_events_per_s, f.paced_events, f.latency_ms[0], f.latency_ms[1], f.latency_ms[2]
    ));
    out.push_str(&format!(
        "| state, bytes per identity ({} identities) | {:.0} |\n",
        f.state_identities, f.state_bytes_per_identity
    ));
    out.push_str(&format!(
        "| checkpoint of that state: MB / write s / restore s | {:.1} / {:.2} / {:.2} |\n",
        f.checkpoint_bytes as f64 / 1e6,
        f.checkpoint_write_s,
        f.checkpoint_restore_s
    ));
    out.push_str(&format!(
        "| restart with that state and these {} events as backlog: start to caught up, s | {:.1} |\n",
        f.events, f.recovery_s
    ));
    out.push_str(&format!(
        "| a partition of {} identities moving to another member: changelog MB / write s / restore s | {:.1} / {:.2} / {:.2} |\n",
        f.partition_identities, f.partition_state_bytes as f64 / 1e6, f.partition_write_s, f.partition_restore_s
    ));
    out
}
