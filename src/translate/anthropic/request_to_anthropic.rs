//! Requests: OpenAI Chat Completions → Anthropic Messages.

use serde_json::{Map, Value, json};
use tracing::debug;

use super::tools::{tool_call_to_tool_use, tool_choice_to_anthropic, tools_to_anthropic};
use super::{
    count, drop_unknown, dropped, err, is_absent, model, number, str_of, stream_flag, text_block,
};
use crate::translate::TranslateError;

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
