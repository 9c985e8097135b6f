//! Per-credential usage, on real sockets: after plain and streamed traffic
//! in both client formats to an OpenAI-style, an Anthropic and a Gemini
//! (gRPC) provider, the tokens `/admin/pool` shows for the credential are
//! the tokens the provider reported in its answers, as the client read
//! them.

mod common;

use common::{config_toml, key, start, start_sim};
use serde_json::{Value, json};
use tokenyard::sim::{KeyFault, Limit, SimAccount, SimConfig, SimHandle};
use tokenyard::translate::parse_events;

async fn sim() -> SimHandle {
    start_sim(SimConfig {
        accounts: vec![SimAccount::api_key(
            "k1",
            "sk-fake-usage-1",
            Limit::Unlimited,
        )],
        chunks: 3,
        chunk_interval: std::time::Duration::from_millis(2),
        ..SimConfig::default()
    })
    .await
}

/// A gateway whose one provider, of `kind`, is the sim, with one key.
async fn gateway(sim: &SimHandle, kind: &str) -> tokenyard::gateway::Running {
    let toml = config_toml(
        sim,
        &["main"],
        &[key("k1", "main", "sk-fake-usage-1")],
        "",
        "",
        "",
    )
    .replace("kind = \"openai\"", &format!("kind = {kind:?}"));
    let toml = if kind == "gemini" {
        toml.replace(&sim.base_url(), &sim.gemini_url())
    } else {
        toml
    };
    start(common::parse(&toml, &std::env::temp_dir())).await
}

