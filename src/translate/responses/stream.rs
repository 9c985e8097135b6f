//! Streams: chat completion chunks → Responses API events.
//!
//! Items open as their first piece arrives: the assistant's text as a
//! `message` item (closed when a tool call begins, so text after a call is
//! a new item), each tool call as a `function_call` (or `custom_tool_call`)
//! item, left open until the chat stream finishes. Every event carries its
//! `type` (also the SSE event name) and a `sequence_number` counting from 0.

use serde_json::{Map, Value, json};
use tracing::debug;

use super::response::{arguments_text, content_text};
use super::{Context, status_of, str_of, usage_from_chat};
use crate::translate::SseEvent;

/// Chat `chat.completion.chunk` events (data-only, ending with `[DONE]`)
/// → Responses events, ending with `response.completed` (or
/// `response.incomplete`, or, when the stream breaks, `error` and
/// `response.failed`).
#[derive(Debug)]
pub struct StreamToResponses {
    ctx: Context,
    created_at: u64,
    /// The provider's model name once a chunk names it.
    model: String,
    /// The next event's `sequence_number`.
    seq: u64,
    /// `response.created` is out.
    started: bool,
    /// The next item's `output_index`.
    next_output: usize,
    /// The assistant text item being written.
    message: Option<OpenMessage>,
    /// Tool calls being written, in the order they began.
    calls: Vec<OpenCall>,
    /// Finished items with their `output_index`, for the final response.
    finished: Vec<(usize, Value)>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    /// The final event is out; anything after is ignored.
    done: bool,
}

#[derive(Debug)]
struct OpenMessage {
    id: String,
    output_index: usize,
    /// `(content_index, text)` of the output_text part, once opened.
    text: Option<(usize, String)>,
    /// `(content_index, text)` of the refusal part, once opened.
    refusal: Option<(usize, String)>,
    parts: usize,
}

#[derive(Debug)]
struct OpenCall {
    /// The chat stream's `tool_calls[].index`.
    chat_index: u64,
    output_index: usize,
    id: String,
    call_id: String,
    /// The chat function name (namespaced tools flattened).
    chat_name: String,
    arguments: String,
    /// Calls to a custom tool: its input is known only once the arguments
    /// are whole, so its delta goes out at the end.
    custom: bool,
}

impl StreamToResponses {
    /// Events for the response of a request translated with `ctx`;
    /// `created_at` in Unix seconds, from the caller's clock.
    pub fn new(ctx: Context, created_at: u64) -> Self {
        let model = ctx.model.clone();
        StreamToResponses {
            ctx,
            created_at,
            model,
            seq: 0,
            started: false,
            next_output: 0,
            message: None,
            calls: Vec::new(),
            finished: Vec::new(),
            finish_reason: None,
            usage: None,
            done: false,
        }
    }

