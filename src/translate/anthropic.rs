//! OpenAI Chat Completions ⇄ Anthropic Messages: requests, full responses,
//! stream events and error bodies, on plain `serde_json::Value`s.
//!
//! Everything here is pure: no I/O and no clock. OpenAI responses carry a
//! `created` Unix time, which the caller passes in
//! ([`response_to_openai_at`], [`StreamToOpenAi::with_created`]); the plain
//! [`response_to_openai`] and [`StreamToOpenAi::new`] stamp `created: 0`.
//!
//! Input is untrusted JSON: no function here panics on any input. A field
//! that cannot be carried across is dropped with a `debug!` naming it; a
//! request that cannot be expressed at all is a [`TranslateError`] naming
//! the field.
//!
//! # Mapping decisions that lose information
//! - OpenAI `system`/`developer` messages, wherever they are, become the
//!   top-level Anthropic `system` (a string for one, text blocks for
//!   several); going back, `system` becomes one leading `system` message.
//! - Anthropic needs alternating roles, so consecutive same-role messages
//!   (and consecutive OpenAI `tool` messages) merge into one message;
//!   going back, a user message's `tool_result` blocks split out again
//!   into `tool` messages in their original order.
//!   An OpenAI assistant message holds its text before its tool calls, so
//!   an Anthropic turn with text after a `tool_use` comes back text-first.
//! - Tool arguments are parsed into `input` and serialized again: whitespace
//!   and key order are not kept (the JSON value is). Arguments that are not
//!   a JSON object fail a request; in a response they become `{}`.
//! - `temperature` above Anthropic's maximum of 1 is clamped to 1.
//! - Stop reasons: `end_turn`/`stop_sequence`/`pause_turn` → `stop`,
//!   `max_tokens`/`model_context_window_exceeded` → `length`,
//!   `tool_use` → `tool_calls`, `refusal` → `content_filter`; back:
//!   `stop` → `end_turn` (OpenAI does not say whether a stop sequence
//!   matched, so `stop_sequence` is always null), `length` → `max_tokens`,
//!   `tool_calls`/`function_call` → `tool_use`, `content_filter` →
//!   `end_turn` (the filtered text is all the client gets either way).
//! - Usage: OpenAI `prompt_tokens` counts cached tokens, Anthropic
//!   `input_tokens` does not, so `prompt_tokens = input_tokens +
//!   cache_creation_input_tokens + cache_read_input_tokens` and
//!   `prompt_tokens_details.cached_tokens = cache_read_input_tokens`; back,
//!   cached tokens are subtracted out again into `cache_read_input_tokens`.
//! - Thinking blocks, `top_k`, `cache_control`, `is_error`, image `detail`,
//!   `seed`, penalties, logprobs and the like are dropped (debug log).
//! - Anthropic → OpenAI requests use `max_completion_tokens` (OpenAI's
//!   current name; reasoning models reject `max_tokens`) and, when
//!   streaming, ask for `stream_options.include_usage` so the Anthropic
//!   client gets real token counts in `message_delta`.

use serde_json::{Map, Value, json};
use tracing::debug;

use super::{SseEvent, TranslateError};

#[cfg(test)]
mod tests;

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn err(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::new(field, message)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn is_absent(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

fn dropped(field: &str) {
    debug!(field, "dropped: no equivalent in the target format");
}

/// Logs every key of `obj` that the translation does not carry.
fn drop_unknown(obj: &Map<String, Value>, known: &[&str], at: &str) {
    for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        if at.is_empty() {
            dropped(key);
        } else {
            dropped(&format!("{at}.{key}"));
        }
    }
}

fn text_block(text: impl Into<String>) -> Value {
    json!({"type": "text", "text": text.into()})
}

fn text_part(text: impl Into<String>) -> Value {
    json!({"type": "text", "text": text.into()})
}

/// `data:<media type>[;params];base64,<data>` → (media type, data).
fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let meta = meta.strip_suffix(";base64")?;
    let media = meta.split(';').next().unwrap_or("");
    (!media.is_empty()).then_some((media, data))
}

