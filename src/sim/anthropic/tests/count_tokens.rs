//! `POST /v1/messages/count_tokens`, the `?beta=true` query Claude Code
//! sends, and the `sim:call-tool` marker on Messages, seen from a client
//! on a real socket.

use super::*;

fn count_tokens(sim: &SimHandle, query: &str) -> RequestBuilder {
    test_client().post(format!("{}/messages/count_tokens{query}", sim.base_url()))
}

async fn count(sim: &SimHandle, key: &str, body: Value) -> Response {
    count_tokens(sim, "")
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A Messages body without `max_tokens`, as count_tokens takes it.
fn question() -> Value {
    json!({"model": "sim-small",
        "system": "You are a careful assistant.",
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "auto"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "How long is this question, roughly?"}]}]})
}

#[tokio::test]
async fn counts_match_what_messages_reports() {
    let sim = sim(one_key(Limit::Window {
        requests: 10,
        window: Duration::from_secs(60),
    }))
    .await;
    let resp = count(&sim, KEY, question()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    assert!(header(&resp, "request-id").unwrap().starts_with("req_"));
    assert_eq!(
        header(&resp, "anthropic-ratelimit-requests-remaining"),
        Some("9"),
        "a count uses up the window like a message"
    );
    let v: Value = resp.json().await.unwrap();
    let counted = v["input_tokens"].as_u64().unwrap();
    assert_eq!(v, json!({"input_tokens": counted}), "nothing else");

    let mut message = question();
    message["max_tokens"] = json!(64);
    let v: Value = post(&sim, KEY, message).await.json().await.unwrap();
    assert_eq!(v["usage"]["input_tokens"], counted);

    // Claude Code's query string changes nothing on either path.
    let beta = count_tokens(&sim, "?beta=true")
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "token-counting-2024-11-01")
        .json(&question())
        .send()
        .await
        .unwrap();
    assert_eq!(beta.status(), 200);
    let beta = test_client()
        .post(format!("{}/messages?beta=true", sim.base_url()))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&hello("sim-small"))
        .send()
        .await
        .unwrap();
    assert_eq!(beta.status(), 200);
    assert_eq!(beta.json::<Value>().await.unwrap()["type"], "message");

    let seen: Vec<_> = sim
        .log()
        .iter()
        .map(|r| (r.endpoint, r.status, r.stream))
        .collect();
    use Endpoint::*;
    assert_eq!(
        seen,
        [
            (CountTokens, 200, false),
            (Messages, 200, false),
            (CountTokens, 200, false),
            (Messages, 200, false)
        ]
    );
    let stats = sim.stats();
    let a = stats.account("key-a").unwrap();
    assert_eq!(a.by_endpoint.get(&CountTokens), Some(&2));
    assert_eq!(a.by_endpoint.get(&Messages), Some(&2));
    sim.shutdown().await;
}

#[tokio::test]
async fn counts_are_refused_like_messages() {
    let mut cfg = one_key(Limit::Window {
        requests: 1,
        window: Duration::from_secs(60),
    });
    cfg.accounts.push(SimAccount::refresh_token(
        "oauth-a",
        "rt-a",
        Limit::Unlimited,
    ));
    let sim = sim(cfg).await;
    assert_eq!(count(&sim, KEY, question()).await.status(), 200);
    let limited = count(&sim, KEY, question()).await;
    let wait = sim.log().last().unwrap().retry_after.expect("a rate limit");
    let secs = wait.as_nanos().div_ceil(1_000_000_000).to_string();
    assert_eq!(header(&limited, "retry-after"), Some(secs.as_str()));
    assert_eq!(
        header(&limited, "anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    let reset = instant(header(&limited, "anthropic-ratelimit-requests-reset").unwrap());
    assert!(reset > SystemTime::now());
    assert!(header(&limited, "request-id").is_some());
    let (status, kind, _) = error_of(limited).await;
    assert_eq!((status, kind.as_str()), (429, "rate_limit_error"));
    // The count used up the window a message needed.
    assert_eq!(post(&sim, KEY, hello("sim-small")).await.status(), 429);

    let (status, kind, message) = error_of(count(&sim, KEY, hello("sim-small")).await).await;
    assert_eq!((status, kind.as_str()), (400, "invalid_request_error"));
    assert_eq!(message, "max_tokens: Extra inputs are not permitted");
    let (status, kind, _) = error_of(count(&sim, "sk-ant-wrong", question()).await).await;
    assert_eq!((status, kind.as_str()), (401, "authentication_error"));
    let unversioned = count_tokens(&sim, "")
        .header("x-api-key", KEY)
        .json(&question())
        .send()
        .await
        .unwrap();
    let (status, _, message) = error_of(unversioned).await;
    assert_eq!(status, 400);
    assert!(message.contains("anthropic-version"), "{message}");
    let mut unknown = question();
    unknown["model"] = json!("claude-nope");
    let (status, kind, _) = error_of(count(&sim, KEY, unknown).await).await;
    assert_eq!((status, kind.as_str()), (404, "not_found_error"));

    // An OAuth account counts with its bearer token, not x-api-key.
    let token: Value = test_client()
        .post(sim.token_url())
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "rt-a")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let with_bearer = count_tokens(&sim, "?beta=true")
        .bearer_auth(token["access_token"].as_str().unwrap())
        .header("anthropic-version", "2023-06-01")
        .json(&question())
        .send()
        .await
        .unwrap();
    assert_eq!(with_bearer.status(), 200);

    sim.set_fault("oauth-a", Some(KeyFault::Status(529)));
    let overloaded = count_tokens(&sim, "")
        .bearer_auth(token["access_token"].as_str().unwrap())
        .header("anthropic-version", "2023-06-01")
        .json(&question())
        .send()
        .await
        .unwrap();
    let (status, kind, _) = error_of(overloaded).await;
    assert_eq!((status, kind.as_str()), (529, "overloaded_error"));
    let a = sim.stats();
    let a = a.account("key-a").unwrap();
    assert_eq!((a.ok, a.rate_limited, a.bad_requests), (1, 2, 3));
    sim.shutdown().await;
}

fn marked(stream: bool) -> Value {
    json!({"model": "sim-small", "max_tokens": 100, "stream": stream,
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}},
            {"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "sim:call-tool, not the weather"}]})
}

#[tokio::test]
async fn the_marker_calls_the_first_tool_with_the_chat_arguments() {
    let sim = sim(one_key(Limit::Unlimited)).await;
    let v: Value = post(&sim, KEY, marked(false)).await.json().await.unwrap();
    assert_eq!(v["stop_reason"], "tool_use");
    let block = &v["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "lookup");
    assert_eq!(block["input"], json!({"piece": "[0]", "n": 1}));

    let text = post(&sim, KEY, marked(true)).await.text().await.unwrap();
    let events = sse_events(&text);
    let start = &events[1].1["content_block"];
    assert_eq!(
        (&start["type"], &start["name"], &start["input"]),
        (&json!("tool_use"), &json!("lookup"), &json!({}))
    );
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
    assert_eq!(input, json!({"piece": "[0]", "n": 1}));
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");

    // tool_choice none still wins over the marker.
    let mut none = marked(false);
    none["tool_choice"] = json!({"type": "none"});
    let v: Value = post(&sim, KEY, none).await.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "[0][1][2][3]");
    sim.shutdown().await;
}
