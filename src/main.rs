//! The `nhiwatch` binary: parses the command line and hands over to [`nhiwatch::cli`].

use std::process::ExitCode;

use clap::Parser;

// Normalizing a record makes and frees many small strings and vectors; mimalloc's per-thread
// free lists serve them faster than glibc's malloc (measured in `nhiwatch bench`, see
// README: Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
