//! Hostile input not covered elsewhere: the Anthropic route's bad bodies
//! answered in Anthropic's error shape, huge `messages` arrays, and header
//! injection attempts. (The OpenAI route's table of bad bodies, unknown
//! routes and methods, and the admin API's `../` names are in
//! `http_surface.rs`; nesting, slow bodies and size limits in `limits.rs`.)
//! After every case the pool is untouched and nothing reached the upstream.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{config_toml, key, start, start_sim};
use serde_json::{Value, json};
use tokenyard::sim::{Limit, SimConfig};

async fn gateway(sim: &tokenyard::sim::SimHandle, gw: &str) -> tokenyard::gateway::Running {
    let toml = config_toml(
        sim,
        &["main"],
        &[key("key-1", "main", "sk-sim-1")],
        "",
        "",
        gw,
    );
    start(common::parse(&toml, &std::env::temp_dir())).await
}

/// The pool as the admin API shows it, minus the clock.
async fn pool(addr: std::net::SocketAddr) -> Value {
    let mut v: Value = common::client()
        .get(format!("http://{addr}/admin/pool"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["at_ms"] = Value::Null;
    v
}

/// Sends raw bytes and returns (status, head, body) of the answer; status 0
/// when the connection closed without one.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> (u16, String, String) {
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || raw_blocking(addr, &bytes))
        .await
        .unwrap()
}

fn raw_blocking(addr: std::net::SocketAddr, bytes: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn anthropic_error(status: u16, body: &str, case: &str) -> Value {
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{case}: {status} body is not JSON ({e}): {body:.200}"));
    assert_eq!(v["type"], "error", "{case}: {v}");
    assert!(v["error"]["type"].is_string(), "{case}: {v}");
    assert!(v["error"]["message"].is_string(), "{case}: {v}");
    v
}

#[tokio::test]
async fn bad_anthropic_bodies_get_anthropic_errors_and_change_nothing() {
    let sim = start_sim(SimConfig::with_api_keys(1, Limit::Unlimited)).await;
    let gw = gateway(&sim, "max_body = 65536").await;
    let before = pool(gw.addr).await;
    let big = format!(
        "{{\"model\":\"sim-small\",\"max_tokens\":1,\"messages\":[{}]}}",
        vec![r#"{"role":"user","content":"x"}"#; 5000].join(",")
    );
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "truncated JSON",
            b"{\"model\":".to_vec(),
            400,
            "invalid_request_error",
        ),
        ("not JSON", b"hello".to_vec(), 400, "invalid_request_error"),
        (
            "invalid UTF-8",
            b"{\"model\":\"sim-\xff\"}".to_vec(),
            400,
            "invalid_request_error",
        ),
        (
            "an array body",
            b"[1,2]".to_vec(),
            400,
            "invalid_request_error",
        ),
        (
            "model is a number",
            br#"{"model":5,"max_tokens":1,"messages":[]}"#.to_vec(),
            400,
            "invalid_request_error",
        ),
        (
            "stream is a string",
            br#"{"model":"sim-small","max_tokens":1,"stream":"yes","messages":[]}"#.to_vec(),
            400,
            "invalid_request_error",
        ),
        (
            "messages is an object",
            br#"{"model":"sim-small","max_tokens":1,"messages":{"role":"user"}}"#.to_vec(),
            400,
            "invalid_request_error",
        ),
        (
            "unknown model",
            br#"{"model":"nope","max_tokens":1,"messages":[]}"#.to_vec(),
            404,
            "not_found_error",
        ),
        (
            "huge messages array over max_body",
            big.into_bytes(),
            413,
            "request_too_large",
        ),
    ];
    for (case, body, status, kind) in cases {
        let resp = common::client()
            .post(format!("http://{}/v1/messages", gw.addr))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{case}");
        let v = anthropic_error(status, &resp.text().await.unwrap(), case);
        assert_eq!(v["error"]["type"], kind, "{case}: {v}");
    }
    assert!(sim.log().is_empty(), "nothing reached the upstream");
    assert_eq!(pool(gw.addr).await, before, "the pool is as it was");
    gw.stop().await;
}

#[tokio::test]
async fn a_huge_messages_array_within_max_body_is_carried_whole() {
    let sim = start_sim(SimConfig::with_api_keys(1, Limit::Unlimited)).await;
    let gw = gateway(&sim, "").await;
    // 50,000 messages, about 2 MB: legal, if unwise. Both routes carry it
    // (the Anthropic one translates every message) and answer.
    let messages: Vec<Value> = (0..50_000)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "m"}))
        .collect();
    for (path, body) in [
        (
            "chat/completions",
            json!({"model": "sim-small", "max_tokens": 2, "messages": messages}),
        ),
        (
            "messages",
            json!({"model": "sim-small", "max_tokens": 2, "messages": messages}),
        ),
    ] {
        let resp = common::client()
            .post(format!("http://{}/v1/{path}", gw.addr))
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("[0][1]"), "{path}: {text:.200}");
    }
    assert_eq!(sim.log().len(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_injection_attempts_are_refused_or_inert() {
    let sim = start_sim(SimConfig::with_api_keys(1, Limit::Unlimited)).await;
    let gw = gateway(&sim, "").await;
    let before = pool(gw.addr).await;
    let body = r#"{"model":"sim-small","max_tokens":1,"messages":[{"role":"user","content":"x"}]}"#;
    let request = |extra: &str| {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\
             Content-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // Broken header syntax is refused by the HTTP parser before any handler
    // runs: a bare 400, never a request upstream.
    for (case, extra) in [
        ("obsolete line folding", "X-Note: a\r\n X-Injected: yes\r\n"),
        ("a bare CR inside a value", "X-Note: a\rX-Injected: yes\r\n"),
        ("a NUL inside a value", "X-Note: a\0b\r\n"),
        ("a space before the colon", "X-Injected : yes\r\n"),
    ] {
        let (status, head, _) = raw(gw.addr, request(extra).as_bytes()).await;
        assert_eq!(status, 400, "{case}: {head}");
    }
    // CR LF smuggled through JSON or percent-encoding stays data: it never
    // becomes a header of the answer or of a request upstream.
    let model = "sim-small\r\nX-Injected: yes";
    let resp = common::client()
        .post(format!("http://{}/v1/chat/completions", gw.addr))
        .json(&json!({"model": model, "max_tokens": 1, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().get("x-injected").is_none());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found", "{v}");
    let (status, head, _) = raw(
        gw.addr,
        b"GET /v1/models%0d%0aX-Injected:%20yes HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 404, "{head}");
    assert!(!head.to_ascii_lowercase().contains("x-injected"), "{head}");
    // Content-Length and Transfer-Encoding together, the classic request
    // smuggling shape: refused outright.
    let smuggle = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let (status, head, _) = raw(gw.addr, smuggle.as_bytes()).await;
    assert_eq!(status, 400, "Content-Length with Transfer-Encoding: {head}");
    // Only the JSON one went upstream (`sim-*` routes it), its model still
    // one string, and the provider refused that model.
    let log = sim.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].model, model);
    let after = pool(gw.addr).await;
    assert_eq!(
        after["credentials"][0]["failures"],
        before["credentials"][0]["failures"]
    );
    assert_eq!(after["credentials"][0]["state"], "ready");
    gw.stop().await;
}
