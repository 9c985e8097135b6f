//! Across formats, on real sockets: an OpenAI client in front of an
//! Anthropic provider, an Anthropic client in front of an OpenAI provider,
//! and Anthropic to Anthropic — streaming and not, each through 429
//! rotation with no 429 reaching the client while a credential has room.

mod common;

use std::time::Duration;

use common::{config_toml, expected_text, key, quiet_account, start, start_sim};
use serde_json::{Value, json};
use tokenyard::sim::{Limit, SimAccount, SimConfig, SimHandle};
use tokenyard::translate::{SseEvent, parse_events};

/// Three keys that allow one, two and three requests a minute and keep
/// quiet about it until they answer 429: six requests fit, and round-robin
/// runs into at least one 429 on the way.
async fn tight_sim() -> SimHandle {
    let quiet = |label: &str, key: &str, requests: u32| {
        quiet_account(label, key, requests, Duration::from_secs(60))
    };
    start_sim(SimConfig {
        accounts: vec![
            quiet("k1", "sk-fake-prov-1", 1),
            quiet("k2", "sk-fake-prov-2", 2),
            quiet("k3", "sk-fake-prov-3", 3),
        ],
        chunks: 3,
        chunk_interval: Duration::from_millis(5),
        ..SimConfig::default()
    })
    .await
}

/// A gateway whose one provider, of `kind`, is the sim.
async fn gateway(sim: &SimHandle, kind: &str) -> tokenyard::gateway::Running {
    let toml = config_toml(
        sim,
        &["main"],
        &[
            key("k1", "main", "sk-fake-prov-1"),
            key("k2", "main", "sk-fake-prov-2"),
            key("k3", "main", "sk-fake-prov-3"),
        ],
        "",
        "",
        "",
    )
    .replace("kind = \"openai\"", &format!("kind = {kind:?}"));
    // Gemini is gRPC at the sim's root, not its `/v1` HTTP API.
    let toml = if kind == "gemini" {
        toml.replace(&sim.base_url(), &sim.gemini_url())
    } else {
        toml
    };
    start(common::parse(&toml, &std::env::temp_dir())).await
}

fn openai_body(stream: bool, n: u64) -> Value {
    json!({
        "model": "sim-small",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"}
        ],
        "stream": stream,
        "max_tokens": n,
    })
}

fn anthropic_body(stream: bool, n: u64) -> Value {
    json!({
        "model": "sim-small",
        "max_tokens": n,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
    })
}

async fn post_messages(gw: &tokenyard::gateway::Running, body: &Value) -> reqwest::Response {
    common::client()
        .post(format!("http://{}/v1/messages", gw.addr))
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", "client-key-unused")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The text of an Anthropic SSE body, checking the event grammar: every
/// event's name equals its data's `type`, in Anthropic's order.
fn anthropic_stream_text(events: &[SseEvent]) -> String {
    let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert!(names.contains(&"content_block_start"), "{names:?}");
    assert!(names.contains(&"message_delta"), "{names:?}");
    let mut text = String::new();
    for e in events {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(Some(v["type"].as_str().unwrap()), e.event.as_deref());
        if v["type"] == "content_block_delta" && v["delta"]["type"] == "text_delta" {
            text.push_str(v["delta"]["text"].as_str().unwrap());
        }
    }
    text
}

/// Checks an OpenAI-format answer (stream or not) carries `expected_text(3)`
/// whole and in order.
async fn expect_openai(resp: reqwest::Response, stream: bool) {
    assert_eq!(resp.status(), 200);
    if stream {
        let sse = common::read_sse(resp).await;
        assert!(sse.done && sse.error.is_none(), "{sse:?}");
        assert_eq!(sse.text, expected_text(3));
        let first = &sse.events[0];
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        let finish = sse.events.iter().find_map(|e| {
            e["choices"][0]["finish_reason"]
                .as_str()
                .map(str::to_string)
        });
        // A capped answer may end with `length` (`max_tokens`, MAX_TOKENS).
        assert!(
            matches!(finish.as_deref(), Some("stop" | "length")),
            "{finish:?}"
        );
    } else {
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["message"]["content"], expected_text(3));
        let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
        assert!(["stop", "length"].contains(&finish), "{v}");
    }
}

/// Checks an Anthropic-format answer (stream or not) carries
/// `expected_text(3)` whole and in order; returns the stream's events.
async fn expect_anthropic(resp: reqwest::Response, stream: bool) -> Vec<SseEvent> {
    assert_eq!(resp.status(), 200);
    if stream {
        let content_type = resp.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with("text/event-stream"));
        let events = parse_events(&resp.bytes().await.unwrap());
        assert_eq!(anthropic_stream_text(&events), expected_text(3));
        events
    } else {
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["role"], "assistant");
        assert!(v["id"].as_str().is_some_and(|id| !id.is_empty()), "{v}");
        assert_eq!(v["content"][0]["type"], "text");
        assert_eq!(v["content"][0]["text"], expected_text(3));
        let stop = v["stop_reason"].as_str().unwrap();
        assert!(["end_turn", "max_tokens"].contains(&stop), "{v}");
        assert!(v["usage"]["output_tokens"].as_u64().is_some(), "{v}");
        Vec::new()
    }
}

