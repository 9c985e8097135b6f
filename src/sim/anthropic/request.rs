//! A Messages (or count_tokens) request body as the real API checks it,
//! and what the simulated model makes of it. Pure functions, no I/O.

use serde_json::{Value, json};

use super::wire::{Content, Stop};
use crate::sim::wire::{CALL_TOOL_MARKER, TOOL_ARGS_PIECES};

/// Which endpoint a body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Messages,
    /// `count_tokens` takes a Messages body without the generation
    /// settings: no `max_tokens`, `stream`, sampling or stop sequences.
    CountTokens,
}

/// Top-level body fields the real API knows; any other is refused with
/// "Extra inputs are not permitted", which catches OpenAI-only fields
/// (`n`, `stream_options`, ...) a translating gateway forgot to drop.
const FIELDS: [&str; 19] = [
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "output_config",
    "output_format",
];

/// The fields `count_tokens` knows; the real API refuses the rest of a
/// Messages body (`max_tokens: Extra inputs are not permitted`).
const COUNT_TOKENS_FIELDS: [&str; 10] = [
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "mcp_servers",
    "context_management",
    "output_config",
    "output_format",
];

/// Which input a simulated tool call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToolInput {
    /// `{"city": "Paris"}`, the answer to a question about the weather.
    City,
    /// `{"piece":"[0]","n":1}`, what the `sim:call-tool` marker asks for:
    /// the chat endpoint's arguments, so both APIs call alike.
    Piece,
}

/// The `partial_json` pieces of a streamed weather call.
const CITY_PIECES: [&str; 4] = ["", "{\"city\": ", "\"Par", "is\"}"];

impl ToolInput {
    pub fn value(self) -> Value {
        match self {
            ToolInput::City => json!({"city": "Paris"}),
            ToolInput::Piece => json!({"piece": "[0]", "n": 1}),
        }
    }

    /// How many `input_json_delta`s a stream sends; together they are
    /// `value()`.
    pub fn piece_count(self) -> usize {
        match self {
            ToolInput::City => CITY_PIECES.len(),
            ToolInput::Piece => 1 + TOOL_ARGS_PIECES.len(),
        }
    }

    /// Delta `k`. The first is empty, as Anthropic's is.
    pub fn piece(self, k: usize) -> &'static str {
        match self {
            ToolInput::City => CITY_PIECES[k],
            ToolInput::Piece if k == 0 => "",
            ToolInput::Piece => TOOL_ARGS_PIECES[k - 1],
        }
    }
}

/// What a Messages request asked for.
#[derive(Debug, Clone)]
pub(super) struct Params {
    pub model: String,
    pub stream: bool,
    max_tokens: usize,
    stop_sequences: Vec<String>,
    /// The tool to call instead of answering in text, if any.
    tool: Option<(String, ToolInput)>,
    pub input_tokens: u64,
}

fn required(field: &str) -> String {
    format!("{field}: Field required")
}

