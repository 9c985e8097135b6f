//! Anthropic's wire format as the sim speaks it: error bodies, the
//! `message` object, the SSE events of a stream and the
//! `anthropic-ratelimit-*` headers. Pure functions, no I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderMap;
use serde::Serialize;
use serde_json::{Value, json};

use super::request::ToolInput;
use crate::sim::HintStyle;
use crate::sim::wire::{RateInfo, ceil_ms, http_date_after, insert};

mod unified;
use unified::unified_headers;

/// Anthropic's error envelope. Real answers carry the request id in the
/// body too, so a user can quote it to support.
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorInner<'a>,
    request_id: &'a str,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Value>,
}

/// `{"type":"error","error":{"type":kind,"message":message},"request_id":…}`.
pub(crate) fn error_body(kind: &str, message: &str, request_id: &str) -> String {
    envelope(kind, message, None, request_id)
}

fn envelope(kind: &str, message: &str, details: Option<Value>, request_id: &str) -> String {
    let body = Envelope {
        kind: "error",
        error: ErrorInner {
            kind,
            message,
            details,
        },
        request_id,
    };
    serde_json::to_string(&body).unwrap_or_default()
}

pub(crate) fn invalid_request(message: &str, request_id: &str) -> String {
    error_body("invalid_request_error", message, request_id)
}

pub(crate) fn authentication(message: &str, request_id: &str) -> String {
    error_body("authentication_error", message, request_id)
}

pub(crate) fn not_found(model: &str, request_id: &str) -> String {
    error_body("not_found_error", &format!("model: {model}"), request_id)
}

/// A rate-limit 429: over the account's request window.
pub(crate) fn rate_limited(limit: u32, request_id: &str) -> String {
    let message = format!(
        "This request would exceed the rate limit for your organization (org-sim) of {limit} requests per window. For details, refer to: https://docs.anthropic.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the rate of requests or try again later."
    );
    error_body("rate_limit_error", &message, request_id)
}

/// The 429 of an organisation past its monthly spend limit: a
/// `rate_limit_error` like any other, told apart only by carrying no retry
/// hint (and by `details.error_code`, which a gateway cannot rely on).
pub(crate) fn spend_limit(request_id: &str) -> String {
    envelope(
        "rate_limit_error",
        "You have reached your specified API usage limits. You will regain access on the first day of next month at 00:00 UTC.",
        Some(json!({"error_code": "enforced_spend_limit_reached"})),
        request_id,
    )
}

/// The body Anthropic sends with `status`, for a `KeyFault::Status` or a
/// drawn 5xx.
pub(crate) fn status_body(status: u16, request_id: &str) -> String {
    let (kind, message) = match status {
        400 => (
            "invalid_request_error",
            "The sim was told to fail this request.",
        ),
        401 => ("authentication_error", "invalid x-api-key"),
        402 => (
            "billing_error",
            "Your credit balance is too low to access the Anthropic API.",
        ),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => (
            "not_found_error",
            "The requested resource could not be found.",
        ),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        429 => (
            "rate_limit_error",
            "Number of requests has exceeded your rate limit.",
        ),
        529 => ("overloaded_error", "Overloaded"),
        500..=599 => ("api_error", "Internal server error"),
        _ => (
            "invalid_request_error",
            "The sim was told to fail this request.",
        ),
    };
    error_body(kind, message, request_id)
}

/// Tokens are not metered; the token headers scale with the request ones
/// so they never tell a different story (as on the OpenAI path).
const TOKENS_PER_REQUEST: u64 = 1000;

/// `now + wait` as RFC 3339 in UTC, rounded up to the whole second as
/// Anthropic's reset headers are (`2026-11-26T12:00:07Z`): never earlier
/// than the true reset.
pub(crate) fn rfc3339_after(now: SystemTime, wait: Duration) -> String {
    let at = (now + wait).duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = at.as_secs() + u64::from(at.subsec_nanos() > 0);
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    jiff::Timestamp::from_second(secs)
        .unwrap_or(jiff::Timestamp::MAX)
        .to_string()
}

