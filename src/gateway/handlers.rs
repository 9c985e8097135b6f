//! The `/v1` handlers: each client API read, routed and dispatched in its
//! own format, and the model list in OpenAI's or Anthropic's shape.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;

use super::error::{ApiError, Format};
use super::inbound::{Api, inbound};
use super::{AppState, dispatch};
use crate::config::Config;

/// Reads, routes and dispatches one request of `api`; every error is in
/// the client's format.
pub(super) async fn serve_api(
    state: &AppState,
    headers: HeaderMap,
    body: Body,
    api: Api,
) -> Response {
    match inbound(state, headers, body, api).await {
        Ok(req) => dispatch::dispatch(state, req).await,
        Err(e) => e.into_response_as(api.format),
    }
}

/// `POST /v1/chat/completions`: OpenAI's Chat Completions.
pub(super) async fn chat(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve_api(&state, headers, body, Api::CHAT).await
}

/// `POST /v1/responses`: OpenAI's Responses API (Codex CLI, the Agents
/// SDK), translated to the provider's format or forwarded as is.
pub(super) async fn responses(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve_api(&state, headers, body, Api::RESPONSES).await
}

/// `POST /v1/embeddings`: OpenAI's embeddings, on OpenAI-kind providers.
pub(super) async fn embeddings(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve_api(&state, headers, body, Api::EMBEDDINGS).await
}

/// `POST /v1/messages`: Anthropic's Messages API.
pub(super) async fn messages(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve_api(&state, headers, body, Api::MESSAGES).await
}

/// `POST /v1/messages/count_tokens`: Anthropic's token counting, on
/// Anthropic providers.
pub(super) async fn count_tokens(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    serve_api(&state, headers, body, Api::COUNT_TOKENS).await
}

/// Whether the client of `headers` is an Anthropic one (its SDKs always
/// send `anthropic-version`), which reads the model list in Anthropic's
/// shape.
fn anthropic_client(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

/// The models the gateway lists: every literal model name (globs serve
/// models but name none), first provider first, each once.
fn listed_models(config: &Config) -> Vec<(&str, &str)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for p in &config.providers {
        for m in &p.models {
            if m.contains(['*', '?']) || !seen.insert(m.as_str()) {
                continue;
            }
            out.push((m.as_str(), p.name.as_str()));
        }
    }
    out
}

fn model_entry(id: &str, owner: &str, anthropic: bool) -> serde_json::Value {
    if anthropic {
        serde_json::json!({
            "type": "model",
            "id": id,
            "display_name": id,
            "created_at": "1970-01-01T00:00:00Z",
        })
    } else {
        serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
    }
}

/// `GET /v1/models`, in OpenAI's shape or, for an Anthropic client,
/// Anthropic's (one page, `has_more: false`).
pub(super) async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let config = state.config();
    let anthropic = anthropic_client(&headers);
    let listed = listed_models(&config);
    let data: Vec<_> = listed
        .iter()
        .map(|(id, owner)| model_entry(id, owner, anthropic))
        .collect();
    let body = if anthropic {
        serde_json::json!({
            "data": data,
            "has_more": false,
            "first_id": listed.first().map(|m| m.0),
            "last_id": listed.last().map(|m| m.0),
        })
    } else {
        serde_json::json!({ "object": "list", "data": data })
    };
    axum::Json(body).into_response()
}

/// `GET /v1/models/{model}`: any model the gateway routes (a glob's too),
/// in the client's shape; 404 in its error shape otherwise.
pub(super) async fn model(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let config = state.config();
    let anthropic = anthropic_client(&headers);
    match config.route(&id) {
        Some(p) => {
            axum::Json(model_entry(&id, &config.providers[p].name, anthropic)).into_response()
        }
        None => {
            let shown: String = id.chars().take(100).collect();
            let format = if anthropic {
                Format::Anthropic
            } else {
                Format::OpenAi
            };
            ApiError::not_found(format!("the model `{shown}` is not served by this gateway"))
                .code("model_not_found")
                .into_response_as(format)
        }
    }
}
