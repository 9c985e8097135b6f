//! OpenAI's `POST /v1/chat/completions`: the numbered pieces `[0][1]...`,
//! whole or streamed, or, when the request offers function tools and its
//! last message is a user message containing `sim:call-tool`, one call of
//! the first function (or the one `tool_choice` names) with arguments
//! `{"piece":"[0]","n":1}`, finish reason `tool_calls`.

mod completion;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::Endpoint;
use super::openai::{self, Answer, Ask, BadRequest};
use super::reply::bearer;
use super::state::Shared;
use super::wire::{self, CALL_TOOL_MARKER};
use completion::{Completion, Says};

/// A cap on generated pieces, so a huge `max_tokens` cannot make the sim
/// stream for hours.
pub(super) const MAX_PIECES: usize = 10_000;

/// What a chat request asked for.
#[derive(Debug, Clone)]
struct ChatParams {
    model: String,
    stream: bool,
    /// `max_completion_tokens` or `max_tokens`, capped.
    max_tokens: Option<usize>,
    include_usage: bool,
    prompt_tokens: u64,
    /// The function to call instead of answering in text, if any.
    tool: Option<String>,
}

impl Ask for ChatParams {
    fn model(&self) -> &str {
        &self.model
    }
    fn stream(&self) -> bool {
        self.stream
    }
}

pub(super) async fn chat(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (decision, request_id) = openai::decide(
        &sh,
        Endpoint::ChatCompletions,
        bearer(&headers),
        parse_chat(&body),
        Instant::now(),
        |p, id| p.answer(sh.settings.chunks, id),
    );
    openai::respond(sh.clone(), decision, request_id).await
}

fn parse_chat(body: &[u8]) -> Result<ChatParams, BadRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|_| BadRequest::not_json())?;
    let Some(obj) = value.as_object() else {
        return Err(BadRequest::new("The request body must be a JSON object."));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) => m.clone(),
        _ => return Err(BadRequest::new("you must provide a model parameter")),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(BadRequest::invalid_type("stream", "a boolean")),
    };
    let mut max_tokens = None;
    for param in ["max_tokens", "max_completion_tokens"] {
        match obj.get(param) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) => max_tokens = Some((n as usize).min(MAX_PIECES)),
                None => return Err(BadRequest::invalid_type(param, "an integer")),
            },
        }
    }
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let messages = obj
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let chars: usize = messages
        .iter()
        .map(|m| content_text(m.get("content")).len())
        .sum();
    Ok(ChatParams {
        model,
        stream,
        max_tokens,
        include_usage,
        prompt_tokens: (chars as u64 / 4).max(1),
        tool: tool_to_call(obj, messages),
    })
}

/// The function a marked request calls: the one `tool_choice` names, else
/// the first function tool. None without the marker in a last user
/// message, without function tools, or under `tool_choice: "none"`.
fn tool_to_call(obj: &Map<String, Value>, messages: &[Value]) -> Option<String> {
    let last = messages.last()?;
    let marked = last.get("role").and_then(Value::as_str) == Some("user")
        && content_text(last.get("content")).contains(CALL_TOOL_MARKER);
    if !marked {
        return None;
    }
    let choice = obj.get("tool_choice");
    if choice.and_then(Value::as_str) == Some("none") {
        return None;
    }
    let function_name = |v: &Value| {
        (v.get("type").and_then(Value::as_str) == Some("function"))
            .then(|| v.get("function")?.get("name")?.as_str())
            .flatten()
            .map(str::to_owned)
    };
    let tools = obj.get("tools")?.as_array()?;
    let first = tools.iter().find_map(function_name)?;
    Some(choice.and_then(function_name).unwrap_or(first))
}

/// A message's text, plain or as text parts.
pub(super) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

impl ChatParams {
    fn answer(&self, chunks: usize, id: u64) -> Answer {
        let (says, finish) = match &self.tool {
            Some(name) => {
                let says = Says::ToolCall {
                    id: format!("call_sim_{id}"),
                    name: name.clone(),
                };
                (says, "tool_calls")
            }
            None => {
                let (pieces, cut) = wire::pieces_under(self.max_tokens, chunks);
                let finish = if cut { "length" } else { "stop" };
                (Says::Text { pieces }, finish)
            }
        };
        let completion = Completion {
            id: format!("chatcmpl-sim-{id}"),
            created: wire::unix_now(),
            model: self.model.clone(),
            says,
            finish,
            include_usage: self.stream && self.include_usage,
            prompt_tokens: self.prompt_tokens,
        };
        if self.stream {
            Answer::Stream(Box::new(completion))
        } else {
            Answer::Whole(completion.body())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tool_of(body: Value) -> Option<String> {
        parse_chat(body.to_string().as_bytes()).unwrap().tool
    }

    #[test]
    fn only_a_marked_last_user_message_with_function_tools_calls() {
        let tools = json!([{"type": "function", "function": {"name": "lookup"}},
            {"type": "function", "function": {"name": "other"}}]);
        let ask = |messages: Value, extra: Value| {
            let mut body = json!({"model": "m", "tools": tools, "messages": messages});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            tool_of(body)
        };
        let marked = json!([{"role": "user", "content": "please sim:call-tool now"}]);
        assert_eq!(ask(marked.clone(), json!({})).as_deref(), Some("lookup"));
        let parts =
            json!([{"role": "user", "content": [{"type": "text", "text": "sim:call-tool"}]}]);
        assert_eq!(ask(parts, json!({})).as_deref(), Some("lookup"));
        let named = json!({"tool_choice": {"type": "function", "function": {"name": "other"}}});
        assert_eq!(ask(marked.clone(), named).as_deref(), Some("other"));
        assert_eq!(ask(marked.clone(), json!({"tool_choice": "none"})), None);
        assert_eq!(
            ask(json!([{"role": "user", "content": "hi"}]), json!({})),
            None
        );
        let answered = json!([{"role": "user", "content": "sim:call-tool"},
            {"role": "tool", "tool_call_id": "call_sim_1", "content": "sim:call-tool"}]);
        assert_eq!(ask(answered, json!({})), None, "only a user message asks");
        let no_tools = json!({"model": "m", "messages": marked});
        assert_eq!(tool_of(no_tools), None);
    }
}