/// `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`.
pub(crate) fn ratelimit_headers(headers: &mut HeaderMap, info: RateInfo, now: SystemTime) {
    let reset = rfc3339_after(now, info.reset);
    let pairs = [
        ("anthropic-ratelimit-requests-limit", info.limit.to_string()),
        (
            "anthropic-ratelimit-requests-remaining",
            info.remaining.to_string(),
        ),
        ("anthropic-ratelimit-requests-reset", reset.clone()),
        (
            "anthropic-ratelimit-tokens-limit",
            (u64::from(info.limit) * TOKENS_PER_REQUEST).to_string(),
        ),
        (
            "anthropic-ratelimit-tokens-remaining",
            (u64::from(info.remaining) * TOKENS_PER_REQUEST).to_string(),
        ),
        ("anthropic-ratelimit-tokens-reset", reset),
    ];
    for (name, value) in pairs {
        insert(headers, name, &value);
    }
    if info.unified {
        unified_headers(headers, info, now);
    }
}

/// The retry hints of a rate-limit 429 in the given style. Headers that
/// are plain HTTP (`retry-after` in either form, and `retry-after-ms`,
/// which Anthropic's own SDKs honour) are sent as the style names them;
/// OpenAI's `x-ratelimit-*` family becomes `anthropic-ratelimit-*`.
pub(crate) fn hint_headers(
    headers: &mut HeaderMap,
    style: HintStyle,
    wait: Duration,
    limit: u32,
    now: SystemTime,
) {
    let ms = ceil_ms(wait).as_millis();
    let secs = wait.as_nanos().div_ceil(1_000_000_000).max(1);
    let ratelimit = RateInfo {
        limit,
        remaining: 0,
        reset: wait,
        unified: false,
    };
    match style {
        HintStyle::All => {
            insert(headers, "retry-after", &secs.to_string());
            ratelimit_headers(headers, ratelimit, now);
        }
        HintStyle::RetryAfterOnly => insert(headers, "retry-after", &secs.to_string()),
        HintStyle::RetryAfterMsOnly => insert(headers, "retry-after-ms", &ms.to_string()),
        HintStyle::HttpDate => insert(headers, "retry-after", &http_date_after(now, wait)),
        HintStyle::ResetHeadersOnly => ratelimit_headers(headers, ratelimit, now),
        HintStyle::None => {}
    }
}

/// Why a message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    EndTurn,
    /// `max_tokens` cut the answer short.
    MaxTokens,
    /// The answer stopped before this stop sequence.
    Sequence(String),
    ToolUse,
}

impl Stop {
    fn reason(&self) -> &'static str {
        match self {
            Stop::EndTurn => "end_turn",
            Stop::MaxTokens => "max_tokens",
            Stop::Sequence(_) => "stop_sequence",
            Stop::ToolUse => "tool_use",
        }
    }

    fn sequence(&self) -> Option<&str> {
        match self {
            Stop::Sequence(s) => Some(s),
            _ => None,
        }
    }
}

/// What the assistant says: numbered text, or one tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Content {
    /// `[0][1]...` in this many pieces, the same text the OpenAI path sends.
    Text { pieces: usize },
    ToolUse {
        id: String,
        name: String,
        input: ToolInput,
    },
}

/// One `message` the sim will produce, whole or streamed.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub id: String,
    pub model: String,
    pub content: Content,
    pub stop: Stop,
    pub input_tokens: u64,
}

/// The `message` object, fields in Anthropic's order.
#[derive(Serialize)]
struct MessageObject<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'a str>,
    usage: Usage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: String,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Value,
    },
}

#[derive(Serialize)]
struct Usage {
    #[serde(skip_serializing_if = "Option::is_none")]
    input_tokens: Option<u64>,
    output_tokens: u64,
}

/// A stream event; the tag is also the SSE `event:` name.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    MessageStart {
        message: MessageObject<'a>,
    },
    ContentBlockStart {
        index: u32,
        content_block: Block<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: u32,
        delta: Delta<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: StopDelta<'a>,
        usage: Usage,
    },
    MessageStop,
}

