//! The gateway's HTTP surface as a client and an operator meet it: errors in
//! OpenAI's shape that never cost an upstream request, client keys, the
//! admin API and its guards, which headers pass through, and that no
//! configured secret ever comes back in a response.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::extract::connect_info::MockConnectInfo;
use serde_json::{Value, json};
use tokenyard::config::Config;
use tokenyard::gateway::{self, AppState, Running};
use tokenyard::pool::PoolHandle;
use tokenyard::sim::{KeyFault, Limit, SimAccount, SimConfig, SimHandle, TokenFailure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

// Long, distinctive secrets, so that a leak of any of them is unmistakable.
const KEY_1: &str = "fake-surface-key-alpha";
const KEY_2: &str = "fake-surface-key-bravo";
const KEY_3: &str = "fake-surface-key-charlie";
const RT_1: &str = "rt-fake-surface-not-a-real-key-delta";
const CLIENT_KEY: &str = "ck-test-123456789";
const ADMIN_KEY: &str = "adm-fake-surface-not-a-real-key-echo";

const ALL_SECRETS: &[&str] = &[KEY_1, KEY_2, KEY_3, RT_1, CLIENT_KEY, ADMIN_KEY];

// ---------------------------------------------------------------------------
// Setup

/// A sim with unlimited API-key accounts `key-1..` holding `KEY_1..`, plus
/// an OAuth account `oauth-1` for `RT_1`.
async fn sim() -> SimHandle {
    let mut accounts: Vec<SimAccount> = [KEY_1, KEY_2, KEY_3]
        .iter()
        .enumerate()
        .map(|(i, k)| SimAccount::api_key(format!("key-{}", i + 1), *k, Limit::Unlimited))
        .collect();
    accounts.push(SimAccount::refresh_token("oauth-1", RT_1, Limit::Unlimited));
    common::start_sim(SimConfig {
        accounts,
        ..SimConfig::default()
    })
    .await
}

/// Credentials `key-1..key-n` (n ≤ 3) in one tier, for `sim()`.
fn keys(n: usize) -> Vec<common::Cred> {
    let all = [("key-1", KEY_1), ("key-2", KEY_2), ("key-3", KEY_3)];
    all[..n]
        .iter()
        .map(|(name, k)| common::key(name, "default", k))
        .collect()
}

/// Parses a config and keeps its state in memory only, so these tests never
/// touch a state file.
fn config(toml: &str) -> Config {
    let dir = std::env::temp_dir();
    let mut c = common::parse(toml, &dir);
    c.state_file = None;
    c
}

fn toml(sim: &SimHandle, creds: &[common::Cred], top: &str, gateway: &str) -> String {
    common::config_toml(sim, &["default"], creds, top, "", gateway)
}

// ---------------------------------------------------------------------------
// A recording client: every status, header and body received is kept so a
// test can check at its end that no secret ever came back.

#[derive(Debug)]
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// Content deltas of an SSE body, and whether it ended with `[DONE]`.
    fn sse_text(&self) -> (String, bool) {
        let mut text = String::new();
        let mut done = false;
        for line in self.text().lines() {
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                continue;
            }
            let v: Value = serde_json::from_str(data).expect("SSE event is JSON");
            assert!(v.get("error").is_none(), "error event: {v}");
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(t);
            }
        }
        (text, done)
    }
}

struct Client {
    http: reqwest::Client,
    addr: SocketAddr,
    seen: Mutex<Vec<String>>,
}

impl Client {
    fn new(gw: &Running) -> Client {
        Client {
            http: common::client(),
            addr: gw.addr,
            seen: Mutex::new(Vec::new()),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn record(&self, got: &Got) {
        let mut seen = self.seen.lock().unwrap();
        for (k, v) in &got.headers {
            seen.push(format!("{k}: {v}"));
        }
        seen.push(got.text());
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Got {
        let resp = req.send().await.expect("gateway answers");
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.bytes().await.expect("whole body").to_vec();
        let got = Got {
            status,
            headers,
            body,
        };
        self.record(&got);
        got
    }

    async fn get(&self, path: &str) -> Got {
        self.send(self.http.get(self.url(path))).await
    }

    async fn post(&self, path: &str) -> Got {
        self.send(self.http.post(self.url(path))).await
    }

    async fn chat(&self, body: &Value) -> Got {
        self.send(self.http.post(self.url("/v1/chat/completions")).json(body))
            .await
    }

    /// Sends `bytes` as they are (no URL normalisation, any framing) and
    /// reads the answer until the server closes.
    async fn raw(&self, bytes: &[u8]) -> Got {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut buf = Vec::new();
        let read = async {
            let mut chunk = [0u8; 8192];
            loop {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("the gateway answers a raw request and closes");
        let got = parse_raw(&buf);
        self.record(&got);
        got
    }

    async fn pool(&self) -> Value {
        let got = self.get("/admin/pool").await;
        assert_eq!(got.status, 200, "{}", got.text());
        got.json()
    }

    fn assert_no_secrets(&self, secrets: &[&str]) {
        let seen = self.seen.lock().unwrap();
        assert!(!seen.is_empty());
        for s in secrets {
            for item in seen.iter() {
                assert!(
                    !item.contains(s),
                    "a configured secret ({}) came back to the client in: {item}",
                    tokenyard::secret::mask(s)
                );
            }
        }
    }
}

fn parse_raw(buf: &[u8]) -> Got {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&rest[..nl]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .expect("chunk size");
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
            rest = &rest[nl + 2 + size + 2..];
        }
        body = out;
    }
    Got {
        status,
        headers,
        body,
    }
}

/// Checks an error is OpenAI's `{"error":{"message","type","param","code"}}`
/// with the given status and code, and returns the inner object.
fn assert_openai_error(got: &Got, status: u16, code: Option<&str>, case: &str) -> Value {
    assert_eq!(got.status, status, "{case}: {}", got.text());
    assert!(
        got.header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{case}: content-type {:?}",
        got.header("content-type")
    );
    let body = got.json();
    let obj = body.as_object().expect("an object");
    assert_eq!(obj.len(), 1, "{case}: only `error` at the top: {body}");
    let err = body["error"].as_object().expect("error is an object");
    let mut keys: Vec<&str> = err.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "message", "param", "type"], "{case}: {body}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{case}: message is text: {body}"
    );
    assert!(err["type"].is_string(), "{case}: {body}");
    assert!(
        err["param"].is_null() || err["param"].is_string(),
        "{case}: {body}"
    );
    if let Some(code) = code {
        assert_eq!(err["code"], code, "{case}: {body}");
    }
    body["error"].clone()
}

/// The parts of `/admin/pool` that change only when the pool does.
fn pool_view(snap: &Value) -> Value {
    json!({
        "credentials": snap["credentials"],
        "totals": snap["totals"],
        "next": snap["next"],
    })
}

fn cred<'a>(snap: &'a Value, name: &str) -> &'a Value {
    snap["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {snap}"))
}

