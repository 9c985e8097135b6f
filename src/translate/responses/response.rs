//! Whole responses: a chat completion → a Response object.

use serde_json::{Value, json};

use super::{Context, status_of, str_of, usage_from_chat};

/// A chat completion's text: a string, or text parts joined.
pub(super) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| str_of(p, "text"))
            .collect::<Vec<_>>()
            .concat(),
        _ => String::new(),
    }
}

/// A tool call's arguments as the JSON text the Responses API carries.
pub(super) fn arguments_text(args: Option<&Value>) -> String {
    match args {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(v) => v.to_string(),
    }
}

/// A whole `chat.completion` → a `response` object. `created_at` stands in
/// when the completion carries no `created`.
pub fn response_from_chat(chat: &Value, ctx: &Context, created_at: u64) -> Value {
    let choice = chat
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let message = choice.and_then(|c| c.get("message"));
    let finish = choice.and_then(|c| str_of(c, "finish_reason"));
    let text = content_text(message.and_then(|m| m.get("content")));
    let refusal = message
        .and_then(|m| str_of(m, "refusal"))
        .filter(|r| !r.is_empty());
    let calls: &[Value] = message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);

    let mut output = Vec::new();
    if !text.is_empty() || refusal.is_some() || calls.is_empty() {
        let mut content = Vec::new();
        if !text.is_empty() || refusal.is_none() {
            content.push(json!({
                "type": "output_text",
                "text": text,
                "annotations": [],
                "logprobs": [],
            }));
        }
        if let Some(r) = refusal {
            content.push(json!({"type": "refusal", "refusal": r}));
        }
        output.push(json!({
            "type": "message",
            "id": ctx.item_id("msg", output.len()),
            "status": "completed",
            "role": "assistant",
            "content": content,
        }));
    }
    for call in calls {
        let n = output.len();
        let function = call.get("function");
        let call_id = str_of(call, "id")
            .map(str::to_owned)
            .unwrap_or_else(|| ctx.item_id("call", n));
        let name = function.and_then(|f| str_of(f, "name")).unwrap_or_default();
        let arguments = arguments_text(function.and_then(|f| f.get("arguments")));
        output.push(ctx.call_item(n, &call_id, name, &arguments));
    }

    let model = str_of(chat, "model").unwrap_or(&ctx.model);
    let created = chat
        .get("created")
        .and_then(Value::as_u64)
        .filter(|c| *c > 0)
        .unwrap_or(created_at);
    let (status, reason) = status_of(finish);
    let mut r = ctx.response(created, model, status, output);
    if let Some(reason) = reason {
        r["incomplete_details"] = json!({"reason": reason});
    }
    if let Some(u) = chat.get("usage").and_then(usage_from_chat) {
        r["usage"] = u;
    }
    r
}
