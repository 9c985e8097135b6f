//! The input: `instructions` and `input` items → chat messages, tool calls
//! joined to the assistant message before them and images from tool
//! outputs following the tool messages.

use serde_json::{Map, Value, json};

use super::tools::flat_name;
use crate::translate::TranslateError;
use crate::translate::responses::{dropped, err, str_of};

/// The chat messages being built, with images a tool returned waiting to
/// follow its tool messages.
#[derive(Default)]
pub(super) struct Messages {
    out: Vec<Value>,
    /// Image parts from tool outputs: a chat tool message carries text only,
    /// so they follow the run of tool messages as one user message.
    images: Vec<Value>,
}

impl Messages {
    pub(super) fn push(&mut self, m: Value) {
        if m["role"] != "tool" {
            self.flush_images();
        }
        self.out.push(m);
    }

    fn flush_images(&mut self) {
        if self.images.is_empty() {
            return;
        }
        let mut content = vec![json!({
            "type": "text",
            "text": "The tool calls above returned these images:",
        })];
        content.append(&mut self.images);
        self.out.push(json!({"role": "user", "content": content}));
    }

    pub(super) fn finish(mut self) -> Vec<Value> {
        self.flush_images();
        self.out
    }

    /// A tool call joins the assistant message right before it (its text,
    /// or other calls); otherwise it starts an assistant message.
    fn tool_call(&mut self, call: Value) {
        if self.images.is_empty()
            && let Some(last) = self.out.last_mut()
            && last["role"] == "assistant"
            && let Some(m) = last.as_object_mut()
        {
            match m.get_mut("tool_calls") {
                Some(Value::Array(calls)) => calls.push(call),
                _ => {
                    m.insert("tool_calls".into(), json!([call]));
                }
            }
            return;
        }
        self.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    }

    pub(super) fn item(&mut self, item: &Value, at: &str) -> Result<(), TranslateError> {
        if !item.is_object() {
            return Err(err(at, "must be an input item object"));
        }
        let kind = match item.get("type") {
            None | Some(Value::Null) => "message",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(err(format!("{at}.type"), "must be a string")),
        };
        match kind {
            "message" => {
                let m = message(item, at)?;
                self.push(m);
            }
            "function_call" | "custom_tool_call" => {
                let call_id = required(item, "call_id", at)?;
                let name = required(item, "name", at)?;
                let chat_name = flat_name(str_of(item, "namespace"), name);
                let arguments = if kind == "custom_tool_call" {
                    let input = str_of(item, "input")
                        .ok_or_else(|| err(format!("{at}.input"), "must be a string"))?;
                    json!({"input": input}).to_string()
                } else {
                    match item.get("arguments") {
                        None | Some(Value::Null) => "{}".to_owned(),
                        Some(Value::String(s)) => s.clone(),
                        // Lenient: an object where the API wants its JSON text.
                        Some(v @ Value::Object(_)) => v.to_string(),
                        Some(_) => {
                            return Err(err(format!("{at}.arguments"), "must be a JSON string"));
                        }
                    }
                };
                self.tool_call(json!({
                    "id": call_id,
                    "type": "function",
                    "function": {"name": chat_name, "arguments": arguments},
                }));
            }
            "function_call_output" | "custom_tool_call_output" => {
                let call_id = required(item, "call_id", at)?;
                let content = self.tool_output(item.get("output"), &format!("{at}.output"))?;
                self.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
            }
            // Encrypted for the provider that made it; a chat server could
            // not read it.
            "reasoning" => dropped(at),
            "item_reference" => {
                return Err(err(
                    format!("{at}.type"),
                    "item_reference points at an item stored by the provider; tokenyard keeps \
                     none: send the item itself",
                ));
            }
            other => {
                return Err(err(
                    format!("{at}.type"),
                    format!("item type {other:?} cannot be sent to a Chat Completions provider"),
                ));
            }
        }
        Ok(())
    }

    /// A tool's output as the tool message's text; images wait in
    /// `self.images`.
    fn tool_output(&mut self, output: Option<&Value>, at: &str) -> Result<String, TranslateError> {
        match output {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Array(parts)) => {
                let mut texts = Vec::new();
                for (k, p) in parts.iter().enumerate() {
                    let at = format!("{at}[{k}]");
                    match str_of(p, "type") {
                        Some("input_text" | "output_text" | "text") => {
                            texts.push(required(p, "text", &at)?.to_owned());
                        }
                        Some("input_image") => {
                            self.images.push(image_part(p, &at)?);
                            texts.push("(an image; it follows this message)".to_owned());
                        }
                        other => {
                            return Err(err(
                                format!("{at}.type"),
                                format!("{other:?} cannot be carried in a chat tool message"),
                            ));
                        }
                    }
                }
                Ok(texts.join("\n"))
            }
            // Some clients send a structured output object: its JSON text.
            Some(v) => Ok(v.to_string()),
        }
    }
}