fn sim_labels(sim: &SimHandle) -> Vec<String> {
    sim.log()
        .into_iter()
        .map(|r| r.label.unwrap_or_default())
        .collect()
}

fn http_request(method: &str, path: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------------------
// Bad requests

/// A bad request: what it is, its bytes, and the status, `code` and
/// `param` of the error it must get.
type BadCase = (
    &'static str,
    Vec<u8>,
    u16,
    Option<&'static str>,
    Option<&'static str>,
);

#[tokio::test]
async fn bad_requests_get_openai_errors_and_never_reach_the_upstream() {
    let sim = sim().await;
    let gw = common::start(config(&toml(&sim, &keys(2), "", "max_body = \"1KiB\""))).await;
    let c = Client::new(&gw);
    let before = pool_view(&c.pool().await);

    let padded = |n: usize| {
        json!({"model": "sim-small", "messages": [{"role": "user", "content": "x".repeat(n)}]})
            .to_string()
            .into_bytes()
    };
    let json_ct = "Content-Type: application/json\r\n";
    let cases: Vec<BadCase> = vec![
        (
            "truncated JSON",
            http_request(
                "POST",
                "/v1/chat/completions",
                json_ct,
                br#"{"model": "sim-small", "messages": ["#,
            ),
            400,
            Some("invalid_json"),
            None,
        ),
        (
            "not JSON at all",
            http_request("POST", "/v1/chat/completions", json_ct, b"hello there"),
            400,
            Some("invalid_json"),
            None,
        ),
        (
            "empty body",
            http_request("POST", "/v1/chat/completions", json_ct, b""),
            400,
            None,
            None,
        ),
        (
            "trailing garbage after the object",
            http_request(
                "POST",
                "/v1/chat/completions",
                json_ct,
                br#"{"model": "sim-small"} trailing"#,
            ),
            400,
            Some("invalid_json"),
            None,
        ),
        (
            "model is a number",
            http_request(
                "POST",
                "/v1/chat/completions",
                json_ct,
                br#"{"model": 5, "messages": []}"#,
            ),
            400,
            None,
            None,
        ),
        (
            "stream is a string",
            http_request(
                "POST",
                "/v1/chat/completions",
                json_ct,
                br#"{"model": "sim-small", "stream": "yes", "messages": []}"#,
            ),
            400,
            None,
            None,
        ),
        (
            "invalid UTF-8 in the model name",
            http_request(
                "POST",
                "/v1/chat/completions",
                json_ct,
                b"{\"model\": \"sim-\xff\xfe\", \"messages\": []}",
            ),
            400,
            None,
            None,
        ),
        (
            "missing model",
            http_request(
                "POST",
                "/v1/chat/completions",
                json_ct,
                br#"{"messages": [{"role": "user", "content": "hi"}]}"#,
            ),
            400,
            None,
            Some("model"),
        ),
        (
            "null model",
            http_request(
                "POST",
                "/v1/chat/completions",
                json_ct,
                br#"{"model": null, "messages": []}"#,
            ),
            400,
            None,
            Some("model"),
        ),
        (
            "empty model",
            http_request(
                "POST",
                "/v1/chat/completions",
                json_ct,
                br#"{"model": "", "messages": []}"#,
            ),
            400,
            None,
            Some("model"),
        ),
        (
            "body over max_body with Content-Length",
            http_request("POST", "/v1/chat/completions", json_ct, &padded(2048)),
            413,
            None,
            None,
        ),
        (
            "unknown model",
            http_request(
                "POST",
                "/v1/chat/completions",
                json_ct,
                br#"{"model": "gpt-nonexistent", "messages": []}"#,
            ),
            404,
            Some("model_not_found"),
            Some("model"),
        ),
        (
            "unknown route under /v1",
            http_request("POST", "/v1/images/generations", json_ct, &padded(10)),
            404,
            None,
            None,
        ),
        (
            "unknown route at the top",
            http_request("GET", "/nothing/here", "", b""),
            404,
            None,
            None,
        ),
        (
            "GET on the chat route",
            http_request("GET", "/v1/chat/completions", "", b""),
            405,
            None,
            None,
        ),
        (
            "DELETE on the models route",
            http_request("DELETE", "/v1/models", "", b""),
            405,
            None,
            None,
        ),
        (
            "POST on healthz",
            http_request("POST", "/healthz", "", b""),
            405,
            None,
            None,
        ),
    ];

    for (case, bytes, status, code, param) in &cases {
        let got = c.raw(bytes).await;
        let err = assert_openai_error(&got, *status, *code, case);
        if let Some(p) = param {
            assert_eq!(err["param"], *p, "{case}: {err}");
        }
    }

    // A body over the limit without Content-Length (chunked) is cut off
    // while it is read.
    let mut chunked =
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\
        Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for piece in padded(3000).chunks(500) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let got = c.raw(&chunked).await;
    assert_openai_error(&got, 413, None, "chunked body over max_body");

    // The same through an ordinary client: the limit holds for a streamed
    // body too.
    let body = padded(4000);
    let stream = futures_util::stream::iter(
        body.chunks(256)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let got = c
        .send(
            c.http
                .post(c.url("/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(stream)),
        )
        .await;
    assert_openai_error(&got, 413, None, "streamed body over max_body (reqwest)");

    // Nothing reached the upstream and the pool is exactly as it was: no
    // attempts, no failures, no 429s, no requests counted.
    assert!(
        sim.log().is_empty(),
        "a bad request reached the sim: {:?}",
        sim.log()
    );
    let after = pool_view(&c.pool().await);
    assert_eq!(after, before, "bad requests left the pool as it was");
    assert_eq!(after["totals"]["requests"], 0);
    assert_eq!(after["totals"]["attempts"], 0);

    // A good request under the same limit goes through: the limit refused
    // the big bodies, not everything.
    let ok = c.chat(&common::chat_body(false, 2)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(sim.log().len(), 1);

    c.assert_no_secrets(ALL_SECRETS);
    gw.stop().await;
}

#[tokio::test]
async fn invalid_utf8_anywhere_and_non_object_bodies_never_reach_the_upstream() {
    let sim = sim().await;
    let gw = common::start(config(&toml(&sim, &keys(2), "", ""))).await;
    let c = Client::new(&gw);
    let before = pool_view(&c.pool().await);
    let json_ct = "Content-Type: application/json\r\n";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "invalid UTF-8 in a message",
            b"{\"model\": \"sim-small\", \"messages\": [{\"role\": \"user\", \"content\": \"caf\xe9 \xff\"}]}"
                .to_vec(),
        ),
        (
            "invalid UTF-8 in an unknown field's name",
            b"{\"model\": \"sim-small\", \"\xc0\xaf\": 1, \"messages\": []}".to_vec(),
        ),
        (
            "a JSON array instead of an object",
            br#"["sim-small", false]"#.to_vec(),
        ),
    ];
    let mut reached = Vec::new();
    for (case, body) in &cases {
        let seen_before = sim.log().len();
        let got = c
            .raw(&http_request("POST", "/v1/chat/completions", json_ct, body))
            .await;
        assert_openai_error(&got, 400, None, case);
        if sim.log().len() > seen_before {
            reached.push(*case);
        }
    }
    assert!(reached.is_empty(), "sent upstream: {reached:?}");
    assert_eq!(pool_view(&c.pool().await), before);
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// Client keys

#[tokio::test]
async fn client_keys_guard_v1_and_leave_healthz_open() {
    let sim = sim().await;
    let top = format!("client_keys = [\"{CLIENT_KEY}\"]");
    let gw = common::start(config(&toml(&sim, &keys(1), &top, ""))).await;
    let c = Client::new(&gw);
    let body = common::chat_body(false, 2);
    let chat = || c.http.post(c.url("/v1/chat/completions")).json(&body);

    let before = pool_view(&c.pool().await);
    let none = c.send(chat()).await;
    assert_openai_error(&none, 401, Some("invalid_api_key"), "no key");
    let models = c.get("/v1/models").await;
    assert_openai_error(&models, 401, Some("invalid_api_key"), "no key on models");

    for (case, req) in [
        ("wrong bearer", chat().bearer_auth("ck-test-123456780")),
        (
            "wrong x-api-key",
            chat().header("x-api-key", "ck-test-12345678"),
        ),
        (
            "key with a suffix",
            chat().bearer_auth(format!("{CLIENT_KEY}0")),
        ),
        ("empty bearer", chat().header("authorization", "Bearer ")),
        (
            "basic scheme",
            chat().header("authorization", format!("Basic {CLIENT_KEY}")),
        ),
        (
            "an upstream key is not a client key",
            chat().bearer_auth(KEY_1),
        ),
    ] {
        let got = c.send(req).await;
        assert_openai_error(&got, 401, Some("invalid_api_key"), case);
    }
    assert!(sim.log().is_empty(), "refused requests never go upstream");
    assert_eq!(pool_view(&c.pool().await), before, "nor touch the pool");

    let ok = c.send(chat().bearer_auth(CLIENT_KEY)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let ok = c.send(chat().header("x-api-key", CLIENT_KEY)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    // The scheme is case-insensitive and spaces around the key do not count.
    let ok = c
        .send(chat().header("authorization", format!("bearer   {CLIENT_KEY}  ")))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let models = c
        .send(c.http.get(c.url("/v1/models")).bearer_auth(CLIENT_KEY))
        .await;
    assert_eq!(models.status, 200);
    assert_eq!(sim.log().len(), 3);
    // The client's key is the gateway's, not the provider's: upstream saw
    // the credential's key (the sim knew who it was).
    assert!(sim_labels(&sim).iter().all(|l| l == "key-1"));

    let health = c.get("/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");

    c.assert_no_secrets(ALL_SECRETS);
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// Admin API guards

#[tokio::test]
async fn admin_api_without_admin_key_is_open_to_loopback_clients() {
    let sim = sim().await;
    let gw = common::start(config(&toml(&sim, &keys(2), "", ""))).await;
    let c = Client::new(&gw);
    let snap = c.pool().await;
    assert_eq!(snap["credentials"].as_array().unwrap().len(), 2);
    let rotated = c.post("/admin/rotate").await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    assert_eq!(rotated.json()["ok"], true);
    let disabled = c.post("/admin/credentials/key-2/disable").await;
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    assert_eq!(gw.pool.state_of("key-2").unwrap().as_str(), "disabled");
    c.assert_no_secrets(ALL_SECRETS);
    gw.stop().await;
}

/// How a socketless test tells the router who the peer is.
#[derive(Clone, Copy)]
enum Peer {
    /// No peer address at all.
    Unknown,
    /// `ConnectInfo`, as `into_make_service_with_connect_info` sets it for
    /// a real connection.
    Connected(SocketAddr),
    /// axum's `MockConnectInfo` layer, meant for exactly these tests.
    Mock(SocketAddr),
}

/// The router alone, as a connection from `peer` would reach it.
fn app_with_peer(cfg: Config, peer: Peer) -> (axum::Router, PoolHandle) {
    let http = tokenyard::upstream::http_client(&cfg.gateway);
    let (pool, _notes) = PoolHandle::new(&cfg, http);
    let state = Arc::new(AppState::new(
        pool.clone(),
        tokio_util::sync::CancellationToken::new(),
    ));
    let app = gateway::router(state);
    let app = match peer {
        Peer::Unknown => app,
        Peer::Connected(p) => app.layer(axum::Extension(ConnectInfo(p))),
        Peer::Mock(p) => app.layer(MockConnectInfo(p)),
    };
    (app, pool)
}

async fn oneshot(app: &axum::Router, req: http::Request<Body>) -> Got {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Got {
        status,
        headers,
        body,
    }
}

fn req(method: &str, uri: &str) -> http::Request<Body> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn admin_api_without_admin_key_refuses_remote_peers() {
    // No sockets: the router with a made-up peer address. The sim URL is
    // never called.
    let sim = sim().await;
    let cfg = config(&toml(&sim, &keys(2), "", ""));
    let remote: SocketAddr = "10.0.0.5:4000".parse().unwrap();
    let (app, pool) = app_with_peer(cfg.clone(), Peer::Connected(remote));

    for (method, uri) in [
        ("GET", "/admin/pool"),
        ("POST", "/admin/rotate"),
        ("POST", "/admin/credentials/key-1/disable"),
        ("POST", "/admin/credentials/key-1/next"),
        ("POST", "/admin/credentials/nope/disable"),
    ] {
        let got = oneshot(&app, req(method, uri)).await;
        let case = format!("{method} {uri} from {remote}");
        assert_openai_error(&got, 403, Some("admin_loopback_only"), &case);
    }
    // A forwarding header is no proof of being local.
    let spoofed = http::Request::builder()
        .method("POST")
        .uri("/admin/credentials/key-1/disable")
        .header("x-forwarded-for", "127.0.0.1")
        .header("x-real-ip", "127.0.0.1")
        .header("forwarded", "for=127.0.0.1")
        .body(Body::empty())
        .unwrap();
    let got = oneshot(&app, spoofed).await;
    assert_openai_error(&got, 403, Some("admin_loopback_only"), "spoofed");
    assert_eq!(pool.state_of("key-1").unwrap().as_str(), "ready");
    assert_eq!(pool.snapshot().count(tokenyard::events::State::Ready), 2);

    // A presented (but unconfigured) admin key changes nothing.
    let with_key = http::Request::builder()
        .uri("/admin/pool")
        .header("x-admin-key", "whatever")
        .body(Body::empty())
        .unwrap();
    assert_eq!(oneshot(&app, with_key).await.status, 403);

    // Without a known peer at all, the guard fails closed.
    let (app, _) = app_with_peer(cfg.clone(), Peer::Unknown);
    assert_eq!(oneshot(&app, req("GET", "/admin/pool")).await.status, 403);

    // The same router with loopback peers serves it, IPv4 and IPv6.
    for peer in ["127.0.0.1:5000", "[::1]:5000"] {
        let (app, pool) = app_with_peer(cfg.clone(), Peer::Connected(peer.parse().unwrap()));
        let got = oneshot(&app, req("GET", "/admin/pool")).await;
        assert_eq!(got.status, 200, "{peer}: {}", got.text());
        assert_eq!(got.json()["credentials"].as_array().unwrap().len(), 2);
        let got = oneshot(&app, req("POST", "/admin/credentials/key-1/disable")).await;
        assert_eq!(got.status, 200, "{peer}: {}", got.text());
        assert_eq!(pool.state_of("key-1").unwrap().as_str(), "disabled");
    }

    // The guard is the admin API's alone: a remote peer still reaches the
    // health check.
    let (app, _) = app_with_peer(cfg, Peer::Connected(remote));
    let got = oneshot(&app, req("GET", "/healthz")).await;
    assert_eq!(got.status, 200);
    assert!(sim.log().is_empty());
}

#[tokio::test]
async fn admin_guard_honours_mock_connect_info() {
    let sim = sim().await;
    let cfg = config(&toml(&sim, &keys(2), "", ""));
    let (app, _) = app_with_peer(cfg.clone(), Peer::Mock("127.0.0.1:5000".parse().unwrap()));
    let got = oneshot(&app, req("GET", "/admin/pool")).await;
    assert_eq!(got.status, 200, "a mocked loopback peer: {}", got.text());
    let (app, _) = app_with_peer(cfg, Peer::Mock("10.0.0.5:4000".parse().unwrap()));
    let got = oneshot(&app, req("GET", "/admin/pool")).await;
    assert_openai_error(&got, 403, Some("admin_loopback_only"), "mocked remote peer");
}

#[tokio::test]
async fn admin_guard_counts_ipv4_mapped_loopback_as_loopback() {
    let sim = sim().await;
    let cfg = config(&toml(&sim, &keys(2), "", ""));
    let peer: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
    let (app, _) = app_with_peer(cfg.clone(), Peer::Connected(peer));
    let got = oneshot(&app, req("GET", "/admin/pool")).await;
    assert_eq!(got.status, 200, "{peer}: {}", got.text());
    // While a mapped remote address stays remote.
    let peer: SocketAddr = "[::ffff:10.0.0.5]:5000".parse().unwrap();
    let (app, _) = app_with_peer(cfg, Peer::Connected(peer));
    assert_eq!(oneshot(&app, req("GET", "/admin/pool")).await.status, 403);
}

#[tokio::test]
async fn admin_key_when_configured_is_required_even_from_loopback() {
    let sim = sim().await;
    let top = format!("admin_key = \"{ADMIN_KEY}\"\nclient_keys = [\"{CLIENT_KEY}\"]");
    let gw = common::start(config(&toml(&sim, &keys(2), &top, ""))).await;
    let c = Client::new(&gw);
    let get = || c.http.get(c.url("/admin/pool"));
    let disable = || c.http.post(c.url("/admin/credentials/key-1/disable"));

    for (case, req) in [
        ("no key", get()),
        ("wrong bearer", get().bearer_auth("adm-fake-surface-wrong")),
        (
            "wrong x-admin-key",
            get().header("x-admin-key", &ADMIN_KEY[..ADMIN_KEY.len() - 1]),
        ),
        ("the client key", get().bearer_auth(CLIENT_KEY)),
        (
            "the client key as x-api-key",
            get().header("x-api-key", CLIENT_KEY),
        ),
        ("no key, command", disable()),
        (
            "wrong key, command",
            disable().header("x-admin-key", "nope"),
        ),
    ] {
        let got = c.send(req).await;
        let err = assert_openai_error(&got, 401, None, case);
        assert!(err["code"].is_string(), "{case}: {err}");
    }
    assert_eq!(
        gw.pool.state_of("key-1").unwrap().as_str(),
        "ready",
        "a refused command did nothing"
    );

    let ok = c.send(get().bearer_auth(ADMIN_KEY)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let ok = c.send(get().header("x-admin-key", ADMIN_KEY)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let ok = c.send(disable().header("x-admin-key", ADMIN_KEY)).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(gw.pool.state_of("key-1").unwrap().as_str(), "disabled");
    // The admin key does not open the client API.
    let chat = c
        .send(
            c.http
                .post(c.url("/v1/chat/completions"))
                .bearer_auth(ADMIN_KEY)
                .json(&common::chat_body(false, 1)),
        )
        .await;
    assert_openai_error(&chat, 401, Some("invalid_api_key"), "admin key on /v1");

    // With an admin key, remote peers may use it too (no sockets).
    let (app, _) = app_with_peer(
        config(&toml(&sim, &keys(2), &top, "")),
        Peer::Connected("10.0.0.5:4000".parse().unwrap()),
    );
    let remote = http::Request::builder()
        .uri("/admin/pool")
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(oneshot(&app, remote).await.status, 200);
    assert_eq!(oneshot(&app, req("GET", "/admin/pool")).await.status, 401);

    assert!(sim.log().is_empty());
    c.assert_no_secrets(ALL_SECRETS);
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// Operator commands

#[tokio::test]
async fn a_disabled_credential_gets_no_traffic_until_enabled() {
    let sim = sim().await;
    let gw = common::start(config(&toml(&sim, &keys(2), "", ""))).await;
    let c = Client::new(&gw);

    let got = c.post("/admin/credentials/key-1/disable").await;
    assert_eq!(got.status, 200, "{}", got.text());
    let body = got.json();
    assert_eq!(body["ok"], true);
    assert_eq!(body["credential"]["name"], "key-1");
    assert_eq!(body["credential"]["state"], "disabled");
    let snap = c.pool().await;
    assert_eq!(cred(&snap, "key-1")["state"], "disabled");
    assert_eq!(cred(&snap, "key-2")["state"], "ready");

    for i in 0..6 {
        let got = c.chat(&common::chat_body(i % 2 == 0, 2)).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.header("x-tokenyard-credential"), Some("key-2"));
    }
    assert_eq!(sim_labels(&sim), vec!["key-2"; 6], "key-1 was never used");
    let snap = c.pool().await;
    assert_eq!(cred(&snap, "key-1")["requests"], 0);
    assert_eq!(
        cred(&snap, "key-1")["state"],
        "disabled",
        "serving does not undo the operator"
    );

    // Disabling twice is harmless; enabling brings it back into rotation.
    assert_eq!(c.post("/admin/credentials/key-1/disable").await.status, 200);
    let got = c.post("/admin/credentials/key-1/enable").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["credential"]["state"], "ready");
    assert_eq!(cred(&c.pool().await, "key-1")["state"], "ready");
    let mut served = Vec::new();
    for _ in 0..4 {
        let got = c.chat(&common::chat_body(false, 1)).await;
        assert_eq!(got.status, 200);
        served.push(got.header("x-tokenyard-credential").unwrap().to_string());
    }
    assert_eq!(
        served.iter().filter(|n| *n == "key-1").count(),
        2,
        "round-robin again: {served:?}"
    );
    assert_eq!(sim_labels(&sim)[6..], served[..]);

    c.assert_no_secrets(ALL_SECRETS);
    gw.stop().await;
}

#[tokio::test]
async fn next_and_rotate_decide_who_serves_the_next_request() {
    let sim = sim().await;
    let gw = common::start(config(&toml(&sim, &keys(3), "", ""))).await;
    let c = Client::new(&gw);
    let serve = || async {
        let got = c.chat(&common::chat_body(false, 1)).await;
        assert_eq!(got.status, 200, "{}", got.text());
        got.header("x-tokenyard-credential").unwrap().to_string()
    };

    assert_eq!(c.pool().await["next"], "key-1");
    // `next` jumps the queue.
    let got = c.post("/admin/credentials/key-3/next").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(c.pool().await["next"], "key-3");
    assert_eq!(serve().await, "key-3");
    // ...once: round-robin carries on after it.
    assert_eq!(serve().await, "key-1");

    // `rotate` skips the one that was next.
    assert_eq!(c.pool().await["next"], "key-2");
    let got = c.post("/admin/rotate").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(
        got.json()["message"].as_str().unwrap().contains("key-3"),
        "{}",
        got.text()
    );
    assert_eq!(c.pool().await["next"], "key-3");
    assert_eq!(serve().await, "key-3");

    // `next` on a disabled credential waits until it is enabled.
    assert_eq!(c.post("/admin/credentials/key-2/disable").await.status, 200);
    assert_eq!(c.post("/admin/credentials/key-2/next").await.status, 200);
    assert_ne!(serve().await, "key-2");
    assert_eq!(c.post("/admin/credentials/key-2/enable").await.status, 200);
    assert_eq!(serve().await, "key-2");

    let labels = sim_labels(&sim);
    assert_eq!(
        labels[..3],
        ["key-3", "key-1", "key-3"],
        "the sim saw the same credentials"
    );
    c.assert_no_secrets(ALL_SECRETS);
    gw.stop().await;
}

#[tokio::test]
async fn unknown_or_hostile_admin_targets_are_404_json_and_change_nothing() {
    let sim = sim().await;
    let gw = common::start(config(&toml(&sim, &keys(2), "", ""))).await;
    let c = Client::new(&gw);
    let before = pool_view(&c.pool().await);

    let got = c.post("/admin/credentials/nope/disable").await;
    assert_openai_error(&got, 404, Some("unknown_credential"), "unknown credential");
    let got = c.post("/admin/credentials/key-1/explode").await;
    assert_openai_error(&got, 404, Some("unknown_action"), "unknown action");
    let got = c.post("/admin/credentials/key-1").await;
    assert_openai_error(&got, 404, None, "no action");
    let got = c.get("/admin/credentials/key-1/disable").await;
    assert_openai_error(&got, 405, None, "GET on a command");
    let got = c.get("/admin/rotate").await;
    assert_openai_error(&got, 405, None, "GET on rotate");

    let long = "k".repeat(4000);
    let hostile = [
        // Raw, so nothing on the client side normalises the dots away.
        "/admin/credentials/../key-1/disable".to_string(),
        "/admin/credentials/../../admin/rotate".to_string(),
        "/admin/credentials/..%2fkey-1/disable".to_string(),
        "/admin/credentials/%2e%2e%2fkey-1/disable".to_string(),
        "/admin/credentials/%2E%2E%2Fkey-1/disable".to_string(),
        "/admin/credentials/key-1%2f..%2fkey-2/disable".to_string(),
        "/admin/credentials/key-1%00/disable".to_string(),
        "/admin/credentials/%6bey-1%2f/disable".to_string(),
        "/admin/credentials/key-1%2fdisable/disable".to_string(),
        format!("/admin/credentials/{long}/disable"),
        format!("/admin/credentials/key-1/{long}"),
    ];
    for path in &hostile {
        let got = c
            .raw(&http_request("POST", path, "Content-Length: 0\r\n", b""))
            .await;
        let shown: String = path.chars().take(60).collect();
        assert_openai_error(&got, 404, None, &shown);
        assert!(got.body.len() < 2000, "{shown}: the error echoes the name");
    }

    assert_eq!(pool_view(&c.pool().await), before, "the pool is as it was");
    assert!(sim.log().is_empty());
    c.assert_no_secrets(ALL_SECRETS);
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// Passthrough

fn assert_no_upstream_rate_headers(got: &Got, case: &str) {
    let leaked: Vec<&String> = got
        .headers
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("x-ratelimit-") || k.starts_with("retry-after"))
        .collect();
    assert!(leaked.is_empty(), "{case}: upstream headers {leaked:?}");
}

#[tokio::test]
async fn responses_carry_route_headers_and_the_upstream_body_but_not_its_rate_headers() {
    let sim = sim().await;
    let gw = common::start(config(&toml(&sim, &keys(3), "", ""))).await;
    let c = Client::new(&gw);
    let body = common::chat_body(false, 3);

    // Plain.
    let got = c.chat(&body).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_no_upstream_rate_headers(&got, "plain");
    assert_eq!(got.header("x-tokenyard-attempts"), Some("1"));
    assert_eq!(got.header("x-tokenyard-credential"), Some("key-1"));
    assert!(
        got.header("content-type")
            .is_some_and(|v| v.starts_with("application/json"))
    );
    assert!(
        got.header("x-request-id")
            .is_some_and(|v| v.starts_with("req_sim")),
        "other upstream headers pass: {:?}",
        got.headers
    );

    // The body is the upstream's, byte for byte: ask the sim directly with
    // the same body and compare, ids and timestamps aside.
    let direct = common::client()
        .post(format!("{}/chat/completions", sim.base_url()))
        .bearer_auth(KEY_2)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        direct
            .headers()
            .keys()
            .any(|k| k.as_str().starts_with("x-ratelimit-")),
        "the sim does send rate headers (or this test proves nothing)"
    );
    let direct = direct.text().await.unwrap();
    let (gv, dv): (Value, Value) = (got.json(), serde_json::from_str(&direct).unwrap());
    let expected = direct
        .replace(dv["id"].as_str().unwrap(), gv["id"].as_str().unwrap())
        .replace(
            &format!("\"created\":{}", dv["created"]),
            &format!("\"created\":{}", gv["created"]),
        );
    assert_eq!(got.text(), expected);
    assert_eq!(
        gv["choices"][0]["message"]["content"],
        common::expected_text(3)
    );

    // Streaming.
    let got = c.chat(&common::chat_body(true, 4)).await;
    assert_eq!(got.status, 200);
    assert_no_upstream_rate_headers(&got, "stream");
    assert_eq!(got.header("x-tokenyard-attempts"), Some("1"));
    assert_eq!(got.header("x-tokenyard-credential"), Some("key-2"));
    assert!(
        got.header("content-type")
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );
    let (text, done) = got.sse_text();
    assert_eq!(text, common::expected_text(4));
    assert!(done);
    // Byte for byte too, event framing included.
    let direct = common::client()
        .post(format!("{}/chat/completions", sim.base_url()))
        .bearer_auth(KEY_3)
        .json(&common::chat_body(true, 4))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let first = |sse: &str| -> Value {
        let line = sse.lines().next().unwrap();
        serde_json::from_str(line.strip_prefix("data: ").unwrap()).unwrap()
    };
    let (gv, dv) = (first(&got.text()), first(&direct));
    let expected = direct
        .replace(dv["id"].as_str().unwrap(), gv["id"].as_str().unwrap())
        .replace(
            &format!("\"created\":{}", dv["created"]),
            &format!("\"created\":{}", gv["created"]),
        );
    assert_eq!(got.text(), expected);

    // A retried request: the attempts count and the credential that finally
    // answered.
    sim.set_fault("key-3", Some(KeyFault::Status(500)));
    let got = c.chat(&body).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("x-tokenyard-attempts"), Some("2"));
    assert_eq!(got.header("x-tokenyard-credential"), Some("key-1"));
    assert_no_upstream_rate_headers(&got, "retried");
    let got = c.chat(&common::chat_body(true, 2)).await;
    assert_eq!(got.header("x-tokenyard-credential"), Some("key-2"));
    let got = c.chat(&common::chat_body(true, 2)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-tokenyard-attempts"), Some("2"));
    assert_eq!(got.header("x-tokenyard-credential"), Some("key-1"));
    assert_no_upstream_rate_headers(&got, "retried stream");

    // A 4xx from upstream (the request's own fault) comes through as is,
    // also without the credential's rate headers.
    sim.set_fault("key-3", None);
    let mut bad = common::chat_body(false, 1);
    bad["max_tokens"] = json!("lots");
    let got = c.chat(&bad).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(got.json()["error"]["param"], "max_tokens");
    assert_no_upstream_rate_headers(&got, "upstream 400");

    c.assert_no_secrets(ALL_SECRETS);
    gw.stop().await;
}

#[tokio::test]
async fn route_headers_can_be_turned_off() {
    let sim = sim().await;
    let gw = common::start(config(&toml(&sim, &keys(2), "", "route_headers = false"))).await;
    let c = Client::new(&gw);
    sim.set_fault("key-1", Some(KeyFault::Status(503)));
    for stream in [false, true] {
        let got = c.chat(&common::chat_body(stream, 2)).await;
        assert_eq!(got.status, 200, "{}", got.text());
        let ours: Vec<&String> = got
            .headers
            .iter()
            .map(|(k, _)| k)
            .filter(|k| k.starts_with("x-tokenyard-"))
            .collect();
        assert!(ours.is_empty(), "stream={stream}: {ours:?}");
        assert_no_upstream_rate_headers(&got, "route headers off");
    }
    c.assert_no_secrets(ALL_SECRETS);
    gw.stop().await;
}

#[tokio::test]
async fn models_lists_the_configured_model_names() {
    let sim = sim().await;
    let text = format!(
        "listen = \"127.0.0.1:0\"\n\
         [[provider]]\nname = \"simprov\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         models = [\"sim-small\", \"sim-large\", \"sim-*\"]\n\
         [[provider]]\nname = \"other\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         models = [\"sim-large\", \"other-model\"]\n\
         [[credential]]\nname = \"key-1\"\nprovider = \"simprov\"\napi_key = \"{KEY_1}\"\n\
         [[credential]]\nname = \"key-2\"\nprovider = \"other\"\napi_key = \"{KEY_2}\"\n",
        sim.base_url(),
        sim.base_url()
    );
    let gw = common::start(config(&text)).await;
    let c = Client::new(&gw);
    let got = c.get("/v1/models").await;
    assert_eq!(got.status, 200, "{}", got.text());
    let body = got.json();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["sim-small", "sim-large", "other-model"],
        "literal names, once each, globs left out: {body}"
    );
    for m in body["data"].as_array().unwrap() {
        assert_eq!(m["object"], "model");
    }
    assert_eq!(body["data"][2]["owned_by"], "other");
    assert!(sim.log().is_empty(), "listing models asks no upstream");

    // The listed models are the ones the gateway serves.
    let mut req = common::chat_body(false, 1);
    req["model"] = json!("sim-large");
    let got = c.chat(&req).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("x-tokenyard-credential"), Some("key-1"));
    c.assert_no_secrets(ALL_SECRETS);
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// Secrets

#[tokio::test]
async fn no_configured_secret_ever_comes_back() {
    let sim = sim().await;
    let mut creds = keys(3);
    creds.push(common::refresh("oauth-1", "default", RT_1));
    let top = format!("client_keys = [\"{CLIENT_KEY}\"]\nadmin_key = \"{ADMIN_KEY}\"");
    let gw = common::start(config(&toml(&sim, &creds, &top, "max_body = \"4KiB\""))).await;
    let c = Client::new(&gw);
    let admin = |r: reqwest::RequestBuilder| r.bearer_auth(ADMIN_KEY);
    let client = |r: reqwest::RequestBuilder| r.bearer_auth(CLIENT_KEY);
    let chat = |body: &Value| client(c.http.post(c.url("/v1/chat/completions"))).json(body);

    // Every credential serves, plain and streaming, including the OAuth one
    // (which refreshes first).
    for i in 0..8 {
        let got = c.send(chat(&common::chat_body(i % 2 == 1, 2))).await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
    let labels = sim_labels(&sim);
    for l in ["key-1", "key-2", "key-3", "oauth-1"] {
        assert!(labels.iter().any(|x| x == l), "{l} served: {labels:?}");
    }
    // Refusals of requests that carry secrets in their headers: none may
    // echo what it was given.
    c.send(
        c.http
            .post(c.url("/v1/chat/completions"))
            .bearer_auth(KEY_1),
    )
    .await;
    c.send(c.http.get(c.url("/v1/models")).header("x-api-key", RT_1))
        .await;
    c.send(
        c.http
            .post(c.url("/v1/chat/completions"))
            .header("authorization", format!("Basic {CLIENT_KEY}")),
    )
    .await;
    c.send(client(c.http.post(c.url("/v1/chat/completions"))).body("{not json"))
        .await;
    c.send(admin(c.http.get(c.url("/admin/pool"))).header("x-admin-key", KEY_1))
        .await;
    c.send(c.http.get(c.url("/admin/pool")).bearer_auth(CLIENT_KEY))
        .await;
    c.send(
        c.http
            .get(c.url("/admin/pool"))
            .header("x-api-key", ADMIN_KEY),
    )
    .await;
    // An upstream that refuses a key (401) and one that breaks (5xx).
    sim.set_fault("key-2", Some(KeyFault::Status(401)));
    sim.set_fault("key-3", Some(KeyFault::Status(500)));
    for i in 0..4 {
        c.send(chat(&common::chat_body(i % 2 == 0, 1))).await;
    }
    // A token endpoint that refuses the refresh token.
    sim.set_token_failure("oauth-1", Some(TokenFailure::InvalidGrant));
    // Every operator command, and the pool after all of it.
    for action in ["disable", "enable", "refresh", "next"] {
        for name in ["key-1", "key-2", "oauth-1"] {
            c.send(admin(
                c.http
                    .post(c.url(&format!("/admin/credentials/{name}/{action}"))),
            ))
            .await;
        }
    }
    c.send(admin(c.http.post(c.url("/admin/rotate")))).await;
    let snap = c.send(admin(c.http.get(c.url("/admin/pool")))).await;
    assert_eq!(snap.status, 200);
    let snap = snap.json();
    // The snapshot shows masked secrets, and only masked ones.
    assert_eq!(cred(&snap, "key-1")["secret"], "…lpha");
    assert_eq!(cred(&snap, "oauth-1")["secret"], "…elta");
    c.send(c.http.get(c.url("/healthz"))).await;
    c.send(client(c.http.get(c.url("/v1/models")))).await;

    c.assert_no_secrets(ALL_SECRETS);
    gw.stop().await;
}

// ---------------------------------------------------------------------------
// Protocols

/// The accept loop tells HTTP/2 (prior knowledge) from HTTP/1 by peeking at
/// the first bytes: both are served, also when a client trickles the start
/// of its request ("P", then the rest), which could begin either.
#[tokio::test]
async fn http2_with_prior_knowledge_and_a_trickled_http1_request_are_both_served() {
    let sim = sim().await;
    let gw = common::start(config(&toml(&sim, &keys(1), "", ""))).await;
    let body = json!({"model": "sim-small", "messages": [{"role": "user", "content": "hi"}]});

    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(format!("http://{}/v1/chat/completions", gw.addr))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);

    let request = http_request(
        "POST",
        "/v1/chat/completions",
        "Content-Type: application/json\r\n",
        body.to_string().as_bytes(),
    );
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(&request[..1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    tcp.write_all(&request[1..]).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    gw.stop().await;
}

/// Connections that ask for nothing when the shutdown starts — one that
/// never sent a byte (a client pool's spare) and an idle keep-alive one —
/// are closed at once: neither holds the exit until the header deadline or
/// the grace.
#[tokio::test]
async fn silent_and_idle_connections_do_not_hold_up_shutdown() {
    let sim = sim().await;
    let mut cfg = config(&toml(&sim, &keys(1), "", ""));
    cfg.gateway.shutdown_grace = Duration::from_secs(60);
    cfg.gateway.header_timeout = Duration::from_secs(60);
    let gw = common::start(cfg).await;
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /v1/models HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Let the gateway take the silent one in, then stop.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), gw.stop())
        .await
        .expect("the shutdown finishes with silent and idle connections open");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for (name, tcp) in [("silent", &mut silent), ("idle", &mut idle)] {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(1), tcp.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("the {name} connection is still open"))
            .unwrap();
    }
}
