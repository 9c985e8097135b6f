//! OpenAI's Responses API on real sockets: a real client crate's typed
//! Responses calls (async-openai, which rejects any event or object that
//! does not match OpenAI's schema), plain and streamed, through 429
//! rotation; translated to Chat Completions, to Anthropic and to Gemini,
//! and forwarded as is to a provider with `responses = "native"`. Function
//! calls come back as `function_call` items; a stream broken after its
//! first byte ends with `error` and `response.failed`, never with doubled
//! text.

mod common;

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::responses::{
    CreateResponse, CreateResponseArgs, OutputItem, ResponseStreamEvent, Status,
};
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokenyard::sim::{Endpoint, KeyFault, Limit, SimConfig, SimHandle};

const CLIENT_KEY: &str = "ck-responses-test-key";

/// Three keys that allow one, two and three requests a minute and keep
/// quiet about it until they answer 429: six requests fit, and round-robin
/// runs into 429s on the way.
async fn tight_sim() -> SimHandle {
    let quiet = |label: &str, key: &str, requests: u32| {
        quiet_account(label, key, requests, Duration::from_secs(600))
    };
    start_sim(SimConfig {
        accounts: vec![
            quiet("k1", "fake-resp-key-one", 1),
            quiet("k2", "fake-resp-key-two", 2),
            quiet("k3", "fake-resp-key-three", 3),
        ],
        chunks: 3,
        chunk_interval: Duration::from_millis(5),
        ..SimConfig::default()
    })
    .await
}

/// A gateway whose one provider is the sim, spoken to as `kind`; `extra`
/// lines go into the provider's table.
async fn gateway(sim: &SimHandle, kind: &str, extra: &str) -> tokenyard::gateway::Running {
    let toml = config_toml(
        sim,
        &["main"],
        &[
            key("k1", "main", "fake-resp-key-one"),
            key("k2", "main", "fake-resp-key-two"),
            key("k3", "main", "fake-resp-key-three"),
        ],
        &format!("client_keys = [\"{CLIENT_KEY}\"]"),
        "",
        "",
    )
    .replace("kind = \"openai\"", &format!("kind = {kind:?}\n{extra}"));
    // Gemini is gRPC at the sim's root, not its `/v1` HTTP API.
    let toml = if kind == "gemini" {
        toml.replace(&sim.base_url(), &sim.gemini_url())
    } else {
        toml
    };
    start(parse(&toml, &std::env::temp_dir())).await
}

fn sdk(gw: &tokenyard::gateway::Running) -> Client<OpenAIConfig> {
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(base(gw))
            .with_api_key(CLIENT_KEY),
    )
    .with_http_client(client())
}

fn request(stream: bool) -> CreateResponse {
    CreateResponseArgs::default()
        .model("sim-small")
        .instructions("Answer with numbered pieces.")
        .input("Say something numbered.")
        .max_output_tokens(3u32)
        .stream(stream)
        .build()
        .unwrap()
}

/// A plain Responses call: the whole text, once, and usage.
async fn plain(client: &Client<OpenAIConfig>) {
    let r = client.responses().create(request(false)).await.unwrap();
    assert_eq!(r.object, "response");
    assert!(r.id.starts_with("resp_"), "{}", r.id);
    assert_eq!(r.output_text().as_deref(), Some(expected_text(3).as_str()));
    assert!(r.usage.is_some());
    // Three pieces of three is the whole answer the sim was asked for;
    // the status follows its finish reason (length).
    assert!(
        matches!(r.status, Status::Completed | Status::Incomplete),
        "{:?}",
        r.status
    );
}

