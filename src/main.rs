use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tokenyard::cli::main(tokenyard::cli::Cli::parse())
}
