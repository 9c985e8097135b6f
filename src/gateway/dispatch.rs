//! The dispatcher loop: lease a credential, make sure it has a token, send,
//! classify, and either answer the client or move on to the next
//! credential. Nothing reaches the client until an attempt succeeds (or
//! fails in a way that is the request's own fault), so retries are
//! invisible; once a stream's first event is out, it is never retried.

use std::time::{Duration, SystemTime};

use ::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::time::Instant;

mod gemini;
mod http;
mod outcome;

pub use self::gemini::GeminiClients;

use super::AppState;
use super::convert::Conversion;
use super::error::ApiError;
use super::relay::{self, EventBuffer};
use crate::events::{RequestRecord, human, unix_ms};
use crate::pool::{Generation, Lease, Verdict};
use crate::secret::Secret;
use crate::upstream::{self, Outcome};

/// The longest pause before retrying elsewhere after a provider said it is
/// overloaded.
const OVERLOAD_PAUSE_MAX: Duration = Duration::from_secs(1);
/// The first pause before a credential that failed transiently is tried
/// again for the same request (when no other is ready); it doubles with
/// every round, up to [`RETRY_PAUSE_MAX`], and is jittered so that
/// requests that failed together do not return together.
const RETRY_PAUSE: Duration = Duration::from_millis(25);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(400);

/// A parsed client request, ready to send.
pub struct Inbound {
    pub model: String,
    pub stream: bool,
    /// The body in the upstream adapter's format (already converted).
    pub body: Bytes,
    /// Between the client's format and the provider's.
    pub conversion: Conversion,
    /// Which of the provider's APIs the request goes to.
    pub endpoint: upstream::Endpoint,
    pub headers: HeaderMap,
    /// Index of the provider the model routes to, in `generation`.
    pub provider: usize,
    /// The client key that asked, masked; `None` without client keys.
    pub client: Option<String>,
    /// The session the request belongs to (session affinity), hashed.
    pub session: Option<crate::pool::SessionKey>,
    /// The pool generation (and so the config) the request was routed in:
    /// its gateway settings apply for the request's whole life, and leases
    /// follow the provider into a newer generation after a reload.
    pub generation: std::sync::Arc<Generation>,
}

/// Why the last attempt did not produce an answer.
enum Failure {
    RateLimited,
    Upstream {
        status: StatusCode,
        message: String,
        /// A failure that may pass by itself (a 5xx other than 501, a
        /// connection refused or reset, a timeout, all before the first
        /// byte): worth another try, on the same credential if no other is
        /// ready.
        transient: bool,
    },
}

/// The result of one send.
enum Step {
    /// An answer for the client (success, or a 4xx that is the request's fault).
    Answer(Response, Option<Duration>),
    /// Try another credential; `note` goes into the rotation log.
    Next { failure: Failure, note: String },
    /// 401 on a refreshable credential: the caller may refresh and resend.
    Unauthorized,
}

struct Ctx<'a> {
    state: &'a AppState,
    req: &'a Inbound,
    started: Instant,
    record: RequestRecord,
}

/// Runs a request to its answer within `gateway.request_timeout` (a stream's
/// relay keeps the same deadline after the head went out).
pub async fn dispatch(state: &AppState, req: Inbound) -> Response {
    let limit = req.generation.config().gateway.request_timeout;
    let format = req.conversion.client;
    let (model, stream) = (req.model.clone(), req.stream);
    let at_ms = unix_ms(SystemTime::now());
    match tokio::time::timeout(limit, run(state, req)).await {
        Ok(resp) => resp,
        Err(_) => {
            let error = ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout_error",
                format!(
                    "no answer within the gateway's request deadline of {} (gateway.request_timeout)",
                    human(limit)
                ),
            )
            .code("request_timeout");
            state.pool.finish(RequestRecord {
                id: state.pool.next_request_id(),
                at_ms,
                model,
                stream,
                path: Vec::new(),
                attempts: 0,
                status: 504,
                latency_ms: limit.as_secs_f64() * 1000.0,
                ttfb_ms: None,
                error: Some(error.message.clone()),
                format: Some(format),
                code: error.code.map(str::to_string),
                tokens: None,
                client: None,
            });
            error.into_response_as(format)
        }
    }
}

