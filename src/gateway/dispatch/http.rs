//! One attempt on an HTTP provider (OpenAI-style or Anthropic): send, wait
//! for the head within `first_byte_timeout`, and either hand the client an
//! answer (a whole body, or a stream once its first event is in) or say
//! why this attempt failed. Nothing reaches the client before that, so
//! every failure here can still be retried.

use crate::transport::Body as UpstreamBody;
use http_body_util::BodyExt;

use crate::upstream::usage::{self, StreamUsage};

use super::*;

/// Error bodies read from upstream are capped at this size.
const MAX_ERROR_BODY: usize = 1024 * 1024;
/// Non-streaming success bodies are read whole (so a body that breaks can
/// still be retried) up to this size.
const MAX_RESPONSE_BODY: usize = 256 * 1024 * 1024;

pub(super) async fn send_once(ctx: &mut Ctx<'_>, lease: &Lease, token: &Secret) -> Step {
    let state = ctx.state;
    let pool = &state.pool;
    let req = ctx.req;
    let gw = &req.generation.config().gateway;
    let t0 = Instant::now();
    let deadline = t0 + gw.first_byte_timeout;
    let sent = tokio::time::timeout_at(
        deadline,
        upstream::send(
            &state.transport,
            lease.provider(),
            ctx.req.endpoint,
            token,
            lease.refreshes(),
            ctx.req.body.clone(),
            &ctx.req.headers,
        ),
    )
    .await;
    let resp = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let what = e.describe();
            return failed(ctx, lease, t0, StatusCode::BAD_GATEWAY, what);
        }
        Err(_) => {
            let what = format!("no response within {}", human(gw.first_byte_timeout));
            return failed(ctx, lease, t0, StatusCode::GATEWAY_TIMEOUT, what);
        }
    };
    let mut resp = resp;
    let status = resp.status();
    // Taken, not copied: the body is read without them.
    let headers = std::mem::take(resp.headers_mut());
    // When the head came: what its hints are counted from.
    let answered = SystemTime::now();
    // What the answer (a success or a 429 alike) says is left of the key's
    // rate limit: shown per credential, and `[pool] strategy` may choose
    // by it.
    if let Some(report) = upstream::capacity::capacity(&headers, answered) {
        pool.note_capacity(lease, report, Instant::now());
    }
    let kind = lease.provider().kind;
    let wire = usage::wire(kind, ctx.req.endpoint);

    if status.is_success() {
        let outcome = upstream::classify(kind, status, &headers, b"", lease.settings(), answered);
        let event_stream = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut out_headers = client_headers(headers);
        if event_stream {
            // Read until the first whole event: before it, a failure is
            // still invisible to the client and can be retried.
            let mut upstream_body: relay::Upstream = resp
                .into_body()
                .into_data_stream()
                .map(|r| r.map_err(|e| crate::transport::describe_body_error(&e)))
                .boxed();
            let mut buffer = EventBuffer::new();
            let first = loop {
                match tokio::time::timeout_at(deadline, upstream_body.next()).await {
                    Ok(Some(Ok(chunk))) => {
                        if let Some(events) = buffer.push(chunk) {
                            break events;
                        }
                    }
                    Ok(Some(Err(e))) => {
                        let what = format!("stream broke before its first event: {e}");
                        return failed(ctx, lease, t0, StatusCode::BAD_GATEWAY, what);
                    }
                    Ok(None) => {
                        if let Some(rest) = buffer.rest() {
                            break rest;
                        }
                        let what = "stream ended before its first event".to_string();
                        return failed(ctx, lease, t0, StatusCode::BAD_GATEWAY, what);
                    }
                    Err(_) => {
                        let what =
                            format!("no stream event within {}", human(gw.first_byte_timeout));
                        return failed(ctx, lease, t0, StatusCode::GATEWAY_TIMEOUT, what);
                    }
                }
            };
            let now = Instant::now();
            let verdict = outcome.verdict();
            let status_code = Some(status.as_u16());
            pool.record_at(lease, &verdict, status_code, now - t0, now, answered);
            let ttfb = now - ctx.started;
            let mut record = ctx.record.clone();
            record.status = status.as_u16();
            record.ttfb_ms = Some(ttfb.as_secs_f64() * 1000.0);
            // The record is finished by the relay; stamp route headers now.
            ctx.record.status = status.as_u16();
            let lease_for_relay = lease.share();
            let stream = relay::relay(
                pool.clone(),
                lease_for_relay,
                record,
                ctx.started,
                first,
                buffer,
                upstream_body,
                ctx.req.conversion.reframe(unix_secs()),
                gw.stream_idle_timeout,
                ctx.started + gw.request_timeout,
                wire.map(|w| relay::UsageProbe::Sse(StreamUsage::new(w))),
            );
            out_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            let resp = response(status, out_headers, Body::from_stream(stream));
            return Step::Answer(resp, Some(ttfb));
        }
        let body = match read_body(resp, deadline, MAX_RESPONSE_BODY).await {
            Ok(b) => b,
            Err(BodyError::TooLarge(what)) => return garbled(ctx, lease, t0, what),
            Err(BodyError::Broken(what)) => {
                return failed(ctx, lease, t0, StatusCode::BAD_GATEWAY, what);
            }
        };
        let usage = wire.map(|w| usage::from_body(w, &body));
        // The clocks, once for everything this answer reports.
        let (now, wall) = (Instant::now(), SystemTime::now());
        let secs = unix_ms(wall) / 1000;
        let body = match ctx.req.conversion.response(body, secs) {
            Ok(b) => b,
            Err(what) => return garbled(ctx, lease, t0, what),
        };
        let verdict = outcome.verdict();
        let status_code = Some(status.as_u16());
        pool.record_at(lease, &verdict, status_code, now - t0, now, wall);
        if let Some(usage) = usage {
            pool.add_usage_at(lease, usage, now, wall);
            ctx.record.tokens = usage;
        }
        let resp = response(status, out_headers, Body::from(body));
        return Step::Answer(resp, Some(now - ctx.started));
    }

    // Not a success: the body tells rate limit from quota, and other 4xx
    // bodies go to the client as they are.
    let body = read_body(resp, deadline, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let outcome = upstream::classify(
        kind,
        status,
        &headers,
        &body,
        lease.settings(),
        SystemTime::now(),
    );
    let conversion = ctx.req.conversion.clone();
    let read = body.clone();
    let key_spent = upstream::hints::key_limit_spent(&headers);
    super::outcome::error_step(
        ctx,
        lease,
        t0,
        outcome,
        status.as_u16(),
        &read,
        key_spent,
        move |status| {
            match conversion.client_error(status, &body) {
                // The client reads errors in its own format.
                Some(err) => err.into_response_as(conversion.client),
                None => response(status, client_headers(headers), Body::from(body)),
            }
        },
    )
    .await
}

