//! The upstream every contender is measured against: a hand-written
//! HTTP/1.1 server on tokio's `TcpStream` that plays an OpenAI-compatible
//! provider with three keys and does as little work per request as it can,
//! so the gateway in front of it is what the numbers are about.
//!
//! It answers any method on any path ending in `/chat/completions` (so
//! every peer's URL shape works):
//! - a known `Authorization: Bearer` key: 200 with a fixed completion, or,
//!   for `"stream": true`, one role chunk and [`CHUNKS`] content chunks
//!   every [`CHUNK_INTERVAL`], each stamped with when it was due and when it
//!   left (µs since [`epoch`]), so a client in this process can tell how
//!   late a chunk reached it and whose fault that was;
//! - a body whose message contains `failover`, on the third key: 429 with
//!   `retry-after: 0` for three of every five such requests (see
//!   [`Upstream::failover_429`]);
//! - anything else: 401 (unknown key) or 404.
//!
//! The server: one task per connection, `TCP_NODELAY`, keep-alive; a read
//! and a write buffer per connection, reused. Every complete request in the
//! read buffer is answered (pipelining) and those answers leave in one
//! write. Request bodies come by `Content-Length` or `Transfer-Encoding:
//! chunked` (with `Expect: 100-continue`); HTTP/1.0 closes unless it asks for
//! keep-alive; `Connection: close` closes. Anything it cannot parse gets a
//! 400 (431, 413, 501) saying what was wrong, and the connection closes.
//!
//! It replaced a minimal hyper server: flat out on the two-core bench
//! machine that cost about 6.9 µs of CPU per request, this one about 6.1.
//! Most of either is the kernel's loopback TCP path (the send alone, which
//! also does the receiving socket's work, is over half; sleeping and waking
//! up about a sixth), so a leaner server can only save what user space
//! spent. [`super::workloads::choose_upstream`] prints this one's figure
//! next to the sim's on every run.

use std::collections::HashSet;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
const NOT_FOUND: &str = r#"{"error":{"message":"no such route"}}"#;
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

/// What the upstream answers one request.
enum Reply {
    /// This status and JSON body; a 429 also carries `retry-after: 0`.
    Json(u16, &'static str),
    /// 200 `text/event-stream`: see [`Conn::stream`].
    Stream,
}

/// The answer to a whole request: `authorization` is the raw header value.
fn answer(state: &Upstream, path: &[u8], authorization: Option<&[u8]>, body: &[u8]) -> Reply {
    if !path.ends_with(b"/chat/completions") {
        return Reply::Json(404, NOT_FOUND);
    }
    // Raw bytes: anything but visible ASCII fails to match a key, as it
    // failed hyper's `to_str` (control bytes were refused with the head).
    let key = authorization
        .and_then(|v| v.strip_prefix(b"Bearer "))
        .and_then(|k| KEYS.iter().position(|key| key.as_bytes() == k.trim_ascii()));
    let Some(key) = key else {
        state.unauthorized.fetch_add(1, Ordering::Relaxed);
        return Reply::Json(401, UNAUTHORIZED);
    };
    state.per_key[key].fetch_add(1, Ordering::Relaxed);
    if key == 2 && find(body, b"failover").is_some() && state.failover_429() {
        if let Some(id) = request_id(body) {
            state.rate_limited.lock().unwrap().insert(id);
        }
        return Reply::Json(429, RATE_LIMITED);
    }
    if wants_stream(body) {
        return Reply::Stream;
    }
    Reply::Json(200, COMPLETION)
}

/// Binds `addr` and serves on the current runtime until the process ends.
pub async fn start(addr: SocketAddr) -> io::Result<(SocketAddr, Arc<Upstream>)> {
    // The same deep accept queue as tokenyard's: with tokio's default of
    // 1,024, the 5,000-stream level overflowed it and streams started a
    // second late, waiting for a SYN retransmit.
    let listener = tokenyard::gateway::bind(addr)?;
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
            // An error is the client's doing (reset, gone): nothing to tell.
            tokio::spawn(serve(tcp, shared.clone()));
        }
    });
    Ok((addr, state))
}

/// Bytes a request head may take; no contender sends more than a few hundred.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes a request body may take.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Free space the read buffer has before each read: a read that fills less
/// than all of it tells tokio the socket is drained, which saves the
/// syscall that would only say "would block".
const READ_SPACE: usize = 4096;

