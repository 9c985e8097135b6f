//! The operator's error policy, end to end over sockets: a
//! `[[error_policy]]` rule that matches an upstream error cools the
//! credential, disables it, retries without blame or passes the answer on;
//! a 402 disables by default; and a 429 that every credential gets within
//! a second cools the provider briefly, leaving the keys' own cooldowns as
//! they were (as `/admin/pool` shows).

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokenyard::events::Event;
use tokenyard::gateway::{self, Running};
use tokenyard::sim::{HintStyle, Limit, SimConfig, SimHandle};
use tokio_util::sync::CancellationToken;

async fn sim(n: usize, limit: Limit) -> SimHandle {
    common::start_sim(SimConfig {
        chunk_interval: Duration::from_millis(2),
        ..SimConfig::with_api_keys(n, limit)
    })
    .await
}

fn keys(n: usize) -> Vec<common::Cred> {
    const NAMES: [&str; 3] = ["key-1", "key-2", "key-3"];
    (0..n)
        .map(|i| common::key(NAMES[i], "main", &format!("sk-sim-{}", i + 1)))
        .collect()
}

/// The gateway config for `n` keys of `sim` with `rules` at the top level.
fn toml(sim: &SimHandle, n: usize, rules: &str) -> String {
    common::config_toml(sim, &["main"], &keys(n), rules, "", "")
}

async fn gateway(sim: &SimHandle, n: usize, rules: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    common::start(common::parse(&toml(sim, n, rules), dir.path())).await
}

async fn chat(gw: &Running, stream: bool) -> reqwest::Response {
    common::post_chat(&common::client(), gw, &common::chat_body(stream, 3)).await
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Credential `name` as `/admin/pool` shows it.
async fn admin_cred(gw: &Running, name: &str) -> Value {
    let pool = common::admin_pool(&format!("http://{}", gw.addr)).await;
    pool["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {pool}"))
        .clone()
}

/// The sim's requests as (account, status), in arrival order.
fn sim_log(sim: &SimHandle) -> Vec<(String, u16)> {
    sim.log()
        .into_iter()
        .map(|r| (r.label.unwrap_or_default(), r.status))
        .collect()
}

fn entry(label: &str, status: u16) -> (String, u16) {
    (label.to_string(), status)
}

const FORBIDDEN_COOLS: &str = r#"
[[error_policy]]
status = 403
body_contains = "not allowed to sample"
action = "cooldown 10m"
"#;

