//! Transient upstream failures cost the client nothing while a credential
//! can serve: a 5xx (other than 501), a refused or broken connection or a
//! timeout before the first byte is retried on another ready credential
//! first, and on the same one after a short jittered pause when no other
//! is ready. A provider whose every credential fails alike is marked
//! unhealthy, and no key is marked failed for it.

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use tokenyard::events::{Event, State};
use tokenyard::sim::{KeyFault, Limit, SimConfig, SimHandle};

use common::Cred;

async fn sim(n: usize) -> SimHandle {
    common::start_sim(SimConfig {
        chunk_interval: Duration::from_millis(2),
        ..SimConfig::with_api_keys(n, Limit::Unlimited)
    })
    .await
}

fn keys(n: usize) -> Vec<Cred> {
    const NAMES: [&str; 3] = ["key-1", "key-2", "key-3"];
    (0..n)
        .map(|i| common::key(NAMES[i], "main", &format!("sk-sim-{}", i + 1)))
        .collect()
}

async fn gateway(sim: &SimHandle, n: usize, extra_pool: &str) -> tokenyard::gateway::Running {
    let dir = tempfile::tempdir().unwrap();
    let toml = common::config_toml(sim, &["main"], &keys(n), "", extra_pool, "");
    common::start(common::parse(&toml, dir.path())).await
}

/// The labels of the sim's chat requests, in arrival order, with their status.
fn chat_log(sim: &SimHandle) -> Vec<(String, u16)> {
    sim.log()
        .into_iter()
        .map(|r| (r.label.unwrap_or_default(), r.status))
        .collect()
}

