//! The plain HTTP/1.1 connection loop: what every client request looks
//! like (a `GET`, or a `POST` whose `content-length` body has arrived with
//! its head) is read, handed to the front door and answered here; anything
//! else hands the connection to hyper's server, with what was read of it.
//!
//! hyper's server, its dispatcher and its buffers were a quarter of the
//! gateway's instructions per request (`benches/instructions.sh`). This
//! loop parses the head with `httparse`, passes a body that came with its
//! head on without a copy (one still on its way is fed to the handler as
//! it arrives; its deadline and 408 stay the handler's) and writes the
//! answer's head and body in one write when the body is whole. The cases
//! it leaves to hyper — `chunked` or `expect` requests, a body over the
//! limit, `HEAD` and the other methods, HTTP/1.0, an oversized or
//! malformed head — are answered exactly as before, only by hyper.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::super::front::Front;
use crate::transport::h1::{
    header_map, length_digits, push_decimal, push_header_lines, push_hex, spans,
};

/// More header lines than this: hyper's (which answers 431).
const MAX_HEADERS: usize = 100;
/// An unfinished head longer than this goes to hyper, which applies its
/// own limits and answers them.
const MAX_HEAD: usize = 128 * 1024;
/// Room made in the read buffer before a read.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes a client may send ahead (the next request, pipelined) while its
/// answer is made; beyond it the socket is not read until then.
const MAX_AHEAD: usize = 64 * 1024;
/// Answer data up to this size is copied into the write buffer; larger
/// pieces are written from where they are.
const COALESCE: usize = 16 * 1024;

/// How a connection's loop ended.
pub(super) enum Ended {
    /// Closed: by the client, by a deadline, by the drain, or after an
    /// answer that closes it.
    Closed,
    /// A request this loop does not serve: hyper serves the connection
    /// from here, starting with these bytes (the request's head at least).
    HandOver(Bytes),
}

/// Serves requests on `tcp` until it closes or one must go to hyper.
/// `header_timeout` runs from the end of each answer (and from the start)
/// to the end of the next request's head, as it does under hyper.
pub(super) async fn serve(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    app: &Front,
    draining: &CancellationToken,
    header_timeout: Duration,
) -> io::Result<Ended> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let max_body = app.max_body();
    // One timer and one drain waiter for the connection, not one per
    // request: the timer is armed for the first head's deadline and, when
    // it goes off early (a later head's deadline is further on), moved to
    // the current one.
    let drained = draining.cancelled();
    let mut deadline = tokio::time::Instant::now() + header_timeout;
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(drained, timer);
    loop {
        let (head_len, request) = loop {
            match parse(&buf, max_body) {
                Parsed::Partial if buf.len() < MAX_HEAD => {}
                Parsed::Partial | Parsed::Other => return Ok(Ended::HandOver(buf.freeze())),
                Parsed::Request(len, request) => break (len, request),
            }
            let read = tokio::select! {
                biased;
                read = read_more(tcp, &mut buf) => read?,
                // Between requests, the drain closes the connection.
                _ = &mut drained, if buf.is_empty() => return Ok(Ended::Closed),
                _ = &mut timer => {
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(Ended::Closed);
                    }
                    timer.as_mut().reset(deadline);
                    continue;
                }
            };
            if read == 0 {
                return Ok(Ended::Closed);
            }
        };
        let head = buf.split_to(head_len).freeze();
        let Ok((uri, headers)) = request.parts(&head) else {
            return Ok(Ended::HandOver(rejoin(head, buf)));
        };
        // The body: whole when it came with the head (most do), else fed
        // to the handler as it arrives, under the handler's own deadline.
        let mut left = request.body_len;
        let mut feed = None;
        let body = if buf.len() >= left {
            left = 0;
            Body::from(buf.split_to(request.body_len).freeze())
        } else {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
            feed = Some(tx);
            Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|piece| (Ok::<_, io::Error>(piece), rx))
            }))
        };
        let mut req = Request::new(body);
        *req.method_mut() = request.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        let answer = {
            let mut call = std::pin::pin!(app.clone().call(req, peer));
            tokio::select! {
                biased;
                answer = &mut call => answer,
                // A client that hangs up takes its request with it.
                () = feed_and_watch(tcp, &mut buf, &mut left, &mut feed) => return Ok(Ended::Closed),
            }
        };
        // A body the handler did not read to its end is still in the
        // socket: the connection cannot carry another request.
        let keep_alive = request.keep_alive && left == 0 && !draining.is_cancelled();
        if !write_answer(tcp, &mut buf, answer, keep_alive).await? || !keep_alive {
            return Ok(Ended::Closed);
        }
        deadline = tokio::time::Instant::now() + header_timeout;
    }
}

