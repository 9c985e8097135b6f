//! The simulated Gemini API: gRPC `google.ai.generativelanguage.v1beta.
//! GenerativeService` (`GenerateContent` and `StreamGenerateContent`),
//! served on the sim's own port next to the HTTP endpoints (HTTP/2 with
//! prior knowledge, so plain `http://` gRPC clients connect). The same
//! accounts, limiter, log and fault knobs as the OpenAI endpoint apply: a
//! request on either counts against the same account window.
//!
//! Authentication: a static key in `x-goog-api-key`, or an access token
//! minted by the sim's token endpoint as `authorization: Bearer`, each
//! accepted only in its own header. Anything else is `UNAUTHENTICATED`.
//!
//! What the sim answers:
//! - Text: the numbered pieces `[0][1]...` of the OpenAI path, one piece
//!   per streamed message at `chunk_interval`; `max_output_tokens` sets the
//!   count (finish `MAX_TOKENS`), else `SimConfig::chunks` (finish `STOP`).
//! - A function call, when the request declares functions and either
//!   `tool_config` forces one (`ANY`: the first allowed name, else the
//!   first declaration) or, unless the mode is `NONE`, the last user turn's
//!   text mentions "weather": a `function_call` part naming the first
//!   declaration with args `{"city": "Paris"}`, finish `STOP`.
//!
//! How refusals look: `RESOURCE_EXHAUSTED` with a `google.rpc.Status` in
//! `grpc-status-details-bin`. A rate limit carries, by the account's
//! [`HintStyle`]:
//! - `All`: `RetryInfo` (the exact wait, rounded up to the millisecond)
//!   and a per-minute `QuotaFailure`;
//! - `RetryAfterOnly`, `HttpDate`: `RetryInfo` in whole seconds, rounded
//!   up; `RetryAfterMsOnly`: `RetryInfo` in milliseconds;
//! - `ResetHeadersOnly`: the per-minute `QuotaFailure` alone;
//! - `None`: no details at all.
//! - An exhausted [`Limit::Total`] always carries a `QuotaFailure` for
//!   `GenerateRequestsPerDayPerProjectPerModel` and no `RetryInfo`: the
//!   daily quota id is what tells a gateway the key is done for the day.
//!
//! Faults: `KeyFault::Status(n)` answers the gRPC code for HTTP status `n`
//! (429 `RESOURCE_EXHAUSTED` without details, 503 `UNAVAILABLE`, 401
//! `UNAUTHENTICATED`, 500 `INTERNAL`, ...). A reset sends the response head
//! and that many messages, then resets the HTTP/2 stream (`RST_STREAM`), as
//! a dropped connection looks to a gRPC client; a stall goes silent until
//! the client gives up or the sim shuts down.
//!
//! [`HintStyle`]: super::HintStyle
//! [`Limit::Total`]: super::Limit::Total

mod wire;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use futures_util::{Stream, StreamExt as _, stream};
use http_body_util::{BodyStream, StreamBody};
use tokio::time::Instant;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};

use super::reply::Cut;
use super::state::{Account, Caller, Drawn, Inner, Refusal, Shared};
use super::{Endpoint, KeyFault, SimRequest};
use crate::gemini::v1beta as pb;
use pb::candidate::FinishReason;
use pb::generative_service_server::{GenerativeService, GenerativeServiceServer};
use wire::Plan;

/// The gRPC routes, to be merged into the sim's router. Every response
/// passes [`reset_marked`], which turns a marked status into a real
/// stream reset.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    let service = GenerativeServiceServer::new(Sim { sh: shared });
    let name = <GenerativeServiceServer<Sim> as NamedService>::NAME;
    Router::new()
        .route_service(&format!("/{name}/{{*method}}"), service)
        .layer(axum::middleware::map_response(reset_marked))
}

/// Metadata on a status that means "reset the stream here instead of
/// sending this status". Never reaches a client.
const RESET_MARK: &str = "x-sim-reset";

/// Pause before a reset, so the messages before it leave first (h2 drops
/// what is still queued on a stream it resets).
const FLUSH_GRACE: Duration = Duration::from_millis(20);

fn reset_status() -> Status {
    let mut md = MetadataMap::new();
    md.insert(RESET_MARK, MetadataValue::from_static("1"));
    Status::with_metadata(Code::Unavailable, "sim: stream reset", md)
}

fn shutting_down() -> Status {
    Status::unavailable("sim shutting down")
}

fn reset_error() -> axum::Error {
    axum::Error::new(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "sim: stream reset",
    ))
}

