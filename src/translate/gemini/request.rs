//! Requests: an OpenAI chat request as a Gemini `GenerateContentRequest`
//! (messages as turns of parts, tools as function declarations, sampling
//! and output settings as the generation config).

use base64::Engine as _;
use serde_json::{Map, Value};

use super::json::{schema, to_struct};
use crate::gemini::v1beta as pb;
use crate::translate::TranslateError;

/// Translates an OpenAI chat request body into a Gemini request for
/// `model` (sent as `models/{model}`).
pub fn request_from_openai(
    req: &Value,
    model: &str,
) -> Result<pb::GenerateContentRequest, TranslateError> {
    let Some(obj) = req.as_object() else {
        return Err(TranslateError::new("body", "must be a JSON object"));
    };
    let messages = match obj.get("messages") {
        Some(Value::Array(m)) => m,
        Some(_) => return Err(TranslateError::new("messages", "must be an array")),
        None => return Err(TranslateError::new("messages", "is required")),
    };
    let mut out = pb::GenerateContentRequest {
        model: model_name(model),
        ..Default::default()
    };
    let mut system: Vec<pb::Part> = Vec::new();
    for (i, msg) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Some(m) = msg.as_object() else {
            return Err(TranslateError::new(at, "must be an object"));
        };
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        match role {
            "system" | "developer" => {
                system.extend(text_parts(m.get("content"), &format!("{at}.content"))?);
            }
            "user" => {
                let parts = user_parts(m.get("content"), &format!("{at}.content"))?;
                push_content(&mut out.contents, "user", parts);
            }
            "assistant" => {
                let parts = assistant_parts(m, &at)?;
                push_content(&mut out.contents, "model", parts);
            }
            "tool" => {
                let part = tool_result(messages, i, m, &at)?;
                push_content(&mut out.contents, "user", vec![part]);
            }
            "function" => {
                // The pre-`tools` form: the message names the function.
                let Some(name) = m.get("name").and_then(Value::as_str) else {
                    return Err(TranslateError::new(format!("{at}.name"), "is required"));
                };
                let part = function_response(name, m.get("content"));
                push_content(&mut out.contents, "user", vec![part]);
            }
            "" => return Err(TranslateError::new(format!("{at}.role"), "is required")),
            other => {
                return Err(TranslateError::new(
                    format!("{at}.role"),
                    format!("{other:?} is not one of system, developer, user, assistant, tool"),
                ));
            }
        }
    }
    if !system.is_empty() {
        out.system_instruction = Some(pb::Content {
            parts: system,
            role: String::new(),
        });
    }
    let declarations = declarations(obj)?;
    if !declarations.is_empty() {
        out.tools = vec![pb::Tool {
            function_declarations: declarations,
        }];
    }
    out.tool_config = tool_config(obj.get("tool_choice").or(obj.get("function_call")));
    out.generation_config = generation_config(obj)?;
    for key in obj.keys() {
        if !HANDLED.contains(&key.as_str()) {
            tracing::debug!(field = %key, "gemini: request field has no Gemini equivalent; dropped");
        }
    }
    Ok(out)
}

/// Top-level request fields that are translated (or are the gateway's own
/// business, like `stream`).
const HANDLED: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "tools",
    "functions",
    "tool_choice",
    "function_call",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
];

/// `models/{model}`, unless the name is already a resource name.
fn model_name(model: &str) -> String {
    if model.starts_with("models/") || model.starts_with("tunedModels/") {
        model.to_owned()
    } else {
        format!("models/{model}")
    }
}

/// Appends a turn, merging it into the previous one when the role repeats
/// (several tool results answer one model turn together, and Gemini wants
/// them in one `user` turn). Turns with no parts are dropped: Gemini
/// refuses them.
fn push_content(contents: &mut Vec<pb::Content>, role: &str, parts: Vec<pb::Part>) {
    if parts.is_empty() {
        tracing::debug!(role, "gemini: empty message dropped");
        return;
    }
    match contents.last_mut() {
        Some(last) if last.role == role => last.parts.extend(parts),
        _ => contents.push(pb::Content {
            parts,
            role: role.to_owned(),
        }),
    }
}

fn text_part(text: impl Into<String>) -> pb::Part {
    pb::Part {
        data: Some(pb::part::Data::Text(text.into())),
        thought: false,
    }
}

