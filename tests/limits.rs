//! Limits that keep the gateway standing: load shedding (global and per
//! credential) with 503 and `Retry-After` instead of unbounded queues, the
//! total request deadline, and request line and header sizes.

mod common;

use std::time::{Duration, Instant};

use common::{config_toml, key, read_sse, start, start_sim};
use serde_json::Value;
use tokenyard::sim::{Limit, SimConfig, SimHandle};

/// A sim whose streams take about a second: 10 chunks, 100 ms apart.
async fn slow_sim(keys: usize) -> SimHandle {
    start_sim(SimConfig {
        chunks: 10,
        chunk_interval: Duration::from_millis(100),
        ..SimConfig::with_api_keys(keys, Limit::Unlimited)
    })
    .await
}

async fn gateway(
    sim: &SimHandle,
    keys: usize,
    pool: &str,
    gw: &str,
) -> tokenyard::gateway::Running {
    let creds: Vec<_> = ["key-1", "key-2", "key-3"][..keys]
        .iter()
        .zip(["sk-sim-1", "sk-sim-2", "sk-sim-3"])
        .map(|(n, k)| key(n, "main", k))
        .collect();
    let toml = config_toml(sim, &["main"], &creds, "", pool, gw);
    start(common::parse(&toml, &std::env::temp_dir())).await
}

fn body(stream: bool) -> Value {
    common::chat_body(stream, 10)
}