/// Turns a status marked with [`RESET_MARK`] into a stream reset: in the
/// head (a unary error is a trailers-only response) the head goes out
/// without the status and the body fails; in the trailers (a stream that
/// ended in error) the body fails instead of ending.
async fn reset_marked(resp: axum::response::Response) -> axum::response::Response {
    let (mut parts, body) = resp.into_parts();
    if parts.headers.remove(RESET_MARK).is_some() {
        for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
            parts.headers.remove(name);
        }
        let failed = stream::once(async {
            tokio::time::sleep(FLUSH_GRACE).await;
            Err::<bytes::Bytes, _>(reset_error())
        });
        return axum::response::Response::from_parts(parts, Body::from_stream(failed));
    }
    let frames = BodyStream::new(body).then(|frame| async move {
        match frame {
            Ok(f) if f.trailers_ref().is_some_and(|t| t.contains_key(RESET_MARK)) => {
                tokio::time::sleep(FLUSH_GRACE).await;
                Err(reset_error())
            }
            other => other,
        }
    });
    axum::response::Response::from_parts(parts, Body::new(StreamBody::new(frames)))
}

/// How a request identified itself.
#[derive(Debug, Clone, Copy)]
enum Credential<'a> {
    /// `x-goog-api-key`, which wins when both are sent.
    ApiKey(&'a str),
    Bearer(&'a str),
    Missing,
}

fn credential(md: &MetadataMap) -> Credential<'_> {
    let key = md
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let bearer = md
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty())
        .map(|(_, t)| t.trim());
    match (key, bearer) {
        (Some(key), _) => Credential::ApiKey(key),
        (None, Some(token)) => Credential::Bearer(token),
        (None, None) => Credential::Missing,
    }
}

/// Static-key accounts are the ones without a refresh token.
fn has_static_key(account: &Account) -> bool {
    account.refresh_token.is_none()
}

/// The account behind a credential, each kind only in its own place.
fn authenticate(
    inner: &Inner,
    cred: Credential<'_>,
    now: Instant,
) -> Result<usize, (Option<usize>, Status)> {
    match cred {
        Credential::Missing => Err((None, wire::missing_credential())),
        Credential::ApiKey(key) => match inner.caller(Some(key), now) {
            Caller::Account(i) if has_static_key(&inner.accounts[i]) => Ok(i),
            _ => Err((None, wire::invalid_key())),
        },
        Credential::Bearer(token) => match inner.caller(Some(token), now) {
            Caller::Account(i) if !has_static_key(&inner.accounts[i]) => Ok(i),
            Caller::Expired(i) => Err((Some(i), wire::expired_token())),
            _ => Err((None, wire::invalid_token())),
        },
    }
}

/// What the limiter and fault dice decided for one request.
enum Decision {
    /// Answer now (refusals come back without `latency`, as a limiter's do).
    Refuse(Status),
    /// Answer with this error after `latency`.
    Fail(Status),
    Serve {
        plan: Plan,
        cut: Option<Cut>,
    },
}

/// Decides a request under the lock and logs it, in the OpenAI path's
/// order: who, what body, which model; then faults and the limiter.
fn decide(
    sh: &Shared,
    md: &MetadataMap,
    req: &pb::GenerateContentRequest,
    stream: bool,
) -> Decision {
    let now = Instant::now();
    let params = wire::params(req);
    let mut inner = sh.lock();
    let id = inner.next_id();
    let mut log = SimRequest {
        at: now,
        endpoint: Endpoint::GenerateContent,
        label: None,
        model: params.model.clone(),
        stream,
        status: 401,
        retry_after: None,
        fault: None,
    };
    let idx = match authenticate(&inner, credential(md), now) {
        Ok(i) => i,
        Err((account, status)) => {
            log.label = account.map(|i| inner.accounts[i].label.clone());
            inner.record(log, account, false);
            return Decision::Refuse(status);
        }
    };
    log.label = Some(inner.accounts[idx].label.clone());
    if params.empty {
        log.status = 400;
        inner.record(log, Some(idx), false);
        return Decision::Refuse(wire::contents_missing());
    }
    if !sh.settings.models.contains(&params.model) {
        log.status = 404;
        inner.record(log, Some(idx), false);
        return Decision::Refuse(wire::model_not_found(&params.model));
    }
    if let Some(status) = inner.accounts[idx].status_fault() {
        log.status = status;
        log.fault = Some(KeyFault::Status(status));
        inner.record(log, Some(idx), false);
        return Decision::Fail(wire::fault_status(status));
    }
    match inner.admit(idx, now) {
        Ok(()) => {}
        Err(Refusal::RateLimited { wait, limit }) => {
            let status = wire::rate_limited(&params.model, limit, wait, inner.accounts[idx].hints);
            log.status = 429;
            log.retry_after = Some(wait);
            inner.record(log, Some(idx), false);
            return Decision::Refuse(status);
        }
        Err(Refusal::Quota) => {
            log.status = 429;
            inner.record(log, Some(idx), true);
            return Decision::Refuse(wire::daily_quota(&params.model));
        }
    }
    let drawn = inner.draw_fault();
    if let Some(Drawn::ServerError(status)) = drawn {
        // Failed before admission: does not use up the window.
        log.status = status;
        inner.record(log, Some(idx), false);
        return Decision::Fail(wire::fault_status(status));
    }
    inner.accounts[idx].consume(now);
    let plan = Plan {
        id,
        model: params.model,
        pieces: params.pieces.unwrap_or(sh.settings.chunks),
        finish: if params.pieces.is_some() && params.call.is_none() {
            FinishReason::MaxTokens
        } else {
            FinishReason::Stop
        },
        call: params.call,
        prompt_tokens: params.prompt_tokens,
    };
    let events = if stream { plan.messages() } else { 0 };
    let cut = Cut::choose(&mut inner, idx, drawn, events);
    log.status = 200;
    log.fault = cut.map(Cut::as_fault);
    inner.record(log, Some(idx), false);
    Decision::Serve { plan, cut }
}

