//! The command line: `run`, `demo`, `detect`, `score`, `generate`, `check-config`. The only
//! place that wires the stages together and prints to stdout.
#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::baseline;
use crate::config::{ConfigError, Settings};
use crate::detect::Detectors;
use crate::engine::{Detection, Engine};
use crate::event::Event;
use crate::findings::store::FindingStore;
use crate::findings::{Change, Finding, Update};
use crate::http::auth::Auth;
use crate::http::{AppState, ConnectionLimits};
use crate::ingest::dead_letter::{DeadLetter, FileDeadLetter, KafkaDeadLetter};
use crate::ingest::file::LineSource;
use crate::ingest::kafka::Stage as _;
use crate::ingest::{file, kafka};
use crate::normalize::{Normalizer, Pseudonymizer};
use crate::pipeline::{Pipeline, Stats};
use crate::registry::Registry;
use crate::service::{Outputs, Service, write_line};
use crate::sink::Sinks;
use crate::state::{Offsets, Restored, StateStore};
use crate::telemetry::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Environment variable holding a `read` API token.
pub const READ_TOKEN_ENV: &str = "NHIWATCH_READ_TOKEN";
/// Environment variable holding an `admin` API token.
pub const ADMIN_TOKEN_ENV: &str = "NHIWATCH_ADMIN_TOKEN";

/// Watches healthcare-interoperability audit logs for non-human identities that behave unlike
/// themselves.
#[derive(Debug, Parser)]
#[command(name = "nhiwatch", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: consume the configured Kafka topics (or the given files) through the
    /// pipeline.
    Run(RunArgs),
    /// Start an embedded Kafka broker on 127.0.0.1, stream generated traffic into it and consume
    /// it through the same path as `run`.
    Demo(DemoArgs),
    /// Run the detectors offline over NDJSON files, in event time, and write findings as NDJSON.
    Detect(DetectArgs),
    /// Score findings against labelled anomalies: precision, recall and F1 per detector.
    Score(ScoreArgs),
    /// Write labelled synthetic traffic in the real formats, with labels.json and registry.toml.
    Generate(GenerateArgs),
    /// Run a read-only SQL query over the archive (tables `events` and `findings`).
    Query(QueryArgs),
    /// Re-run the detectors over the archived events of a period; `--compare` checks the
    /// findings against those archived live.
    Replay(ReplayArgs),
    /// Write the attestation report of a period: per registered integration, approved against
    /// used scopes, resource types, patients per week, last use and findings, for sign-off.
    Attest(AttestArgs),
    /// The end-to-end benchmark on a Kafka broker, side by side with kcat: throughput, latency
    /// at half of peak, state memory; one table, and JSON with `--json`.
    Bench(crate::bench::BenchArgs),
    /// Runs one query for `query` and the API, in a process of its own (internal: see
    /// `replay::sandbox`).
    #[command(name = "query-worker", hide = true)]
    QueryWorker,
    /// Validate a configuration file and report the file, key and problem.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
}

/// `run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file (TOML), laid over the defaults.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Read these NDJSON files (`-` for stdin) instead of Kafka.
    #[arg(long = "input", short = 'i')]
    pub inputs: Vec<PathBuf>,
    /// Write normalized events as NDJSON to this file (`-` for stdout).
    #[arg(long)]
    pub events_out: Option<PathBuf>,
    /// Write findings as NDJSON to this file (`-` for stdout), each new or updated finding as it
    /// happens.
    #[arg(long)]
    pub findings_out: Option<PathBuf>,
    /// What this instance does (README, "Running a group").
    #[arg(long, value_enum, default_value_t = Role::All)]
    pub role: Role,
}

/// What a `run` instance does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Everything, alone: normalize the raw topics and detect, with checkpoints in `state.dir`.
    All,
    /// Normalize the raw topics and publish each event to `kafka.events_topic`, keyed by identity.
    Rekey,
    /// One member of a group consuming `kafka.events_topic`: detect on the partitions it is
    /// assigned, their state in `kafka.changelog_topic`.
    Detect,
}

/// `detect` options.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// NDJSON files of any supported formats, mixed freely (`-` for stdin). Several files are
    /// merged in event-time order.
    #[arg(long = "input", short = 'i', required = true, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Identity registry (overrides `engine.registry`).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Directory of `<detector>.toml` settings (overrides `engine.detectors`).
    #[arg(long)]
    pub detectors: Option<PathBuf>,
    /// Findings NDJSON, one finding per line in its final state (`-` for stdout).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Configuration file (TOML), laid over the defaults.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Also archive the events and findings as Parquet here (a directory or an object-store
    /// URL; overrides `archive.location`).
    #[arg(long)]
    pub archive: Option<String>,
}

/// `replay` options.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The archive: a directory or object-store URL (default: `archive.location`).
    #[arg(long)]
    pub archive: Option<String>,
    /// Start of the period (RFC 3339), included.
    #[arg(long)]
    pub from: chrono::DateTime<chrono::Utc>,
    /// End of the period (RFC 3339), excluded.
    #[arg(long)]
    pub to: chrono::DateTime<chrono::Utc>,
    /// Identity registry (overrides `engine.registry`).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Directory of `<detector>.toml` settings (overrides `engine.detectors`).
    #[arg(long)]
    pub detectors: Option<PathBuf>,
    /// Findings NDJSON, one per line in its final state (`-` for stdout).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Compare with the findings archived live for the period; exit 1 when they differ.
    #[arg(long)]
    pub compare: bool,
    /// Configuration file (TOML), laid over the defaults.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// `query` options.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The SQL text (or give `--file`).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    pub sql: Option<String>,
    /// A file of SQL, e.g. one of `replay/*.sql`.
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// A parameter `name=value`, bound to `$name` (integers as integers, anything else as text).
    #[arg(long = "param", short = 'p', value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// The archive: a directory or object-store URL (default: `archive.location`).
    #[arg(long)]
    pub archive: Option<String>,
    /// Identity registry, queryable as the table `integrations` (default: `engine.registry`).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Output format.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "csv"])]
    pub format: String,
    /// Run the query this many times and print the fastest and median run time (benchmarks;
    /// each run in its own query process, as the server runs them).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Configuration file (for `archive.*` and query limits).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// `attest` options.
