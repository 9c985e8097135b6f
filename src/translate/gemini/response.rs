//! Gemini responses as OpenAI ones: a whole `GenerateContentResponse` as
//! a `chat.completion`, a stream of them as `chat.completion.chunk` events.

use serde_json::{Value, json};

use super::json::from_struct;
use crate::gemini::v1beta as pb;
use crate::translate::SseEvent;
use pb::candidate::FinishReason;

/// An OpenAI `finish_reason` for a Gemini one; `None` while generation
/// goes on.
fn finish_reason(reason: i32, called_tools: bool) -> Option<&'static str> {
    let reason = FinishReason::try_from(reason).unwrap_or(FinishReason::Other);
    match reason {
        FinishReason::Unspecified => None,
        _ if called_tools => Some("tool_calls"),
        FinishReason::MaxTokens => Some("length"),
        FinishReason::Safety
        | FinishReason::Recitation
        | FinishReason::Blocklist
        | FinishReason::ProhibitedContent
        | FinishReason::Spii
        | FinishReason::ImageSafety
        | FinishReason::ImageProhibitedContent
        | FinishReason::ImageRecitation => Some("content_filter"),
        _ => Some("stop"),
    }
}

/// The visible text and the function calls of one candidate's content.
/// Thought parts are the model's reasoning, not its answer: dropped.
fn split_parts(content: Option<&pb::Content>) -> (String, Vec<&pb::FunctionCall>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in content.map(|c| c.parts.as_slice()).unwrap_or_default() {
        match &part.data {
            Some(pb::part::Data::Text(_)) if part.thought => {
                tracing::debug!("gemini: thought part dropped");
            }
            Some(pb::part::Data::Text(t)) => text.push_str(t),
            Some(pb::part::Data::FunctionCall(c)) => calls.push(c),
            Some(_) => tracing::debug!("gemini: non-text response part dropped"),
            None => {}
        }
    }
    (text, calls)
}

/// An OpenAI tool call for a Gemini function call; `n` numbers the
/// call within the response, for an id when Gemini gave none.
fn tool_call(call: &pb::FunctionCall, n: usize) -> Value {
    let id = if call.id.is_empty() {
        format!("call_{n}")
    } else {
        call.id.clone()
    };
    let arguments = call
        .args
        .as_ref()
        .map_or_else(|| "{}".to_owned(), |a| from_struct(a).to_string());
    json!({
        "id": id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    })
}

fn completion_id(resp: &pb::GenerateContentResponse, created: u64) -> String {
    if resp.response_id.is_empty() {
        format!("chatcmpl-gemini-{created}")
    } else {
        format!("chatcmpl-{}", resp.response_id)
    }
}

fn usage(u: &pb::generate_content_response::UsageMetadata) -> Value {
    let prompt = i64::from(u.prompt_token_count.max(0));
    let completion =
        i64::from(u.candidates_token_count.max(0)) + i64::from(u.thoughts_token_count.max(0));
    let total = if u.total_token_count > 0 {
        i64::from(u.total_token_count)
    } else {
        prompt + completion
    };
    let mut usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
    });
    if u.cached_content_token_count > 0 {
        usage["prompt_tokens_details"] = json!({"cached_tokens": u.cached_content_token_count});
    }
    if u.thoughts_token_count > 0 {
        usage["completion_tokens_details"] = json!({"reasoning_tokens": u.thoughts_token_count});
    }
    usage
}

fn blocked(resp: &pb::GenerateContentResponse) -> bool {
    resp.prompt_feedback
        .as_ref()
        .is_some_and(|f| f.block_reason != 0)
}

