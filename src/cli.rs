//! The command line: `run`, `demo`, `generate`, `check-config`. The only place that wires the
//! stages together and prints to stdout.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigError, Settings};
use crate::event::Event;
use crate::ingest::dead_letter::{DeadLetter, FileDeadLetter, KafkaDeadLetter};
use crate::ingest::{file, kafka};
use crate::normalize::{Normalizer, Pseudonymizer};
use crate::pipeline::{Pipeline, Stats};

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
    /// Write labelled synthetic traffic in the real formats, with labels.json and registry.toml.
    Generate(GenerateArgs),
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
        Command::Run(args) => run_service(args),
        Command::Demo(args) => crate::demo::run(args),
    }
}

fn check_config(file: PathBuf) -> anyhow::Result<ExitCode> {
    match Settings::load(Some(&file)) {
        Ok(settings) => {
            println!("{}: valid", file.display());
            if settings.pseudonymizer().is_none() {
                println!("note: no pseudonymisation key is set; `run` needs NHIWATCH_PSEUDONYM_KEY");
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

/// An NDJSON event writer, or a counter.
fn event_sink(path: Option<&PathBuf>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::BufWriter::new(std::io::stdout())),
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
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
    let mut pipeline = Pipeline::new(Normalizer::new(pseudonymizer, max), dead_letter(&settings)?, max);
    let mut out = event_sink(args.events_out.as_ref())?;
    let mut write_error: Option<std::io::Error> = None;
    let mut sink = |event: Event| {
        if write_error.is_none()
            && let Err(e) = serde_json::to_writer(&mut out, &event)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
        {
            write_error = Some(e);
        }
    };
    if args.inputs.is_empty() {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async {
            let consumer = kafka::subscribe(&settings.raw.kafka)?;
            tracing::info!(brokers = %settings.raw.kafka.brokers, topics = ?settings.raw.kafka.topics, "Consuming.");
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            kafka::consume(&consumer, &mut pipeline, &mut sink, None, None, shutdown).await?;
            anyhow::Ok(())
        })?;
    } else {
        for input in &args.inputs {
            let name = input.display().to_string();
            let reader: Box<dyn BufRead> = if name == "-" {
                Box::new(BufReader::new(std::io::stdin().lock()))
            } else {
                Box::new(BufReader::new(
                    std::fs::File::open(input).with_context(|| format!("opening {name}"))?,
                ))
            };
            file::read_lines(reader, &name, max, |record| pipeline.process(record, &mut sink))
                .with_context(|| format!("reading {name}"))?;
        }
        pipeline.flush().context("flushing the dead letter")?;
    }
    let _ = sink;
    if let Some(e) = write_error {
        return Err(e).context("writing events");
    }
    out.flush()?;
    eprint!("{}", summary(pipeline.stats(), 10));
    Ok(ExitCode::SUCCESS)
}

/// A human summary of pipeline counts.
pub fn summary(stats: &Stats, top: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "records {}  events {}  dead letters {}",
        stats.records,
        stats.events,
        stats.dead_lettered()
    );
    let _ = writeln!(s, "events per format:");
    for (format, n) in &stats.by_format {
        let _ = writeln!(s, "  {:<18} {n:>9}", format.as_str());
    }
    if !stats.dead_letters.is_empty() {
        let _ = writeln!(s, "dead letters per reason:");
        for (reason, n) in &stats.dead_letters {
            let _ = writeln!(s, "  {reason:<18} {n:>9}");
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
        let _ = writeln!(s, "  {identity:<40} {n:>9}");
    }
    s
}