/// Parses and checks a body as the real API would, with its pydantic-style
/// messages (`max_tokens: Field required`).
pub(super) fn parse(body: &[u8], kind: Kind) -> Result<Params, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("There was an error parsing the body of your request: {e}"))?;
    let Some(obj) = value.as_object() else {
        return Err("Input should be a valid dictionary".to_owned());
    };
    let known: &[&str] = match kind {
        Kind::Messages => &FIELDS,
        Kind::CountTokens => &COUNT_TOKENS_FIELDS,
    };
    if let Some(extra) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("{extra}: Extra inputs are not permitted"));
    }
    let field = |name: &str| obj.get(name).filter(|v| !v.is_null());
    let model = match field("model") {
        None => return Err(required("model")),
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err("model: Input should be a valid string".to_owned()),
    };
    let max_tokens = match field("max_tokens") {
        // Nothing is generated; the field is refused above anyway.
        None if kind == Kind::CountTokens => usize::MAX,
        None => return Err(required("max_tokens")),
        Some(v) => match v.as_u64() {
            Some(0) => {
                return Err("max_tokens: Input should be greater than or equal to 1".to_owned());
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => return Err("max_tokens: Input should be a valid integer".to_owned()),
        },
    };
    let messages = match field("messages") {
        None => return Err(required("messages")),
        Some(Value::Array(m)) => m,
        Some(_) => return Err("messages: Input should be a valid list".to_owned()),
    };
    if messages.is_empty() {
        return Err("messages: at least one message is required".to_owned());
    }
    for (i, m) in messages.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            // Newer models take a system message right after a user turn
            // (Claude Code sends one); anywhere else it is what an OpenAI
            // body forgot to move to `system`.
            Some("system")
                if i > 0 && messages[i - 1].get("role").and_then(Value::as_str) == Some("user") => {
            }
            Some("system") => {
                return Err(format!(
                    "messages.{i}.role: a system message must come right after a user message"
                ));
            }
            Some(_) => {
                return Err(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                ));
            }
            None => return Err(required(&format!("messages.{i}.role"))),
        }
        match m.get("content") {
            Some(Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(format!(
                    "messages.{i}.content: Input should be a valid list"
                ));
            }
            None => return Err(required(&format!("messages.{i}.content"))),
        }
    }
    let stream = match field("stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("stream: Input should be a valid boolean".to_owned()),
    };
    let system_chars = match field("system") {
        None => 0,
        Some(v @ (Value::String(_) | Value::Array(_))) => text_len(v),
        Some(_) => return Err("system: Input should be a valid string".to_owned()),
    };
    if let Some(t) = field("temperature") {
        match t.as_f64() {
            Some(t) if (0.0..=1.0).contains(&t) => {}
            Some(_) => {
                return Err("temperature: Input should be less than or equal to 1".to_owned());
            }
            None => return Err("temperature: Input should be a valid number".to_owned()),
        }
    }
    let stop_sequences = match field("stop_sequences") {
        None => Vec::new(),
        Some(Value::Array(seqs)) => seqs
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or("stop_sequences: Input should be a valid list of strings")?,
        Some(_) => return Err("stop_sequences: Input should be a valid list".to_owned()),
    };
    let tools = match field("tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => tools
            .iter()
            .enumerate()
            .map(|(i, t)| match t.get("name") {
                Some(Value::String(name)) => Ok(name.clone()),
                _ => Err(required(&format!("tools.{i}.name"))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err("tools: Input should be a valid list".to_owned()),
    };
    let tool = tool_to_call(&tools, field("tool_choice"), messages)?;
    let chars = system_chars
        + messages
            .iter()
            .map(|m| text_len(&m["content"]))
            .sum::<usize>();
    Ok(Params {
        model,
        stream,
        max_tokens,
        stop_sequences,
        tool,
        input_tokens: (chars as u64 / 4).max(1),
    })
}

/// Which tool, if any, the simulated model calls, and with what input:
/// the marker's `{"piece":"[0]","n":1}` when the last message is a user
/// message containing `sim:call-tool`, else the weather answer.
fn tool_to_call(
    tools: &[String],
    choice: Option<&Value>,
    messages: &[Value],
) -> Result<Option<(String, ToolInput)>, String> {
    let marked = messages.last().is_some_and(|m| {
        m.get("role").and_then(Value::as_str) == Some("user")
            && text_of(&m["content"]).contains(CALL_TOOL_MARKER)
    });
    let input = if marked {
        ToolInput::Piece
    } else {
        ToolInput::City
    };
    Ok(choose_tool(tools, choice, messages, marked)?.map(|name| (name, input)))
}

/// The tool `tool_choice` picks: forced (`any`, `tool`), never (`none`),
/// or under `auto` the first one when the user marked the request or asks
/// about the weather.
fn choose_tool(
    tools: &[String],
    choice: Option<&Value>,
    messages: &[Value],
    marked: bool,
) -> Result<Option<String>, String> {
    let kind = match choice {
        None => "auto",
        Some(c) => c
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| required("tool_choice.type"))?,
    };
    let first = tools.first().cloned();
    match kind {
        "none" => Ok(None),
        "any" => Ok(first),
        "tool" => {
            let name = choice
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| required("tool_choice.name"))?;
            if tools.iter().any(|t| t == name) {
                Ok(Some(name.to_owned()))
            } else {
                Err(format!("tool_choice: Tool '{name}' not found in tools"))
            }
        }
        "auto" if marked => Ok(first),
        "auto" => {
            let last_user = messages
                .iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"));
            let asks = last_user
                .map(|m| text_of(&m["content"]).to_lowercase().contains("weather"))
                .unwrap_or(false);
            Ok(if asks { first } else { None })
        }
        other => Err(format!(
            "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none', not '{other}'"
        )),
    }
}

