//! Requests: Anthropic Messages → OpenAI Chat Completions.

use serde_json::{Map, Value, json};

use super::tools::{tool_call, tool_choice_to_openai, tools_to_openai};
use super::{count, drop_unknown, dropped, err, is_absent, model, number, str_of, stream_flag};
use crate::translate::TranslateError;

/// Top-level Anthropic request fields this translation reads.
const ANTHROPIC_REQUEST_KEYS: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "stop_sequences",
    "temperature",
    "top_p",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
];

/// Anthropic messages request → OpenAI chat request.
pub fn request_to_openai(req: &Value) -> Result<Value, TranslateError> {
    let req = req
        .as_object()
        .ok_or_else(|| err("body", "the request must be a JSON object"))?;
    drop_unknown(req, ANTHROPIC_REQUEST_KEYS, "");
    let mut out = Map::new();
    model(req, &mut out)?;

    let mut messages = Vec::new();
    match req.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                messages.push(json!({"role": "system", "content": s}));
            }
        }
        Some(Value::Array(blocks)) => {
            let mut texts = blocks
                .iter()
                .enumerate()
                .map(|(j, b)| {
                    if !is_absent(b.get("cache_control")) {
                        dropped(&format!("system[{j}].cache_control"));
                    }
                    match (str_of(b, "type"), str_of(b, "text")) {
                        (Some("text"), Some(t)) => Ok(t.to_owned()),
                        _ => Err(err(format!("system[{j}]"), "must be a text block")),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            texts.retain(|t| !t.is_empty());
            if texts.len() == 1 {
                messages.push(json!({"role": "system", "content": texts.remove(0)}));
            } else if !texts.is_empty() {
                let parts: Vec<Value> = texts.into_iter().map(text_part).collect();
                messages.push(json!({"role": "system", "content": parts}));
            }
        }
        Some(_) => {
            return Err(err("system", "must be a string or an array of text blocks"));
        }
    }
    let input = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| err("messages", "must be an array of messages"))?;
    for (i, m) in input.iter().enumerate() {
        anthropic_message(m, &format!("messages[{i}]"), &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));

    if let Some(n) = count(req, "max_tokens")? {
        out.insert("max_completion_tokens".into(), n.into());
    }
    match req.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            let stops = items
                .iter()
                .enumerate()
                .map(|(k, s)| {
                    s.as_str()
                        .map(|s| Value::String(s.to_owned()))
                        .ok_or_else(|| err(format!("stop_sequences[{k}]"), "must be a string"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !stops.is_empty() {
                out.insert("stop".into(), Value::Array(stops));
            }
        }
        Some(_) => return Err(err("stop_sequences", "must be an array of strings")),
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = number(req, key)? {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(stream) = stream_flag(req)? {
        out.insert("stream".into(), Value::Bool(stream));
        if stream {
            // So the final message_delta can carry real token counts.
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    if let Some(user) = req.get("metadata").and_then(|m| str_of(m, "user_id")) {
        out.insert("user".into(), user.into());
    }

    let tools = match req.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(t) => tools_to_openai(t)?,
    };
    let choice = req.get("tool_choice").filter(|c| !c.is_null());
    if tools.is_empty() {
        if choice.is_some() {
            dropped("tool_choice");
        }
    } else {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(c) = choice {
            out.insert("tool_choice".into(), tool_choice_to_openai(c)?);
            if c.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
                out.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
        }
    }
    Ok(Value::Object(out))
}

fn anthropic_message(m: &Value, at: &str, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let obj = m
        .as_object()
        .ok_or_else(|| err(at, "must be a message object"))?;
    let role = str_of(m, "role").ok_or_else(|| err(format!("{at}.role"), "must be a string"))?;
    if role == "system" {
        // A system message mid-conversation (newer Claude models take one
        // after a user turn; Claude Code sends them): a chat system message
        // in place.
        drop_unknown(obj, &["role", "content"], at);
        let content = match m.get("content") {
            Some(Value::String(s)) => Value::String(s.clone()),
            Some(Value::Array(blocks)) => {
                let texts = blocks
                    .iter()
                    .enumerate()
                    .map(|(j, b)| match (str_of(b, "type"), str_of(b, "text")) {
                        (Some("text"), Some(t)) => Ok(text_part(t.to_owned())),
                        _ => Err(err(format!("{at}.content[{j}]"), "must be a text block")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Value::Array(texts)
            }
            _ => {
                return Err(err(
                    format!("{at}.content"),
                    "must be a string or an array of text blocks",
                ));
            }
        };
        out.push(json!({"role": "system", "content": content}));
        return Ok(());
    }
    if role != "user" && role != "assistant" {
        return Err(err(
            format!("{at}.role"),
            format!("unknown role {role:?}; Anthropic messages are user, assistant or system"),
        ));
    }
    drop_unknown(obj, &["role", "content"], at);
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(err(
                format!("{at}.content"),
                "must be a string or an array of content blocks",
            ));
        }
    };
    if role == "assistant" {
        out.push(assistant_to_openai(blocks, at)?);
        return Ok(());
    }
    // A user message: tool results become `tool` messages in place, the
    // other blocks user messages between them.
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bat = format!("{at}.content[{j}]");
        if !is_absent(b.get("cache_control")) {
            dropped(&format!("{bat}.cache_control"));
        }
        if str_of(b, "type") == Some("tool_result") {
            if !parts.is_empty() {
                out.push(json!({"role": "user", "content": std::mem::take(&mut parts)}));
            }
            out.push(tool_result_to_openai(b, &bat)?);
        } else {
            parts.push(user_block_to_openai(b, &bat)?);
        }
    }
    if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

fn user_block_to_openai(b: &Value, at: &str) -> Result<Value, TranslateError> {
    let kind = str_of(b, "type").ok_or_else(|| err(format!("{at}.type"), "must be a string"))?;
    match kind {
        "text" => {
            let text =
                str_of(b, "text").ok_or_else(|| err(format!("{at}.text"), "must be a string"))?;
            Ok(text_part(text))
        }
        "image" => {
            let source = b.get("source").unwrap_or(&Value::Null);
            let url = match str_of(source, "type") {
                Some("base64") => data_url(source, &format!("{at}.source"))?,
                Some("url") => str_of(source, "url")
                    .ok_or_else(|| err(format!("{at}.source.url"), "must be a string"))?
                    .to_owned(),
                _ => {
                    return Err(err(
                        format!("{at}.source.type"),
                        "only base64 and url image sources can be sent to OpenAI",
                    ));
                }
            };
            Ok(json!({"type": "image_url", "image_url": {"url": url}}))
        }
        "document" => {
            let source = b.get("source").unwrap_or(&Value::Null);
            match str_of(source, "type") {
                Some("base64") => {
                    let mut file = Map::new();
                    file.insert(
                        "file_data".into(),
                        data_url(source, &format!("{at}.source"))?.into(),
                    );
                    if let Some(title) = str_of(b, "title") {
                        file.insert("filename".into(), title.into());
                    }
                    Ok(json!({"type": "file", "file": file}))
                }
                Some("text") => {
                    let text = str_of(source, "data")
                        .ok_or_else(|| err(format!("{at}.source.data"), "must be a string"))?;
                    Ok(text_part(text))
                }
                _ => Err(err(
                    format!("{at}.source.type"),
                    "only base64 and text document sources can be sent to OpenAI",
                )),
            }
        }
        other => Err(err(
            format!("{at}.type"),
            format!("content block type {other:?} cannot be sent to OpenAI"),
        )),
    }
}

/// An Anthropic base64 `source` → `data:<media_type>;base64,<data>`.
fn data_url(source: &Value, at: &str) -> Result<String, TranslateError> {
    let media = str_of(source, "media_type")
        .ok_or_else(|| err(format!("{at}.media_type"), "must be a string"))?;
    let data =
        str_of(source, "data").ok_or_else(|| err(format!("{at}.data"), "must be a string"))?;
    Ok(format!("data:{media};base64,{data}"))
}

fn tool_result_to_openai(b: &Value, at: &str) -> Result<Value, TranslateError> {
    let id = str_of(b, "tool_use_id")
        .ok_or_else(|| err(format!("{at}.tool_use_id"), "must be a string"))?;
    let content = match b.get("content") {
        None | Some(Value::Null) => Value::String(String::new()),
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(blocks)) => {
            // OpenAI tool messages hold text only.
            let mut parts = Vec::new();
            for (k, block) in blocks.iter().enumerate() {
                match (str_of(block, "type"), str_of(block, "text")) {
                    (Some("text"), Some(t)) => parts.push(text_part(t)),
                    _ => dropped(&format!("{at}.content[{k}]")),
                }
            }
            Value::Array(parts)
        }
        Some(_) => {
            return Err(err(
                format!("{at}.content"),
                "must be a string or an array of content blocks",
            ));
        }
    };
    if !is_absent(b.get("is_error")) {
        dropped(&format!("{at}.is_error"));
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

fn assistant_to_openai(blocks: &[Value], at: &str) -> Result<Value, TranslateError> {
    let mut texts = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bat = format!("{at}.content[{j}]");
        match str_of(b, "type") {
            Some("text") => {
                let text = str_of(b, "text")
                    .ok_or_else(|| err(format!("{bat}.text"), "must be a string"))?;
                if !text.is_empty() {
                    texts.push(text.to_owned());
                }
            }
            Some("tool_use") => {
                let id =
                    str_of(b, "id").ok_or_else(|| err(format!("{bat}.id"), "must be a string"))?;
                let name = str_of(b, "name")
                    .ok_or_else(|| err(format!("{bat}.name"), "must be a string"))?;
                calls.push(tool_call(id, name, b.get("input")));
            }
            // Thinking, server tool use and its results: history the OpenAI
            // model cannot use.
            _ => dropped(&bat),
        }
    }
    let content = match texts.len() {
        0 if calls.is_empty() => Value::String(String::new()),
        0 => Value::Null,
        1 => Value::String(texts.remove(0)),
        _ => Value::Array(texts.into_iter().map(text_part).collect()),
    };
    let mut msg = json!({"role": "assistant", "content": content});
    if !calls.is_empty()
        && let Some(m) = msg.as_object_mut()
    {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(msg)
}

fn text_part(text: impl Into<String>) -> Value {
    json!({"type": "text", "text": text.into()})
}
