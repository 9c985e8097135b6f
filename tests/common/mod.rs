//! Shared helpers for the integration tests: a sim and a gateway on
//! 127.0.0.1:0, a config builder, and an SSE reader.
#![allow(dead_code)]

pub mod pty;
pub mod redis;

use std::path::Path;

use serde_json::{Value, json};
use tokenyard::config::Config;
use tokenyard::gateway::{self, Running};
use tokenyard::sim::{self, SimConfig, SimHandle};
use tokio_util::sync::CancellationToken;

/// One credential of a test pool.
pub struct Cred {
    pub name: &'static str,
    pub tier: &'static str,
    /// `Ok(api_key)` or `Err(refresh_token)`.
    pub secret: Result<String, String>,
}

pub fn key(name: &'static str, tier: &'static str, key: &str) -> Cred {
    Cred {
        name,
        tier,
        secret: Ok(key.to_string()),
    }
}

pub fn refresh(name: &'static str, tier: &'static str, rt: &str) -> Cred {
    Cred {
        name,
        tier,
        secret: Err(rt.to_string()),
    }
}

/// A gateway config pointing at `sim`. `extra_pool` lines go under
/// `[pool]`, `extra_top` at the top level, `extra_gateway` under `[gateway]`.
pub fn config_toml(
    sim: &SimHandle,
    tiers: &[&str],
    creds: &[Cred],
    extra_top: &str,
    extra_pool: &str,
    extra_gateway: &str,
) -> String {
    let tiers: Vec<String> = tiers.iter().map(|t| format!("\"{t}\"")).collect();
    let mut t = format!(
        "listen = \"127.0.0.1:0\"\n{extra_top}\n\n[pool]\ntiers = [{}]\n{extra_pool}\n\n[gateway]\n{extra_gateway}\n\n\
         [[provider]]\nname = \"sim\"\nkind = \"openai\"\nbase_url = \"{}\"\nmodels = [\"sim-*\"]\n",
        tiers.join(", "),
        sim.base_url()
    );
    for c in creds {
        let auth = match &c.secret {
            Ok(k) => format!("api_key = \"{k}\""),
            Err(rt) => format!(
                "refresh_token = \"{rt}\"\ntoken_url = \"{}\"",
                sim.token_url()
            ),
        };
        t.push_str(&format!(
            "\n[[credential]]\nname = \"{}\"\ntier = \"{}\"\n{auth}\n",
            c.name, c.tier
        ));
    }
    t
}

/// Parses a test config. Unless the TOML names a `state_file`, state is kept
/// in memory: tests must never share (or touch) the user's default state.
pub fn parse(toml: &str, dir: &Path) -> Config {
    let mut config = Config::parse(toml, "test.toml", dir, &|_| None).expect("test config parses");
    if !toml.contains("state_file") {
        config.state_file = None;
    }
    config
}

/// Starts a gateway on 127.0.0.1:0.
pub async fn start(config: Config) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    gateway::start(config, listener, CancellationToken::new()).unwrap()
}

/// Starts a gateway on `127.0.0.1:port`, a port a stopped gateway just
/// held (retrying the bind briefly).
pub async fn start_on(config: Config, port: u16) -> Running {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("could not bind {addr} again: {e}"),
        }
    };
    gateway::start(config, listener, CancellationToken::new()).unwrap()
}

/// An API-key account allowing `requests` per `window` that says nothing
/// of its limit until it answers 429 (as many OpenAI-compatible servers
/// do), so the gateway meets the 429 itself and must rotate.
pub fn quiet_account(
    label: &str,
    key: &str,
    requests: u32,
    window: std::time::Duration,
) -> sim::SimAccount {
    let mut a = sim::SimAccount::api_key(label, key, sim::Limit::Window { requests, window });
    a.advertise = false;
    a
}

pub async fn start_sim(cfg: SimConfig) -> SimHandle {
    sim::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub fn base(gw: &Running) -> String {
    format!("http://{}/v1", gw.addr)
}

/// The tests' client. It talks only to 127.0.0.1, so it ignores any
/// `HTTP_PROXY` in the environment (reqwest would honour it).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub fn chat_body(stream: bool, pieces: u64) -> Value {
    json!({
        "model": "sim-small",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
        "max_tokens": pieces,
        "some_unknown_field": {"kept": true},
    })
}