    /// One chat event in, the Responses events it makes out.
    pub fn push(&mut self, ev: &SseEvent) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if ev.data.trim() == "[DONE]" {
            self.complete(&mut out);
            return out;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&ev.data) else {
            debug!("chat stream event with non-JSON data; skipped");
            return out;
        };
        if let Some(e) = chunk.get("error").filter(|e| e.is_object()) {
            // An error reported inside the stream by the provider.
            let message = str_of(e, "message").unwrap_or("the provider reported an error");
            self.fail(
                &mut out,
                &format!("the provider's stream failed: {message}"),
            );
            return out;
        }
        if let Some(m) = str_of(&chunk, "model").filter(|m| !m.is_empty()) {
            self.model = m.to_owned();
        }
        self.start(&mut out);
        if let Some(u) = chunk.get("usage").and_then(usage_from_chat) {
            self.usage = Some(u);
        }
        let choices: &[Value] = chunk
            .get("choices")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice);
        for choice in choices {
            if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                debug!("chat stream choice other than 0; skipped");
                continue;
            }
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            let text = content_text(delta.get("content"));
            if !text.is_empty() {
                self.text(&mut out, &text);
            }
            if let Some(r) = str_of(delta, "refusal").filter(|r| !r.is_empty()) {
                self.refusal(&mut out, r);
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for c in calls {
                    self.tool_call(&mut out, c);
                }
            }
            if let Some(f) = str_of(choice, "finish_reason") {
                self.finish_reason = Some(f.to_owned());
            }
        }
        out
    }

    /// The chat stream ended without `[DONE]`: finish the response anyway.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if !self.done {
            self.complete(&mut out);
        }
        out
    }

    /// The stream broke after it was committed: an `error` event, then
    /// `response.failed` with what was finished so far.
    pub fn error(&mut self, message: &str) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if !self.done {
            self.fail(&mut out, message);
        }
        out
    }

    fn emit(&mut self, out: &mut Vec<SseEvent>, kind: &str, fields: Value) {
        let mut body = Map::new();
        body.insert("type".into(), kind.into());
        body.insert("sequence_number".into(), self.seq.into());
        if let Value::Object(f) = fields {
            body.extend(f);
        }
        self.seq += 1;
        out.push(SseEvent::named(kind, Value::Object(body).to_string()));
    }

    fn start(&mut self, out: &mut Vec<SseEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self
            .ctx
            .response(self.created_at, &self.model, "in_progress", Vec::new());
        self.emit(out, "response.created", json!({"response": r}));
        self.emit(out, "response.in_progress", json!({"response": r}));
    }

    /// The open message item, opened if need be.
    fn open_message(&mut self, out: &mut Vec<SseEvent>) {
        if self.message.is_some() {
            return;
        }
        let output_index = self.next_output;
        self.next_output += 1;
        let id = self.ctx.item_id("msg", output_index);
        let item = json!({
            "type": "message",
            "id": id,
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        });
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": item}),
        );
        self.message = Some(OpenMessage {
            id,
            output_index,
            text: None,
            refusal: None,
            parts: 0,
        });
    }

    fn text(&mut self, out: &mut Vec<SseEvent>, delta: &str) {
        self.open_message(out);
        let m = self.message.as_mut().expect("opened");
        let (id, output_index) = (m.id.clone(), m.output_index);
        let content_index = match &mut m.text {
            Some((i, text)) => {
                text.push_str(delta);
                *i
            }
            None => {
                let i = m.parts;
                m.parts += 1;
                m.text = Some((i, delta.to_owned()));
                let part =
                    json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
                self.emit(
                    out,
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": output_index, "content_index": i, "part": part}),
                );
                i
            }
        };
        self.emit(
            out,
            "response.output_text.delta",
            json!({
                "item_id": id,
                "output_index": output_index,
                "content_index": content_index,
                "delta": delta,
                "logprobs": [],
            }),
        );
    }

    fn refusal(&mut self, out: &mut Vec<SseEvent>, delta: &str) {
        self.open_message(out);
        let m = self.message.as_mut().expect("opened");
        let (id, output_index) = (m.id.clone(), m.output_index);
        let content_index = match &mut m.refusal {
            Some((i, text)) => {
                text.push_str(delta);
                *i
            }
            None => {
                let i = m.parts;
                m.parts += 1;
                m.refusal = Some((i, delta.to_owned()));
                self.emit(
                    out,
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": output_index, "content_index": i,
                           "part": {"type": "refusal", "refusal": ""}}),
                );
                i
            }
        };
        self.emit(
            out,
            "response.refusal.delta",
            json!({"item_id": id, "output_index": output_index, "content_index": content_index, "delta": delta}),
        );
    }

    fn close_message(&mut self, out: &mut Vec<SseEvent>) {
        let Some(m) = self.message.take() else {
            return;
        };
        let mut content = Vec::new();
        let mut parts: Vec<(usize, bool, String)> = Vec::new();
        if let Some((i, t)) = m.text {
            parts.push((i, true, t));
        }
        if let Some((i, r)) = m.refusal {
            parts.push((i, false, r));
        }
        parts.sort_by_key(|p| p.0);
        for (i, is_text, t) in parts {
            let at = json!({"item_id": m.id, "output_index": m.output_index, "content_index": i});
            let part = if is_text {
                let mut done = at.clone();
                done["text"] = t.as_str().into();
                done["logprobs"] = json!([]);
                self.emit(out, "response.output_text.done", done);
                json!({"type": "output_text", "text": t, "annotations": [], "logprobs": []})
            } else {
                let mut done = at.clone();
                done["refusal"] = t.as_str().into();
                self.emit(out, "response.refusal.done", done);
                json!({"type": "refusal", "refusal": t})
            };
            let mut done = at;
            done["part"] = part.clone();
            self.emit(out, "response.content_part.done", done);
            content.push(part);
        }
        let item = json!({
            "type": "message",
            "id": m.id,
            "status": "completed",
            "role": "assistant",
            "content": content,
        });
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": m.output_index, "item": item}),
        );
        self.finished.push((m.output_index, item));
    }

    fn tool_call(&mut self, out: &mut Vec<SseEvent>, c: &Value) {
        let chat_index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = c.get("function");
        let name_piece = function.and_then(|f| str_of(f, "name")).unwrap_or_default();
        let args_piece = arguments_text(function.and_then(|f| f.get("arguments")));
        let pos = match self.calls.iter().position(|k| k.chat_index == chat_index) {
            Some(pos) => {
                let call = &mut self.calls[pos];
                call.chat_name.push_str(name_piece);
                if call.call_id.is_empty()
                    && let Some(id) = str_of(c, "id")
                {
                    call.call_id = id.to_owned();
                }
                pos
            }
            None => {
                // A call begins: the text before it is complete.
                self.close_message(out);
                let output_index = self.next_output;
                self.next_output += 1;
                let tool = self.ctx.tool(name_piece);
                let call_id = str_of(c, "id")
                    .map(str::to_owned)
                    .unwrap_or_else(|| self.ctx.item_id("call", output_index));
                let mut item = self.ctx.call_item(output_index, &call_id, name_piece, "");
                item["status"] = "in_progress".into();
                let id = item["id"].as_str().unwrap_or_default().to_owned();
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": item}),
                );
                self.calls.push(OpenCall {
                    chat_index,
                    output_index,
                    id,
                    call_id,
                    chat_name: name_piece.to_owned(),
                    arguments: String::new(),
                    custom: tool.custom,
                });
                self.calls.len() - 1
            }
        };
        if args_piece.is_empty() {
            return;
        }
        let call = &mut self.calls[pos];
        call.arguments.push_str(&args_piece);
        if !call.custom {
            let fields =
                json!({"item_id": call.id, "output_index": call.output_index, "delta": args_piece});
            self.emit(out, "response.function_call_arguments.delta", fields);
        }
    }

    fn close_calls(&mut self, out: &mut Vec<SseEvent>) {
        for call in std::mem::take(&mut self.calls) {
            let item = self.ctx.call_item(
                call.output_index,
                &call.call_id,
                &call.chat_name,
                &call.arguments,
            );
            let at = json!({"item_id": call.id, "output_index": call.output_index});
            if call.custom {
                let input = item["input"].clone();
                let mut delta = at.clone();
                delta["delta"] = input.clone();
                self.emit(out, "response.custom_tool_call_input.delta", delta);
                let mut done = at;
                done["input"] = input;
                self.emit(out, "response.custom_tool_call_input.done", done);
            } else {
                let mut done = at;
                done["arguments"] = call.arguments.as_str().into();
                done["name"] = item["name"].clone();
                self.emit(out, "response.function_call_arguments.done", done);
            }
            self.emit(
                out,
                "response.output_item.done",
                json!({"output_index": call.output_index, "item": item}),
            );
            self.finished.push((call.output_index, item));
        }
    }

    fn output(&mut self) -> Vec<Value> {
        self.finished.sort_by_key(|(i, _)| *i);
        self.finished.iter().map(|(_, item)| item.clone()).collect()
    }

    fn complete(&mut self, out: &mut Vec<SseEvent>) {
        self.start(out);
        self.close_message(out);
        self.close_calls(out);
        self.done = true;
        let (status, reason) = status_of(self.finish_reason.as_deref());
        let output = self.output();
        let mut r = self
            .ctx
            .response(self.created_at, &self.model, status, output);
        if let Some(reason) = reason {
            r["incomplete_details"] = json!({"reason": reason});
        }
        if let Some(u) = &self.usage {
            r["usage"] = u.clone();
        }
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, kind, json!({"response": r}));
    }

    fn fail(&mut self, out: &mut Vec<SseEvent>, message: &str) {
        self.start(out);
        self.done = true;
        self.emit(
            out,
            "error",
            json!({"code": "stream_interrupted", "message": message, "param": null}),
        );
        let output = self.output();
        let mut r = self
            .ctx
            .response(self.created_at, &self.model, "failed", output);
        r["error"] = json!({"code": "server_error", "message": message});
        if let Some(u) = &self.usage {
            r["usage"] = u.clone();
        }
        self.emit(out, "response.failed", json!({"response": r}));
    }
}