/// One connection and its buffers, kept from request to request.
struct Conn {
    tcp: TcpStream,
    /// Bytes read; `buf[..done]` are answered, the rest wait for their turn
    /// or for the rest of their request.
    buf: Vec<u8>,
    done: usize,
    /// Answers not yet written: those of every request answerable from
    /// `buf` go out in one write.
    out: Vec<u8>,
    /// The decoded body of a chunked request; later a stream chunk being
    /// framed.
    scratch: Vec<u8>,
}

/// How one answer goes on the wire (by default: HTTP/1.1, then close).
#[derive(Clone, Copy, Default)]
struct Wire {
    http10: bool,
    /// Another request may follow on this connection.
    keep_alive: bool,
}

async fn serve(tcp: TcpStream, state: Arc<Upstream>) -> io::Result<()> {
    let mut c = Conn {
        tcp,
        buf: Vec::with_capacity(READ_SPACE),
        done: 0,
        out: Vec::with_capacity(1024),
        scratch: Vec::new(),
    };
    // `100 Continue` goes once per request, however many reads its body takes.
    let mut continued = false;
    loop {
        let (reply, mut wire) = match parse(&c.buf[c.done..], &mut c.scratch) {
            Ok(Parse::Request(req)) => {
                let reply = answer(&state, req.path, req.authorization, req.body);
                c.done += req.used;
                (reply, req.wire)
            }
            Ok(Parse::Partial(need, expects_continue)) => {
                if expects_continue && !continued {
                    c.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    continued = true;
                }
                c.flush().await?;
                if !c.fill(need).await? {
                    return Ok(());
                }
                continue;
            }
            Err((status, what)) => {
                let body = format!(
                    r#"{{"error":{{"message":"{what} (bench upstream)","type":"invalid_request_error","param":null,"code":null}}}}"#
                );
                render(&mut c.out, status, body.as_bytes(), Wire::default());
                c.flush().await?;
                return c.close().await;
            }
        };
        continued = false;
        match reply {
            Reply::Json(status, body) => render(&mut c.out, status, body.as_bytes(), wire),
            Reply::Stream => {
                // HTTP/1.0 has no chunks: the body ends with the connection.
                wire.keep_alive &= !wire.http10;
                c.stream(wire).await?;
            }
        }
        if !wire.keep_alive {
            c.flush().await?;
            return c.close().await;
        }
    }
}

