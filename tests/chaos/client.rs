//! One chaos client request and what the client made of it: the answer is
//! judged in the client's own wire format (OpenAI Chat Completions, OpenAI
//! Responses or Anthropic), and the
//! sim's numbered pieces (`[0][1]…`) show any lost, doubled or reordered
//! text.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenAi,
    Anthropic,
    /// OpenAI's Responses API: translated by the gateway for every provider
    /// of the chaos mix.
    Responses,
}

/// What one client asks for.
#[derive(Debug, Clone)]
pub struct Ask {
    pub format: Format,
    pub model: &'static str,
    pub stream: bool,
    /// Pieces of text the sim will send (`max_tokens`).
    pub pieces: u64,
}

/// How a request ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// 2xx with the whole text, in order.
    Complete,
    /// A stream that was committed and then ended with a well-formed error
    /// event; the text before it was a clean prefix.
    StreamError(String),
    /// A well-formed error answer: status and code (or Anthropic's type).
    Error(u16, String),
    /// Something a client could not use: the reason.
    Malformed(String),
    /// No answer within the client's patience.
    Hung,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub ask: Ask,
    pub sent: Instant,
    pub done: Instant,
    pub end: End,
    /// The answer's `Retry-After`, if it had one.
    pub retry_after: Option<Duration>,
    /// Upstream attempts the gateway made (`x-tokenyard-attempts`).
    pub attempts: Option<u32>,
    /// Every byte the client received, for the secret sweep.
    pub raw: Vec<u8>,
}

pub fn expected(n: u64) -> String {
    (0..n).map(|i| format!("[{i}]")).collect()
}

pub async fn send(
    http: &reqwest::Client,
    base: &str,
    client_key: &str,
    ask: Ask,
    patience: Duration,
) -> Outcome {
    let sent = Instant::now();
    let (raw, end, heard) =
        match tokio::time::timeout(patience, exchange(http, base, client_key, &ask)).await {
            Ok(answer) => answer,
            Err(_) => (Vec::new(), End::Hung, Heard::default()),
        };
    Outcome {
        ask,
        sent,
        done: Instant::now(),
        end,
        retry_after: heard.retry_after,
        attempts: heard.attempts,
        raw,
    }
}

/// What the answer's headers said.
#[derive(Default)]
struct Heard {
    retry_after: Option<Duration>,
    attempts: Option<u32>,
}

async fn exchange(
    http: &reqwest::Client,
    base: &str,
    client_key: &str,
    ask: &Ask,
) -> (Vec<u8>, End, Heard) {
    let req = match ask.format {
        Format::OpenAi => http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(client_key)
            .json(&json!({
                "model": ask.model,
                "messages": [{"role": "user", "content": "chaos"}],
                "stream": ask.stream,
                "max_tokens": ask.pieces,
            })),
        Format::Anthropic => http
            .post(format!("{base}/v1/messages"))
            .header("x-api-key", client_key)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({
                "model": ask.model,
                "max_tokens": ask.pieces,
                "messages": [{"role": "user", "content": "chaos"}],
                "stream": ask.stream,
            })),
        Format::Responses => http
            .post(format!("{base}/v1/responses"))
            .bearer_auth(client_key)
            .json(&json!({
                "model": ask.model,
                "instructions": "chaos",
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "chaos"}]}],
                "stream": ask.stream,
                "max_output_tokens": ask.pieces,
            })),
    };
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let end = End::Malformed(format!("no answer: {e}"));
            return (Vec::new(), end, Heard::default());
        }
    };
    let status = resp.status().as_u16();
    let number = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let heard = Heard {
        retry_after: number("retry-after").map(Duration::from_secs),
        attempts: number("x-tokenyard-attempts").and_then(|n| u32::try_from(n).ok()),
    };
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut raw = Vec::new();
    let mut broken = None;
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => raw.extend_from_slice(&c),
            Ok(None) => break,
            Err(e) => {
                broken = Some(e.to_string());
                break;
            }
        }
    }
    let end = judge(ask, status, &content_type, &raw, broken);
    (raw, end, heard)
}

