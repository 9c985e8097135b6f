//! The sim seen from a client on a real socket.

use std::time::{Duration, SystemTime};

use reqwest::Response;
use serde_json::{Value, json};

use super::*;

mod chat_tools;
mod embeddings;
mod responses;

async fn sim(cfg: SimConfig) -> SimHandle {
    start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn one_key(limit: Limit) -> SimConfig {
    SimConfig {
        accounts: vec![SimAccount::api_key("key-a", "sk-sim-aaaa-1234", limit)],
        chunks: 4,
        chunk_interval: Duration::from_millis(5),
        ..SimConfig::default()
    }
}

async fn post(sim: &SimHandle, key: Option<&str>, body: Value) -> Response {
    let mut req = test_client()
        .post(format!("{}/chat/completions", sim.base_url()))
        .json(&body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.unwrap()
}

/// Moves the sim's clock forward by `d` at once, then lets it run on: a
/// window, burst or token life can be far longer than any loaded machine
/// takes between two requests (so "still limited" never races the wall
/// clock) and still be seen to end. The sim reads `tokio::time::Instant`,
/// and a `#[tokio::test]` runs it on this test's current-thread runtime.
async fn skip(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

fn plain(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

/// Data payloads of a complete SSE body.
fn sse_data(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("\n\n"),
        "stream must end on an event boundary"
    );
    body.split_terminator("\n\n")
        .map(|e| {
            e.strip_prefix("data: ")
                .expect("every event is data")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn stream_is_openai_shaped_and_numbered() {
    let sim = sim(one_key(Limit::Unlimited)).await;
    let body = json!({"model": "sim-small", "messages": [], "stream": true,
        "stream_options": {"include_usage": true}});
    let mut resp = post(&sim, Some("sk-sim-aaaa-1234"), body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), Some("text/event-stream"));
    assert!(header(&resp, "x-request-id").is_some());
    assert!(header(&resp, "x-ratelimit-remaining-requests").is_some());
    // Paced content arrives frame by frame, not in one batch.
    let mut frames = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        frames.push(String::from_utf8(chunk.to_vec()).unwrap());
    }
    assert!(frames.len() >= 5, "events were batched: {frames:?}");
    let data = sse_data(&frames.concat());
    assert_eq!(data.len(), 8, "role, 4 content, finish, usage, DONE");
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert!(first["id"].as_str().unwrap().starts_with("chatcmpl-sim-"));
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["model"], "sim-small");
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    for (i, d) in data[1..5].iter().enumerate() {
        let v: Value = serde_json::from_str(d).unwrap();
        assert_eq!(
            v["choices"][0]["delta"],
            json!({"content": format!("[{i}]")})
        );
        assert_eq!(v["choices"][0]["finish_reason"], Value::Null);
    }
    let finish: Value = serde_json::from_str(&data[5]).unwrap();
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage: Value = serde_json::from_str(&data[6]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    assert_eq!(data[7], "[DONE]");

    // max_tokens sets the length and the finish reason; no usage unasked.
    let body = json!({"model": "sim-large", "stream": true, "max_tokens": 2});
    let text = post(&sim, Some("sk-sim-aaaa-1234"), body)
        .await
        .text()
        .await
        .unwrap();
    let data = sse_data(&text);
    assert_eq!(data.len(), 5);
    assert!(data[3].contains(r#""finish_reason":"length""#));

    let resp = post(&sim, Some("sk-sim-aaaa-1234"), plain("sim-small")).await;
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "[0][1][2][3]");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    let log = sim.log();
    assert_eq!(log.len(), 3);
    assert!(log[0].stream && !log[2].stream);
    assert_eq!(log[1].model, "sim-large");
    assert!(
        log.iter()
            .all(|r| r.status == 200 && r.label.as_deref() == Some("key-a"))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn refusals_use_openai_error_bodies() {
    let sim = sim(one_key(Limit::Unlimited)).await;
    let resp = post(&sim, Some("sk-wrong-key-0000-9876"), plain("sim-small")).await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("...9876") && !message.contains("wrong-key"),
        "{message}"
    );
    assert_eq!(post(&sim, None, plain("sim-small")).await.status(), 401);

    let resp = test_client()
        .post(format!("{}/chat/completions", sim.base_url()))
        .bearer_auth("sk-sim-aaaa-1234")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let resp = post(&sim, Some("sk-sim-aaaa-1234"), plain("gpt-nope")).await;
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");

    let stats = sim.stats();
    assert_eq!(stats.unauthenticated, 2);
    assert_eq!(stats.account("key-a").unwrap().bad_requests, 2);
    assert_eq!(sim.log().len(), 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn window_limit_hints_in_every_style() {
    // Far longer than six accounts' worth of requests (each on a fresh
    // client) take on loaded cores, so key-0's window is still closed when
    // the test says so; it is skipped, not waited, at the end. Under a
    // minute, so reset headers read "Ns".
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
                format!("sk-sim-{i}"),
                Limit::Window {
                    requests: 2,
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
        let key = format!("sk-sim-{i}");
        let first = post(&sim, Some(&key), plain("sim-small")).await;
        assert_eq!(first.status(), 200);
        assert_eq!(header(&first, "x-ratelimit-limit-requests"), Some("2"));
        assert_eq!(header(&first, "x-ratelimit-remaining-requests"), Some("1"));
        let last = post(&sim, Some(&key), plain("sim-small")).await;
        assert_eq!(last.status(), 200);
        assert_eq!(header(&last, "x-ratelimit-remaining-requests"), Some("0"));
        assert_eq!(header(&last, "x-ratelimit-remaining-tokens"), Some("0"));
        let reset = header(&last, "x-ratelimit-reset-requests").unwrap();
        assert!(reset.ends_with('s') && !reset.contains('m'), "{reset}");

        let before = SystemTime::now();
        let limited = post(&sim, Some(&key), plain("sim-small")).await;
        assert_eq!(limited.status(), 429, "{style:?}");
        let wait = sim
            .log()
            .last()
            .unwrap()
            .retry_after
            .expect("exact wait logged");
        assert!(wait > Duration::ZERO && wait <= window, "{wait:?}");
        let ms = wait.as_nanos().div_ceil(1_000_000).to_string();
        let secs = wait.as_nanos().div_ceil(1_000_000_000).to_string();
        let go = wire::go_duration(wire::ceil_ms(wait));
        let (ra, ra_ms) = (
            header(&limited, "retry-after"),
            header(&limited, "retry-after-ms"),
        );
        let reset = header(&limited, "x-ratelimit-reset-requests");
        let remaining = header(&limited, "x-ratelimit-remaining-requests");
        match style {
            HintStyle::All => {
                assert_eq!(ra, Some(secs.as_str()));
                assert_eq!(ra_ms, Some(ms.as_str()));
                assert_eq!(reset, Some(go.as_str()));
                assert_eq!(remaining, Some("0"));
            }
            HintStyle::RetryAfterOnly => {
                assert_eq!((ra, ra_ms, reset), (Some(secs.as_str()), None, None));
            }
            HintStyle::RetryAfterMsOnly => {
                assert_eq!((ra, ra_ms, reset), (None, Some(ms.as_str()), None));
            }
            HintStyle::HttpDate => {
                let at = httpdate::parse_http_date(ra.unwrap()).unwrap();
                // Rounded up: never before the true reset.
                assert!(at >= before + wait);
                assert!(at <= SystemTime::now() + wait + Duration::from_secs(1));
                assert_eq!((ra_ms, reset), (None, None));
            }
            HintStyle::ResetHeadersOnly => {
                assert_eq!((ra, ra_ms), (None, None));
                assert_eq!(reset, Some(go.as_str()));
                assert_eq!(remaining, Some("0"));
            }
            HintStyle::None => assert_eq!((ra, ra_ms, reset, remaining), (None, None, None, None)),
        }
        let v: Value = limited.json().await.unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(v["error"]["type"], "requests");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("Limit 2, Used 2, Requested 1"),
            "{message}"
        );
    }

    // A client that ignores the hint is refused again, and it is logged.
    let again = post(&sim, Some("sk-sim-0"), plain("sim-small")).await;
    assert_eq!(again.status(), 429);
    let wait = sim.log().last().unwrap().retry_after.unwrap();
    skip(wait).await;
    let after = post(&sim, Some("sk-sim-0"), plain("sim-small")).await;
    assert_eq!(after.status(), 200, "window reopens exactly at the hint");
    assert_eq!(header(&after, "x-ratelimit-remaining-requests"), Some("1"));
    let stats = sim.stats();
    let a = stats.account("key-0").unwrap();
    assert_eq!((a.requests, a.ok, a.rate_limited), (5, 3, 2));
    sim.shutdown().await;
}

#[tokio::test]
async fn total_limit_is_insufficient_quota_forever() {
    let sim = sim(one_key(Limit::Total { requests: 1 })).await;
    assert_eq!(
        post(&sim, Some("sk-sim-aaaa-1234"), plain("sim-small"))
            .await
            .status(),
        200
    );
    for _ in 0..2 {
        let resp = post(&sim, Some("sk-sim-aaaa-1234"), plain("sim-small")).await;
        assert_eq!(resp.status(), 429);
        for name in [
            "retry-after",
            "retry-after-ms",
            "x-ratelimit-reset-requests",
        ] {
            assert!(header(&resp, name).is_none(), "{name} on a quota 429");
        }
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "insufficient_quota");
        assert_eq!(v["error"]["type"], "insufficient_quota");
    }
    assert!(sim.log()[1].retry_after.is_none());
    assert_eq!(sim.stats().account("key-a").unwrap().quota, 2);
    sim.set_limit("key-a", Limit::Total { requests: 1 });
    assert_eq!(
        post(&sim, Some("sk-sim-aaaa-1234"), plain("sim-small"))
            .await
            .status(),
        200
    );
    sim.shutdown().await;
}

async fn refresh(sim: &SimHandle, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = test_client()
        .post(sim.token_url())
        .basic_auth("client-id", Some("client-secret"))
        .form(form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn refresh_tokens_rotate_and_old_ones_die() {
    let sim = sim(SimConfig {
        accounts: vec![SimAccount::refresh_token(
            "oauth-a",
            "rt-first",
            Limit::Unlimited,
        )],
        rotate_refresh_tokens: true,
        ..SimConfig::default()
    })
    .await;
    let grant = |rt: &'static str| [("grant_type", "refresh_token"), ("refresh_token", rt)];
    let (status, v) = refresh(&sim, &grant("rt-first")).await;
    assert_eq!(status, 200);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    let access = v["access_token"].as_str().unwrap().to_owned();
    let rotated = v["refresh_token"].as_str().unwrap().to_owned();
    assert!(access.starts_with("at-") && rotated.starts_with("rt-"));
    assert_eq!(
        sim.current_refresh_token("oauth-a").as_deref(),
        Some(rotated.as_str())
    );

    let resp = post(&sim, Some(&access), plain("sim-small")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(sim.log()[0].label.as_deref(), Some("oauth-a"));

    let (status, v) = refresh(&sim, &grant("rt-first")).await;
    assert_eq!((status, v["error"].as_str()), (400, Some("invalid_grant")));
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rotated.as_str()),
    ];
    assert_eq!(refresh(&sim, &form).await.0, 200);
    let (status, v) = refresh(&sim, &[("grant_type", "password")]).await;
    assert_eq!(
        (status, v["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    let current = sim.current_refresh_token("oauth-a").unwrap();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", current.as_str()),
    ];
    sim.set_token_failure("oauth-a", Some(TokenFailure::ServerError));
    let (status, v) = refresh(&sim, &form).await;
    assert_eq!((status, v), (503, json!({"error": "server_error"})));
    sim.set_token_failure("oauth-a", Some(TokenFailure::InvalidGrant));
    assert_eq!(refresh(&sim, &form).await.0, 400);

    assert_eq!(sim.token_calls(), 6);
    let outcomes: Vec<_> = sim
        .token_log()
        .iter()
        .map(|c| (c.outcome, c.rotated))
        .collect();
    use TokenOutcome::*;
    assert_eq!(
        outcomes,
        [
            (Issued, true),
            (InvalidGrant, false),
            (Issued, true),
            (UnsupportedGrantType, false),
            (ServerError, false),
            (InvalidGrant, false)
        ]
    );
    assert_eq!(
        sim.token_log()[1].label,
        None,
        "a revoked token names no account"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn expired_access_tokens_get_401() {
    // A token outlives any loaded machine's request; its end is skipped to.
    let ttl = Duration::from_secs(600);
    let sim = sim(SimConfig {
        accounts: vec![SimAccount::refresh_token(
            "oauth-a",
            "rt-a",
            Limit::Unlimited,
        )],
        access_token_ttl: ttl,
        ..SimConfig::default()
    })
    .await;
    let form = [("grant_type", "refresh_token"), ("refresh_token", "rt-a")];
    let (_, v) = refresh(&sim, &form).await;
    assert!(
        v.get("refresh_token").is_none(),
        "no rotation unless configured"
    );
    let access = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        post(&sim, Some(&access), plain("sim-small")).await.status(),
        200
    );
    skip(ttl).await;
    let resp = post(&sim, Some(&access), plain("sim-small")).await;
    assert_eq!(resp.status(), 401);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");

    let (_, v) = refresh(&sim, &form).await;
    let access = v["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        post(&sim, Some(&access), plain("sim-small")).await.status(),
        200
    );
    sim.expire_access_tokens();
    assert_eq!(
        post(&sim, Some(&access), plain("sim-small")).await.status(),
        401
    );
    let log = sim.log();
    assert_eq!(log[3].label.as_deref(), Some("oauth-a"));
    assert_eq!(sim.stats().account("oauth-a").unwrap().unauthorized, 2);
    sim.shutdown().await;
}

/// Reads a stream until it ends, fails, or goes quiet for `quiet`.
async fn read_events(resp: &mut Response, quiet: Duration) -> (usize, &'static str) {
    read_events_after(resp, 0, quiet).await
}

/// Like [`read_events`], but the first `expected` events may take as long
/// as a loaded machine needs (up to 10 s each); only then does `quiet`
/// apply. A stall test then fails only if the stream stalls somewhere
/// else, never because an event on its way was slow.
async fn read_events_after(
    resp: &mut Response,
    expected: usize,
    quiet: Duration,
) -> (usize, &'static str) {
    let mut body = String::new();
    let end = loop {
        let events = body.matches("data: ").count();
        let patience = if events < expected {
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
    (body.matches("data: ").count(), end)
}

#[tokio::test]
async fn resets_and_stalls_as_a_client_sees_them() {
    let sim = sim(one_key(Limit::Unlimited)).await;
    let stream = json!({"model": "sim-small", "stream": true});
    let key = Some("sk-sim-aaaa-1234");

    sim.set_fault("key-a", Some(KeyFault::ResetAfterChunks(2)));
    let mut resp = post(&sim, key, stream.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        read_events(&mut resp, Duration::from_secs(2)).await,
        (2, "error")
    );
    let resp = post(&sim, key, plain("sim-small")).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err(), "body must break off");

    sim.set_fault("key-a", Some(KeyFault::StallAfterChunks(1)));
    let mut stalled = post(&sim, key, stream.clone()).await;
    assert_eq!(stalled.status(), 200);
    assert_eq!(
        read_events_after(&mut stalled, 1, Duration::from_millis(300)).await,
        (1, "quiet")
    );
    // Checked once the sim has the request (on loaded cores it can take
    // longer than the 300 ms of silence to get there).
    {
        let logged = sim.log().len();
        let mut pending = std::pin::pin!(post(&sim, key, plain("sim-small")));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sim.log().len() == logged {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the plain request never reached the sim"
            );
            if let Ok(resp) = tokio::time::timeout(Duration::from_millis(10), &mut pending).await {
                panic!("a stalled plain request answered {}", resp.status());
            }
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(300), pending)
                .await
                .is_err(),
            "a stalled plain request never answers"
        );
    }

    sim.set_fault("key-a", Some(KeyFault::Status(503)));
    let resp = post(&sim, key, stream).await;
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error");
    let models = test_client()
        .get(format!("{}/models", sim.base_url()))
        .bearer_auth("sk-sim-aaaa-1234")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 503, "health probes see the fault too");

    sim.set_fault("key-a", None);
    let models: Value = test_client()
        .get(format!("{}/models", sim.base_url()))
        .bearer_auth("sk-sim-aaaa-1234")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "sim-small");
    assert_eq!(sim.models_calls("key-a"), 2);
    let faults: Vec<_> = sim.log().iter().map(|r| r.fault).collect();
    assert_eq!(faults[0], Some(KeyFault::ResetAfterChunks(2)));
    assert_eq!(faults[2], Some(KeyFault::StallAfterChunks(1)));
    let stats: SimStats = test_client()
        .get(format!("http://{}/sim/stats", sim.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a = stats.account("key-a").unwrap();
    assert_eq!(
        (a.requests, a.aborted, a.errors, a.models_calls),
        (5, 4, 1, 2)
    );
    // Shutdown is prompt even with a stalled stream still open.
    tokio::time::timeout(Duration::from_secs(1), sim.shutdown())
        .await
        .unwrap();
    assert_eq!(
        read_events(&mut stalled, Duration::from_secs(1)).await.1,
        "error"
    );
}

#[tokio::test]
async fn random_faults_repeat_with_the_seed() {
    let run = |seed| async move {
        let mut cfg = one_key(Limit::Unlimited);
        cfg.faults = Faults {
            error_5xx: 0.3,
            reset_mid_stream: 0.3,
            stall_mid_stream: 0.0,
            seed,
            ..Faults::default()
        };
        let sim = sim(cfg).await;
        let mut seen = Vec::new();
        for _ in 0..12 {
            let resp = post(&sim, Some("sk-sim-aaaa-1234"), plain("sim-small")).await;
            let status = resp.status().as_u16();
            seen.push((status, resp.bytes().await.is_ok()));
        }
        sim.shutdown().await;
        seen
    };
    let a = run(7).await;
    assert_eq!(a, run(7).await);
    assert!(a.iter().any(|&(s, _)| s >= 500));
    assert!(a.iter().any(|&(s, ok)| s == 200 && !ok));
    assert!(a.iter().any(|&(s, ok)| s == 200 && ok));
}

#[tokio::test]
async fn a_rate_limit_burst_holds_the_account_for_the_hinted_wait() {
    // A burst no loaded machine outruns; 10 s of it are skipped, not waited.
    let (burst, skipped) = (Duration::from_secs(30), Duration::from_secs(10));
    let mut cfg = one_key(Limit::Unlimited);
    cfg.faults = Faults {
        rate_limit: 1.0,
        rate_limit_wait: (burst, burst),
        ..Faults::default()
    };
    let sim = sim(cfg).await;
    let first = post(&sim, Some("sk-sim-aaaa-1234"), plain("sim-small")).await;
    assert_eq!(first.status(), 429);
    assert_eq!(first.headers()["retry-after-ms"], "30000");
    let body: serde_json::Value = first.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    // Still inside the burst: refused by the block itself, with what is left.
    skip(skipped).await;
    let second = post(&sim, Some("sk-sim-aaaa-1234"), plain("sim-small")).await;
    assert_eq!(second.status(), 429);
    let left: u64 = second.headers()["retry-after-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20_000).contains(&left), "{left} ms left");
    let log = sim.log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].retry_after, Some(burst));
    assert!(log[1].retry_after.unwrap() <= burst - skipped);
    sim.shutdown().await;
}

/// A small token limit sizes the answer exactly; a large one (Claude Code
/// asks for 32,000) is a ceiling the default answer stays under.
#[test]
fn token_limits_size_small_answers_and_cap_large_ones() {
    use super::wire::pieces_under;
    assert_eq!(pieces_under(None, 8), (8, false));
    assert_eq!(pieces_under(Some(3), 8), (3, true));
    assert_eq!(pieces_under(Some(12), 8), (12, true));
    assert_eq!(pieces_under(Some(32_000), 8), (8, false));
    assert_eq!(pieces_under(Some(2_000), 5_000), (2_000, true));
}