impl Event<'_> {
    fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::Ping => "ping",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta<'a> {
    TextDelta { text: String },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct StopDelta<'a> {
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
}

/// Events before the first delta: `message_start`, `content_block_start`,
/// `ping`.
const HEAD_EVENTS: usize = 3;

impl Reply {
    /// Deltas of the one content block, each paced in a stream.
    fn deltas(&self) -> usize {
        match &self.content {
            Content::Text { pieces } => *pieces,
            Content::ToolUse { input, .. } => input.piece_count(),
        }
    }

    /// Output tokens: a text piece or a JSON piece is one token.
    fn output_tokens(&self) -> u64 {
        self.deltas() as u64
    }

    fn message<'a>(
        &'a self,
        blocks: Vec<Block<'a>>,
        stop: Option<&'a Stop>,
        usage: Usage,
    ) -> MessageObject<'a> {
        MessageObject {
            id: &self.id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content: blocks,
            stop_reason: stop.map(Stop::reason),
            stop_sequence: stop.and_then(Stop::sequence),
            usage,
        }
    }

    /// The non-stream body.
    pub fn body(&self) -> String {
        let block = match &self.content {
            Content::Text { pieces } => Block::Text {
                text: numbered(0..*pieces),
            },
            Content::ToolUse { id, name, input } => Block::ToolUse {
                id,
                name,
                input: input.value(),
            },
        };
        let usage = Usage {
            input_tokens: Some(self.input_tokens),
            output_tokens: self.output_tokens(),
        };
        let message = self.message(vec![block], Some(&self.stop), usage);
        serde_json::to_string(&message).unwrap_or_default()
    }

    /// SSE events in a full stream: the head, one delta per piece, then
    /// `content_block_stop`, `message_delta` and `message_stop`.
    pub fn event_count(&self) -> usize {
        HEAD_EVENTS + self.deltas() + 3
    }

    /// Whether event `i` is a delta (paced by `chunk_interval`).
    pub fn is_content(&self, i: usize) -> bool {
        (HEAD_EVENTS..HEAD_EVENTS + self.deltas()).contains(&i)
    }

    /// SSE event `i` (`0 <= i < event_count()`), framed as
    /// `event: <name>\ndata: <json>\n\n`.
    pub fn event(&self, i: usize) -> Bytes {
        let deltas_end = HEAD_EVENTS + self.deltas();
        let event = match i {
            0 => {
                // Anthropic counts the first output token here already.
                let usage = Usage {
                    input_tokens: Some(self.input_tokens),
                    output_tokens: 1,
                };
                Event::MessageStart {
                    message: self.message(Vec::new(), None, usage),
                }
            }
            1 => Event::ContentBlockStart {
                index: 0,
                content_block: match &self.content {
                    Content::Text { .. } => Block::Text {
                        text: String::new(),
                    },
                    Content::ToolUse { id, name, .. } => Block::ToolUse {
                        id,
                        name,
                        input: json!({}),
                    },
                },
            },
            2 => Event::Ping,
            i if i < deltas_end => {
                let k = i - HEAD_EVENTS;
                let delta = match &self.content {
                    Content::Text { .. } => Delta::TextDelta {
                        text: format!("[{k}]"),
                    },
                    Content::ToolUse { input, .. } => Delta::InputJsonDelta {
                        partial_json: input.piece(k),
                    },
                };
                Event::ContentBlockDelta { index: 0, delta }
            }
            i if i == deltas_end => Event::ContentBlockStop { index: 0 },
            i if i == deltas_end + 1 => Event::MessageDelta {
                delta: StopDelta {
                    stop_reason: self.stop.reason(),
                    stop_sequence: self.stop.sequence(),
                },
                usage: Usage {
                    input_tokens: None,
                    output_tokens: self.output_tokens(),
                },
            },
            _ => Event::MessageStop,
        };
        let json = serde_json::to_string(&event).unwrap_or_default();
        Bytes::from(format!("event: {}\ndata: {json}\n\n", event.name()))
    }
}

/// `[a][a+1]...`
fn numbered(range: std::ops::Range<usize>) -> String {
    range.map(|i| format!("[{i}]")).collect()
}

