//! Error bodies of either side, and the mapping between the two error
//! vocabularies (also used for errors reported mid-stream).

use serde_json::Value;

use super::str_of;

/// The message of an error body of either side: OpenAI
/// `{"error":{"message"}}` or Anthropic `{"type":"error","error":{"message"}}`
/// (also `{"error":"text"}`, which some OpenAI-compatible servers send).
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    message_of(v.get("error")?)
}

pub(super) fn message_of(error: &Value) -> Option<String> {
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
pub(super) fn openai_error(anthropic_type: &str) -> (&'static str, Option<&'static str>) {
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
pub(super) fn anthropic_error_type(openai_type: &str, code: Option<&str>) -> &'static str {
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