fn judge(ask: &Ask, status: u16, content_type: &str, raw: &[u8], broken: Option<String>) -> End {
    if let Some(e) = broken {
        return End::Malformed(format!("body broke at the transport level: {e}"));
    }
    let Ok(text) = std::str::from_utf8(raw) else {
        return End::Malformed("body is not UTF-8".into());
    };
    if status != 200 {
        return error_answer(ask.format, status, content_type, text);
    }
    if ask.stream {
        if !content_type.starts_with("text/event-stream") {
            return End::Malformed(format!("stream answered as {content_type:?}"));
        }
        return match ask.format {
            Format::OpenAi => openai_stream(text, ask.pieces),
            Format::Anthropic => anthropic_stream(text, ask.pieces),
            Format::Responses => responses_stream(text, ask.pieces),
        };
    }
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return End::Malformed(format!("2xx body is not JSON: {text:.200}"));
    };
    let got = match ask.format {
        Format::OpenAi => v["choices"][0]["message"]["content"].as_str(),
        Format::Anthropic => v["content"][0]["text"].as_str(),
        Format::Responses => v["output"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["type"] == "message"))
            .and_then(|m| m["content"][0]["text"].as_str()),
    };
    match got {
        Some(t) if t == expected(ask.pieces) => End::Complete,
        Some(t) => End::Malformed(format!("text {t:?}, wanted {:?}", expected(ask.pieces))),
        None => End::Malformed(format!("2xx body without text: {text:.200}")),
    }
}

/// An error answer must be JSON in the client's format with a code.
fn error_answer(format: Format, status: u16, content_type: &str, text: &str) -> End {
    if !content_type.starts_with("application/json") {
        return End::Malformed(format!(
            "{status} answered as {content_type:?}: {text:.200}"
        ));
    }
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return End::Malformed(format!("{status} body is not JSON: {text:.200}"));
    };
    let code = match format {
        Format::OpenAi | Format::Responses => v["error"]["message"]
            .as_str()
            .and(v["error"]["code"].as_str().or(v["error"]["type"].as_str())),
        Format::Anthropic => (v["type"] == "error")
            .then(|| {
                v["error"]["message"]
                    .as_str()
                    .and(v["error"]["type"].as_str())
            })
            .flatten(),
    };
    match code {
        Some(code) => End::Error(status, code.to_owned()),
        None => End::Malformed(format!(
            "{status} body is not a {format:?} error: {text:.200}"
        )),
    }
}

/// `(event name, data)` for every event of an SSE body; `None` when the
/// body ends inside an event.
fn events(text: &str) -> Option<Vec<(Option<String>, String)>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(end) = rest.find("\n\n") {
        let block = &rest[..end];
        rest = &rest[end + 2..];
        let mut name = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                name = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.trim_start().to_owned());
            }
        }
        if name.is_some() || !data.is_empty() {
            out.push((name, data.join("\n")));
        }
    }
    rest.trim().is_empty().then_some(out)
}

/// The text so far must be `[0][1]…[k-1]` for some k: nothing doubled,
/// nothing reordered, nothing skipped.
fn clean_prefix(text: &str, pieces: u64) -> bool {
    expected(pieces).starts_with(text)
}

fn openai_stream(body: &str, pieces: u64) -> End {
    let Some(events) = events(body) else {
        return End::Malformed("stream ended inside an event".into());
    };
    let mut text = String::new();
    let mut done = false;
    for (_, data) in &events {
        if done {
            return End::Malformed("data after [DONE]".into());
        }
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return End::Malformed(format!("torn event {data:.200}"));
        };
        if let Some(err) = v.get("error") {
            let code = err["code"].as_str().or(err["type"].as_str());
            let (Some(code), Some(_)) = (code, err["message"].as_str()) else {
                return End::Malformed(format!("error event without code: {data:.200}"));
            };
            if !clean_prefix(&text, pieces) {
                return End::Malformed(format!("text before the error: {text:?}"));
            }
            // The error is the last thing but [DONE].
            let after: Vec<_> = events
                .iter()
                .skip_while(|(_, d)| d != data)
                .skip(1)
                .collect();
            if !after.iter().all(|(_, d)| d == "[DONE]") {
                return End::Malformed("events after the error event".into());
            }
            return End::StreamError(code.to_owned());
        }
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    if !done {
        return End::Malformed(format!("no [DONE]; text {text:?}"));
    }
    if text == expected(pieces) {
        End::Complete
    } else {
        End::Malformed(format!("text {text:?}, wanted {:?}", expected(pieces)))
    }
}

