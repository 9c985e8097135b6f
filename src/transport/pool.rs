//! Idle HTTP/1 connections to the providers, per origin, and the response
//! body that hands its connection back once it has been read to the end.
//!
//! A connection is in the pool only between answers: it goes back when
//! its answer's body has ended (a whole body, or a stream's last byte) and
//! the provider framed it so that the connection can carry another. A body
//! dropped before its end takes its connection with it (closed). Nothing
//! watches an idle connection: one the provider closed meanwhile is found
//! out, without waiting, when it is taken.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

use super::h1;

/// A connection's socket: plain TCP or TLS over it, straight or through
/// a proxy.
pub(super) type Io = hyper_util::rt::TokioIo<hyper_rustls::MaybeHttpsStream<super::Leg>>;

/// A connection, and whether it reaches a plain-HTTP proxy (which is sent
/// the whole URL).
pub(super) struct Conn {
    pub io: h1::Connection<Io>,
    pub proxied: bool,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// One origin (`scheme://authority`) and its idle connections, newest
/// last.
struct Origin {
    scheme: String,
    authority: String,
    idle: Vec<Idle>,
}

pub(super) struct Pool {
    /// Few (one per provider origin), so found by a scan; never shrinks,
    /// so an index names an origin for good.
    origins: Mutex<Vec<Origin>>,
    max_idle: usize,
    idle_timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            origins: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// The index of the origin, added when new.
    pub fn origin(&self, scheme: &str, authority: &str) -> usize {
        let mut origins = lock(&self.origins);
        if let Some(i) = origins
            .iter()
            .position(|o| o.authority == authority && o.scheme == scheme)
        {
            return i;
        }
        origins.push(Origin {
            scheme: scheme.to_string(),
            authority: authority.to_string(),
            idle: Vec::new(),
        });
        origins.len() - 1
    }

    /// The most recently returned connection of `origin` that is still
    /// open and has not idled too long; the closed and stale ones met on
    /// the way are dropped (closed).
    pub fn checkout(&self, origin: usize) -> Option<Box<Conn>> {
        loop {
            // Looked at outside the lock: the look may read the socket.
            let mut entry = lock(&self.origins)[origin].idle.pop()?;
            if entry.since.elapsed() > self.idle_timeout || entry.conn.io.broken_while_idle() {
                continue;
            }
            return Some(entry.conn);
        }
    }

    /// Puts a connection whose answer has been read back for the next
    /// request; the oldest goes (closed) when the origin already keeps
    /// `max_idle`, and so do those that idled too long.
    pub fn give_back(&self, origin: usize, conn: Box<Conn>) {
        let now = Instant::now();
        let mut origins = lock(&self.origins);
        let idle = &mut origins[origin].idle;
        let stale = idle
            .iter()
            .take_while(|e| now.duration_since(e.since) > self.idle_timeout)
            .count();
        let over = (idle.len() - stale + 1).saturating_sub(self.max_idle);
        if stale + over > 0 {
            idle.drain(..stale + over);
        }
        idle.push(Idle { conn, since: now });
    }
}

/// An answer's body; at its end, its connection goes back to the pool.
pub struct Body {
    /// `None` once the body has ended or broken. Boxed, as everywhere:
    /// a TLS connection is a kilobyte, and answers move through layers.
    conn: Option<Box<Conn>>,
    framing: h1::Framing,
    /// Whether the answer's head lets the connection carry another
    /// exchange.
    keep: bool,
    pool: Arc<Pool>,
    origin: usize,
}

impl Body {
    pub(super) fn new(
        conn: Box<Conn>,
        head: &h1::Head,
        framing: h1::Framing,
        pool: Arc<Pool>,
        origin: usize,
    ) -> Body {
        let keep = h1::reusable(head, &framing);
        let mut body = Body {
            conn: Some(conn),
            framing,
            keep,
            pool,
            origin,
        };
        // An empty body is over before it is read.
        if body.framing.is_done() {
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep
            && conn.io.is_clean()
        {
            self.pool.give_back(self.origin, conn);
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = h1::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h1::Error>>> {
        let this = &mut *self;
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(conn.io.poll_body(&mut this.framing, cx)) {
            Some(Ok(data)) => {
                if this.framing.is_done() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            None => {
                this.finish();
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                // A broken body's connection is not reused.
                this.conn = None;
                this.framing = h1::Framing::Done;
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            h1::Framing::Length(n) => SizeHint::with_exact(n),
            h1::Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
