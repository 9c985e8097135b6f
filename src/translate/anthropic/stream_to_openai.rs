//! Streams: Anthropic events → OpenAI chunks.

use serde_json::{Map, Value, json};
use tracing::debug;

use super::error::openai_error;
use super::usage::usage_to_openai;
use super::{finish_reason, str_of};
use crate::translate::SseEvent;

/// Anthropic stream events → OpenAI `chat.completion.chunk` events (data-only
/// [`SseEvent`]s, ending with data `[DONE]`).
#[derive(Debug, Default)]
pub struct StreamToOpenAi {
    /// `created` on every chunk; the caller's clock, since this is pure.
    created: u64,
    /// From `message_start`; OpenAI repeats id and model on every chunk.
    id: String,
    model: String,
    /// Usage merged across `message_start` (input side) and `message_delta`
    /// (output side), reported in OpenAI terms on the finish chunk.
    usage: Map<String, Value>,
    /// Anthropic content-block index → OpenAI tool call index, so that
    /// `input_json_delta`s reach the right call.
    tool_blocks: Vec<(u64, u64)>,
    /// The next tool call's OpenAI index: tool calls count from 0 per message.
    next_tool: u64,
    /// `[DONE]` sent; anything after is ignored.
    done: bool,
}

impl StreamToOpenAi {
    /// Chunks stamped with `created: 0`; see [`StreamToOpenAi::with_created`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Chunks stamped with `created` (Unix seconds, from the caller's clock).
    pub fn with_created(created: u64) -> Self {
        StreamToOpenAi {
            created,
            ..Self::default()
        }
    }

    /// One Anthropic event in, the chunks it makes out (often none).
    pub fn push(&mut self, ev: &SseEvent) -> Vec<SseEvent> {
        if self.done {
            return Vec::new();
        }
        let Ok(data) = serde_json::from_str::<Value>(&ev.data) else {
            debug!(event = ?ev.event, "Anthropic stream event with non-JSON data; skipped");
            return Vec::new();
        };
        let kind = str_of(&data, "type")
            .or(ev.event.as_deref())
            .unwrap_or_default();
        match kind {
            "message_start" => {
                let m = data.get("message").unwrap_or(&Value::Null);
                self.id = str_of(m, "id").unwrap_or_default().to_owned();
                self.model = str_of(m, "model").unwrap_or_default().to_owned();
                self.merge_usage(m.get("usage"));
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None, None)]
            }
            "content_block_start" => {
                let block = data.get("content_block").unwrap_or(&Value::Null);
                match str_of(block, "type") {
                    Some("text") => match str_of(block, "text").filter(|t| !t.is_empty()) {
                        Some(t) => vec![self.chunk(json!({"content": t}), None, None)],
                        None => Vec::new(),
                    },
                    Some("tool_use") => {
                        let i = self.next_tool;
                        self.next_tool = self.next_tool.saturating_add(1);
                        if let Some(block_index) = data.get("index").and_then(Value::as_u64) {
                            self.tool_blocks.push((block_index, i));
                        }
                        let call = json!({
                            "index": i,
                            "id": str_of(block, "id").unwrap_or_default(),
                            "type": "function",
                            "function": {
                                "name": str_of(block, "name").unwrap_or_default(),
                                "arguments": "",
                            },
                        });
                        vec![self.chunk(json!({"tool_calls": [call]}), None, None)]
                    }
                    other => {
                        debug!(block_type = ?other, "Anthropic content block dropped");
                        Vec::new()
                    }
                }
            }
            "content_block_delta" => {
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match str_of(delta, "type") {
                    Some("text_delta") => match str_of(delta, "text").filter(|t| !t.is_empty()) {
                        Some(t) => vec![self.chunk(json!({"content": t}), None, None)],
                        None => Vec::new(),
                    },
                    Some("input_json_delta") => {
                        let block_index = data.get("index").and_then(Value::as_u64);
                        let tool = self
                            .tool_blocks
                            .iter()
                            .find(|(b, _)| Some(*b) == block_index)
                            .map(|&(_, i)| i);
                        let piece = str_of(delta, "partial_json").unwrap_or_default();
                        match tool {
                            Some(i) if !piece.is_empty() => {
                                let call = json!({"index": i, "function": {"arguments": piece}});
                                vec![self.chunk(json!({"tool_calls": [call]}), None, None)]
                            }
                            Some(_) => Vec::new(),
                            None => {
                                debug!(
                                    index = ?block_index,
                                    "input_json_delta for no tool_use block; dropped"
                                );
                                Vec::new()
                            }
                        }
                    }
                    other => {
                        debug!(delta_type = ?other, "Anthropic content delta dropped");
                        Vec::new()
                    }
                }
            }
            "message_delta" => {
                self.merge_usage(data.get("usage"));
                let finish = data
                    .get("delta")
                    .and_then(|d| str_of(d, "stop_reason"))
                    .map(finish_reason);
                let usage = (!self.usage.is_empty())
                    .then(|| usage_to_openai(&Value::Object(self.usage.clone())));
                vec![self.chunk(json!({}), finish, usage)]
            }
            "message_stop" => {
                self.done = true;
                vec![SseEvent::data("[DONE]")]
            }
            "error" => {
                self.done = true;
                let e = data.get("error").unwrap_or(&Value::Null);
                let (kind, code) = openai_error(str_of(e, "type").unwrap_or_default());
                let body = json!({"error": {
                    "message": str_of(e, "message").unwrap_or("upstream stream error"),
                    "type": kind,
                    "param": null,
                    "code": code,
                }});
                vec![SseEvent::data(body.to_string()), SseEvent::data("[DONE]")]
            }
            "ping" | "content_block_stop" => Vec::new(),
            other => {
                debug!(
                    event_type = other,
                    "unknown Anthropic stream event; skipped"
                );
                Vec::new()
            }
        }
    }

    /// At a clean upstream end: `[DONE]` if `message_stop` never came.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        vec![SseEvent::data("[DONE]")]
    }

    fn merge_usage(&mut self, usage: Option<&Value>) {
        if let Some(Value::Object(u)) = usage {
            for (k, v) in u {
                if !v.is_null() {
                    self.usage.insert(k.clone(), v.clone());
                }
            }
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, usage: Option<Value>) -> SseEvent {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if let Some(u) = usage
            && let Some(c) = chunk.as_object_mut()
        {
            c.insert("usage".into(), u);
        }
        SseEvent::data(chunk.to_string())
    }
}
