//! OpenAI's Responses API, `POST /v1/responses`, behind the same gate as
//! chat completions (bearer auth, limiter, 429s, faults), so a gateway's
//! passthrough of it can be tested.
//!
//! What the sim answers: one `message` item whose `output_text` is the
//! chat endpoint's numbered pieces `[0][1]...`; `max_output_tokens` sets
//! the count the way `max_tokens` does on chat (status `incomplete`,
//! `incomplete_details.reason = "max_output_tokens"`), else
//! `SimConfig::chunks`. Streamed, it is OpenAI's semantic events, each
//! with its `sequence_number`, ending in `response.completed` (or
//! `response.incomplete`) and no `[DONE]`.
//!
//! What it leaves out: the sim keeps no responses, so any
//! `previous_response_id` is a 400 `previous_response_not_found`; tools
//! are echoed but never called; `max_output_tokens` below the real API's
//! minimum of 16 is accepted so tests can ask for short texts.

mod wire;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Endpoint;
use super::chat::{MAX_PIECES, content_text};
use super::openai::{self, Answer, Ask, BadRequest};
use super::reply::bearer;
use super::state::Shared;
use wire::{Echo, Reply};

/// What a Responses request asked for.
#[derive(Debug, Clone)]
struct ResponsesParams {
    model: String,
    stream: bool,
    /// Capped at `MAX_PIECES`.
    max_output_tokens: Option<usize>,
    input_tokens: u64,
    echo: Echo,
}

impl Ask for ResponsesParams {
    fn model(&self) -> &str {
        &self.model
    }
    fn stream(&self) -> bool {
        self.stream
    }
}

pub(super) async fn responses(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (decision, request_id) = openai::decide(
        &sh,
        Endpoint::Responses,
        bearer(&headers),
        parse(&body),
        Instant::now(),
        |p, id| p.answer(sh.settings.chunks, id),
    );
    openai::respond(sh.clone(), decision, request_id).await
}

fn parse(body: &[u8]) -> Result<ResponsesParams, BadRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|_| BadRequest::not_json())?;
    let Some(obj) = value.as_object() else {
        return Err(BadRequest::new("The request body must be a JSON object."));
    };
    let field = |name: &str| obj.get(name).filter(|v| !v.is_null());
    let model = match field("model") {
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(BadRequest::invalid_type("model", "a string")),
        None => {
            let bad = BadRequest::new("Missing required parameter: 'model'.").param("model");
            return Err(bad.code("missing_required_parameter"));
        }
    };
    match field("previous_response_id") {
        None => {}
        Some(Value::String(id)) => {
            let message = format!("Previous response with id '{id}' not found.");
            let bad = BadRequest::new(message).param("previous_response_id");
            return Err(bad.code("previous_response_not_found"));
        }
        Some(_) => return Err(BadRequest::invalid_type("previous_response_id", "a string")),
    }
    let input_chars = match field("input") {
        None => 0,
        Some(Value::String(s)) => s.len(),
        Some(Value::Array(items)) => items.iter().map(item_chars).sum(),
        Some(_) => {
            let expected = "one of a string or array of input items";
            return Err(BadRequest::invalid_type("input", expected));
        }
    };
    let instructions_chars = match field("instructions") {
        None => 0,
        Some(Value::String(s)) => s.len(),
        Some(_) => return Err(BadRequest::invalid_type("instructions", "a string")),
    };
    let stream = match field("stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(BadRequest::invalid_type("stream", "a boolean")),
    };
    let max_output_tokens = match field("max_output_tokens") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some((n as usize).min(MAX_PIECES)),
            None => return Err(BadRequest::invalid_type("max_output_tokens", "an integer")),
        },
    };
    let echo = |name: &str, default: Value| field(name).cloned().unwrap_or(default);
    let echo = Echo {
        instructions: echo("instructions", Value::Null),
        max_output_tokens: echo("max_output_tokens", Value::Null),
        parallel_tool_calls: echo("parallel_tool_calls", json!(true)),
        reasoning: echo("reasoning", json!({"effort": null, "summary": null})),
        store: echo("store", json!(true)),
        temperature: echo("temperature", json!(1.0)),
        text: echo("text", json!({"format": {"type": "text"}})),
        tool_choice: echo("tool_choice", json!("auto")),
        tools: echo("tools", json!([])),
        top_p: echo("top_p", json!(1.0)),
        truncation: echo("truncation", json!("disabled")),
        user: echo("user", Value::Null),
        metadata: echo("metadata", json!({})),
    };
    Ok(ResponsesParams {
        model,
        stream,
        max_output_tokens,
        input_tokens: ((input_chars + instructions_chars) as u64 / 4).max(1),
        echo,
    })
}

/// Characters of an input item: a message's text (plain or as parts), or
/// a tool output.
fn item_chars(item: &Value) -> usize {
    let output = item.get("output").and_then(Value::as_str).unwrap_or("");
    content_text(item.get("content")).len() + output.len()
}

impl ResponsesParams {
    fn answer(&self, chunks: usize, id: u64) -> Answer {
        let (pieces, incomplete) = super::wire::pieces_under(self.max_output_tokens, chunks);
        let reply = Reply {
            id: format!("resp_sim{id:024x}"),
            item_id: format!("msg_sim{id:024x}"),
            created_at: super::wire::unix_now(),
            model: self.model.clone(),
            pieces,
            incomplete,
            input_tokens: self.input_tokens,
            echo: self.echo.clone(),
        };
        if self.stream {
            Answer::Stream(Box::new(reply))
        } else {
            Answer::Whole(reply.body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: Value) -> Result<ResponsesParams, BadRequest> {
        parse(body.to_string().as_bytes())
    }

    #[test]
    fn bodies_are_checked_in_openai_terms() {
        let missing = parsed(json!({"input": "hi"})).unwrap_err();
        assert_eq!(
            (missing.param, missing.code),
            (Some("model"), Some("missing_required_parameter"))
        );
        let chained =
            parsed(json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}));
        let chained = chained.unwrap_err();
        assert_eq!(chained.code, Some("previous_response_not_found"));
        assert_eq!(
            chained.message,
            "Previous response with id 'resp_1' not found."
        );
        let fresh = json!({"model": "m", "input": "hi", "previous_response_id": null});
        assert!(parsed(fresh).is_ok(), "a null id starts a new chain");
        assert_eq!(
            parsed(json!({"model": "m", "input": 7})).unwrap_err().param,
            Some("input")
        );
    }

    #[test]
    fn input_items_and_instructions_count_as_input() {
        let p = parsed(json!({"model": "m", "instructions": "12345678",
            "input": [{"role": "user", "content": "abcd"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "efgh"}]},
                {"type": "function_call_output", "call_id": "c", "output": "ijkl"}],
            "temperature": 0.2, "store": false}))
        .unwrap();
        assert_eq!(p.input_tokens, 5);
        assert_eq!(p.echo.temperature, json!(0.2));
        assert_eq!(p.echo.store, json!(false));
        assert_eq!(p.echo.instructions, json!("12345678"));
        assert_eq!(p.echo.tool_choice, json!("auto"));
    }
}