impl Conn {
    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.tcp.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Drops the answered bytes and reads once, with room for `need` bytes
    /// in all. False at end of stream.
    async fn fill(&mut self, need: usize) -> io::Result<bool> {
        if self.done == self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..self.done);
        }
        self.done = 0;
        self.buf
            .reserve(need.saturating_sub(self.buf.len()).max(READ_SPACE));
        Ok(self.tcp.read_buf(&mut self.buf).await? > 0)
    }

    /// FIN after the last answer, then whatever the client still sends is
    /// read and dropped for a moment: closing with unread bytes would make
    /// the kernel send a reset, which can destroy the answer in flight.
    async fn close(mut self) -> io::Result<()> {
        self.tcp.shutdown().await?;
        let drain = async {
            loop {
                self.buf.clear();
                if self.tcp.read_buf(&mut self.buf).await? == 0 {
                    return io::Result::Ok(());
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        Ok(())
    }

    /// The head and role chunk at once, then content chunk `i` when
    /// `start + i × interval` comes (never earlier; a late one goes as soon
    /// as it can, and says so in its stamp), then the finish chunk and
    /// `[DONE]`. Chunked, except to HTTP/1.0, which reads to the close.
    async fn stream(&mut self, wire: Wire) -> io::Result<()> {
        let start = tokio::time::Instant::now();
        let chunked = !wire.http10;
        head(&mut self.out, 200, "text/event-stream", wire);
        self.out.extend_from_slice(b"cache-control: no-cache\r\n");
        if chunked {
            self.out
                .extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
        frame(&mut self.out, ROLE_CHUNK.as_bytes(), chunked);
        for i in 1..=CHUNKS {
            let due = start + CHUNK_INTERVAL * i as u32;
            // Chunks already due (this stream fell behind) go out together:
            // one write, not one each, when the machine is short of time.
            if due > tokio::time::Instant::now() {
                self.flush().await?;
                tokio::time::sleep_until(due).await;
            }
            let sent = micros_since_epoch(Instant::now());
            self.scratch.clear();
            content_chunk(&mut self.scratch, micros_since_epoch(due.into_std()), sent);
            frame(&mut self.out, &self.scratch, chunked);
        }
        frame(&mut self.out, LAST_CHUNK.as_bytes(), chunked);
        if chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush().await
    }
}

/// One whole answer with `content-length` into `out`.
fn render(out: &mut Vec<u8>, status: u16, body: &[u8], wire: Wire) {
    head(out, status, "application/json", wire);
    let _ = write!(out, "content-length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
}

/// The status line and the headers every answer has, up to the caller's
/// own headers and the empty line.
fn head(out: &mut Vec<u8>, status: u16, content_type: &str, wire: Wire) {
    out.extend_from_slice(if wire.http10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(match status {
        200 => b"200 OK".as_slice(),
        401 => b"401 Unauthorized",
        404 => b"404 Not Found",
        413 => b"413 Payload Too Large",
        429 => b"429 Too Many Requests\r\nretry-after: 0",
        431 => b"431 Request Header Fields Too Large",
        501 => b"501 Not Implemented",
        _ => b"400 Bad Request",
    });
    out.extend_from_slice(b"\r\ncontent-type: ");
    out.extend_from_slice(content_type.as_bytes());
    // Said only where it differs from the version's default.
    out.extend_from_slice(match (wire.http10, wire.keep_alive) {
        (false, false) => b"\r\nconnection: close\r\n".as_slice(),
        (true, true) => b"\r\nconnection: keep-alive\r\n",
        _ => b"\r\n",
    });
}

/// `data` as one piece of a chunked body, or as it is.
fn frame(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if chunked {
        let _ = write!(out, "{:x}\r\n", data.len());
    }
    out.extend_from_slice(data);
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
}

fn content_chunk(out: &mut Vec<u8>, due: u64, sent: u64) {
    let _ = write!(
        out,
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"due={due} sent={sent} \"}},\"finish_reason\":null}}]}}\n\n"
    );
}

/// A complete request at the start of the buffer.
struct Parsed<'a> {
    path: &'a [u8],
    authorization: Option<&'a [u8]>,
    body: &'a [u8],
    wire: Wire,
    /// Bytes of the buffer it took, head and body.
    used: usize,
}

enum Parse<'a> {
    Request(Parsed<'a>),
    /// More bytes needed: this many in all at least, and whether the head
    /// is in and asked for `100 Continue` before its body.
    Partial(usize, bool),
}

/// Why a request cannot be answered: the status and what was wrong.
type Bad = (u16, &'static str);

/// The request at the start of `buf`, if it is all there; a chunked body is
/// decoded into `scratch`.
fn parse<'a>(buf: &'a [u8], scratch: &'a mut Vec<u8>) -> Result<Parse<'a>, Bad> {
    let head_partial = || {
        if buf.len() > MAX_HEAD {
            Err((431, "request head over 64 KiB"))
        } else {
            Ok(Parse::Partial(buf.len() + 1, false))
        }
    };
    let mut lines = Lines { buf, at: 0 };
    // Empty lines before a request line are allowed (RFC 9112 §2.2).
    let request_line = loop {
        match lines.next() {
            None => return head_partial(),
            Some([]) => continue,
            Some(line) => break line,
        }
    };
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err((400, "malformed request line"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err((400, "malformed method"));
    }
    if target.is_empty() || target.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err((400, "malformed request target"));
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err((400, "not HTTP/1.1 or HTTP/1.0")),
    };
    let mut authorization = None;
    let mut content_length: Option<usize> = None;
    let (mut chunked, mut close, mut keep_alive, mut expects_continue) =
        (false, false, false, false);
    loop {
        let line = match lines.next() {
            None => return head_partial(),
            Some([]) => break,
            Some(line) => line,
        };
        let colon = line.iter().position(|&b| b == b':');
        let Some(colon) = colon.filter(|&c| c > 0 && line[..c].iter().all(|&b| is_tchar(b))) else {
            return Err((400, "malformed header line"));
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if value.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err((400, "control character in a header value"));
        }
        if name.eq_ignore_ascii_case(b"authorization") {
            authorization.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = number(value, 10).ok_or((400, "malformed content-length"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err((400, "conflicting content-length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if !coding.eq_ignore_ascii_case(b"chunked") {
                    return Err((501, "transfer-encoding other than chunked"));
                }
                if chunked {
                    return Err((400, "chunked applied twice"));
                }
                chunked = true;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expects_continue = !http10 && value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    let head = lines.at;
    if head > MAX_HEAD {
        return Err((431, "request head over 64 KiB"));
    }
    let rest = &buf[head..];
    // Content-Length next to chunked may be a smuggling attempt: answer by
    // chunked, then close (RFC 9112 §6.3).
    let smuggling = chunked && content_length.is_some();
    let wire = Wire {
        http10,
        keep_alive: !close && !smuggling && (keep_alive || !http10),
    };
    let (body, used): (&'a [u8], usize) = if chunked {
        match dechunk(rest, scratch)? {
            Some(n) => (scratch, head + n),
            None if rest.len() > 2 * MAX_BODY => return Err((413, "request body over 16 MiB")),
            None => {
                return Ok(Parse::Partial(buf.len() + 1, expects_continue));
            }
        }
    } else {
        let len = content_length.unwrap_or(0);
        if len > MAX_BODY {
            return Err((413, "request body over 16 MiB"));
        }
        if rest.len() < len {
            return Ok(Parse::Partial(head + len, expects_continue));
        }
        (&rest[..len], head + len)
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    Ok(Parse::Request(Parsed {
        path,
        authorization,
        body,
        wire,
        used,
    }))
}

/// Decodes the chunked body at the start of `buf` into `out`: the bytes it
/// took (trailers included) once it is all there, `None` until then.
fn dechunk(buf: &[u8], out: &mut Vec<u8>) -> Result<Option<usize>, Bad> {
    const BAD: Bad = (400, "malformed chunked body");
    out.clear();
    let mut lines = Lines { buf, at: 0 };
    loop {
        let Some(line) = lines.next() else {
            return Ok(None);
        };
        // Extensions after `;` mean nothing here.
        let digits = line.iter().position(|&b| b == b';').unwrap_or(line.len());
        let size = number(line[..digits].trim_ascii(), 16).ok_or(BAD)?;
        if size == 0 {
            // Trailers, if any, up to an empty line.
            loop {
                match lines.next() {
                    None => return Ok(None),
                    Some([]) => return Ok(Some(lines.at)),
                    Some(_) => {}
                }
            }
        }
        if out.len() + size > MAX_BODY {
            return Err((413, "request body over 16 MiB"));
        }
        let data = lines.at;
        let Some(after) = buf.get(data + size..) else {
            return Ok(None);
        };
        let end = match after {
            [b'\r', b'\n', ..] => 2,
            [b'\n', ..] => 1,
            [] | [b'\r'] => return Ok(None),
            _ => return Err(BAD),
        };
        out.extend_from_slice(&buf[data..data + size]);
        lines.at = data + size + end;
    }
}

/// Lines ending in CRLF or a bare LF, without their ends; stops before a
/// line that has not ended yet. `at` is where the next one starts.
struct Lines<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = &self.buf[self.at..];
        let len = rest.iter().position(|&b| b == b'\n')?;
        self.at += len + 1;
        let line = &rest[..len];
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Digits in `radix`, at most 15 of them (no overflow, no sign).
fn number(digits: &[u8], radix: u32) -> Option<usize> {
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    digits.iter().try_fold(0, |n, &d| {
        Some(n * radix as usize + (d as char).to_digit(radix)? as usize)
    })
}

/// `"stream": true`, however the client spaced it.
fn wants_stream(body: &[u8]) -> bool {
    let Some(at) = find(body, b"\"stream\"") else {
        return false;
    };
    let rest = &body[at + 8..];
    let from = rest
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != b':')
        .unwrap_or(rest.len());
    rest[from..].starts_with(b"true")
}

/// The `N` of the first `req-N` in the body.
pub fn request_id(body: &[u8]) -> Option<u64> {
    number_after(body, b"req-")
}

/// The digits right after the first `tag` in `hay`.
fn number_after(hay: &[u8], tag: &[u8]) -> Option<u64> {
    let at = find(hay, tag)? + tag.len();
    let len = hay[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&hay[at..at + len]).ok()?.parse().ok()
}

/// The first `needle` (not empty) in `hay`; the first byte is checked
/// before the rest is compared.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    (0..=hay.len().checked_sub(needle.len())?)
        .find(|&at| hay[at] == needle[0] && hay[at..].starts_with(needle))
}

/// Reads `due=… sent=…` out of one SSE event, if it is a stamped chunk.
pub fn stamps(event: &[u8]) -> Option<(u64, u64)> {
    Some((
        number_after(event, b"due=")?,
        number_after(event, b"sent=")?,
    ))
}
