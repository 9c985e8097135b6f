//! The sim's HTTP surface: chat completions (plain and SSE), the model
//! list, the OAuth token endpoint and a stats page. Anthropic's Messages
//! endpoint lives in [`super::anthropic`] and reuses the pieces marked
//! `pub(super)` here.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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

use super::anthropic;
use super::state::{Caller, Drawn, Inner, Refusal, Shared};
use super::wire::{self, Completion};
use super::{Endpoint, KeyFault, SimRequest, TokenCall, TokenFailure, TokenOutcome};

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/messages", post(anthropic::messages))
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

/// What a chat request asked for.
#[derive(Debug, Clone)]
struct ChatParams {
    model: String,
    stream: bool,
    /// `max_completion_tokens` or `max_tokens`, capped.
    max_tokens: Option<usize>,
    include_usage: bool,
    prompt_tokens: u64,
}

/// A body OpenAI would refuse with 400: message and offending parameter.
type BadRequest = (String, Option<&'static str>);

const MAX_PIECES: usize = 10_000;

fn parse_chat(body: &[u8]) -> Result<ChatParams, BadRequest> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        let message = "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)";
        (message.to_owned(), None)
    })?;
    let Some(obj) = value.as_object() else {
        return Err(("The request body must be a JSON object.".to_owned(), None));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) => m.clone(),
        _ => return Err(("you must provide a model parameter".to_owned(), None)),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid_type("stream", "a boolean")),
    };
    let mut max_tokens = None;
    for param in ["max_tokens", "max_completion_tokens"] {
        match obj.get(param) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) => max_tokens = Some((n as usize).min(MAX_PIECES)),
                None => return Err(invalid_type(param, "an integer")),
            },
        }
    }
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let chars: usize = obj
        .get("messages")
        .and_then(Value::as_array)
        .map(|msgs| msgs.iter().map(|m| content_len(m.get("content"))).sum())
        .unwrap_or(0);
    Ok(ChatParams {
        model,
        stream,
        max_tokens,
        include_usage,
        prompt_tokens: (chars as u64 / 4).max(1),
    })
}

fn invalid_type(param: &'static str, expected: &str) -> BadRequest {
    (
        format!("Invalid type for '{param}': expected {expected}."),
        Some(param),
    )
}

