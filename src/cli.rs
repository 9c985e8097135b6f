//! The command line: `serve` (the default), `check`, `sim` and `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::{demo, gateway, report, sim};

#[derive(Parser, Debug)]
#[command(
    name = "tokenyard",
    version,
    about = "LLM API gateway that rotates a pool of credentials around rate limits",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (the default when no command is given).
    Serve(ServeArgs),
    /// Validate the configuration and print the pool report; exit 0 or 1.
    Check(CheckArgs),
    /// Run the simulated OpenAI-style upstream on its own.
    Sim(sim::SimArgs),
    /// Zero-config tour: simulated upstream, a pool that runs out, traffic.
    Demo(demo::DemoArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Config file (else $TOKENYARD_CONFIG, the TOKENYARD_UPSTREAM quick
    /// start, ./tokenyard.toml, or the XDG config dir).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Listen address, overriding the config's `listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Run headless: no dashboard, logs on stderr.
    #[arg(long)]
    pub no_tui: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Config file (found as for `serve` when omitted).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub fn main(cli: Cli) -> ExitCode {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            None => serve(cli.serve).await,
            Some(Command::Serve(args)) => serve(args).await,
            Some(Command::Check(args)) => check(args),
            Some(Command::Sim(args)) => {
                let stop = shutdown_on_signal();
                sim::run_cli(args, stop).await.map(|_| ExitCode::SUCCESS)
            }
            Some(Command::Demo(args)) => demo::run(args, shutdown_on_signal()).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TOKENYARD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(config::discover(path)?)
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    match load(args.config.as_deref()) {
        Ok(config) => {
            let http = crate::upstream::http_client(&config.gateway);
            let (pool, notes) = crate::pool::PoolHandle::new_readonly(&config, http);
            print!("{}", report::pool_report(&config, &pool.snapshot(), &notes));
            println!("config OK");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
        config.check_exposure()?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = shutdown_on_signal();
    let report_config = config.clone();
    let running = gateway::start(config, listener, shutdown.clone())?;
    print!(
        "{}",
        report::startup(
            &report_config,
            running.addr,
            &running.pool.snapshot(),
            &running.notes
        )
    );
    let logger = tokio::spawn(report::log_events(running.pool.clone(), shutdown.clone()));
    running.wait().await;
    logger.abort();
    tracing::info!("stopped; state saved");
    Ok(ExitCode::SUCCESS)
}

/// A token cancelled on SIGINT or SIGTERM. A second signal exits at once.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: draining in-flight requests (signal again to exit now)");
        t.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Parses `--duration` style values.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e})"))
}
