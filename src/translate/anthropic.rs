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

use super::TranslateError;

mod error;
mod request_to_anthropic;
mod request_to_openai;
mod response;
mod stream_to_anthropic;
mod stream_to_openai;
mod tools;
mod usage;

#[cfg(test)]
mod tests;

pub use error::{error_message, error_parts};
pub use request_to_anthropic::request_to_anthropic;
pub use request_to_openai::request_to_openai;
pub use response::{response_to_anthropic, response_to_openai, response_to_openai_at};
pub use stream_to_anthropic::StreamToAnthropic;
pub use stream_to_openai::StreamToOpenAi;

// ---------------------------------------------------------------------------
// Small helpers shared by the submodules
// ---------------------------------------------------------------------------

fn err(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::new(field, message)
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
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
