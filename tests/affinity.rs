//! Session affinity on real sockets: a conversation that names its
//! session stays on one credential while it can serve, moves once when
//! that credential is rate limited, and stays where it moved; requests
//! without a signal still go round-robin; the client's session id shows
//! nowhere; and replicas sharing Redis pin a session alike.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;
use serde_json::{Value, json};
use tokenyard::events::{Event, State};
use tokenyard::gateway::Running;
use tokenyard::sim::{HintStyle, Limit, SimAccount, SimConfig, SimHandle};

/// The raw session id the client sends; it must never be shown.
const SESSION: &str = "conv-7c1d-secret-session";

fn turn(stream: bool, session: Option<&str>) -> Value {
    let mut body = chat_body(stream, 2);
    if let Some(s) = session {
        body["prompt_cache_key"] = json!(s);
    }
    body
}

/// Sends one turn; the credential that answered and the attempts it took.
async fn send(gw: &Running, stream: bool, session: Option<&str>) -> (String, u32) {
    let resp = post_chat(&client(), gw, &turn(stream, session)).await;
    assert_eq!(resp.status(), 200);
    let name = resp.headers()["x-tokenyard-credential"]
        .to_str()
        .unwrap()
        .to_string();
    let attempts = resp.headers()["x-tokenyard-attempts"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    if stream {
        assert!(read_sse(resp).await.done);
    } else {
        resp.bytes().await.unwrap();
    }
    (name, attempts)
}

fn three_keys(a: Limit) -> SimConfig {
    SimConfig {
        accounts: vec![
            SimAccount {
                hints: HintStyle::RetryAfterOnly,
                advertise: false,
                ..SimAccount::api_key("key-a", "sk-test-aff-a", a)
            },
            SimAccount::api_key("key-b", "sk-test-aff-b", Limit::Unlimited),
            SimAccount::api_key("key-c", "sk-test-aff-c", Limit::Unlimited),
        ],
        ..SimConfig::default()
    }
}

fn creds() -> Vec<Cred> {
    vec![
        key("key-a", "main", "sk-test-aff-a"),
        key("key-b", "main", "sk-test-aff-b"),
        key("key-c", "main", "sk-test-aff-c"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_stays_on_one_key_and_moves_once_when_it_429s() {
    // key-a takes 11 requests a minute: one round-robin request and ten
    // turns; the eleventh turn meets its 429.
    let sim = start_sim(three_keys(Limit::Window {
        requests: 11,
        window: Duration::from_secs(60),
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(&sim, &["main"], &creds(), "", "", "");
    let gw = start(parse(&toml, dir.path())).await;
    let mut events = gw.pool.subscribe();

    // No signal: round-robin over the three, as before.
    let mut plain = Vec::new();
    for _ in 0..3 {
        plain.push(send(&gw, false, None).await.0);
    }
    assert_eq!(plain, ["key-a", "key-b", "key-c"]);

    // Ten turns (streams and not), three keys ready: one key.
    let mut turns = Vec::new();
    for i in 0..10 {
        turns.push(send(&gw, i % 2 == 0, Some(SESSION)).await);
    }
    assert!(
        turns.iter().all(|t| *t == ("key-a".to_string(), 1)),
        "{turns:?}"
    );
    // The eleventh: key-a answers 429 and cools; the turn moves on, once.
    let moved = send(&gw, false, Some(SESSION)).await;
    assert_eq!(moved, ("key-b".to_string(), 2));
    assert_eq!(gw.pool.state_of("key-a"), Some(State::Cooling));
    // And stays where it moved, while key-c is ready too.
    for i in 0..4 {
        assert_eq!(send(&gw, i % 2 == 0, Some(SESSION)).await.0, "key-b");
    }
    // Requests without a signal meanwhile still rotate (key-a cools).
    let mut plain = Vec::new();
    for _ in 0..4 {
        plain.push(send(&gw, false, None).await.0);
    }
    plain.sort();
    assert_eq!(plain, ["key-b", "key-b", "key-c", "key-c"]);

    // One notice said so, with the session's hash, never its id.
    let mut notices = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::Notice { message, .. } = e
            && message.starts_with("session ")
        {
            notices.push(message);
        }
    }
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].ends_with("moved from key-a (cooling) to key-b"),
        "{}",
        notices[0]
    );
    assert!(!notices[0].contains(SESSION));

    // The admin API counts it, by hash only; so do the metrics.
    let pool = admin_pool(&format!("http://{}", gw.addr)).await;
    assert_eq!(pool["sessions"], 1);
    assert_eq!(pool["pinned"], json!({"key-b": 1}));
    assert!(!pool.to_string().contains(SESSION));
    let metrics = metrics_text(&format!("http://{}", gw.addr)).await;
    assert!(metrics.contains("tokenyard_sessions 1"), "{metrics}");
    assert!(!metrics.contains(SESSION));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coding_agent_headers_and_affinity_off() {
    let sim = start_sim(three_keys(Limit::Unlimited)).await;
    let dir = tempfile::tempdir().unwrap();
    // Codex CLI's header: every turn on one key.
    let toml = config_toml(&sim, &["main"], &creds(), "", "", "");
    let gw = start(parse(&toml, dir.path())).await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let resp = client()
            .post(format!("{}/chat/completions", base(&gw)))
            .header("session_id", "codex-conversation-1")
            .json(&turn(false, None))
            .send()
            .await
            .unwrap();
        seen.push(
            resp.headers()["x-tokenyard-credential"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
    gw.stop().await;

    // With affinity = false the same turns rotate.
    let toml = config_toml(&sim, &["main"], &creds(), "", "affinity = false", "");
    let gw = start(parse(&toml, dir.path())).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(send(&gw, false, Some(SESSION)).await.0);
    }
    assert_eq!(seen, ["key-a", "key-b", "key-c"]);
    assert_eq!(
        admin_pool(&format!("http://{}", gw.addr)).await["sessions"],
        0
    );
    gw.stop().await;
}

fn redis_toml(sim: &SimHandle, redis: &str) -> String {
    let mut t = config_toml(sim, &["main"], &creds(), "", "", "");
    t = t.replace(
        "\n\n[pool]",
        &format!(
            "\n[state]\nbackend = \"redis\"\nurl = \"{redis}\"\nnamespace = \"affinity\"\n\n[pool]"
        ),
    );
    t
}

async fn within(limit: Duration, f: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_redis_pin_a_session_alike() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // key-b takes 3 requests a minute: the session's first three turns.
    let sim = start_sim(SimConfig {
        accounts: vec![
            SimAccount::api_key("key-a", "sk-test-aff-a", Limit::Unlimited),
            SimAccount {
                hints: HintStyle::RetryAfterOnly,
                advertise: false,
                ..SimAccount::api_key(
                    "key-b",
                    "sk-test-aff-b",
                    Limit::Window {
                        requests: 3,
                        window: Duration::from_secs(60),
                    },
                )
            },
            SimAccount::api_key("key-c", "sk-test-aff-c", Limit::Unlimited),
        ],
        ..SimConfig::default()
    })
    .await;
    let toml = redis_toml(&sim, &redis.url());
    let a = start(parse(&toml, &std::env::temp_dir())).await;
    let b = start(parse(&toml, &std::env::temp_dir())).await;
    for gw in [&a, &b] {
        assert!(within(Duration::from_secs(5), || gw.pool.shared_healthy()).await);
    }
    // A's round-robin has moved on by one, B's has not: on their own they
    // would pick apart (A key-b, B key-a).
    assert_eq!(send(&a, false, None).await.0, "key-a");
    assert_eq!(send(&a, false, Some(SESSION)).await.0, "key-b");
    // The pin reaches Redis off the request path.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(send(&b, false, Some(SESSION)).await.0, "key-b");
    assert_eq!(send(&a, true, Some(SESSION)).await.0, "key-b");
    // key-b's fourth request is a 429 on B: the session moves to key-a
    // (B's next by round-robin; A's would be key-c).
    assert_eq!(
        send(&b, false, Some(SESSION)).await,
        ("key-a".to_string(), 2)
    );
    assert!(
        within(Duration::from_secs(2), || a.pool.state_of("key-b")
            == Some(State::Cooling))
        .await
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    // A follows the cluster's pin, not its own round-robin.
    assert_eq!(send(&a, false, Some(SESSION)).await.0, "key-a");
    assert_eq!(send(&b, true, Some(SESSION)).await.0, "key-a");
    assert_eq!(send(&a, false, Some(SESSION)).await.0, "key-a");
    a.stop().await;
    b.stop().await;
}
