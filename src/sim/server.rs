//! The sim's HTTP surface: the routes, the model lists, the OAuth token
//! endpoint and a stats page. The endpoints themselves live in
//! [`super::chat`], [`super::embeddings`], [`super::responses`] (on the
//! gate in [`super::openai`]) and [`super::anthropic`]; what they all share
//! is in [`super::reply`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::reply::{aborted, bearer, json_response};
use super::state::{Caller, Shared};
use super::wire;
use super::{KeyFault, TokenCall, TokenFailure, TokenOutcome};
use super::{anthropic, chat, embeddings, responses};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::chat))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/responses", post(responses::responses))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/models", get(models))
        .route("/v1beta/models", get(gemini_models))
        .route("/oauth/token", post(token))
        .route("/sim/stats", get(stats))
        .fallback(not_found)
        .with_state(shared)
}

async fn models(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if anthropic::is_anthropic(&headers) {
        return anthropic::models(&sh, &headers);
    }
    let token = bearer(&headers);
    let fault = {
        let mut inner = sh.lock();
        let idx = match inner.caller(token, Instant::now()) {
            Caller::Account(i) => i,
            _ => {
                drop(inner);
                return json_response(401, wire::invalid_api_key(token.unwrap_or("")));
            }
        };
        let account = &mut inner.accounts[idx];
        account.stats.models_calls += 1;
        account.fault
    };
    if let Some(KeyFault::Status(status)) = fault {
        return json_response(status, wire::status_body(status, token.unwrap_or("")));
    }
    let body = wire::models_list(&sh.settings.models, 1_700_000_000);
    json_response(200, body.to_string())
}

/// Gemini's REST model list (`GET /v1beta/models` with `x-goog-api-key`):
/// what the gateway probes a Gemini credential with, since the gRPC
/// service has no cheap call.
async fn gemini_models(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let key = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok());
    let fault = {
        let mut inner = sh.lock();
        let idx = match inner.caller(key, Instant::now()) {
            Caller::Account(i) => i,
            _ => {
                drop(inner);
                let body = serde_json::json!({"error": {
                    "code": 400,
                    "message": "API key not valid. Please pass a valid API key.",
                    "status": "INVALID_ARGUMENT",
                }});
                return json_response(400, body.to_string());
            }
        };
        let account = &mut inner.accounts[idx];
        account.stats.models_calls += 1;
        account.fault
    };
    if let Some(KeyFault::Status(status)) = fault {
        let body = serde_json::json!({"error": {"code": status, "message": "simulated fault"}});
        return json_response(status, body.to_string());
    }
    let models: Vec<_> = sh
        .settings
        .models
        .iter()
        .map(|m| serde_json::json!({"name": format!("models/{m}")}))
        .collect();
    json_response(200, serde_json::json!({ "models": models }).to_string())
}

async fn token(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let delay = {
        let mut inner = sh.lock();
        inner.token_calls += 1;
        inner.token_delay
    };
    if !sh.sleep(delay).await {
        return aborted();
    }
    // Client credentials (form or Basic auth) are accepted and ignored.
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let now = Instant::now();
    let mut inner = sh.lock();
    let mut call = TokenCall {
        at: now,
        label: None,
        outcome: TokenOutcome::InvalidRequest,
        rotated: false,
    };
    let grant = form.get("grant_type").map(String::as_str);
    let presented = form.get("refresh_token");
    let resp = match (grant, presented) {
        (Some(g), _) if g != "refresh_token" => {
            call.outcome = TokenOutcome::UnsupportedGrantType;
            oauth_error(
                400,
                "unsupported_grant_type",
                "only refresh_token is supported",
            )
        }
        (Some(_), Some(rt)) => match inner.refresh_owner(rt) {
            None => {
                call.outcome = TokenOutcome::InvalidGrant;
                oauth_error(
                    400,
                    "invalid_grant",
                    "The refresh token is invalid or has been revoked.",
                )
            }
            Some(idx) => {
                call.label = Some(inner.accounts[idx].label.clone());
                match inner.accounts[idx].token_failure {
                    Some(TokenFailure::ServerError) => {
                        call.outcome = TokenOutcome::ServerError;
                        json_response(503, json!({"error": "server_error"}).to_string())
                    }
                    Some(TokenFailure::InvalidGrant) => {
                        call.outcome = TokenOutcome::InvalidGrant;
                        oauth_error(400, "invalid_grant", "The refresh token has been revoked.")
                    }
                    None => {
                        let ttl = sh.settings.access_token_ttl;
                        let access = format!("at-{}", random_token());
                        inner.mint_access_token(idx, access.clone(), now + ttl);
                        let mut body = json!({
                            "access_token": access,
                            "token_type": "Bearer",
                            "expires_in": ttl.as_nanos().div_ceil(1_000_000_000) as u64,
                        });
                        if sh.settings.rotate_refresh_tokens {
                            let fresh = format!("rt-{}", random_token());
                            inner.accounts[idx].refresh_token = Some(fresh.clone());
                            body["refresh_token"] = Value::String(fresh);
                            call.rotated = true;
                        }
                        call.outcome = TokenOutcome::Issued;
                        let mut resp = json_response(200, body.to_string());
                        wire::insert(resp.headers_mut(), "cache-control", "no-store");
                        resp
                    }
                }
            }
        },
        _ => oauth_error(
            400,
            "invalid_request",
            "grant_type=refresh_token and refresh_token are required",
        ),
    };
    inner.token_log.push(call);
    resp
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    json_response(status, body.to_string())
}

fn random_token() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

async fn stats(State(sh): State<Arc<Shared>>) -> Response {
    let stats = sh.lock().stats();
    axum::Json(stats).into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let message = format!("Invalid URL ({method} {})", uri.path());
    json_response(404, wire::invalid_request(&message, None))
}
