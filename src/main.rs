use std::process::ExitCode;

use clap::Parser;

/// Most of a request's own CPU time is allocation (headers, bodies, futures);
/// mimalloc's thread-local free lists make that cheaper than glibc's malloc.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tokenyard::cli::main(tokenyard::cli::Cli::parse())
}