/// The body of a `count_tokens` answer.
pub(crate) fn token_count(input_tokens: u64) -> String {
    json!({ "input_tokens": input_tokens }).to_string()
}

/// `GET /v1/models` in Anthropic's shape: one page with every model.
pub(crate) fn models_list(models: &[String], created: SystemTime) -> Value {
    let created_at = rfc3339_after(created, Duration::ZERO);
    let data: Vec<Value> = models
        .iter()
        .map(|id| json!({"type": "model", "id": id, "display_name": id, "created_at": created_at}))
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": models.first(),
        "last_id": models.last(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(content: Content, stop: Stop) -> Reply {
        Reply {
            id: "msg_sim1".into(),
            model: "sim-small".into(),
            content,
            stop,
            input_tokens: 3,
        }
    }

    fn events(r: &Reply) -> Vec<String> {
        (0..r.event_count())
            .map(|i| String::from_utf8(r.event(i).to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn text_stream_is_framed_in_anthropic_order() {
        let r = reply(Content::Text { pieces: 2 }, Stop::EndTurn);
        let ev = events(&r);
        assert_eq!(ev.len(), 8);
        assert_eq!(
            ev[0],
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_sim1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"sim-small\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n"
        );
        assert_eq!(
            ev[1],
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        );
        assert_eq!(ev[2], "event: ping\ndata: {\"type\":\"ping\"}\n\n");
        assert_eq!(
            ev[4],
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"[1]\"}}\n\n"
        );
        assert_eq!(
            ev[5],
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
        );
        assert_eq!(
            ev[6],
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":2}}\n\n"
        );
        assert_eq!(
            ev[7],
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        assert!(!r.is_content(2) && r.is_content(3) && r.is_content(4) && !r.is_content(5));
    }

    #[test]
    fn whole_bodies_name_their_stop() {
        let r = reply(Content::Text { pieces: 3 }, Stop::Sequence("[3]".into()));
        assert_eq!(
            r.body(),
            r#"{"id":"msg_sim1","type":"message","role":"assistant","model":"sim-small","content":[{"type":"text","text":"[0][1][2]"}],"stop_reason":"stop_sequence","stop_sequence":"[3]","usage":{"input_tokens":3,"output_tokens":3}}"#
        );
        let tool = reply(
            Content::ToolUse {
                id: "toolu_sim1".into(),
                name: "get_weather".into(),
                input: ToolInput::City,
            },
            Stop::ToolUse,
        );
        let v: Value = serde_json::from_str(&tool.body()).unwrap();
        assert_eq!(
            v["content"],
            json!([{"type": "tool_use", "id": "toolu_sim1", "name": "get_weather", "input": {"city": "Paris"}}])
        );
        assert_eq!(v["stop_reason"], "tool_use");
        for input in [ToolInput::City, ToolInput::Piece] {
            let joined: String = (0..input.piece_count()).map(|k| input.piece(k)).collect();
            let parsed: Value = serde_json::from_str(&joined).unwrap();
            assert_eq!(parsed, input.value());
            assert_eq!(input.piece(0), "", "Anthropic's first delta is empty");
        }
    }

    #[test]
    fn resets_are_whole_utc_seconds_rounded_up() {
        let epoch = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let at = rfc3339_after(
            epoch + Duration::from_millis(100),
            Duration::from_millis(1000),
        );
        assert_eq!(at, "2026-11-18T11:06:42Z");
        let parsed: jiff::Timestamp = at.parse().unwrap();
        assert_eq!(parsed.as_second(), 1_795_000_002);
        assert_eq!(rfc3339_after(epoch, Duration::ZERO), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn error_bodies_are_enveloped() {
        assert_eq!(
            authentication("invalid x-api-key", "req_1"),
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"},"request_id":"req_1"}"#
        );
        let v: Value = serde_json::from_str(&status_body(529, "req_2")).unwrap();
        assert_eq!(v["error"]["type"], "overloaded_error");
        let v: Value = serde_json::from_str(&spend_limit("req_3")).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(
            v["error"]["details"]["error_code"],
            "enforced_spend_limit_reached"
        );
    }
}
