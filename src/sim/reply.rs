//! What every sim endpoint shares: bearer parsing, JSON answers, SSE bodies
//! that faults cut, and [`deliver`], which sends what the limiter and the
//! fault dice decided. Below the endpoints and [`super::server`]'s routes:
//! it names none of them.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::stream;

use super::KeyFault;
use super::state::{Drawn, Inner, Shared};
use super::wire;

/// The bearer token, if the request carries one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Where a fault cuts an admitted answer: after this many stream events
/// (SSE data events, or gRPC messages for Gemini).
#[derive(Debug, Clone, Copy)]
pub(super) enum Cut {
    Reset(usize),
    Stall(usize),
}

impl Cut {
    /// Where this answer of `events` stream events is cut, if at all: the
    /// account's own fault first, else a fault drawn at random. Every
    /// endpoint (OpenAI, Anthropic, Gemini) cuts the same way.
    pub(super) fn choose(
        inner: &mut Inner,
        idx: usize,
        drawn: Option<Drawn>,
        events: usize,
    ) -> Option<Cut> {
        match (inner.accounts[idx].fault, drawn) {
            (Some(KeyFault::ResetAfterChunks(n)), _) => Some(Cut::Reset(n.min(events))),
            (Some(KeyFault::StallAfterChunks(n)), _) => Some(Cut::Stall(n.min(events))),
            (_, Some(Drawn::Reset)) => Some(Cut::Reset(inner.draw_cut(events))),
            (_, Some(Drawn::Stall)) => Some(Cut::Stall(inner.draw_cut(events))),
            _ => None,
        }
    }

    pub(super) fn as_fault(self) -> KeyFault {
        match self {
            Cut::Reset(n) => KeyFault::ResetAfterChunks(n),
            Cut::Stall(n) => KeyFault::StallAfterChunks(n),
        }
    }
}

pub(super) fn json_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, body).into_response();
    wire::insert(resp.headers_mut(), "content-type", "application/json");
    resp
}

/// Pause before a reset. hyper flushes its write buffer when the body is
/// pending, but not when the body fails; without a pending poll first, the
/// events before the cut would be lost with the connection.
const FLUSH_GRACE: Duration = Duration::from_millis(5);

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "sim: connection reset")
}

/// A body that fails at once, which makes hyper drop the connection after
/// the head without a clean end.
pub(super) fn abort_body(sh: Arc<Shared>) -> Body {
    Body::from_stream(stream::once(async move {
        sh.sleep(FLUSH_GRACE).await;
        Err::<Bytes, _>(reset_error())
    }))
}

/// The answer for a request still pending at shutdown.
pub(super) fn aborted() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "sim shutting down").into_response()
}

/// An answer sent as a fixed sequence of SSE frames.
pub(super) trait SseEvents: Send + 'static {
    fn event_count(&self) -> usize;
    /// Whether event `i` is generated content, paced by `chunk_interval`.
    fn is_content(&self, i: usize) -> bool;
    /// Event `i`, framed and ready to send.
    fn event(&self, i: usize) -> Bytes;
}

/// State of one SSE body: which event comes next and where it is cut.
struct Sse<E> {
    completion: E,
    next: usize,
    interval: Duration,
    cut: Option<Cut>,
    sh: Arc<Shared>,
}

/// The SSE body: one frame per event, never batched.
pub(super) fn sse_body<E: SseEvents>(
    completion: E,
    interval: Duration,
    cut: Option<Cut>,
    sh: Arc<Shared>,
) -> Body {
    let state = Sse {
        completion,
        next: 0,
        interval,
        cut,
        sh,
    };
    Body::from_stream(stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        match st.cut {
            Some(Cut::Reset(at)) if at == st.next => {
                st.sh.sleep(FLUSH_GRACE).await;
                return Some((Err(reset_error()), None));
            }
            Some(Cut::Stall(at)) if at == st.next => {
                // Silent until the client gives up or the sim shuts down.
                st.sh.cancel.cancelled().await;
                return Some((Err(reset_error()), None));
            }
            _ => {}
        }
        if st.next >= st.completion.event_count() {
            return None;
        }
        if st.completion.is_content(st.next) && !st.sh.sleep(st.interval).await {
            return Some((Err(reset_error()), None));
        }
        let event = st.completion.event(st.next);
        st.next += 1;
        Some((Ok::<_, io::Error>(event), Some(st)))
    }))
}

/// An admitted request's answer, planned under the lock.
pub(super) enum Answer {
    /// A whole JSON body.
    Whole(String),
    /// SSE events, paced and cut like every stream.
    Stream(Box<dyn SseEvents>),
}

impl SseEvents for Box<dyn SseEvents> {
    fn event_count(&self) -> usize {
        (**self).event_count()
    }
    fn is_content(&self, i: usize) -> bool {
        (**self).is_content(i)
    }
    fn event(&self, i: usize) -> Bytes {
        (**self).event(i)
    }
}

/// What the limiter and fault dice decided for one HTTP request.
pub(super) enum Decision {
    /// Answer now (refusals come back without `latency`, as a limiter's do).
    Refuse(Response),
    /// Answer with this status and body after `latency`.
    Fail(u16, String),
    Serve {
        answer: Answer,
        /// `None` for accounts that do not advertise their limits.
        rate: Option<wire::RateInfo>,
        cut: Option<Cut>,
    },
}

/// Sends what was decided, after the sim's latency unless it is a refusal:
/// a paced stream, or a whole body, cut where planned. `rate_headers`
/// writes a served answer's limits in the provider's own headers.
pub(super) async fn deliver(
    sh: &Arc<Shared>,
    decision: Decision,
    rate_headers: impl FnOnce(&mut HeaderMap, wire::RateInfo),
) -> Response {
    let latency = sh.settings.latency;
    let (answer, rate, cut) = match decision {
        Decision::Refuse(resp) => return resp,
        Decision::Fail(status, body) => {
            if !sh.sleep(latency).await {
                return aborted();
            }
            return json_response(status, body);
        }
        Decision::Serve { answer, rate, cut } => (answer, rate, cut),
    };
    if !sh.sleep(latency).await {
        return aborted();
    }
    let mut resp = match (answer, cut) {
        (Answer::Stream(events), cut) => {
            let interval = sh.settings.chunk_interval;
            let mut resp = Response::new(sse_body(events, interval, cut, sh.clone()));
            let h = resp.headers_mut();
            wire::insert(h, "content-type", "text/event-stream");
            wire::insert(h, "cache-control", "no-cache");
            resp
        }
        (Answer::Whole(body), None) => json_response(200, body),
        (Answer::Whole(_), Some(Cut::Reset(_))) => {
            let mut resp = Response::new(abort_body(sh.clone()));
            wire::insert(resp.headers_mut(), "content-type", "application/json");
            resp
        }
        (Answer::Whole(_), Some(Cut::Stall(_))) => {
            sh.cancel.cancelled().await;
            return aborted();
        }
    };
    if let Some(rate) = rate {
        rate_headers(resp.headers_mut(), rate);
    }
    resp
}
