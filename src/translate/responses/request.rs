//! Requests: Responses API → Chat Completions. Here the request as a whole
//! and its settings; the tools are translated in `tools`, the input items
//! in `input`.

mod input;
mod tools;

use serde_json::{Map, Value, json};

use self::input::Messages;
use self::tools::{tool_choice_to_chat, tools_to_chat};
use super::{Context, dropped, err, str_of};
use crate::translate::TranslateError;

/// Top-level Responses request fields this translation reads; any other is
/// dropped with a debug log.
const KNOWN: &[&str] = &[
    "model",
    "input",
    "instructions",
    "stream",
    "max_output_tokens",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "user",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
    "previous_response_id",
    "conversation",
    "prompt",
    "background",
];

/// Fields that pass to the chat request unchanged when they are strings.
const PASS_STRINGS: &[&str] = &[
    "user",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "service_tier",
];

/// A Responses request → a Chat Completions request, and the context the
/// way back needs (see [`Context`]).
pub fn request_to_chat(req: &Value) -> Result<(Value, Context), TranslateError> {
    let req = req
        .as_object()
        .ok_or_else(|| err("body", "the request must be a JSON object"))?;
    refuse_stateful(req)?;
    for key in req.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        dropped(key);
    }
    let mut ctx = Context::default();
    let mut out = Map::new();
    match req.get("model") {
        None | Some(Value::Null) => {}
        Some(Value::String(m)) => {
            out.insert("model".into(), m.as_str().into());
            ctx.model = m.clone();
        }
        Some(_) => return Err(err("model", "must be a string")),
    }

    // Tools first: calls in the input are named by them.
    let tools = tools_to_chat(req.get("tools"), &mut ctx)?;
    let mut messages = Messages::default();
    match req.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                messages.push(json!({"role": "system", "content": s}));
            }
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                messages.item(item, &format!("instructions[{i}]"))?;
            }
        }
        Some(_) => {
            return Err(err(
                "instructions",
                "must be a string or an array of input items",
            ));
        }
    }
    match req.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                messages.item(item, &format!("input[{i}]"))?;
            }
        }
        Some(_) => return Err(err("input", "must be a string or an array of input items")),
    }
    let messages = messages.finish();
    if messages.is_empty() {
        return Err(err(
            "input",
            "is missing or empty; the whole conversation goes in input (tokenyard keeps none)",
        ));
    }
    out.insert("messages".into(), Value::Array(messages));

    match req.get("max_output_tokens") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let n = v
                .as_u64()
                .ok_or_else(|| err("max_output_tokens", "must be a non-negative integer"))?;
            out.insert("max_completion_tokens".into(), n.into());
        }
    }
    for key in ["temperature", "top_p"] {
        match req.get(key) {
            None | Some(Value::Null) => {}
            Some(v) if v.is_number() => {
                out.insert(key.into(), v.clone());
            }
            Some(_) => return Err(err(key, "must be a number")),
        }
    }
    for key in PASS_STRINGS {
        match req.get(*key) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                out.insert((*key).into(), s.as_str().into());
            }
            Some(_) => return Err(err(*key, "must be a string")),
        }
    }
    match req.get("stream") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => {
            out.insert("stream".into(), (*b).into());
            if *b {
                // So response.completed can carry real token counts.
                out.insert("stream_options".into(), json!({"include_usage": true}));
            }
        }
        Some(_) => return Err(err("stream", "must be a boolean")),
    }
    text_to_chat(req.get("text"), &mut out)?;
    match req.get("reasoning") {
        None | Some(Value::Null) => {}
        Some(Value::Object(r)) => {
            for key in r.keys().filter(|k| k.as_str() != "effort") {
                dropped(&format!("reasoning.{key}"));
            }
            match r.get("effort") {
                None | Some(Value::Null) => {}
                Some(Value::String(e)) => {
                    out.insert("reasoning_effort".into(), e.as_str().into());
                }
                Some(_) => return Err(err("reasoning.effort", "must be a string")),
            }
        }
        Some(_) => return Err(err("reasoning", "must be an object")),
    }

    let choice = match req.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(c) => tool_choice_to_chat(c, &ctx)?,
    };
    if tools.is_empty() {
        // Every tool offered was one the provider would run itself (or none
        // was offered): a chat request may not name a choice without tools.
        if choice.as_ref().is_some_and(|c| c != "none" && c != "auto") {
            return Err(err(
                "tool_choice",
                "requires a tool, but no function or custom tool is offered",
            ));
        }
    } else {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
        match req.get("parallel_tool_calls") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => {
                out.insert("parallel_tool_calls".into(), (*b).into());
            }
            Some(_) => return Err(err("parallel_tool_calls", "must be a boolean")),
        }
    }

    ctx.echo = echo(req);
    Ok((Value::Object(out), ctx))
}

