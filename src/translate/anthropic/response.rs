//! Full (non-stream) responses in both directions.

use serde_json::{Value, json};
use tracing::debug;

use super::tools::{arguments_to_input, tool_call};
use super::usage::{usage_from_openai, usage_to_anthropic, usage_to_openai};
use super::{dropped, finish_reason, stop_reason, str_of, text_block};

/// Anthropic message (non-stream response) → OpenAI `chat.completion`, with
/// `created: 0`; see [`response_to_openai_at`].
pub fn response_to_openai(resp: &Value) -> Value {
    response_to_openai_at(resp, 0)
}

/// Anthropic message → OpenAI `chat.completion` stamped with `created`
/// (Unix seconds, from the caller's clock).
pub fn response_to_openai_at(resp: &Value, created: u64) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in resp
        .get("content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match str_of(b, "type") {
            Some("text") => text.push_str(str_of(b, "text").unwrap_or_default()),
            Some("tool_use") => calls.push(tool_call(
                str_of(b, "id").unwrap_or_default(),
                str_of(b, "name").unwrap_or_default(),
                b.get("input"),
            )),
            _ => dropped(&format!("content[{j}]")),
        }
    }
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    };
    let mut message = json!({"role": "assistant", "content": content, "refusal": null});
    if !calls.is_empty()
        && let Some(m) = message.as_object_mut()
    {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    let finish = str_of(resp, "stop_reason").map(finish_reason);
    let mut out = json!({
        "id": str_of(resp, "id").unwrap_or_default(),
        "object": "chat.completion",
        "created": created,
        "model": str_of(resp, "model").unwrap_or_default(),
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
    });
    if let Some(u) = resp.get("usage").filter(|u| u.is_object())
        && let Some(o) = out.as_object_mut()
    {
        o.insert("usage".into(), usage_to_openai(u));
    }
    out
}
/// OpenAI `chat.completion` → Anthropic message. Only the first choice is
/// carried (Anthropic has one).
pub fn response_to_anthropic(resp: &Value) -> Value {
    let choices = resp
        .get("choices")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if choices.len() > 1 {
        dropped("choices[1..]");
    }
    let choice = choices.first().unwrap_or(&Value::Null);
    let msg = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let text = match msg.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| str_of(p, "text").or_else(|| str_of(p, "refusal")))
            .collect(),
        _ => String::new(),
    };
    if !text.is_empty() {
        content.push(text_block(text));
    }
    if let Some(r) = str_of(msg, "refusal").filter(|r| !r.is_empty()) {
        content.push(text_block(r));
    }
    for (k, c) in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let function = c.get("function").unwrap_or(&Value::Null);
        let at = format!("choices[0].message.tool_calls[{k}].function.arguments");
        let input = arguments_to_input(function.get("arguments"), &at).unwrap_or_else(|e| {
            debug!(
                field = %at,
                error = %e,
                "tool call arguments are not a JSON object; sent as {{}}"
            );
            json!({})
        });
        content.push(json!({
            "type": "tool_use",
            "id": str_of(c, "id").unwrap_or_default(),
            "name": str_of(function, "name").unwrap_or_default(),
            "input": input,
        }));
    }
    json!({
        "id": str_of(resp, "id").unwrap_or_default(),
        "type": "message",
        "role": "assistant",
        "model": str_of(resp, "model").unwrap_or_default(),
        "content": content,
        "stop_reason": str_of(choice, "finish_reason").map(stop_reason),
        "stop_sequence": null,
        "usage": usage_to_anthropic(usage_from_openai(resp.get("usage").unwrap_or(&Value::Null))),
    })
}