/// The text of a content value: a string, or its `text` blocks joined
/// (tool results and images are not text the trigger should read).
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

fn text_len(content: &Value) -> usize {
    text_of(content).len()
}

impl Params {
    /// What the answer says and why it ends; `id` numbers a tool call.
    pub(super) fn plan(&self, chunks: usize, id: u64) -> (Content, Stop) {
        if let Some((name, input)) = &self.tool {
            let content = Content::ToolUse {
                id: format!("toolu_sim{id:020x}"),
                name: name.clone(),
                input: *input,
            };
            return (content, Stop::ToolUse);
        }
        let pieces = chunks.min(self.max_tokens);
        let stop = if self.max_tokens < chunks {
            Stop::MaxTokens
        } else {
            Stop::EndTurn
        };
        let hit = (0..pieces)
            .map(|k| format!("[{k}]"))
            .position(|piece| self.stop_sequences.contains(&piece));
        match hit {
            Some(k) => (
                Content::Text { pieces: k },
                Stop::Sequence(format!("[{k}]")),
            ),
            None => (Content::Text { pieces }, stop),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parsed(body: Value) -> Result<Params, String> {
        parse(body.to_string().as_bytes(), Kind::Messages)
    }

    #[test]
    fn max_tokens_and_stop_sequences_shape_the_text() {
        let body = |extra: Value| {
            let mut b = json!({"model": "m", "max_tokens": 100,
                "messages": [{"role": "user", "content": "hi"}]});
            b.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            parsed(b).unwrap().plan(8, 1)
        };
        assert_eq!(
            body(json!({})),
            (Content::Text { pieces: 8 }, Stop::EndTurn)
        );
        assert_eq!(
            body(json!({"max_tokens": 8})),
            (Content::Text { pieces: 8 }, Stop::EndTurn)
        );
        assert_eq!(
            body(json!({"max_tokens": 3})),
            (Content::Text { pieces: 3 }, Stop::MaxTokens)
        );
        assert_eq!(
            body(json!({"stop_sequences": ["[5]", "[2]"]})),
            (Content::Text { pieces: 2 }, Stop::Sequence("[2]".into()))
        );
        // Only whole pieces count; a sequence past a max_tokens cut never hits.
        assert_eq!(
            body(json!({"stop_sequences": ["2]", "[6]"], "max_tokens": 4})),
            (Content::Text { pieces: 4 }, Stop::MaxTokens)
        );
    }

    #[test]
    fn weather_in_the_last_user_text_calls_the_first_tool() {
        let ask = |content: Value, choice: Option<Value>| {
            let mut b = json!({"model": "m", "max_tokens": 5,
                "tools": [{"name": "get_weather"}, {"name": "other"}],
                "messages": [{"role": "user", "content": content}]});
            if let Some(c) = choice {
                b["tool_choice"] = c;
            }
            parsed(b).unwrap().tool.map(|(name, _)| name)
        };
        let weather = Some("get_weather".to_owned());
        assert_eq!(ask(json!("WEATHER?"), None), weather);
        assert_eq!(
            ask(json!([{"type": "text", "text": "the weather"}]), None),
            weather
        );
        assert_eq!(ask(json!("hello"), None), None);
        let result =
            json!([{"type": "tool_result", "tool_use_id": "t", "content": "weather: sun"}]);
        assert_eq!(ask(result, None), None, "a tool result is not a question");
        assert_eq!(ask(json!("hello"), Some(json!({"type": "any"}))), weather);
        assert_eq!(ask(json!("weather"), Some(json!({"type": "none"}))), None);
        let named = ask(json!("x"), Some(json!({"type": "tool", "name": "other"})));
        assert_eq!(named.as_deref(), Some("other"));
        let without_tools = json!({"model": "m", "max_tokens": 5,
            "messages": [{"role": "user", "content": "weather"}]});
        assert_eq!(parsed(without_tools).unwrap().tool, None);
    }
}