#[tokio::test]
async fn beyond_max_concurrency_requests_are_shed_with_retry_after() {
    let sim = slow_sim(3).await;
    let gw = gateway(&sim, 3, "", "max_concurrency = 2").await;
    let client = common::client();
    // Two streams hold both places until they end.
    let a = common::post_chat(&client, &gw, &body(true)).await;
    let b = common::post_chat(&client, &gw, &body(true)).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));

    let started = Instant::now();
    let shed = common::post_chat(&client, &gw, &body(false)).await;
    assert_eq!(shed.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "shed at once, not queued"
    );
    assert_eq!(shed.headers()["retry-after"], "1");
    let v: Value = shed.json().await.unwrap();
    assert_eq!(v["error"]["code"], "overloaded");

    // When the streams end, their places are free again.
    for s in [a, b] {
        let sse = read_sse(s).await;
        assert!(sse.done && sse.error.is_none());
    }
    let ok = common::post_chat(&client, &gw, &body(false)).await;
    assert_eq!(ok.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn a_credential_at_its_cap_is_passed_over_then_requests_are_shed() {
    let sim = slow_sim(2).await;
    let gw = gateway(&sim, 2, "max_in_flight = 1", "").await;
    let client = common::client();
    let a = common::post_chat(&client, &gw, &body(true)).await;
    // key-1 is busy: the second request goes to key-2.
    let b = common::post_chat(&client, &gw, &body(true)).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert_ne!(
        a.headers()["x-tokenyard-credential"],
        b.headers()["x-tokenyard-credential"]
    );
    // Both at their cap: shed, not queued, and no credential is blamed.
    let shed = common::post_chat(&client, &gw, &body(false)).await;
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    let v: Value = shed.json().await.unwrap();
    assert_eq!(v["error"]["code"], "credentials_busy");
    for s in [a, b] {
        assert!(read_sse(s).await.done);
    }
    let snap = gw.pool.snapshot();
    assert!(
        snap.credentials
            .iter()
            .all(|c| c.failures == 0 && c.in_flight == 0)
    );
    assert_eq!(
        common::post_chat(&client, &gw, &body(false)).await.status(),
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_request_deadline_bounds_waits_and_streams() {
    let sim = start_sim(SimConfig {
        latency: Duration::from_secs(3),
        ..SimConfig::with_api_keys(1, Limit::Unlimited)
    })
    .await;
    let gw = gateway(&sim, 1, "", "request_timeout = \"400ms\"").await;
    let client = common::client();
    let started = Instant::now();
    let resp = common::post_chat(&client, &gw, &body(false)).await;
    assert_eq!(resp.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "request_timeout");
    gw.stop().await;

    // A stream past the deadline ends with an error event, not a hang.
    let sim = slow_sim(1).await;
    let gw = gateway(&sim, 1, "", "request_timeout = \"450ms\"").await;
    let started = Instant::now();
    let resp = common::post_chat(&client, &gw, &body(true)).await;
    assert_eq!(resp.status(), 200);
    let sse = read_sse(resp).await;
    assert!(started.elapsed() < Duration::from_millis(900));
    let err = sse.error.expect("an error event at the deadline");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deadline"),
        "{err}"
    );
    assert!(sse.done, "[DONE] follows the error event");
    assert!(!sse.text.is_empty() && sse.text.len() < common::expected_text(10).len());
    gw.stop().await;
}

#[tokio::test]
async fn oversized_urls_and_headers_get_414_and_431_in_the_clients_format() {
    let sim = slow_sim(1).await;
    let gw = gateway(
        &sim,
        1,
        "",
        "max_uri_bytes = 256\nmax_header_bytes = \"1KiB\"",
    )
    .await;
    let client = common::client();
    let long = format!("http://{}/v1/chat/completions?{}", gw.addr, "x".repeat(300));
    let resp = client.post(long).json(&body(false)).send().await.unwrap();
    assert_eq!(resp.status(), 414);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "uri_too_long");

    let resp = client
        .post(format!("http://{}/v1/messages", gw.addr))
        .header("x-padding", "p".repeat(2000))
        .json(&serde_json::json!({"model": "sim-small", "max_tokens": 1, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error", "Anthropic's shape on /v1/messages");
    assert_eq!(v["error"]["type"], "invalid_request_error");

    assert!(sim.log().is_empty(), "nothing reached the provider");
    assert_eq!(
        common::post_chat(&client, &gw, &body(false)).await.status(),
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_slow_loris_body_gets_408_and_does_not_hold_the_gateway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = slow_sim(1).await;
    let gw = gateway(&sim, 1, "", "body_timeout = \"300ms\"").await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();
    // Meanwhile other clients are served.
    let ok = common::post_chat(&common::client(), &gw, &body(false)).await;
    assert_eq!(ok.status(), 200);
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(2));
    gw.stop().await;
}

/// Reads one HTTP/1.1 answer with a `content-length` from `tcp`: its
/// status, or `None` when the connection closed first.
async fn read_answer(tcp: &mut tokio::net::TcpStream) -> Option<u16> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("a whole answer has a content-length");
            if buf.len() >= end + 4 + len {
                return head.get(9..12).and_then(|s| s.parse().ok());
            }
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn slow_request_heads_and_idle_connections_are_closed_at_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = slow_sim(1).await;
    let gw = gateway(&sim, 1, "", "header_timeout = \"400ms\"").await;
    let request = {
        let body = body(false).to_string();
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };

    // A head trickled a byte every 50 ms (it would take seconds): closed at
    // the deadline, however busy the client looks.
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let head = b"POST /v1/chat/completions HTTP/1.1\r\nx-slow: ".to_vec();
        for b in head.into_iter().chain(std::iter::repeat_n(b'a', 100)) {
            if wr.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut rest)).await;
    let took = started.elapsed();
    assert!(
        closed.is_ok(),
        "a trickled head held the connection for 5 s"
    );
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(1500),
        "closed after {took:?}, not at the 400 ms deadline"
    );
    trickle.abort();

    // Keep-alive: a second request inside the deadline is served on the
    // same connection; an idle one is closed once the deadline passes.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut tcp).await, Some(200));
    tokio::time::sleep(Duration::from_millis(200)).await;
    tcp.write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut tcp).await, Some(200));
    let idle = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "an idle keep-alive connection stayed open 5 s"
    );
    assert!(
        idle.elapsed() >= Duration::from_millis(350),
        "{:?}",
        idle.elapsed()
    );

    // The deadline is for heads only: a stream of about a second, longer
    // than it, arrives whole.
    let resp = common::post_chat(&common::client(), &gw, &body(true)).await;
    assert_eq!(resp.status(), 200);
    let sse = read_sse(resp).await;
    assert!(sse.done && sse.error.is_none());
    assert_eq!(sse.text, common::expected_text(10));
    gw.stop().await;
}