/// Passes the rest of a request's body (`left` bytes) to the handler
/// through `feed` as it arrives, then watches the connection; resolves
/// when the client has closed it. A handler that stops reading (it
/// answered already) leaves the rest unread in `left`.
async fn feed_and_watch(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    left: &mut usize,
    feed: &mut Option<tokio::sync::mpsc::Sender<Bytes>>,
) {
    loop {
        let Some(tx) = feed.as_ref().filter(|_| *left > 0) else {
            // The body's end (or the handler's lost interest) closes it.
            *feed = None;
            return watch(tcp, buf).await;
        };
        if buf.is_empty() {
            match read_more(tcp, buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
        let n = buf.len().min(*left);
        let piece = buf.split_to(n).freeze();
        if tx.send(piece).await.is_err() {
            *feed = None;
            continue;
        }
        *left -= n;
    }
}

/// `head` followed by what was read after it, for hyper.
fn rejoin(head: Bytes, rest: BytesMut) -> Bytes {
    let mut all = BytesMut::with_capacity(head.len() + rest.len());
    all.extend_from_slice(&head);
    all.extend_from_slice(&rest);
    all.freeze()
}

async fn read_more(tcp: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    tcp.read_buf(buf).await
}

/// Resolves when the client has closed the connection (or broken it);
/// what it sends meanwhile is kept in `buf` for later, up to
/// [`MAX_AHEAD`].
async fn watch(tcp: &mut TcpStream, buf: &mut BytesMut) {
    loop {
        if buf.len() >= MAX_AHEAD {
            return std::future::pending().await;
        }
        match read_more(tcp, buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

enum Parsed {
    Partial,
    /// Not for this loop (or not HTTP at all): hyper's.
    Other,
    /// A request whose head is `.0` bytes long.
    Request(usize, Head),
}

/// A request head this loop serves, as offsets into the bytes it was
/// parsed from.
struct Head {
    method: Method,
    path: (usize, usize),
    spans: Vec<crate::transport::h1::Span>,
    body_len: usize,
    keep_alive: bool,
}

impl Head {
    /// The request's URI and headers, sharing `head`'s bytes.
    fn parts(&self, head: &Bytes) -> Result<(Uri, HeaderMap), ()> {
        let uri = Uri::from_maybe_shared(head.slice(self.path.0..self.path.1)).map_err(|_| ())?;
        let headers = header_map(head, &self.spans).map_err(|_| ())?;
        Ok((uri, headers))
    }
}

fn parse(buf: &[u8], max_body: usize) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut lines = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut lines)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let method = match req.method {
        Some("POST") => Method::POST,
        Some("GET") => Method::GET,
        _ => return Parsed::Other,
    };
    let Some(path) = req.path.filter(|p| p.starts_with('/')) else {
        return Parsed::Other;
    };
    if req.version != Some(1) {
        return Parsed::Other;
    }
    let mut body_len = None;
    let mut keep_alive = true;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = length_digits(h.value).and_then(|n| usize::try_from(n).ok()) else {
                return Parsed::Other;
            };
            if body_len.is_some_and(|l| l != n) {
                return Parsed::Other;
            }
            body_len = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return Parsed::Other;
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive &= !h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let body_len = body_len.unwrap_or(0);
    // A body over the limit is the handler's to refuse (413), by hyper.
    if body_len > max_body || (method == Method::GET && body_len > 0) {
        return Parsed::Other;
    }
    let base = buf.as_ptr() as usize;
    let path_at = path.as_ptr() as usize - base;
    Parsed::Request(
        len,
        Head {
            method,
            path: (path_at, path_at + path.len()),
            spans: spans(req.headers.iter(), buf.as_ptr()),
            body_len,
            keep_alive,
        },
    )
}

/// Writes `answer`; `false` when the client went away before its end
/// (then the connection is closed). A body whose length is known is sent
/// with `content-length`, any other `chunked`, each piece as it comes.
async fn write_answer(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    answer: Response<Body>,
    keep_alive: bool,
) -> io::Result<bool> {
    let (parts, mut body) = answer.into_parts();
    let bodiless = parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let length = hyper::body::Body::size_hint(&body).exact();
    let chunked = !bodiless && length.is_none();
    let mut out = Vec::with_capacity(512);
    write_head(&mut out, parts.status, &parts.headers, keep_alive);
    if !bodiless {
        match length {
            Some(n) => {
                out.extend_from_slice(b"content-length: ");
                push_decimal(&mut out, n);
                out.extend_from_slice(b"\r\n");
            }
            None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
    }
    out.extend_from_slice(b"\r\n");
    if bodiless {
        tcp.write_all(&out).await?;
        return Ok(true);
    }
    loop {
        // What the body has at once joins what is waiting to be written;
        // when it has nothing yet, what is waiting goes out first.
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                if !out.is_empty() {
                    tcp.write_all(&out).await?;
                    out.clear();
                }
                tokio::select! {
                    biased;
                    frame = body.frame() => frame,
                    () = watch(tcp, buf) => return Ok(false),
                }
            }
        };
        match frame {
            None => break,
            Some(Err(e)) => {
                // The answer cannot be finished; the client sees the
                // connection end without the body's end.
                tracing::debug!("answer body failed: {e}");
                if !out.is_empty() {
                    tcp.write_all(&out).await?;
                }
                return Ok(false);
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                if chunked {
                    push_hex(&mut out, data.len() as u64);
                    out.extend_from_slice(b"\r\n");
                }
                if data.len() > COALESCE {
                    tcp.write_all(&out).await?;
                    out.clear();
                    tcp.write_all(&data).await?;
                } else {
                    out.extend_from_slice(&data);
                }
                if chunked {
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    if !out.is_empty() {
        tcp.write_all(&out).await?;
    }
    Ok(true)
}

/// The status line and headers, a `date` when the answer has none, and
/// `connection: close` when the connection ends after it. The answer's
/// own framing headers are left out: the body's length decides them.
fn write_head(out: &mut Vec<u8>, status: StatusCode, headers: &HeaderMap, keep_alive: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    push_header_lines(out, headers, &[]);
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
}

/// Today's `date` value, formatted once a second per thread.
fn date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != secs || text.is_empty() {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// The socket with the bytes already read from it in front, for hyper.
pub(super) struct Rewind {
    pub(super) read: Bytes,
    pub(super) tcp: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(out.remaining());
            out.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_read(cx, out)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
