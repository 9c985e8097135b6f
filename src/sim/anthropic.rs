//! The simulated Anthropic Messages API: `POST /v1/messages` and
//! `POST /v1/messages/count_tokens` in Anthropic's wire format, served by
//! the same accounts, limiter, log and fault knobs as the OpenAI
//! endpoints. A request to any endpoint counts against the same account
//! window, a token count included. A query string (Claude Code sends
//! `?beta=true`) changes nothing.
//!
//! Authentication: a static key in `x-api-key`, or an access token minted
//! by the sim's token endpoint as `Authorization: Bearer`, each accepted
//! only in its own header so that a gateway sending a credential the wrong
//! way is caught here rather than in production. `anthropic-version` is
//! required and must be a version the real API knows.
//!
//! What the sim answers:
//! - Text: the numbered pieces `[0][1]...` of the OpenAI path.
//!   `max_tokens` caps the count at `SimConfig::chunks` (stop reason
//!   `max_tokens` when it cuts, else `end_turn`). A stop sequence that is
//!   exactly a piece, `"[k]"`, ends the answer before it.
//! - A tool call, when the request has `tools` and either `tool_choice`
//!   forces one (`any`: the first tool; `tool`: the named one) or, under
//!   `auto`, the last user message's text mentions "weather" or the last
//!   message is a user message containing `sim:call-tool`. The call is
//!   `tool_use` with input `{"city": "Paris"}`, or `{"piece":"[0]","n":1}`
//!   (the chat endpoint's arguments) when the marker asked for it,
//!   streamed as several `input_json_delta` pieces; `tool_choice: none`
//!   never calls.
//! - A token count: `{"input_tokens": N}`, the `input_tokens` the same
//!   body would report from `/v1/messages`.
//!
//! How the limiter's answers look (the account's [`HintStyle`] picks the
//! hints of a rate-limit 429; see [`wire::hint_headers`]):
//! - `All`: `retry-after` (whole seconds) and `anthropic-ratelimit-*` with
//!   `remaining: 0` and an RFC 3339 reset;
//! - `RetryAfterOnly`, `RetryAfterMsOnly`, `HttpDate`: that header alone,
//!   as on the OpenAI path;
//! - `ResetHeadersOnly`: only `anthropic-ratelimit-*`;
//! - `None`: no hint, which is how Anthropic's spend-limit 429 looks.
//! - An exhausted [`Limit::Total`] is that spend-limit 429: a
//!   `rate_limit_error` with no hint header whatever the style (Anthropic
//!   has no `insufficient_quota`; the missing hint is what tells a
//!   gateway the key is spent, not busy).
//!
//! [`HintStyle`]: super::HintStyle
//! [`Limit::Total`]: super::Limit::Total

mod request;
mod wire;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use tokio::time::Instant;

use super::reply::{Answer, Cut, Decision, SseEvents, bearer, deliver, json_response};
use super::state::{Account, Caller, Drawn, Inner, Refusal, Shared};
use super::wire::insert;
use super::{Endpoint, KeyFault, SimRequest};
use request::{Kind, Params};
use wire::Reply;

/// Whether the real API would take this `anthropic-version`: the two
/// versions it documented for years, or any later date a newer SDK sends
/// (the Python SDK 2.17 sends `2026-10-21`). Not a date at all, or older:
/// refused.
fn version_ok(v: &str) -> bool {
    let b = v.as_bytes();
    let dated = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    dated && v >= "2023-01-01"
}

/// How a request identified itself.
#[derive(Debug, Clone, Copy)]
enum Credential<'a> {
    /// `x-api-key`, which wins when both headers are sent.
    ApiKey(&'a str),
    Bearer(&'a str),
    Missing,
}

fn credential(headers: &HeaderMap) -> Credential<'_> {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    match (key, bearer(headers)) {
        (Some(key), _) => Credential::ApiKey(key),
        (None, Some(token)) => Credential::Bearer(token),
        (None, None) => Credential::Missing,
    }
}

/// Whether a request on a path both APIs share (`/v1/models`) speaks
/// Anthropic's dialect.
pub(super) fn is_anthropic(headers: &HeaderMap) -> bool {
    headers.contains_key("x-api-key") || headers.contains_key("anthropic-version")
}