/// A streamed Responses call: text deltas that add up to the whole text,
/// exactly once, and a final event.
async fn streamed(client: &Client<OpenAIConfig>) {
    let mut stream = client
        .responses()
        .create_stream(request(true))
        .await
        .unwrap();
    let mut text = String::new();
    let mut ends = 0;
    let mut seq = Vec::new();
    while let Some(ev) = stream.next().await {
        let ev = ev.unwrap_or_else(|e| panic!("a stream event the SDK rejects: {e}"));
        match &ev {
            ResponseStreamEvent::ResponseOutputTextDelta(d) => {
                text.push_str(&d.delta);
                seq.push(d.sequence_number);
            }
            ResponseStreamEvent::ResponseCompleted(c) => {
                ends += 1;
                assert!(c.response.usage.is_some());
                assert_eq!(c.response.output_text().as_deref(), Some(text.as_str()));
            }
            ResponseStreamEvent::ResponseIncomplete(c) => {
                ends += 1;
                assert_eq!(c.response.output_text().as_deref(), Some(text.as_str()));
            }
            ResponseStreamEvent::ResponseFailed(_) | ResponseStreamEvent::ResponseError(_) => {
                panic!("the stream failed: {ev:?}")
            }
            _ => {}
        }
    }
    assert_eq!(text, expected_text(3));
    assert_eq!(ends, 1);
    assert!(seq.windows(2).all(|w| w[0] < w[1]), "{seq:?}");
}

/// Six calls through a pool that fits six only by rotating: no 429 reaches
/// the client, and the sim saw 429s (the rotation happened).
async fn six_through_rotation(gw: &tokenyard::gateway::Running, sim: &SimHandle, at: Endpoint) {
    let client = sdk(gw);
    for _ in 0..3 {
        plain(&client).await;
        streamed(&client).await;
    }
    let log = sim.log();
    let limited = log.iter().filter(|r| r.status == 429).count();
    let served = log.iter().filter(|r| r.status == 200).count();
    assert!(limited >= 1, "no rotation happened: {log:?}");
    assert_eq!(served, 6, "{log:?}");
    assert!(log.iter().all(|r| r.endpoint == at), "{log:?}");
}

