use std::process::ExitCode;

use clap::Parser;

/// A tenth of a request's own CPU time was glibc's malloc and free
/// (headers, bodies, futures). jemalloc's thread caches cut that (added
/// latency 0.148 -> 0.120 ms in the gateway bench) with less resident
/// memory than mimalloc, which was as fast (37.5 vs 53.9 KiB per open
/// stream at 1,000 streams).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    tokenyard::cli::main(tokenyard::cli::Cli::parse())
}
