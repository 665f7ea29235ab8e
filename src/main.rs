//! The `nhiwatch` binary: parses the command line and hands over to [`nhiwatch::cli`].

use std::process::ExitCode;

use clap::Parser;

// Normalizing a record makes and frees many small strings and vectors: glibc's malloc and free
// were about a quarter of the pipeline's samples in `perf` (issue 8); mimalloc serves them from
// per-thread free lists.
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