/// Text-only content (system and developer messages): a string, or text
/// parts. Other parts are dropped.
fn text_parts(content: Option<&Value>, at: &str) -> Result<Vec<pb::Part>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![text_part(s.as_str())]),
        Some(Value::Array(items)) => Ok(items
            .iter()
            .filter_map(|p| match p.get("text").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => Some(text_part(t)),
                Some(_) => None,
                None => {
                    tracing::debug!(at, "gemini: non-text part in a text-only message dropped");
                    None
                }
            })
            .collect()),
        Some(_) => Err(TranslateError::new(
            at,
            "must be a string or an array of parts",
        )),
    }
}

/// A user message's content: text, images (data URLs), audio, files.
fn user_parts(content: Option<&Value>, at: &str) -> Result<Vec<pb::Part>, TranslateError> {
    let items = match content {
        Some(Value::Array(items)) => items,
        other => return text_parts(other, at),
    };
    let mut parts = Vec::with_capacity(items.len());
    for (j, item) in items.iter().enumerate() {
        let at = format!("{at}[{j}]");
        let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "text" => match item.get("text") {
                Some(Value::String(t)) if t.is_empty() => {}
                Some(Value::String(t)) => parts.push(text_part(t.as_str())),
                _ => {
                    return Err(TranslateError::new(
                        format!("{at}.text"),
                        "must be a string",
                    ));
                }
            },
            "image_url" => {
                let url = item
                    .get("image_url")
                    .and_then(|u| u.get("url").or(Some(u)))
                    .and_then(Value::as_str);
                let Some(url) = url else {
                    return Err(TranslateError::new(
                        format!("{at}.image_url.url"),
                        "must be a string",
                    ));
                };
                parts.push(inline_data(url, &format!("{at}.image_url.url"))?);
            }
            "input_audio" => {
                let audio = item.get("input_audio");
                let data = audio.and_then(|a| a.get("data")).and_then(Value::as_str);
                let format = audio.and_then(|a| a.get("format")).and_then(Value::as_str);
                let (Some(data), Some(format)) = (data, format) else {
                    return Err(TranslateError::new(
                        format!("{at}.input_audio"),
                        "needs data and format",
                    ));
                };
                let bytes = decode_base64(data, &format!("{at}.input_audio.data"))?;
                parts.push(blob(format!("audio/{format}"), bytes));
            }
            "file" => {
                let data = item
                    .get("file")
                    .and_then(|f| f.get("file_data"))
                    .and_then(Value::as_str);
                let Some(data) = data else {
                    return Err(TranslateError::new(
                        format!("{at}.file.file_data"),
                        "is required (uploaded file ids cannot be sent to Gemini)",
                    ));
                };
                parts.push(inline_data(data, &format!("{at}.file.file_data"))?);
            }
            other => tracing::debug!(at, kind = other, "gemini: content part type dropped"),
        }
    }
    Ok(parts)
}

fn blob(mime_type: String, data: Vec<u8>) -> pb::Part {
    pb::Part {
        data: Some(pb::part::Data::InlineData(pb::Blob { mime_type, data })),
        thought: false,
    }
}

/// A `data:<mime>;base64,<data>` URL as inline bytes. Gemini cannot fetch
/// arbitrary URLs, so anything else is refused.
fn inline_data(url: &str, at: &str) -> Result<pb::Part, TranslateError> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(TranslateError::new(
            at,
            "Gemini takes images inline only: send a data: URL (data:image/png;base64,...)",
        ));
    };
    let Some((meta, data)) = rest.split_once(',') else {
        return Err(TranslateError::new(at, "is not a valid data: URL"));
    };
    let Some(mime) = meta.strip_suffix(";base64") else {
        return Err(TranslateError::new(at, "data: URL must be base64-encoded"));
    };
    let mime = if mime.is_empty() {
        "application/octet-stream"
    } else {
        mime
    };
    Ok(blob(mime.to_owned(), decode_base64(data, at)?))
}

fn decode_base64(data: &str, at: &str) -> Result<Vec<u8>, TranslateError> {
    let data = data.trim();
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(data))
        .map_err(|e| TranslateError::new(at, format!("invalid base64: {e}")))
}