/// A whole Gemini response as an OpenAI `chat.completion`.
pub fn response_to_openai(resp: &pb::GenerateContentResponse, model: &str, created: u64) -> Value {
    let mut calls_seen = 0;
    let mut choices: Vec<Value> = resp
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (text, calls) = split_parts(c.content.as_ref());
            let tool_calls: Vec<Value> = calls
                .iter()
                .map(|call| {
                    calls_seen += 1;
                    tool_call(call, calls_seen - 1)
                })
                .collect();
            let mut message = json!({
                "role": "assistant",
                "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) },
                "refusal": null,
            });
            if !tool_calls.is_empty() {
                message["tool_calls"] = Value::Array(tool_calls);
            }
            let finish = finish_reason(c.finish_reason, !calls.is_empty()).unwrap_or("stop");
            json!({
                "index": c.index.unwrap_or(i as i32),
                "message": message,
                "logprobs": null,
                "finish_reason": finish,
            })
        })
        .collect();
    if choices.is_empty() {
        // No candidates: the prompt was blocked (or nothing came back).
        let finish = if blocked(resp) {
            "content_filter"
        } else {
            "stop"
        };
        choices.push(json!({
            "index": 0,
            "message": {"role": "assistant", "content": null, "refusal": null},
            "logprobs": null,
            "finish_reason": finish,
        }));
    }
    let mut out = json!({
        "id": completion_id(resp, created),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
    });
    if let Some(u) = &resp.usage_metadata {
        out["usage"] = usage(u);
    }
    out["system_fingerprint"] = Value::Null;
    out
}

// ----------------------------------------------------------------- streams

/// What the stream has said so far about one candidate.
#[derive(Debug, Default, Clone)]
struct Choice {
    /// Gemini's candidate index, which is the OpenAI choice index.
    index: i32,
    /// The role chunk went out.
    started: bool,
    /// Tool calls sent so far; the next one's `index` in the delta.
    tool_calls: usize,
    /// The finish chunk went out; later content is dropped.
    finished: bool,
}

/// Turns a stream of Gemini responses into OpenAI `chat.completion.chunk`
/// events: a role chunk first, then content and tool call deltas, then a
/// finish chunk per choice, then (from [`StreamToOpenAi::finish`]) `[DONE]`.
///
/// Token usage rides on the finish chunk's `usage` field unless
/// [`StreamToOpenAi::include_usage`] asks for OpenAI's separate usage chunk
/// (`choices: []`) before `[DONE]`, as `stream_options.include_usage` does.
#[derive(Debug)]
pub struct StreamToOpenAi {
    model: String,
    created: u64,
    /// Fixed by the first response, so every chunk carries the same id.
    id: Option<String>,
    choices: Vec<Choice>,
    /// Function calls numbered across the whole stream, for made-up ids.
    calls_seen: usize,
    /// The latest usage Gemini reported (it repeats it as it goes).
    usage: Option<pb::generate_content_response::UsageMetadata>,
    usage_chunk: bool,
    done: bool,
}

impl StreamToOpenAi {
    pub fn new(model: &str, created: u64) -> Self {
        StreamToOpenAi {
            model: model.to_owned(),
            created,
            id: None,
            choices: Vec::new(),
            calls_seen: 0,
            usage: None,
            usage_chunk: false,
            done: false,
        }
    }

    /// Send usage as OpenAI's separate final chunk (`choices: []`) instead
    /// of on the finish chunk.
    pub fn include_usage(mut self, yes: bool) -> Self {
        self.usage_chunk = yes;
        self
    }

    fn chunk(&self, choices: Vec<Value>, usage: Option<Value>) -> SseEvent {
        let mut chunk = json!({
            "id": self.id.as_deref().unwrap_or("chatcmpl-gemini"),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": choices,
        });
        if let Some(u) = usage {
            chunk["usage"] = u;
        }
        SseEvent::data(chunk.to_string())
    }

    fn choice_mut(&mut self, index: i32) -> &mut Choice {
        let pos = match self.choices.iter().position(|c| c.index == index) {
            Some(pos) => pos,
            None => {
                self.choices.push(Choice {
                    index,
                    ..Choice::default()
                });
                self.choices.len() - 1
            }
        };
        &mut self.choices[pos]
    }