#[derive(Debug, Args)]
pub struct AttestArgs {
    /// Identity registry: the integrations to attest (default: `engine.registry`).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// The archive: a directory or object-store URL (default: `archive.location`).
    #[arg(long)]
    pub archive: Option<String>,
    /// Length of the period, ending at `--to` (`90d`, `4weeks`, `1month`).
    #[arg(long, default_value = "90d", value_parser = parse_period)]
    pub period: chrono::Duration,
    /// End of the period (RFC 3339), excluded; default: the end of the newest archived day.
    #[arg(long)]
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// The findings journal (`http.findings_journal` of the service), read only: finding status
    /// as analysts left it. Without it, status is as archived at detection.
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// Output format.
    #[arg(long, default_value = "html", value_parser = ["html", "csv", "json"])]
    pub format: String,
    /// The report file (`-` for stdout).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Configuration file (for `archive.*`, `engine.registry` and query limits).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

fn parse_period(s: &str) -> Result<chrono::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration: {e}"))?;
    let d = chrono::Duration::from_std(d).map_err(|e| e.to_string())?;
    if d < chrono::Duration::days(1) {
        return Err("the period must be at least one day".into());
    }
    Ok(d)
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected name=value")?;
    let k = k.trim_start_matches('$');
    if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("`{k}` is not a parameter name (letters, digits, _)"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// `score` options.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// `labels.json` written by `generate`.
    #[arg(long)]
    pub labels: PathBuf,
    /// Findings NDJSON written by `detect`.
    #[arg(long)]
    pub findings: PathBuf,
    /// Minutes a finding may fall outside a label's window and still count.
    #[arg(long, default_value_t = 5)]
    pub slack_minutes: i64,
}

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
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// `generate` options.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Scenario to write.
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { file } => check_config(file),
        Command::Generate(args) => generate(args),
        Command::Detect(args) => detect(args),
        Command::Score(args) => score(args),
        Command::Run(args) => run_service(args),
        Command::Demo(args) => crate::demo::run(args),
        Command::Query(args) => query(args),
        Command::Replay(args) => replay(args),
        Command::Attest(args) => attest(args),
        Command::Bench(args) => crate::bench::run(args),
        Command::QueryWorker => Ok(crate::replay::sandbox::worker()),
    }
}

