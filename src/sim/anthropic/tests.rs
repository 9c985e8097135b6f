//! The Messages endpoint seen from a client on a real socket.

use std::time::{Duration, SystemTime};

use reqwest::{RequestBuilder, Response};
use serde_json::{Value, json};

use crate::sim::*;

mod count_tokens;

const KEY: &str = "sk-ant-sim-aaaa-1234";

async fn sim(cfg: SimConfig) -> SimHandle {
    start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn one_key(limit: Limit) -> SimConfig {
    SimConfig {
        accounts: vec![SimAccount::api_key("key-a", KEY, limit)],
        chunks: 4,
        chunk_interval: Duration::from_millis(5),
        ..SimConfig::default()
    }
}

fn messages(sim: &SimHandle) -> RequestBuilder {
    test_client().post(format!("{}/messages", sim.base_url()))
}

/// A well-formed request with `x-api-key` and `anthropic-version`.
async fn post(sim: &SimHandle, key: &str, body: Value) -> Response {
    messages(sim)
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn hello(model: &str) -> Value {
    json!({"model": model, "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello"}]})
}

fn streamed(mut body: Value) -> Value {
    body["stream"] = json!(true);
    body
}

fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

async fn error_of(resp: Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert!(v["request_id"].as_str().unwrap().starts_with("req_"));
    let e = &v["error"];
    (
        status,
        e["type"].as_str().unwrap().to_owned(),
        e["message"].as_str().unwrap().to_owned(),
    )
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

/// Parses an RFC 3339 header value.
fn instant(value: &str) -> SystemTime {
    let at: jiff::Timestamp = value.parse().expect("RFC 3339");
    SystemTime::from(at)
}

#[tokio::test]
async fn whole_message_is_anthropic_shaped_and_numbered() {
    let sim = sim(one_key(Limit::Window {
        requests: 10,
        window: Duration::from_secs(60),
    }))
    .await;
    let resp = post(&sim, KEY, hello("sim-small")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    assert!(header(&resp, "request-id").unwrap().starts_with("req_"));
    assert_eq!(
        header(&resp, "anthropic-ratelimit-requests-limit"),
        Some("10")
    );
    assert_eq!(
        header(&resp, "anthropic-ratelimit-requests-remaining"),
        Some("9")
    );
    let reset = instant(header(&resp, "anthropic-ratelimit-requests-reset").unwrap());
    assert!(reset > SystemTime::now(), "the window resets in the future");
    assert!(header(&resp, "x-ratelimit-remaining-requests").is_none());
    let v: Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "sim-small");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "[0][1][2][3]"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert_eq!(v["usage"]["output_tokens"], 4);
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() >= 1);

    // max_tokens below the configured length cuts the answer.
    let mut body = hello("sim-large");
    body["max_tokens"] = json!(2);
    let v: Value = post(&sim, KEY, body).await.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "[0][1]");
    assert_eq!(v["stop_reason"], "max_tokens");

    // A stop sequence that is a whole piece ends the answer before it.
    let mut body = hello("sim-small");
    body["stop_sequences"] = json!(["never", "[2]"]);
    let v: Value = post(&sim, KEY, body).await.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "[0][1]");
    assert_eq!(
        (&v["stop_reason"], &v["stop_sequence"]),
        (&json!("stop_sequence"), &json!("[2]"))
    );

    let log = sim.log();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|r| r.endpoint == Endpoint::Messages
        && r.status == 200
        && r.label.as_deref() == Some("key-a")
        && !r.stream));
    assert_eq!(log[1].model, "sim-large");

    // An account that does not advertise sends no limit headers.
    let mut cfg = one_key(Limit::Unlimited);
    cfg.accounts[0].advertise = false;
    let quiet = self::sim(cfg).await;
    let resp = post(&quiet, KEY, hello("sim-small")).await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "anthropic-ratelimit-requests-remaining").is_none());
    quiet.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn stream_sends_anthropic_events_in_order() {
    let sim = sim(one_key(Limit::Unlimited)).await;
    let mut resp = post(&sim, KEY, streamed(hello("sim-small"))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), Some("text/event-stream"));
    assert!(header(&resp, "request-id").is_some());
    assert!(header(&resp, "anthropic-ratelimit-requests-remaining").is_some());
    // Paced deltas arrive frame by frame, not in one batch.
    let mut frames = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        frames.push(String::from_utf8(chunk.to_vec()).unwrap());
    }
    assert!(frames.len() >= 5, "events were batched: {frames:?}");
    let events = sse_events(&frames.concat());
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let message = &events[0].1["message"];
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"], json!([]));
    assert_eq!(message["stop_reason"], Value::Null);
    assert!(message["usage"]["input_tokens"].as_u64().unwrap() >= 1);
    assert_eq!(
        events[1].1,
        json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}})
    );
    let text: String = events[3..7]
        .iter()
        .map(|(_, d)| {
            assert_eq!(d["index"], 0);
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "[0][1][2][3]");
    assert_eq!(
        events[7].1,
        json!({"type": "content_block_stop", "index": 0})
    );
    assert_eq!(
        events[8].1,
        json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 4}})
    );
    let log = sim.log();
    assert!(log[0].stream && log[0].endpoint == Endpoint::Messages);
    sim.shutdown().await;
}