fn is_http_url(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// An optional number field: absent/null → `None`, otherwise a number.
fn number<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a Value>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) if v.is_number() => Ok(Some(v)),
        Some(_) => Err(err(key, "must be a number")),
    }
}

/// An optional token count: absent/null → `None`, otherwise a non-negative integer.
fn count(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| err(key, "must be a non-negative integer")),
    }
}

fn model(obj: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    match obj.get("model") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(m)) => {
            out.insert("model".into(), Value::String(m.clone()));
            Ok(())
        }
        Some(_) => Err(err("model", "must be a string")),
    }
}

fn stream_flag(obj: &Map<String, Value>) -> Result<Option<bool>, TranslateError> {
    match obj.get("stream") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(err("stream", "must be a boolean")),
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason`.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything newer.
        _ => "stop",
    }
}

/// OpenAI `finish_reason` → Anthropic `stop_reason`.
fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        // stop, content_filter and anything else.
        _ => "end_turn",
    }
}

// ---------------------------------------------------------------------------
// Requests: OpenAI → Anthropic
// ---------------------------------------------------------------------------

/// Top-level OpenAI request fields this translation reads; the rest are
/// logged as dropped.
const OPENAI_REQUEST_KEYS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "temperature",
    "top_p",
    "stream",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "n",
    "audio",
    "modalities",
    "functions",
    "function_call",
];

/// Content of an Anthropic message being built: kept as a plain string
/// while it is one, so simple requests stay simple.
enum Content {
    Text(String),
    Blocks(Vec<Value>),
}

impl Content {
    fn into_blocks(self) -> Vec<Value> {
        match self {
            Content::Text(t) if t.is_empty() => Vec::new(),
            Content::Text(t) => vec![text_block(t)],
            Content::Blocks(b) => b,
        }
    }

    fn into_value(self) -> Value {
        match self {
            Content::Text(t) => Value::String(t),
            Content::Blocks(b) => Value::Array(b),
        }
    }
}

struct Turn {
    role: &'static str,
    content: Content,
}

/// Appends a message, merging it into the previous one when the role is
/// the same: Anthropic requires user and assistant to alternate.
fn push_turn(turns: &mut Vec<Turn>, role: &'static str, content: Content) {
    match turns.last_mut() {
        Some(last) if last.role == role => {
            let previous = std::mem::replace(&mut last.content, Content::Blocks(Vec::new()));
            let mut blocks = previous.into_blocks();
            blocks.extend(content.into_blocks());
            last.content = Content::Blocks(blocks);
        }
        _ => turns.push(Turn { role, content }),
    }
}

/// OpenAI chat request → Anthropic messages request. `default_max_tokens`
/// is used when the OpenAI request has neither `max_tokens` nor
/// `max_completion_tokens` (Anthropic requires it).
pub fn request_to_anthropic(req: &Value, default_max_tokens: u64) -> Result<Value, TranslateError> {
    let req = req
        .as_object()
        .ok_or_else(|| err("body", "the request must be a JSON object"))?;
    reject_inexpressible(req)?;
    drop_unknown(req, OPENAI_REQUEST_KEYS, "");
    let mut out = Map::new();
    model(req, &mut out)?;

    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| err("messages", "must be an array of messages"))?;
    let mut system = Vec::new();
    let mut turns = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        openai_message(m, &format!("messages[{i}]"), &mut system, &mut turns)?;
    }
    system.retain(|s: &String| !s.is_empty());
    if system.len() == 1 {
        out.insert("system".into(), Value::String(system.remove(0)));
    } else if !system.is_empty() {
        out.insert(
            "system".into(),
            Value::Array(system.into_iter().map(text_block).collect()),
        );
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|t| json!({"role": t.role, "content": t.content.into_value()}))
        .collect();
    out.insert("messages".into(), Value::Array(messages));

    // max_completion_tokens is the current name; max_tokens the deprecated one.
    let max_tokens = match count(req, "max_completion_tokens")? {
        Some(n) => n,
        None => count(req, "max_tokens")?.unwrap_or(default_max_tokens),
    };
    out.insert("max_tokens".into(), max_tokens.into());

    match req.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(items)) => {
            let stops = items
                .iter()
                .enumerate()
                .map(|(k, s)| {
                    s.as_str()
                        .map(|s| Value::String(s.to_owned()))
                        .ok_or_else(|| err(format!("stop[{k}]"), "must be a string"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if !stops.is_empty() {
                out.insert("stop_sequences".into(), Value::Array(stops));
            }
        }
        Some(_) => return Err(err("stop", "must be a string or an array of strings")),
    }

    if let Some(t) = number(req, "temperature")? {
        if t.as_f64().is_some_and(|t| t > 1.0) {
            debug!(temperature = %t, "temperature above Anthropic's maximum of 1; clamped to 1");
            out.insert("temperature".into(), json!(1.0));
        } else {
            out.insert("temperature".into(), t.clone());
        }
    }
    if let Some(p) = number(req, "top_p")? {
        out.insert("top_p".into(), p.clone());
    }
    if let Some(stream) = stream_flag(req)? {
        out.insert("stream".into(), Value::Bool(stream));
    }
    if let Some(user) = req.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }

    let tools = match req.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(t) => tools_to_anthropic(t)?,
    };
    let mut choice = match req.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(c) => Some(tool_choice_to_anthropic(c)?),
    };
    if tools.is_empty() {
        if choice.is_some() {
            dropped("tool_choice");
        }
    } else {
        if req.get("parallel_tool_calls") == Some(&Value::Bool(false)) {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if str_of(c, "type") != Some("none")
                && let Some(c) = c.as_object_mut()
            {
                c.insert("disable_parallel_tool_use".into(), Value::Bool(true));
            }
        }
        out.insert("tools".into(), Value::Array(tools));
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
    }
    Ok(Value::Object(out))
}

/// OpenAI request features with no Anthropic counterpart at all.
fn reject_inexpressible(req: &Map<String, Value>) -> Result<(), TranslateError> {
    match req.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64() == Some(1) => {}
        Some(_) => {
            return Err(err(
                "n",
                "Anthropic returns one choice per request; n must be 1",
            ));
        }
    }
    if !is_absent(req.get("audio")) {
        return Err(err("audio", "Anthropic models cannot produce audio"));
    }
    if let Some(modalities) = req.get("modalities").and_then(Value::as_array)
        && modalities.iter().any(|m| m.as_str() == Some("audio"))
    {
        return Err(err("modalities", "Anthropic models cannot produce audio"));
    }
    for legacy in ["functions", "function_call"] {
        if !is_absent(req.get(legacy)) {
            return Err(err(
                legacy,
                "the legacy functions API is not supported; use tools and tool_choice",
            ));
        }
    }
    Ok(())
}

fn openai_message(
    m: &Value,
    at: &str,
    system: &mut Vec<String>,
    turns: &mut Vec<Turn>,
) -> Result<(), TranslateError> {
    let obj = m
        .as_object()
        .ok_or_else(|| err(at, "must be a message object"))?;
    let role = str_of(m, "role").ok_or_else(|| err(format!("{at}.role"), "must be a string"))?;
    match role {
        "system" | "developer" => {
            drop_unknown(obj, &["role", "content"], at);
            system.extend(text_only(m.get("content"), &format!("{at}.content"))?);
        }
        "user" => {
            drop_unknown(obj, &["role", "content"], at);
            let content = match m.get("content") {
                Some(Value::String(s)) => Content::Text(s.clone()),
                Some(Value::Array(parts)) => Content::Blocks(
                    parts
                        .iter()
                        .enumerate()
                        .map(|(j, p)| user_part_to_anthropic(p, &format!("{at}.content[{j}]")))
                        .collect::<Result<_, _>>()?,
                ),
                _ => {
                    return Err(err(
                        format!("{at}.content"),
                        "must be a string or an array of content parts",
                    ));
                }
            };
            push_turn(turns, "user", content);
        }
        "assistant" => {
            drop_unknown(obj, &["role", "content", "tool_calls", "refusal"], at);
            let content = assistant_to_anthropic(m, at)?;
            push_turn(turns, "assistant", content);
        }
        "tool" => {
            drop_unknown(obj, &["role", "content", "tool_call_id"], at);
            let id = str_of(m, "tool_call_id")
                .ok_or_else(|| err(format!("{at}.tool_call_id"), "must be a string"))?;
            let mut block = Map::new();
            block.insert("type".into(), "tool_result".into());
            block.insert("tool_use_id".into(), id.into());
            match m.get("content") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => {
                    block.insert("content".into(), Value::String(s.clone()));
                }
                Some(Value::Array(parts)) => {
                    let blocks = parts
                        .iter()
                        .enumerate()
                        .map(|(j, p)| user_part_to_anthropic(p, &format!("{at}.content[{j}]")))
                        .collect::<Result<_, _>>()?;
                    block.insert("content".into(), Value::Array(blocks));
                }
                Some(_) => {
                    return Err(err(
                        format!("{at}.content"),
                        "must be a string or an array of text parts",
                    ));
                }
            }
            // Consecutive tool results merge into one user message here.
            push_turn(turns, "user", Content::Blocks(vec![Value::Object(block)]));
        }
        "function" => {
            return Err(err(
                format!("{at}.role"),
                "legacy function messages are not supported; use tool messages",
            ));
        }
        other => {
            return Err(err(
                format!("{at}.role"),
                format!(
                    "unknown role {other:?}; expected system, developer, user, assistant or tool"
                ),
            ));
        }
    }
    Ok(())
}

/// Content that may only be text (system prompts): a string or text parts.
fn text_only(content: Option<&Value>, at: &str) -> Result<Vec<String>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match str_of(p, "type") {
                Some("text") => str_of(p, "text")
                    .map(str::to_owned)
                    .ok_or_else(|| err(format!("{at}[{j}].text"), "must be a string")),
                _ => Err(err(
                    format!("{at}[{j}].type"),
                    "only text parts can go into an Anthropic system prompt",
                )),
            })
            .collect(),
        Some(_) => Err(err(at, "must be a string or an array of text parts")),
    }
}

fn user_part_to_anthropic(p: &Value, at: &str) -> Result<Value, TranslateError> {
    let kind = str_of(p, "type").ok_or_else(|| err(format!("{at}.type"), "must be a string"))?;
    match kind {
        "text" => {
            let text =
                str_of(p, "text").ok_or_else(|| err(format!("{at}.text"), "must be a string"))?;
            Ok(text_block(text))
        }
        "image_url" => {
            let image = p.get("image_url");
            // Some clients send the URL as a bare string.
            let url = match image {
                Some(Value::String(s)) => Some(s.as_str()),
                Some(i) => str_of(i, "url"),
                None => None,
            }
            .ok_or_else(|| err(format!("{at}.image_url.url"), "must be a string"))?;
            if image.is_some_and(|i| !is_absent(i.get("detail"))) {
                dropped(&format!("{at}.image_url.detail"));
            }
            let source = image_source(url, &format!("{at}.image_url.url"))?;
            Ok(json!({"type": "image", "source": source}))
        }
        "input_audio" => Err(err(
            format!("{at}.type"),
            "audio input cannot be sent to an Anthropic model",
        )),
        "file" => {
            let file = p.get("file");
            let Some(data) = file.and_then(|f| str_of(f, "file_data")) else {
                return Err(err(
                    format!("{at}.file"),
                    "only inline file_data can be sent to Anthropic; a file_id names OpenAI storage",
                ));
            };
            let (media, b64) = parse_data_url(data).ok_or_else(|| {
                err(
                    format!("{at}.file.file_data"),
                    "must be a base64 data URL (data:application/pdf;base64,...)",
                )
            })?;
            let mut doc = json!({
                "type": "document",
                "source": {"type": "base64", "media_type": media, "data": b64},
            });
            if let Some(name) = file.and_then(|f| str_of(f, "filename"))
                && let Some(d) = doc.as_object_mut()
            {
                d.insert("title".into(), name.into());
            }
            Ok(doc)
        }
        other => Err(err(
            format!("{at}.type"),
            format!("content part type {other:?} cannot be sent to Anthropic"),
        )),
    }
}

/// An OpenAI image URL → an Anthropic image `source`.
fn image_source(url: &str, at: &str) -> Result<Value, TranslateError> {
    if let Some((media, data)) = parse_data_url(url) {
        Ok(json!({"type": "base64", "media_type": media, "data": data}))
    } else if is_http_url(url) {
        Ok(json!({"type": "url", "url": url}))
    } else if url.starts_with("data:") {
        Err(err(
            at,
            "a data URL must be base64 (data:image/png;base64,...)",
        ))
    } else {
        Err(err(at, "must be an http(s) URL or a base64 data URL"))
    }
}

fn assistant_to_anthropic(m: &Value, at: &str) -> Result<Content, TranslateError> {
    let mut texts = Vec::new();
    match m.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => texts.push(s.clone()),
        Some(Value::Array(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let text = match str_of(p, "type") {
                    Some("text") => str_of(p, "text"),
                    Some("refusal") => str_of(p, "refusal"),
                    _ => {
                        return Err(err(
                            format!("{at}.content[{j}].type"),
                            "assistant content parts must be text or refusal",
                        ));
                    }
                };
                let text =
                    text.ok_or_else(|| err(format!("{at}.content[{j}]"), "part has no text"))?;
                texts.push(text.to_owned());
            }
        }
        Some(_) => {
            return Err(err(
                format!("{at}.content"),
                "must be a string, an array of text parts or null",
            ));
        }
    }
    // A refusal is what the assistant said; keep it as text in the history.
    if let Some(r) = str_of(m, "refusal").filter(|r| !r.is_empty()) {
        texts.push(r.to_owned());
    }
    let tool_uses = match m.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => calls
            .iter()
            .enumerate()
            .map(|(k, c)| tool_call_to_tool_use(c, &format!("{at}.tool_calls[{k}]")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err(format!("{at}.tool_calls"), "must be an array")),
    };
    if tool_uses.is_empty() && texts.len() <= 1 {
        return Ok(Content::Text(texts.pop().unwrap_or_default()));
    }
    Ok(Content::Blocks(
        texts
            .into_iter()
            .filter(|t| !t.is_empty())
            .map(text_block)
            .chain(tool_uses)
            .collect(),
    ))
}

fn tool_call_to_tool_use(c: &Value, at: &str) -> Result<Value, TranslateError> {
    let kind = str_of(c, "type").unwrap_or("function");
    if kind != "function" {
        return Err(err(
            format!("{at}.type"),
            format!("tool call type {kind:?} has no Anthropic equivalent"),
        ));
    }
    let id = str_of(c, "id").ok_or_else(|| err(format!("{at}.id"), "must be a string"))?;
    let function = c.get("function");
    let name = function
        .and_then(|f| str_of(f, "name"))
        .ok_or_else(|| err(format!("{at}.function.name"), "must be a string"))?;
    let input = arguments_to_input(
        function.and_then(|f| f.get("arguments")),
        &format!("{at}.function.arguments"),
    )?;
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// OpenAI tool call `arguments` (a JSON string) → Anthropic `input` (an object).
fn arguments_to_input(args: Option<&Value>, at: &str) -> Result<Value, TranslateError> {
    match args {
        None | Some(Value::Null) => Ok(json!({})),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(json!({})),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(_) => Err(err(at, "must encode a JSON object")),
            Err(e) => Err(err(at, format!("is not valid JSON ({e})"))),
        },
        // Lenient: some clients send the object itself.
        Some(v @ Value::Object(_)) => Ok(v.clone()),
        Some(_) => Err(err(at, "must be a string holding a JSON object")),
    }
}

fn tools_to_anthropic(tools: &Value) -> Result<Vec<Value>, TranslateError> {
    let tools = tools
        .as_array()
        .ok_or_else(|| err("tools", "must be an array"))?;
    tools
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let at = format!("tools[{k}]");
            let kind = str_of(t, "type").unwrap_or("function");
            if kind != "function" {
                return Err(err(
                    format!("{at}.type"),
                    format!("tool type {kind:?} has no Anthropic equivalent"),
                ));
            }
            let f = t
                .get("function")
                .filter(|f| f.is_object())
                .ok_or_else(|| err(format!("{at}.function"), "must be an object"))?;
            let name = str_of(f, "name")
                .ok_or_else(|| err(format!("{at}.function.name"), "must be a string"))?;
            let schema = match f.get("parameters") {
                // OpenAI's way to say "no arguments"; Anthropic needs a typed schema.
                None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                Some(Value::Object(p)) if p.is_empty() => {
                    json!({"type": "object", "properties": {}})
                }
                Some(p @ Value::Object(_)) => p.clone(),
                Some(_) => {
                    return Err(err(
                        format!("{at}.function.parameters"),
                        "must be a JSON Schema object",
                    ));
                }
            };
            if let Some(f) = f.as_object() {
                drop_unknown(
                    f,
                    &["name", "description", "parameters"],
                    &format!("{at}.function"),
                );
            }
            let mut out = Map::new();
            out.insert("name".into(), name.into());
            if let Some(d) = str_of(f, "description") {
                out.insert("description".into(), d.into());
            }
            out.insert("input_schema".into(), schema);
            Ok(Value::Object(out))
        })
        .collect()
}

fn tool_choice_to_anthropic(c: &Value) -> Result<Value, TranslateError> {
    match c {
        Value::String(s) if s == "auto" => Ok(json!({"type": "auto"})),
        Value::String(s) if s == "none" => Ok(json!({"type": "none"})),
        Value::String(s) if s == "required" => Ok(json!({"type": "any"})),
        Value::Object(_) if str_of(c, "type") == Some("function") => {
            let name = c
                .get("function")
                .and_then(|f| str_of(f, "name"))
                .ok_or_else(|| err("tool_choice.function.name", "must be a string"))?;
            Ok(json!({"type": "tool", "name": name}))
        }
        _ => Err(err(
            "tool_choice",
            "expected \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\"}}",
        )),
    }
}

// ---------------------------------------------------------------------------
// Requests: Anthropic → OpenAI
// ---------------------------------------------------------------------------

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
    if role != "user" && role != "assistant" {
        return Err(err(
            format!("{at}.role"),
            format!("unknown role {role:?}; Anthropic messages are user or assistant"),
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

/// An OpenAI `tool_calls[]` entry; `input` is serialized as the arguments string.
fn tool_call(id: &str, name: &str, input: Option<&Value>) -> Value {
    let arguments = match input {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(v) => v.to_string(),
    };
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

fn tools_to_openai(tools: &Value) -> Result<Vec<Value>, TranslateError> {
    let tools = tools
        .as_array()
        .ok_or_else(|| err("tools", "must be an array"))?;
    tools
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let at = format!("tools[{k}]");
            if let Some(kind) = str_of(t, "type")
                && kind != "custom"
            {
                return Err(err(
                    format!("{at}.type"),
                    format!("Anthropic server tool {kind:?} cannot be offered to an OpenAI model"),
                ));
            }
            let name =
                str_of(t, "name").ok_or_else(|| err(format!("{at}.name"), "must be a string"))?;
            let parameters = match t.get("input_schema") {
                None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
                Some(s @ Value::Object(_)) => s.clone(),
                Some(_) => {
                    return Err(err(
                        format!("{at}.input_schema"),
                        "must be a JSON Schema object",
                    ));
                }
            };
            if let Some(t) = t.as_object() {
                drop_unknown(t, &["type", "name", "description", "input_schema"], &at);
            }
            let mut function = Map::new();
            function.insert("name".into(), name.into());
            if let Some(d) = str_of(t, "description") {
                function.insert("description".into(), d.into());
            }
            function.insert("parameters".into(), parameters);
            Ok(json!({"type": "function", "function": function}))
        })
        .collect()
}

fn tool_choice_to_openai(c: &Value) -> Result<Value, TranslateError> {
    match str_of(c, "type") {
        Some("auto") => Ok(json!("auto")),
        Some("any") => Ok(json!("required")),
        Some("none") => Ok(json!("none")),
        Some("tool") => {
            let name =
                str_of(c, "name").ok_or_else(|| err("tool_choice.name", "must be a string"))?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(err(
            "tool_choice.type",
            "expected \"auto\", \"any\", \"tool\" or \"none\"",
        )),
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

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

/// Anthropic usage (message or merged stream usage) → OpenAI usage.
fn usage_to_openai(u: &Value) -> Value {
    let cache_read = u64_of(u, "cache_read_input_tokens");
    let prompt = u64_of(u, "input_tokens")
        .saturating_add(u64_of(u, "cache_creation_input_tokens"))
        .saturating_add(cache_read);
    let completion = u64_of(u, "output_tokens");
    let mut usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
    });
    if cache_read > 0
        && let Some(o) = usage.as_object_mut()
    {
        o.insert(
            "prompt_tokens_details".into(),
            json!({"cached_tokens": cache_read}),
        );
    }
    usage
}

/// OpenAI usage → Anthropic (input, output, cache-read) token counts.
fn usage_from_openai(u: &Value) -> (u64, u64, u64) {
    let cached = u
        .get("prompt_tokens_details")
        .map(|d| u64_of(d, "cached_tokens"))
        .unwrap_or(0);
    let input = u64_of(u, "prompt_tokens").saturating_sub(cached);
    (input, u64_of(u, "completion_tokens"), cached)
}

fn usage_to_anthropic((input, output, cached): (u64, u64, u64)) -> Value {
    let mut usage = json!({"input_tokens": input, "output_tokens": output});
    if cached > 0
        && let Some(o) = usage.as_object_mut()
    {
        o.insert("cache_read_input_tokens".into(), cached.into());
    }
    usage
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

// ---------------------------------------------------------------------------
// Error bodies
// ---------------------------------------------------------------------------

/// The message of an error body of either side: OpenAI
/// `{"error":{"message"}}` or Anthropic `{"type":"error","error":{"message"}}`
/// (also `{"error":"text"}`, which some OpenAI-compatible servers send).
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    message_of(v.get("error")?)
}

fn message_of(error: &Value) -> Option<String> {
    match error {
        Value::String(s) => Some(s.clone()),
        e => str_of(e, "message").map(str::to_owned),
    }
}

/// An error body of either side → (message, error `type` in the *other*
/// format's vocabulary): an Anthropic body yields an OpenAI type, an OpenAI
/// body an Anthropic type. For passing upstream 4xx errors to a client of
/// the other format.
pub fn error_parts(body: &[u8]) -> Option<(String, &'static str)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let error = v.get("error")?;
    let message = message_of(error)?;
    let kind = str_of(error, "type").unwrap_or_default();
    let target = if str_of(&v, "type") == Some("error") {
        openai_error(kind).0
    } else {
        anthropic_error_type(kind, str_of(error, "code"))
    };
    Some((message, target))
}

/// Anthropic error type → OpenAI (`type`, `code`).
fn openai_error(anthropic_type: &str) -> (&'static str, Option<&'static str>) {
    match anthropic_type {
        "invalid_request_error" | "not_found_error" | "permission_error" | "request_too_large" => {
            ("invalid_request_error", None)
        }
        "authentication_error" => ("invalid_request_error", Some("invalid_api_key")),
        "rate_limit_error" => ("requests", Some("rate_limit_exceeded")),
        "billing_error" => ("insufficient_quota", Some("insufficient_quota")),
        // api_error, overloaded_error, timeout_error and anything newer.
        _ => ("server_error", None),
    }
}

/// OpenAI error type/code → Anthropic error type.
fn anthropic_error_type(openai_type: &str, code: Option<&str>) -> &'static str {
    match (openai_type, code.unwrap_or_default()) {
        (_, "rate_limit_exceeded") | ("requests" | "tokens" | "rate_limit_error", _) => {
            "rate_limit_error"
        }
        (_, "insufficient_quota") | ("insufficient_quota", _) => "billing_error",
        (_, "invalid_api_key") | ("authentication_error", _) => "authentication_error",
        (_, "model_not_found") | ("not_found_error", _) => "not_found_error",
        ("permission_error", _) => "permission_error",
        ("invalid_request_error", _) => "invalid_request_error",
        _ => "api_error",
    }
}

// ---------------------------------------------------------------------------
// Streams: Anthropic events → OpenAI chunks
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Streams: OpenAI chunks → Anthropic events
// ---------------------------------------------------------------------------

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
