//! Rotation on real sockets: a sim plays the provider, the gateway rotates
//! its credentials, and the tests check what the client and the provider saw.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use tokenyard::sim::{HintStyle, Limit, SimAccount, SimConfig, SimRequest};

fn window(requests: u32, ms: u64) -> Limit {
    Limit::Window {
        requests,
        window: Duration::from_millis(ms),
    }
}

/// Three small-quota accounts with different hint dialects; two of them
/// stay quiet about their limits on success, so the gateway meets real 429s.
fn three_small_accounts() -> SimConfig {
    let mut a = SimAccount::api_key("key-a", "sk-test-aaaa-0001", window(4, 400));
    a.hints = HintStyle::All;
    let mut b = SimAccount::api_key("key-b", "sk-test-bbbb-0002", window(4, 400));
    b.hints = HintStyle::RetryAfterMsOnly;
    b.advertise = false;
    let mut c = SimAccount::api_key("key-c", "sk-test-cccc-0003", window(4, 400));
    c.hints = HintStyle::ResetHeadersOnly;
    c.advertise = false;
    SimConfig {
        accounts: vec![a, b, c],
        chunk_interval: Duration::from_millis(3),
        ..SimConfig::default()
    }
}

fn three_creds() -> Vec<Cred> {
    vec![
        key("key-a", "main", "sk-test-aaaa-0001"),
        key("key-b", "main", "sk-test-bbbb-0002"),
        key("key-c", "main", "sk-test-cccc-0003"),
    ]
}