/// An assistant turn: its text, then its function calls.
fn assistant_parts(m: &Map<String, Value>, at: &str) -> Result<Vec<pb::Part>, TranslateError> {
    let mut parts = text_parts(m.get("content"), &format!("{at}.content"))?;
    match m.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, call) in calls.iter().enumerate() {
                let at = format!("{at}.tool_calls[{j}].function");
                let f = call.get("function");
                let Some(name) = f.and_then(|f| f.get("name")).and_then(Value::as_str) else {
                    return Err(TranslateError::new(format!("{at}.name"), "is required"));
                };
                parts.push(function_call(name, f.and_then(|f| f.get("arguments")), &at));
            }
        }
        Some(_) => {
            return Err(TranslateError::new(
                format!("{at}.tool_calls"),
                "must be an array",
            ));
        }
    }
    if let Some(f) = m.get("function_call").filter(|f| !f.is_null()) {
        let Some(name) = f.get("name").and_then(Value::as_str) else {
            return Err(TranslateError::new(
                format!("{at}.function_call.name"),
                "is required",
            ));
        };
        parts.push(function_call(name, f.get("arguments"), at));
    }
    Ok(parts)
}

/// A function call part. OpenAI's arguments are a JSON string; Gemini's a
/// JSON object. Ids are not sent: Gemini matches results to calls by name
/// and order, and ids tokenyard made up would mean nothing to it.
fn function_call(name: &str, arguments: Option<&Value>, at: &str) -> pb::Part {
    let args = match arguments {
        Some(Value::String(s)) if s.trim().is_empty() => Some(Value::Object(Map::new())),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok(),
        Some(v @ Value::Object(_)) => Some(v.clone()),
        _ => None,
    };
    let args = match args {
        Some(Value::Object(o)) => Some(to_struct(&o, 0)),
        _ => {
            tracing::debug!(
                at,
                "gemini: tool call arguments are not a JSON object; sent empty"
            );
            Some(prost_types::Struct::default())
        }
    };
    pb::Part {
        data: Some(pb::part::Data::FunctionCall(pb::FunctionCall {
            id: String::new(),
            name: name.to_owned(),
            args,
        })),
        thought: false,
    }
}

/// A `role: tool` message: its result, under the name of the call it
/// answers (Gemini needs the name; OpenAI sends only the call's id).
fn tool_result(
    messages: &[Value],
    i: usize,
    m: &Map<String, Value>,
    at: &str,
) -> Result<pb::Part, TranslateError> {
    let Some(id) = m.get("tool_call_id").and_then(Value::as_str) else {
        return Err(TranslateError::new(
            format!("{at}.tool_call_id"),
            "is required",
        ));
    };
    // The nearest earlier call with this id: ids may repeat across turns.
    let name = messages[..i]
        .iter()
        .rev()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
        .filter_map(|m| m.get("tool_calls").and_then(Value::as_array))
        .flatten()
        .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
        .and_then(|c| c.get("function")?.get("name")?.as_str());
    let Some(name) = name else {
        return Err(TranslateError::new(
            format!("{at}.tool_call_id"),
            format!("no earlier assistant message has a tool call with id {id:?}"),
        ));
    };
    Ok(function_response(name, m.get("content")))
}

/// A function result. Gemini wants a JSON object: a result that is one is
/// sent as is, anything else as `{"output": <text>}` (Gemini's documented
/// key for a function's output).
fn function_response(name: &str, content: Option<&Value>) -> pb::Part {
    let text = match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) => to_struct(&o, 0),
        _ => {
            let mut o = Map::new();
            o.insert("output".to_owned(), Value::String(text));
            to_struct(&o, 0)
        }
    };
    pb::Part {
        data: Some(pb::part::Data::FunctionResponse(pb::FunctionResponse {
            id: String::new(),
            name: name.to_owned(),
            response: Some(response),
        })),
        thought: false,
    }
}

