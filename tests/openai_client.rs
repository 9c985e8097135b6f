//! A real OpenAI client crate (async-openai) against the gateway: what an
//! application sees, streaming and not, including the pool's 429.

mod common;

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use common::*;
use futures_util::StreamExt;
use tokenyard::sim::{Limit, SimAccount, SimConfig};

const CLIENT_KEY: &str = "ck-test-client-key-123456";

fn request(pieces: u32) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model("sim-small")
        .max_tokens(pieces)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("Say something numbered.")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

async fn setup(
    limit: Limit,
) -> (
    tokenyard::sim::SimHandle,
    tokenyard::gateway::Running,
    Client<OpenAIConfig>,
) {
    let mut a = SimAccount::api_key("key-a", "sk-test-aaaa-0001", limit.clone());
    a.advertise = false;
    let mut b = SimAccount::api_key("key-b", "sk-test-bbbb-0002", limit);
    b.advertise = false;
    let sim = start_sim(SimConfig {
        accounts: vec![a, b],
        chunk_interval: Duration::from_millis(3),
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = [
        key("key-a", "main", "sk-test-aaaa-0001"),
        key("key-b", "main", "sk-test-bbbb-0002"),
    ];
    let toml = config_toml(
        &sim,
        &["main"],
        &creds,
        &format!("client_keys = [\"{CLIENT_KEY}\"]"),
        "",
        "",
    );
    let gw = start(parse(&toml, dir.path())).await;
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(base(&gw))
            .with_api_key(CLIENT_KEY),
    )
    .with_http_client(common::client());
    (sim, gw, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_streaming_completions_through_rotation() {
    let limit = Limit::Window {
        requests: 2,
        window: Duration::from_secs(3),
    };
    let (sim, gw, client) = setup(limit).await;

    // Four requests fit the two keys' windows; the third on each key would
    // be a 429 the client must never see.
    let resp = client.chat().create(request(3)).await.unwrap();
    assert_eq!(
        resp.choices[0].message.content.as_deref(),
        Some(expected_text(3).as_str())
    );
    let resp = client.chat().create(request(2)).await.unwrap();
    assert_eq!(resp.choices[0].message.content.as_deref(), Some("[0][1]"));

    let mut stream = client.chat().create_stream(request(5)).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if let Some(c) = chunk
            .choices
            .first()
            .and_then(|c| c.delta.content.as_deref())
        {
            text.push_str(c);
        }
    }
    assert_eq!(text, expected_text(5));

    let mut stream = client.chat().create_stream(request(2)).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        if let Some(c) = chunk
            .unwrap()
            .choices
            .first()
            .and_then(|c| c.delta.content.clone())
        {
            text.push_str(&c);
        }
    }
    assert_eq!(text, "[0][1]");
    let served: Vec<_> = sim.log().iter().map(|r| r.label.clone().unwrap()).collect();
    assert_eq!(served, ["key-a", "key-b", "key-a", "key-b"]);

    // Both windows are spent: the fifth request gets the pool's 429 with
    // Retry-After. async-openai's own retry policy honours it, waits for the
    // windows to reset and then succeeds — the hint works end to end.
    let started = std::time::Instant::now();
    let resp = client.chat().create(request(1)).await.unwrap();
    assert_eq!(resp.choices[0].message.content.as_deref(), Some("[0]"));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let totals = gw.pool.snapshot().totals;
    assert_eq!(totals.client_429, 1);
    assert_eq!(totals.succeeded, 5);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_key_is_required() {
    let (_sim, gw, _) = setup(Limit::Unlimited).await;
    let wrong = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(base(&gw))
            .with_api_key("not-the-key"),
    )
    .with_http_client(common::client());
    match wrong.chat().create(request(1)).await {
        Err(OpenAIError::ApiError(e)) => {
            assert_eq!(e.status_code.as_u16(), 401);
            assert_eq!(e.api_error.code.as_deref(), Some("invalid_api_key"));
        }
        other => panic!("expected 401, got {other:?}"),
    }
    gw.stop().await;
}