fn required<'a>(v: &'a Value, key: &str, at: &str) -> Result<&'a str, TranslateError> {
    str_of(v, key).ok_or_else(|| err(format!("{at}.{key}"), "must be a string"))
}

/// A `message` item → a chat message.
fn message(item: &Value, at: &str) -> Result<Value, TranslateError> {
    let role = required(item, "role", at)?;
    let chat_role = match role {
        "user" => "user",
        "assistant" => "assistant",
        // Most chat servers know no `developer` role; `system` is read the
        // same way by the ones that do.
        "system" | "developer" => "system",
        other => {
            return Err(err(
                format!("{at}.role"),
                format!("{other:?} is not one of user, assistant, system, developer"),
            ));
        }
    };
    let parts: Vec<Value> = match item.get("content") {
        Some(Value::String(s)) => return Ok(json!({"role": chat_role, "content": s})),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .map(|(k, p)| content_part(p, &format!("{at}.content[{k}]")))
            .collect::<Result<_, _>>()?,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            return Err(err(
                format!("{at}.content"),
                "must be a string or an array of content parts",
            ));
        }
    };
    if chat_role == "assistant" {
        // Chat's assistant content is its text; a refusal has its own field.
        let mut text = String::new();
        let mut refusal = None;
        for (k, p) in parts.iter().enumerate() {
            match p["type"].as_str() {
                Some("text") => text.push_str(p["text"].as_str().unwrap_or_default()),
                Some("refusal") => refusal = p["refusal"].as_str().map(str::to_owned),
                _ => {
                    return Err(err(
                        format!("{at}.content[{k}].type"),
                        "an assistant message carries only text and refusals",
                    ));
                }
            }
        }
        let mut m = json!({"role": "assistant", "content": text});
        if let Some(r) = refusal {
            m["refusal"] = r.into();
        }
        return Ok(m);
    }
    if let Some((k, _)) = parts
        .iter()
        .enumerate()
        .find(|(_, p)| p["type"] == "refusal")
    {
        return Err(err(
            format!("{at}.content[{k}].type"),
            "only an assistant message can carry a refusal",
        ));
    }
    if chat_role == "system"
        && let Some((k, _)) = parts.iter().enumerate().find(|(_, p)| p["type"] != "text")
    {
        return Err(err(
            format!("{at}.content[{k}].type"),
            "a system or developer message carries only text in Chat Completions",
        ));
    }
    let content = match parts.as_slice() {
        [one] if one["type"] == "text" => one["text"].clone(),
        _ => Value::Array(parts),
    };
    Ok(json!({"role": chat_role, "content": content}))
}

/// A content part of a message → a chat content part (a refusal is kept as
/// `{"type":"refusal"}` for [`message`] to place).
fn content_part(p: &Value, at: &str) -> Result<Value, TranslateError> {
    match str_of(p, "type") {
        Some("input_text" | "output_text" | "text") => {
            Ok(json!({"type": "text", "text": required(p, "text", at)?}))
        }
        Some("refusal") => Ok(json!({"type": "refusal", "refusal": required(p, "refusal", at)?})),
        Some("input_image") => image_part(p, at),
        Some("input_file") => {
            if p.get("file_url").is_some_and(|u| !u.is_null()) {
                return Err(err(
                    format!("{at}.file_url"),
                    "Chat Completions takes a file as file_data or file_id, not by URL",
                ));
            }
            let mut file = Map::new();
            for key in ["file_data", "file_id", "filename"] {
                if let Some(v) = str_of(p, key) {
                    file.insert(key.into(), v.into());
                }
            }
            if !file.contains_key("file_data") && !file.contains_key("file_id") {
                return Err(err(at, "an input_file needs file_data or file_id"));
            }
            Ok(json!({"type": "file", "file": file}))
        }
        Some(other) => Err(err(
            format!("{at}.type"),
            format!("content type {other:?} has no Chat Completions equivalent"),
        )),
        None => Err(err(format!("{at}.type"), "must be a string")),
    }
}

fn image_part(p: &Value, at: &str) -> Result<Value, TranslateError> {
    let Some(url) = str_of(p, "image_url") else {
        if p.get("file_id").is_some_and(|f| !f.is_null()) {
            return Err(err(
                format!("{at}.file_id"),
                "an uploaded file id cannot be shown to a Chat Completions model; send the \
                 image as image_url (an https or data: URL)",
            ));
        }
        return Err(err(format!("{at}.image_url"), "must be a string"));
    };
    let mut image = Map::new();
    image.insert("url".into(), url.into());
    if let Some(d) = str_of(p, "detail") {
        image.insert("detail".into(), d.into());
    }
    Ok(json!({"type": "image_url", "image_url": image}))
}