fn check_config(file: PathBuf) -> anyhow::Result<ExitCode> {
    match Settings::load(Some(&file)) {
        Ok(settings) => {
            // The registry and detector files it names are part of the configuration.
            if let Err(error) = build_engine(&settings, None, None) {
                eprintln!("{error}");
                return Ok(ExitCode::FAILURE);
            }
            println!("{}: valid", file.display());
            if settings.pseudonymizer().is_none() {
                println!("note: no pseudonymisation key is set; `run` needs NHIWATCH_PSEUDONYM_KEY");
            }
            for sink in &settings.raw.sinks {
                for var in [&sink.token_env, &sink.secret_env].into_iter().flatten() {
                    if std::env::var_os(var).is_none() {
                        println!(
                            "note: sink `{}` reads its secret from {var}, which is not set here",
                            sink.name
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("{error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let scenario = crate::generate::generate(&args.scenario.options());
    let counts =
        crate::generate::write(&scenario, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    for (file, n) in counts {
        println!("{:>9}  {}", n, args.out.join(file).display());
    }
    println!(
        "{:>9}  {}",
        scenario.labels.len(),
        args.out.join("labels.json").display()
    );
    println!("{:>9}  {}", "", args.out.join("registry.toml").display());
    Ok(ExitCode::SUCCESS)
}

fn load(config: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    Settings::load(config).map_err(|e: ConfigError| anyhow::anyhow!(e))
}

fn dead_letter(settings: &Settings) -> anyhow::Result<Box<dyn DeadLetter>> {
    let cfg = &settings.raw.dead_letter;
    Ok(if cfg.topic.is_empty() {
        Box::new(
            FileDeadLetter::open(&cfg.path).with_context(|| format!("opening dead letter {}", cfg.path.display()))?,
        )
    } else {
        Box::new(KafkaDeadLetter::new(
            &kafka::client_config(&settings.raw.kafka),
            &cfg.topic,
        )?)
    })
}

/// Where `run` writes a stream: a file appended to (a restarted service goes on where it
/// stopped; created `0600`, it holds events or findings), stdout for `-`, nowhere for none.
fn output(path: Option<&PathBuf>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) if p.as_os_str() != "-" => Box::new(std::io::BufWriter::new(
            crate::private::append(p).with_context(|| format!("opening {}", p.display()))?,
        )),
        other => event_sink(other)?,
    })
}

/// An NDJSON writer of events or findings (a file created `0600`), or a counter.
fn event_sink(path: Option<&PathBuf>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::BufWriter::new(std::io::stdout())),
        Some(p) => Box::new(std::io::BufWriter::new(
            crate::private::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::sink()),
    })
}

fn run_service(args: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = load(args.config.as_deref())?;
    crate::telemetry::init(&settings.raw.log.filter, settings.raw.log.format == "json");
    let pseudonymizer = match settings.pseudonymizer() {
        Some(p) => p?,
        None => bail!(
            "no pseudonymisation key: set NHIWATCH_PSEUDONYM_KEY (at least {} bytes) or pseudonymisation.key",
            Pseudonymizer::MIN_KEY_BYTES
        ),
    };
    let max = settings.raw.ingest.max_record_bytes;
    let metrics = Arc::new(Metrics::default());
    let mut pipeline = Pipeline::new(Normalizer::new(pseudonymizer, max), dead_letter(&settings)?, max)
        .with_metrics(Arc::clone(&metrics));
    let engine = build_engine(&settings, None, None)?;
    let lateness = chrono::Duration::seconds(i64::from(settings.raw.engine.lateness_seconds));
    let from_kafka = args.inputs.is_empty();
    if args.role != Role::All {
        if !from_kafka {
            let role = clap::ValueEnum::to_possible_value(&args.role).map(|v| v.get_name().to_owned());
            bail!(
                "--role {} reads Kafka; --input is for --role all",
                role.unwrap_or_default()
            );
        }
        return run_role(args, &settings, pipeline, engine, lateness, metrics);
    }
    let state_cfg = &settings.raw.state;
    // Checkpoints belong to the Kafka service: a file run is a batch, read whole each time.
    let (state, detection, resume, saved) = if from_kafka && !state_cfg.dir.as_os_str().is_empty() {
        let (store, restored) = StateStore::open(&state_cfg.dir, state_cfg.keep, engine, lateness, true)
            .with_context(|| format!("opening the checkpoints (state.dir in {})", settings.origin))?;
        report_restore(&restored);
        let saved = restored.from.is_some().then(|| restored.offsets.clone());
        // Findings wait for the checkpoint of the state that raised them (README, "Restarts").
        let detection = restored
            .detection
            .with_max_waiting(settings.raw.engine.max_waiting_events)
            .with_history(settings.raw.http.max_findings)
            .holding();
        (Some(store), detection, restored.offsets, saved)
    } else {
        if from_kafka {
            tracing::warn!(
                "No state directory (state.dir): baselines are not checkpointed, and a restart learns every identity again."
            );
        }
        let detection = Detection::new(engine, lateness, true)
            .with_max_waiting(settings.raw.engine.max_waiting_events)
            .with_history(settings.raw.http.max_findings);
        (None, detection, Offsets::default(), None)
    };
    let runtime = tokio::runtime::Runtime::new()?;
    // A file run is a batch: Ctrl-C keeps its default there.
    let stop = from_kafka.then(|| StopSignals::take(&runtime)).transpose()?;
    let quiet = detection.engine().detectors().quiet_periods();
    let (store, sinks) = findings_store(&settings, quiet, &runtime, &metrics)?;
    let ready = Arc::new(AtomicBool::new(false));
    serve_http(
        &settings,
        &runtime,
        detection.engine(),
        None,
        Arc::clone(&store),
        &metrics,
        &ready,
    )?;
    let outputs = Outputs::new(
        open_archive(&settings)?,
        Arc::clone(&store),
        Arc::clone(&metrics),
        output(args.findings_out.as_ref())?,
        args.events_out.as_ref().map(|p| output(Some(p))).transpose()?,
    );
    let mut service = Service {
        detection,
        outputs,
        state,
        saved,
    };
    if let Some(stop) = stop {
        runtime.block_on(async {
            let consumer = kafka::subscribe(&settings.raw.kafka, Some(Arc::clone(&metrics)), resume)?;
            tracing::info!(brokers = %settings.raw.kafka.brokers, topics = ?settings.raw.kafka.topics, "Consuming.");
            // Ready once subscribed and caught up (lag from librdkafka statistics).
            ready.store(true, Ordering::Release);
            let interval = std::time::Duration::from_secs(state_cfg.interval_seconds);
            let align = kafka::Align {
                bound: lateness.max(chrono::Duration::minutes(1)),
                idle_after: std::time::Duration::from_secs(settings.raw.kafka.idle_partition_seconds),
            };
            consume_until_stopped(
                &consumer,
                &mut pipeline,
                &mut service,
                &metrics,
                interval,
                Some(align),
                stop,
            )
            .await
        })?;
    } else {
        for input in &args.inputs {
            let name = input.display().to_string();
            let reader = open_input(input)?;
            file::read_lines(reader, &name, max, |record| {
                pipeline.process(record, &mut |event| service.event(event))
            })
            .with_context(|| format!("reading {name}"))?;
        }
        pipeline.flush().context("flushing the dead letter")?;
    }
    // With checkpoints, the events still waiting for order are in the last one and are judged
    // after the restart, as if there had been none; without, they are judged now.
    let Service {
        mut detection,
        mut outputs,
        state,
        ..
    } = service;
    if state.is_none() {
        detection.finish(&mut |update| outputs.report(update));
    }
    close_outputs(outputs, sinks, &runtime)?;
    eprint!("{}", summary(pipeline.stats(), 10));
    eprint!(
        "{}",
        findings_summary(&crate::findings::aggregate(detection.findings()))
    );
    Ok(ExitCode::SUCCESS)
}

/// `run --role rekey` or `--role detect`: one part of a group deployment (see [`crate::group`]).
fn run_role(
    args: RunArgs,
    settings: &Settings,
    pipeline: Pipeline,
    engine: Engine,
    lateness: chrono::Duration,
    metrics: Arc<Metrics>,
) -> anyhow::Result<ExitCode> {
    let kafka = &settings.raw.kafka;
    let runtime = tokio::runtime::Runtime::new()?;
    let stop = StopSignals::take(&runtime)?;
    let ready = Arc::new(AtomicBool::new(false));
    let interval = std::time::Duration::from_secs(settings.raw.state.interval_seconds);
    let registry = engine.registry().cloned();
    let mut pipeline = pipeline;
    if args.role == Role::Rekey {
        // Health, readiness and metrics; no findings are made here.
        serve_http(
            settings,
            &runtime,
            &engine,
            None,
            Arc::new(FindingStore::in_memory(1)),
            &metrics,
            &ready,
        )?;
        let mut rekey = crate::group::Rekey::new(kafka, registry)?;
        let group = format!("{}-rekey", kafka.group_id);
        runtime.block_on(async {
            let consumer = kafka::subscribe_to(
                kafka,
                &group,
                &kafka.topics,
                Some(Arc::clone(&metrics)),
                Offsets::default(),
                None,
            )?;
            tracing::info!(topics = ?kafka.topics, events_topic = %kafka.events_topic, %group, "Rekeying.");
            ready.store(true, Ordering::Release);
            // The events partitions get records in the order the rekey takes them in: in step
            // across the source partitions, so that no topic runs ahead of another.
            let align = kafka::Align {
                bound: lateness.max(chrono::Duration::minutes(1)),
                idle_after: std::time::Duration::from_secs(kafka.idle_partition_seconds),
            };
            consume_until_stopped(
                &consumer,
                &mut pipeline,
                &mut rekey,
                &metrics,
                interval,
                Some(align),
                stop,
            )
            .await
        })?;
        eprint!("{}", summary(pipeline.stats(), 10));
        eprintln!("published {} events to {}", rekey.published, kafka.events_topic);
        return Ok(ExitCode::SUCCESS);
    }
    let mut pipeline = pipeline.normalized();
    let changelog = runtime
        .block_on(crate::group::Changelog::open(kafka))
        .with_context(|| format!("opening the changelog (kafka.changelog_topic in {})", settings.origin))?;
    let quiet = engine.detectors().quiet_periods();
    let partitions = Arc::new(crate::group::Partitions::new(
        &kafka.events_topic,
        changelog,
        engine,
        lateness,
        settings.raw.engine.max_waiting_events,
        settings.raw.http.max_findings,
    ));
    let (store, sinks) = findings_store(settings, quiet, &runtime, &metrics)?;
    serve_http(
        settings,
        &runtime,
        partitions.template(),
        Some(partitions.baselines().clone()),
        Arc::clone(&store),
        &metrics,
        &ready,
    )?;
    let outputs = Outputs::new(
        open_archive(settings)?,
        Arc::clone(&store),
        Arc::clone(&metrics),
        output(args.findings_out.as_ref())?,
        args.events_out.as_ref().map(|p| output(Some(p))).transpose()?,
    );
    let mut member = crate::group::Member {
        partitions: Arc::clone(&partitions),
        outputs,
        unowned: 0,
    };
    runtime.block_on(async {
        let owner: Arc<dyn kafka::Owner> = partitions.clone();
        let topics = [kafka.events_topic.clone()];
        let consumer = kafka::subscribe_to(kafka, &kafka.group_id, &topics, Some(Arc::clone(&metrics)), Offsets::default(), Some(owner))?;
        tracing::info!(topic = %kafka.events_topic, changelog = %kafka.changelog_topic, group = %kafka.group_id, "Detecting as a group member.");
        ready.store(true, Ordering::Release);
        // Each events partition has its own state and order: none waits for another.
        consume_until_stopped(&consumer, &mut pipeline, &mut member, &metrics, interval, None, stop).await
    })?;
    if member.unowned > 0 {
        tracing::warn!(
            events = member.unowned,
            "Events of partitions this member did not own were passed over."
        );
    }
    let findings = crate::findings::aggregate(&partitions.findings());
    close_outputs(member.outputs, sinks, &runtime)?;
    eprint!("{}", summary(pipeline.stats(), 10));
    eprint!("{}", findings_summary(&findings));
    Ok(ExitCode::SUCCESS)
}

/// The findings store (journal and API) of `[http]`, delivering to the configured sinks
/// through the outbox.
fn findings_store(
    settings: &Settings,
    quiet: HashMap<crate::findings::DetectorId, chrono::Duration>,
    runtime: &tokio::runtime::Runtime,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Arc<FindingStore>, Option<Sinks>)> {
    let http = &settings.raw.http;
    let store = if http.findings_journal.as_os_str().is_empty() {
        FindingStore::in_memory(http.max_findings).with_quiet(quiet)
    } else {
        FindingStore::open_quiet(&http.findings_journal, http.max_findings, quiet).with_context(|| {
            format!(
                "opening the findings journal (http.findings_journal in {})",
                settings.origin
            )
        })?
    };
    // SIEM sinks, each delivering from the durable outbox (none configured: no outbox).
    let sinks = if settings.raw.sinks.is_empty() {
        None
    } else {
        let _guard = runtime.enter();
        let sinks = Sinks::start(settings)?;
        metrics.set_sinks(Arc::clone(&sinks.outbox), sinks.stats.clone());
        tracing::info!(
            sinks = sinks.stats.len(),
            "Delivering findings to the configured sinks."
        );
        Some(sinks)
    };
    let store = Arc::new(match &sinks {
        Some(s) => store.with_outbox(Arc::clone(&s.outbox)),
        None => store,
    });
    Ok((store, sinks))
}

/// Serves the HTTP API at `http.listen`, if set: `engine`'s identities (or `baselines`'),
/// `store`'s findings, SQL over the archive.
fn serve_http(
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
    engine: &Engine,
    baselines: Option<crate::baseline::Baselines>,
    store: Arc<FindingStore>,
    metrics: &Arc<Metrics>,
    ready: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let http = &settings.raw.http;
    if http.listen.is_empty() {
        return Ok(());
    }
    let env = |name: &str| std::env::var(name).ok();
    let auth = Auth::new(http, env(READ_TOKEN_ENV).as_deref(), env(ADMIN_TOKEN_ENV).as_deref());
    if http.tokens.is_empty() && env(READ_TOKEN_ENV).is_none() && env(ADMIN_TOKEN_ENV).is_none() {
        tracing::warn!("No API tokens are configured: every API request but /healthz and /readyz will be refused.");
    }
    let mut state = AppState::new(engine, store, auth, http, Arc::clone(metrics), Arc::clone(ready));
    if let Some(b) = baselines {
        state = state.with_baselines(b);
    }
    // Compliance queries over the archive, when there is one.
    let state = match settings.archive_location() {
        Some(location) => state.with_sql(Arc::new(sandbox(&location, registry_file(None, settings), settings)?)),
        None => state,
    };
    let (addr, _task) = runtime
        .block_on(crate::http::serve(
            &http.listen,
            state,
            ConnectionLimits::from_config(http),
        ))
        .with_context(|| format!("listening on {} (http.listen in {})", http.listen, settings.origin))?;
    tracing::info!(%addr, "Serving the HTTP API.");
    Ok(())
}

/// The archive of `archive.location`, if set.
fn open_archive(settings: &Settings) -> anyhow::Result<Option<crate::archive::Archive>> {
    settings
        .archive_location()
        .map(|l| crate::archive::Archive::open(&l, settings.archive_limits()))
        .transpose()
        .with_context(|| format!("opening the archive (archive.location in {})", settings.origin))
}

/// Flushes the archive and streams, and gives the sinks a moment to deliver.
fn close_outputs(mut outputs: Outputs, sinks: Option<Sinks>, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    if let Some(a) = &mut outputs.archive {
        let flushed = a.flush().context("writing the archive")?;
        tracing::info!(
            files = flushed.files,
            events = flushed.events,
            findings = flushed.findings,
            "Archive flushed."
        );
    }
    if let Some(sinks) = sinks {
        runtime.block_on(async {
            // Give the sinks a moment to deliver the last findings; the rest stays in the
            // outbox and goes out at the next start.
            if !sinks.drain(std::time::Duration::from_secs(10)).await {
                tracing::warn!("Some findings are still waiting in the outbox for a sink; they will be delivered after the next start.");
            }
            sinks.stop().await;
        });
    }
    if let Some(e) = outputs.write_error.take() {
        return Err(e).context("writing events or findings");
    }
    outputs.findings_out.flush()?;
    if let Some(out) = &mut outputs.events_out {
        out.flush()?;
    }
    Ok(())
}

/// SIGINT from a terminal, SIGTERM from systemd or Kubernetes: both stop `run` cleanly. Taken
/// as soon as the runtime exists, so a stop during start-up is not the default (killing) one.
struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn take(runtime: &tokio::runtime::Runtime) -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        let _guard = runtime.enter();
        Ok(StopSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }
}

/// Consumes through `stage` until SIGINT or SIGTERM, with a commit point every `interval`.
async fn consume_until_stopped(
    consumer: &kafka::Consumer,
    pipeline: &mut Pipeline,
    stage: &mut dyn kafka::Stage,
    metrics: &Metrics,
    interval: std::time::Duration,
    align: Option<kafka::Align>,
    stop: StopSignals,
) -> anyhow::Result<()> {
    let StopSignals { mut int, mut term } = stop;
    let shutdown = async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    };
    let options = kafka::Options {
        metrics: Some(metrics),
        commit_every: interval,
        align,
        ..kafka::Options::default()
    };
    kafka::consume(consumer, pipeline, stage, options, shutdown).await?;
    Ok(())
}

/// Logs what was restored and what was passed over.
fn report_restore(restored: &Restored) {
    for skipped in &restored.skipped {
        tracing::error!(file = %skipped.path.display(), reason = %skipped.reason, "Checkpoint passed over.");
    }
    let detection = &restored.detection;
    match &restored.from {
        Some(path) => tracing::info!(
            file = %path.display(),
            identities = detection.engine().baseline().len(),
            open_findings = detection.engine().open_findings(),
            waiting = detection.waiting(),
            partitions = restored.offsets.iter().count(),
            "State restored; reading resumes at its offsets."
        ),
        None if !restored.skipped.is_empty() => tracing::error!(
            "No usable checkpoint: starting with empty baselines from the committed offsets; every identity learns again."
        ),
        None => tracing::info!("No checkpoint yet: starting with empty baselines."),
    }
}

/// The engine the settings describe; `registry` and `detectors` override the configured ones.
pub fn build_engine(settings: &Settings, registry: Option<&Path>, detectors: Option<&Path>) -> anyhow::Result<Engine> {
    let cfg = &settings.raw.engine;
    let registry_path = registry.or((!cfg.registry.as_os_str().is_empty()).then_some(cfg.registry.as_path()));
    let registry = registry_path.map(Registry::load).transpose()?;
    let detectors_dir = detectors.or((!cfg.detectors.as_os_str().is_empty()).then_some(cfg.detectors.as_path()));
    let detectors = match detectors_dir {
        Some(dir) => Detectors::load(dir)?,
        None => Detectors::default(),
    };
    let learning = baseline::Settings {
        learning_days: cfg.learning_days,
        learning_events: cfg.learning_events,
        retention_days: cfg.retention_days,
    };
    let dedupe = crate::engine::Dedupe::new(cfg.dedupe_window_seconds, cfg.dedupe_max_ids);
    Ok(Engine::new(detectors, registry, learning).with_dedupe(dedupe))
}

/// One finding update as a terminal line (its title escaped: it names the identity).
pub fn finding_line(update: &Update) -> String {
    let f = &update.finding;
    let tag = match update.change {
        Change::New => "",
        Change::Escalated => " (escalated)",
        Change::Folded => " (again)",
    };
    format!(
        "{}  {:<8} {:<24} {}{}",
        f.event_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        f.severity.as_str().to_uppercase(),
        f.detector.as_str(),
        crate::terminal::escape(&f.title),
        tag
    )
}

struct Input {
    source: LineSource<Box<dyn BufRead>>,
    queue: VecDeque<Event>,
    done: bool,
}

impl Input {
    /// Reads until an event is queued or the input ends.
    fn fill(&mut self, pipeline: &mut Pipeline) -> anyhow::Result<()> {
        let Input { source, queue, done } = self;
        while queue.is_empty() && !*done {
            match source.next_record()? {
                None => *done = true,
                Some(record) => pipeline.process(record, &mut |e| queue.push_back(e))?,
            }
        }
        Ok(())
    }
}

fn open_input(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    Ok(if path.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin().lock()))
    } else {
        Box::new(BufReader::with_capacity(
            1 << 16,
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        ))
    })
}

