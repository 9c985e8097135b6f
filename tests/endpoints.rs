//! The pool behind the other endpoints clients call: Anthropic's token
//! counting (Claude Code), OpenAI's embeddings (async-openai's typed call,
//! float and base64), each rotated on 429 like any request; a model whose
//! provider has no such endpoint gets a clear 400 in the client's shape;
//! `/v1/models` in each client's shape.

mod common;

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::embeddings::{CreateEmbeddingRequestArgs, EncodingFormat};
use common::*;
use serde_json::{Value, json};
use tokenyard::sim::{Endpoint, SimConfig, SimHandle};

/// Two keys that allow one and two requests in a long window and do not
/// say so until they answer 429: three requests fit, by rotating.
async fn tight_sim() -> SimHandle {
    let quiet = |label: &str, key: &str, requests: u32| {
        quiet_account(label, key, requests, Duration::from_secs(600))
    };
    start_sim(SimConfig {
        accounts: vec![
            quiet("k1", "fake-ep-key-one", 1),
            quiet("k2", "fake-ep-key-two", 2),
        ],
        ..SimConfig::default()
    })
    .await
}

/// A gateway with the sim as an OpenAI-kind provider for `sim-small` and
/// as an Anthropic provider for `sim-large` (the same accounts behind
/// both, as one vendor's keys would be).
async fn gateway(sim: &SimHandle) -> tokenyard::gateway::Running {
    let toml = format!(
        r#"
listen = "127.0.0.1:0"

[[provider]]
name = "oa"
kind = "openai"
base_url = "{base}"
models = ["sim-small"]

[[provider]]
name = "an"
kind = "anthropic"
base_url = "{base}"
models = ["sim-large"]

[[credential]]
name = "oa-1"
provider = "oa"
api_key = "fake-ep-key-one"

[[credential]]
name = "oa-2"
provider = "oa"
api_key = "fake-ep-key-two"

[[credential]]
name = "an-1"
provider = "an"
api_key = "fake-ep-key-one"

[[credential]]
name = "an-2"
provider = "an"
api_key = "fake-ep-key-two"
"#,
        base = sim.base_url()
    );
    start(parse(&toml, &std::env::temp_dir())).await
}

async fn post(gw: &tokenyard::gateway::Running, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", base(gw)))
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn count_body(model: &str) -> Value {
    json!({
        "model": model,
        "system": "be brief",
        "messages": [{"role": "user", "content": "How many tokens is this?"}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_counting_rotates_on_429() {
    let sim = tight_sim().await;
    let gw = gateway(&sim).await;
    for _ in 0..3 {
        let resp = post(&gw, "/messages/count_tokens", count_body("sim-large")).await;
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().contains_key("x-tokenyard-credential"));
        let body: Value = resp.json().await.unwrap();
        assert!(body["input_tokens"].as_u64().unwrap() > 0, "{body}");
    }
    let log = sim.log();
    assert!(
        log.iter().all(|r| r.endpoint == Endpoint::CountTokens),
        "{log:?}"
    );
    assert_eq!(log.iter().filter(|r| r.status == 200).count(), 3, "{log:?}");
    assert!(log.iter().any(|r| r.status == 429), "no rotation: {log:?}");

    // Spent: the pool's 429 in Anthropic's shape, with Retry-After.
    let resp = post(&gw, "/messages/count_tokens", count_body("sim-large")).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    gw.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_rotate_on_429_for_a_typed_client() {
    let sim = tight_sim().await;
    let gw = gateway(&sim).await;
    let sdk = Client::with_config(OpenAIConfig::new().with_api_base(base(&gw)))
        .with_http_client(client());
    let request = CreateEmbeddingRequestArgs::default()
        .model("sim-small")
        .input(["first text", "second text"])
        .build()
        .unwrap();
    let floats = sdk.embeddings().create(request.clone()).await.unwrap();
    assert_eq!(floats.data.len(), 2);
    assert_eq!(floats.data[1].index, 1);
    assert!(floats.data[0].embedding.len() >= 2);
    // The same texts as base64 (what OpenAI's Python SDK asks for by
    // default) decode to the same vectors, on another key.
    let mut as_base64 = request.clone();
    as_base64.encoding_format = Some(EncodingFormat::Base64);
    let b64 = sdk.embeddings().create_base64(as_base64).await.unwrap();
    let decoded: Vec<Vec<f32>> = b64
        .data
        .iter()
        .map(|e| e.embedding.clone().into())
        .collect();
    assert_eq!(decoded[0], floats.data[0].embedding);
    assert_eq!(decoded[1], floats.data[1].embedding);
    let again = sdk.embeddings().create(request).await.unwrap();
    assert_eq!(again.data[0].embedding, floats.data[0].embedding);

    let log = sim.log();
    assert!(
        log.iter().all(|r| r.endpoint == Endpoint::Embeddings),
        "{log:?}"
    );
    assert_eq!(log.iter().filter(|r| r.status == 200).count(), 3, "{log:?}");
    assert!(log.iter().any(|r| r.status == 429), "no rotation: {log:?}");
    gw.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_the_endpoint_is_a_clear_400_in_the_clients_shape() {
    let sim = tight_sim().await;
    let gw = gateway(&sim).await;
    // Token counting for a model behind an OpenAI-kind provider.
    let resp = post(&gw, "/messages/count_tokens", count_body("sim-small")).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Anthropic providers"), "{message}");
    assert!(message.contains("`oa`"), "{message}");

    // Embeddings for a model behind an Anthropic provider.
    let resp = post(
        &gw,
        "/embeddings",
        json!({"model": "sim-large", "input": "x"}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_endpoint", "{body}");
    assert_eq!(body["error"]["param"], "model");

    // Unknown model, bad JSON: the client's shape too, and nothing sent.
    let resp = post(&gw, "/messages/count_tokens", count_body("nope")).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "not_found_error"
    );
    let resp = client()
        .post(format!("{}/embeddings", base(&gw)))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_json"
    );
    assert!(sim.log().is_empty(), "{:?}", sim.log());
    gw.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_list_speaks_each_clients_shape() {
    let sim = tight_sim().await;
    let gw = gateway(&sim).await;
    let get = |path: &str, anthropic: bool| {
        let mut r = client().get(format!("{}{path}", base(&gw)));
        if anthropic {
            r = r.header("anthropic-version", "2023-06-01");
        }
        r.send()
    };
    let openai: Value = get("/models", false).await.unwrap().json().await.unwrap();
    assert_eq!(openai["object"], "list");
    let ids: Vec<&str> = openai["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sim-small", "sim-large"]);
    assert_eq!(openai["data"][1]["owned_by"], "an");
    // async-openai reads it as a typed list.
    let sdk = Client::with_config(OpenAIConfig::new().with_api_base(base(&gw)))
        .with_http_client(client());
    assert_eq!(sdk.models().list().await.unwrap().data.len(), 2);

    let anthropic: Value = get("/models", true).await.unwrap().json().await.unwrap();
    assert_eq!(anthropic["has_more"], false);
    assert_eq!(anthropic["first_id"], "sim-small");
    assert_eq!(anthropic["last_id"], "sim-large");
    assert_eq!(anthropic["data"][0]["type"], "model");
    assert_eq!(anthropic["data"][0]["display_name"], "sim-small");

    let one: Value = get("/models/sim-large", true)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], "sim-large");
    assert_eq!(one["type"], "model");
    let one: Value = get("/models/sim-small", false)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["object"], "model");
    let missing = get("/models/gpt-9", true).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["type"], "error");
    let missing = get("/models/gpt-9", false).await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_found"
    );
    gw.stop().await;
    sim.shutdown().await;
}
