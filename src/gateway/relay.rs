//! Relaying a committed stream to the client.
//!
//! Bytes go out as they arrive, but only in whole SSE events: a chunk that
//! ends mid-event keeps its tail until the rest arrives. So when the
//! upstream breaks, the client has seen only complete events, and the error
//! event we append is never glued onto half a JSON object. After an error
//! the stream ends with `data: [DONE]` — it is never retried, because text
//! the client already has must not be sent twice.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, Stream, StreamExt};
use tokio::time::Instant;

use super::error::{ApiError, Format};
use crate::events::{RequestRecord, human};
use crate::pool::{Lease, PoolHandle, Verdict};
use crate::upstream::usage::StreamUsage;
use crate::vocab::Usage;

/// Where a stream's usage is read: from the upstream's SSE events as they
/// pass, or (gRPC) from a cell its message reader fills in.
pub enum UsageProbe {
    Sse(StreamUsage),
    Cell(std::sync::Arc<std::sync::Mutex<Option<Usage>>>),
}

impl UsageProbe {
    fn events(&mut self, events: &[u8]) {
        if let UsageProbe::Sse(s) = self {
            s.events(events);
        }
    }

    fn usage(&self) -> Option<Usage> {
        match self {
            UsageProbe::Sse(s) => s.usage(),
            UsageProbe::Cell(c) => *c.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// Where the last complete SSE event in `buf` ends (just past its blank
/// line), if any.
pub fn last_event_end(buf: &[u8]) -> Option<usize> {
    let mut end = None;
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' && buf[i + 1] == b'\n' {
            end = Some(i + 2);
            i += 2;
            continue;
        }
        if buf[i] == b'\r' && i + 3 < buf.len() && &buf[i..i + 4] == b"\r\n\r\n" {
            end = Some(i + 4);
            i += 4;
            continue;
        }
        i += 1;
    }
    end
}

/// Splits complete events off the front of `pending`.
pub struct EventBuffer {
    pending: BytesMut,
}

impl EventBuffer {
    pub fn new() -> Self {
        EventBuffer {
            pending: BytesMut::new(),
        }
    }

    /// Adds a chunk; returns whatever complete events are now available.
    pub fn push(&mut self, chunk: Bytes) -> Option<Bytes> {
        if self.pending.is_empty() && chunk.ends_with(b"\n\n") {
            // The common case: a chunk of whole events, passed on untouched.
            return Some(chunk);
        }
        self.pending.extend_from_slice(&chunk);
        let end = last_event_end(&self.pending)?;
        Some(self.pending.split_to(end).freeze())
    }

    /// What is left at a clean end of stream.
    pub fn rest(&mut self) -> Option<Bytes> {
        (!self.pending.is_empty()).then(|| self.pending.split().freeze())
    }
}

impl Default for EventBuffer {
    fn default() -> Self {
        Self::new()
    }
}

/// How a committed stream's whole upstream events become what the client
/// reads: untouched when both sides speak the same format, translated
/// otherwise (see `convert`).
pub trait Reframe: Send + 'static {
    /// Whole upstream SSE events in, client bytes out (maybe none).
    fn events(&mut self, whole: Bytes) -> Bytes;
    /// The upstream ended cleanly: anything still owed to the client.
    fn end(&mut self) -> Bytes {
        Bytes::new()
    }
    /// The committed stream broke: the tail that tells the client so.
    fn error(&mut self, message: &str) -> Bytes;
}

/// The tail that ends a broken stream, in `format`: OpenAI's error chunk
/// and `[DONE]`, Anthropic's `error` event, or the Responses API's `error`
/// and `response.failed` events (numbered from 0; see [`Passthrough`] for a
/// stream that already numbered some).
pub fn error_event(format: Format, message: &str) -> Bytes {
    let err = ApiError::new(
        http::StatusCode::BAD_GATEWAY,
        "upstream_error",
        message.to_string(),
    )
    .code("stream_interrupted");
    let mut out = Vec::with_capacity(256);
    match format {
        Format::OpenAi => {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&serde_json::to_vec(&err.body()).expect("json"));
            out.extend_from_slice(b"\n\ndata: [DONE]\n\n");
        }
        Format::Anthropic => {
            out.extend_from_slice(b"event: error\ndata: ");
            out.extend_from_slice(&serde_json::to_vec(&err.anthropic_body()).expect("json"));
            out.extend_from_slice(b"\n\n");
        }
        Format::Responses => return responses_error(message, 0),
    }
    Bytes::from(out)
}