/// The service; all state is the sim's.
struct Sim {
    sh: Arc<Shared>,
}

type MessageStream =
    Pin<Box<dyn Stream<Item = Result<pb::GenerateContentResponse, Status>> + Send>>;

/// State of one streamed answer: which message comes next, where it is cut.
struct Streaming {
    plan: Plan,
    next: usize,
    cut: Option<Cut>,
    sh: Arc<Shared>,
}

fn message_stream(plan: Plan, cut: Option<Cut>, sh: Arc<Shared>) -> MessageStream {
    let state = Streaming {
        plan,
        next: 0,
        cut,
        sh,
    };
    Box::pin(stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        match st.cut {
            Some(Cut::Reset(at)) if at == st.next => return Some((Err(reset_status()), None)),
            Some(Cut::Stall(at)) if at == st.next => {
                // Silent until the client gives up or the sim shuts down.
                st.sh.cancel.cancelled().await;
                return Some((Err(shutting_down()), None));
            }
            _ => {}
        }
        if st.next >= st.plan.messages() {
            return None;
        }
        if !st.sh.sleep(st.sh.settings.chunk_interval).await {
            return Some((Err(shutting_down()), None));
        }
        let message = st.plan.message(st.next);
        st.next += 1;
        Some((Ok(message), Some(st)))
    }))
}

#[tonic::async_trait]
impl GenerativeService for Sim {
    async fn generate_content(
        &self,
        request: Request<pb::GenerateContentRequest>,
    ) -> Result<Response<pb::GenerateContentResponse>, Status> {
        let decision = decide(&self.sh, request.metadata(), request.get_ref(), false);
        let latency = self.sh.settings.latency;
        match decision {
            Decision::Refuse(status) => Err(status),
            Decision::Fail(status) => {
                if !self.sh.sleep(latency).await {
                    return Err(shutting_down());
                }
                Err(status)
            }
            Decision::Serve { plan, cut } => {
                if !self.sh.sleep(latency).await {
                    return Err(shutting_down());
                }
                match cut {
                    None => Ok(Response::new(plan.whole())),
                    Some(Cut::Reset(_)) => Err(reset_status()),
                    Some(Cut::Stall(_)) => {
                        self.sh.cancel.cancelled().await;
                        Err(shutting_down())
                    }
                }
            }
        }
    }

    type StreamGenerateContentStream = MessageStream;

    async fn stream_generate_content(
        &self,
        request: Request<pb::GenerateContentRequest>,
    ) -> Result<Response<MessageStream>, Status> {
        let decision = decide(&self.sh, request.metadata(), request.get_ref(), true);
        let latency = self.sh.settings.latency;
        match decision {
            Decision::Refuse(status) => Err(status),
            Decision::Fail(status) => {
                if !self.sh.sleep(latency).await {
                    return Err(shutting_down());
                }
                Err(status)
            }
            Decision::Serve { plan, cut } => {
                if !self.sh.sleep(latency).await {
                    return Err(shutting_down());
                }
                Ok(Response::new(message_stream(plan, cut, self.sh.clone())))
            }
        }
    }
}

#[cfg(test)]
mod tests;
