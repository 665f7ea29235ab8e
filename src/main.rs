//! The `nhiwatch` binary: parses the command line and hands over to [`nhiwatch::cli`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = nhiwatch::cli::Cli::parse();
    match nhiwatch::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("nhiwatch: {error:#}");
            ExitCode::from(2)
        }
    }
}
