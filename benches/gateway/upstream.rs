//! The upstream every contender is measured against: a minimal hyper
//! HTTP/1.1 server that plays an OpenAI-compatible provider with three keys
//! and as little work per request as possible, so the gateway in front of
//! it is what the numbers are about.
//!
//! It answers `POST /v1/chat/completions` (any path ending in
//! `/chat/completions`, so every peer's URL shape works):
//! - a known `Authorization: Bearer` key: 200 with a fixed completion, or,
//!   for `"stream": true`, one role chunk and [`CHUNKS`] content chunks
//!   every [`CHUNK_INTERVAL`], each stamped with when it was due and when it
//!   left (µs since [`epoch`]), so a client in this process can tell how
//!   late a chunk reached it and whose fault that was;
//! - a body whose message contains `failover`, on the third key: 429 with
//!   `retry-after: 0` for three of every five such requests (see
//!   [`Upstream::failover_429`]);
//! - anything else: 401 (unknown key) or 404.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The pool every contender rotates: fake, and obviously so.
pub const KEYS: [&str; 3] = [
    "sk-fake-bench-1-not-a-real-key",
    "sk-fake-bench-2-not-a-real-key",
    "sk-fake-bench-3-not-a-real-key",
];
/// Content chunks of a stream (after the role chunk).
pub const CHUNKS: usize = 64;
pub const CHUNK_INTERVAL: Duration = Duration::from_millis(20);

/// The clock stream stamps are read against; shared by the upstream and the
/// load generator, which live in the same process.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub fn micros_since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_micros() as u64
}

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bench upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}"#;
const RATE_LIMITED: &str = r#"{"error":{"message":"Rate limit reached for requests (bench upstream).","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
const UNAUTHORIZED: &str = r#"{"error":{"message":"Incorrect API key provided (bench upstream).","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
const ROLE_CHUNK: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
const LAST_CHUNK: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

/// What the upstream saw; read by the bench between phases.
#[derive(Default)]
pub struct Upstream {
    /// Chat requests per key (index into [`KEYS`]).
    pub per_key: [AtomicU64; 3],
    pub unauthorized: AtomicU64,
    /// Failover requests the third key has seen, to pick which get a 429.
    failover_seen: AtomicU64,
    /// Request ids (the `req-N` in the message) that got a 429: the
    /// client's ground truth for "was this request retried", whatever the
    /// gateway in front says about itself.
    pub rate_limited: Mutex<HashSet<u64>>,
}

impl Upstream {
    pub fn requests(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.per_key[i].load(Ordering::Relaxed))
    }

    /// Three of every five failover requests on the third key get a 429:
    /// with requests spread evenly over the keys that is a fifth of all of
    /// them. `retry-after: 0` is a real hint ("try again now"), so a gateway
    /// that honours it keeps the key in rotation and the share stays at a
    /// fifth; a gateway that benches the key anyway sees fewer 429s, and
    /// the table shows how many.
    fn failover_429(&self) -> bool {
        self.failover_seen.fetch_add(1, Ordering::Relaxed) % 5 < 3
    }
}

/// Binds `addr` and serves on the current runtime until the process ends.
pub async fn start(addr: SocketAddr) -> std::io::Result<(SocketAddr, Arc<Upstream>)> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Upstream::default());
    let shared = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // Out of descriptors, most likely: back off a little.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let state = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok((addr, state))
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
        .expect("a valid response")
}

async fn handle(
    state: Arc<Upstream>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if !req.uri().path().ends_with("/chat/completions") {
        return Ok(full(
            StatusCode::NOT_FOUND,
            r#"{"error":{"message":"no such route"}}"#,
        ));
    }
    let key = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|k| KEYS.iter().position(|known| *known == k.trim()));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(full(StatusCode::BAD_REQUEST, r#"{"error":{}}"#)),
    };
    let Some(key) = key else {
        state.unauthorized.fetch_add(1, Ordering::Relaxed);
        return Ok(full(StatusCode::UNAUTHORIZED, UNAUTHORIZED));
    };
    state.per_key[key].fetch_add(1, Ordering::Relaxed);
    if key == 2 && contains(&body, b"failover") && state.failover_429() {
        if let Some(id) = request_id(&body) {
            state.rate_limited.lock().unwrap().insert(id);
        }
        let mut resp = full(StatusCode::TOO_MANY_REQUESTS, RATE_LIMITED);
        resp.headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("0"));
        return Ok(resp);
    }
    if wants_stream(&body) {
        return Ok(stream_response());
    }
    Ok(full(StatusCode::OK, COMPLETION))
}

/// `"stream": true`, however the client spaced it.
fn wants_stream(body: &[u8]) -> bool {
    let Some(at) = find(body, b"\"stream\"") else {
        return false;
    };
    let rest = &body[at + 8..];
    let rest: Vec<u8> = rest
        .iter()
        .copied()
        .skip_while(|b| b.is_ascii_whitespace() || *b == b':')
        .take(4)
        .collect();
    rest == b"true"
}

/// The `N` of the first `req-N` in the body.
pub fn request_id(body: &[u8]) -> Option<u64> {
    let at = find(body, b"req-")? + 4;
    let digits: Vec<u8> = body[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// The role chunk at once, then content chunk `i` when `start + i ×
/// interval` comes (never earlier; a late one goes as soon as it can, and
/// says so in its stamp), then the finish chunk and `[DONE]`.
fn stream_response() -> Response<Body> {
    let start = tokio::time::Instant::now();
    let frames = stream::unfold(0usize, move |i| async move {
        let data = match i {
            0 => Bytes::from_static(ROLE_CHUNK.as_bytes()),
            i if i <= CHUNKS => {
                let due = start + CHUNK_INTERVAL * i as u32;
                tokio::time::sleep_until(due).await;
                let sent = micros_since_epoch(Instant::now());
                let due = micros_since_epoch(due.into_std());
                Bytes::from(format!(
                    "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"due={due} sent={sent} \"}},\"finish_reason\":null}}]}}\n\n"
                ))
            }
            i if i == CHUNKS + 1 => Bytes::from_static(LAST_CHUNK.as_bytes()),
            _ => return None,
        };
        Some((Ok::<_, Infallible>(Frame::data(data)), i + 1))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("a valid response")
}

/// Reads `due=… sent=…` out of one SSE event, if it is a stamped chunk.
pub fn stamps(event: &[u8]) -> Option<(u64, u64)> {
    let num = |tag: &[u8]| -> Option<u64> {
        let at = find(event, tag)? + tag.len();
        let digits: Vec<u8> = event[at..]
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        std::str::from_utf8(&digits).ok()?.parse().ok()
    };
    Some((num(b"due=")?, num(b"sent=")?))
}