fn anthropic_stream(body: &str, pieces: u64) -> End {
    let Some(events) = events(body) else {
        return End::Malformed("stream ended inside an event".into());
    };
    let mut text = String::new();
    for (i, (name, data)) in events.iter().enumerate() {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return End::Malformed(format!("torn event {data:.200}"));
        };
        let Some(kind) = v["type"].as_str() else {
            return End::Malformed(format!("event without a type: {data:.200}"));
        };
        if name.as_deref() != Some(kind) {
            return End::Malformed(format!("event name {name:?} but type {kind:?}"));
        }
        if i == 0 && kind != "message_start" && kind != "error" {
            return End::Malformed(format!("first event is {kind}"));
        }
        match kind {
            "error" => {
                if v["error"]["type"].as_str().is_none() || v["error"]["message"].as_str().is_none()
                {
                    return End::Malformed(format!("error event without type: {data:.200}"));
                }
                if i + 1 != events.len() {
                    return End::Malformed("events after the error event".into());
                }
                if !clean_prefix(&text, pieces) {
                    return End::Malformed(format!("text before the error: {text:?}"));
                }
                return End::StreamError(v["error"]["type"].as_str().unwrap_or("").to_owned());
            }
            "content_block_delta" => {
                if let Some(t) = v["delta"]["text"].as_str() {
                    text.push_str(t);
                }
            }
            "message_stop" if i + 1 != events.len() => {
                return End::Malformed("events after message_stop".into());
            }
            _ => {}
        }
    }
    if events.last().map(|(n, _)| n.as_deref()) != Some(Some("message_stop")) {
        return End::Malformed(format!("no message_stop; text {text:?}"));
    }
    if text == expected(pieces) {
        End::Complete
    } else {
        End::Malformed(format!("text {text:?}, wanted {:?}", expected(pieces)))
    }
}

/// A Responses stream: every event named for its `type` and numbered from
/// 0 without a gap; `response.created` first; the text deltas whole and
/// once before `response.completed` (or `response.incomplete`), or a clean
/// prefix before `error` and `response.failed`, the last two events.
fn responses_stream(body: &str, pieces: u64) -> End {
    let Some(events) = events(body) else {
        return End::Malformed("stream ended inside an event".into());
    };
    let mut text = String::new();
    for (i, (name, data)) in events.iter().enumerate() {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            return End::Malformed(format!("torn event {data:.200}"));
        };
        let Some(kind) = v["type"].as_str() else {
            return End::Malformed(format!("event without a type: {data:.200}"));
        };
        if name.as_deref() != Some(kind) {
            return End::Malformed(format!("event name {name:?} but type {kind:?}"));
        }
        if v["sequence_number"].as_u64() != Some(i as u64) {
            return End::Malformed(format!("event {i} numbered {}", v["sequence_number"]));
        }
        if i == 0 && kind != "response.created" {
            return End::Malformed(format!("first event is {kind}"));
        }
        let last = i + 1 == events.len();
        match kind {
            "response.output_text.delta" => text.push_str(v["delta"].as_str().unwrap_or("")),
            "error" => {
                let failed = events.get(i + 1).and_then(|(n, _)| n.as_deref());
                if i + 2 != events.len() || failed != Some("response.failed") {
                    return End::Malformed("an error event not followed by response.failed".into());
                }
                let (Some(code), Some(_)) = (v["code"].as_str(), v["message"].as_str()) else {
                    return End::Malformed(format!("error event without code: {data:.200}"));
                };
                if !clean_prefix(&text, pieces) {
                    return End::Malformed(format!("text before the error: {text:?}"));
                }
                return End::StreamError(code.to_owned());
            }
            "response.completed" | "response.incomplete" if !last => {
                return End::Malformed(format!("events after {kind}"));
            }
            "response.completed" | "response.incomplete" => {
                let whole = v["response"]["output"][0]["content"][0]["text"].as_str();
                if whole != Some(text.as_str()) {
                    return End::Malformed(format!("final output {whole:?}, deltas {text:?}"));
                }
            }
            _ => {}
        }
    }
    let end = events.last().and_then(|(n, _)| n.as_deref());
    if !matches!(end, Some("response.completed" | "response.incomplete")) {
        return End::Malformed(format!("stream ended with {end:?}; text {text:?}"));
    }
    if text == expected(pieces) {
        End::Complete
    } else {
        End::Malformed(format!("text {text:?}, wanted {:?}", expected(pieces)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_streams() {
        let ok = "data: {\"choices\":[{\"delta\":{\"content\":\"[0]\"}}]}\n\n\
                  data: {\"choices\":[{\"delta\":{\"content\":\"[1]\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(openai_stream(ok, 2), End::Complete);
        let doubled = "data: {\"choices\":[{\"delta\":{\"content\":\"[0]\"}}]}\n\n\
                  data: {\"choices\":[{\"delta\":{\"content\":\"[0]\"}}]}\n\ndata: [DONE]\n\n";
        assert!(matches!(openai_stream(doubled, 2), End::Malformed(_)));
        let cut = "data: {\"choices\":[{\"delta\":{\"content\":\"[0]\"}}]}\n\n\
                   data: {\"error\":{\"message\":\"x\",\"code\":\"stream_interrupted\"}}\n\ndata: [DONE]\n\n";
        assert_eq!(
            openai_stream(cut, 2),
            End::StreamError("stream_interrupted".into())
        );
        let torn = "data: {\"choices\":[{\"delta\":{\"content\":\"[0]\"}}]}\n\ndata: {\"cho";
        assert!(matches!(openai_stream(torn, 2), End::Malformed(_)));
    }
}