/// The Responses API's end of a broken stream, numbered from `seq`: an
/// `error` event, then `response.failed` (which clients such as Codex wait
/// for before they give up on a turn).
fn responses_error(message: &str, seq: u64) -> Bytes {
    let error = serde_json::json!({
        "type": "error",
        "sequence_number": seq,
        "code": "stream_interrupted",
        "message": message,
        "param": null,
    });
    let failed = serde_json::json!({
        "type": "response.failed",
        "sequence_number": seq + 1,
        "response": {
            "object": "response",
            "status": "failed",
            "error": {"code": "server_error", "message": message},
            "output": [],
        },
    });
    Bytes::from(format!(
        "event: error\ndata: {error}\n\nevent: response.failed\ndata: {failed}\n\n"
    ))
}

/// The last `"sequence_number":N` in `events`, if any.
fn last_sequence_number(events: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sequence_number\":";
    let at = events.windows(KEY.len()).rposition(|w| w == KEY)?;
    let digits: String = events[at + KEY.len()..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| b as char)
        .collect();
    digits.parse().ok()
}

/// Same format on both sides: whole events go through untouched.
pub struct Passthrough {
    format: Format,
    /// Responses streams number their events; an error tail continues the
    /// count. Read from the last event passed (only for that format).
    next_seq: u64,
    /// Drop the usage chunk (`"choices":[]` with a `usage` object) of an
    /// OpenAI stream whose client did not ask for it.
    strip_usage: bool,
}

impl Passthrough {
    pub fn new(format: Format) -> Self {
        Passthrough {
            format,
            next_seq: 0,
            strip_usage: false,
        }
    }

    pub fn strip_usage(mut self, yes: bool) -> Self {
        self.strip_usage = yes;
        self
    }
}

/// `whole` without the events that are only an OpenAI usage chunk; the
/// bytes untouched when there is none.
fn without_usage_chunk(whole: Bytes) -> Bytes {
    if !whole.windows(9).any(|w| w == b"\"usage\":{") {
        return whole;
    }
    let events = crate::translate::parse_events(&whole);
    let kept: Vec<_> = events
        .into_iter()
        .filter(|e| {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&e.data) else {
                return true;
            };
            let usage_only =
                v["usage"].is_object() && v["choices"].as_array().is_some_and(|c| c.is_empty());
            !usage_only
        })
        .collect();
    crate::translate::write_events(&kept)
}

impl Reframe for Passthrough {
    fn events(&mut self, whole: Bytes) -> Bytes {
        if self.format == Format::Responses
            && let Some(n) = last_sequence_number(&whole)
        {
            self.next_seq = n + 1;
        }
        if self.strip_usage {
            return without_usage_chunk(whole);
        }
        whole
    }

    fn error(&mut self, message: &str) -> Bytes {
        match self.format {
            Format::Responses => responses_error(message, self.next_seq),
            f => error_event(f, message),
        }
    }
}

/// Whether `out`, whole client events, ends with the event that ends a
/// stream in `format`: OpenAI's `[DONE]`, Anthropic's `message_stop`, the
/// Responses API's `response.completed`/`incomplete`/`failed`. Only the last
/// event is looked at, parsed whole, so text inside a JSON string never
/// matches.
fn ends_stream(format: Format, out: &[u8]) -> bool {
    let body = out
        .strip_suffix(b"\r\n\r\n")
        .or_else(|| out.strip_suffix(b"\n\n"))
        .unwrap_or(out);
    let start = last_event_end(body).unwrap_or(0);
    let Some(last) = crate::translate::parse_events(&out[start..]).pop() else {
        return false;
    };
    match format {
        Format::OpenAi => last.data == "[DONE]",
        Format::Anthropic => last.event.as_deref() == Some("message_stop"),
        Format::Responses => matches!(
            last.event.as_deref(),
            Some("response.completed" | "response.incomplete" | "response.failed")
        ),
    }
}

/// Publishes the request record when the stream ends, however it ends —
/// including the client walking away, which drops the stream.
struct Finish {
    pool: PoolHandle,
    lease: Option<Lease>,
    record: RequestRecord,
    started: Instant,
    done: bool,
    /// Counts the answer's tokens when the stream ends (`None`: this
    /// endpoint's answers are not counted).
    usage: Option<UsageProbe>,
}

impl Finish {
    /// Ends the request as answered once its last event goes out: a client
    /// may hang up right after it (async-openai drops the body at
    /// `[DONE]`), before the upstream's own end arrives, and it has not
    /// left mid-stream (499). Also publishes the record before the client
    /// can read that event, so whoever reads the stream to its end then
    /// finds the request counted.
    fn answered(&mut self, out: &[u8]) {
        if !self.done
            && let Some(format) = self.record.format
            && ends_stream(format, out)
        {
            self.end(None);
        }
    }