/// A fresh sim and gateway (provider `kind`, `extra` lines in its table)
/// that have carried six calls through rotation to `at`.
async fn rotated(
    kind: &str,
    extra: &str,
    at: Endpoint,
) -> (SimHandle, tokenyard::gateway::Running) {
    let sim = tight_sim().await;
    let gw = gateway(&sim, kind, extra).await;
    six_through_rotation(&gw, &sim, at).await;
    (sim, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translated_to_chat_completions_through_rotation() {
    let (sim, gw) = rotated("openai", "", Endpoint::ChatCompletions).await;
    gw.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translated_to_anthropic_through_rotation() {
    let (sim, gw) = rotated("anthropic", "", Endpoint::Messages).await;
    gw.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translated_to_gemini_through_rotation() {
    let (sim, gw) = rotated("gemini", "", Endpoint::GenerateContent).await;
    gw.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_natively_through_rotation() {
    let (sim, gw) = rotated("openai", "responses = \"native\"", Endpoint::Responses).await;
    // The body goes as the client wrote it: the provider, not tokenyard,
    // answers for previous_response_id (the sim keeps no responses).
    let resp = client()
        .post(format!("{}/responses", base(&gw)))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "sim-small", "input": "x", "previous_response_id": "resp_x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"]["code"], "previous_response_not_found",
        "{body}"
    );
    gw.stop().await;
    sim.shutdown().await;
}

fn tool_request(stream: bool) -> Value {
    json!({
        "model": "sim-small",
        "stream": stream,
        "input": [{"type": "message", "role": "user",
                   "content": [{"type": "input_text", "text": "sim:call-tool please"}]}],
        "tools": [{"type": "namespace", "name": "fs", "description": "Files.",
                   "tools": [{"type": "function", "name": "read_file", "description": "Reads one.",
                              "parameters": {"type": "object", "properties": {"piece": {"type": "string"}}}}]}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_calls_come_back_as_items_with_their_namespace() {
    let sim = start_sim(SimConfig::with_api_keys(1, Limit::Unlimited)).await;
    let gw = start(parse(
        &config_toml(
            &sim,
            &["main"],
            &[key("k1", "main", "sk-sim-1")],
            "",
            "",
            "",
        ),
        &std::env::temp_dir(),
    ))
    .await;
    let url = format!("{}/responses", base(&gw));

    let r: Value = client()
        .post(&url)
        .json(&tool_request(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let call = &r["output"][0];
    assert_eq!(call["type"], "function_call", "{r}");
    assert_eq!(call["name"], "read_file");
    assert_eq!(call["namespace"], "fs");
    assert!(call["call_id"].as_str().unwrap().starts_with("call_"));
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["piece"], "[0]");

    // Streamed: the typed SDK reads every event, and the argument deltas
    // add up to the arguments of the finished item.
    let resp = client()
        .post(&url)
        .json(&tool_request(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = sse_json(resp).await;
    let mut deltas = String::new();
    let mut done_item = None;
    for ev in &events {
        let typed: ResponseStreamEvent = serde_json::from_value(ev.clone())
            .unwrap_or_else(|e| panic!("the SDK rejects {ev}: {e}"));
        match typed {
            ResponseStreamEvent::ResponseFunctionCallArgumentsDelta(d) => deltas.push_str(&d.delta),
            ResponseStreamEvent::ResponseOutputItemDone(d) => done_item = Some(d.item),
            _ => {}
        }
    }
    match done_item {
        Some(OutputItem::FunctionCall(f)) => {
            assert_eq!(f.name, "read_file");
            assert_eq!(f.arguments, deltas);
            assert!(serde_json::from_str::<Value>(&deltas).is_ok(), "{deltas}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(events.last().unwrap()["type"], "response.completed");
    gw.stop().await;
    sim.shutdown().await;
}

/// Data of every event of an SSE body, checking each is named for its type.
async fn sse_json(resp: reqwest::Response) -> Vec<Value> {
    let bytes = resp.bytes().await.unwrap();
    tokenyard::translate::parse_events(&bytes)
        .into_iter()
        .map(|e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(e.event.as_deref(), v["type"].as_str(), "{v}");
            v
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_after_its_first_byte_fails_cleanly() {
    let mut cfg = SimConfig::with_api_keys(1, Limit::Unlimited);
    cfg.accounts[0].fault = Some(KeyFault::ResetAfterChunks(3));
    cfg.chunks = 8;
    cfg.chunk_interval = Duration::from_millis(5);
    let sim = start_sim(cfg).await;
    for extra in ["", "responses = \"native\""] {
        let toml = config_toml(
            &sim,
            &["main"],
            &[key("k1", "main", "sk-sim-1")],
            "",
            "",
            "",
        )
        .replace("kind = \"openai\"", &format!("kind = \"openai\"\n{extra}"));
        let gw = start(parse(&toml, &std::env::temp_dir())).await;
        let resp = client()
            .post(format!("{}/responses", base(&gw)))
            .json(&json!({"model": "sim-small", "input": "hi", "stream": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let events = sse_json(resp).await;
        let text: String = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        // A clean prefix of the answer, never a doubled piece.
        assert!(expected_text(8).starts_with(&text), "{extra}: {text}");
        assert!(text.len() < expected_text(8).len(), "{extra}: {text}");
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds[kinds.len() - 2..],
            ["error", "response.failed"],
            "{extra}: {kinds:?}"
        );
        let seqs: Vec<u64> = events
            .iter()
            .map(|e| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "{extra}: {seqs:?}"
        );
        gw.stop().await;
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_served_is_refused_in_openais_shape() {
    let sim = tight_sim().await;
    let gw = gateway(&sim, "openai", "").await;
    let post = |body: Value, key: Option<&str>| {
        let mut r = client()
            .post(format!("{}/responses", base(&gw)))
            .json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let resp = post(
        json!({"model": "sim-small", "input": "x", "previous_response_id": "resp_1"}),
        Some(CLIENT_KEY),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "untranslatable_request", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("previous_response_id"),
        "{body}"
    );

    let resp = post(json!({"model": "sim-small", "input": "x"}), None)
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");

    let resp = post(json!({"input": "x"}), Some(CLIENT_KEY)).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["param"], "model");
    // Nothing reached the provider.
    assert!(sim.log().is_empty(), "{:?}", sim.log());

    // The whole pool spent: 429 with Retry-After, in OpenAI's shape.
    let client = sdk(&gw);
    for _ in 0..6 {
        plain(&client).await;
    }
    let resp = post(
        json!({"model": "sim-small", "input": "x"}),
        Some(CLIENT_KEY),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "pool_exhausted");
    gw.stop().await;
    sim.shutdown().await;
}
