//! Several replicas on one Redis (`[state] backend = "redis"`): what one
//! learns, all obey — cooldowns, operator actions, refreshed and rotated
//! tokens — and Redis going away costs no request.
//!
//! Each test starts its own `redis-server` on a loopback port (see
//! `common/redis.rs`; skipped with a note when it is not installed, which
//! `.ci/run` forbids) and gives its replicas their own namespace.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use serde_json::json;
use tokenyard::events::State;
use tokenyard::gateway::Running;
use tokenyard::sim::{HintStyle, Limit, SimAccount, SimConfig, SimHandle};

fn toml(sim: &SimHandle, redis: &str, ns: &str, creds: &str, extra_pool: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\n\n[state]\nbackend = \"redis\"\nurl = \"{redis}\"\nnamespace = \"{ns}\"\n\n\
         [pool]\ntiers = [\"first\", \"second\"]\n{extra_pool}\n\n\
         [[provider]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"sim-*\"]\n{creds}",
        sim.base_url()
    )
}

async fn replicas(n: usize, toml: &str) -> Vec<Running> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(common::start(common::parse(toml, &std::env::temp_dir())).await);
    }
    out
}

async fn chat(gw: &Running) -> reqwest::Response {
    common::client()
        .post(format!("http://{}/v1/chat/completions", gw.addr))
        .json(&json!({"model": "sim-small", "max_tokens": 2,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

/// Polls `f` every millisecond until it holds; how long that took.
async fn within(limit: Duration, f: impl Fn() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if f() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// Waits until every replica has its shared store connected.
async fn connected(gws: &[Running]) {
    for gw in gws {
        let ok = within(Duration::from_secs(5), || gw.pool.shared_healthy()).await;
        assert!(ok.is_some(), "replica {} reached Redis", gw.addr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_on_one_replica_stops_the_others_within_100ms() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = common::start_sim(SimConfig {
        accounts: vec![
            // No x-ratelimit-* on success: A learns of the limit from a 429.
            SimAccount {
                hints: HintStyle::RetryAfterOnly,
                advertise: false,
                ..SimAccount::api_key(
                    "first",
                    "sk-fake-replica-first",
                    Limit::Window {
                        requests: 1,
                        window: Duration::from_secs(30),
                    },
                )
            },
            SimAccount::api_key("second", "sk-fake-replica-second", Limit::Unlimited),
        ],
        ..SimConfig::default()
    })
    .await;
    let creds = "\n[[credential]]\nname = \"first\"\ntier = \"first\"\napi_key = \"sk-fake-replica-first\"\n\
                 \n[[credential]]\nname = \"second\"\ntier = \"second\"\napi_key = \"sk-fake-replica-second\"\n";
    let gws = replicas(3, &toml(&sim, &redis.url(), "cool", creds, "")).await;
    connected(&gws).await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);

    // When B and C hear of it, from their own event buses.
    let heard = |gw: &Running| {
        let mut rx = gw.pool.subscribe();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(tokenyard::events::Event::Credential { credential })
                        if credential.name == "first" && credential.state == State::Cooling =>
                    {
                        return Instant::now();
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        })
    };
    let (b_heard, c_heard) = (heard(b), heard(c));
    // A uses up "first", then meets its 429 and moves on.
    assert_eq!(chat(a).await.status(), 200);
    let resp = chat(a).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tokenyard-credential"], "second");
    assert_eq!(a.pool.state_of("first"), Some(State::Cooling));
    // From the moment the sim sent the 429 to the moment B and C applied it.
    let sent_429 = sim
        .log()
        .iter()
        .find(|r| r.status == 429)
        .expect("the sim answered 429")
        .at
        .into_std();
    for (who, heard) in [("B", b_heard), ("C", c_heard)] {
        let at = tokio::time::timeout(Duration::from_secs(1), heard)
            .await
            .unwrap_or_else(|_| panic!("{who} never heard of the cooldown"))
            .unwrap();
        let took = at.saturating_duration_since(sent_429);
        println!("{who} applied A's cooldown {took:?} after the sim sent the 429");
        assert!(took <= Duration::from_millis(100), "{who}: {took:?}");
    }

    // And obey it: nothing more reaches "first" from any replica.
    let before = sim.log().len();
    for gw in [b, c, b, c, a, b] {
        let resp = chat(gw).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-tokenyard-credential"], "second");
    }
    let after: Vec<_> = sim.log()[before..]
        .iter()
        .filter(|r| r.label.as_deref() == Some("first"))
        .cloned()
        .collect();
    assert!(after.is_empty(), "requests to the cooling key: {after:?}");
    for gw in gws {
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_disable_on_one_replica_is_obeyed_by_all() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = common::start_sim(SimConfig::with_api_keys(2, Limit::Unlimited)).await;
    let creds = "\n[[credential]]\nname = \"key-1\"\ntier = \"first\"\napi_key = \"sk-sim-1\"\n\
                 \n[[credential]]\nname = \"key-2\"\ntier = \"first\"\napi_key = \"sk-sim-2\"\n";
    let gws = replicas(3, &toml(&sim, &redis.url(), "ops", creds, "")).await;
    connected(&gws).await;
    let resp = common::client()
        .post(format!(
            "http://{}/admin/credentials/key-1/disable",
            gws[1].addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = within(Duration::from_secs(1), || {
        gws.iter()
            .all(|g| g.pool.state_of("key-1") == Some(State::Disabled))
    })
    .await
    .expect("every replica disables key-1");
    println!("disable reached every replica after {seen:?}");
    let before = sim.log().len();
    for i in 0..12 {
        assert_eq!(chat(&gws[i % 3]).await.status(), 200);
    }
    assert!(
        sim.log()[before..]
            .iter()
            .all(|r| r.label.as_deref() == Some("key-2")),
        "a disabled key got traffic"
    );
    // Enabling on another replica brings it back everywhere.
    let resp = common::client()
        .post(format!(
            "http://{}/admin/credentials/key-1/enable",
            gws[2].addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    within(Duration::from_secs(1), || {
        gws.iter()
            .all(|g| g.pool.state_of("key-1") == Some(State::Ready))
    })
    .await
    .expect("every replica enables key-1");
    // "Use next" on replica 0 picks the credential on the others too.
    // (The same one twice in a row on one replica: not round-robin's doing.)
    for (target, gw) in [
        ("key-2", &gws[1]),
        ("key-2", &gws[1]),
        ("key-1", &gws[2]),
        ("key-1", &gws[2]),
    ] {
        let resp = common::client()
            .post(format!(
                "http://{}/admin/credentials/{target}/next",
                gws[0].addr
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let resp = chat(gw).await;
        assert_eq!(resp.headers()["x-tokenyard-credential"], target);
    }
    for gw in gws {
        gw.stop().await;
    }
}

fn oauth_sim_config() -> SimConfig {
    SimConfig {
        accounts: vec![SimAccount::refresh_token(
            "oauth",
            "rt-fake-replicas-0",
            Limit::Unlimited,
        )],
        rotate_refresh_tokens: true,
        chunks: 2,
        ..SimConfig::default()
    }
}

const OAUTH_CRED: &str = "\n[[credential]]\nname = \"oauth\"\ntier = \"first\"\n\
                          refresh_token = \"rt-fake-replicas-0\"\ntoken_url = \"TOKEN_URL\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_requests_across_replicas_cause_one_refresh_per_expiry() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = common::start_sim(oauth_sim_config()).await;
    // A slow token endpoint widens the race.
    sim.set_token_delay(Duration::from_millis(300));
    let creds = OAUTH_CRED.replace("TOKEN_URL", &sim.token_url());
    let gws = replicas(3, &toml(&sim, &redis.url(), "refresh", &creds, "")).await;
    connected(&gws).await;
    let burst = || async {
        let calls: Vec<_> = (0..30).map(|i| chat(&gws[i % 3])).collect();
        for resp in futures_util::future::join_all(calls).await {
            assert_eq!(resp.status(), 200);
        }
    };
    burst().await;
    assert_eq!(
        sim.token_calls(),
        1,
        "one refresh for 30 requests on 3 replicas"
    );
    // Every access token dies at once: one more refresh, not one per replica.
    sim.expire_access_tokens();
    burst().await;
    assert_eq!(sim.token_calls(), 2, "one refresh per expiry");
    for gw in gws {
        gw.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_survives_killing_any_replica() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = common::start_sim(oauth_sim_config()).await;
    let creds = OAUTH_CRED.replace("TOKEN_URL", &sim.token_url());
    let text = toml(&sim, &redis.url(), "rotate", &creds, "");
    // Replica A is the real binary, so it can die by SIGKILL.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("a.toml");
    std::fs::write(
        &cfg,
        text.replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nstate_file = \"a-state.json\"",
        ),
    )
    .unwrap();
    let mut a = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenyard"))
        .args(["serve", "--no-tui", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let a_url = {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(a.stdout.take().unwrap()).lines();
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("A prints its address");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .trim_end_matches("/v1")
                    .to_string();
            }
        }
    };
    let others = replicas(2, &text).await;
    connected(&others).await;
    let client = common::client();
    let refresh = |base: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("{base}/admin/credentials/oauth/refresh"))
                .send()
                .await
                .unwrap()
        }
    };
    // A refreshes (a rotation), then dies at once.
    let resp = refresh(a_url.clone()).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    a.start_kill().unwrap();
    let _ = a.wait().await;
    // B and C carry on with the token A rotated to, rotating it further.
    for gw in &others {
        let resp = refresh(format!("http://{}", gw.addr)).await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        assert_eq!(chat(gw).await.status(), 200);
    }
    let log = sim.token_log();
    assert!(log.len() >= 3, "{log:?}");
    assert!(
        log.iter().all(|c| c.label.as_deref() == Some("oauth")
            && c.outcome == tokenyard::sim::TokenOutcome::Issued),
        "every refresh used the current token: {log:?}"
    );
    // Killing B (in-process: stop without saving is the same for Redis).
    let mut others = others.into_iter();
    let b = others.next().unwrap();
    let c = others.next().unwrap();
    b.stop().await;
    let resp = refresh(format!("http://{}", c.addr)).await;
    assert_eq!(resp.status(), 200);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_mid_load_fails_no_request_and_state_reconciles() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let port = redis.port;
    let sim = common::start_sim(SimConfig::with_api_keys(3, Limit::Unlimited)).await;
    let creds = "\n[[credential]]\nname = \"key-1\"\ntier = \"first\"\napi_key = \"sk-sim-1\"\n\
                 \n[[credential]]\nname = \"key-2\"\ntier = \"first\"\napi_key = \"sk-sim-2\"\n\
                 \n[[credential]]\nname = \"key-3\"\ntier = \"first\"\napi_key = \"sk-sim-3\"\n";
    let gws = replicas(2, &toml(&sim, &redis.url(), "outage", creds, "")).await;
    connected(&gws).await;
    let stop = Instant::now() + Duration::from_secs(3);
    // The load goes to replica 0 only, so replica 1 can learn what replica
    // 0 saw during the outage from Redis alone.
    let load: Vec<_> = (0..4)
        .map(|_| {
            let addr = gws[0].addr;
            tokio::spawn(async move {
                let client = common::client();
                let mut statuses = Vec::new();
                while Instant::now() < stop {
                    let resp = client
                        .post(format!("http://{addr}/v1/chat/completions"))
                        .json(&json!({"model": "sim-small", "max_tokens": 1,
                                      "messages": [{"role": "user", "content": "x"}]}))
                        .send()
                        .await
                        .unwrap();
                    statuses.push(resp.status().as_u16());
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    let down = within(Duration::from_secs(5), || !gws[0].pool.shared_healthy()).await;
    assert!(down.is_some(), "the replica noticed Redis is gone");
    // While Redis is away, replica 0 learns of a long cooldown on key-3.
    sim.set_limit(
        "key-3",
        Limit::Window {
            requests: 0,
            window: Duration::from_secs(60),
        },
    );
    within(Duration::from_secs(2), || {
        gws[0].pool.state_of("key-3") == Some(State::Cooling)
    })
    .await
    .expect("replica 0 cools key-3 on its own");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gws[1].pool.state_of("key-3"), Some(State::Ready));
    let _restarted = RedisServer::start_on(port).expect("redis-server restarts");
    within(Duration::from_secs(10), || {
        gws.iter().all(|g| g.pool.shared_healthy())
    })
    .await
    .expect("both replicas reconnect");
    // Reconciled: replica 0 wrote its cooldown back to the empty Redis, and
    // replica 1 took it from there.
    within(Duration::from_secs(3), || {
        gws[1].pool.state_of("key-3") == Some(State::Cooling)
    })
    .await
    .expect("the cooldown set during the outage reached the other replica");
    let mut total = 0;
    for l in load {
        let statuses = l.await.unwrap();
        total += statuses.len();
        assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    }
    println!("{total} requests across the outage, all 200");
    for gw in gws {
        gw.stop().await;
    }
}

/// One daily token budget for two replicas: the cluster's counts decide,
/// so the key is held once both replicas together took it to the budget —
/// where each alone would have gone on to twice that — and both see the
/// hold. The sum stays within the budget plus what was in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_enforce_one_shared_budget() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let sim = common::start_sim(SimConfig {
        accounts: vec![
            SimAccount::api_key("first", "sk-fake-budget-first", Limit::Unlimited),
            SimAccount::api_key("second", "sk-fake-budget-second", Limit::Unlimited),
            SimAccount::api_key("probe", "sk-fake-budget-probe", Limit::Unlimited),
        ],
        ..SimConfig::default()
    })
    .await;
    // What one request costs, through a gateway of its own.
    let probe = common::start(common::parse(
        &format!(
            "listen = \"127.0.0.1:0\"\n\n[[provider]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{}\"\n\n\
             [[credential]]\nname = \"probe\"\napi_key = \"sk-fake-budget-probe\"\n",
            sim.base_url()
        ),
        &std::env::temp_dir(),
    ))
    .await;
    let v: serde_json::Value = chat(&probe).await.json().await.unwrap();
    let cost = v["usage"]["total_tokens"].as_u64().unwrap();
    probe.stop().await;
    let budget = 4 * cost + 1;

    let creds = format!(
        "\n[[credential]]\nname = \"first\"\ntier = \"first\"\napi_key = \"sk-fake-budget-first\"\nmax_tokens_per_day = {budget}\n\
         \n[[credential]]\nname = \"second\"\ntier = \"second\"\napi_key = \"sk-fake-budget-second\"\n"
    );
    let gws = replicas(2, &toml(&sim, &redis.url(), "budget", &creds, "")).await;
    connected(&gws).await;
    for n in 0..10 {
        let resp = chat(&gws[n % 2]).await;
        assert_eq!(resp.status(), 200, "request {n}");
    }
    let first = sim.stats().account("first").unwrap().ok;
    let second = sim.stats().account("second").unwrap().ok;
    assert!(
        (5..=6).contains(&first),
        "the first key served {first}: five reach the budget, one more may have been on its way"
    );
    assert_eq!(first + second, 10);
    for gw in &gws {
        let held = within(Duration::from_secs(2), || {
            let snap = gw.pool.snapshot();
            let c = snap.credentials.iter().find(|c| c.name == "first").unwrap();
            c.state == State::Exhausted
                && c.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("budget: "))
        })
        .await;
        assert!(held.is_some(), "replica {} holds the key", gw.addr);
    }
    // Each replica shows the cluster's day beside its own: the tokens the
    // first key carried on both, as the sim counted them.
    let own: u64 = gws
        .iter()
        .map(|gw| {
            let snap = gw.pool.snapshot();
            let c = snap.credentials.iter().find(|c| c.name == "first").unwrap();
            c.usage.today.total()
        })
        .sum();
    assert_eq!(own, first * cost);
    for gw in &gws {
        let summed = within(Duration::from_secs(3), || {
            let snap = gw.pool.snapshot();
            let c = snap.credentials.iter().find(|c| c.name == "first").unwrap();
            c.usage.cluster_today
                == Some(tokenyard::vocab::DayCounts {
                    answers: first,
                    tokens: first * cost,
                })
        })
        .await;
        let snap = gw.pool.snapshot();
        let c = snap.credentials.iter().find(|c| c.name == "first").unwrap();
        assert!(
            summed.is_some(),
            "replica {} shows the cluster's day: {:?} (own {:?})",
            gw.addr,
            c.usage.cluster_today,
            c.usage.today
        );
    }
}
