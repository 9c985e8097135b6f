//! Chaos: the real binary, at `trace` log level, under mixed client load
//! (OpenAI and Anthropic format, streaming and not) while the upstream
//! misbehaves in every way the suite knows at once:
//! - 30 % of admitted upstream requests answer 429 with a hint of 0.1–1.5 s,
//!   in a different hint style per credential (ms, seconds, HTTP date,
//!   reset headers, none);
//! - 5 % answer 500/502/503; 2 % reset the connection mid-answer; 1 % stall
//!   mid-answer (held open, silent);
//! - the token endpoint takes 2 s for every refresh, and for one credential
//!   fails: 503 first, `invalid_grant` later;
//! - one provider's port is closed;
//! - an operator disables a credential for a while, then enables it.
//!
//! Asserted, with the figures printed: every request ends in success or a
//! well-formed error in the client's format, none hangs; no client 429 while
//! some credential could serve; no doubled, lost or reordered text; no
//! upstream request to a credential that was cooling, disabled or failed;
//! one refresh per token lifetime, and no rotated refresh token lost; and
//! no secret in any output (logs at trace level, responses, the event feed,
//! the admin API, the dashboard drawn from that feed, the state file).
//!
//! `cargo test --test chaos` runs the short version (about 8 s of load).
//! The long one: `cargo test --release --test chaos -- --ignored`
//! (`TOKENYARD_CHAOS_SECS`, default 180, sets its length).

#[path = "chaos/checks.rs"]
mod checks;
#[path = "chaos/client.rs"]
mod client;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokenyard::events::{Event, PoolSnapshot, State};
use tokenyard::sim::{
    self, Faults, HintStyle, Limit, SimAccount, SimConfig, SimHandle, TokenFailure,
};
use tokio::time::Instant;

use checks::{Account, Window};
use client::{Ask, End, Format, Outcome};

const CLIENT_KEY: &str = "ck-fake-CHAOS-client-key";
const ADMIN_KEY: &str = "ak-fake-CHAOS-admin-key";
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(1);
const TOKEN_TTL: Duration = Duration::from_secs(3);
const REFRESH_SKEW: Duration = Duration::from_millis(500);
const TOKEN_DELAY: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The credential the operator switches off for the middle third.
const DISABLED: &str = "k-ms";

/// A credential of the run: (name, provider, secret, hint style).
struct Cred {
    name: &'static str,
    provider: &'static str,
    secret: &'static str,
    refresh: bool,
    hints: HintStyle,
}

const CREDS: &[Cred] = &[
    Cred {
        name: "k-all",
        provider: "openai",
        secret: "sk-fake-CHAOS-key-all",
        refresh: false,
        hints: HintStyle::All,
    },
    Cred {
        name: "k-ms",
        provider: "openai",
        secret: "sk-fake-CHAOS-key-ms",
        refresh: false,
        hints: HintStyle::RetryAfterMsOnly,
    },
    Cred {
        name: "k-reset",
        provider: "openai",
        secret: "sk-fake-CHAOS-key-reset",
        refresh: false,
        hints: HintStyle::ResetHeadersOnly,
    },
    Cred {
        name: "k-date",
        provider: "openai",
        secret: "sk-fake-CHAOS-key-date",
        refresh: false,
        hints: HintStyle::HttpDate,
    },
    Cred {
        name: "k-none",
        provider: "openai",
        secret: "sk-fake-CHAOS-key-none",
        refresh: false,
        hints: HintStyle::None,
    },
    Cred {
        name: "oauth-slow",
        provider: "openai",
        secret: "rt-fake-CHAOS-oauth-slow",
        refresh: true,
        hints: HintStyle::All,
    },
    Cred {
        name: "oauth-broken",
        provider: "openai",
        secret: "rt-fake-CHAOS-oauth-broken",
        refresh: true,
        hints: HintStyle::All,
    },
    Cred {
        name: "a-all",
        provider: "anthropic",
        secret: "sk-fake-CHAOS-anthropic-all",
        refresh: false,
        hints: HintStyle::All,
    },
    Cred {
        name: "a-secs",
        provider: "anthropic",
        secret: "sk-fake-CHAOS-anthropic-secs",
        refresh: false,
        hints: HintStyle::RetryAfterOnly,
    },
    Cred {
        name: "offline",
        provider: "offline",
        secret: "sk-fake-CHAOS-offline-key",
        refresh: false,
        hints: HintStyle::All,
    },
];