async fn run(state: &AppState, req: Inbound) -> Response {
    let pool = &state.pool;
    let settings = req.generation.settings();
    let started = Instant::now();
    let mut ctx = Ctx {
        state,
        req: &req,
        started,
        record: RequestRecord {
            id: pool.next_request_id(),
            at_ms: unix_ms(SystemTime::now()),
            model: req.model.clone(),
            stream: req.stream,
            path: Vec::new(),
            attempts: 0,
            status: 0,
            latency_ms: 0.0,
            ttfb_ms: None,
            error: None,
            format: Some(req.conversion.client),
            code: None,
            tokens: None,
            client: req.client.clone(),
        },
    };
    let wait_until = started + settings.max_wait;
    let deadline = started + req.generation.config().gateway.request_timeout;
    // By name: a reload may renumber the credentials mid-request.
    let mut tried: Vec<String> = Vec::new();
    // The tried credentials whose failure may pass: tried again, after a
    // pause, once no other credential is ready.
    let mut transient: Vec<String> = Vec::new();
    let mut rounds = 0u32;
    // The last attempt's failure, and the last failure that was not a rate
    // limit (which decides between "busy, come back" and "broken").
    let mut last: Option<Failure> = None;
    let mut broken: Option<(StatusCode, String)> = None;
    // A credential we just left and why; logged once we know where we went.
    let mut moving_on: Option<(String, String)> = None;

    // The cluster's pin, when this replica has none that can serve.
    if let Some(key) = req.session {
        pool.recall_session(&req.generation, req.provider, key)
            .await;
    }
    let give_up = loop {
        if ctx.record.attempts >= settings.max_attempts {
            break GiveUp::Attempts;
        }
        // Made before the lease is tried, so no wake-up in between is
        // missed: `notify_waiters` reaches a `Notified` from its creation,
        // and a `notify_one` with nobody waiting leaves its permit. Not
        // registered as a waiter (a lock each way) until it is awaited.
        let ready = pool.ready_changed();
        tokio::pin!(ready);
        let lease = match pool.lease_for(&req.generation, req.provider, &tried, req.session) {
            Ok(l) => l,
            // Every credential that could serve is at its concurrency cap:
            // shed the request now rather than queue it without bound.
            Err(u) if u.busy => break GiveUp::Busy,
            // Nothing untried is ready, but a credential that failed in a
            // way that may pass is: try it again after a short pause
            // (unless the provider is down: then every credential fails
            // alike, and hammering it helps nobody).
            Err(u) if u.tried_ready && !transient.is_empty() => {
                if pool.provider_down(&req.generation, req.provider).is_some() {
                    break GiveUp::AllTried;
                }
                let pause = retry_pause(rounds);
                if Instant::now() + pause >= deadline {
                    break GiveUp::AllTried;
                }
                rounds += 1;
                tokio::time::sleep(pause).await;
                tried.retain(|name| !transient.contains(name));
                transient.clear();
                continue;
            }
            Err(u) => match u.retry_at {
                // Only with time left to wait: a failed credential whose
                // probe is due (or running) "recovers" in the past, and
                // with `max_wait` spent that would spin until the probe ends.
                Some(at) if at <= wait_until && Instant::now() < wait_until => {
                    // Waiters are woken one at a time (by a recovery, or by
                    // a success that shows capacity), not all at the moment
                    // a cooldown ends: a herd would only earn more 429s.
                    tokio::select! {
                        _ = ready => {}
                        _ = tokio::time::sleep_until(wait_until) => {}
                    }
                    continue;
                }
                _ if u.tried_ready => break GiveUp::AllTried,
                retry_at => break GiveUp::Unavailable(retry_at, u.limited),
            },
        };
        if let Some((from, note)) = moving_on.take() {
            pool.rotation(&from, Some(lease.name()), &note);
        }
        match try_credential(&mut ctx, lease).await {
            Ok(resp) => return resp,
            Err((name, failure, note)) => {
                // A rate-limited credential is kept out by its cooldown and
                // may serve this same request once the cooldown ends; one
                // that failed otherwise is not tried again for it.
                if let Failure::Upstream {
                    status,
                    message,
                    transient: passing,
                } = &failure
                {
                    tried.push(name.clone());
                    if *passing {
                        transient.push(name.clone());
                    }
                    broken = Some((*status, message.clone()));
                }
                moving_on = Some((name, note));
                last = Some(failure);
            }
        }
    };

    if let Some((from, note)) = moving_on.take() {
        pool.rotation(&from, None, &note);
    }
    let recovery = || pool.earliest_recovery(&req.generation, req.provider);
    let attempts = ctx.record.attempts;
    let error = match (give_up, last, broken) {
        (GiveUp::Busy, _, _) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "every credential for this model is at its concurrency cap (pool.max_in_flight); retry shortly",
        )
        .code("credentials_busy")
        .retry_after(1),
        (GiveUp::Unavailable(Some(at), false), _, _) => broken_upstream(at, attempts),
        (GiveUp::Unavailable(retry_at, _), _, _) => exhausted(retry_at, attempts),
        (GiveUp::Attempts, Some(Failure::RateLimited), _) => {
            attempts_spent(recovery(), attempts, Instant::now())
        }
        (_, _, None) => exhausted(recovery(), attempts),
        (_, _, Some((status, message))) => {
            match pool.provider_down(&req.generation, req.provider) {
                Some(why) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    format!(
                        "the provider is failing for every credential ({why}); \
                         last: {message}; retry shortly"
                    ),
                )
                .code("provider_unhealthy")
                .retry_after(1),
                None => {
                    ApiError::new(status, "upstream_error", message).code("upstream_unavailable")
                }
            }
        }
    };
    ctx.record.error = Some(error.message.clone());
    answer_error(&mut ctx, error)
}