/// Every request the sim saw for a label after it answered that label 429
/// arrived only once the wait it asked for had passed.
fn assert_hints_honoured(log: &[SimRequest]) {
    let mut cooling_until: HashMap<String, tokio::time::Instant> = HashMap::new();
    for r in log {
        let Some(label) = &r.label else { continue };
        if let Some(until) = cooling_until.get(label) {
            assert!(
                r.at >= *until,
                "{label} was sent a request {:?} before its retry hint expired",
                *until - r.at
            );
        }
        if r.status == 429 {
            let wait = r.retry_after.expect("sim records the wait it asked for");
            cooling_until.insert(label.clone(), r.at + wait);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_mixed_requests_see_no_429_and_no_cooling_key_is_used() {
    let sim = start_sim(three_small_accounts()).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(&sim, &["main"], &three_creds(), "", "max_wait = \"5s\"", "");
    let gw = start(parse(&toml, dir.path())).await;
    let client = client();

    // One client request at a time, so every request the sim sees after a
    // 429 was chosen after the gateway had that 429 in hand.
    for i in 0..60u64 {
        let stream = i % 2 == 0;
        let pieces = 2 + i % 4;
        let resp = post_chat(&client, &gw, &chat_body(stream, pieces)).await;
        assert_eq!(resp.status(), 200, "request {i}");
        if stream {
            let sse = read_sse(resp).await;
            assert!(sse.done && sse.error.is_none(), "request {i}: {sse:?}");
            assert_eq!(sse.text, expected_text(pieces), "request {i}");
        } else {
            let v: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(
                v["choices"][0]["message"]["content"],
                expected_text(pieces),
                "request {i}"
            );
        }
    }

    let log = sim.log();
    let upstream_429 = log.iter().filter(|r| r.status == 429).count();
    assert!(
        upstream_429 > 0,
        "the test is only meaningful if the provider said 429 at least once"
    );
    assert_hints_honoured(&log);
    let snap = gw.pool.snapshot();
    assert_eq!(snap.totals.client_429, 0);
    assert_eq!(snap.totals.requests, 60);
    assert_eq!(snap.totals.succeeded, 60);
    assert_eq!(snap.totals.upstream_429, upstream_429 as u64);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mixed_load_sees_no_429() {
    let sim = start_sim(three_small_accounts()).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(&sim, &["main"], &three_creds(), "", "max_wait = \"5s\"", "");
    let gw = start(parse(&toml, dir.path())).await;
    let client = client();

    let mut tasks = Vec::new();
    for i in 0..60u64 {
        let client = client.clone();
        let url = format!("{}/chat/completions", base(&gw));
        tasks.push(tokio::spawn(async move {
            let stream = i % 3 != 0;
            let pieces = 1 + i % 5;
            let resp = client
                .post(url)
                .json(&chat_body(stream, pieces))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            if status == 200 && stream {
                let sse = read_sse(resp).await;
                assert_eq!(sse.text, expected_text(pieces));
                assert!(sse.done && sse.error.is_none());
            }
            status
        }));
        if i % 8 == 7 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(gw.pool.snapshot().totals.client_429, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_answers_429_with_retry_after_of_the_earliest_recovery() {
    let mut slow = SimAccount::api_key("slow", "sk-test-slow-0001", window(1, 6000));
    slow.advertise = false;
    let mut fast = SimAccount::api_key("fast", "sk-test-fast-0002", window(1, 3000));
    fast.advertise = false;
    let sim = start_sim(SimConfig {
        accounts: vec![slow, fast],
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = [
        key("slow", "main", "sk-test-slow-0001"),
        key("fast", "main", "sk-test-fast-0002"),
    ];
    let gw = start(parse(
        &config_toml(&sim, &["main"], &creds, "", "", ""),
        dir.path(),
    ))
    .await;
    let client = client();

    for _ in 0..2 {
        let r = post_chat(&client, &gw, &chat_body(false, 1)).await;
        assert_eq!(r.status(), 200);
    }
    // Both keys used their one request; the next attempt on each gets a 429
    // with its own hint, and then nothing is left.
    let r = post_chat(&client, &gw, &chat_body(false, 1)).await;
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(r.headers()["x-tokenyard-attempts"], "2");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "pool_exhausted");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // The fast key's window reset is the earliest recovery: ~3 s, rounded up.
    let fast_wait = sim
        .log()
        .iter()
        .filter(|r| r.label.as_deref() == Some("fast") && r.status == 429)
        .map(|r| r.retry_after.unwrap())
        .next_back()
        .unwrap();
    let expected = fast_wait.as_secs() + u64::from(fast_wait.subsec_nanos() > 0);
    assert!(
        retry_after == expected || retry_after + 1 == expected,
        "Retry-After {retry_after}, fast key asked for {fast_wait:?}"
    );

    // Asking again does not touch the provider: nothing is ready.
    let before = sim.log().len();
    let r = post_chat(&client, &gw, &chat_body(true, 1)).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(sim.log().len(), before);
    let snap = gw.pool.snapshot();
    assert_eq!(snap.totals.client_429, 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_quota_exhausts_for_the_quota_cooldown() {
    let sim = start_sim(SimConfig {
        accounts: vec![SimAccount::api_key(
            "broke",
            "sk-test-broke-0001",
            Limit::Total { requests: 1 },
        )],
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = [key("broke", "main", "sk-test-broke-0001")];
    let toml = config_toml(&sim, &["main"], &creds, "", "quota_cooldown = \"1h\"", "");
    let gw = start(parse(&toml, dir.path())).await;
    let client = client();
    assert_eq!(
        post_chat(&client, &gw, &chat_body(false, 1)).await.status(),
        200
    );
    let r = post_chat(&client, &gw, &chat_body(false, 1)).await;
    assert_eq!(r.status(), 429);
    let ra: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3599..=3600).contains(&ra), "{ra}");
    assert_eq!(
        gw.pool.state_of("broke"),
        Some(tokenyard::events::State::Exhausted)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_order_and_the_fallback_tier_hold() {
    let sim = start_sim(SimConfig {
        accounts: vec![
            SimAccount::api_key("p1", "sk-test-p1-00000001", window(3, 1500)),
            SimAccount::api_key("b1", "sk-test-b1-00000002", Limit::Unlimited),
            SimAccount::api_key("b2", "sk-test-b2-00000003", Limit::Unlimited),
            SimAccount::api_key("f1", "sk-test-f1-00000004", Limit::Unlimited),
        ],
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = [
        key("p1", "primary", "sk-test-p1-00000001"),
        key("b1", "backup", "sk-test-b1-00000002"),
        key("b2", "backup", "sk-test-b2-00000003"),
        key("f1", "fallback", "sk-test-f1-00000004"),
    ];
    let toml = config_toml(&sim, &["primary", "backup", "fallback"], &creds, "", "", "");
    let gw = start(parse(&toml, dir.path())).await;
    let client = client();
    let served_by = |r: &reqwest::Response| {
        r.headers()["x-tokenyard-credential"]
            .to_str()
            .unwrap()
            .to_string()
    };

    let mut who = Vec::new();
    for _ in 0..7 {
        let r = post_chat(&client, &gw, &chat_body(false, 1)).await;
        assert_eq!(r.status(), 200);
        who.push(served_by(&r));
    }
    // p1 serves until its limit says 0, then the backups round-robin; the
    // fallback is never touched while a backup is ready.
    assert_eq!(who, ["p1", "p1", "p1", "b1", "b2", "b1", "b2"]);

    // Both backups off: now (and only now) the fallback serves.
    for name in ["b1", "b2"] {
        gw.pool
            .command(tokenyard::events::Command::Disable(name.into()))
            .await
            .unwrap();
    }
    let r = post_chat(&client, &gw, &chat_body(true, 2)).await;
    assert_eq!(served_by(&r), "f1");
    assert_eq!(read_sse(r).await.text, expected_text(2));

    // When the primary's window resets it takes over again by itself.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = post_chat(&client, &gw, &chat_body(false, 1)).await;
        let by = served_by(&r);
        if by == "p1" {
            break;
        }
        assert_eq!(by, "f1");
        assert!(tokio::time::Instant::now() < deadline, "p1 never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sim.log().iter().all(|r| r.status == 200));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_wait_holds_the_request_until_a_credential_recovers() {
    let mut only = SimAccount::api_key("only", "sk-test-only-0001", window(1, 700));
    only.advertise = false;
    let sim = start_sim(SimConfig {
        accounts: vec![only],
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = [key("only", "main", "sk-test-only-0001")];
    let toml = config_toml(&sim, &["main"], &creds, "", "max_wait = \"3s\"", "");
    let gw = start(parse(&toml, dir.path())).await;
    let client = client();
    assert_eq!(
        post_chat(&client, &gw, &chat_body(false, 1)).await.status(),
        200
    );
    let started = std::time::Instant::now();
    let r = post_chat(&client, &gw, &chat_body(false, 1)).await;
    assert_eq!(r.status(), 200, "waited for the key instead of a 429");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.headers()["x-tokenyard-attempts"], "2");
    assert_hints_honoured(&sim.log());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_move_on_and_repeated_ones_fail_the_key() {
    let mut bad = SimAccount::api_key("bad", "sk-test-bad-00000001", Limit::Unlimited);
    bad.fault = Some(tokenyard::sim::KeyFault::Status(503));
    let good = SimAccount::api_key("good", "sk-test-good-0000002", Limit::Unlimited);
    let sim = start_sim(SimConfig {
        accounts: vec![bad, good],
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = [
        key("bad", "main", "sk-test-bad-00000001"),
        key("good", "main", "sk-test-good-0000002"),
    ];
    let toml = config_toml(
        &sim,
        &["main"],
        &creds,
        "",
        "max_failures = 2\nprobe_interval = \"300ms\"",
        "",
    );
    let gw = start(parse(&toml, dir.path())).await;
    let client = client();
    for _ in 0..6 {
        let r = post_chat(&client, &gw, &chat_body(false, 1)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-tokenyard-credential"], "good");
    }
    let bad_calls = sim
        .log()
        .iter()
        .filter(|r| r.label.as_deref() == Some("bad"))
        .count();
    assert_eq!(bad_calls, 2, "failed after max_failures, then left alone");
    assert_eq!(
        gw.pool.state_of("bad"),
        Some(tokenyard::events::State::Failed)
    );

    // The half-open probe (GET /models) brings it back once it works again.
    sim.set_fault("bad", None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while gw.pool.state_of("bad") != Some(tokenyard::events::State::Ready) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "probe never succeeded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sim.models_calls("bad") >= 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_client_errors_pass_through_untouched_and_do_not_blame_the_key() {
    let sim = start_sim(SimConfig {
        accounts: vec![SimAccount::api_key(
            "k",
            "sk-test-k-000000001",
            Limit::Unlimited,
        )],
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = [key("k", "main", "sk-test-k-000000001")];
    let gw = start(parse(
        &config_toml(&sim, &["main"], &creds, "", "", ""),
        dir.path(),
    ))
    .await;
    // The sim refuses `max_tokens: "many"` with OpenAI's 400; the gateway
    // only peeks at model/stream, so the body goes through as sent.
    let r = client()
        .post(format!("{}/chat/completions", base(&gw)))
        .json(&serde_json::json!({"model": "sim-small", "messages": [], "max_tokens": "many"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "max_tokens");
    let snap = gw.pool.snapshot();
    assert_eq!(snap.credentials[0].failures, 0);
    assert_eq!(snap.credentials[0].state, tokenyard::events::State::Ready);
    assert_eq!(sim.log().len(), 1, "not retried");
    gw.stop().await;
}
