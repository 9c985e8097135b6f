//! One HTTP/1.1 exchange at a time on a connection to a provider: the
//! request written in one piece, the answer's head parsed by `httparse`,
//! its body framed by `content-length`, `chunked` or the connection's end.
//!
//! The request's own task drives the connection: no connection task, no
//! channel between the two, and no wake-up to pass each answer across.
//! That was hyper's client connection's way, and a fifth of the gateway's
//! instructions per request went to it (`benches/instructions.sh`).
//!
//! A leaf: bytes, `http`'s types and `httparse`, nothing of tokenyard.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// More header lines than this in an answer is an error (hyper's bound).
const MAX_HEADERS: usize = 100;
/// An answer's head, or a chunked body's trailers, larger than this is an
/// error.
const MAX_HEAD: usize = 64 * 1024;
/// A chunk-size line longer than this is an error.
const MAX_CHUNK_LINE: usize = 1024;
/// Room made in the read buffer before a read.
const READ_CHUNK: usize = 16 * 1024;
/// A body up to this size is copied behind the head and sent with it in
/// one write; a larger one is written after it.
const COALESCE: usize = 16 * 1024;

/// What went wrong in an exchange.
#[derive(Debug)]
pub enum Error {
    /// The socket failed (reset, broken pipe, TLS).
    Io(io::Error),
    /// The provider closed the connection before the answer's head was
    /// whole.
    ClosedBeforeHead,
    /// The provider closed the connection before the body's end.
    ClosedInBody,
    /// The answer is not HTTP/1.x as the RFC frames it.
    Malformed(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::ClosedBeforeHead => {
                f.write_str("the provider closed the connection before answering")
            }
            Error::ClosedInBody => {
                f.write_str("the provider closed the connection before the body's end")
            }
            Error::Malformed(what) => write!(f, "malformed answer: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// A connection between exchanges: the socket and what was read from it
/// but not yet used.
pub struct Connection<I> {
    io: I,
    buf: BytesMut,
}

/// An answer's head, its body still on the connection.
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    /// The answer's headers less the framing ones (`content-length`,
    /// `transfer-encoding`, `connection`, `keep-alive`, `trailer`,
    /// `upgrade`): they describe this hop, which the exchange has dealt
    /// with, and no client is given them.
    pub headers: HeaderMap,
    /// What the framing headers said of the connection's reuse (see
    /// [`reusable`]).
    keep: bool,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Connection<I> {
    pub fn new(io: I) -> Connection<I> {
        Connection {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Whether the provider closed the connection (or sent something
    /// nobody asked for) while it idled. Does not wait: a socket with
    /// nothing to read answers at once, and one whose last read drained it
    /// is not even read (the runtime knows it is empty).
    pub fn broken_while_idle(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        poll_fill(&mut self.io, &mut self.buf, &mut cx).is_ready()
    }

    /// Writes a `POST` to `target` (a path, or the whole URL for a
    /// plain-HTTP proxy) with `host`, `headers` and `body`. The headers'
    /// own `host`, `content-length`, `transfer-encoding` and `connection`,
    /// if any, are left out: the first is `host`, the others follow from
    /// the body. `Err` means the request may not have reached the
    /// provider whole.
    pub async fn write_post(
        &mut self,
        target: &str,
        host: &[u8],
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<(), Error> {
        let mut head = Vec::with_capacity(256 + target.len() + body.len().min(COALESCE));
        head.extend_from_slice(b"POST ");
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        head.extend_from_slice(host);
        head.extend_from_slice(b"\r\n");
        push_header_lines(&mut head, headers, &[header::HOST]);
        head.extend_from_slice(b"content-length: ");
        push_decimal(&mut head, body.len() as u64);
        head.extend_from_slice(b"\r\n\r\n");
        if body.len() <= COALESCE {
            head.extend_from_slice(body);
            self.io.write_all(&head).await?;
        } else {
            self.io.write_all(&head).await?;
            self.io.write_all(body).await?;
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Reads the answer's head (past any `1xx` interim answers) and how
    /// its body is framed.
    pub async fn read_head(&mut self) -> Result<(Head, Framing), Error> {
        loop {
            if let Some(parsed) = parse_head(&mut self.buf)? {
                let (head, framing) = parsed;
                if head.status.is_informational() {
                    if head.status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(Error::Malformed("101 Switching Protocols to a POST"));
                    }
                    continue;
                }
                return Ok((head, framing));
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(Error::Malformed("head larger than 64 KiB"));
            }
            let n = std::future::poll_fn(|cx| poll_fill(&mut self.io, &mut self.buf, cx)).await?;
            if n == 0 {
                return Err(Error::ClosedBeforeHead);
            }
        }
    }

    /// The next piece of the body framed by `framing`; `None` at its end.
    pub fn poll_body(
        &mut self,
        framing: &mut Framing,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Error>>> {
        loop {
            if let Some(step) = framing.take(&mut self.buf) {
                return Poll::Ready(step.transpose());
            }
            if framing.buffered_too_much(self.buf.len()) {
                return Poll::Ready(Some(Err(Error::Malformed(
                    "chunk-size line or trailers too long",
                ))));
            }
            let n = match ready!(poll_fill(&mut self.io, &mut self.buf, cx)) {
                Ok(n) => n,
                Err(e) => return Poll::Ready(Some(Err(Error::Io(e)))),
            };
            if n == 0 {
                return Poll::Ready(framing.closed().map(Err));
            }
        }
    }

    /// Whether nothing beyond the answer has arrived: a provider that
    /// sent more than it framed is not trusted with another request.
    pub fn is_clean(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Reads what the socket has into `buf`; `Ok(0)` at its end.
fn poll_fill<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// `name: value` lines for `headers`, leaving out the framing headers
/// (`content-length`, `transfer-encoding`, `connection`: they follow from
/// the body and the connection) and those in `also_skip`.
pub(crate) fn push_header_lines(out: &mut Vec<u8>, headers: &HeaderMap, also_skip: &[HeaderName]) {
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || also_skip.contains(name)
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// A `content-length` value (or one item of a list of them): digits only,
/// at most 15 of them.
pub(crate) fn length_digits(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 15 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// `n` in hexadecimal, as a chunk's size line has it.
pub(crate) fn push_hex(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// How a body ends, and how much of it is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// The body ends when the connection does.
    UntilClose,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one.
    Trailers,
}

impl Framing {
    /// Whether the body has been read to its end.
    pub fn is_done(&self) -> bool {
        *self == Framing::Done
    }

    /// Whether the connection can carry another exchange once the body
    /// is done.
    fn delimited(&self) -> bool {
        !matches!(self, Framing::UntilClose)
    }

    /// What `buf` yields next: data, the end (`Some(Ok(None))`), an
    /// error, or `None` when more bytes are needed.
    fn take(&mut self, buf: &mut BytesMut) -> Option<Result<Option<Bytes>, Error>> {
        loop {
            match self {
                Framing::Done => return Some(Ok(None)),
                Framing::Length(0) => {
                    *self = Framing::Done;
                    return Some(Ok(None));
                }
                Framing::Length(left) => {
                    let data = split(buf, left)?;
                    if *left == 0 {
                        *self = Framing::Done;
                    }
                    return Some(Ok(Some(data)));
                }
                Framing::UntilClose => {
                    if buf.is_empty() {
                        return None;
                    }
                    return Some(Ok(Some(buf.split().freeze())));
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    let data = split(buf, left)?;
                    if *left == 0 {
                        *self = Framing::Chunked(Chunk::DataEnd);
                    }
                    return Some(Ok(Some(data)));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return None;
                    }
                    if &buf[..2] != b"\r\n" {
                        return Some(Err(Error::Malformed("chunk data longer than its size")));
                    }
                    buf.advance(2);
                    *self = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Size) => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        *self = Framing::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) => return None,
                    Err(_) => return Some(Err(Error::Malformed("bad chunk size"))),
                },
                Framing::Chunked(Chunk::Trailers) => {
                    if buf.len() < 2 {
                        return None;
                    }
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        *self = Framing::Done;
                        return Some(Ok(None));
                    }
                    // Trailers carry nothing the gateway uses: parsed to
                    // find their end, then dropped.
                    let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut lines) {
                        Ok(httparse::Status::Complete((used, _))) => {
                            buf.advance(used);
                            *self = Framing::Done;
                            return Some(Ok(None));
                        }
                        Ok(httparse::Status::Partial) => return None,
                        Err(_) => return Some(Err(Error::Malformed("bad trailers"))),
                    }
                }
            }
        }
    }

    /// Whether `buffered` bytes without a whole chunk-size line or
    /// trailer section is more than a provider would send.
    fn buffered_too_much(&self, buffered: usize) -> bool {
        match self {
            Framing::Chunked(Chunk::Size) => buffered > MAX_CHUNK_LINE,
            Framing::Chunked(Chunk::Trailers) => buffered > MAX_HEAD,
            _ => false,
        }
    }

    /// The connection ended: the body's end, or an error if it was not
    /// over.
    fn closed(&mut self) -> Option<Error> {
        match self {
            Framing::UntilClose | Framing::Done => {
                *self = Framing::Done;
                None
            }
            _ => Some(Error::ClosedInBody),
        }
    }
}

/// Up to `*left` bytes off the front of `buf` (`None` when it is empty),
/// counted off `left`.
fn split(buf: &mut BytesMut, left: &mut u64) -> Option<Bytes> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
    *left -= n as u64;
    Some(buf.split_to(n).freeze())
}

/// Where a header's name and value lie in a head.
pub(crate) struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

/// Where each of `lines` (parsed out of the buffer starting at `base`)
/// lies: offsets, so that the values can be slices of the head once it is
/// taken off the buffer, not copies.
pub(crate) fn spans<'h, 'b: 'h>(
    lines: impl IntoIterator<Item = &'h httparse::Header<'b>>,
    base: *const u8,
) -> Vec<Span> {
    let base = base as usize;
    lines
        .into_iter()
        .map(|h| {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            Span {
                name: (name, name + h.name.len()),
                value: (value, value + h.value.len()),
            }
        })
        .collect()
}

/// The headers at `spans` of `head`, the values sharing its bytes.
pub(crate) fn header_map(head: &Bytes, spans: &[Span]) -> Result<HeaderMap, &'static str> {
    // Room for the few an answer gains on its way (the route headers,
    // `cache-control`) without growing.
    let mut headers = HeaderMap::with_capacity(spans.len() + 4);
    for span in spans {
        let name = HeaderName::from_bytes(&head[span.name.0..span.name.1])
            .map_err(|_| "bad header name")?;
        let value = HeaderValue::from_maybe_shared(head.slice(span.value.0..span.value.1))
            .map_err(|_| "bad header value")?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Parses the head at the front of `buf`, taking it off `buf`, when it is
/// whole; `None` when more bytes are needed.
fn parse_head(buf: &mut BytesMut) -> Result<Option<(Head, Framing)>, Error> {
    if buf.is_empty() {
        return Ok(None);
    }
    let (len, code, minor, spans, hop) = {
        let mut lines = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            &buf[..],
            &mut lines,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::Malformed("more than 100 header lines"));
            }
            Err(_) => return Err(Error::Malformed("not an HTTP/1.x response head")),
        };
        let hop = Hop::read(resp.headers)?;
        let kept = resp.headers.iter().filter(|h| !hop_by_hop(h.name));
        let spans = spans(kept, buf.as_ptr());
        (
            len,
            resp.code.unwrap_or(0),
            resp.version.unwrap_or(1),
            spans,
            hop,
        )
    };
    let head = buf.split_to(len).freeze();
    let status =
        StatusCode::from_u16(code).map_err(|_| Error::Malformed("status code out of range"))?;
    let headers = header_map(&head, &spans).map_err(Error::Malformed)?;
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let framing = hop.framing(status);
    // Both framings at once is a smuggling risk: not reused (RFC 9112
    // §6.3); otherwise `connection` decides, HTTP/1.0 needing keep-alive.
    let keep = !(hop.chunked.is_some() && hop.length.is_some())
        && match version {
            Version::HTTP_10 => hop.keep_alive && !hop.close,
            _ => !hop.close,
        };
    Ok(Some((
        Head {
            status,
            version,
            headers,
            keep,
        },
        framing,
    )))
}

/// The headers about this hop only, which an answer's [`Head`] leaves out.
fn hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 6] = [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "trailer",
        "upgrade",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// What an answer's framing headers say, read off its parsed lines.
struct Hop {
    /// `transfer-encoding` was present: whether its last coding is
    /// `chunked`.
    chunked: Option<bool>,
    /// The `content-length`, when one was given.
    length: Option<u64>,
    /// `connection: close`, `connection: keep-alive`.
    close: bool,
    keep_alive: bool,
}

impl Hop {
    fn read(lines: &[httparse::Header<'_>]) -> Result<Hop, Error> {
        let mut hop = Hop {
            chunked: None,
            length: None,
            close: false,
            keep_alive: false,
        };
        for line in lines {
            let name = line.name;
            if name.eq_ignore_ascii_case("transfer-encoding") {
                // Only a final `chunked` frames the body; any other coding
                // runs until the connection closes. The last line's last
                // item is the final coding.
                let last = line.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                hop.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case("content-length") {
                // A list of equal values is one length; differing ones are
                // an error, as is anything but digits.
                for part in line.value.split(|&b| b == b',') {
                    let n = length_digits(part).ok_or(Error::Malformed("bad content-length"))?;
                    if hop.length.is_some_and(|l| l != n) {
                        return Err(Error::Malformed("conflicting content-length values"));
                    }
                    hop.length = Some(n);
                }
            } else if name.eq_ignore_ascii_case("connection") {
                for token in line.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    hop.close |= token.eq_ignore_ascii_case(b"close");
                    hop.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
        Ok(hop)
    }

    /// How the body of an answer to a `POST` is framed (RFC 9112 §6.3).
    fn framing(&self, status: StatusCode) -> Framing {
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Framing::Done;
        }
        match (self.chunked, self.length) {
            (Some(true), _) => Framing::Chunked(Chunk::Size),
            (Some(false), _) | (None, None) => Framing::UntilClose,
            (None, Some(0)) => Framing::Done,
            (None, Some(n)) => Framing::Length(n),
        }
    }
}

/// Whether the connection may carry another exchange after an answer
/// with `head` has been read to its end; `framing` as `read_head` gave it,
/// before the body was read.
pub fn reusable(head: &Head, framing: &Framing) -> bool {
    framing.delimited() && head.keep
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::HeaderMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::{Connection, Error, Framing, reusable};

    /// A connection whose provider side the test writes by hand.
    fn pair() -> (Connection<DuplexStream>, DuplexStream) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (Connection::new(a), b)
    }

    /// The whole body, piece by piece.
    async fn body(
        conn: &mut Connection<DuplexStream>,
        framing: &mut Framing,
    ) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        while let Some(piece) = std::future::poll_fn(|cx| conn.poll_body(framing, cx)).await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn writes_one_post_with_host_and_length() {
        let (mut conn, mut provider) = pair();
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("content-length", "999".parse().unwrap());
        headers.insert("host", "elsewhere".parse().unwrap());
        let body = Bytes::from_static(b"{\"a\":1}");
        conn.write_post("/v1/chat/completions", b"api.example:8443", &headers, &body)
            .await
            .unwrap();
        drop(conn);
        let mut sent = String::new();
        provider.read_to_string(&mut sent).await.unwrap();
        assert_eq!(
            sent,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: api.example:8443\r\n\
             content-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
        );
    }

    #[tokio::test]
    async fn a_large_body_follows_its_head() {
        let (mut conn, mut provider) = pair();
        let body = Bytes::from(vec![b'x'; 100_000]);
        conn.write_post("/", b"h", &HeaderMap::new(), &body)
            .await
            .unwrap();
        drop(conn);
        let mut sent = Vec::new();
        provider.read_to_end(&mut sent).await.unwrap();
        let head = b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 100000\r\n\r\n";
        assert_eq!(&sent[..head.len()], head);
        assert_eq!(sent.len(), head.len() + 100_000);
    }

    #[tokio::test]
    async fn a_length_framed_answer_arriving_in_pieces() {
        let (mut conn, mut provider) = pair();
        provider
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Ratelimit-Remaining-Requests: 9\r\nConnection: keep-alive\r\ncontent-length: 11\r\n\r\n{\"ok\"")
            .await
            .unwrap();
        let (head, mut framing) = conn.read_head().await.unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.headers["content-type"], "application/json");
        assert_eq!(head.headers["x-ratelimit-remaining-requests"], "9");
        // The framing headers are this hop's: read, and not passed on.
        assert_eq!(head.headers.len(), 2, "{:?}", head.headers);
        assert_eq!(framing, Framing::Length(11));
        provider.write_all(b":true}").await.unwrap();
        assert_eq!(
            body(&mut conn, &mut framing).await.unwrap(),
            b"{\"ok\":true}"
        );
        assert!(framing.is_done() && conn.is_clean() && reusable(&head, &framing));
    }

    #[tokio::test]
    async fn a_chunked_answer_with_extensions_and_trailers() {
        let (mut conn, mut provider) = pair();
        provider
            .write_all(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                  6;name=x\r\ndata: \r\n5\r\nhello\r\nA\r\n world\n\n\n\n\r\n0\r\nx-end: 1\r\n\r\n",
            )
            .await
            .unwrap();
        let (head, mut framing) = conn.read_head().await.unwrap();
        assert_eq!(
            body(&mut conn, &mut framing).await.unwrap(),
            b"data: hello world\n\n\n\n"
        );
        assert!(conn.is_clean() && reusable(&head, &framing));
    }

    #[tokio::test]
    async fn a_chunked_answer_one_byte_at_a_time() {
        let (mut conn, mut provider) = pair();
        let wire: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let writer = tokio::spawn(async move {
            for b in wire {
                provider.write_all(&[*b]).await.unwrap();
                tokio::task::yield_now().await;
            }
            provider
        });
        let (_, mut framing) = conn.read_head().await.unwrap();
        assert_eq!(body(&mut conn, &mut framing).await.unwrap(), b"abcde");
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn interim_answers_are_skipped() {
        let (mut conn, mut provider) = pair();
        provider
            .write_all(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
            )
            .await
            .unwrap();
        let (head, framing) = conn.read_head().await.unwrap();
        assert_eq!((head.status.as_u16(), framing), (201, Framing::Done));
    }

    #[tokio::test]
    async fn an_answer_without_length_runs_to_the_close_and_ends_the_connection() {
        let (mut conn, mut provider) = pair();
        provider
            .write_all(b"HTTP/1.1 200 OK\r\n\r\nall of it")
            .await
            .unwrap();
        drop(provider);
        let (head, mut framing) = conn.read_head().await.unwrap();
        assert!(!reusable(&head, &framing));
        assert_eq!(body(&mut conn, &mut framing).await.unwrap(), b"all of it");
    }

    #[tokio::test]
    async fn closes_before_the_end_are_errors() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ] {
            let (mut conn, mut provider) = pair();
            provider.write_all(wire).await.unwrap();
            drop(provider);
            let (_, mut framing) = conn.read_head().await.unwrap();
            let err = body(&mut conn, &mut framing).await.unwrap_err();
            assert!(matches!(err, Error::ClosedInBody), "{err}");
        }
        let (mut conn, mut provider) = pair();
        provider.write_all(b"HTTP/1.1 200 O").await.unwrap();
        drop(provider);
        assert!(matches!(
            conn.read_head().await.err(),
            Some(Error::ClosedBeforeHead)
        ));
    }

    #[test]
    fn numbers_on_the_wire() {
        use super::{length_digits, push_decimal, push_hex};
        let mut out = Vec::new();
        for n in [0u64, 9, 10, 255, 4096, 0xdead_beef] {
            out.clear();
            push_hex(&mut out, n);
            assert_eq!(out, format!("{n:x}").as_bytes());
            out.clear();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        assert_eq!(length_digits(b" 42 "), Some(42));
        assert_eq!(length_digits(b"999999999999999"), Some(999_999_999_999_999));
        for bad in [
            &b""[..],
            b" ",
            b"-1",
            b"+1",
            b"1e3",
            b"0x10",
            b"1 2",
            b"1000000000000000",
        ] {
            assert_eq!(
                length_digits(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn garbage_is_a_clear_error() {
        let cases: [(&[u8], &str); 6] = [
            (
                b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
                "not an HTTP/1.x response head",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
                "conflicting content-length values",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                "bad content-length",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
                "bad chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabcd\r\n",
                "chunk data longer than its size",
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                "101 Switching Protocols to a POST",
            ),
        ];
        for (wire, want) in cases {
            let (mut conn, mut provider) = pair();
            provider.write_all(wire).await.unwrap();
            drop(provider);
            let err = match conn.read_head().await {
                Err(e) => e,
                Ok((_, mut framing)) => body(&mut conn, &mut framing).await.unwrap_err(),
            };
            assert_eq!(err.to_string(), format!("malformed answer: {want}"));
        }
        let (mut conn, mut provider) = pair();
        let huge = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n", "a".repeat(70_000));
        provider.write_all(huge.as_bytes()).await.unwrap();
        assert_eq!(
            conn.read_head().await.err().unwrap().to_string(),
            "malformed answer: head larger than 64 KiB"
        );
    }

    #[tokio::test]
    async fn connection_close_and_http_1_0_are_not_reused() {
        let cases: [(&[u8], bool); 6] = [
            (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", true),
            (
                b"HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n",
                false,
            ),
            // Both framings: read as chunked, never reused.
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: Close\r\ncontent-length: 0\r\n\r\n",
                false,
            ),
            (b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false),
            (
                b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
                true,
            ),
        ];
        for (wire, want) in cases {
            let (mut conn, mut provider) = pair();
            provider.write_all(wire).await.unwrap();
            let (head, mut framing) = conn.read_head().await.unwrap();
            assert!(body(&mut conn, &mut framing).await.unwrap().is_empty());
            assert_eq!(
                reusable(&head, &framing),
                want,
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[tokio::test]
    async fn an_idle_connection_knows_when_the_provider_closed_it() {
        let (mut conn, provider) = pair();
        assert!(!conn.broken_while_idle());
        drop(provider);
        assert!(conn.broken_while_idle());
        let (mut conn, mut provider) = pair();
        provider.write_all(b"HTTP/1.1 408 ").await.unwrap();
        assert!(conn.broken_while_idle());
    }
}