/// `tools` (and the older `functions`) as function declarations.
fn declarations(obj: &Map<String, Value>) -> Result<Vec<pb::FunctionDeclaration>, TranslateError> {
    let mut out = Vec::new();
    for key in ["tools", "functions"] {
        let items = match obj.get(key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => items,
            Some(_) => return Err(TranslateError::new(key, "must be an array")),
        };
        for (j, item) in items.iter().enumerate() {
            let (f, at) = if key == "tools" {
                let kind = item
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("function");
                if kind != "function" {
                    tracing::debug!(kind, "gemini: non-function tool dropped");
                    continue;
                }
                (item.get("function"), format!("tools[{j}].function"))
            } else {
                (Some(item), format!("functions[{j}]"))
            };
            let Some(name) = f.and_then(|f| f.get("name")).and_then(Value::as_str) else {
                return Err(TranslateError::new(format!("{at}.name"), "is required"));
            };
            let description = f
                .and_then(|f| f.get("description"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let parameters = f
                .and_then(|f| f.get("parameters"))
                .filter(|p| p.is_object())
                .map(|p| schema(p, 0))
                // Gemini refuses an OBJECT schema without properties; a
                // function without parameters simply has none.
                .filter(|s| !(s.r#type == pb::Type::Object as i32 && s.properties.is_empty()));
            out.push(pb::FunctionDeclaration {
                name: name.to_owned(),
                description: description.to_owned(),
                parameters,
                response: None,
            });
        }
    }
    Ok(out)
}

/// `tool_choice` as a function calling mode. Unrecognised values are
/// dropped: Gemini's default (AUTO) is OpenAI's default too.
fn tool_config(choice: Option<&Value>) -> Option<pb::ToolConfig> {
    use pb::function_calling_config::Mode;
    let (mode, names) = match choice? {
        Value::String(s) => match s.as_str() {
            "auto" => (Mode::Auto, Vec::new()),
            "none" => (Mode::None, Vec::new()),
            "required" => (Mode::Any, Vec::new()),
            other => {
                tracing::debug!(tool_choice = other, "gemini: unknown tool_choice dropped");
                return None;
            }
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| o.get("name"))
                .and_then(Value::as_str);
            match name {
                Some(n) => (Mode::Any, vec![n.to_owned()]),
                None => {
                    tracing::debug!("gemini: tool_choice object without a function name dropped");
                    return None;
                }
            }
        }
        _ => return None,
    };
    Some(pb::ToolConfig {
        function_calling_config: Some(pb::FunctionCallingConfig {
            mode: mode as i32,
            allowed_function_names: names,
        }),
    })
}

fn number(obj: &Map<String, Value>, key: &str) -> Result<Option<f64>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| TranslateError::new(key, "must be a number")),
    }
}

fn integer(obj: &Map<String, Value>, key: &str) -> Result<Option<i64>, TranslateError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_u64().map(|_| i64::MAX))
            .map(Some)
            .ok_or_else(|| TranslateError::new(key, "must be an integer")),
    }
}

fn clamp_i32(n: i64) -> i32 {
    n.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Sampling and output settings; `None` when the request sets none.
fn generation_config(
    obj: &Map<String, Value>,
) -> Result<Option<pb::GenerationConfig>, TranslateError> {
    let mut c = pb::GenerationConfig::default();
    match integer(obj, "n")? {
        None | Some(1) => {}
        Some(n) if n < 1 => return Err(TranslateError::new("n", "must be at least 1")),
        Some(_) => {
            return Err(TranslateError::new(
                "n",
                "only one choice per request is supported for Gemini upstreams; send n: 1",
            ));
        }
    }
    c.stop_sequences = match obj.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| TranslateError::new("stop", "must be a string or strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(TranslateError::new("stop", "must be a string or strings")),
    };
    let max = match integer(obj, "max_completion_tokens")? {
        Some(n) => Some(n),
        None => integer(obj, "max_tokens")?,
    };
    if let Some(n) = max {
        if n < 0 {
            return Err(TranslateError::new("max_tokens", "must not be negative"));
        }
        c.max_output_tokens = Some(clamp_i32(n));
    }
    c.temperature = number(obj, "temperature")?.map(|v| v as f32);
    c.top_p = number(obj, "top_p")?.map(|v| v as f32);
    c.top_k = integer(obj, "top_k")?.map(clamp_i32);
    c.seed = integer(obj, "seed")?.map(|s| s as i32);
    c.presence_penalty = number(obj, "presence_penalty")?.map(|v| v as f32);
    c.frequency_penalty = number(obj, "frequency_penalty")?.map(|v| v as f32);
    if let Some(format) = obj.get("response_format").filter(|f| !f.is_null()) {
        match format.get("type").and_then(Value::as_str) {
            Some("json_object") => c.response_mime_type = "application/json".to_owned(),
            Some("json_schema") => {
                c.response_mime_type = "application/json".to_owned();
                c.response_schema = format
                    .get("json_schema")
                    .and_then(|j| j.get("schema"))
                    .filter(|s| s.is_object())
                    .map(|s| schema(s, 0));
            }
            _ => {}
        }
    }
    if c == pb::GenerationConfig::default() {
        Ok(None)
    } else {
        Ok(Some(c))
    }
}