    fn end(&mut self, error: Option<String>) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(e) = &error {
            self.record.error = Some(e.clone());
            if let Some(lease) = &self.lease {
                self.pool.record(
                    lease,
                    &Verdict::Failure { reason: e.clone() },
                    None,
                    self.started.elapsed(),
                );
            }
        }
        self.record.latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        if let (Some(lease), Some(probe)) = (&self.lease, &self.usage) {
            let tokens = probe.usage();
            self.pool.add_usage(lease, tokens);
            self.record.tokens = tokens;
        }
        self.lease = None;
        self.pool.finish(self.record.clone());
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if !self.done {
            self.record.status = 499;
            self.record.error = Some("client closed the stream".into());
            self.end(None);
        }
    }
}

/// An upstream body: chunks of bytes, or a described transport error.
pub type Upstream = BoxStream<'static, Result<Bytes, String>>;

struct Relay {
    first: Option<Bytes>,
    upstream: Upstream,
    reframe: Box<dyn Reframe>,
    buffer: EventBuffer,
    idle: Duration,
    /// The request's overall deadline (`gateway.request_timeout`).
    deadline: Instant,
    finish: Finish,
    over: bool,
}

/// The client-facing body of a committed stream. `first` holds the events
/// read before committing; `buffer` any partial event after them.
#[allow(clippy::too_many_arguments)]
pub fn relay(
    pool: PoolHandle,
    lease: Lease,
    record: RequestRecord,
    started: Instant,
    first: Bytes,
    buffer: EventBuffer,
    upstream: Upstream,
    mut reframe: Box<dyn Reframe>,
    idle: Duration,
    deadline: Instant,
    mut usage: Option<UsageProbe>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    if let Some(u) = &mut usage {
        u.events(&first);
    }
    let state = Relay {
        first: Some(reframe.events(first)),
        upstream,
        reframe,
        buffer,
        idle,
        deadline,
        finish: Finish {
            pool,
            lease: Some(lease),
            record,
            started,
            done: false,
            usage,
        },
        over: false,
    };
    futures_util::stream::unfold(state, |mut r| async move {
        if let Some(first) = r.first.take()
            && !first.is_empty()
        {
            r.finish.answered(&first);
            return Some((Ok(first), r));
        }
        loop {
            if r.over {
                return None;
            }
            let until = (Instant::now() + r.idle).min(r.deadline);
            match tokio::time::timeout_at(until, r.upstream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    if let Some(whole) = r.buffer.push(chunk) {
                        if let Some(u) = &mut r.finish.usage {
                            u.events(&whole);
                        }
                        let out = r.reframe.events(whole);
                        if !out.is_empty() {
                            r.finish.answered(&out);
                            return Some((Ok(out), r));
                        }
                    }
                }
                Ok(None) => {
                    r.over = true;
                    r.finish.end(None);
                    let mut tail = BytesMut::new();
                    if let Some(rest) = r.buffer.rest() {
                        if let Some(u) = &mut r.finish.usage {
                            u.events(&rest);
                        }
                        tail.extend_from_slice(&r.reframe.events(rest));
                    }
                    tail.extend_from_slice(&r.reframe.end());
                    if tail.is_empty() {
                        return None;
                    }
                    return Some((Ok(tail.freeze()), r));
                }
                Ok(Some(Err(e))) => {
                    r.over = true;
                    let msg = format!(
                        "the upstream stream broke after {}: {e}; the response is incomplete",
                        human(r.finish.started.elapsed()),
                    );
                    r.finish.end(Some(msg.clone()));
                    return Some((Ok(r.reframe.error(&msg)), r));
                }
                Err(_) => {
                    r.over = true;
                    let msg = if Instant::now() >= r.deadline {
                        format!(
                            "the request reached its deadline after {}; the response is incomplete",
                            human(r.finish.started.elapsed())
                        )
                    } else {
                        format!(
                            "the upstream sent nothing for {}; the response is incomplete",
                            human(r.idle)
                        )
                    };
                    r.finish.end(Some(msg.clone()));
                    return Some((Ok(r.reframe.error(&msg)), r));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_event_ends() {
        assert_eq!(last_event_end(b"data: a\n\n"), Some(9));
        assert_eq!(last_event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(last_event_end(b"data: a\n"), None);
        assert_eq!(last_event_end(b"data: a\r\n\r\ndata"), Some(11));
        assert_eq!(last_event_end(b""), None);
    }

    #[test]
    fn buffer_only_releases_whole_events() {
        let mut b = EventBuffer::new();
        assert_eq!(b.push(Bytes::from_static(b"data: {\"a\":")), None);
        assert_eq!(
            b.push(Bytes::from_static(b"1}\n\ndata: {\"b\"")).as_deref(),
            Some(&b"data: {\"a\":1}\n\n"[..])
        );
        assert_eq!(
            b.push(Bytes::from_static(b":2}\n\n")).as_deref(),
            Some(&b"data: {\"b\":2}\n\n"[..])
        );
        assert_eq!(b.rest(), None);
        // Whole-event chunks pass straight through.
        let whole = Bytes::from_static(b"data: x\n\n");
        assert_eq!(b.push(whole.clone()), Some(whole));
        b.push(Bytes::from_static(b"data: tail"));
        assert_eq!(b.rest().as_deref(), Some(&b"data: tail"[..]));
    }

    #[test]
    fn only_a_last_event_that_ends_the_stream_ends_it() {
        let chunk =
            |d: &str| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":{d:?}}}}}]}}\n\n");
        assert!(ends_stream(Format::OpenAi, b"data: [DONE]\n\n"));
        let tail = format!("{}data: [DONE]\n\n", chunk("x"));
        assert!(ends_stream(Format::OpenAi, tail.as_bytes()));
        assert!(ends_stream(
            Format::OpenAi,
            b"data: {}\r\n\r\ndata: [DONE]\r\n\r\n"
        ));
        // Content that quotes the marker, or a marker not last: not the end.
        assert!(!ends_stream(
            Format::OpenAi,
            chunk("\n\ndata: [DONE]\n\n").as_bytes()
        ));
        let early = format!("data: [DONE]\n\n{}", chunk("x"));
        assert!(!ends_stream(Format::OpenAi, early.as_bytes()));
        assert!(!ends_stream(Format::OpenAi, b""));

        let stop = b"event: message_delta\ndata: {}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        assert!(ends_stream(Format::Anthropic, stop));
        assert!(!ends_stream(Format::OpenAi, stop));
        assert!(!ends_stream(
            Format::Anthropic,
            b"event: message_delta\ndata: {}\n\n"
        ));
        for end in [
            "response.completed",
            "response.incomplete",
            "response.failed",
        ] {
            let e = format!("event: {end}\ndata: {{\"type\":\"{end}\"}}\n\n");
            assert!(ends_stream(Format::Responses, e.as_bytes()), "{end}");
        }
        let delta = b"event: response.output_text.delta\ndata: {}\n\n";
        assert!(!ends_stream(Format::Responses, delta));
    }

    #[test]
    fn error_event_is_one_event_then_done() {
        let e = error_event(Format::OpenAi, "broke");
        let text = std::str::from_utf8(&e).unwrap();
        let mut events = text.split("\n\n").filter(|s| !s.is_empty());
        let first = events.next().unwrap().strip_prefix("data: ").unwrap();
        let v: serde_json::Value = serde_json::from_str(first).unwrap();
        assert_eq!(v["error"]["code"], "stream_interrupted");
        assert_eq!(events.next(), Some("data: [DONE]"));
        assert_eq!(events.next(), None);
    }

    #[test]
    fn responses_error_tail_continues_the_numbering() {
        let mut p = Passthrough::new(Format::Responses);
        let first = Bytes::from_static(
            b"event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0}\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\": 17,\"delta\":\"x\"}\n\n",
        );
        assert_eq!(p.events(first.clone()), first);
        let tail = p.error("broke");
        let events = crate::translate::parse_events(&tail);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event.as_deref(), Some("error"));
        assert_eq!(events[1].event.as_deref(), Some("response.failed"));
        let failed: serde_json::Value = serde_json::from_str(&events[1].data).unwrap();
        let error: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(error["sequence_number"], 18);
        assert_eq!(error["code"], "stream_interrupted");
        assert_eq!(failed["sequence_number"], 19);
        assert_eq!(failed["response"]["status"], "failed");
        assert_eq!(failed["response"]["error"]["message"], "broke");
    }

    #[test]
    fn anthropic_error_event_is_one_named_event() {
        let e = error_event(Format::Anthropic, "broke");
        let text = std::str::from_utf8(&e).unwrap();
        let data = text
            .strip_prefix("event: error\ndata: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "api_error");
        assert_eq!(v["error"]["message"], "broke");
    }
}
