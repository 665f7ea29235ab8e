//! The command line, one file per command: `run` (the service, every role), `detect`,
//! `replay`, `query`, `attest`, `score`, `generate`, `check_config`; `demo` and
//! `bench` live in [`crate::demo`] and [`crate::bench`]. Here: the parser, the dispatch, and
//! what several commands share (configuration, dead letter, outputs, the engine, inputs, the
//! archive's location); what they print is in [`crate::report`]. The only place that wires the stages
//! together and prints to stdout.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::baseline;
use crate::config::{ConfigError, Settings};
use crate::detect::Detectors;
use crate::engine::Engine;
use crate::ingest::dead_letter::{DeadLetter, FileDeadLetter};
use crate::kafka::dead_letter::KafkaDeadLetter;
use crate::registry::Registry;

/// Environment variable holding a `read` API token.
pub const READ_TOKEN_ENV: &str = "NHIWATCH_READ_TOKEN";
/// Environment variable holding an `admin` API token.
pub const ADMIN_TOKEN_ENV: &str = "NHIWATCH_ADMIN_TOKEN";

mod attest;
mod check_config;
mod detect;
mod generate;
mod query;
mod replay;
mod run;
mod score;

pub use crate::demo::{DemoArgs, ScenarioArgs};
use crate::report::entries_line;
pub use crate::report::{finding_line, findings_summary, summary};
pub use attest::AttestArgs;
use attest::attest;
use check_config::check_config;
pub use detect::DetectArgs;
use detect::detect;
pub use generate::GenerateArgs;
use generate::generate;
pub use query::QueryArgs;
use query::{query, sandbox};
pub use replay::ReplayArgs;
use replay::replay;
use run::run_service;
pub use run::{Role, RunArgs};
pub use score::ScoreArgs;
use score::score;

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
    /// pipeline. Needs a pseudonymisation key: NHIWATCH_PSEUDONYM_KEY (or `pseudonymisation.key`).
    Run(RunArgs),
    /// Start an embedded Kafka broker on 127.0.0.1, stream generated traffic into it and consume
    /// it through the same path as `run`.
    Demo(DemoArgs),
    /// Run the detectors offline over NDJSON files, in event time, and write findings as NDJSON.
    /// Needs a pseudonymisation key: NHIWATCH_PSEUDONYM_KEY (or `pseudonymisation.key`).
    Detect(DetectArgs),
    /// Score findings against labelled anomalies: precision, recall and F1 per detector.
    Score(ScoreArgs),
    /// Write labelled synthetic traffic in the real formats, with labels.json and registry.toml.
    Generate(GenerateArgs),
    /// Run a read-only SQL query over the archive (tables `events`, `findings` and, with a
    /// registry, `integrations`), or a saved one by name (`--saved`; `--list` shows them).
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
        /// The configuration file (or give it with `-c`).
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The configuration file, as the other commands take it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { file, config } => check_config(file.or(config).context("give the configuration file")?),
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

fn load(config: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    Settings::load(config).map_err(|e: ConfigError| anyhow::anyhow!(e))
}

/// Where `dead_letter` sends letters, as a user would look for them.
fn dead_letter_place(settings: &Settings) -> String {
    let cfg = &settings.raw.dead_letter;
    if cfg.topic.is_empty() {
        cfg.path.display().to_string()
    } else {
        format!("the Kafka topic {}", cfg.topic)
    }
}

fn dead_letter(settings: &Settings) -> anyhow::Result<Box<dyn DeadLetter>> {
    let cfg = &settings.raw.dead_letter;
    Ok(if cfg.topic.is_empty() {
        Box::new(
            FileDeadLetter::open(&cfg.path).with_context(|| format!("opening dead letter {}", cfg.path.display()))?,
        )
    } else {
        Box::new(KafkaDeadLetter::new(&settings.raw.kafka, &cfg.topic)?)
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

/// `--registry` and `--detectors`: the files an offline run judges with, over the configured ones.
#[derive(Debug, clap::Args)]
pub struct EngineFiles {
    /// Identity registry (overrides `engine.registry`).
    #[arg(long)]
    pub registry: Option<PathBuf>,
    /// Directory of `<detector>.toml` settings (overrides `engine.detectors`).
    #[arg(long)]
    pub detectors: Option<PathBuf>,
}

impl EngineFiles {
    /// An offline detection (`detect`, `replay`): the configured engine with these files over
    /// the configured ones, the configured reorder bound, event time as the clock.
    fn offline_detection(&self, settings: &Settings) -> anyhow::Result<crate::engine::Detection> {
        let engine = build_engine(settings, self.registry.as_deref(), self.detectors.as_deref())?;
        Ok(crate::engine::Detection::new(
            engine,
            settings.raw.engine.lateness(),
            false,
        ))
    }
}

/// The inputs named on the command line (`-` for stdin), opened, each with its name.
fn open_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, Box<dyn BufRead>)>> {
    if paths.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        anyhow::bail!("stdin (`-`) is named more than once: it can be read once");
    }
    paths
        .iter()
        .map(|path| Ok((path.display().to_string(), open_input(path)?)))
        .collect()
}

/// The engine the settings describe; `registry` and `detectors` override the configured ones.
pub fn build_engine(settings: &Settings, registry: Option<&Path>, detectors: Option<&Path>) -> anyhow::Result<Engine> {
    let cfg = &settings.raw.engine;
    let registry = registry_of(registry, settings).transpose()?;
    let detectors = match detectors {
        Some(dir) => Detectors::load(dir).context("--detectors")?,
        None if !cfg.detectors.as_os_str().is_empty() => {
            Detectors::load(&cfg.detectors).with_context(|| set_in(settings, "engine.detectors"))?
        }
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

/// A point in time on the command line: RFC 3339 (`2026-01-15T08:00:00Z`, any offset) or a
/// date (`2026-01-15`: the start of that day, UTC).
pub(crate) fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(day) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(day.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    Err(format!(
        "{s:?} is not a time: give a date (2026-01-15, the start of that day UTC) or an RFC 3339 time (2026-01-15T08:00:00Z)"
    ))
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
    let named_by = if flag.is_some() {
        "--registry".to_owned()
    } else {
        set_in(settings, "engine.registry")
    };
    Some(Registry::load(&path).context(named_by))
}

/// A configured file's key and where it was set, to blame a file that cannot be read on the
/// key that named it.
fn set_in(settings: &Settings, key: &str) -> String {
    format!("{key} (set in {})", settings.source_of(key))
}

/// The registry file: the flag, else `engine.registry` if set.
fn registry_file(flag: Option<&Path>, settings: &Settings) -> Option<PathBuf> {
    let cfg = &settings.raw.engine.registry;
    flag.or((!cfg.as_os_str().is_empty()).then_some(cfg.as_path()))
        .map(Path::to_path_buf)
}