/// The headers of an upstream answer that its client is given.
fn client_headers(mut upstream: HeaderMap) -> HeaderMap {
    // Pruned in place, not copied: most answers lose only their framing
    // headers.
    let dropped: Vec<HeaderName> = upstream
        .keys()
        .filter(|k| !upstream::forward_response_header(k.as_str()))
        .cloned()
        .collect();
    for name in &dropped {
        upstream.remove(name);
    }
    upstream
}

enum BodyError {
    /// Larger than the limit: the same again next time.
    TooLarge(String),
    /// Broken or slow: may pass.
    Broken(String),
}

/// Reads a whole body by `deadline`, up to `limit` bytes. A body that
/// comes in one piece (most do) is handed on without a copy.
async fn read_body(
    resp: http::Response<UpstreamBody>,
    deadline: Instant,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let mut body = resp.into_body();
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                // Trailers carry nothing the client is given.
                let Ok(chunk) = frame.into_data() else {
                    continue;
                };
                let held = first.as_ref().map_or(0, Bytes::len) + buf.len();
                if held + chunk.len() > limit {
                    return Err(BodyError::TooLarge(format!(
                        "response body larger than {limit} bytes"
                    )));
                }
                match first.take() {
                    None if buf.is_empty() => first = Some(chunk),
                    earlier => {
                        if let Some(earlier) = earlier {
                            buf.extend_from_slice(&earlier);
                        }
                        buf.extend_from_slice(&chunk);
                    }
                }
            }
            Ok(Some(Err(e))) => {
                return Err(BodyError::Broken(format!(
                    "connection broke while reading the body: {}",
                    crate::transport::describe_body_error(&e)
                )));
            }
            Ok(None) => return Ok(first.unwrap_or_else(|| buf.freeze())),
            Err(_) => {
                return Err(BodyError::Broken(
                    "timed out reading the response body".into(),
                ));
            }
        }
    }
}