/// The pause before round `round` (from 0) of retrying credentials that
/// failed transiently: doubling from [`RETRY_PAUSE`], capped, and drawn
/// from its upper half.
fn retry_pause(round: u32) -> Duration {
    let full = RETRY_PAUSE
        .saturating_mul(1 << round.min(8))
        .min(RETRY_PAUSE_MAX);
    full.mul_f64(rand::random_range(0.5..=1.0))
}

#[derive(Clone, Copy)]
enum GiveUp {
    Busy,
    Attempts,
    AllTried,
    /// When some credential recovers, and whether any is rate limited
    /// (rather than failed).
    Unavailable(Option<Instant>, bool),
}

/// 503 when every credential that could serve has failed and waits for its
/// probe: the upstream is down or erroring, which a 429 would misreport.
fn broken_upstream(probe_at: Instant, attempts: u32) -> ApiError {
    let wait = probe_at.saturating_duration_since(Instant::now());
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        format!(
            "every credential for this model has failed against its upstream \
             (after {attempts} attempt(s)); the next probe is in {}",
            human(wait)
        ),
    )
    .code("upstream_unavailable")
    .retry_after(ceil_secs(wait).max(1))
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// 429 when the request spent its `pool.max_attempts` on rate limits. If
/// a credential is ready again by now, that is what the client hears (and
/// a distinct code): its retry will be served; else as [`exhausted`].
fn attempts_spent(retry_at: Option<Instant>, attempts: u32, now: Instant) -> ApiError {
    match retry_at {
        Some(at) if at <= now => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "each of this request's {attempts} attempt(s) (pool.max_attempts) was rate \
                 limited; a credential has recovered since, so a retry should be served"
            ),
        )
        .code("attempts_exhausted")
        .retry_after(1),
        _ => exhausted(retry_at, attempts),
    }
}

/// 429 when nothing can serve (with `Retry-After` = the earliest recovery),
/// 503 when nothing ever will without the operator.
fn exhausted(retry_at: Option<Instant>, attempts: u32) -> ApiError {
    match retry_at {
        Some(at) => {
            let wait = at.saturating_duration_since(Instant::now());
            let secs = ceil_secs(wait);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "every credential for this model is rate limited or unavailable \
                     (after {attempts} attempt(s)); the first recovers in {}",
                    human(wait)
                ),
            )
            .code("pool_exhausted")
            .retry_after(secs.max(1))
        }
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "no credential for this model is enabled; an operator must enable one",
        )
        .code("no_credentials"),
    }
}

fn answer_error(ctx: &mut Ctx<'_>, error: ApiError) -> Response {
    ctx.record.status = error.status.as_u16();
    ctx.record.code = error.code.map(str::to_string);
    let mut resp = error.into_response_as(ctx.req.conversion.client);
    finish(ctx, &mut resp, None);
    resp
}

/// Stamps route headers and publishes the record (non-stream answers).
fn finish(ctx: &mut Ctx<'_>, resp: &mut Response, ttfb: Option<Duration>) {
    route_headers(ctx, resp.headers_mut());
    ctx.record.status = resp.status().as_u16();
    ctx.record.latency_ms = ctx.started.elapsed().as_secs_f64() * 1000.0;
    ctx.record.ttfb_ms = ttfb.map(|d| d.as_secs_f64() * 1000.0);
    // The request's last word: the record is handed over, not copied.
    ctx.state.pool.finish(std::mem::take(&mut ctx.record));
}

/// Checked once, at compile time, not on every answer.
const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-tokenyard-attempts");
const CREDENTIAL_HEADER: HeaderName = HeaderName::from_static("x-tokenyard-credential");

fn route_headers(ctx: &Ctx<'_>, h: &mut HeaderMap) {
    if !ctx.req.generation.config().gateway.route_headers {
        return;
    }
    h.insert(ATTEMPTS_HEADER, HeaderValue::from(ctx.record.attempts));
    if let Some(name) = ctx.record.path.last()
        && let Ok(v) = HeaderValue::from_str(name)
    {
        h.insert(CREDENTIAL_HEADER, v);
    }
}

