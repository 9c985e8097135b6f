//! The transient mix: three credentials, two of them soon cooling on a
//! small request window, 5 % of upstream answers a 500/502/503 and 5 % cut
//! mid-answer, eight clients sending 240 requests between them in every
//! client format, streaming and not. A transient failure must cost the
//! client nothing while the third credential can serve: no client 5xx, no
//! client 429, no doubled or lost text, nothing hung. A stream cut after
//! its first byte ends in a well-formed error event (it cannot be retried)
//! and is counted, not failed.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokenyard::sim::{self, Faults, Limit, SimConfig};
use tokio::time::Instant;

use super::client::{self, Ask, End, Format, Outcome};
use super::common;

/// Eight clients, thirty requests each.
const CLIENTS: usize = 8;
const PER_CLIENT: usize = 30;

pub async fn run(seed: u64) -> Vec<Outcome> {
    let mut soon_a =
        common::quiet_account("soon-a", "sk-fake-TRANSIENT-a", 5, Duration::from_secs(2));
    let mut soon_b =
        common::quiet_account("soon-b", "sk-fake-TRANSIENT-b", 5, Duration::from_secs(2));
    soon_a.hints = sim::HintStyle::All;
    soon_b.hints = sim::HintStyle::RetryAfterMsOnly;
    let steady = sim::SimAccount::api_key("steady", "sk-fake-TRANSIENT-c", Limit::Unlimited);
    let sim = common::start_sim(SimConfig {
        accounts: vec![soon_a, soon_b, steady],
        chunks: 12,
        chunk_interval: Duration::from_millis(5),
        latency: Duration::from_millis(1),
        faults: Faults {
            error_5xx: 0.05,
            reset_mid_stream: 0.05,
            seed,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = [
        common::key("soon-a", "main", "sk-fake-TRANSIENT-a"),
        common::key("soon-b", "main", "sk-fake-TRANSIENT-b"),
        common::key("steady", "main", "sk-fake-TRANSIENT-c"),
    ];
    // Every pool and gateway setting at its default.
    let toml = common::config_toml(&sim, &["main"], &creds, "", "", "");
    let gw = common::start(common::parse(&toml, dir.path())).await;
    let base = format!("http://{}", gw.addr);
    let http = common::client();

    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (http, base) = (http.clone(), base.clone());
            let mut rng = StdRng::seed_from_u64(seed * 100 + i as u64);
            tokio::spawn(async move {
                let mut done = Vec::new();
                for _ in 0..PER_CLIENT {
                    let format = match rng.random_range(0..3) {
                        0 => Format::OpenAi,
                        1 => Format::Anthropic,
                        _ => Format::Responses,
                    };
                    let ask = Ask {
                        format,
                        model: "sim-small",
                        stream: rng.random_bool(0.5),
                        pieces: rng.random_range(2..=12),
                    };
                    done.push(
                        client::send(&http, &base, "any", ask, Duration::from_secs(40)).await,
                    );
                }
                done
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for c in clients {
        outcomes.extend(c.await.unwrap());
    }
    let elapsed = started.elapsed();

    let log = sim.log();
    let count = |f: &dyn Fn(&sim::SimRequest) -> bool| log.iter().filter(|r| f(r)).count();
    let upstream_5xx = count(&|r| r.status >= 500);
    let cut = count(&|r| r.fault.is_some() && r.status == 200);
    let upstream_429 = count(&|r| r.status == 429);
    let ends = |f: &dyn Fn(&End) -> bool| outcomes.iter().filter(|o| f(&o.end)).count();
    println!(
        "transient mix (seed {seed}): {} requests in {:.1}s; upstream: {} answers, {upstream_5xx} 5xx, \
         {cut} cut mid-answer, {upstream_429} 429; clients: {} complete, {} streams cut after \
         their first byte, {} errors; pool: {:?}",
        outcomes.len(),
        elapsed.as_secs_f64(),
        log.len(),
        ends(&|e| *e == End::Complete),
        ends(&|e| matches!(e, End::StreamError(_))),
        ends(&|e| matches!(e, End::Error(..))),
        gw.pool
            .snapshot()
            .credentials
            .iter()
            .map(|c| (c.name.clone(), c.state, c.requests))
            .collect::<Vec<_>>(),
    );
    // The mix must have bitten: failures and 429s happened upstream.
    assert!(upstream_5xx > 0 && cut > 0 && upstream_429 > 0);
    gw.stop().await;
    sim.shutdown().await;
    outcomes
}

/// What the clients must not have seen; empty when all is well.
pub fn problems(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter_map(|o| {
            let bad = match &o.end {
                End::Complete | End::StreamError(_) => return None,
                End::Error(status, code) => format!("{status} {code}"),
                End::Malformed(why) => format!("malformed: {why}"),
                End::Hung => "hung".to_string(),
            };
            Some(format!("{:?}: {bad}", o.ask))
        })
        .collect()
}