fn weather_request(stream: bool) -> Value {
    json!({
        "model": "sim-small", "max_tokens": 1024, "stream": stream,
        "tools": [
            {"name": "get_weather", "description": "Weather for a city",
             "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"name": "other", "input_schema": {"type": "object"}}
        ],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What's the Weather in Paris?"}]}]
    })
}

#[tokio::test]
async fn tools_are_called_when_the_user_asks_for_weather() {
    let sim = sim(one_key(Limit::Unlimited)).await;
    let text = post(&sim, KEY, weather_request(true))
        .await
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    let block = &events[1].1["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({}));
    let pieces: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert!(pieces.len() >= 3, "{pieces:?}");
    let input: Value = serde_json::from_str(&pieces.concat()).unwrap();
    assert_eq!(input, json!({"city": "Paris"}));
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(names(&events).last(), Some(&"message_stop"));

    let v: Value = post(&sim, KEY, weather_request(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["type"], "tool_use");
    assert_eq!(v["content"][0]["name"], "get_weather");
    assert_eq!(v["content"][0]["input"], json!({"city": "Paris"}));
    let tool_id = v["content"][0]["id"].clone();

    // The next turn carries the result; the model answers in text.
    let mut next = weather_request(false);
    next["messages"] = json!([
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": [v["content"][0].clone()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "weather: sunny"}]}
    ]);
    let v: Value = post(&sim, KEY, next).await.json().await.unwrap();
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["content"][0]["text"], "[0][1][2][3]");

    // tool_choice forces or forbids a call.
    let mut forced = hello("sim-small");
    forced["tools"] = weather_request(false)["tools"].clone();
    forced["tool_choice"] = json!({"type": "tool", "name": "other"});
    let v: Value = post(&sim, KEY, forced).await.json().await.unwrap();
    assert_eq!(v["content"][0]["name"], "other");
    let mut none = weather_request(false);
    none["tool_choice"] = json!({"type": "none"});
    let v: Value = post(&sim, KEY, none).await.json().await.unwrap();
    assert_eq!(v["content"][0]["type"], "text");
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_429s_carry_anthropic_hints_by_style() {
    // Far longer than two requests take on loaded cores (with 1.5 s, a
    // second request 0.5 s late met a wait under 1 s); nothing waits for it.
    let window = Duration::from_secs(50);
    let styles = [
        HintStyle::All,
        HintStyle::RetryAfterOnly,
        HintStyle::RetryAfterMsOnly,
        HintStyle::HttpDate,
        HintStyle::ResetHeadersOnly,
        HintStyle::None,
    ];
    let accounts = styles
        .iter()
        .enumerate()
        .map(|(i, &hints)| SimAccount {
            hints,
            ..SimAccount::api_key(
                format!("key-{i}"),
                format!("sk-ant-{i}"),
                Limit::Window {
                    requests: 1,
                    window,
                },
            )
        })
        .collect();
    let sim = sim(SimConfig {
        accounts,
        ..SimConfig::default()
    })
    .await;
    for (i, style) in styles.iter().enumerate() {
        let key = format!("sk-ant-{i}");
        let first = post(&sim, &key, hello("sim-small")).await;
        assert_eq!(first.status(), 200);
        assert_eq!(
            header(&first, "anthropic-ratelimit-requests-remaining"),
            Some("0")
        );
        assert_eq!(
            header(&first, "anthropic-ratelimit-tokens-remaining"),
            Some("0")
        );

        let before = SystemTime::now();
        let limited = post(&sim, &key, hello("sim-small")).await;
        let wait = sim
            .log()
            .last()
            .unwrap()
            .retry_after
            .expect("exact wait logged");
        assert!(wait > Duration::ZERO && wait <= window, "{wait:?}");
        // Whole seconds, rounded up.
        let secs = wait.as_nanos().div_ceil(1_000_000_000).to_string();
        let retry_after = header(&limited, "retry-after").map(str::to_owned);
        let retry_after_ms = header(&limited, "retry-after-ms").map(str::to_owned);
        let remaining =
            header(&limited, "anthropic-ratelimit-requests-remaining").map(str::to_owned);
        let reset = header(&limited, "anthropic-ratelimit-requests-reset").map(instant);
        let tokens_reset = header(&limited, "anthropic-ratelimit-tokens-reset").map(instant);
        let (status, kind, message) = error_of(limited).await;
        assert_eq!(
            (status, kind.as_str()),
            (429, "rate_limit_error"),
            "{style:?}"
        );
        assert!(message.contains("rate limit"), "{message}");
        let check_reset = |reset: Option<SystemTime>| {
            let at = reset.expect("reset header");
            // Rounded up to whole seconds: never before the true reset.
            assert!(at >= before + wait && at > SystemTime::now(), "{style:?}");
            assert!(at <= SystemTime::now() + wait + Duration::from_secs(1));
        };
        match style {
            HintStyle::All => {
                assert_eq!(retry_after.as_deref(), Some(secs.as_str()));
                assert_eq!(remaining.as_deref(), Some("0"));
                check_reset(reset);
                check_reset(tokens_reset);
                assert_eq!(retry_after_ms, None);
            }
            HintStyle::RetryAfterOnly => {
                assert_eq!(retry_after.as_deref(), Some(secs.as_str()));
                assert_eq!((retry_after_ms, remaining, reset), (None, None, None));
            }
            HintStyle::RetryAfterMsOnly => {
                let ms: u64 = retry_after_ms.unwrap().parse().unwrap();
                assert_eq!(u128::from(ms), wait.as_nanos().div_ceil(1_000_000));
                assert_eq!((retry_after, remaining, reset), (None, None, None));
            }
            HintStyle::HttpDate => {
                let at = httpdate::parse_http_date(&retry_after.unwrap()).unwrap();
                assert!(at >= before + wait);
                assert_eq!((retry_after_ms, remaining, reset), (None, None, None));
            }
            HintStyle::ResetHeadersOnly => {
                assert_eq!((retry_after, retry_after_ms), (None, None));
                assert_eq!(remaining.as_deref(), Some("0"));
                check_reset(reset);
            }
            HintStyle::None => {
                assert_eq!(
                    (retry_after, retry_after_ms, remaining, reset),
                    (None, None, None, None)
                );
            }
        }
    }
    let a = sim.stats();
    let a = a.account("key-0").unwrap();
    assert_eq!((a.requests, a.ok, a.rate_limited), (2, 1, 1));
    sim.shutdown().await;
}

#[tokio::test]
async fn exhausted_quota_is_a_429_without_any_hint() {
    let sim = sim(one_key(Limit::Total { requests: 1 })).await;
    assert_eq!(post(&sim, KEY, hello("sim-small")).await.status(), 200);
    for _ in 0..2 {
        let resp = post(&sim, KEY, hello("sim-small")).await;
        for (name, _) in resp.headers() {
            let name = name.as_str();
            assert!(
                !name.starts_with("retry-after") && !name.starts_with("anthropic-ratelimit-"),
                "{name} on a spend-limit 429"
            );
        }
        let (status, kind, _) = error_of(resp).await;
        assert_eq!((status, kind.as_str()), (429, "rate_limit_error"));
    }
    assert!(sim.log()[1].retry_after.is_none());
    assert_eq!(sim.stats().account("key-a").unwrap().quota, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn both_endpoints_share_the_account_window() {
    let sim = sim(one_key(Limit::Window {
        requests: 2,
        window: Duration::from_secs(60),
    }))
    .await;
    let chat = || {
        test_client()
            .post(format!("{}/chat/completions", sim.base_url()))
            .bearer_auth(KEY)
            .json(&json!({"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(chat().await.unwrap().status(), 200);
    let resp = post(&sim, KEY, hello("sim-small")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    assert_eq!(post(&sim, KEY, hello("sim-small")).await.status(), 429);
    let openai = chat().await.unwrap();
    assert_eq!(openai.status(), 429);
    let v: Value = openai.json().await.unwrap();
    assert_eq!(
        v["error"]["code"], "rate_limit_exceeded",
        "OpenAI's body on its own path"
    );
    let endpoints: Vec<_> = sim.log().iter().map(|r| (r.endpoint, r.status)).collect();
    use Endpoint::*;
    assert_eq!(
        endpoints,
        [
            (ChatCompletions, 200),
            (Messages, 200),
            (Messages, 429),
            (ChatCompletions, 429)
        ]
    );
    let a = sim.stats();
    let a = a.account("key-a").unwrap();
    assert_eq!((a.requests, a.ok, a.rate_limited), (4, 2, 2));
    sim.shutdown().await;
}

#[tokio::test]
async fn credentials_go_in_their_own_header() {
    let mut cfg = one_key(Limit::Unlimited);
    cfg.accounts.push(SimAccount::refresh_token(
        "oauth-a",
        "rt-a",
        Limit::Unlimited,
    ));
    // Expiry is forced below; a short life (it was 300 ms) only raced
    // the requests made with the token on loaded cores.
    cfg.access_token_ttl = Duration::from_secs(600);
    let sim = sim(cfg).await;

    let (status, kind, message) =
        error_of(post(&sim, "sk-ant-wrong", hello("sim-small")).await).await;
    assert_eq!(
        (status, kind.as_str(), message.as_str()),
        (401, "authentication_error", "invalid x-api-key")
    );
    let resp = messages(&sim)
        .header("anthropic-version", "2023-06-01")
        .json(&hello("sim-small"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.1, "authentication_error");
    // A static key is an x-api-key, not a bearer token.
    let resp = messages(&sim)
        .bearer_auth(KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&hello("sim-small"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let token: Value = test_client()
        .post(sim.token_url())
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "rt-a")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = token["access_token"].as_str().unwrap();
    let with_bearer = || {
        messages(&sim)
            .bearer_auth(access)
            .header("anthropic-version", "2023-06-01")
            .json(&hello("sim-small"))
            .send()
    };
    assert_eq!(with_bearer().await.unwrap().status(), 200);
    // ...and an access token is a bearer token, not an x-api-key.
    assert_eq!(post(&sim, access, hello("sim-small")).await.status(), 401);
    sim.expire_access_tokens();
    let (status, kind, message) = error_of(with_bearer().await.unwrap()).await;
    assert_eq!((status, kind.as_str()), (401, "authentication_error"));
    assert!(message.contains("expired"), "{message}");

    let labels: Vec<_> = sim.log().iter().map(|r| r.label.clone()).collect();
    let oauth = Some("oauth-a".to_owned());
    assert_eq!(labels, [None, None, None, oauth.clone(), None, oauth]);
    let stats = sim.stats();
    assert_eq!(stats.unauthenticated, 4);
    assert_eq!(stats.account("oauth-a").unwrap().unauthorized, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_invalid_request_errors() {
    let sim = sim(one_key(Limit::Unlimited)).await;
    let resp = messages(&sim)
        .header("x-api-key", KEY)
        .json(&hello("sim-small"))
        .send()
        .await
        .unwrap();
    let (status, kind, message) = error_of(resp).await;
    assert_eq!((status, kind.as_str()), (400, "invalid_request_error"));
    assert!(message.contains("anthropic-version"), "{message}");

    let cases = [
        (
            json!({"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]}),
            "max_tokens",
        ),
        (json!({"model": "sim-small", "max_tokens": 5}), "messages"),
        (
            json!({"model": "sim-small", "max_tokens": 5, "messages": "hi"}),
            "messages",
        ),
        (
            json!({"model": "sim-small", "max_tokens": 5,
                "messages": [{"role": "system", "content": "be brief"}]}),
            "messages.0.role",
        ),
        (
            json!({"model": "sim-small", "max_tokens": 5, "messages": [
                {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"},
                {"role": "system", "content": "be brief"}]}),
            "messages.2.role",
        ),
        (
            json!({"model": "sim-small", "max_tokens": 5, "n": 2,
                "messages": [{"role": "user", "content": "hi"}]}),
            "n: Extra inputs",
        ),
    ];
    for (body, expected) in cases {
        let (status, kind, message) = error_of(post(&sim, KEY, body).await).await;
        assert_eq!((status, kind.as_str()), (400, "invalid_request_error"));
        assert!(message.starts_with(expected), "{message}");
    }
    let resp = messages(&sim)
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.1, "invalid_request_error");

    let (status, kind, message) = error_of(post(&sim, KEY, hello("claude-nope")).await).await;
    assert_eq!(
        (status, kind.as_str(), message.as_str()),
        (404, "not_found_error", "model: claude-nope")
    );
    assert_eq!(sim.stats().account("key-a").unwrap().bad_requests, 9);

    // A system message right after a user turn is fine (Claude Code sends one).
    let body = json!({"model": "sim-small", "max_tokens": 2, "messages": [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]}]});
    let resp = post(&sim, KEY, body).await;
    assert_eq!(resp.status(), 200);
    sim.shutdown().await;
}

/// Reads a stream until it ends, fails, or goes quiet for `quiet`; counts
/// the events that arrived. The first `expected` events may take as long as
/// a loaded machine needs (up to 10 s each): only a stall after them, not a
/// slow event before, reads as quiet.
async fn read_events(
    resp: &mut Response,
    expected: usize,
    quiet: Duration,
) -> (usize, &'static str) {
    let mut body = String::new();
    let end = loop {
        let patience = if body.matches("event: ").count() < expected {
            Duration::from_secs(10)
        } else {
            quiet
        };
        match tokio::time::timeout(patience, resp.chunk()).await {
            Ok(Ok(Some(c))) => body.push_str(std::str::from_utf8(&c).unwrap()),
            Ok(Ok(None)) => break "end",
            Ok(Err(_)) => break "error",
            Err(_) => break "quiet",
        }
    };
    (body.matches("event: ").count(), end)
}

#[tokio::test]
async fn faults_apply_with_anthropic_bodies() {
    let sim = sim(one_key(Limit::Unlimited)).await;
    sim.set_fault("key-a", Some(KeyFault::Status(529)));
    let (status, kind, message) = error_of(post(&sim, KEY, hello("sim-small")).await).await;
    assert_eq!(
        (status, kind.as_str(), message.as_str()),
        (529, "overloaded_error", "Overloaded")
    );
    sim.set_fault("key-a", Some(KeyFault::Status(500)));
    assert_eq!(
        error_of(post(&sim, KEY, hello("sim-small")).await).await.1,
        "api_error"
    );

    sim.set_fault("key-a", Some(KeyFault::ResetAfterChunks(3)));
    let mut resp = post(&sim, KEY, streamed(hello("sim-small"))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        read_events(&mut resp, 3, Duration::from_secs(2)).await,
        (3, "error")
    );
    let resp = post(&sim, KEY, hello("sim-small")).await;
    assert!(resp.bytes().await.is_err(), "body must break off");

    sim.set_fault("key-a", Some(KeyFault::StallAfterChunks(4)));
    let mut resp = post(&sim, KEY, streamed(hello("sim-small"))).await;
    assert_eq!(
        read_events(&mut resp, 4, Duration::from_millis(200)).await,
        (4, "quiet")
    );

    // The probe a gateway sends for kind = "anthropic".
    let models = || {
        test_client()
            .get(format!("{}/models", sim.base_url()))
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .send()
    };
    sim.set_fault("key-a", Some(KeyFault::Status(529)));
    assert_eq!(models().await.unwrap().status(), 529);
    sim.set_fault("key-a", None);
    let resp = models().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["data"][0]["id"], "sim-small");
    assert_eq!(v["has_more"], false);
    let resp = test_client()
        .get(format!("{}/models", sim.base_url()))
        .header("x-api-key", "sk-ant-wrong")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.1, "authentication_error");
    assert_eq!(sim.models_calls("key-a"), 2);

    let a = sim.stats();
    let a = a.account("key-a").unwrap();
    assert_eq!((a.requests, a.errors, a.aborted), (5, 2, 3));
    tokio::time::timeout(Duration::from_secs(1), sim.shutdown())
        .await
        .unwrap();
}

#[test]
fn dated_versions_from_2023_on_are_taken() {
    use super::version_ok;
    for ok in ["2023-06-01", "2023-01-01", "2026-10-21"] {
        assert!(version_ok(ok), "{ok}");
    }
    for bad in ["2022-12-31", "latest", "2023-6-1", "2023-06-01x", ""] {
        assert!(!version_ok(bad), "{bad}");
    }
}