async fn chat(gw: &tokenyard::gateway::Running, stream: bool) -> reqwest::Response {
    common::post_chat(&common::client(), gw, &common::chat_body(stream, 3)).await
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn a_lone_credential_is_retried_after_a_pause() {
    for (stream, status) in [(false, 500), (true, 502), (false, 503), (true, 504)] {
        let sim = sim(1).await;
        let gw = gateway(&sim, 1, "").await;
        sim.fail_next("key-1", status, 2);
        let resp = chat(&gw, stream).await;
        assert_eq!(resp.status(), 200, "{status} stream={stream}");
        assert_eq!(header(&resp, "x-tokenyard-attempts"), Some("3"));
        if stream {
            let sse = common::read_sse(resp).await;
            assert_eq!(sse.text, common::expected_text(3));
            assert!(sse.done);
        } else {
            let body: Value = resp.json().await.unwrap();
            assert_eq!(
                body["choices"][0]["message"]["content"],
                common::expected_text(3)
            );
        }
        let log = chat_log(&sim);
        assert_eq!(
            log,
            [
                ("key-1".to_string(), status),
                ("key-1".to_string(), status),
                ("key-1".to_string(), 200)
            ]
        );
        // The pauses were short, and apart: the retries were not fired
        // back to back.
        let at: Vec<_> = sim.log().iter().map(|r| r.at).collect();
        for pair in at.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(12) && gap < Duration::from_secs(2),
                "gap {gap:?}"
            );
        }
        // Two failures and a success: the key stays ready, its count reset.
        assert_eq!(gw.pool.state_of("key-1"), Some(State::Ready));
        gw.stop().await;
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn another_ready_credential_comes_first() {
    let sim = sim(2).await;
    let gw = gateway(&sim, 2, "").await;
    sim.fail_next("key-1", 500, 1);
    let resp = chat(&gw, false).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tokenyard-attempts"), Some("2"));
    assert_eq!(header(&resp, "x-tokenyard-credential"), Some("key-2"));
    assert_eq!(
        chat_log(&sim),
        [("key-1".to_string(), 500), ("key-2".to_string(), 200)]
    );
    gw.stop().await;
}

#[tokio::test]
async fn not_implemented_is_not_retried_on_the_same_credential() {
    let sim = sim(1).await;
    let gw = gateway(&sim, 1, "").await;
    sim.fail_next("key-1", 501, 1);
    let resp = chat(&gw, false).await;
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert_eq!(chat_log(&sim), [("key-1".to_string(), 501)]);
    gw.stop().await;
}

#[tokio::test]
async fn retries_stop_at_max_attempts() {
    let sim = sim(1).await;
    let gw = gateway(&sim, 1, "max_attempts = 3\nmax_failures = 10").await;
    sim.set_fault("key-1", Some(KeyFault::Status(500)));
    let resp = chat(&gw, false).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(header(&resp, "x-tokenyard-attempts"), Some("3"));
    assert_eq!(chat_log(&sim).len(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn a_truly_broken_key_still_goes_failed() {
    let sim = sim(2).await;
    let gw = gateway(&sim, 2, "max_failures = 3").await;
    sim.set_fault("key-1", Some(KeyFault::Status(500)));
    for _ in 0..6 {
        let resp = chat(&gw, false).await;
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(gw.pool.state_of("key-1"), Some(State::Failed));
    assert_eq!(gw.pool.state_of("key-2"), Some(State::Ready));
    assert!(gw.pool.snapshot().providers.iter().all(|p| p.healthy));
    gw.stop().await;
}

#[tokio::test]
async fn an_outage_marks_the_provider_not_the_keys() {
    let sim = sim(3).await;
    let gw = gateway(&sim, 3, "max_failures = 2\nmax_attempts = 4").await;
    let mut events = gw.pool.subscribe();
    for k in ["key-1", "key-2", "key-3"] {
        sim.set_fault(k, Some(KeyFault::Status(500)));
    }
    for stream in [false, true, false] {
        let resp = chat(&gw, stream).await;
        let retry_after = header(&resp, "retry-after").map(str::to_string);
        assert_eq!(resp.status(), 503);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "provider_unhealthy", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("500"), "{message}");
        assert_eq!(retry_after.as_deref(), Some("1"));
    }
    let snap = gw.pool.snapshot();
    for c in &snap.credentials {
        assert_eq!(c.state, State::Ready, "{} stays in rotation", c.name);
    }
    let sim_provider = &snap.providers[0];
    assert!(!sim_provider.healthy);
    assert!(sim_provider.since_ms.is_some());
    let metrics = gw.pool.metrics().encode(gw.pool.snapshot()).unwrap();
    assert!(
        metrics.contains("tokenyard_provider_healthy{provider=\"sim\"} 0"),
        "{metrics}"
    );
    // While it is down, a request tries each key once, not again after
    // a pause: 4 attempts for the first request, then 3 each.
    let log = chat_log(&sim);
    assert!(log.len() <= 10, "{} upstream requests", log.len());

    // It answers again: the next request succeeds at once, and the
    // provider is healthy.
    for k in ["key-1", "key-2", "key-3"] {
        sim.set_fault(k, None);
    }
    let resp = chat(&gw, false).await;
    assert_eq!(resp.status(), 200);
    assert!(gw.pool.snapshot().providers[0].healthy);
    let metrics = gw.pool.metrics().encode(gw.pool.snapshot()).unwrap();
    assert!(metrics.contains("tokenyard_provider_healthy{provider=\"sim\"} 1"));
    let snap = gw.pool.snapshot();
    assert!(snap.credentials.iter().all(|c| c.failures == 0));

    // The operator heard both.
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::Provider { provider } = e {
            seen.push((provider.name, provider.healthy));
        }
    }
    assert_eq!(
        seen,
        [("sim".to_string(), false), ("sim".to_string(), true)]
    );
    let line = tokenyard::report::event_line(&Event::Provider {
        provider: tokenyard::events::ProviderView {
            healthy: false,
            ..snap.providers[0].clone()
        },
    });
    assert!(line.is_some());
    gw.stop().await;
}

#[tokio::test]
async fn an_anthropic_overload_on_the_only_key_is_retried() {
    let sim = sim(1).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "listen = \"127.0.0.1:0\"\n\n[[provider]]\nname = \"claude\"\nkind = \"anthropic\"\n\
         base_url = \"{}\"\nmodels = [\"sim-*\"]\n\n[[credential]]\nname = \"key-1\"\n\
         provider = \"claude\"\napi_key = \"sk-sim-1\"\n",
        sim.base_url()
    );
    let gw = common::start(common::parse(&toml, dir.path())).await;
    sim.fail_next("key-1", 529, 1);
    let resp = common::client()
        .post(format!("{}/messages", common::base(&gw)))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({
            "model": "sim-large",
            "max_tokens": 3,
            "messages": [{"role": "user", "content": "hi"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        chat_log(&sim),
        [("key-1".to_string(), 529), ("key-1".to_string(), 200)]
    );
    gw.stop().await;
}
