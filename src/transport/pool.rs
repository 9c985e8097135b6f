//! Idle HTTP/1 connections to the providers, per origin, and the response
//! body that hands its connection back once it has been read to the end.
//!
//! A connection is in the pool only between answers: it goes back when
//! its answer's body has ended (a whole body, or a stream's last byte), so
//! whoever takes it next finds it free, or free within the moment its
//! connection task needs to see that end. A body dropped before its end
//! takes its connection with it (hyper closes it).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::body::{Body as _, Frame, SizeHint};
use hyper::client::conn::http1::SendRequest;

pub(super) type Sender = SendRequest<Full<Bytes>>;

/// A connection's sending half, and whether it reaches a plain-HTTP proxy
/// (which is sent the whole URL).
pub(super) struct Conn {
    pub tx: Sender,
    pub proxied: bool,
}

struct Idle {
    conn: Conn,
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
    /// the way are dropped.
    pub fn checkout(&self, origin: usize) -> Option<Conn> {
        let mut origins = lock(&self.origins);
        let idle = &mut origins[origin].idle;
        while let Some(entry) = idle.pop() {
            if entry.conn.tx.is_closed() || entry.since.elapsed() > self.idle_timeout {
                continue;
            }
            return Some(entry.conn);
        }
        None
    }

    /// Puts a connection whose answer has been read back for the next
    /// request; dropped (closed) when the origin already keeps `max_idle`.
    pub fn give_back(&self, origin: usize, conn: Conn) {
        if conn.tx.is_closed() {
            return;
        }
        let mut origins = lock(&self.origins);
        let idle = &mut origins[origin].idle;
        if idle.len() >= self.max_idle {
            // The oldest goes: it is the likeliest to have been closed.
            idle.remove(0);
        }
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
    }
}

/// An answer's body; at its end, its connection goes back to the pool.
pub struct Body {
    inner: Incoming,
    back: Option<(Arc<Pool>, usize, Conn)>,
}

impl Body {
    pub(super) fn new(inner: Incoming, pool: Arc<Pool>, origin: usize, conn: Conn) -> Body {
        let mut body = Body {
            inner,
            back: Some((pool, origin, conn)),
        };
        // An empty body is over before it is read.
        if body.inner.is_end_stream() {
            body.give_back();
        }
        body
    }

    fn give_back(&mut self) {
        if let Some((pool, origin, conn)) = self.back.take() {
            pool.give_back(origin, conn);
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            // A broken body's connection is not reused.
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