/// Static-key accounts are the ones without a refresh token.
fn has_static_key(account: &Account) -> bool {
    account.refresh_token.is_none()
}

/// A refused credential: the account, when it is known, and the message.
type Unauthorized = (Option<usize>, &'static str);

/// The account behind a credential, each kind only in its own header.
fn authenticate(inner: &Inner, cred: Credential<'_>, now: Instant) -> Result<usize, Unauthorized> {
    match cred {
        Credential::Missing => Err((None, "x-api-key header is required")),
        Credential::ApiKey(key) => match inner.caller(Some(key), now) {
            Caller::Account(i) if has_static_key(&inner.accounts[i]) => Ok(i),
            _ => Err((None, "invalid x-api-key")),
        },
        Credential::Bearer(token) => match inner.caller(Some(token), now) {
            Caller::Account(i) if !has_static_key(&inner.accounts[i]) => Ok(i),
            Caller::Expired(i) => Err((
                Some(i),
                "OAuth token has expired. Please obtain a new token or refresh your existing token.",
            )),
            _ => Err((None, "Invalid bearer token")),
        },
    }
}

/// `None` when the header is fine, else the 400 message.
fn version_error(version: Option<&str>) -> Option<String> {
    match version {
        None => Some("anthropic-version header is required".to_owned()),
        Some(v) if version_ok(v.trim()) => None,
        Some(v) => Some(format!("anthropic-version: \"{v}\" is not a valid version")),
    }
}

impl SseEvents for Reply {
    fn event_count(&self) -> usize {
        Reply::event_count(self)
    }
    fn is_content(&self, i: usize) -> bool {
        Reply::is_content(self, i)
    }
    fn event(&self, i: usize) -> Bytes {
        Reply::event(self, i)
    }
}

pub(super) async fn messages(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(sh, headers, body, Endpoint::Messages).await
}

/// `POST /v1/messages/count_tokens`: checked, limited and refused exactly
/// like a Messages request.
pub(super) async fn count_tokens(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(sh, headers, body, Endpoint::CountTokens).await
}

async fn handle(sh: Arc<Shared>, headers: HeaderMap, body: Bytes, endpoint: Endpoint) -> Response {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let version = headers
        .get("anthropic-version")
        .map(|v| v.to_str().unwrap_or_default());
    let kind = match endpoint {
        Endpoint::CountTokens => Kind::CountTokens,
        _ => Kind::Messages,
    };
    let (decision, request_id) = decide(
        &sh,
        endpoint,
        credential(&headers),
        version,
        request::parse(&body, kind),
        now,
        wall,
    );
    let mut resp = deliver(&sh, decision, |h, rate| {
        wire::ratelimit_headers(h, rate, wall)
    })
    .await;
    insert(resp.headers_mut(), "request-id", &request_id);
    resp
}

/// Decides a Messages or count_tokens request under the lock and logs it.
/// The checks run in the real API's order as far as it is known: who,
/// which version, what body, which model; then faults and the limiter.
fn decide(
    sh: &Shared,
    endpoint: Endpoint,
    cred: Credential<'_>,
    version: Option<&str>,
    params: Result<Params, String>,
    now: Instant,
    wall: SystemTime,
) -> (Decision, String) {
    let mut inner = sh.lock();
    let id = inner.next_id();
    let request_id = format!("req_sim{id:024x}");
    let refuse = |status, body| Decision::Refuse(json_response(status, body));
    let mut req = SimRequest {
        at: now,
        endpoint,
        label: None,
        model: params.as_ref().map(|p| p.model.clone()).unwrap_or_default(),
        stream: params.as_ref().is_ok_and(|p| p.stream),
        status: 401,
        retry_after: None,
        fault: None,
    };
    let idx = match authenticate(&inner, cred, now) {
        Ok(i) => i,
        Err((account, message)) => {
            req.label = account.map(|i| inner.accounts[i].label.clone());
            inner.record(req, account, false);
            let body = wire::authentication(message, &request_id);
            return (refuse(401, body), request_id);
        }
    };
    req.label = Some(inner.accounts[idx].label.clone());
    let params = match version_error(version).map_or(params, Err) {
        Ok(p) => p,
        Err(message) => {
            req.status = 400;
            inner.record(req, Some(idx), false);
            let body = wire::invalid_request(&message, &request_id);
            return (refuse(400, body), request_id);
        }
    };
    if !sh.settings.models.contains(&params.model) {
        req.status = 404;
        inner.record(req, Some(idx), false);
        let body = wire::not_found(&params.model, &request_id);
        return (refuse(404, body), request_id);
    }
    if let Some(status) = inner.accounts[idx].status_fault() {
        req.status = status;
        req.fault = Some(KeyFault::Status(status));
        inner.record(req, Some(idx), false);
        let body = wire::status_body(status, &request_id);
        return (Decision::Fail(status, body), request_id);
    }
    match inner.admit(idx, now) {
        Ok(()) => {}
        Err(Refusal::RateLimited { wait, limit }) => {
            let hints = inner.accounts[idx].hints;
            let mut resp = json_response(429, wire::rate_limited(limit, &request_id));
            wire::hint_headers(resp.headers_mut(), hints, wait, limit, wall);
            req.status = 429;
            req.retry_after = Some(wait);
            inner.record(req, Some(idx), false);
            return (Decision::Refuse(resp), request_id);
        }
        Err(Refusal::Quota) => {
            req.status = 429;
            inner.record(req, Some(idx), true);
            return (refuse(429, wire::spend_limit(&request_id)), request_id);
        }
    }
    let drawn = inner.draw_fault();
    if let Some(Drawn::ServerError(status)) = drawn {
        // Failed before admission: does not use up the window.
        req.status = status;
        inner.record(req, Some(idx), false);
        let body = wire::status_body(status, &request_id);
        return (Decision::Fail(status, body), request_id);
    }
    let rate = inner.accounts[idx].consume(now);
    let rate = inner.accounts[idx].advertise.then_some(rate);
    let answer = if endpoint == Endpoint::CountTokens {
        Answer::Whole(wire::token_count(params.input_tokens))
    } else {
        let (content, stop) = params.plan(sh.settings.chunks, id);
        let reply = Reply {
            id: format!("msg_sim{id:024x}"),
            model: params.model.clone(),
            content,
            stop,
            input_tokens: params.input_tokens,
        };
        if params.stream {
            Answer::Stream(Box::new(reply))
        } else {
            Answer::Whole(reply.body())
        }
    };
    let events = match &answer {
        Answer::Whole(_) => 0,
        Answer::Stream(reply) => reply.event_count(),
    };
    let cut = Cut::choose(&mut inner, idx, drawn, events);
    req.status = 200;
    req.fault = cut.map(Cut::as_fault);
    inner.record(req, Some(idx), false);
    (Decision::Serve { answer, rate, cut }, request_id)
}

/// `GET /v1/models` for an Anthropic client: the same credentials rules,
/// counters and `Status` fault as the OpenAI form, Anthropic's bodies.
pub(super) fn models(sh: &Shared, headers: &HeaderMap) -> Response {
    let now = Instant::now();
    let version = headers
        .get("anthropic-version")
        .map(|v| v.to_str().unwrap_or_default());
    let (request_id, result) = {
        let mut inner = sh.lock();
        let request_id = format!("req_sim{:024x}", inner.next_id());
        let result = authenticate(&inner, credential(headers), now).map(|idx| {
            let account = &mut inner.accounts[idx];
            account.stats.models_calls += 1;
            account.fault
        });
        (request_id, result)
    };
    let mut resp = match (result, version_error(version)) {
        (Err((_, message)), _) => json_response(401, wire::authentication(message, &request_id)),
        (Ok(_), Some(message)) => json_response(400, wire::invalid_request(&message, &request_id)),
        (Ok(Some(KeyFault::Status(status))), None) => {
            json_response(status, wire::status_body(status, &request_id))
        }
        (Ok(_), None) => {
            let created = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let body = wire::models_list(&sh.settings.models, created);
            json_response(200, body.to_string())
        }
    };
    insert(resp.headers_mut(), "request-id", &request_id);
    resp
}
