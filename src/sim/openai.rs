//! What OpenAI's endpoints (chat completions, embeddings, responses)
//! share: bearer auth, the checks in OpenAI's order, the account limiter,
//! status and drawn faults, and the headers of every answer. Each endpoint
//! parses its own body and plans its own answer; this module decides
//! whether it gets to, logs the request and sends what was planned.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::response::Response;
use tokio::time::Instant;

pub(super) use super::reply::{Answer, Decision};
use super::reply::{Cut, deliver, json_response};
use super::state::{Caller, Drawn, Refusal, Shared};
use super::wire;
use super::{Endpoint, KeyFault, SimRequest};

/// A body OpenAI would refuse with 400, as its error envelope names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BadRequest {
    pub message: String,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl BadRequest {
    pub fn new(message: impl Into<String>) -> Self {
        BadRequest {
            message: message.into(),
            param: None,
            code: None,
        }
    }

    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The 400 for a body that is not JSON, word for word OpenAI's.
    pub fn not_json() -> Self {
        BadRequest::new(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
        )
    }

    /// `Invalid type for 'param': expected ….`
    pub fn invalid_type(param: &'static str, expected: &str) -> Self {
        BadRequest::new(format!("Invalid type for '{param}': expected {expected}."))
            .param(param)
            .code("invalid_type")
    }

    fn body(&self) -> String {
        wire::error_body(
            &self.message,
            "invalid_request_error",
            self.param,
            self.code,
        )
    }
}

/// What the gate needs from a parsed body; the rest is the endpoint's.
pub(super) trait Ask {
    fn model(&self) -> &str;
    fn stream(&self) -> bool;
}

/// Decides a request under the lock and logs it: who, what body, which
/// model, the account's status fault, the limiter, a drawn fault; then
/// `plan` builds the answer from the body and the request's number.
pub(super) fn decide<P: Ask>(
    sh: &Shared,
    endpoint: Endpoint,
    token: Option<&str>,
    params: Result<P, BadRequest>,
    now: Instant,
    plan: impl FnOnce(&P, u64) -> Answer,
) -> (Decision, String) {
    let mut inner = sh.lock();
    let id = inner.next_id();
    let request_id = format!("req_sim{id:024x}");
    let refuse = |status, body| Decision::Refuse(json_response(status, body));
    let mut req = SimRequest {
        at: now,
        endpoint,
        label: None,
        model: params
            .as_ref()
            .map(|p| p.model().to_owned())
            .unwrap_or_default(),
        stream: params.as_ref().is_ok_and(|p| p.stream()),
        status: 401,
        retry_after: None,
        fault: None,
    };
    let idx = match inner.caller(token, now) {
        Caller::Missing | Caller::Unknown => {
            inner.record(req, None, false);
            let body = wire::invalid_api_key(token.unwrap_or(""));
            return (refuse(401, body), request_id);
        }
        Caller::Expired(i) => {
            req.label = Some(inner.accounts[i].label.clone());
            inner.record(req, Some(i), false);
            let body = wire::invalid_api_key(token.unwrap_or(""));
            return (refuse(401, body), request_id);
        }
        Caller::Account(i) => i,
    };
    req.label = Some(inner.accounts[idx].label.clone());
    let params = match params {
        Ok(p) => p,
        Err(bad) => {
            req.status = 400;
            inner.record(req, Some(idx), false);
            return (refuse(400, bad.body()), request_id);
        }
    };
    if !sh.settings.models.iter().any(|m| m == params.model()) {
        req.status = 404;
        inner.record(req, Some(idx), false);
        return (
            refuse(404, wire::model_not_found(params.model())),
            request_id,
        );
    }
    if let Some(status) = inner.accounts[idx].status_fault() {
        req.status = status;
        req.fault = Some(KeyFault::Status(status));
        inner.record(req, Some(idx), false);
        let body = wire::status_body(status, token.unwrap_or(""));
        return (Decision::Fail(status, body), request_id);
    }
    match inner.admit(idx, now) {
        Ok(()) => {}
        Err(Refusal::RateLimited { wait, limit }) => {
            let hints = inner.accounts[idx].hints;
            let body = wire::rate_limited(params.model(), limit, wait);
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
            return (refuse(429, wire::insufficient_quota()), request_id);
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
    let answer = plan(&params, id);
    let events = match &answer {
        Answer::Whole(_) => 0,
        Answer::Stream(events) => events.event_count(),
    };
    let cut = Cut::choose(&mut inner, idx, drawn, events);
    req.status = 200;
    req.fault = cut.map(Cut::as_fault);
    inner.record(req, Some(idx), false);
    (Decision::Serve { answer, rate, cut }, request_id)
}

/// Sends what `decide` decided, with the headers every OpenAI answer
/// carries (`x-request-id`, `openai-processing-ms`, and `x-ratelimit-*` on
/// successes of accounts that advertise).
pub(super) async fn respond(sh: Arc<Shared>, decision: Decision, request_id: String) -> Response {
    let refused = matches!(decision, Decision::Refuse(_));
    let latency = sh.settings.latency;
    let mut resp = deliver(&sh, decision, wire::ratelimit_headers).await;
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