    fn delta(index: i32, delta: Value, finish: Option<&str>) -> Value {
        json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish})
    }

    /// The finish chunk for one choice, with usage unless it gets its own.
    fn finish_chunk(&self, index: i32, reason: &str) -> SseEvent {
        let usage = if self.usage_chunk {
            None
        } else {
            self.usage.as_ref().map(usage)
        };
        self.chunk(vec![Self::delta(index, json!({}), Some(reason))], usage)
    }

    /// The events for one streamed Gemini response.
    pub fn push(&mut self, resp: &pb::GenerateContentResponse) -> Vec<SseEvent> {
        if self.done {
            tracing::debug!("gemini: response after the end of the stream dropped");
            return Vec::new();
        }
        if self.id.is_none() {
            self.id = Some(completion_id(resp, self.created));
        }
        if let Some(u) = &resp.usage_metadata {
            self.usage = Some(*u);
        }
        let mut events = Vec::new();
        let candidates: Vec<(i32, &pb::Candidate)> = resp
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| (c.index.unwrap_or(i as i32), c))
            .collect();
        if candidates.is_empty() && blocked(resp) {
            if !self.choice_mut(0).started {
                self.choice_mut(0).started = true;
                events.push(self.chunk(vec![Self::role_delta(0)], None));
            }
            if !self.choice_mut(0).finished {
                self.choice_mut(0).finished = true;
                events.push(self.finish_chunk(0, "content_filter"));
            }
            return events;
        }
        for (index, cand) in candidates {
            if self.choice_mut(index).finished {
                tracing::debug!(index, "gemini: content after a finished candidate dropped");
                continue;
            }
            if !self.choice_mut(index).started {
                self.choice_mut(index).started = true;
                events.push(self.chunk(vec![Self::role_delta(index)], None));
            }
            let (text, calls) = split_parts(cand.content.as_ref());
            if !text.is_empty() {
                let delta = Self::delta(index, json!({"content": text}), None);
                events.push(self.chunk(vec![delta], None));
            }
            if !calls.is_empty() {
                let first = self.choice_mut(index).tool_calls;
                let deltas: Vec<Value> = calls
                    .iter()
                    .enumerate()
                    .map(|(k, call)| {
                        let mut d = tool_call(call, self.calls_seen + k);
                        d["index"] = json!(first + k);
                        d
                    })
                    .collect();
                self.calls_seen += calls.len();
                self.choice_mut(index).tool_calls += calls.len();
                let delta = Self::delta(index, json!({"tool_calls": deltas}), None);
                events.push(self.chunk(vec![delta], None));
            }
            let called = self.choice_mut(index).tool_calls > 0;
            if let Some(reason) = finish_reason(cand.finish_reason, called) {
                self.choice_mut(index).finished = true;
                events.push(self.finish_chunk(index, reason));
            }
        }
        events
    }

    fn role_delta(index: i32) -> Value {
        Self::delta(index, json!({"role": "assistant", "content": ""}), None)
    }

    /// The events after the last response: a finish chunk for any choice
    /// Gemini never finished, the usage chunk if asked for, and `[DONE]`.
    /// Calling it again yields nothing.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        if self.done {
            return Vec::new();
        }
        let mut events = Vec::new();
        if self.choices.is_empty() {
            // Not one candidate came: still a well-formed (empty) answer.
            self.choice_mut(0);
        }
        let open: Vec<(i32, bool, bool)> = self
            .choices
            .iter()
            .filter(|c| !c.finished)
            .map(|c| (c.index, c.started, c.tool_calls > 0))
            .collect();
        for (index, started, called) in open {
            if !started {
                events.push(self.chunk(vec![Self::role_delta(index)], None));
            }
            let reason = if called { "tool_calls" } else { "stop" };
            events.push(self.finish_chunk(index, reason));
        }
        if self.usage_chunk
            && let Some(u) = &self.usage
        {
            events.push(self.chunk(Vec::new(), Some(usage(u))));
        }
        events.push(SseEvent::data("[DONE]"));
        self.done = true;
        events
    }
}
