//! `[pool] strategy` on real sockets, choosing by the rate-limit headers
//! the sim sends with every answer: `least_used` follows the remaining
//! counts of `x-ratelimit-*`, `soonest_reset` (switched on by a hot
//! reload) the window that resets first; `/admin/pool` and the
//! dashboard's feed show each credential's remaining share and reset,
//! Anthropic's subscription (`anthropic-ratelimit-unified-*`) windows
//! included.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Cred, key, refresh};
use futures_util::StreamExt;
use serde_json::Value;
use tokenyard::config::Config;
use tokenyard::gateway::{self, ReloadFrom, Running};
use tokenyard::sim::{Limit, SimAccount, SimConfig, SimHandle};
use tokio_util::sync::CancellationToken;

fn window(requests: u32, secs: u64) -> Limit {
    Limit::Window {
        requests,
        window: Duration::from_secs(secs),
    }
}

async fn sim(accounts: Vec<SimAccount>) -> SimHandle {
    common::start_sim(SimConfig {
        accounts,
        chunks: 2,
        chunk_interval: Duration::from_millis(1),
        ..SimConfig::default()
    })
    .await
}

/// Writes the config to `dir/strategy.toml` (state kept in `dir`).
fn write_config(dir: &Path, sim: &SimHandle, creds: &[Cred], pool: &str) -> PathBuf {
    let top = format!(
        "state_file = {:?}",
        dir.join("state.json").display().to_string()
    );
    let toml = common::config_toml(sim, &["main"], creds, &top, pool, "");
    let path = dir.join("strategy.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

async fn start_from(path: &Path) -> Running {
    let config = Config::load(path).expect("the test config loads");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let from = ReloadFrom {
        path: path.to_path_buf(),
        listen_override: None,
        watch: false,
    };
    gateway::start_with(config, listener, CancellationToken::new(), Some(from)).unwrap()
}

/// Which credential served each of `n` requests, one after another.
async fn served(gw: &Running, n: usize) -> Vec<String> {
    let client = common::client();
    let mut names = Vec::new();
    for _ in 0..n {
        let resp = common::post_chat(&client, gw, &common::chat_body(false, 2)).await;
        assert_eq!(resp.status(), 200);
        names.push(
            resp.headers()["x-tokenyard-credential"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        resp.bytes().await.unwrap();
    }
    names
}

fn root(gw: &Running) -> String {
    format!("http://{}", gw.addr)
}

fn capacity(pool: &Value, name: &str) -> Value {
    pool["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {pool}"))["capacity"]
        .clone()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn least_used_follows_the_remaining_counts_the_sim_reports() {
    let sim = sim(vec![
        SimAccount::api_key("a", "sk-strategy-a", window(10, 60)),
        SimAccount::api_key("b", "sk-strategy-b", window(100, 60)),
        SimAccount::api_key("c", "sk-strategy-c", window(20, 60)),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = [
        key("a", "main", "sk-strategy-a"),
        key("b", "main", "sk-strategy-b"),
        key("c", "main", "sk-strategy-c"),
    ];
    let path = write_config(dir.path(), &sim, &creds, "strategy = \"least_used\"");
    let gw = start_from(&path).await;
    // Nothing reported: each counts as full and they go in turn (a, b, c).
    // Then b's 99 of 100 beats c's 19 of 20 and a's 9 of 10, until b is
    // down to 95 %; at c's 95 % the tie goes to c, which spent fewer
    // tokens today.
    assert_eq!(
        served(&gw, 8).await,
        ["a", "b", "c", "b", "b", "b", "b", "c"]
    );
    let pool = common::admin_pool(&root(&gw)).await;
    let b = capacity(&pool, "b");
    assert_eq!(b["remaining"], 95, "{b}");
    assert_eq!(b["limit"], 100, "{b}");
    assert_eq!(b["window"], "requests", "{b}");
    let resets = b["resets_at_ms"].as_u64().unwrap();
    let now = now_ms();
    assert!(resets > now && resets <= now + 60_000, "{b}");
    assert_eq!(capacity(&pool, "a")["remaining"], 9);
    assert_eq!(capacity(&pool, "c")["remaining"], 18);
    gw.stop().await;
}

#[tokio::test]
async fn soonest_reset_after_a_reload_spends_the_window_that_ends_first() {
    let sim = sim(vec![
        SimAccount::api_key("a", "sk-soonest-a", window(50, 600)),
        SimAccount::api_key("b", "sk-soonest-b", window(50, 30)),
        SimAccount::api_key("c", "sk-soonest-c", window(50, 120)),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = [
        key("a", "main", "sk-soonest-a"),
        key("b", "main", "sk-soonest-b"),
        key("c", "main", "sk-soonest-c"),
    ];
    let path = write_config(dir.path(), &sim, &creds, "");
    let gw = start_from(&path).await;
    // Round-robin, the default: in turn, whatever the windows.
    assert_eq!(served(&gw, 4).await, ["a", "b", "c", "a"]);
    // A reload switches the strategy; what the keys reported stays.
    write_config(dir.path(), &sim, &creds, "strategy = \"soonest_reset\"");
    gw.reload("test").await.expect("the reload is accepted");
    assert_eq!(served(&gw, 4).await, ["b", "b", "b", "b"]);
    let pool = common::admin_pool(&root(&gw)).await;
    let reset = |name: &str| capacity(&pool, name)["resets_at_ms"].as_u64().unwrap();
    assert!(reset("b") < reset("c") && reset("c") < reset("a"), "{pool}");
    assert_eq!(capacity(&pool, "b")["remaining"], 45);
    // And back to round-robin.
    write_config(dir.path(), &sim, &creds, "strategy = \"round_robin\"");
    gw.reload("test").await.expect("the reload is accepted");
    let mut names = served(&gw, 3).await;
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
    gw.stop().await;
}

/// An Anthropic subscription account: the sim's OAuth accounts carry the
/// `anthropic-ratelimit-unified-*` window, and the gateway shows it.
#[tokio::test]
async fn unified_windows_show_in_the_admin_api_and_the_dashboards_feed() {
    let sim = sim(vec![SimAccount::refresh_token(
        "oauth",
        "rt-strategy-oauth",
        window(3, 300),
    )])
    .await;
    let toml = common::config_toml(
        &sim,
        &["main"],
        &[refresh("oauth", "main", "rt-strategy-oauth")],
        "",
        "strategy = \"least_used\"",
        "",
    )
    .replace("kind = \"openai\"", "kind = \"anthropic\"");
    let gw = common::start(common::parse(&toml, &std::env::temp_dir())).await;
    assert_eq!(served(&gw, 2).await, ["oauth", "oauth"]);
    let pool = common::admin_pool(&root(&gw)).await;
    let cap = capacity(&pool, "oauth");
    // 2 of 3 used: utilization "0.67" leaves 33 %, a hair under the
    // requests' 1 of 3, so the unified window is the one that binds.
    assert_eq!(cap["window"], "unified-5h", "{cap}");
    assert!((cap["left"].as_f64().unwrap() - 0.33).abs() < 1e-9, "{cap}");
    assert!(
        cap["remaining"].is_null() && cap["limit"].is_null(),
        "{cap}"
    );
    let resets = cap["resets_at_ms"].as_u64().unwrap();
    assert_eq!(resets % 1000, 0, "Unix seconds: {cap}");
    let now = now_ms();
    assert!(resets > now && resets <= now + 301_000, "{cap}");

    // What the dashboard reads (locally and through `attach`): the first
    // snapshot of `/admin/events` carries it too.
    let resp = common::client()
        .get(format!("{}/admin/events", root(&gw)))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = body.next().await.expect("a snapshot").unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let snapshot: Value = serde_json::from_str(data).unwrap();
    assert_eq!(capacity(&snapshot, "oauth"), cap);
    gw.stop().await;
}