/// Runs one credential: token, send, and (on a 401 for a refreshable
/// credential) one refresh and resend. `Err` carries the credential's name,
/// why it failed and the note for the rotation log.
async fn try_credential(
    ctx: &mut Ctx<'_>,
    lease: Lease,
) -> Result<Response, (String, Failure, String)> {
    let pool = &ctx.state.pool;
    let name = lease.name().to_string();
    // Boxed, the refresh's future (reqwest's, kilobytes) is not part of
    // every request's.
    let token = match pool.ready_token(&lease) {
        Some(t) => Ok(t),
        None => Box::pin(pool.token(&lease)).await,
    };
    let mut token = match token {
        Ok(t) => t,
        Err(e) => {
            ctx.record.path.push(name.clone());
            let note = format!("refresh failed on {name} ({e})");
            let failure = Failure::Upstream {
                status: StatusCode::BAD_GATEWAY,
                message: format!("could not get an access token for {name}: {e}"),
                // The token endpoint has its own retries and probes.
                transient: false,
            };
            return Err((name, failure, note));
        }
    };
    let mut refreshed = false;
    loop {
        ctx.record.attempts += 1;
        ctx.record.path.push(name.clone());
        match send_once(ctx, &lease, &token).await {
            Step::Answer(mut resp, ttfb) => {
                if is_stream(&resp) {
                    // The relay publishes the record when the stream ends.
                    route_headers(ctx, resp.headers_mut());
                    return Ok(resp);
                }
                finish(ctx, &mut resp, ttfb);
                return Ok(resp);
            }
            Step::Next { failure, note } => return Err((name, failure, note)),
            Step::Unauthorized => {
                let can_retry = lease.refreshes()
                    && !refreshed
                    && ctx.record.attempts < lease.settings().max_attempts;
                if can_retry {
                    refreshed = true;
                    match Box::pin(pool.reauth(&lease, &token)).await {
                        Ok(t) => {
                            token = t;
                            continue;
                        }
                        Err(e) => {
                            let note = format!("401 on {name}, and the refresh failed ({e})");
                            return Err((name.clone(), unauthorized_failure(&name), note));
                        }
                    }
                }
                let verdict = Outcome::Unauthorized.verdict();
                pool.record(&lease, &verdict, Some(401), ctx.started.elapsed());
                let note = format!("401 on {name} (credential refused; marked failed)");
                return Err((name.clone(), unauthorized_failure(&name), note));
            }
        }
    }
}

fn unauthorized_failure(name: &str) -> Failure {
    Failure::Upstream {
        status: StatusCode::BAD_GATEWAY,
        message: format!("the provider refused credential {name} (401)"),
        transient: false,
    }
}

fn is_stream(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

async fn send_once(ctx: &mut Ctx<'_>, lease: &Lease, token: &Secret) -> Step {
    if lease.provider().kind == crate::config::ProviderKind::Gemini {
        // Boxed: tonic's call is several kilobytes of future, which every
        // HTTP provider's request would otherwise carry (and copy).
        Box::pin(gemini::send_once(ctx, lease, token)).await
    } else {
        http::send_once(ctx, lease, token).await
    }
}

/// The attempt failed in a way that may pass (a broken connection, a
/// timeout, a stream cut before its first event): counted against the
/// credential, retried.
fn failed(ctx: &Ctx<'_>, lease: &Lease, t0: Instant, status: StatusCode, what: String) -> Step {
    failed_as(ctx, lease, t0, status, what, true)
}

/// The upstream answered something that cannot be used (a body that is
/// not what its API returns, or too large): counted against the
/// credential, and tried elsewhere but not again on it.
fn garbled(ctx: &Ctx<'_>, lease: &Lease, t0: Instant, what: String) -> Step {
    failed_as(ctx, lease, t0, StatusCode::BAD_GATEWAY, what, false)
}

fn failed_as(
    ctx: &Ctx<'_>,
    lease: &Lease,
    t0: Instant,
    status: StatusCode,
    what: String,
    transient: bool,
) -> Step {
    let name = lease.name();
    ctx.state.pool.record(
        lease,
        &Verdict::Failure {
            reason: what.clone(),
        },
        None,
        t0.elapsed(),
    );
    Step::Next {
        note: format!("{what} on {name}"),
        failure: Failure::Upstream {
            status,
            message: format!("credential {name}: {what}"),
            transient,
        },
    }
}

fn response(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

fn unix_secs() -> u64 {
    unix_ms(SystemTime::now()) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spent_attempts_say_whether_a_credential_is_back() {
        let now = Instant::now();
        let back = attempts_spent(Some(now), 8, now);
        assert_eq!(back.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(back.code, Some("attempts_exhausted"));
        assert_eq!(back.retry_after, Some(1));
        assert!(back.message.contains("8 attempt(s) (pool.max_attempts)"));

        let later = attempts_spent(Some(now + Duration::from_millis(2500)), 8, now);
        assert_eq!(later.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(later.code, Some("pool_exhausted"));
        assert_eq!(later.retry_after, Some(3));

        let none = attempts_spent(None, 8, now);
        assert_eq!(none.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(none.code, Some("no_credentials"));
    }
}