/// Every request the sim saw after a 429 on some key came to a different
/// key or after that key's window: rotation happened, and the client saw
/// no 429 (asserted by the callers on each answer).
fn assert_rotated(sim: &SimHandle) {
    let log = sim.log();
    assert!(
        log.iter().any(|r| r.status == 429),
        "the sim never said 429: {log:?}"
    );
}

#[tokio::test]
async fn openai_client_to_anthropic_provider_rotates_on_429() {
    let sim = tight_sim().await;
    let gw = gateway(&sim, "anthropic").await;
    let client = common::client();
    // Six requests on keys of one, two and three: the first key runs out,
    // and its 429 sends the request on to the next key.
    for i in 0..6u64 {
        let stream = i % 2 == 1;
        let resp = common::post_chat(&client, &gw, &openai_body(stream, 3)).await;
        expect_openai(resp, stream).await;
    }
    assert_rotated(&sim);
    gw.stop().await;
}

#[tokio::test]
async fn anthropic_client_to_openai_provider_rotates_on_429() {
    let sim = tight_sim().await;
    let gw = gateway(&sim, "openai").await;
    for i in 0..6u64 {
        let stream = i % 2 == 0;
        let resp = post_messages(&gw, &anthropic_body(stream, 3)).await;
        expect_anthropic(resp, stream).await;
    }
    assert_rotated(&sim);
    gw.stop().await;
}

#[tokio::test]
async fn anthropic_to_anthropic_passes_through_and_rotates() {
    let sim = tight_sim().await;
    let gw = gateway(&sim, "anthropic").await;
    for i in 0..6u64 {
        let stream = i % 2 == 0;
        let resp = post_messages(&gw, &anthropic_body(stream, 3)).await;
        let events = expect_anthropic(resp, stream).await;
        // The provider's own events pass through, its pings included.
        assert!(!stream || events.iter().any(|e| e.event.as_deref() == Some("ping")));
    }
    assert_rotated(&sim);
    gw.stop().await;
}

#[tokio::test]
async fn anthropic_clients_get_anthropic_errors() {
    let sim = tight_sim().await;
    let gw = gateway(&sim, "anthropic").await;
    // No model.
    let resp = post_messages(&gw, &json!({"max_tokens": 5, "messages": []})).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    // Not JSON.
    let resp = common::client()
        .post(format!("http://{}/v1/messages", gw.addr))
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");

    // Use up all six requests, then one more: 429 rate_limit_error with
    // retry-after, in Anthropic's shape.
    for _ in 0..6 {
        let resp = post_messages(&gw, &anthropic_body(false, 1)).await;
        assert_eq!(resp.status(), 200);
    }
    let resp = post_messages(&gw, &anthropic_body(false, 1)).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    gw.stop().await;
}

#[tokio::test]
async fn streamed_tool_calls_cross_from_anthropic_to_an_openai_client() {
    let sim = tight_sim().await;
    let gw = gateway(&sim, "anthropic").await;
    let body = json!({
        "model": "sim-small",
        "stream": true,
        "messages": [{"role": "user", "content": "what is the weather in Paris?"}],
        "tools": [{
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
            }
        }]
    });
    let resp = common::post_chat(&common::client(), &gw, &body).await;
    assert_eq!(resp.status(), 200);
    let sse = common::read_sse(resp).await;
    assert!(sse.done, "{sse:?}");
    let mut id = None;
    let mut name = None;
    let mut args = String::new();
    for e in &sse.events {
        for call in e["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(call["index"], 0);
            if let Some(i) = call["id"].as_str() {
                id = Some(i.to_string());
            }
            if let Some(n) = call["function"]["name"].as_str() {
                name = Some(n.to_string());
            }
            args.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    assert!(id.unwrap().starts_with("toolu_"));
    assert_eq!(name.as_deref(), Some("get_weather"));
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    let finish = sse.events.iter().find_map(|e| {
        e["choices"][0]["finish_reason"]
            .as_str()
            .map(str::to_string)
    });
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    gw.stop().await;
}

#[tokio::test]
async fn openai_client_to_gemini_grpc_provider_rotates_on_resource_exhausted() {
    let sim = tight_sim().await;
    let gw = gateway(&sim, "gemini").await;
    let client = common::client();
    for i in 0..6u64 {
        let stream = i % 2 == 1;
        let resp = common::post_chat(&client, &gw, &openai_body(stream, 3)).await;
        expect_openai(resp, stream).await;
    }
    assert_rotated(&sim);
    // The refusals were gRPC RESOURCE_EXHAUSTED with a RetryInfo: the key
    // cooled for that long, it was not failed.
    let snap = gw.pool.snapshot();
    let k1 = snap.credentials.iter().find(|c| c.name == "k1").unwrap();
    assert_eq!(k1.state, tokenyard::events::State::Cooling, "{k1:?}");
    assert_eq!(k1.failures, 0);
    gw.stop().await;
}

#[tokio::test]
async fn anthropic_client_to_gemini_grpc_provider() {
    let sim = tight_sim().await;
    let gw = gateway(&sim, "gemini").await;
    for i in 0..4u64 {
        let stream = i % 2 == 0;
        let resp = post_messages(&gw, &anthropic_body(stream, 3)).await;
        expect_anthropic(resp, stream).await;
    }
    gw.stop().await;
}

#[tokio::test]
async fn an_overloaded_anthropic_provider_moves_on_without_blaming_the_key() {
    let sim = tight_sim().await;
    let gw = gateway(&sim, "anthropic").await;
    sim.set_fault("k1", Some(tokenyard::sim::KeyFault::Status(529)));
    let resp = post_messages(&gw, &anthropic_body(false, 1)).await;
    assert_eq!(resp.status(), 200, "the next credential answered");
    assert_eq!(resp.headers()["x-tokenyard-attempts"], "2");
    let snap = gw.pool.snapshot();
    let k1 = snap.credentials.iter().find(|c| c.name == "k1").unwrap();
    assert_eq!(k1.state, tokenyard::events::State::Ready, "no cooldown");
    assert_eq!(k1.failures, 0, "no failure counted");
    gw.stop().await;
}

#[tokio::test]
async fn a_request_the_provider_cannot_express_is_a_400_naming_the_field() {
    let sim = tight_sim().await;
    let gw = gateway(&sim, "anthropic").await;
    let mut body = openai_body(false, 1);
    body["n"] = json!(2);
    let resp = common::post_chat(&common::client(), &gw, &body).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "untranslatable_request");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("this request cannot be sent") && msg.contains("n:"),
        "{msg}"
    );
    assert!(sim.log().is_empty(), "nothing reached the provider");
    gw.stop().await;
}

