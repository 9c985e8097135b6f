//! `tokenyard sim`: the simulated upstream on its own.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use super::{Faults, HintStyle, Limit, SimAccount, SimConfig};

/// Options of `tokenyard sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8788")]
    pub listen: SocketAddr,
    /// API-key accounts, keys `sk-sim-1..N`, labels `key-1..N`.
    #[arg(long, default_value_t = 3)]
    pub keys: usize,
    /// OAuth accounts, refresh tokens `rt-sim-1..N`, labels `oauth-1..N`.
    #[arg(long, default_value_t = 0)]
    pub oauth: usize,
    /// Requests per window per account.
    #[arg(long, default_value_t = 20)]
    pub rpm: u32,
    /// Length of the rate-limit window.
    #[arg(long, default_value = "60s")]
    pub window: humantime::Duration,
    /// Content chunks per completion (unless the request sets max_tokens).
    #[arg(long, default_value_t = 8)]
    pub chunks: usize,
    /// Gap between stream chunks.
    #[arg(long, default_value = "20ms")]
    pub interval: humantime::Duration,
    /// Delay before each response head.
    #[arg(long, default_value = "0s")]
    pub latency: humantime::Duration,
    /// Probability of a 5xx per admitted request.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub error_rate: f64,
    /// Probability of a connection reset mid-answer.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub reset_rate: f64,
    /// Probability of a stall (connection held open, silent) mid-answer.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub stall_rate: f64,
    /// Probability of a rate-limit burst per request: a 429 with retry
    /// hints, after which the account stays limited for --burst-wait.
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub burst_rate: f64,
    /// How long a rate-limit burst keeps an account limited.
    #[arg(long, default_value = "1s")]
    pub burst_wait: humantime::Duration,
    /// Seed for the fault dice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Give each account a total budget of --rpm requests, after which it
    /// answers 429 insufficient_quota, instead of a per-window limit.
    #[arg(long)]
    pub insufficient_quota: bool,
    /// Which retry hints rate-limit 429s carry.
    #[arg(long, value_enum, default_value = "all")]
    pub hints: HintStyle,
    /// Issue a new refresh token on every refresh and revoke the old one.
    #[arg(long)]
    pub rotate_refresh_tokens: bool,
    /// Lifetime of minted access tokens.
    #[arg(long, default_value = "1h")]
    pub access_token_ttl: humantime::Duration,
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability between 0 and 1"))
    }
}

impl SimArgs {
    /// The sim configuration these options describe.
    pub fn to_config(&self) -> anyhow::Result<SimConfig> {
        let total = self.error_rate + self.reset_rate + self.stall_rate;
        if total > 1.0 {
            bail!(
                "--error-rate, --reset-rate and --stall-rate add up to {total}; they share one roll per request, so keep the sum at most 1"
            );
        }
        if self.keys + self.oauth == 0 {
            bail!("the sim needs at least one account: set --keys or --oauth above 0");
        }
        let limit = if self.insufficient_quota {
            Limit::Total { requests: self.rpm }
        } else {
            Limit::Window {
                requests: self.rpm,
                window: *self.window,
            }
        };
        let keys = (1..=self.keys)
            .map(|i| SimAccount::api_key(format!("key-{i}"), format!("sk-sim-{i}"), limit.clone()));
        let oauth = (1..=self.oauth).map(|i| {
            SimAccount::refresh_token(format!("oauth-{i}"), format!("rt-sim-{i}"), limit.clone())
        });
        let accounts = keys
            .chain(oauth)
            .map(|a| SimAccount {
                hints: self.hints,
                ..a
            })
            .collect();
        Ok(SimConfig {
            accounts,
            chunks: self.chunks,
            chunk_interval: *self.interval,
            latency: *self.latency,
            access_token_ttl: *self.access_token_ttl,
            rotate_refresh_tokens: self.rotate_refresh_tokens,
            faults: Faults {
                error_5xx: self.error_rate,
                reset_mid_stream: self.reset_rate,
                stall_mid_stream: self.stall_rate,
                rate_limit: self.burst_rate,
                rate_limit_wait: (*self.burst_wait, *self.burst_wait),
                seed: self.seed,
            },
            ..SimConfig::default()
        })
    }
}

/// Runs the sim until `shutdown` is cancelled, after printing where it
/// listens and its (fake) credentials to stdout.
pub async fn run_cli(args: SimArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let cfg = args.to_config()?;
    let handle = super::start(cfg, args.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is the port in use? try --listen 127.0.0.1:0)",
            args.listen
        )
    })?;
    let limit = if args.insufficient_quota {
        format!("{} requests in total, then insufficient_quota", args.rpm)
    } else {
        format!("{} requests per {}", args.rpm, args.window)
    };
    println!("tokenyard sim listening");
    println!("  base url:  {}", handle.base_url());
    println!("  token url: {}", handle.token_url());
    println!("  limit:     {limit} per account");
    for i in 1..=args.keys {
        println!("  key-{i}:     sk-sim-{i}");
    }
    for i in 1..=args.oauth {
        println!("  oauth-{i}:   refresh token rt-sim-{i}");
    }
    println!("  stats:     http://{}/sim/stats", handle.addr());
    shutdown.cancelled().await;
    handle.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::sim::SimAuth;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn defaults_and_quota_mode() {
        let args = Cli::parse_from(["sim"]).sim;
        let cfg = args.to_config().unwrap();
        assert_eq!(cfg.accounts.len(), 3);
        assert_eq!(cfg.accounts[2].label, "key-3");
        assert_eq!(cfg.accounts[2].auth, SimAuth::ApiKey("sk-sim-3".into()));
        assert_eq!(
            cfg.accounts[0].limit,
            Limit::Window {
                requests: 20,
                window: std::time::Duration::from_secs(60)
            }
        );
        let args =
            Cli::parse_from(["sim", "--insufficient-quota", "--rpm", "5", "--oauth", "1"]).sim;
        let cfg = args.to_config().unwrap();
        assert_eq!(cfg.accounts[0].limit, Limit::Total { requests: 5 });
        assert_eq!(
            cfg.accounts[3].auth,
            SimAuth::RefreshToken("rt-sim-1".into())
        );
        assert!(Cli::try_parse_from(["sim", "--error-rate", "1.5"]).is_err());
        let args = Cli::parse_from(["sim", "--error-rate", "0.6", "--reset-rate", "0.6"]).sim;
        assert!(args.to_config().is_err());
    }

    #[tokio::test]
    async fn run_cli_serves_until_cancelled() {
        let args = Cli::parse_from(["sim", "--listen", "127.0.0.1:0", "--keys", "1"]).sim;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_cli(args, cancel.clone()));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!task.is_finished());
        cancel.cancel();
        task.await.unwrap().unwrap();
    }
}
