//! `generate`: labelled synthetic traffic.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

use super::*;

/// `generate` options.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Scenario to write.
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Output directory (`--out` is accepted too).
    #[arg(long = "output", short = 'o', alias = "out")]
    pub out: PathBuf,
}

pub(crate) fn generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
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
