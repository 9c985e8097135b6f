//! Tool definitions, `tool_choice` and tool calls in both directions,
//! shared by the request and response translations.

use serde_json::{Map, Value, json};

use super::{drop_unknown, err, str_of};
use crate::translate::TranslateError;

// ---------------------------------------------------------------------------
// OpenAI → Anthropic
// ---------------------------------------------------------------------------

pub(super) fn tool_call_to_tool_use(c: &Value, at: &str) -> Result<Value, TranslateError> {
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
pub(super) fn arguments_to_input(args: Option<&Value>, at: &str) -> Result<Value, TranslateError> {
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

pub(super) fn tools_to_anthropic(tools: &Value) -> Result<Vec<Value>, TranslateError> {
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

pub(super) fn tool_choice_to_anthropic(c: &Value) -> Result<Value, TranslateError> {
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
// Anthropic → OpenAI
// ---------------------------------------------------------------------------

/// An OpenAI `tool_calls[]` entry; `input` is serialized as the arguments string.
pub(super) fn tool_call(id: &str, name: &str, input: Option<&Value>) -> Value {
    let arguments = match input {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(v) => v.to_string(),
    };
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

pub(super) fn tools_to_openai(tools: &Value) -> Result<Vec<Value>, TranslateError> {
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

pub(super) fn tool_choice_to_openai(c: &Value) -> Result<Value, TranslateError> {
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