fn model_of(provider: &str) -> &'static str {
    match provider {
        "openai" => "sim-small",
        "anthropic" => "sim-large",
        _ => "sim-offline",
    }
}

struct Plan {
    secs: f64,
    clients: usize,
    seed: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_short() {
    run(Plan {
        secs: 8.0,
        clients: 16,
        seed: 7,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: cargo test --release --test chaos -- --ignored"]
async fn chaos_long() {
    let secs = std::env::var("TOKENYARD_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180.0);
    run(Plan {
        secs,
        clients: 24,
        seed: 11,
    })
    .await;
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn start_sim(seed: u64) -> SimHandle {
    let accounts = CREDS
        .iter()
        .filter(|c| c.provider != "offline")
        .map(|c| {
            let a = if c.refresh {
                SimAccount::refresh_token(c.name, c.secret, Limit::Unlimited)
            } else {
                SimAccount::api_key(c.name, c.secret, Limit::Unlimited)
            };
            SimAccount {
                hints: c.hints,
                ..a
            }
        })
        .collect();
    let sim = sim::start(
        SimConfig {
            accounts,
            // Anthropic's endpoint answers min(max_tokens, chunks) pieces;
            // clients ask for at most 12, so every answer is max_tokens.
            chunks: 12,
            chunk_interval: Duration::from_millis(10),
            latency: Duration::from_millis(2),
            access_token_ttl: TOKEN_TTL,
            rotate_refresh_tokens: true,
            faults: Faults {
                // 429s are drawn first; the rest share what is left, so of
                // all drawn answers 30 % are 429, 5 % 5xx, 2 % resets and
                // 1 % stalls.
                rate_limit: 0.30,
                rate_limit_wait: (Duration::from_millis(100), Duration::from_millis(1500)),
                error_5xx: 0.05 / 0.7,
                reset_mid_stream: 0.02 / 0.7,
                stall_mid_stream: 0.01 / 0.7,
                seed,
            },
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    sim.set_token_delay(TOKEN_DELAY);
    sim.set_token_failure("oauth-broken", Some(TokenFailure::ServerError));
    sim
}

fn config(sim: &SimHandle, port: u16, offline_port: u16, state: &Path) -> String {
    let mut t = format!(
        r#"listen = "127.0.0.1:{port}"
client_keys = ["{CLIENT_KEY}"]
admin_key = "{ADMIN_KEY}"
state_file = {state:?}

[pool]
default_cooldown = "1s"
max_failures = 3
probe_interval = "1s"
refresh_skew = "500ms"
# Short enough that some requests wait for a recovery and some get a 429.
max_wait = "300ms"

[gateway]
request_timeout = "10s"
first_byte_timeout = "1s"
stream_idle_timeout = "1s"
connect_timeout = "1s"

[[provider]]
name = "openai"
kind = "openai"
base_url = "{base}"
models = ["sim-small"]

[[provider]]
name = "anthropic"
kind = "anthropic"
base_url = "{base}"
models = ["sim-large"]

[[provider]]
name = "offline"
kind = "openai"
base_url = "http://127.0.0.1:{offline_port}/v1"
models = ["sim-offline"]
"#,
        state = state.display().to_string(),
        base = sim.base_url(),
    );
    for c in CREDS {
        let auth = if c.refresh {
            format!(
                "refresh_token = \"{}\"\ntoken_url = \"{}\"",
                c.secret,
                sim.token_url()
            )
        } else {
            format!("api_key = \"{}\"", c.secret)
        };
        t.push_str(&format!(
            "\n[[credential]]\nname = \"{}\"\nprovider = \"{}\"\n{auth}\n",
            c.name, c.provider
        ));
    }
    t
}

/// The live event feed, each event stamped when it arrived, and the raw
/// text for the secret sweep.
#[derive(Default)]
struct Feed {
    states: Vec<(Instant, String, State)>,
    feed: Vec<tokenyard::tui::Feed>,
    raw: String,
}

async fn watch_events(http: reqwest::Client, base: String, feed: Arc<Mutex<Feed>>) {
    let mut resp = http
        .get(format!("{base}/admin/events"))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let mut buf = String::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let now = Instant::now();
        let text = String::from_utf8_lossy(&chunk);
        buf.push_str(&text);
        let mut f = feed.lock().unwrap();
        f.raw.push_str(&text);
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let name = block
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("");
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            match name {
                "snapshot" => {
                    let snap: PoolSnapshot = serde_json::from_str(data).unwrap();
                    for c in &snap.credentials {
                        f.states.push((now, c.name.clone(), c.state));
                    }
                    f.feed.push(tokenyard::tui::Feed::Snapshot(snap));
                }
                "event" => {
                    let event: Event = serde_json::from_str(data).unwrap();
                    if let Event::Credential { credential } = &event {
                        f.states
                            .push((now, credential.name.clone(), credential.state));
                    }
                    f.feed.push(tokenyard::tui::Feed::Event(event));
                }
                _ => {}
            }
        }
    }
}

fn pick(rng: &mut StdRng) -> Ask {
    let format = if rng.random_bool(0.3) {
        Format::Anthropic
    } else {
        Format::OpenAi
    };
    let roll: f64 = rng.random();
    let model = if roll < 0.04 {
        "sim-offline"
    } else if roll < 0.34 {
        "sim-large"
    } else {
        "sim-small"
    };
    Ask {
        format,
        model,
        stream: rng.random_bool(0.5),
        pieces: rng.random_range(2..=12),
    }
}

async fn admin(http: &reqwest::Client, base: &str, path: &str) -> Instant {
    let resp = http
        .post(format!("{base}{path}"))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}: {}", resp.text().await.unwrap());
    Instant::now()
}

async fn run(plan: Plan) {
    let sim = start_sim(plan.seed).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let port = free_port();
    let offline_port = free_port(); // bound, read, released: closed
    let cfg = dir.path().join("tokenyard.toml");
    std::fs::write(&cfg, config(&sim, port, offline_port, &state)).unwrap();
    let (out, err, log_file) = (
        dir.path().join("stdout"),
        dir.path().join("stderr"),
        dir.path().join("trace.log"),
    );
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenyard"))
        .args(["serve", "--no-tui", "--config"])
        .arg(&cfg)
        .arg("--log-file")
        .arg(&log_file)
        .env("TOKENYARD_LOG", "trace")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the gateway came up");

    let feed = Arc::new(Mutex::new(Feed::default()));
    let watcher = tokio::spawn(watch_events(http.clone(), base.clone(), feed.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The load.
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(plan.secs);
    let patience = REQUEST_TIMEOUT + Duration::from_secs(3);
    let clients: Vec<_> = (0..plan.clients)
        .map(|i| {
            let (http, base) = (http.clone(), base.clone());
            let mut rng = StdRng::seed_from_u64(plan.seed * 1000 + i as u64);
            tokio::spawn(async move {
                let mut done = Vec::new();
                while Instant::now() < stop {
                    let ask = pick(&mut rng);
                    let o = client::send(&http, &base, CLIENT_KEY, ask, patience).await;
                    // A well-behaved client waits as long as it was told.
                    let wait = o.retry_after;
                    done.push(o);
                    if let Some(wait) = wait {
                        tokio::time::sleep(
                            wait.min(stop.saturating_duration_since(Instant::now())),
                        )
                        .await;
                    }
                }
                done
            })
        })
        .collect();

    // The operator and the token endpoint's moods, on a schedule.
    let third = Duration::from_secs_f64(plan.secs / 3.0);
    tokio::time::sleep_until(start + third).await;
    let disabled_at = admin(
        &http,
        &base,
        &format!("/admin/credentials/{DISABLED}/disable"),
    )
    .await;
    tokio::time::sleep_until(start + third * 3 / 2).await;
    sim.set_token_failure("oauth-broken", Some(TokenFailure::InvalidGrant));
    tokio::time::sleep_until(start + third * 2).await;
    let enabling_at = Instant::now();
    admin(
        &http,
        &base,
        &format!("/admin/credentials/{DISABLED}/enable"),
    )
    .await;

    let mut outcomes: Vec<Outcome> = Vec::new();
    for c in clients {
        outcomes.extend(c.await.unwrap());
    }
    let ended = Instant::now();
    let pool: Value = http
        .get(format!("{base}/admin/pool"))
        .header("x-admin-key", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    watcher.abort();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the gateway exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");

    let feed = std::mem::take(&mut *feed.lock().unwrap());
    let log = sim.log();
    let tokens = sim.token_log();
    let accounts: Vec<Account> = CREDS
        .iter()
        .map(|c| Account {
            name: c.name,
            model: model_of(c.provider),
            hints: c.hints,
            // OpenAI's styles other than whole seconds and dates carry
            // milliseconds; Anthropic's reset headers are RFC 3339 seconds.
            precise: c.provider == "openai"
                && matches!(
                    c.hints,
                    HintStyle::All | HintStyle::RetryAfterMsOnly | HintStyle::ResetHeadersOnly
                ),
            broken: c.name == "oauth-broken" || c.provider == "offline",
        })
        .collect();
    let cooling = checks::cooldowns(&log, &accounts, DEFAULT_COOLDOWN);
    let disabled = HashMap::from([(
        DISABLED,
        Window {
            from: disabled_at,
            to: enabling_at,
        },
    )]);
    let failed = checks::failed_windows(&feed.states, ended);

    let figures = Figures::new(&plan, &outcomes, &log, &tokens, start, ended);
    figures.print();

    // Every request ended, well-formed, in its client's format.
    let hung = outcomes.iter().filter(|o| o.end == End::Hung).count();
    let malformed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match &o.end {
            End::Malformed(why) => Some(format!("{:?}: {why}", o.ask)),
            _ => None,
        })
        .collect();
    assert_eq!(hung, 0, "requests that never ended");
    assert!(malformed.is_empty(), "malformed answers: {malformed:#?}");
    // The offline provider fails as a broken upstream, never as a 429.
    for o in outcomes.iter().filter(|o| o.ask.model == "sim-offline") {
        assert!(
            matches!(&o.end, End::Error(502 | 503, _)),
            "offline model answered {:?}",
            o.end
        );
    }
    let needless = checks::needless_429s(&outcomes, &accounts, &cooling, &disabled, &failed);
    assert!(
        needless.is_empty(),
        "client 429s with capacity: {needless:#?}"
    );
    let unusable = checks::requests_to_unusable(&log, &accounts, &cooling, &disabled, &failed);
    assert!(
        unusable.is_empty(),
        "requests to unusable credentials: {unusable:#?}"
    );
    let min_gap = TOKEN_TTL - REFRESH_SKEW;
    let refresh = checks::refresh_problems(&tokens, "oauth-slow", min_gap);
    assert!(refresh.is_empty(), "refresh problems: {refresh:#?}");
    let strangers = tokens.iter().filter(|c| c.label.is_none()).count();
    assert_eq!(strangers, 0, "token calls with a revoked or unknown token");
    // The broken credential's refresh is retried only by its probes.
    let broken_calls = figures.token_calls("oauth-broken");
    assert!(
        broken_calls as f64 <= 3.0 + figures.secs / 1.0 + 1.0,
        "token calls for the broken credential: {broken_calls}"
    );
    let slow_calls = figures.token_calls("oauth-slow");
    assert!(
        slow_calls >= 2,
        "the healthy refresh-token credential was refreshed: {slow_calls} calls"
    );
    assert!(
        figures.complete * 2 > outcomes.len(),
        "most requests succeed: {} of {}",
        figures.complete,
        outcomes.len()
    );
    assert!(figures.upstream_429 > 0 && figures.stream_errors + figures.resets > 0);

    sweep_secrets(&sim, &out, &err, &log_file, &state, &outcomes, &feed, &pool);
    sim.shutdown().await;
}

/// What the run did, printed so a reader can see the chaos was real.
struct Figures {
    requests: usize,
    complete: usize,
    stream_errors: usize,
    client_errors: HashMap<(u16, String), usize>,
    upstream: usize,
    upstream_429: usize,
    /// 429s for requests that reached an account already limited: sent
    /// before the gateway heard of the limit, or after a hint-less 429's
    /// default cooldown ran out first.
    upstream_429_limited: usize,
    /// Of those, on the account whose 429s carry no hint.
    upstream_429_limited_hintless: usize,
    /// How long after the limit began those others arrived: p50, max (ms).
    echo_delay_ms: (f64, f64),
    upstream_5xx: usize,
    resets: usize,
    stalls: usize,
    token_calls: HashMap<String, usize>,
    latency_ms: (f64, f64),
    secs: f64,
    clients: usize,
}

impl Figures {
    fn new(
        plan: &Plan,
        outcomes: &[Outcome],
        log: &[sim::SimRequest],
        tokens: &[sim::TokenCall],
        start: Instant,
        ended: Instant,
    ) -> Figures {
        let mut client_errors = HashMap::new();
        for o in outcomes {
            if let End::Error(status, code) = &o.end {
                *client_errors.entry((*status, code.clone())).or_insert(0) += 1;
            }
        }
        let mut lat: Vec<Duration> = outcomes
            .iter()
            .filter(|o| o.end == End::Complete)
            .map(|o| o.done - o.sent)
            .collect();
        lat.sort();
        let fault = |f: fn(&sim::KeyFault) -> bool| {
            log.iter()
                .filter(|r| r.status == 200 && r.fault.as_ref().is_some_and(f))
                .count()
        };
        // Per account: when its current limit began and ends.
        let mut limited_until: HashMap<&str, (Instant, Instant)> = HashMap::new();
        let mut echo_delays = Vec::new();
        let mut upstream_429_limited = 0;
        let mut upstream_429_limited_hintless = 0;
        for r in log {
            if let (429, Some(label), Some(wait)) = (r.status, r.label.as_deref(), r.retry_after) {
                let (since, until) = limited_until.entry(label).or_insert((r.at, r.at));
                if r.at < *until {
                    upstream_429_limited += 1;
                    if label == "k-none" {
                        upstream_429_limited_hintless += 1;
                    } else {
                        echo_delays.push(r.at - *since);
                    }
                } else {
                    *since = r.at;
                }
                *until = (*until).max(r.at + wait);
            }
        }
        let mut token_calls = HashMap::new();
        for c in tokens {
            let label = c.label.clone().unwrap_or_else(|| "(unknown)".into());
            *token_calls.entry(label).or_insert(0) += 1;
        }
        Figures {
            requests: outcomes.len(),
            complete: outcomes.iter().filter(|o| o.end == End::Complete).count(),
            stream_errors: outcomes
                .iter()
                .filter(|o| matches!(o.end, End::StreamError(_)))
                .count(),
            client_errors,
            upstream: log.len(),
            upstream_429: log.iter().filter(|r| r.status == 429).count(),
            upstream_429_limited,
            upstream_429_limited_hintless,
            echo_delay_ms: {
                echo_delays.sort();
                (
                    checks::percentile(&echo_delays, 50.0),
                    checks::percentile(&echo_delays, 100.0),
                )
            },
            upstream_5xx: log.iter().filter(|r| r.status >= 500).count(),
            resets: fault(|f| matches!(f, sim::KeyFault::ResetAfterChunks(_))),
            stalls: fault(|f| matches!(f, sim::KeyFault::StallAfterChunks(_))),
            token_calls,
            latency_ms: (
                checks::percentile(&lat, 50.0),
                checks::percentile(&lat, 99.0),
            ),
            secs: (ended - start).as_secs_f64(),
            clients: plan.clients,
        }
    }

    fn token_calls(&self, label: &str) -> usize {
        self.token_calls.get(label).copied().unwrap_or(0)
    }

    fn print(&self) {
        let pct = |n: usize| 100.0 * n as f64 / self.upstream.max(1) as f64;
        println!(
            "chaos: {:.1} s, {} clients, {} requests ({:.0}/s)",
            self.secs,
            self.clients,
            self.requests,
            self.requests as f64 / self.secs
        );
        println!(
            "  upstream: {} requests; 429 {} ({:.1} %; {} of them to an account already limited: {} on the hint-less one, the rest sent before the gateway heard, arriving p50 {:.1} ms / max {:.1} ms after the limit began), 5xx {} ({:.1} %), resets {} ({:.1} %), stalls {} ({:.1} %)",
            self.upstream,
            self.upstream_429,
            pct(self.upstream_429),
            self.upstream_429_limited,
            self.upstream_429_limited_hintless,
            self.echo_delay_ms.0,
            self.echo_delay_ms.1,
            self.upstream_5xx,
            pct(self.upstream_5xx),
            self.resets,
            pct(self.resets),
            self.stalls,
            pct(self.stalls)
        );
        println!(
            "  clients: {} complete, {} streams ended by an error event after commit; latency of complete p50 {:.1} ms, p99 {:.1} ms",
            self.complete, self.stream_errors, self.latency_ms.0, self.latency_ms.1
        );
        let mut errors: Vec<_> = self.client_errors.iter().collect();
        errors.sort();
        for ((status, code), n) in errors {
            println!("  clients: {n} × {status} {code}");
        }
        let mut calls: Vec<_> = self.token_calls.iter().collect();
        calls.sort();
        println!("  token calls: {calls:?}");
    }
}

/// Every secret the run involved, searched for in every output.
#[allow(clippy::too_many_arguments)]
fn sweep_secrets(
    sim: &SimHandle,
    out: &Path,
    err: &Path,
    log_file: &Path,
    state: &Path,
    outcomes: &[Outcome],
    feed: &Feed,
    pool: &Value,
) {
    let mut file: Value = serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    // The state file's job is to hold rotated refresh tokens (0600); nothing
    // else in it may be secret.
    let mut rotated = Vec::new();
    if let Some(creds) = file["credentials"].as_object_mut() {
        for c in creds.values_mut() {
            if let Some(rt) = c["refresh_token"].take().as_str() {
                rotated.push(rt.to_owned());
            }
        }
    }
    assert!(!rotated.is_empty(), "the rotated refresh token was saved");
    let mut secrets: Vec<String> = CREDS.iter().map(|c| c.secret.to_owned()).collect();
    secrets.extend([CLIENT_KEY.to_owned(), ADMIN_KEY.to_owned()]);
    secrets.extend(rotated);
    secrets.extend(sim.current_refresh_token("oauth-slow"));
    secrets.extend(sim.issued_access_tokens());

    let responses: Vec<u8> = outcomes.iter().flat_map(|o| o.raw.clone()).collect();
    let outputs = [
        ("stdout", std::fs::read(out).unwrap()),
        ("stderr", std::fs::read(err).unwrap()),
        ("log file", std::fs::read(log_file).unwrap()),
        ("responses", responses),
        ("admin events", feed.raw.clone().into_bytes()),
        ("admin pool", pool.to_string().into_bytes()),
        ("dashboard", dashboard(feed).into_bytes()),
        ("state file", file.to_string().into_bytes()),
    ];
    let trace_lines = outputs[1].1.iter().filter(|&&b| b == b'\n').count();
    assert!(
        trace_lines > 1000,
        "trace logging was on: {trace_lines} lines"
    );
    for (what, bytes) in &outputs {
        for s in &secrets {
            assert!(
                !contains(bytes, s.as_bytes()),
                "a secret ({}…) in the {what}",
                &s[..8]
            );
        }
    }
    println!(
        "  secrets: {} searched for in {} KiB of output ({trace_lines} trace lines): none found",
        secrets.len(),
        outputs.iter().map(|(_, b)| b.len()).sum::<usize>() / 1024
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The dashboard as it would look having watched this run's event feed.
fn dashboard(feed: &Feed) -> String {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use tokenyard::tui::keys::Ui;
    use tokenyard::tui::state::Dashboard;
    use tokenyard::tui::view::{Context, render};

    let now_ms = tokenyard::events::unix_ms(std::time::SystemTime::now());
    let mut d = Dashboard::new("chaos");
    for f in &feed.feed {
        d.apply(f.clone(), now_ms);
    }
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let tz = jiff::tz::TimeZone::UTC;
    let cx = Context {
        now_ms,
        tz: &tz,
        log: None,
    };
    terminal
        .draw(|frame| render(frame, &d, &Ui::default(), &cx))
        .unwrap();
    let screen = format!("{:?}", terminal.backend().buffer());
    assert!(screen.contains("k-all"), "the dashboard drew the pool");
    screen
}