pub async fn post_chat(client: &reqwest::Client, gw: &Running, body: &Value) -> reqwest::Response {
    client
        .post(format!("{}/chat/completions", base(gw)))
        .json(body)
        .send()
        .await
        .expect("gateway answers")
}

/// What a client made of an SSE stream.
#[derive(Debug, Default)]
pub struct Sse {
    /// Content deltas in order.
    pub text: String,
    pub events: Vec<Value>,
    pub done: bool,
    pub error: Option<Value>,
    /// The body broke (transport error) before `[DONE]`.
    pub broken: bool,
}

pub async fn read_sse(resp: reqwest::Response) -> Sse {
    let mut out = Sse::default();
    let mut buf = String::new();
    let mut resp = resp;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => buf.push_str(std::str::from_utf8(&c).expect("utf-8 stream")),
            Ok(None) => break,
            Err(_) => {
                out.broken = true;
                break;
            }
        }
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data: ") else {
                    continue;
                };
                if data == "[DONE]" {
                    out.done = true;
                    continue;
                }
                let v: Value = serde_json::from_str(data)
                    .unwrap_or_else(|e| panic!("torn SSE event {data:?}: {e}"));
                if v.get("error").is_some() {
                    out.error = Some(v.clone());
                } else if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                    out.text.push_str(t);
                }
                out.events.push(v);
            }
        }
    }
    assert!(buf.trim().is_empty(), "stream ended mid-event: {buf:?}");
    out
}

/// `"[0][1]…[n-1]"`, what the sim says for `n` pieces.
pub fn expected_text(n: u64) -> String {
    (0..n).map(|i| format!("[{i}]")).collect()
}

/// The real binary, `serve --no-tui` on `cfg` at `trace` log level, with
/// its stdout, stderr and log file kept in `dir` for a secret sweep.
pub struct Traced {
    pub child: tokio::process::Child,
    pub out: std::path::PathBuf,
    pub err: std::path::PathBuf,
    pub log_file: std::path::PathBuf,
}

/// Starts [`Traced`] and waits until `base` answers `/healthz`.
pub async fn spawn_traced(cfg: &Path, dir: &Path, base: &str) -> Traced {
    let (out, err, log_file) = (
        dir.join("stdout"),
        dir.join("stderr"),
        dir.join("trace.log"),
    );
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenyard"))
        .args(["serve", "--no-tui", "--config"])
        .arg(cfg)
        .arg("--log-file")
        .arg(&log_file)
        .env("TOKENYARD_LOG", "trace")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_until_up(base).await;
    Traced {
        child,
        out,
        err,
        log_file,
    }
}

/// Waits (up to 10 s) until the gateway at `base` answers `/healthz`.
pub async fn wait_until_up(base: &str) {
    let client = client();
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the gateway at {base} did not come up");
}

/// The real binary (`serve --no-tui`) with one OpenAI-kind provider at
/// `base_url` serving every model and one credential (`only`, `key`); the
/// proxy variables and `SSL_CERT_DIR` cleared, then `env` set. Waits until
/// it answers; returns the child (killed on drop) and its base URL.
pub async fn spawn_one_key(
    dir: &Path,
    base_url: &str,
    key: &str,
    env: &[(&str, String)],
) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.join("tokenyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nstate_file = {:?}\n\n[pool]\ntiers = [\"primary\"]\n\n\
             [[provider]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\nmodels = [\"*\"]\n\n\
             [[credential]]\nname = \"only\"\ntier = \"primary\"\napi_key = \"{key}\"\n",
            dir.join("state.json").display().to_string(),
        ),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenyard"));
    cmd.args(["serve", "--no-tui", "--config"])
        .arg(&cfg)
        .env_remove("SSL_CERT_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
        cmd.env_remove(var).env_remove(var.to_ascii_lowercase());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&base).await;
    (child, base)
}

/// `GET {root}/metrics` as text (from loopback, which needs no admin key).
pub async fn metrics_text(root: &str) -> String {
    client()
        .get(format!("{root}/metrics"))
        .send()
        .await
        .expect("the gateway answers")
        .text()
        .await
        .expect("a text body")
}

/// `GET {root}/admin/pool` (from loopback, which needs no admin key).
pub async fn admin_pool(root: &str) -> Value {
    client()
        .get(format!("{root}/admin/pool"))
        .send()
        .await
        .expect("the gateway answers")
        .json()
        .await
        .expect("a JSON snapshot")
}