#[tokio::test]
async fn the_first_provider_in_config_order_that_matches_serves_the_model() {
    let sim = tight_sim().await;
    let toml = format!(
        r#"listen = "127.0.0.1:0"

[pool]
tiers = ["main"]

[[provider]]
name = "claude-side"
kind = "anthropic"
base_url = "{base}"
models = ["sim-large", "claude-*"]

[[provider]]
name = "openai-side"
kind = "openai"
base_url = "{base}"
models = ["sim-*"]

[[credential]]
name = "a1"
provider = "claude-side"
api_key = "sk-fake-prov-3"

[[credential]]
name = "o1"
provider = "openai-side"
api_key = "sk-fake-prov-3"
"#,
        base = sim.base_url()
    );
    let gw = start(common::parse(&toml, &std::env::temp_dir())).await;
    let client = common::client();
    for model in ["sim-large", "sim-small"] {
        let mut body = openai_body(false, 1);
        body["model"] = json!(model);
        let resp = common::post_chat(&client, &gw, &body).await;
        assert_eq!(resp.status(), 200, "{model}");
    }
    let endpoints: Vec<_> = sim.log().iter().map(|r| r.endpoint).collect();
    assert_eq!(
        endpoints,
        [
            tokenyard::sim::Endpoint::Messages,
            tokenyard::sim::Endpoint::ChatCompletions
        ],
        "sim-large matched the Anthropic provider first; sim-small only the OpenAI one"
    );
    // Every literal model name of every provider is listed once.
    let models: Value = client
        .get(format!("http://{}/v1/models", gw.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sim-large"], "globs cannot be listed");
    gw.stop().await;
}

#[tokio::test]
async fn refresh_token_credentials_reach_gemini_and_anthropic_as_bearer_tokens() {
    for kind in ["gemini", "anthropic"] {
        let sim = start_sim(SimConfig {
            accounts: vec![SimAccount::refresh_token(
                "oauth",
                "rt-fake-prov-0001",
                Limit::Unlimited,
            )],
            chunks: 3,
            ..SimConfig::default()
        })
        .await;
        let mut toml = config_toml(
            &sim,
            &["main"],
            &[common::refresh("oauth", "main", "rt-fake-prov-0001")],
            "",
            "",
            "",
        )
        .replace("kind = \"openai\"", &format!("kind = {kind:?}"));
        if kind == "gemini" {
            // Only the provider's URL moves; the token endpoint stays.
            toml = toml.replace(
                &format!("base_url = \"{}\"", sim.base_url()),
                &format!("base_url = \"{}\"", sim.gemini_url()),
            );
        }
        let gw = start(common::parse(&toml, &std::env::temp_dir())).await;
        for stream in [false, true] {
            let resp = common::post_chat(&common::client(), &gw, &openai_body(stream, 3)).await;
            expect_openai(resp, stream).await;
        }
        assert_eq!(
            sim.token_calls(),
            1,
            "{kind}: one refresh, then the cached token"
        );
        let labels: Vec<_> = sim.log().into_iter().filter_map(|r| r.label).collect();
        assert_eq!(labels, ["oauth", "oauth"], "{kind}");
        gw.stop().await;
    }
}
