//! The command line: `serve` (the default), `check`, `attach`, `sim` and
//! `demo`. Logging is set up here, once: to the dashboard's log pane when a
//! dashboard runs, else to stderr; to `--log-file` as well in both cases.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};
use crate::secret::Secret;
pub use crate::vocab::parse_duration;
use crate::{demo, gateway, report, sim, tui};

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
    /// Also write log lines to this file (appended).
    #[arg(long, global = true, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Threads that serve requests (default: one per core the process may
    /// use). On a machine shared with its clients, fewer leave them room;
    /// see the README's Performance section.
    #[arg(long, global = true, env = "TOKENYARD_WORKERS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (the default when no command is given).
    Serve(ServeArgs),
    /// Validate the configuration and print the pool report; exit 0 or 1.
    Check(CheckArgs),
    /// Show the dashboard of a tokenyard running elsewhere (over its admin API).
    Attach(AttachArgs),
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
pub struct AttachArgs {
    /// Base URL of the instance, e.g. http://10.0.0.5:8080.
    pub url: url::Url,
    /// The instance's admin key (needed unless you attach from its own
    /// machine over loopback).
    #[arg(long, env = "TOKENYARD_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Config file (found as for `serve` when omitted).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

pub fn main(cli: Cli) -> ExitCode {
    let dashboard = match &cli.command {
        None => !cli.serve.no_tui,
        Some(Command::Serve(a)) => !a.no_tui,
        Some(Command::Demo(a)) => !a.no_tui,
        Some(Command::Attach(_)) => true,
        Some(Command::Check(_) | Command::Sim(_)) => false,
    } && std::io::stdout().is_terminal();
    if let Err(e) = init_logging(dashboard, cli.log_file.as_deref()) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cli.workers {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            None => serve(cli.serve, dashboard).await,
            Some(Command::Serve(args)) => serve(args, dashboard).await,
            Some(Command::Check(args)) => check(args),
            Some(Command::Attach(args)) => attach(args).await,
            Some(Command::Sim(args)) => {
                let stop = shutdown_on_signal();
                sim::run_cli(args, stop).await.map(|_| ExitCode::SUCCESS)
            }
            Some(Command::Demo(args)) => demo::run(args, dashboard, shutdown_on_signal()).await,
        }
    });
    // Blocking tasks (a stuck stdin reader, a slow save) must not hold
    // the exit.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logging goes to the dashboard's log pane (tui-logger) when a dashboard
/// runs — never to stdout or stderr, which would write over the screen —
/// else to stderr; and to `log_file` as well when given. The level comes
/// from `TOKENYARD_LOG` (or `RUST_LOG`), `info` by default.
fn init_logging(dashboard: bool, log_file: Option<&Path>) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = EnvFilter::try_from_env("TOKENYARD_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let file = match log_file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the log file {}", path.display()))?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::sync::Mutex::new(f))
                    .with_ansi(false)
                    .with_target(false),
            )
        }
        None => None,
    };
    let registry = tracing_subscriber::registry().with(filter).with(file);
    if dashboard {
        tui_logger::init_logger(tui_logger::LevelFilter::Trace)
            .map_err(|e| anyhow::anyhow!("cannot start the log pane: {e:?}"))?;
        let _ = registry
            .with(tui_logger::TuiTracingSubscriberLayer)
            .try_init();
    } else {
        let _ = registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false),
            )
            .try_init();
    }
    Ok(())
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

async fn serve(args: ServeArgs, dashboard: bool) -> anyhow::Result<ExitCode> {
    let mut config = load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
        config.check_exposure()?;
    }
    let listener = gateway::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = shutdown_on_signal();
    // A config from a file can be reloaded (SIGHUP, the admin API, and
    // the watcher on a change); the environment quick start cannot.
    let from = (config.source != "environment").then(|| gateway::ReloadFrom {
        path: PathBuf::from(&config.source),
        listen_override: args.listen,
        watch: true,
    });
    // Before anything is printed: from then on SIGHUP reloads and never
    // ends the process (its default).
    let hangups = hangup_signals();
    let report_config = config.clone();
    let running = gateway::start_with(config, listener, shutdown.clone(), from)?;
    if let Some(hangups) = hangups {
        tokio::spawn(reload_on_hangup(
            hangups,
            running.reloader(),
            shutdown.clone(),
        ));
    }
    let startup = report::startup(
        &report_config,
        running.addr,
        &running.pool.snapshot(),
        &running.notes,
    );
    if !dashboard {
        print!("{startup}");
        let logger = tokio::spawn(report::log_events(running.pool.clone(), shutdown.clone()));
        running.wait().await;
        logger.abort();
        tracing::info!("stopped; state saved");
        return Ok(ExitCode::SUCCESS);
    }

    for line in startup.lines().filter(|l| !l.trim().is_empty()) {
        tracing::info!("{line}");
    }
    let source = Arc::new(tui::Source::Local {
        pool: running.pool.clone(),
        label: running.addr.to_string(),
    });
    let pool = running.pool.clone();
    let outcome = tui::run_on_thread(source, shutdown.clone()).await;
    // However the dashboard ended, the gateway drains and saves.
    shutdown.cancel();
    eprintln!("tokenyard: draining in-flight requests and saving state…");
    running.wait().await;
    eprintln!("{}", report::summary(&pool.snapshot()));
    eprintln!("tokenyard: stopped; state saved");
    outcome?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
type Hangups = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangups = ();

/// SIGHUP, where there is one.
fn hangup_signals() -> Option<Hangups> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot listen for SIGHUP ({e}); reload with POST /admin/reload");
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Reloads the config on every SIGHUP until `shutdown`. The outcome is
/// logged here and published as a notice (the dashboard's log pane).
async fn reload_on_hangup(
    mut hangups: Hangups,
    reloader: gateway::ReloadHandle,
    shutdown: CancellationToken,
) {
    loop {
        #[cfg(unix)]
        let next = hangups.recv();
        #[cfg(not(unix))]
        let next = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = next => if got.is_none() { return },
        }
        match reloader.reload("SIGHUP").await {
            Ok(summary) => tracing::debug!("SIGHUP reload: {}", summary.line()),
            Err(e) => tracing::debug!("SIGHUP reload refused: {e}"),
        }
    }
}

async fn attach(args: AttachArgs) -> anyhow::Result<ExitCode> {
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "attach shows a dashboard and needs a terminal; for data, use GET {}admin/pool or admin/events",
            args.url
        );
    }
    if !matches!(args.url.scheme(), "http" | "https") {
        anyhow::bail!("{} is not an http:// or https:// URL", args.url);
    }
    let key = args
        .admin_key
        .filter(|k| !k.trim().is_empty())
        .map(|k| Secret::new(k.trim().to_string()));
    let source = Arc::new(tui::Source::Remote(tui::remote::Remote::new(args.url, key)));
    tui::run_on_thread(source, shutdown_on_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// A token cancelled on SIGINT or SIGTERM. A second signal exits at once.
/// The handlers are in place when this returns, and stay in place between
/// the two signals: a second signal sent the moment the first took effect
/// is not lost.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    let mut signals = Signals::new();
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!("shutting down: draining in-flight requests (signal again to exit now)");
        t.cancel();
        signals.next().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    token
}

/// SIGINT and SIGTERM, each listened to from creation on.
struct Signals {
    #[cfg(unix)]
    listeners: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listeners = signal(SignalKind::interrupt())
                .ok()
                .zip(signal(SignalKind::terminate()).ok());
            Signals { listeners }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = &mut self.listeners {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
