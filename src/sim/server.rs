//! The sim's HTTP surface: the routes, the model lists, the OAuth token
//! endpoint, a stats page, and what every endpoint shares: bearer parsing,
//! JSON answers, and SSE bodies that faults cut. The endpoints themselves
//! live in [`super::chat`], [`super::embeddings`], [`super::responses`]
//! (on the gate in [`super::openai`]) and [`super::anthropic`].

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::state::{Caller, Drawn, Inner, Shared};
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

/// The bearer token, if the request carries one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Where a fault cuts an admitted answer: after this many stream events
/// (SSE data events, or gRPC messages for Gemini).
#[derive(Debug, Clone, Copy)]
pub(super) enum Cut {
    Reset(usize),
    Stall(usize),
}

impl Cut {
    /// Where this answer of `events` stream events is cut, if at all: the
    /// account's own fault first, else a fault drawn at random. Every
    /// endpoint (OpenAI, Anthropic, Gemini) cuts the same way.
    pub(super) fn choose(
        inner: &mut Inner,
        idx: usize,
        drawn: Option<Drawn>,
        events: usize,
    ) -> Option<Cut> {
        match (inner.accounts[idx].fault, drawn) {
            (Some(KeyFault::ResetAfterChunks(n)), _) => Some(Cut::Reset(n.min(events))),
            (Some(KeyFault::StallAfterChunks(n)), _) => Some(Cut::Stall(n.min(events))),
            (_, Some(Drawn::Reset)) => Some(Cut::Reset(inner.draw_cut(events))),
            (_, Some(Drawn::Stall)) => Some(Cut::Stall(inner.draw_cut(events))),
            _ => None,
        }
    }

    pub(super) fn as_fault(self) -> KeyFault {
        match self {
            Cut::Reset(n) => KeyFault::ResetAfterChunks(n),
            Cut::Stall(n) => KeyFault::StallAfterChunks(n),
        }
    }
}

pub(super) fn json_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, body).into_response();
    wire::insert(resp.headers_mut(), "content-type", "application/json");
    resp
}

/// Pause before a reset. hyper flushes its write buffer when the body is
/// pending, but not when the body fails; without a pending poll first, the
/// events before the cut would be lost with the connection.
const FLUSH_GRACE: Duration = Duration::from_millis(5);

fn reset_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "sim: connection reset")
}

/// A body that fails at once, which makes hyper drop the connection after
/// the head without a clean end.
pub(super) fn abort_body(sh: Arc<Shared>) -> Body {
    Body::from_stream(stream::once(async move {
        sh.sleep(FLUSH_GRACE).await;
        Err::<Bytes, _>(reset_error())
    }))
}

/// The answer for a request still pending at shutdown.
pub(super) fn aborted() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "sim shutting down").into_response()
}

/// An answer sent as a fixed sequence of SSE frames.
pub(super) trait SseEvents: Send + 'static {
    fn event_count(&self) -> usize;
    /// Whether event `i` is generated content, paced by `chunk_interval`.
    fn is_content(&self, i: usize) -> bool;
    /// Event `i`, framed and ready to send.
    fn event(&self, i: usize) -> Bytes;
}

/// State of one SSE body: which event comes next and where it is cut.
struct Sse<E> {
    completion: E,
    next: usize,
    interval: Duration,
    cut: Option<Cut>,
    sh: Arc<Shared>,
}

/// The SSE body: one frame per event, never batched.
pub(super) fn sse_body<E: SseEvents>(
    completion: E,
    interval: Duration,
    cut: Option<Cut>,
    sh: Arc<Shared>,
) -> Body {
    let state = Sse {
        completion,
        next: 0,
        interval,
        cut,
        sh,
    };
    Body::from_stream(stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        match st.cut {
            Some(Cut::Reset(at)) if at == st.next => {
                st.sh.sleep(FLUSH_GRACE).await;
                return Some((Err(reset_error()), None));
            }
            Some(Cut::Stall(at)) if at == st.next => {
                // Silent until the client gives up or the sim shuts down.
                st.sh.cancel.cancelled().await;
                return Some((Err(reset_error()), None));
            }
            _ => {}
        }
        if st.next >= st.completion.event_count() {
            return None;
        }
        if st.completion.is_content(st.next) && !st.sh.sleep(st.interval).await {
            return Some((Err(reset_error()), None));
        }
        let event = st.completion.event(st.next);
        st.next += 1;
        Some((Ok::<_, io::Error>(event), Some(st)))
    }))
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

/// An admitted request's answer, planned under the lock.
pub(super) enum Answer {
    /// A whole JSON body.
    Whole(String),
    /// SSE events, paced and cut like every stream.
    Stream(Box<dyn SseEvents>),
}

impl SseEvents for Box<dyn SseEvents> {
    fn event_count(&self) -> usize {
        (**self).event_count()
    }
    fn is_content(&self, i: usize) -> bool {
        (**self).is_content(i)
    }
    fn event(&self, i: usize) -> Bytes {
        (**self).event(i)
    }
}

/// What the limiter and fault dice decided for one HTTP request.
pub(super) enum Decision {
    /// Answer now (refusals come back without `latency`, as a limiter's do).
    Refuse(Response),
    /// Answer with this status and body after `latency`.
    Fail(u16, String),
    Serve {
        answer: Answer,
        /// `None` for accounts that do not advertise their limits.
        rate: Option<wire::RateInfo>,
        cut: Option<Cut>,
    },
}

/// Sends what was decided, after the sim's latency unless it is a refusal:
/// a paced stream, or a whole body, cut where planned. `rate_headers`
/// writes a served answer's limits in the provider's own headers.
pub(super) async fn deliver(
    sh: &Arc<Shared>,
    decision: Decision,
    rate_headers: impl FnOnce(&mut HeaderMap, wire::RateInfo),
) -> Response {
    let latency = sh.settings.latency;
    let (answer, rate, cut) = match decision {
        Decision::Refuse(resp) => return resp,
        Decision::Fail(status, body) => {
            if !sh.sleep(latency).await {
                return aborted();
            }
            return json_response(status, body);
        }
        Decision::Serve { answer, rate, cut } => (answer, rate, cut),
    };
    if !sh.sleep(latency).await {
        return aborted();
    }
    let mut resp = match (answer, cut) {
        (Answer::Stream(events), cut) => {
            let interval = sh.settings.chunk_interval;
            let mut resp = Response::new(sse_body(events, interval, cut, sh.clone()));
            let h = resp.headers_mut();
            wire::insert(h, "content-type", "text/event-stream");
            wire::insert(h, "cache-control", "no-cache");
            resp
        }
        (Answer::Whole(body), None) => json_response(200, body),
        (Answer::Whole(_), Some(Cut::Reset(_))) => {
            let mut resp = Response::new(abort_body(sh.clone()));
            wire::insert(resp.headers_mut(), "content-type", "application/json");
            resp
        }
        (Answer::Whole(_), Some(Cut::Stall(_))) => {
            sh.cancel.cancelled().await;
            return aborted();
        }
    };
    if let Some(rate) = rate {
        rate_headers(resp.headers_mut(), rate);
    }
    resp
}
