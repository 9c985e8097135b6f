//! `tokenyard demo`: the zero-config tour. A simulated provider with six
//! credentials in three tiers whose limits run out within the first minute,
//! the real gateway in front of it, and synthetic traffic — so a newcomer
//! sees rotation, cooldowns, refreshes and quota exhaustion happen.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::sim::{self, HintStyle, Limit, SimAccount, SimConfig, traffic};
use crate::{gateway, report, tui};

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// How long to run before the final summary; 0 runs until Ctrl-C.
    /// Default: 60s headless; with the dashboard, until you press q.
    #[arg(long, value_parser = crate::vocab::parse_duration)]
    pub duration: Option<Duration>,
    /// Client requests started per second.
    #[arg(long, default_value_t = 6.0)]
    pub rate: f64,
    /// Where the demo gateway listens (a free port is used if it is taken).
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Print rotations and summaries instead of opening the dashboard.
    #[arg(long)]
    pub no_tui: bool,
}

/// The six demo accounts: `(label, tier, account)`. Each speaks a different
/// retry-hint dialect, so every parser gets exercised.
fn accounts() -> Vec<(&'static str, &'static str, SimAccount)> {
    let window = |requests, secs| Limit::Window {
        requests,
        window: Duration::from_secs(secs),
    };
    // Accounts with other hint styles also keep quiet about their limits on
    // success, as many OpenAI-compatible servers do: the gateway learns of
    // those limits only from the 429.
    let with_hints = |mut a: SimAccount, h: HintStyle| {
        a.hints = h;
        a.advertise = false;
        a
    };
    vec![
        (
            "team-a",
            "primary",
            SimAccount::api_key("team-a", "sk-demo-team-a-0001", window(10, 10)),
        ),
        (
            "team-b",
            "primary",
            with_hints(
                SimAccount::api_key("team-b", "sk-demo-team-b-0002", window(10, 10)),
                HintStyle::RetryAfterOnly,
            ),
        ),
        (
            "oauth-1",
            "backup",
            with_hints(
                SimAccount::refresh_token("oauth-1", "rt-demo-oauth-1-0003", window(12, 15)),
                HintStyle::HttpDate,
            ),
        ),
        (
            "backup-b",
            "backup",
            with_hints(
                SimAccount::api_key("backup-b", "sk-demo-backup-b-0004", window(12, 15)),
                HintStyle::ResetHeadersOnly,
            ),
        ),
        (
            "fallback-a",
            "fallback",
            SimAccount::api_key(
                "fallback-a",
                "sk-demo-fallback-a-0005",
                Limit::Total { requests: 60 },
            ),
        ),
        (
            "fallback-b",
            "fallback",
            with_hints(
                SimAccount::api_key("fallback-b", "sk-demo-fallback-b-0006", window(15, 20)),
                HintStyle::RetryAfterMsOnly,
            ),
        ),
    ]
}

/// The gateway config for the demo, written in the same TOML an operator
/// would write.
fn gateway_toml(sim: &sim::SimHandle, listen: SocketAddr) -> String {
    let mut toml = format!(
        r#"listen = "{listen}"

[pool]
tiers = ["primary", "backup", "fallback"]
default_cooldown = "10s"
quota_cooldown = "5m"
max_wait = "2s"
probe_interval = "10s"

[[provider]]
name = "sim"
kind = "openai"
base_url = "{base}"
models = ["sim-small", "sim-large"]
"#,
        base = sim.base_url()
    );
    for (name, tier, account) in accounts() {
        let auth = match &account.auth {
            sim::SimAuth::ApiKey(k) => format!("api_key = \"{k}\""),
            sim::SimAuth::RefreshToken(rt) => format!(
                "refresh_token = \"{rt}\"\ntoken_url = \"{}\"",
                sim.token_url()
            ),
        };
        toml.push_str(&format!(
            "\n[[credential]]\nname = \"{name}\"\nprovider = \"sim\"\ntier = \"{tier}\"\n{auth}\n"
        ));
    }
    toml
}

