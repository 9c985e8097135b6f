//! Streams: OpenAI chunks → Anthropic events.

use serde_json::{Map, Value, json};
use tracing::debug;

use super::error::{anthropic_error_type, message_of};
use super::usage::{usage_from_openai, usage_to_anthropic};
use super::{dropped, is_absent, stop_reason, str_of};
use crate::translate::SseEvent;

/// OpenAI chunk events (data JSON, or `[DONE]`) → Anthropic named events.
///
/// `message_delta` waits for usage: it goes out with the first chunk at or
/// after `finish_reason` that carries usage (OpenAI's
/// `stream_options.include_usage` sends it in a chunk of its own), or at
/// `[DONE]`/[`finish`](Self::finish), whichever comes first.
#[derive(Debug, Default)]
pub struct StreamToAnthropic {
    /// `message_start` sent; it needs the id and model of the first chunk.
    started: bool,
    /// From the first chunk; also the seed for ids of tool calls that
    /// arrive without one.
    id: String,
    /// The content block being streamed: Anthropic blocks are strictly
    /// sequential, so at most one is open.
    open: Option<OpenBlock>,
    /// Index of the next content block.
    next_block: u64,
    /// OpenAI tool call indexes that have had a block. A fragment for one
    /// whose block is already closed cannot be appended any more.
    tools_seen: Vec<u64>,
    /// From `finish_reason`; sent in `message_delta`.
    stop_reason: Option<&'static str>,
    /// Latest usage seen: (input, output, cache-read) tokens.
    usage: Option<(u64, u64, u64)>,
    /// `message_delta` sent.
    delta_sent: bool,
    /// `message_stop` or `error` sent; anything after is ignored.
    done: bool,
}

#[derive(Debug)]
struct OpenBlock {
    /// Anthropic content-block index.
    index: u64,
    /// `Some(OpenAI tool call index)` for a tool_use block, `None` for text.
    tool: Option<u64>,
}

/// An Anthropic event: the SSE name is the data's `type`, as Anthropic sends.
fn anthropic_event(data: Value) -> SseEvent {
    let name = str_of(&data, "type").unwrap_or_default().to_owned();
    SseEvent::named(name, data.to_string())
}

impl StreamToAnthropic {
    pub fn new() -> Self {
        Self::default()
    }