#[tokio::test]
async fn cooldown_cools_the_key_for_the_rules_duration_and_moves_on() {
    let sim = sim(2, Limit::Unlimited).await;
    let gw = gateway(&sim, 2, FORBIDDEN_COOLS).await;
    sim.fail_next("key-1", 403, 1);
    for stream in [false, true] {
        let resp = chat(&gw, stream).await;
        assert_eq!(resp.status(), 200, "stream={stream}");
        assert_eq!(header(&resp, "x-tokenyard-credential"), Some("key-2"));
    }
    // Both requests went to key-2 after the 403: key-1 cools.
    assert_eq!(
        sim_log(&sim),
        [
            entry("key-1", 403),
            entry("key-2", 200),
            entry("key-2", 200)
        ]
    );
    let k1 = admin_cred(&gw, "key-1").await;
    assert_eq!(k1["state"], "cooling", "{k1}");
    let reason = k1["reason"].as_str().unwrap();
    assert!(
        reason.contains("403 matched error_policy[0] (status 403 and body → cooldown 10m)"),
        "{reason}"
    );
    let left =
        k1["until_ms"].as_u64().unwrap() - tokenyard::events::unix_ms(std::time::SystemTime::now());
    assert!((590_000..=600_000).contains(&left), "{left} ms left");
    // Not counted as a failure or a rate limit.
    assert_eq!(k1["failures"], 0);
    assert_eq!(k1["rate_limited"], 0);
    gw.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_403_without_a_matching_body_is_passed_on_as_before() {
    let rules = FORBIDDEN_COOLS.replace("not allowed to sample", "something else");
    let sim = sim(2, Limit::Unlimited).await;
    let gw = gateway(&sim, 2, &rules).await;
    sim.fail_next("key-1", 403, 1);
    let resp = chat(&gw, false).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(admin_cred(&gw, "key-1").await["state"], "ready");
    gw.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn disable_takes_the_key_out_until_the_operator_enables_it() {
    let rules = "[[error_policy]]\nstatus = 403\naction = \"disable\"\n";
    let sim = sim(2, Limit::Unlimited).await;
    let gw = gateway(&sim, 2, rules).await;
    let mut events = gw.pool.subscribe();
    sim.fail_next("key-1", 403, 1);
    let resp = chat(&gw, true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tokenyard-credential"), Some("key-2"));
    let sse = common::read_sse(resp).await;
    assert_eq!(sse.text, common::expected_text(3));
    let k1 = admin_cred(&gw, "key-1").await;
    assert_eq!(k1["state"], "disabled", "{k1}");
    assert_eq!(
        k1["reason"],
        "403 matched error_policy[0] (status 403 → disable)"
    );
    assert!(k1["until_ms"].is_null());
    // Never tried again by itself…
    for _ in 0..3 {
        assert_eq!(chat(&gw, false).await.status(), 200);
    }
    assert!(sim_log(&sim).iter().skip(1).all(|(k, _)| k == "key-2"));
    // …and the operator saw why.
    let mut told = false;
    while let Ok(e) = events.try_recv() {
        if let Event::Notice { message, .. } = e {
            told |= message.starts_with("key-1 disabled: 403 matched error_policy[0]");
        }
    }
    assert!(told, "a notice says key-1 was disabled and why");
    // The operator's enable brings it back.
    let ok = common::client()
        .post(format!("http://{}/admin/credentials/key-1/enable", gw.addr))
        .send()
        .await
        .unwrap();
    assert!(ok.status().is_success());
    assert_eq!(admin_cred(&gw, "key-1").await["state"], "ready");
    gw.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn retry_tries_again_without_blaming_the_key() {
    let rules = "[[error_policy]]\nstatus = 403\naction = \"retry\"\n";
    let sim = sim(1, Limit::Unlimited).await;
    let gw = gateway(&sim, 1, rules).await;
    // A lone key: tried again after the usual pause.
    sim.fail_next("key-1", 403, 2);
    let resp = chat(&gw, false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tokenyard-attempts"), Some("3"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        common::expected_text(3)
    );
    assert_eq!(
        sim_log(&sim),
        [
            entry("key-1", 403),
            entry("key-1", 403),
            entry("key-1", 200)
        ]
    );
    let k1 = admin_cred(&gw, "key-1").await;
    assert_eq!(k1["state"], "ready");
    assert_eq!(k1["failures"], 0);
    assert_eq!(k1["errors"], 0);
    gw.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn retry_moves_to_another_key_first() {
    let rules = "[[error_policy]]\nstatus = 403\naction = \"retry\"\n";
    let sim = sim(2, Limit::Unlimited).await;
    let gw = gateway(&sim, 2, rules).await;
    sim.fail_next("key-1", 403, 1);
    let resp = chat(&gw, true).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tokenyard-credential"), Some("key-2"));
    assert_eq!(common::read_sse(resp).await.text, common::expected_text(3));
    assert_eq!(admin_cred(&gw, "key-1").await["state"], "ready");
    gw.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn pass_hands_the_answer_over_in_the_clients_format() {
    // A 503 is retried by default; this rule says the client should see it.
    let rules =
        "[[error_policy]]\nbody_matches = \"(?i)the server had an error\"\naction = \"pass\"\n";
    let sim = sim(2, Limit::Unlimited).await;
    let gw = gateway(&sim, 2, rules).await;
    sim.fail_next("key-1", 503, 1);
    let resp = chat(&gw, false).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "x-tokenyard-attempts"), Some("1"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    // An Anthropic client gets it in Anthropic's shape.
    sim.fail_next("key-2", 503, 1);
    let resp = common::client()
        .post(format!("{}/messages", common::base(&gw)))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({
            "model": "sim-small",
            "max_tokens": 3,
            "messages": [{"role": "user", "content": "hello"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("The server had an error"),
        "{body}"
    );
    assert_eq!(sim_log(&sim), [entry("key-1", 503), entry("key-2", 503)]);
    // No blame: neither key counted a failure.
    for k in ["key-1", "key-2"] {
        let c = admin_cred(&gw, k).await;
        assert_eq!(
            (c["state"].as_str(), c["failures"].as_u64()),
            (Some("ready"), Some(0))
        );
    }
    gw.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_402_disables_the_key_by_default() {
    let sim = sim(2, Limit::Unlimited).await;
    let gw = gateway(&sim, 2, "").await;
    sim.fail_next("key-1", 402, 1);
    let resp = chat(&gw, false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tokenyard-credential"), Some("key-2"));
    let k1 = admin_cred(&gw, "key-1").await;
    assert_eq!(k1["state"], "disabled", "{k1}");
    assert!(
        k1["reason"]
            .as_str()
            .unwrap()
            .starts_with("402 payment required"),
        "{k1}"
    );
    // With no key left, the client hears that an operator must act.
    sim.fail_next("key-2", 402, 1);
    let resp = chat(&gw, false).await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_credentials", "{body}");
    gw.stop().await;
    sim.shutdown().await;
}

/// Two keys allowing one request per 30 s each, whose 429s carry `hints`
/// and whose answers say nothing of what is left.
async fn one_request_each(hints: HintStyle) -> SimHandle {
    let mut cfg = SimConfig::with_api_keys(
        2,
        Limit::Window {
            requests: 1,
            window: Duration::from_secs(30),
        },
    );
    for a in &mut cfg.accounts {
        a.advertise = false;
        a.hints = hints;
    }
    common::start_sim(cfg).await
}

#[tokio::test]
async fn a_429_on_every_key_at_once_cools_the_provider_not_the_keys() {
    // Two answers, then every key says 429 with only a retry hint of about
    // 30 s: nothing that says the key's own limit is spent.
    let sim = one_request_each(HintStyle::RetryAfterOnly).await;
    let gw = gateway(&sim, 2, "").await;
    let mut events = gw.pool.subscribe();
    for _ in 0..2 {
        assert_eq!(chat(&gw, false).await.status(), 200);
    }
    let resp = chat(&gw, false).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "x-tokenyard-attempts"), Some("2"));
    // The client is told to come back when the provider's brief cooldown
    // ends (at most 5 s), not in 30 s.
    let retry_after: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry_after), "retry-after {retry_after}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "pool_exhausted");

    let pool = common::admin_pool(&format!("http://{}", gw.addr)).await;
    // The keys' own cooldowns are untouched: both ready, no deadline.
    for c in pool["credentials"].as_array().unwrap() {
        assert_eq!(c["state"], "ready", "{c}");
        assert!(c["until_ms"].is_null(), "{c}");
        assert_eq!(c["rate_limited"], 1, "{c}");
    }
    // The provider cools, and says why.
    let p = &pool["providers"][0];
    assert_eq!(p["healthy"], true, "{p}");
    let reason = p["cooling_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("provider-wide 429: all 2 credentials answered 429 within 1s"),
        "{reason}"
    );
    let left = p["cooling_until_ms"].as_u64().unwrap()
        - tokenyard::events::unix_ms(std::time::SystemTime::now())
            .min(p["cooling_until_ms"].as_u64().unwrap());
    assert!(left <= 5_000, "{left} ms left");

    // Meanwhile nothing goes upstream.
    let sent = sim.log().len();
    assert_eq!(chat(&gw, true).await.status(), 429);
    assert_eq!(sim.log().len(), sent);
    // Logged once.
    let mut said = 0;
    while let Ok(e) = events.try_recv() {
        if let Event::Provider { provider } = e
            && provider.cooling_reason.is_some()
        {
            said += 1;
            let line = tokenyard::report::event_line(&Event::Provider { provider }).unwrap();
            assert!(
                line.1.starts_with("provider sim: provider-wide 429"),
                "{}",
                line.1
            );
        }
    }
    assert_eq!(said, 1);
    gw.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_reload_applies_changed_rules() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(2, Limit::Unlimited).await;
    let path = dir.path().join("policy.toml");
    let state = format!(
        "state_file = {:?}\n",
        dir.path().join("state.json").display().to_string()
    );
    let write = |rules: &str, path: &Path| {
        std::fs::write(path, toml(&sim, 2, &format!("{state}{rules}"))).unwrap();
    };
    write("", &path);
    let config = tokenyard::config::Config::load(&path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let from = gateway::ReloadFrom {
        path: path.clone(),
        listen_override: None,
        watch: false,
    };
    let gw = gateway::start_with(config, listener, CancellationToken::new(), Some(from)).unwrap();
    // No rule: a 403 is the request's own.
    sim.fail_next("key-1", 403, 1);
    assert_eq!(chat(&gw, false).await.status(), 403);
    write(FORBIDDEN_COOLS, &path);
    let reloaded = common::client()
        .post(format!("http://{}/admin/reload", gw.addr))
        .send()
        .await
        .unwrap();
    assert!(reloaded.status().is_success());
    // Now a 403 cools the key: with both refusing, both cool and the
    // client hears when the first comes back.
    sim.fail_next("key-1", 403, 1);
    sim.fail_next("key-2", 403, 1);
    let resp = chat(&gw, false).await;
    assert_eq!(resp.status(), 429);
    for k in ["key-1", "key-2"] {
        let c = admin_cred(&gw, k).await;
        assert_eq!(c["state"], "cooling", "{c}");
        assert!(
            c["reason"].as_str().unwrap().contains("error_policy[0]"),
            "{c}"
        );
    }
    gw.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_429_that_says_the_keys_limit_is_spent_stays_the_keys() {
    // The same, but each 429 says its key has 0 requests left: each key
    // cools for its own hint, and the provider does not.
    let sim = one_request_each(HintStyle::All).await;
    let gw = gateway(&sim, 2, "").await;
    for _ in 0..2 {
        assert_eq!(chat(&gw, false).await.status(), 200);
    }
    let resp = chat(&gw, false).await;
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!(retry_after > 20, "retry-after {retry_after}");
    let pool = common::admin_pool(&format!("http://{}", gw.addr)).await;
    for c in pool["credentials"].as_array().unwrap() {
        assert_eq!(c["state"], "cooling", "{c}");
    }
    assert!(pool["providers"][0]["cooling_until_ms"].is_null());
    gw.stop().await;
    sim.shutdown().await;
}