pub async fn run(
    args: DemoArgs,
    dashboard: bool,
    stop: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let duration = args.duration.unwrap_or(if dashboard {
        Duration::ZERO
    } else {
        Duration::from_secs(60)
    });
    let sim_config = SimConfig {
        accounts: accounts().into_iter().map(|(_, _, a)| a).collect(),
        chunks: 12,
        chunk_interval: Duration::from_millis(40),
        latency: Duration::from_millis(30),
        access_token_ttl: Duration::from_secs(25),
        rotate_refresh_tokens: true,
        ..SimConfig::default()
    };
    let sim = sim::start(sim_config, "127.0.0.1:0".parse().expect("literal address"))
        .await
        .context("cannot start the simulated upstream")?;

    let listener = match gateway::bind(args.listen) {
        Ok(l) => l,
        Err(_) => gateway::bind("127.0.0.1:0".parse().expect("literal address"))
            .context("cannot listen on loopback")?,
    };
    let addr = listener.local_addr()?;
    let mut config = Config::parse(&gateway_toml(&sim, addr), "demo", Path::new("."), &|_| None)
        .context("the demo config is invalid (a bug)")?;
    config.source = "built-in demo".into();
    config.state_file = None;

    let gateway_stop = CancellationToken::new();
    let report_config = config.clone();
    let running = gateway::start(config, listener, gateway_stop.clone())?;
    let intro = format!(
        "tokenyard demo: a simulated provider at {}\n{}sending ~{} requests/s (half of them streams); {}\n",
        sim.base_url(),
        report::startup(
            &report_config,
            addr,
            &running.pool.snapshot(),
            &running.notes
        ),
        args.rate,
        if duration.is_zero() {
            if dashboard {
                "q to stop"
            } else {
                "Ctrl-C to stop"
            }
            .to_string()
        } else {
            format!(
                "running for {} ({} stops early)",
                crate::events::human(duration),
                if dashboard { "q" } else { "Ctrl-C" }
            )
        }
    );
    let logger = if dashboard {
        for line in intro.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!("{line}");
        }
        None
    } else {
        println!("{intro}");
        Some(tokio::spawn(report::log_events(
            running.pool.clone(),
            gateway_stop.clone(),
        )))
    };

    let traffic_stop = CancellationToken::new();
    let (counters, traffic_task) = traffic::spawn(
        traffic::TrafficConfig {
            base_url: format!("http://{addr}/v1"),
            client_key: None,
            models: vec!["sim-small".into(), "sim-large".into()],
            concurrency: 16,
            rate_per_sec: args.rate,
            stream_ratio: 0.5,
            seed: 7,
        },
        traffic_stop.clone(),
    );

    let deadline = (!duration.is_zero()).then(|| tokio::time::Instant::now() + duration);
    let until_deadline = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    if dashboard {
        let source = std::sync::Arc::new(tui::Source::Local {
            pool: running.pool.clone(),
            label: format!("{addr} (demo)"),
        });
        let tui_stop = stop.child_token();
        let ends = tui_stop.clone();
        let timer = tokio::spawn(async move {
            until_deadline.await;
            ends.cancel();
        });
        let outcome = tui::run_on_thread(source, tui_stop).await;
        timer.abort();
        outcome?;
    } else {
        tokio::pin!(until_deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = &mut until_deadline => break,
                _ = tick.tick() => println!("{}", report::summary(&running.pool.snapshot())),
            }
        }
    }

    traffic_stop.cancel();
    let traffic = traffic_task.await.unwrap_or_else(|_| counters.snapshot());
    let pool = running.pool.clone();
    running.stop().await;
    if let Some(logger) = logger {
        logger.abort();
    }
    sim.shutdown().await;

    println!("\n{}", report::summary(&pool.snapshot()));
    let mut others: Vec<String> = traffic
        .by_status
        .iter()
        .filter(|(s, _)| **s != 200)
        .map(|(s, n)| format!("{n}× {s}"))
        .collect();
    if traffic.transport_errors > 0 {
        others.push(format!(
            "{} without an answer (connect failed or timed out)",
            traffic.transport_errors
        ));
    }
    println!(
        "traffic: {} sent · {} complete and in order · {} · {} broken streams · {} broken bodies · {} cut at stop",
        traffic.sent,
        traffic.ok,
        if others.is_empty() {
            "no errors".to_string()
        } else {
            others.join(", ")
        },
        traffic.stream_errors,
        traffic.body_errors,
        traffic.cancelled
    );
    println!(
        "every 429 above came with Retry-After: it is what a client sees when all six credentials are cooling at once"
    );
    Ok(ExitCode::SUCCESS)
}
