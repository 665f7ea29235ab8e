//! `check-config`: validates a configuration file.

use crate::config::Settings;
use std::path::PathBuf;
use std::process::ExitCode;

use super::*;

pub(crate) fn check_config(file: PathBuf) -> anyhow::Result<ExitCode> {
    match Settings::load(Some(&file)) {
        Ok(settings) => {
            // The registry and detector files it names are part of the configuration.
            if let Err(error) = build_engine(&settings, None, None) {
                eprintln!("{error:#}");
                return Ok(ExitCode::FAILURE);
            }
            println!("{}: valid", file.display());
            if settings.pseudonymizer().is_none() {
                println!("note: no pseudonymisation key is set; `run` needs NHIWATCH_PSEUDONYM_KEY");
            }
            for sink in &settings.sinks {
                if let Some(var) = sink.target.secret_env()
                    && std::env::var_os(var).is_none()
                {
                    println!(
                        "note: sink `{}` reads its secret from {var}, which is not set here",
                        sink.name
                    );
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