/// (input, output) tokens an OpenAI-format answer reported.
async fn openai(gw: &tokenyard::gateway::Running, stream: bool) -> (u64, u64) {
    let mut body = json!({
        "model": "sim-small",
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": stream,
        "max_tokens": 3,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    let resp = common::post_chat(&common::client(), gw, &body).await;
    assert_eq!(resp.status(), 200);
    let usage = if stream {
        let sse = common::read_sse(resp).await;
        assert!(sse.done, "{sse:?}");
        sse.events
            .iter()
            .find(|e| e["usage"].is_object())
            .map(|e| e["usage"].clone())
            .expect("the stream's usage chunk")
    } else {
        resp.json::<Value>().await.unwrap()["usage"].clone()
    };
    let n = |k: &str| {
        usage[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {usage}"))
    };
    (n("prompt_tokens"), n("completion_tokens"))
}

/// (input, output) tokens an Anthropic-format answer reported.
async fn anthropic(gw: &tokenyard::gateway::Running, stream: bool) -> (u64, u64) {
    let resp = common::client()
        .post(format!("http://{}/v1/messages", gw.addr))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({
            "model": "sim-small",
            "max_tokens": 3,
            "messages": [{"role": "user", "content": "hello there"}],
            "stream": stream,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    if !stream {
        let v: Value = resp.json().await.unwrap();
        return (
            v["usage"]["input_tokens"].as_u64().unwrap(),
            v["usage"]["output_tokens"].as_u64().unwrap(),
        );
    }
    let text = resp.text().await.unwrap();
    let (mut input, mut output) = (None, None);
    for e in parse_events(text.as_bytes()) {
        let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
        match v["type"].as_str() {
            Some("message_start") => input = v["message"]["usage"]["input_tokens"].as_u64(),
            // A translated stream learns the input count only at the end,
            // and says it here (as Anthropic's own SDKs read it).
            Some("message_delta") => {
                output = v["usage"]["output_tokens"].as_u64();
                input = v["usage"]["input_tokens"].as_u64().or(input);
            }
            _ => {}
        }
    }
    (
        input.expect("message_start"),
        output.expect("message_delta"),
    )
}

/// `/admin/pool` (from loopback, which needs no admin key).
async fn admin_pool(gw: &tokenyard::gateway::Running) -> Value {
    common::admin_pool(&format!("http://{}", gw.addr)).await
}

/// The first credential's `usage` from `/admin/pool`.
async fn usage(gw: &tokenyard::gateway::Running) -> Value {
    admin_pool(gw).await["credentials"][0]["usage"].clone()
}

#[tokio::test]
async fn usage_per_credential_is_what_each_provider_reported() {
    let sim = sim().await;
    for kind in ["openai", "anthropic", "gemini"] {
        let gw = gateway(&sim, kind).await;
        let mut want = (0, 0);
        for (i, stream) in [false, true].into_iter().enumerate() {
            for (input, output) in [openai(&gw, stream).await, anthropic(&gw, stream).await] {
                assert!(
                    input > 0 && output > 0,
                    "{kind} answer {i}: {input}/{output}"
                );
                want.0 += input;
                want.1 += output;
            }
        }
        // A stream's usage is counted when its last event goes out, just
        // before the client reads it.
        let got = usage(&gw).await;
        let total = &got["total"];
        assert_eq!(total["answers"], 4, "{kind}: {got}");
        assert_eq!(total["unknown"], 0, "{kind}: {got}");
        assert_eq!(
            (total["input"].as_u64(), total["output"].as_u64()),
            (Some(want.0), Some(want.1)),
            "{kind}: {got}"
        );
        assert_eq!(got["today"], got["total"], "{kind}: {got}");
        assert_eq!(got["last_hour"], got["total"], "{kind}: {got}");
        assert_eq!(got["day"].as_str().map(str::len), Some(10), "{got}");
        // The same numbers in the metrics.
        let metrics = common::metrics_text(&format!("http://{}", gw.addr)).await;
        for (direction, n) in [("input", want.0), ("output", want.1)] {
            let line = format!(
                "tokenyard_credential_tokens_total{{credential=\"k1\",provider=\"sim\",direction=\"{direction}\"}} {n}"
            );
            assert!(
                metrics.lines().any(|l| l == line),
                "{kind}: no {line:?} in\n{metrics}"
            );
        }
        gw.stop().await;
    }
}

/// An OpenAI client that did not ask for usage in its stream: tokenyard
/// asks the provider anyway, counts the tokens, and keeps the usage chunk
/// from the client, which sees the stream it asked for.
#[tokio::test]
async fn a_stream_whose_client_did_not_ask_for_usage_is_counted_all_the_same() {
    let sim = sim().await;
    let gw = gateway(&sim, "openai").await;
    let body = json!({
        "model": "sim-small",
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": true,
        "max_tokens": 3,
    });
    let resp = common::post_chat(&common::client(), &gw, &body).await;
    let sse = common::read_sse(resp).await;
    assert!(sse.done, "{sse:?}");
    assert_eq!(sse.text, common::expected_text(3));
    assert!(
        sse.events.iter().all(|e| !e["usage"].is_object()),
        "no usage chunk reached a client that did not ask: {:?}",
        sse.events
    );
    // The same request asking for usage: the sim counts alike.
    let (input, output) = openai(&gw, true).await;
    let got = usage(&gw).await;
    assert_eq!(got["total"]["answers"], 2, "{got}");
    assert_eq!(got["total"]["unknown"], 0, "{got}");
    assert_eq!(got["total"]["input"].as_u64(), Some(2 * input), "{got}");
    assert_eq!(got["total"]["output"].as_u64(), Some(2 * output), "{got}");
    gw.stop().await;
}

/// A stream cut before its usage: the answer counts, its tokens unknown.
#[tokio::test]
async fn a_stream_cut_before_its_usage_counts_as_unknown() {
    let mut account = SimAccount::api_key("k1", "sk-fake-usage-1", Limit::Unlimited);
    // The role chunk and two content chunks, then the connection drops.
    account.fault = Some(KeyFault::ResetAfterChunks(3));
    let sim = start_sim(SimConfig {
        accounts: vec![account],
        chunks: 6,
        chunk_interval: std::time::Duration::from_millis(2),
        ..SimConfig::default()
    })
    .await;
    let gw = gateway(&sim, "openai").await;
    let body = json!({
        "model": "sim-small",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": 6,
    });
    let resp = common::post_chat(&common::client(), &gw, &body).await;
    let sse = common::read_sse(resp).await;
    assert!(sse.error.is_some(), "the stream was cut: {sse:?}");
    let got = usage(&gw).await;
    assert_eq!(got["total"]["answers"], 1, "{got}");
    assert_eq!(got["total"]["unknown"], 1, "{got}");
    assert_eq!(got["total"]["input"], 0, "{got}");
    gw.stop().await;
}

/// A tokens-per-day budget on the first-tier key: it is held (exhausted,
/// the reason saying which budget and when it resets) once an answer takes
/// it to the budget, before the provider's own quota, and the traffic
/// moves to the next key with every client request answered.
#[tokio::test]
async fn a_daily_token_budget_holds_the_key_before_its_quota() {
    let sim = start_sim(SimConfig {
        accounts: vec![
            // The provider would refuse k1 only after 50 requests.
            SimAccount::api_key("k1", "sk-fake-budget-1", Limit::Total { requests: 50 }),
            SimAccount::api_key("k2", "sk-fake-budget-2", Limit::Unlimited),
            SimAccount::api_key("k3", "sk-fake-budget-3", Limit::Unlimited),
        ],
        chunks: 3,
        chunk_interval: std::time::Duration::from_millis(2),
        ..SimConfig::default()
    })
    .await;
    // What one such request costs, learnt through a gateway of its own.
    let probe = start(common::parse(
        &config_toml(
            &sim,
            &["main"],
            &[key("k3", "main", "sk-fake-budget-3")],
            "",
            "",
            "",
        ),
        &std::env::temp_dir(),
    ))
    .await;
    let (input, output) = openai(&probe, false).await;
    probe.stop().await;
    let cost = input + output;
    let budget = 4 * cost + 1;

    let toml = config_toml(
        &sim,
        &["primary", "backup"],
        &[
            key("k1", "primary", "sk-fake-budget-1"),
            key("k2", "backup", "sk-fake-budget-2"),
        ],
        "",
        "",
        "",
    )
    .replace(
        "name = \"k1\"\n",
        &format!("name = \"k1\"\nmax_tokens_per_day = {budget}\n"),
    );
    let gw = start(common::parse(&toml, &std::env::temp_dir())).await;
    for _ in 0..10 {
        let (i, o) = openai(&gw, false).await;
        assert_eq!(i + o, cost);
    }
    let pool = admin_pool(&gw).await;
    let k1 = &pool["credentials"][0];
    assert_eq!(k1["name"], "k1");
    assert_eq!(k1["state"], "exhausted", "{k1}");
    assert_eq!(
        k1["reason"].as_str().unwrap(),
        format!(
            "budget: {} tokens/day reached; back at 00:00 UTC",
            tokenyard::pool::usage::compact(budget)
        ),
        "{k1}"
    );
    // The fifth answer took it past the budget; nothing more went to it.
    assert_eq!(k1["usage"]["today"]["answers"], 5, "{k1}");
    assert_eq!(
        k1["usage"]["today"]["input"].as_u64().unwrap()
            + k1["usage"]["today"]["output"].as_u64().unwrap(),
        5 * cost
    );
    let stats = sim.stats();
    let k1_sim = stats.account("k1").unwrap();
    assert_eq!((k1_sim.ok, k1_sim.quota, k1_sim.rate_limited), (5, 0, 0));
    assert_eq!(stats.account("k2").map(|a| a.ok), Some(5));
    gw.stop().await;
}

/// Usage by client key: an operator sharing one gateway among their own
/// tools sees which key spent what, masked, in `/admin/pool` and the
/// metrics.
#[tokio::test]
async fn usage_by_client_key() {
    let sim = sim().await;
    let toml = config_toml(
        &sim,
        &["main"],
        &[key("k1", "main", "sk-fake-usage-1")],
        "client_keys = [\"ck-tool-alpha-0001\", \"ck-tool-bravo-0002\"]",
        "",
        "",
    );
    let gw = start(common::parse(&toml, &std::env::temp_dir())).await;
    let ask = |key: &'static str| {
        let addr = gw.addr;
        async move {
            let v: Value = common::client()
                .post(format!("http://{addr}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&json!({
                    "model": "sim-small",
                    "messages": [{"role": "user", "content": "hello there"}],
                    "max_tokens": 3,
                }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["usage"]["total_tokens"].as_u64().expect("usage")
        }
    };
    let alpha = ask("ck-tool-alpha-0001").await + ask("ck-tool-alpha-0001").await;
    let bravo = ask("ck-tool-bravo-0002").await;
    let pool = admin_pool(&gw).await;
    let clients = &pool["clients"];
    let total = |c: &Value| c["input"].as_u64().unwrap() + c["output"].as_u64().unwrap();
    assert_eq!(clients["…0001"]["answers"], 2, "{clients}");
    assert_eq!(total(&clients["…0001"]), alpha, "{clients}");
    assert_eq!(total(&clients["…0002"]), bravo, "{clients}");
    let text = serde_json::to_string(&pool).unwrap();
    assert!(
        !text.contains("ck-tool"),
        "a client key in the admin API: {text}"
    );
    gw.stop().await;
}