/// Fields that continue or defer to state kept by the provider.
fn refuse_stateful(req: &Map<String, Value>) -> Result<(), TranslateError> {
    let present = |k: &str| !matches!(req.get(k), None | Some(Value::Null));
    if present("previous_response_id") {
        return Err(err(
            "previous_response_id",
            "continues a response stored by the provider, and a Chat Completions provider \
             stores none (nor does tokenyard): send the whole conversation in input, or route \
             the model to a provider with responses = \"native\"",
        ));
    }
    if present("conversation") {
        return Err(err(
            "conversation",
            "names a conversation stored by the provider; a Chat Completions provider keeps \
             none: send the whole conversation in input",
        ));
    }
    if present("prompt") {
        return Err(err(
            "prompt",
            "refers to a prompt template stored by the provider; a Chat Completions provider \
             has none",
        ));
    }
    if req.get("background") == Some(&Value::Bool(true)) {
        return Err(err(
            "background",
            "a background response is stored and polled at the provider; a Chat Completions \
             provider cannot run one",
        ));
    }
    Ok(())
}

/// The request settings every Response object echoes, with the API's
/// defaults where the request left them out. `store` is always false:
/// nothing is stored.
fn echo(req: &Map<String, Value>) -> Map<String, Value> {
    let get = |k: &str, default: Value| match req.get(k) {
        None | Some(Value::Null) => default,
        Some(v) => v.clone(),
    };
    let mut e = Map::new();
    e.insert("instructions".into(), get("instructions", Value::Null));
    e.insert(
        "max_output_tokens".into(),
        get("max_output_tokens", Value::Null),
    );
    e.insert(
        "parallel_tool_calls".into(),
        get("parallel_tool_calls", true.into()),
    );
    e.insert("temperature".into(), get("temperature", 1.0.into()));
    e.insert("top_p".into(), get("top_p", 1.0.into()));
    e.insert("tool_choice".into(), get("tool_choice", "auto".into()));
    e.insert("tools".into(), get("tools", json!([])));
    e.insert(
        "text".into(),
        get("text", json!({"format": {"type": "text"}})),
    );
    e.insert(
        "reasoning".into(),
        get("reasoning", json!({"effort": null, "summary": null})),
    );
    e.insert("store".into(), false.into());
    e.insert("truncation".into(), get("truncation", "disabled".into()));
    e.insert("metadata".into(), get("metadata", json!({})));
    e.insert("user".into(), get("user", Value::Null));
    if let Some(k) = req.get("prompt_cache_key").filter(|v| !v.is_null()) {
        e.insert("prompt_cache_key".into(), k.clone());
    }
    e
}

/// `text.format` → `response_format`; `text.verbosity` → `verbosity`.
fn text_to_chat(text: Option<&Value>, out: &mut Map<String, Value>) -> Result<(), TranslateError> {
    let text = match text {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(t)) => t,
        Some(_) => return Err(err("text", "must be an object")),
    };
    for key in text
        .keys()
        .filter(|k| !["format", "verbosity"].contains(&k.as_str()))
    {
        dropped(&format!("text.{key}"));
    }
    match text.get("verbosity") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) => {
            out.insert("verbosity".into(), v.as_str().into());
        }
        Some(_) => return Err(err("text.verbosity", "must be a string")),
    }
    let format = match text.get("format") {
        None | Some(Value::Null) => return Ok(()),
        Some(f @ Value::Object(_)) => f,
        Some(_) => return Err(err("text.format", "must be an object")),
    };
    match str_of(format, "type") {
        Some("text") => {}
        Some("json_object") => {
            out.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some("json_schema") => {
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| err("text.format.schema", "must be a JSON schema object"))?;
            let mut js = Map::new();
            js.insert(
                "name".into(),
                str_of(format, "name").unwrap_or("response").into(),
            );
            js.insert("schema".into(), schema.clone());
            if let Some(d) = str_of(format, "description") {
                js.insert("description".into(), d.into());
            }
            if let Some(s) = format.get("strict").filter(|s| s.is_boolean()) {
                js.insert("strict".into(), s.clone());
            }
            out.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": js}),
            );
        }
        Some(other) => {
            return Err(err(
                "text.format.type",
                format!("{other:?} has no Chat Completions equivalent"),
            ));
        }
        None => return Err(err("text.format.type", "must be a string")),
    }
    Ok(())
}