#[tokio::test]
async fn deeply_nested_json_is_a_clear_400() {
    let sim = slow_sim(1).await;
    let gw = gateway(&sim, 1, "", "").await;
    let nested = format!(
        "{{\"model\":\"sim-small\",\"messages\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    for path in ["chat/completions", "messages"] {
        let resp = common::client()
            .post(format!("http://{}/v1/{path}", gw.addr))
            .header("content-type", "application/json")
            .body(nested.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let v: Value = resp.json().await.unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("deeper than 64"), "{v}");
    }
    assert!(sim.log().is_empty());
    gw.stop().await;
}

#[tokio::test]
async fn whole_answers_keep_their_content_length() {
    let sim = slow_sim(1).await;
    let gw = gateway(&sim, 1, "", "").await;
    let resp = common::post_chat(&common::client(), &gw, &body(false)).await;
    assert_eq!(resp.status(), 200);
    let len: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().len(), len);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_does_not_wait_on_a_failed_credentials_running_probe() {
    // An upstream that accepts connections and never answers: attempts time
    // out, the credential fails, and its probe hangs for the probe timeout.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = hole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = hole.accept().await {
            conns.push(c);
        }
    });
    let toml = format!(
        "listen = \"127.0.0.1:0\"\n[pool]\nmax_failures = 1\nprobe_interval = \"200ms\"\n\
         [gateway]\nfirst_byte_timeout = \"200ms\"\n\
         [[provider]]\nname = \"hole\"\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nmodels = [\"sim-small\"]\n\
         [[credential]]\nname = \"only\"\napi_key = \"sk-fake-hole-not-a-real-key\"\n"
    );
    let gw = start(common::parse(&toml, &std::env::temp_dir())).await;
    let client = common::client();
    let first = common::post_chat(&client, &gw, &body(false)).await;
    assert!(
        first.status().is_server_error(),
        "the first attempt times out: {}",
        first.status()
    );
    // Let the probe start (and hang), then ask again: the answer must come
    // at once, not when the probe gives up.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    let second = common::post_chat(&client, &gw, &body(false)).await;
    let took = started.elapsed();
    assert_eq!(second.status(), 503);
    let v: Value = second.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_unavailable", "{v}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    gw.stop().await;
    held.abort();
}

/// A burst of clients connecting while the accept loop is busy waits in the
/// kernel's accept queue, not in one-second SYN retransmits: tokenyard
/// listens with a deeper queue than tokio's default of 1,024. Nothing
/// accepts here, so every connection that completes is queued.
#[tokio::test]
async fn a_burst_of_connections_is_queued_not_dropped() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const BURST: usize = 1500;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = (BURST as u64 + 512).max(soft);
    if somaxconn <= BURST || hard < want {
        eprintln!(
            "skipped: net.core.somaxconn is {somaxconn} and the open-file limit {hard}; \
             a burst of {BURST} cannot be shown"
        );
        return;
    }
    setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap();

    let listener = tokenyard::gateway::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let connects = (0..BURST).map(|_| {
        tokio::time::timeout(
            Duration::from_millis(800),
            tokio::net::TcpStream::connect(addr),
        )
    });
    let results = futures_util::future::join_all(connects).await;
    let queued = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    assert_eq!(
        queued, BURST,
        "only {queued} of {BURST} connections completed within 800 ms; the rest waited \
         for a SYN retransmit"
    );
    drop(listener);
}
