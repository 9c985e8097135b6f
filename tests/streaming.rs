//! Streams: retried invisibly while nothing has reached the client, never
//! retried after (an error event ends them instead), and never torn.

mod common;

use std::time::Duration;

use common::*;
use tokenyard::sim::{KeyFault, Limit, SimAccount, SimConfig};

fn two_keys(first_fault: Option<KeyFault>) -> SimConfig {
    let mut a = SimAccount::api_key("key-a", "sk-test-aaaa-0001", Limit::Unlimited);
    a.fault = first_fault;
    SimConfig {
        accounts: vec![
            a,
            SimAccount::api_key("key-b", "sk-test-bbbb-0002", Limit::Unlimited),
        ],
        chunk_interval: Duration::from_millis(5),
        ..SimConfig::default()
    }
}

fn creds() -> Vec<Cred> {
    vec![
        key("key-a", "primary", "sk-test-aaaa-0001"),
        key("key-b", "backup", "sk-test-bbbb-0002"),
    ]
}

async fn gateway(
    sim: &tokenyard::sim::SimHandle,
    gateway_extra: &str,
) -> tokenyard::gateway::Running {
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(sim, &["primary", "backup"], &creds(), "", "", gateway_extra);
    start(parse(&toml, dir.path())).await
}

fn labels(sim: &tokenyard::sim::SimHandle) -> Vec<String> {
    sim.log().into_iter().filter_map(|r| r.label).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_before_its_first_byte_is_retried_invisibly() {
    let sim = start_sim(two_keys(Some(KeyFault::ResetAfterChunks(0)))).await;
    let gw = gateway(&sim, "").await;
    let r = post_chat(&client(), &gw, &chat_body(true, 6)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-tokenyard-attempts"], "2");
    assert_eq!(r.headers()["x-tokenyard-credential"], "key-b");
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let sse = read_sse(r).await;
    assert_eq!(sse.text, expected_text(6), "whole text, exactly once");
    assert!(sse.done && sse.error.is_none() && !sse.broken);
    assert_eq!(labels(&sim), ["key-a", "key-b"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_after_its_first_byte_ends_with_an_error_event() {
    // Role chunk + two content chunks, then the connection resets.
    let sim = start_sim(two_keys(Some(KeyFault::ResetAfterChunks(3)))).await;
    let gw = gateway(&sim, "").await;
    let r = post_chat(&client(), &gw, &chat_body(true, 6)).await;
    assert_eq!(r.status(), 200);
    let sse = read_sse(r).await;
    assert_eq!(
        sse.text, "[0][1]",
        "what was sent stays; nothing is repeated"
    );
    let err = sse.error.expect("an error event");
    assert_eq!(err["error"]["code"], "stream_interrupted");
    assert!(sse.done, "the stream still ends with [DONE]");
    assert!(!sse.broken, "the client's connection ends cleanly");
    assert_eq!(
        labels(&sim),
        ["key-a"],
        "never retried after the first byte"
    );
    // The break counts against the key.
    let snap = gw.pool.snapshot();
    assert_eq!(snap.credentials[0].failures, 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_before_the_first_byte_times_out_and_moves_on() {
    let sim = start_sim(two_keys(Some(KeyFault::StallAfterChunks(0)))).await;
    let gw = gateway(&sim, "first_byte_timeout = \"400ms\"").await;
    let started = std::time::Instant::now();
    let r = post_chat(&client(), &gw, &chat_body(true, 3)).await;
    assert_eq!(r.headers()["x-tokenyard-credential"], "key-b");
    assert_eq!(read_sse(r).await.text, expected_text(3));
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(started.elapsed() < Duration::from_secs(5));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_inside_a_stream_ends_it_after_the_idle_timeout() {
    let sim = start_sim(two_keys(Some(KeyFault::StallAfterChunks(2)))).await;
    let gw = gateway(&sim, "stream_idle_timeout = \"400ms\"").await;
    let r = post_chat(&client(), &gw, &chat_body(true, 5)).await;
    let sse = read_sse(r).await;
    assert_eq!(sse.text, "[0]");
    assert!(sse.error.is_some() && sse.done);
    assert_eq!(labels(&sim), ["key-a"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_request_whose_body_breaks_is_retried() {
    let sim = start_sim(two_keys(Some(KeyFault::ResetAfterChunks(0)))).await;
    let gw = gateway(&sim, "").await;
    let r = post_chat(&client(), &gw, &chat_body(false, 4)).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], expected_text(4));
    assert_eq!(labels(&sim), ["key-a", "key-b"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_before_a_stream_are_retried() {
    let sim = start_sim(two_keys(Some(KeyFault::Status(502)))).await;
    let gw = gateway(&sim, "").await;
    let r = post_chat(&client(), &gw, &chat_body(true, 3)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(read_sse(r).await.text, expected_text(3));
    gw.stop().await;
}

/// Every credential fails alike: each is tried again after a pause until
/// the failures show the provider is down (the third failure of one key
/// with the other failing too and nothing answering between); then the
/// client gets a 503 in its format that says so, and no key is failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_credential_breaks_the_client_gets_a_503_in_its_format() {
    let mut cfg = two_keys(Some(KeyFault::Status(500)));
    cfg.accounts[1].fault = Some(KeyFault::Status(503));
    let sim = start_sim(cfg).await;
    let gw = gateway(&sim, "").await;
    let r = post_chat(&client(), &gw, &chat_body(true, 3)).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-tokenyard-attempts"], "6");
    assert_eq!(r.headers()["retry-after"], "1");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "provider_unhealthy");
    assert_eq!(v["error"]["type"], "server_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("503"));
    assert_eq!(
        labels(&sim),
        ["key-a", "key-b", "key-a", "key-b", "key-a", "key-b"]
    );
    assert_eq!(
        gw.pool.state_of("key-a"),
        Some(tokenyard::events::State::Ready)
    );
    assert_eq!(
        gw.pool.state_of("key-b"),
        Some(tokenyard::events::State::Ready)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_walks_away_mid_stream_is_recorded_and_frees_the_key() {
    let mut cfg = two_keys(None);
    cfg.chunk_interval = Duration::from_millis(50);
    let sim = start_sim(cfg).await;
    let gw = gateway(&sim, "").await;
    let mut events = gw.pool.subscribe();
    let mut r = post_chat(&client(), &gw, &chat_body(true, 40)).await;
    let _ = r.chunk().await.unwrap();
    drop(r);
    let record = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(tokenyard::events::Event::Request { request, .. }) = events.recv().await {
                return request;
            }
        }
    })
    .await
    .expect("a request record");
    assert_eq!(record.status, 499);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while gw.pool.snapshot().credentials[0].in_flight != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lease never released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.stop().await;
}