/// Characters of a message's content, plain or as text parts.
fn content_len(content: Option<&Value>) -> usize {
    match content {
        Some(Value::String(s)) => s.len(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(str::len)
            .sum(),
        _ => 0,
    }
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

/// What the limiter and fault dice decided for one chat request.
enum Decision {
    /// Answer now (refusals come back without `latency`, as a limiter's do).
    Refuse(Response),
    /// Answer with this error after `latency`.
    Fail(u16, String),
    /// Produce a completion.
    Serve {
        completion: Completion,
        stream: bool,
        /// `None` for accounts that do not advertise their limits.
        rate: Option<wire::RateInfo>,
        cut: Option<Cut>,
    },
}

async fn chat(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = Instant::now();
    let (decision, request_id) = decide(&sh, bearer(&headers), parse_chat(&body), now);
    let latency = sh.settings.latency;
    let refused = matches!(decision, Decision::Refuse(_));
    let mut resp = match decision {
        Decision::Refuse(resp) => resp,
        Decision::Fail(status, body) => {
            if !sh.sleep(latency).await {
                return aborted();
            }
            json_response(status, body)
        }
        Decision::Serve {
            completion,
            stream,
            rate,
            cut,
        } => {
            if !sh.sleep(latency).await {
                return aborted();
            }
            let mut resp = if stream {
                let interval = sh.settings.chunk_interval;
                let mut resp = Response::new(sse_body(completion, interval, cut, sh.clone()));
                let h = resp.headers_mut();
                wire::insert(h, "content-type", "text/event-stream");
                wire::insert(h, "cache-control", "no-cache");
                resp
            } else {
                match cut {
                    None => json_response(200, completion.body()),
                    Some(Cut::Reset(_)) => {
                        let mut resp = Response::new(abort_body(sh.clone()));
                        wire::insert(resp.headers_mut(), "content-type", "application/json");
                        resp
                    }
                    Some(Cut::Stall(_)) => {
                        sh.cancel.cancelled().await;
                        return aborted();
                    }
                }
            };
            if let Some(rate) = rate {
                wire::ratelimit_headers(resp.headers_mut(), rate);
            }
            resp
        }
    };
    let h = resp.headers_mut();
    wire::insert(h, "x-request-id", &request_id);
    let processing = if refused { Duration::ZERO } else { latency };
    wire::insert(
        h,
        "openai-processing-ms",
        &processing.as_millis().to_string(),
    );
    resp
}

/// Decides a chat request under the lock and logs it.
fn decide(
    sh: &Shared,
    token: Option<&str>,
    params: Result<ChatParams, BadRequest>,
    now: Instant,
) -> (Decision, String) {
    let mut inner = sh.lock();
    let id = inner.next_id();
    let request_id = format!("req_sim{id:024x}");
    let mut req = SimRequest {
        at: now,
        endpoint: Endpoint::ChatCompletions,
        label: None,
        model: params.as_ref().map(|p| p.model.clone()).unwrap_or_default(),
        stream: params.as_ref().is_ok_and(|p| p.stream),
        status: 401,
        retry_after: None,
        fault: None,
    };
    let idx = match inner.caller(token, now) {
        Caller::Missing | Caller::Unknown => {
            inner.record(req, None, false);
            let body = wire::invalid_api_key(token.unwrap_or(""));
            return (Decision::Refuse(json_response(401, body)), request_id);
        }
        Caller::Expired(i) => {
            req.label = Some(inner.accounts[i].label.clone());
            inner.record(req, Some(i), false);
            let body = wire::invalid_api_key(token.unwrap_or(""));
            return (Decision::Refuse(json_response(401, body)), request_id);
        }
        Caller::Account(i) => i,
    };
    req.label = Some(inner.accounts[idx].label.clone());
    let params = match params {
        Ok(p) => p,
        Err((message, param)) => {
            req.status = 400;
            inner.record(req, Some(idx), false);
            let body = wire::invalid_request(&message, param);
            return (Decision::Refuse(json_response(400, body)), request_id);
        }
    };
    if !sh.settings.models.contains(&params.model) {
        req.status = 404;
        inner.record(req, Some(idx), false);
        let body = wire::model_not_found(&params.model);
        return (Decision::Refuse(json_response(404, body)), request_id);
    }
    if let Some(KeyFault::Status(status)) = inner.accounts[idx].fault {
        req.status = status;
        req.fault = Some(KeyFault::Status(status));
        inner.record(req, Some(idx), false);
        return (
            Decision::Fail(status, wire::status_body(status, token.unwrap_or(""))),
            request_id,
        );
    }
    match inner.admit(idx, now) {
        Ok(()) => {}
        Err(Refusal::RateLimited { wait, limit }) => {
            let hints = inner.accounts[idx].hints;
            let body = wire::rate_limited(&params.model, limit, wait);
            let mut resp = json_response(429, body);
            wire::hint_headers(resp.headers_mut(), hints, wait, limit, SystemTime::now());
            req.status = 429;
            req.retry_after = Some(wait);
            inner.record(req, Some(idx), false);
            return (Decision::Refuse(resp), request_id);
        }
        Err(Refusal::Quota) => {
            req.status = 429;
            inner.record(req, Some(idx), true);
            let resp = json_response(429, wire::insufficient_quota());
            return (Decision::Refuse(resp), request_id);
        }
    }
    let drawn = inner.draw_fault();
    if let Some(Drawn::ServerError(status)) = drawn {
        // Failed before admission: does not use up the window.
        req.status = status;
        inner.record(req, Some(idx), false);
        return (Decision::Fail(status, wire::server_error()), request_id);
    }
    let rate = inner.accounts[idx].consume(now);
    let rate = inner.accounts[idx].advertise.then_some(rate);
    let completion = Completion {
        id: format!("chatcmpl-sim-{id}"),
        created: wire::unix_now(),
        model: params.model.clone(),
        pieces: params.max_tokens.unwrap_or(sh.settings.chunks),
        finish: if params.max_tokens.is_some() {
            "length"
        } else {
            "stop"
        },
        include_usage: params.stream && params.include_usage,
        prompt_tokens: params.prompt_tokens,
    };
    let events = if params.stream {
        completion.event_count()
    } else {
        0
    };
    let cut = Cut::choose(&mut inner, idx, drawn, events);
    req.status = 200;
    req.fault = cut.map(Cut::as_fault);
    inner.record(req, Some(idx), false);
    let decision = Decision::Serve {
        completion,
        stream: params.stream,
        rate,
        cut,
    };
    (decision, request_id)
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

impl SseEvents for Completion {
    fn event_count(&self) -> usize {
        Completion::event_count(self)
    }
    fn is_content(&self, i: usize) -> bool {
        Completion::is_content(self, i)
    }
    fn event(&self, i: usize) -> Bytes {
        Completion::event(self, i)
    }
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
