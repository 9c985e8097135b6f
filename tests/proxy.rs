//! Proxies from the environment, on the real binary: a provider elsewhere
//! is reached through `HTTP_PROXY`, one on loopback directly — the demo's
//! sim and local model servers must work on a machine whose environment
//! names a corporate proxy, whatever `NO_PROXY` says.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use tokenyard::sim::{Limit, SimAccount, SimConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "fake-proxy-key-heron";

/// A plain HTTP proxy that answers every request itself with an OpenAI
/// completion, and reports the request head it got.
async fn proxy() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got).to_string();
                let _ = tx.send(head);
                let body = r#"{"id":"chatcmpl-proxy","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"via the proxy"},"finish_reason":"stop"}]}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    (addr, rx)
}

/// The binary serving `base_url` with `env` set.
async fn gateway(
    dir: &Path,
    base_url: &str,
    env: &[(&str, String)],
) -> (tokio::process::Child, String) {
    common::spawn_one_key(dir, base_url, KEY, env).await
}

async fn ask(base: &str) -> (u16, String) {
    let resp = common::client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&common::chat_body(false, 1))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn a_remote_provider_goes_through_the_environments_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, mut seen) = proxy().await;
    let (_gw, base) = gateway(
        dir.path(),
        "http://provider.example.invalid/v1",
        &[("HTTP_PROXY", format!("http://{proxy}"))],
    )
    .await;
    let (status, body) = ask(&base).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("via the proxy"), "{body}");
    let head = seen.recv().await.unwrap();
    assert_eq!(
        head.lines().next().unwrap(),
        "POST http://provider.example.invalid/v1/chat/completions HTTP/1.1"
    );
    assert!(
        !head.to_ascii_lowercase().contains("proxy-authorization"),
        "no proxy credentials were configured: {head}"
    );
}

/// A proxy URL with credentials: they ride on each request as
/// `Proxy-Authorization`, beside the provider's own key.
#[tokio::test]
async fn a_proxys_credentials_go_to_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, mut seen) = proxy().await;
    let (_gw, base) = gateway(
        dir.path(),
        "http://provider.example.invalid/v1",
        &[("HTTP_PROXY", format!("http://egress:hunter2@{proxy}"))],
    )
    .await;
    let (status, body) = ask(&base).await;
    assert_eq!(status, 200, "{body}");
    let head = seen.recv().await.unwrap().to_ascii_lowercase();
    // "egress:hunter2" in base64.
    assert!(
        head.contains("proxy-authorization: basic zwdyzxnzomh1bnrlcji="),
        "{head}"
    );
    assert!(
        head.contains(&format!("authorization: bearer {KEY}")),
        "{head}"
    );
}

#[tokio::test]
async fn a_provider_on_loopback_is_reached_directly_whatever_no_proxy_says() {
    let sim = common::start_sim(SimConfig {
        accounts: vec![SimAccount::api_key("only", KEY, Limit::Unlimited)],
        ..SimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (proxy, mut seen) = proxy().await;
    let (_gw, base) = gateway(
        dir.path(),
        &sim.base_url(),
        &[
            ("http_proxy", format!("http://{proxy}")),
            ("ALL_PROXY", format!("http://{proxy}")),
            ("NO_PROXY", "example.com".to_string()),
        ],
    )
    .await;
    let (status, body) = ask(&base).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("via the proxy"), "{body}");
    assert!(
        seen.try_recv().is_err(),
        "the request to the sim on loopback went to the proxy"
    );
    assert_eq!(sim.stats().account("only").map(|a| a.ok), Some(1));
}

/// The demo's traffic goes to its own gateway on loopback: a proxy in the
/// environment must not take it (it used to: every request went to the
/// proxy and none completed).
#[tokio::test]
async fn the_demos_traffic_reaches_its_gateway_with_a_proxy_set() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, mut seen) = proxy().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenyard"))
        .args([
            "demo",
            "--no-tui",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "2s",
        ])
        .env("XDG_STATE_HOME", dir.path())
        .env("HTTP_PROXY", format!("http://{proxy}"))
        .env("https_proxy", format!("http://{proxy}"))
        .env("ALL_PROXY", format!("http://{proxy}"))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("traffic: "))
        .unwrap_or_else(|| panic!("a traffic line in {stdout}"));
    let number = |tag: &str| -> u64 {
        let before = line.split(tag).next().unwrap();
        before
            .rsplit(['·', ':'])
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert!(number(" complete and in order") > 0, "{line}");
    assert!(!line.contains("without an answer"), "{line}");
    assert!(seen.try_recv().is_err(), "demo traffic went to the proxy");
}