fn detect(args: DetectArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let settings = load(args.config.as_deref())?;
    crate::telemetry::init("warn", false);
    let pseudonymizer = match settings.pseudonymizer() {
        Some(p) => p?,
        None => {
            eprintln!("note: no pseudonymisation key is set; patient references use a random key for this run");
            Pseudonymizer::random()
        }
    };
    let engine = build_engine(&settings, args.registry.as_deref(), args.detectors.as_deref())?;
    let lateness = chrono::Duration::seconds(i64::from(settings.raw.engine.lateness_seconds));
    let mut detection = Detection::new(engine, lateness, false);
    let max = settings.raw.ingest.max_record_bytes;
    let mut pipeline = Pipeline::new(Normalizer::new(pseudonymizer, max), dead_letter(&settings)?, max);
    let archive_location = args.archive.clone().or_else(|| settings.archive_location());
    let mut archive = archive_location
        .as_deref()
        .map(|l| crate::archive::Archive::open(l, settings.archive_limits()))
        .transpose()?;
    let mut inputs = Vec::new();
    for path in &args.inputs {
        inputs.push(Input {
            source: LineSource::new(open_input(path)?, &path.display().to_string(), max),
            queue: VecDeque::new(),
            done: false,
        });
    }
    for input in &mut inputs {
        input.fill(&mut pipeline)?;
    }
    // Each file is (nearly) in event-time order; merging them by their next event keeps the
    // stream in order without reading any file whole. The reorder buffer absorbs the rest.
    while let Some(i) = (0..inputs.len())
        .filter(|&i| !inputs[i].queue.is_empty())
        .min_by_key(|&i| inputs[i].queue.front().map(|e| e.time))
    {
        if let Some(mut event) = inputs[i].queue.pop_front() {
            detection.engine().canonicalize(&mut event);
            if let Some(a) = archive.as_mut() {
                a.append_event(&event)?;
            }
            detection.push(event, &mut |_| {});
        }
        inputs[i].fill(&mut pipeline)?;
    }
    detection.finish(&mut |_| {});
    pipeline.flush().context("flushing the dead letter")?;
    if let Some(mut a) = archive {
        for f in detection.findings() {
            a.append_finding(f)?;
        }
        a.flush()?;
        eprintln!("archived to {}", archive_location.unwrap_or_default());
    }
    // The archive keeps what the engine raised (a replay reproduces it); the output is what an
    // analyst sees: one finding per detector × identity × cause, none resolved offline.
    let findings = crate::findings::aggregate(detection.findings());
    let mut out = event_sink(Some(&args.output))?;
    for finding in &findings {
        serde_json::to_writer(&mut out, finding)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = pipeline.stats();
    eprintln!(
        "records {}  events {}  dead letters {}  late {}  duplicates {}  findings {}  in {:.2} s ({:.0} events/s)",
        stats.records,
        stats.events,
        stats.dead_lettered(),
        detection.late(),
        detection.engine().stats().duplicates_total(),
        findings.len(),
        elapsed,
        stats.events as f64 / elapsed
    );
    eprint!("{}", entries_line(stats));
    if !stats.skipped.is_empty() {
        let skipped: Vec<String> = stats.skipped.iter().map(|(r, n)| format!("{r} {n}")).collect();
        eprintln!("skipped {} ({})", stats.skipped_total(), skipped.join(", "));
    }
    eprint!("{}", findings_summary(&findings));
    Ok(ExitCode::SUCCESS)
}

fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let settings = load(args.config.as_deref())?;
    crate::telemetry::init("warn", false);
    let location = archive_location(args.archive.as_deref(), &settings)?;
    if args.from >= args.to {
        bail!("--from must be before --to");
    }
    let engine = build_engine(&settings, args.registry.as_deref(), args.detectors.as_deref())?;
    let lateness = chrono::Duration::seconds(i64::from(settings.raw.engine.lateness_seconds));
    let mut detection = Detection::new(engine, lateness, false);
    let limits = crate::replay::Limits {
        max_rows: 1 << 40,
        ..query_limits(&settings)
    };
    let days = (args.to - args.from).num_days().max(0) as u64 + 1;
    let bar = indicatif::ProgressBar::new(days).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} days  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let (events, archived) = runtime.block_on(async {
        let sql = crate::replay::Sql::open(&location, limits).await?;
        let n = sql
            .events_in(args.from, args.to, |day, events| {
                for e in events {
                    detection.push(e, &mut |_| {});
                }
                bar.inc(1);
                bar.set_message(day.to_owned());
                Ok(())
            })
            .await?;
        let archived = if args.compare {
            Some(sql.findings_in(args.from, args.to).await?)
        } else {
            None
        };
        anyhow::Ok((n, archived))
    })?;
    bar.finish_and_clear();
    detection.finish(&mut |_| {});
    let findings = detection.findings();
    let mut out = event_sink(Some(&args.output))?;
    let mut write_error = None;
    for f in findings {
        write_line(&mut out, f, &mut write_error);
    }
    if let Some(e) = write_error {
        return Err(e).with_context(|| format!("writing {}", args.output.display()));
    }
    out.flush()?;
    eprintln!(
        "replayed {events} events from {} to {} ({} repeats of a record dropped): {} findings in {:.1} s",
        args.from.to_rfc3339(),
        args.to.to_rfc3339(),
        detection.engine().stats().duplicates_total(),
        findings.len(),
        started.elapsed().as_secs_f64()
    );
    eprint!("{}", findings_summary(findings));
    let Some(archived) = archived else {
        return Ok(ExitCode::SUCCESS);
    };
    // Compare what identifies a finding and what it concluded; `detected_at` is the wall clock
    // of the live run and differs by nature.
    let key = |f: &Finding| (f.detector, f.severity, f.count, f.event_time, f.last_event_time);
    let replayed: BTreeMap<&str, _> = findings.iter().map(|f| (f.id.as_str(), key(f))).collect();
    let live: BTreeMap<&str, _> = archived.iter().map(|f| (f.id.as_str(), key(f))).collect();
    let only_replay: Vec<&&str> = replayed.keys().filter(|k| !live.contains_key(*k)).collect();
    let only_live: Vec<&&str> = live.keys().filter(|k| !replayed.contains_key(*k)).collect();
    let differ: Vec<&&str> = replayed
        .iter()
        .filter(|(k, v)| live.get(*k).is_some_and(|l| l != *v))
        .map(|(k, _)| k)
        .collect();
    eprintln!(
        "compared with {} findings archived live: {} identical, {} only in the replay, {} only live, {} different",
        live.len(),
        replayed.len() - only_replay.len() - differ.len(),
        only_replay.len(),
        only_live.len(),
        differ.len()
    );
    for (what, ids) in [
        ("only in the replay", &only_replay),
        ("only live", &only_live),
        ("different", &differ),
    ] {
        for id in ids.iter().take(20) {
            eprintln!("  {what}: {id}");
        }
    }
    Ok(if only_replay.is_empty() && only_live.is_empty() && differ.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn attest(args: AttestArgs) -> anyhow::Result<ExitCode> {
    let settings = load(args.config.as_deref())?;
    crate::telemetry::init("warn", false);
    let location = archive_location(args.archive.as_deref(), &settings)?;
    let registry = registry_of(args.registry.as_deref(), &settings)
        .context("no registry: give --registry or set engine.registry")??;
    let journal = args
        .journal
        .as_deref()
        .map(|p| {
            FindingStore::read(p, usize::MAX).with_context(|| format!("reading the findings journal {}", p.display()))
        })
        .transpose()?;
    let limits = crate::replay::Limits {
        max_rows: 1 << 40,
        ..query_limits(&settings)
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let sql = crate::replay::Sql::open(&location, limits).await?;
        let to = match args.to {
            Some(to) => to,
            None => {
                let newest = sql
                    .query("SELECT max(date) FROM events", &Default::default())
                    .await?
                    .batches
                    .iter()
                    .find_map(|b| {
                        use datafusion::arrow::array::{Array, AsArray};
                        let a = b.column(0).as_string::<i32>();
                        (!a.is_empty() && !a.is_null(0)).then(|| a.value(0).to_owned())
                    })
                    .context("the archive holds no events: give --to, or archive some first")?;
                let day = chrono::NaiveDate::parse_from_str(&newest, "%Y-%m-%d")
                    .with_context(|| format!("archive partition date={newest}"))?;
                (day + chrono::Duration::days(1))
                    .and_hms_opt(0, 0, 0)
                    .context("date out of range")?
                    .and_utc()
            }
        };
        let from = to - args.period;
        anyhow::Ok(crate::attest::build(&sql, &registry, journal.as_ref(), from, to, chrono::Utc::now()).await?)
    })?;
    let bytes = match args.format.as_str() {
        "csv" => crate::attest::csv(&report)?,
        "json" => serde_json::to_vec_pretty(&report)?,
        _ => crate::attest::html(&report).into_bytes(),
    };
    if args.out.as_os_str() == "-" {
        std::io::stdout().write_all(&bytes)?;
    } else {
        std::fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
    }
    eprintln!(
        "attestation of {} integrations from {} to {}: {} need attention ({} with access beyond approval or open findings), \
         {} unregistered identities active; written to {}",
        report.integrations.len(),
        report.from,
        report.to,
        report.needing_attention(),
        report.serious(),
        report.unregistered.len(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The archive named by `--archive`, else by `archive.location`.
fn archive_location(flag: Option<&str>, settings: &Settings) -> anyhow::Result<String> {
    flag.map(str::to_owned)
        .or_else(|| settings.archive_location())
        .context("no archive: give --archive or set archive.location")
}

/// The registry named by `--registry`, else by `engine.registry`, loaded; `None` when neither.
fn registry_of(flag: Option<&std::path::Path>, settings: &Settings) -> Option<anyhow::Result<Registry>> {
    let path = registry_file(flag, settings)?;
    Some(Registry::load(&path).map_err(anyhow::Error::from))
}

/// The registry file: the flag, else `engine.registry` if set.
fn registry_file(flag: Option<&Path>, settings: &Settings) -> Option<PathBuf> {
    let cfg = &settings.raw.engine.registry;
    flag.or((!cfg.as_os_str().is_empty()).then_some(cfg.as_path()))
        .map(Path::to_path_buf)
}

/// Queries from outside over the archive at `location`, each in a process of this executable.
fn sandbox(
    location: &str,
    registry: Option<PathBuf>,
    settings: &Settings,
) -> anyhow::Result<crate::replay::sandbox::Sandbox> {
    let worker = std::env::current_exe().context("finding this executable to run queries in")?;
    Ok(crate::replay::sandbox::Sandbox::new(
        worker,
        location,
        registry,
        query_limits(settings),
        settings.raw.archive.query_concurrency,
    ))
}

/// Query limits from `[archive]`.
fn query_limits(settings: &Settings) -> crate::replay::Limits {
    let a = &settings.raw.archive;
    crate::replay::Limits {
        timeout: std::time::Duration::from_secs(a.query_timeout_seconds),
        memory_bytes: a.query_memory_bytes,
        max_rows: a.max_result_rows,
    }
}

fn query(args: QueryArgs) -> anyhow::Result<ExitCode> {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    let settings = load(args.config.as_deref())?;
    let location = archive_location(args.archive.as_deref(), &settings)?;
    let sql = match (&args.sql, &args.file) {
        (Some(s), _) => s.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
        (None, None) => bail!("give the SQL or --file"),
    };
    let params = args
        .params
        .iter()
        .map(|(k, v)| {
            let value = match v.parse::<i64>() {
                Ok(n) => serde_json::Value::from(n),
                Err(_) => serde_json::Value::String(v.clone()),
            };
            (k.clone(), value)
        })
        .collect();
    let registry = registry_file(args.registry.as_deref(), &settings);
    if let Some(path) = &registry {
        // A bad registry is the user's error, named before any query runs.
        Registry::load(path)?;
    }
    // The same sandbox as the API's: a query that runs away stops its own process, not this one.
    let sandbox = sandbox(&location, registry, &settings)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let answer = runtime.block_on(async {
        let mut times = Vec::new();
        let mut answer = None;
        for _ in 0..args.repeat.max(1) {
            let t = std::time::Instant::now();
            answer = Some(sandbox.query(&sql, &params).await?);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        if args.repeat > 1 {
            times.sort_by(f64::total_cmp);
            eprintln!(
                "timing: fastest {:.1} ms, median {:.1} ms over {} runs",
                times[0],
                times[times.len() / 2],
                times.len()
            );
        }
        answer.ok_or(crate::replay::QueryError::Invalid("no run".into()))
    });
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout());
    match args.format.as_str() {
        "json" => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
            w.write_batches(&answer.batches.iter().collect::<Vec<_>>())?;
            w.finish()?;
        }
        "csv" => {
            let mut w = datafusion::arrow::csv::Writer::new(&mut out);
            for b in &answer.batches {
                w.write(&crate::replay::for_csv(b)?)?;
            }
        }
        _ => {
            let batches = answer
                .batches
                .iter()
                .map(crate::replay::for_terminal)
                .collect::<Result<Vec<_>, _>>()?;
            writeln!(out, "{}", pretty_format_batches(&batches)?)?
        }
    }
    out.flush()?;
    eprintln!(
        "{} rows{}",
        answer.rows(),
        if answer.truncated {
            " (truncated at archive.max_result_rows)"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Findings per detector and severity.
pub fn findings_summary(findings: &[Finding]) -> String {
    use std::fmt::Write as _;
    let mut per: BTreeMap<&str, (usize, BTreeMap<&str, usize>)> = BTreeMap::new();
    for f in findings {
        let e = per.entry(f.detector.as_str()).or_default();
        e.0 += 1;
        *e.1.entry(f.severity.as_str()).or_default() += 1;
    }
    let mut s = String::from("findings per detector:\n");
    for (detector, (n, sev)) in per {
        let sev: Vec<String> = sev.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "  {detector:<26} {n:>6}  ({})", sev.join(", "));
    }
    s
}

fn score(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let labels: Vec<crate::score::Label> = serde_json::from_slice(
        &std::fs::read(&args.labels).with_context(|| format!("reading {}", args.labels.display()))?,
    )
    .with_context(|| format!("parsing {}", args.labels.display()))?;
    let text =
        std::fs::read_to_string(&args.findings).with_context(|| format!("reading {}", args.findings.display()))?;
    let mut findings = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        findings.push(
            serde_json::from_str::<crate::score::Scored>(line)
                .with_context(|| format!("{}:{}: not a finding", args.findings.display(), n + 1))?,
        );
    }
    let scores = crate::score::score(&labels, &findings, chrono::Duration::minutes(args.slack_minutes));
    print!("{}", crate::score::table(&scores));
    Ok(ExitCode::SUCCESS)
}

/// A human summary of pipeline counts; identities are escaped ([`crate::terminal`]).
pub fn summary(stats: &Stats, top: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "records {}  events {}  dead letters {}  skipped {}",
        stats.records,
        stats.events,
        stats.dead_lettered(),
        stats.skipped_total()
    );
    s.push_str(&entries_line(stats));
    let _ = writeln!(s, "events per format:");
    for (format, n) in &stats.by_format {
        let _ = writeln!(s, "  {:<18} {n:>9}", format.as_str());
    }
    for (title, counts) in [
        ("dead letters per reason:", &stats.dead_letters),
        ("skipped per reason:", &stats.skipped),
    ] {
        if !counts.is_empty() {
            let _ = writeln!(s, "{title}");
            for (reason, n) in counts {
                let _ = writeln!(s, "  {reason:<18} {n:>9}");
            }
        }
    }
    let mut identities: Vec<(&String, &u64)> = stats.by_identity.iter().collect();
    identities.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let _ = writeln!(
        s,
        "events per identity ({} identities, top {}):",
        identities.len(),
        top.min(identities.len())
    );
    for (identity, n) in identities.into_iter().take(top) {
        let identity = crate::terminal::escape(identity);
        let _ = writeln!(s, "  {identity:<40} {n:>9}");
    }
    s
}

/// When pages or `Bundle`s were read (their elements are entries of their own), how every entry
/// ended; empty otherwise, when entries are records.
fn entries_line(stats: &Stats) -> String {
    if stats.entries == stats.records {
        return String::new();
    }
    format!(
        "entries {} (each element of a page or Bundle is one): {} normalized, {} dead-lettered, {} skipped\n",
        stats.entries,
        stats.accepted,
        stats.dead_lettered(),
        stats.skipped_total()
    )
}
