//! The gateway's own HTTP/1.1 loop as a client meets it on a raw socket:
//! keep-alive and pipelining, streamed answers in `chunked` framing,
//! `connection: close`, a connection handed to hyper mid-way (a `chunked`
//! request body) that keeps serving, and a client that hangs up taking its
//! request (and the credential's place) with it.

mod common;

use std::time::Duration;

use serde_json::Value;
use tokenyard::sim::{Limit, SimConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn gateway(latency: Duration) -> (tokenyard::gateway::Running, tokenyard::sim::SimHandle) {
    let sim = common::start_sim(SimConfig {
        latency,
        ..SimConfig::with_api_keys(1, Limit::Unlimited)
    })
    .await;
    let creds = [common::key("key-1", "t", "sk-sim-1")];
    let toml = common::config_toml(&sim, &["t"], &creds, "", "max_in_flight = 1", "");
    let gw = common::start(common::parse(&toml, &std::env::temp_dir())).await;
    (gw, sim)
}

fn post(body: &str, extra: &str) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
         {extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn chat(stream: bool) -> String {
    common::chat_body(stream, 3).to_string()
}

/// One answer off the front of `wire`: status, lower-cased head, body
/// (de-chunked), and the rest of `wire`.
fn answer(wire: &[u8]) -> (u16, String, Vec<u8>, &[u8]) {
    let end = wire
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head")
        + 4;
    let head = String::from_utf8_lossy(&wire[..end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let mut rest = &wire[end..];
    let mut body = Vec::new();
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        let len: usize = len.trim().parse().unwrap();
        body.extend_from_slice(&rest[..len]);
        rest = &rest[len..];
    } else if head.contains("transfer-encoding: chunked") {
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
            rest = &rest[line_end + 2..];
            if size == 0 {
                assert_eq!(&rest[..2], b"\r\n", "no trailers");
                rest = &rest[2..];
                break;
            }
            body.extend_from_slice(&rest[..size]);
            assert_eq!(&rest[size..size + 2], b"\r\n");
            rest = &rest[size + 2..];
        }
    } else {
        body.extend_from_slice(rest);
        rest = &[];
    }
    (status, head, body, rest)
}

/// Everything the gateway sends until it closes the connection.
async fn read_all(tcp: &mut TcpStream) -> Vec<u8> {
    let mut wire = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut wire))
        .await
        .expect("the gateway closes the connection")
        .unwrap();
    wire
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (gw, _sim) = gateway(Duration::ZERO).await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    let wire = format!(
        "{}{}GET /v1/models HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
        post(&chat(false), ""),
        post(&chat(true), ""),
    );
    tcp.write_all(wire.as_bytes()).await.unwrap();
    let wire = read_all(&mut tcp).await;

    let (status, head, body, rest) = answer(&wire);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-length: "), "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["object"], "chat.completion");

    let (status, head, body, rest) = answer(rest);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let text = String::from_utf8(body).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    let (status, head, body, rest) = answer(rest);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert!(json["data"].is_array(), "{json}");
    assert!(rest.is_empty());
    gw.stop().await;
}

/// A `chunked` request body is hyper's to read: the connection goes to
/// hyper with what was read of it, and the requests before and after it
/// on the same connection are answered all the same.
#[tokio::test]
async fn a_connection_handed_to_hyper_keeps_serving() {
    let (gw, _sim) = gateway(Duration::ZERO).await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    let body = chat(false);
    let chunked = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    tcp.write_all(post(&body, "").as_bytes()).await.unwrap();
    // The first answer before the rest: this one is the loop's own.
    let mut first = vec![0u8; 12];
    tcp.read_exact(&mut first).await.unwrap();
    assert_eq!(first, b"HTTP/1.1 200");
    let wire = format!("{chunked}{}", post(&body, "connection: close\r\n"));
    tcp.write_all(wire.as_bytes()).await.unwrap();
    let mut wire = first;
    wire.extend(read_all(&mut tcp).await);
    chat_answers(&wire, 3);
    gw.stop().await;
}

/// A request whose client hangs up before its answer is dropped: the
/// credential's place (`max_in_flight = 1`) is free again long before the
/// provider (30 s away) would have answered.
#[tokio::test]
async fn a_client_that_hangs_up_takes_its_request_with_it() {
    let (gw, _sim) = gateway(Duration::from_secs(30)).await;
    let root = format!("http://{}", gw.addr);
    let in_flight = |pool: &Value| -> u64 {
        pool["credentials"]
            .as_array()
            .expect("credentials")
            .iter()
            .map(|c| c["in_flight"].as_u64().unwrap())
            .sum()
    };
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(post(&chat(false), "").as_bytes())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while in_flight(&common::admin_pool(&root).await) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(tcp);
    while in_flight(&common::admin_pool(&root).await) != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.stop().await;
}

/// Most clients write a request's head and body apart: the body that
/// follows its head is waited for and handed to the handler as it comes,
/// and the connection then serves the next request.
#[tokio::test]
async fn a_body_that_follows_its_head_is_read_as_it_comes() {
    let (gw, _sim) = gateway(Duration::ZERO).await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    let request = post(&chat(false), "");
    let (head, body) = request.split_at(request.find("\r\n\r\n").unwrap() + 4);
    let (body_a, body_b) = body.split_at(body.len() / 2);
    for piece in [head, body_a, body_b] {
        tcp.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tcp.write_all(post(&chat(false), "connection: close\r\n").as_bytes())
        .await
        .unwrap();
    let wire = read_all(&mut tcp).await;
    chat_answers(&wire, 2);
    gw.stop().await;
}

/// `wire` holds `n` whole chat completions with status 200, and nothing
/// after them.
fn chat_answers(wire: &[u8], n: usize) {
    let mut rest = wire;
    for i in 0..n {
        let (status, head, body, more) = answer(rest);
        assert_eq!(status, 200, "answer {i}: {head}");
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["object"], "chat.completion", "answer {i}");
        rest = more;
    }
    assert!(rest.is_empty(), "bytes after the last answer");
}
