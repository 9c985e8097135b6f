//! OpenAI's Responses API ⇄ Chat Completions: the request, the whole
//! response and the stream events, on plain `serde_json::Value`s.
//!
//! A Responses client (Codex CLI, the Agents SDK, `client.responses.create`)
//! reaches a provider that serves only Chat Completions through this
//! translation; Anthropic and Gemini providers are reached through it too,
//! then through their own chat translations. Pure, like the rest of
//! `translate`: ids are derived from a seed the caller passes in, and times
//! are passed in as well.
//!
//! # What is carried, and what is lost
//! - `instructions` and `system`/`developer` messages become `system`
//!   messages, in place (most chat servers know no `developer` role).
//! - `input` as a string is one user message; as an item list, `message`
//!   items become messages (`input_text`/`output_text` → text,
//!   `input_image` → `image_url`, `input_file` → `file`, `refusal` →
//!   the assistant's `refusal`), `function_call` and `custom_tool_call`
//!   items join the assistant message before them as `tool_calls`, and
//!   their `*_output` items become `tool` messages. Images in a tool's
//!   output follow the tool messages as a user message (a chat tool message
//!   carries text only).
//! - `reasoning` items are dropped (their content is encrypted for the
//!   provider that made them); `item_reference`, hosted-tool calls
//!   (`web_search_call`, …) and any other item type are a
//!   [`TranslateError`] naming the item.
//! - Tools: `function` tools pass; tools inside a `namespace` are flattened
//!   to `{namespace}__{name}` and named back on the way out; `custom`
//!   (free-form) tools become functions with one string argument `input`,
//!   whose calls come back as `custom_tool_call` items. Built-in tools have
//!   no chat form — those the provider runs itself (`web_search`,
//!   `file_search`, `code_interpreter`, `image_generation`,
//!   `computer_use_preview`, `mcp`) and those only OpenAI's models call
//!   (`local_shell`, …): they are dropped from the offer (debug log), and a
//!   `tool_choice` that forces one is an error.
//! - `max_output_tokens` → `max_completion_tokens`; `text.format` →
//!   `response_format`; `text.verbosity` → `verbosity`; `reasoning.effort`
//!   → `reasoning_effort`; `temperature`, `top_p`, `user`,
//!   `parallel_tool_calls`, `prompt_cache_key`, `safety_identifier`,
//!   `service_tier` pass. `store`, `metadata`, `include`, `truncation`,
//!   `reasoning.summary`, `top_logprobs`, `max_tool_calls` and
//!   `client_metadata` are dropped. Streams ask for
//!   `stream_options.include_usage`, so `response.completed` carries usage.
//! - `previous_response_id`, `conversation`, `prompt` (a stored prompt)
//!   and `background: true` need state kept by the provider: an error.
//! - Back: the chat message becomes a `message` item (`output_text`, or
//!   `refusal`), tool calls become `function_call` / `custom_tool_call`
//!   items; `finish_reason: "length"` is status `incomplete` with reason
//!   `max_output_tokens`, `"content_filter"` the same with reason
//!   `content_filter`; usage is renamed (`prompt_tokens` → `input_tokens`,
//!   cached and reasoning token details kept).

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use tracing::debug;

use super::TranslateError;

mod request;
mod response;
mod stream;

#[cfg(test)]
mod tests;

pub use request::request_to_chat;
pub use response::response_from_chat;
pub use stream::StreamToResponses;

/// What the way back needs to know about the request: how the client named
/// its tools, and the settings a Response object echoes.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Chat function name → the client's tool, for names that differ
    /// (namespaced) or calls that come back as another item type (custom).
    tools: HashMap<String, ToolName>,
    /// The request's settings, echoed in every Response object as the API
    /// does (`instructions`, `tools`, `temperature`, …).
    echo: Map<String, Value>,
    /// Makes this response's ids (`resp_…`, `msg_…`, `fc_…`) unique.
    seed: String,
    /// The model the client asked for, until the provider names its own.
    model: String,
}

