//! The accept loop: one task per connection, HTTP/1.1 (or HTTP/2 with
//! prior knowledge), `TCP_NODELAY`, the peer's address for the handlers,
//! a deadline for request headers, and a graceful stop.
//!
//! It replaces `axum::serve`, whose connection builder tells HTTP/1 from
//! HTTP/2 by reading exactly the 24 bytes of the HTTP/2 preface first. hyper
//! then parses a request from those 24 bytes, needs a second read, and
//! doubles its 8 KiB read buffer to 16 KiB to make room — for every
//! connection, for as long as it is open. Here the protocol is decided by
//! peeking at the first bytes, which leaves them in the socket: hyper reads
//! the whole request at once into 8 KiB. On the gateway bench that took
//! resident memory per open stream from 39.8 to 27.2 KiB (1,000 streams).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::front::Front;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod h1;

/// `gateway.header_timeout` as the config has it now, read once per
/// connection (so a reload applies to the connections after it).
pub type HeaderTimeout = Arc<dyn Fn() -> Duration + Send + Sync>;

/// HTTP/2's connection preface starts so; no HTTP/1 request does.
const H2_PREFACE_START: &[u8] = b"PRI ";

/// Serves `app` on `listener` until `stop` fires, then stops accepting and
/// lets every open connection finish its requests (keep-alive ends). If
/// this future is dropped first (the shutdown grace ran out), every
/// connection still open is cut.
///
/// A connection has `header_timeout` to send its first bytes and, over
/// HTTP/1.1, each request's line and headers (counted from the end of the
/// previous answer, so an idle keep-alive connection is closed after it
/// too); a slow-loris client cannot hold a connection by trickling them.
pub async fn serve(
    listener: TcpListener,
    app: Front,
    stop: CancellationToken,
    header_timeout: HeaderTimeout,
) {
    let mut connections = JoinSet::new();
    let draining = CancellationToken::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            // Reap finished connections so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let deadline = header_timeout();
                    connections.spawn(connection(tcp, peer, app.clone(), draining.clone(), deadline));
                }
                // Out of file descriptors, say: the loop must not spin.
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    draining.cancel();
    while connections.join_next().await.is_some() {}
}

/// One connection, start to end.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Front,
    draining: CancellationToken,
    header_timeout: Duration,
) {
    let first = tokio::time::timeout(header_timeout, speaks_h2(&tcp));
    let h2 = tokio::select! {
        // Bytes already waiting are served, even as the drain starts.
        biased;
        first = first => match first {
            Ok(Some(h2)) => h2,
            // Closed, failed or silent before a request: nothing to serve.
            Ok(None) | Err(_) => return,
        },
        // Nothing asked yet (a client pool's spare connection, say): close
        // it, as hyper closes an idle keep-alive one, rather than hold the
        // shutdown until the header deadline.
        _ = draining.cancelled() => return,
    };
    let mut tcp = tcp;
    let read = if h2 {
        Bytes::new()
    } else {
        match h1::serve(&mut tcp, peer, &app, &draining, header_timeout).await {
            Ok(h1::Ended::Closed) => return,
            Ok(h1::Ended::HandOver(read)) => read,
            Err(e) => {
                tracing::debug!(%peer, "connection ended: {e}");
                return;
            }
        }
    };
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let app = app.clone();
        // Boxed: hyper moves the request's future as it goes, and unboxed
        // it is the size of the whole dispatch (kilobytes copied each time).
        Box::pin(async move {
            Ok::<_, std::convert::Infallible>(app.call(req.map(axum::body::Body::new), peer).await)
        })
    });
    let io = TokioIo::new(h1::Rewind { read, tcp });
    let served = if h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc);
        drain(conn, &draining, |c| c.graceful_shutdown()).await
    } else {
        // hyper's own clock: it arms it whenever it waits for a request
        // head, and drops the connection when it rings.
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(io, svc);
        drain(conn, &draining, |c| c.graceful_shutdown()).await
    };
    if let Err(e) = served {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// Runs `conn`; once `draining` fires, asks it to finish what is in flight
/// and take nothing new.
async fn drain<C, F>(conn: C, draining: &CancellationToken, graceful: F) -> Result<(), hyper::Error>
where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
    F: FnOnce(std::pin::Pin<&mut C>),
{
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r,
        _ = draining.cancelled() => graceful(conn.as_mut()),
    }
    conn.await
}

/// Whether the client opens with HTTP/2's preface, from a peek at its first
/// bytes (left in the socket for hyper). `None` when it closes first.
async fn speaks_h2(tcp: &TcpStream) -> Option<bool> {
    let mut first = [0u8; 4];
    loop {
        let n = tcp.peek(&mut first).await.ok()?;
        if n == 0 {
            return None;
        }
        if !H2_PREFACE_START.starts_with(&first[..n]) {
            return Some(false);
        }
        if n == H2_PREFACE_START.len() {
            return Some(true);
        }
        // "P", "PR" or "PRI" so far: the rest is on its way.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