    /// One OpenAI chunk (or `[DONE]`) in, the Anthropic events it makes out.
    pub fn push(&mut self, ev: &SseEvent) -> Vec<SseEvent> {
        if self.done {
            return Vec::new();
        }
        let data = ev.data.trim();
        if data == "[DONE]" {
            return self.end();
        }
        let chunk = match serde_json::from_str::<Value>(data) {
            Ok(c @ Value::Object(_)) => c,
            _ => {
                debug!("OpenAI stream chunk is not a JSON object; skipped");
                return Vec::new();
            }
        };
        if let Some(e) = chunk.get("error").filter(|e| !e.is_null()) {
            // Some OpenAI-compatible servers report failures mid-stream.
            self.done = true;
            let kind =
                anthropic_error_type(str_of(e, "type").unwrap_or_default(), str_of(e, "code"));
            let message = message_of(e).unwrap_or_else(|| "upstream stream error".to_owned());
            return vec![anthropic_event(json!({
                "type": "error",
                "error": {"type": kind, "message": message},
            }))];
        }
        let mut out = Vec::new();
        let chunk_usage = chunk
            .get("usage")
            .filter(|u| u.is_object())
            .map(usage_from_openai);
        if chunk_usage.is_some() {
            self.usage = chunk_usage;
        }
        if !self.started {
            self.id = str_of(&chunk, "id").unwrap_or_default().to_owned();
            self.start(str_of(&chunk, "model").unwrap_or_default(), &mut out);
        }
        let choices = chunk
            .get("choices")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for choice in choices {
            if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                dropped("choices[n>0]");
                continue;
            }
            self.choice(choice, &mut out);
        }
        if self.stop_reason.is_some() && chunk_usage.is_some() && !self.delta_sent {
            self.message_delta(&mut out);
        }
        out
    }

    /// At a clean upstream end: whatever is still owed of `content_block_stop`,
    /// `message_delta` and `message_stop` if `[DONE]` never came.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        if self.done {
            return Vec::new();
        }
        self.end()
    }

    fn start(&mut self, model: &str, out: &mut Vec<SseEvent>) {
        self.started = true;
        let (input, _, cached) = self.usage.unwrap_or_default();
        out.push(anthropic_event(json!({
            "type": "message_start",
            "message": {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage_to_anthropic((input, 0, cached)),
            },
        })));
    }

    fn choice(&mut self, choice: &Value, out: &mut Vec<SseEvent>) {
        if self.stop_reason.is_some() {
            // After finish_reason the content is complete and its blocks are
            // closed; anything more would break Anthropic's event order.
            debug!("OpenAI choice delta after finish_reason; dropped");
            return;
        }
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        for key in ["content", "refusal"] {
            if let Some(t) = str_of(delta, key).filter(|t| !t.is_empty()) {
                self.text(t, out);
            }
        }
        if !is_absent(delta.get("reasoning_content")) {
            dropped("delta.reasoning_content");
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for call in calls {
                self.tool_call(call, out);
            }
        }
        if let Some(reason) = str_of(choice, "finish_reason") {
            self.close_block(out);
            self.stop_reason = Some(stop_reason(reason));
        }
    }

    fn text(&mut self, text: &str, out: &mut Vec<SseEvent>) {
        if !matches!(self.open, Some(OpenBlock { tool: None, .. })) {
            self.close_block(out);
            self.open_block(None, json!({"type": "text", "text": ""}), out);
        }
        let index = self.open.as_ref().map_or(0, |b| b.index);
        out.push(anthropic_event(json!({
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": text},
        })));
    }

    fn tool_call(&mut self, call: &Value, out: &mut Vec<SseEvent>) {
        let open_tool = self.open.as_ref().and_then(|b| b.tool);
        let index = match call.get("index").and_then(Value::as_u64) {
            Some(i) => i,
            // Some servers omit `index`: a fragment without an id continues
            // the open call, one with an id starts a new call.
            None => match (open_tool, str_of(call, "id")) {
                (Some(i), None) => i,
                _ => self
                    .tools_seen
                    .iter()
                    .max()
                    .map_or(0, |m| m.saturating_add(1)),
            },
        };
        let function = call.get("function").unwrap_or(&Value::Null);
        if open_tool != Some(index) {
            if self.tools_seen.contains(&index) {
                debug!(
                    index,
                    "tool call fragment after its block was closed; dropped"
                );
                return;
            }
            self.close_block(out);
            self.tools_seen.push(index);
            let id = match str_of(call, "id") {
                Some(id) => id.to_owned(),
                None => {
                    let seed: String = self
                        .id
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                        .collect();
                    format!("toolu_{seed}_{index}")
                }
            };
            let name = str_of(function, "name").unwrap_or_default();
            self.open_block(
                Some(index),
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                out,
            );
        }
        if let Some(piece) = str_of(function, "arguments").filter(|a| !a.is_empty()) {
            let block = self.open.as_ref().map_or(0, |b| b.index);
            out.push(anthropic_event(json!({
                "type": "content_block_delta",
                "index": block,
                "delta": {"type": "input_json_delta", "partial_json": piece},
            })));
        }
    }

    fn open_block(&mut self, tool: Option<u64>, block: Value, out: &mut Vec<SseEvent>) {
        let index = self.next_block;
        self.next_block = self.next_block.saturating_add(1);
        self.open = Some(OpenBlock { index, tool });
        out.push(anthropic_event(json!({
            "type": "content_block_start",
            "index": index,
            "content_block": block,
        })));
    }

    fn close_block(&mut self, out: &mut Vec<SseEvent>) {
        if let Some(block) = self.open.take() {
            out.push(anthropic_event(json!({
                "type": "content_block_stop",
                "index": block.index,
            })));
        }
    }

    fn message_delta(&mut self, out: &mut Vec<SseEvent>) {
        self.delta_sent = true;
        let mut usage = Map::new();
        let (input, output, cached) = self.usage.unwrap_or_default();
        if self.usage.is_some() {
            // Cumulative, as Anthropic's own message_delta usage is; the
            // message_start may have gone out before input usage was known.
            usage.insert("input_tokens".into(), input.into());
            if cached > 0 {
                usage.insert("cache_read_input_tokens".into(), cached.into());
            }
        }
        usage.insert("output_tokens".into(), output.into());
        out.push(anthropic_event(json!({
            "type": "message_delta",
            "delta": {
                "stop_reason": self.stop_reason.unwrap_or("end_turn"),
                "stop_sequence": null,
            },
            "usage": usage,
        })));
    }

    /// `[DONE]` or a clean end: close everything and stop.
    fn end(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if !self.started {
            self.start("", &mut out);
        }
        self.close_block(&mut out);
        if !self.delta_sent {
            self.message_delta(&mut out);
        }
        out.push(anthropic_event(json!({"type": "message_stop"})));
        self.done = true;
        out
    }
}