/// A client tool as the Responses API names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ToolName {
    namespace: Option<String>,
    name: String,
    /// Free-form (`custom`) tools are called with one string, `input`.
    custom: bool,
}

impl Context {
    /// Ids of this response are derived from `seed` (say, a random hex
    /// string the gateway draws per request).
    pub fn with_seed(mut self, seed: impl Into<String>) -> Self {
        self.seed = seed.into();
        self
    }

    fn response_id(&self) -> String {
        format!("resp_{}", self.seed)
    }

    fn item_id(&self, prefix: &str, n: usize) -> String {
        format!("{prefix}_{}{n:02}", self.seed)
    }

    /// A Response object around `output`, with the request's settings.
    fn response(&self, created_at: u64, model: &str, status: &str, output: Vec<Value>) -> Value {
        let mut r = Map::new();
        r.insert("id".into(), self.response_id().into());
        r.insert("object".into(), "response".into());
        r.insert("created_at".into(), created_at.into());
        r.insert("status".into(), status.into());
        r.insert("background".into(), false.into());
        r.insert("error".into(), Value::Null);
        r.insert("incomplete_details".into(), Value::Null);
        r.insert("model".into(), model.into());
        r.insert("output".into(), Value::Array(output));
        r.insert("previous_response_id".into(), Value::Null);
        for (k, v) in &self.echo {
            r.insert(k.clone(), v.clone());
        }
        r.insert("usage".into(), Value::Null);
        Value::Object(r)
    }

    /// The client's view of a chat tool call named `chat_name`.
    fn tool(&self, chat_name: &str) -> ToolName {
        self.tools.get(chat_name).cloned().unwrap_or(ToolName {
            namespace: None,
            name: chat_name.to_owned(),
            custom: false,
        })
    }

    /// The output item for a finished chat tool call.
    fn call_item(&self, n: usize, call_id: &str, chat_name: &str, arguments: &str) -> Value {
        let tool = self.tool(chat_name);
        let mut item = Map::new();
        if tool.custom {
            item.insert("type".into(), "custom_tool_call".into());
            item.insert("id".into(), self.item_id("ctc", n).into());
            item.insert("call_id".into(), call_id.into());
            item.insert("name".into(), tool.name.into());
            item.insert("input".into(), custom_input(arguments).into());
        } else {
            item.insert("type".into(), "function_call".into());
            item.insert("id".into(), self.item_id("fc", n).into());
            item.insert("call_id".into(), call_id.into());
            item.insert("name".into(), tool.name.into());
            item.insert("arguments".into(), arguments.into());
        }
        if let Some(ns) = tool.namespace {
            item.insert("namespace".into(), ns.into());
        }
        item.insert("status".into(), "completed".into());
        Value::Object(item)
    }
}

/// The separator between a namespace and a tool's name in the flattened
/// chat function name. Chat names allow `[a-zA-Z0-9_-]`, not dots.
const NAMESPACE_SEPARATOR: &str = "__";

/// A custom tool's `input` from the arguments its stand-in function was
/// called with: `{"input": "..."}`, or the raw text if the model did not
/// keep to that shape.
fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(o)) => match o.get("input") {
            Some(Value::String(s)) => s.clone(),
            _ => arguments.to_owned(),
        },
        _ => arguments.to_owned(),
    }
}

/// Chat `usage` → Responses `usage`.
fn usage_from_chat(u: &Value) -> Option<Value> {
    let u = u.as_object()?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let input = n("prompt_tokens").unwrap_or(0);
    let output = n("completion_tokens").unwrap_or(0);
    let cached = u
        .get("prompt_tokens_details")
        .and_then(|d| d.get("cached_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let reasoning = u
        .get("completion_tokens_details")
        .and_then(|d| d.get("reasoning_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some(json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": n("total_tokens").unwrap_or(input + output),
    }))
}

/// Chat `finish_reason` → the Response's status and its
/// `incomplete_details.reason`.
fn status_of(finish_reason: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish_reason {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

fn err(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::new(field, message)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn dropped(field: &str) {
    debug!(field, "dropped: no Chat Completions equivalent");
}
