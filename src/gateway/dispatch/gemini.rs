//! One attempt on a Gemini provider, over gRPC. The request arrives in
//! OpenAI's shape (see `convert`) and becomes a `GenerateContentRequest`;
//! the answer becomes OpenAI's shapes again — a chat completion, or chunk
//! events for the relay — so the rest of the dispatcher, and the client's
//! own conversion, work as for any HTTP provider.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tonic::Streaming;

use super::*;
use crate::gemini::v1beta::{GenerateContentRequest, GenerateContentResponse};
use crate::translate::{gemini as tr, write_events};
use crate::upstream::gemini::{self as up, Client, Connections, InFlight};

/// The gRPC connections to every Gemini provider address, made on first
/// use and shared by every request after it. Each address gets as many
/// HTTP/2 connections as its concurrent requests need at
/// [`up::STREAMS_PER_CONNECTION`] each (see [`Connections`]), so a request
/// never waits behind the server's stream cap. Keyed by `base_url`, not by
/// the provider's position, so a reload that reorders providers cannot
/// hand a request another's connections.
pub struct GeminiClients {
    /// Requests per connection before another opens.
    cap: usize,
    by_url: Mutex<HashMap<String, Arc<Connections>>>,
}

impl Default for GeminiClients {
    fn default() -> Self {
        GeminiClients::with_stream_cap(up::STREAMS_PER_CONNECTION)
    }
}

impl GeminiClients {
    /// Opens another connection to an address once each of its
    /// connections carries `cap` requests (tests use a small cap to match
    /// a server that advertises one).
    pub fn with_stream_cap(cap: usize) -> Self {
        GeminiClients {
            cap,
            by_url: Mutex::default(),
        }
    }

    /// A client with room on one of `base_url`'s connections, and the
    /// request's place there: hold it until the response is done.
    async fn get(&self, base_url: &str, connect: Duration) -> Result<(Client, InFlight), String> {
        let conns = {
            let mut by_url = self.lock();
            match by_url.get(base_url) {
                Some(c) => c.clone(),
                None => {
                    let c = Arc::new(Connections::new(base_url, self.cap));
                    by_url.insert(base_url.to_string(), c.clone());
                    c
                }
            }
        };
        conns.acquire(connect).await
    }

    /// Requests to `base_url` whose responses are not done yet.
    pub fn in_flight(&self, base_url: &str) -> usize {
        let conns = self.lock().get(base_url).cloned();
        conns.map_or(0, |c| c.in_flight())
    }

    /// Connections open to `base_url`.
    pub fn connections(&self, base_url: &str) -> usize {
        let conns = self.lock().get(base_url).cloned();
        conns.map_or(0, |c| c.connections())
    }

    /// After a reload: drops the connections of addresses no provider uses
    /// any more (requests still using one keep it until they end).
    pub fn retain(&self, providers: &[crate::config::Provider]) {
        self.lock()
            .retain(|url, _| providers.iter().any(|p| &p.base_url == url));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Connections>>> {
        self.by_url.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) async fn send_once(ctx: &mut Ctx<'_>, lease: &Lease, token: &Secret) -> Step {
    let state = ctx.state;
    let req = ctx.req;
    let gw = &req.generation.config().gateway;
    let t0 = Instant::now();
    let deadline = t0 + gw.first_byte_timeout;
    let created = unix_secs();
    let model = ctx.req.model.clone();

    let request = match serde_json::from_slice::<serde_json::Value>(&ctx.req.body)
        .map_err(|e| e.to_string())
        .and_then(|json| tr::request_from_openai(&json, &model).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        // The request itself cannot be sent: the client's fault, no credential's.
        Err(e) => {
            let err = ApiError::bad_request(format!(
                "this request cannot be sent to the model's Gemini provider: {e}"
            ))
            .code("untranslatable_request");
            return Step::Answer(
                err.into_response_as(ctx.req.conversion.client),
                Some(ctx.started.elapsed()),
            );
        }
    };
    let provider = lease.provider();
    let (client, place) = match state
        .gemini
        .get(&provider.base_url, gw.connect_timeout)
        .await
    {
        Ok(c) => c,
        Err(e) => return failed(ctx, lease, t0, StatusCode::BAD_GATEWAY, e),
    };

    let call = Call {
        client,
        place,
        request,
        deadline,
        created,
    };
    if ctx.req.stream {
        stream(ctx, lease, token, call).await
    } else {
        unary(ctx, lease, token, call).await
    }
}

/// One call, ready to go.
struct Call {
    client: Client,
    /// The call's place on `client`'s connection, held until its response
    /// is done.
    place: InFlight,
    request: GenerateContentRequest,
    deadline: Instant,
    created: u64,
}

async fn unary(ctx: &mut Ctx<'_>, lease: &Lease, token: &Secret, call: Call) -> Step {
    let Call {
        mut client,
        place,
        request,
        deadline,
        created,
    } = call;
    let t0 = Instant::now();
    let sent = client.generate_content(authed(request, lease, token));
    let answer = tokio::time::timeout_at(deadline, sent).await;
    // The whole answer (or the failure) is in: the connection has room again.
    drop(place);
    let answer = match answer {
        Ok(Ok(resp)) => resp.into_inner(),
        Ok(Err(status)) => return refused(ctx, lease, t0, &status).await,
        Err(_) => return timed_out(ctx, lease, t0),
    };
    ctx.state.pool.record(
        lease,
        &Verdict::Success { hold: None },
        Some(200),
        t0.elapsed(),
    );
    let usage = answer
        .usage_metadata
        .as_ref()
        .map(crate::upstream::usage::from_gemini);
    ctx.state.pool.add_usage(lease, usage);
    ctx.record.tokens = usage;
    let openai = tr::response_to_openai(&answer, &ctx.req.model, created);
    let body = Bytes::from(serde_json::to_vec(&openai).expect("json"));
    let body = match ctx.req.conversion.response(body, created) {
        Ok(b) => b,
        Err(what) => return garbled(ctx, lease, t0, what),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Step::Answer(
        response(StatusCode::OK, headers, Body::from(body)),
        Some(ctx.started.elapsed()),
    )
}

async fn stream(ctx: &mut Ctx<'_>, lease: &Lease, token: &Secret, call: Call) -> Step {
    let Call {
        mut client,
        place,
        request,
        deadline,
        created,
    } = call;
    let t0 = Instant::now();
    let sent = client.stream_generate_content(authed(request, lease, token));
    // A failed call frees its place before classifying the failure (which
    // may pause before the next attempt).
    let mut messages = match tokio::time::timeout_at(deadline, sent).await {
        Ok(Ok(resp)) => resp.into_inner(),
        Ok(Err(status)) => {
            drop(place);
            return refused(ctx, lease, t0, &status).await;
        }
        Err(_) => return timed_out(ctx, lease, t0),
    };
    // Before the first message nothing has reached the client: a failure
    // here (often RESOURCE_EXHAUSTED arrives as the stream's status) can
    // still go to the next credential.
    let first = match tokio::time::timeout_at(deadline, messages.message()).await {
        Ok(Ok(Some(m))) => m,
        Ok(Ok(None)) => {
            let what = "stream ended before its first message".to_string();
            return failed(ctx, lease, t0, StatusCode::BAD_GATEWAY, what);
        }
        Ok(Err(status)) => {
            drop(messages);
            drop(place);
            return refused(ctx, lease, t0, &status).await;
        }
        Err(_) => return timed_out(ctx, lease, t0),
    };
    let pool = &ctx.state.pool;
    pool.record(
        lease,
        &Verdict::Success { hold: None },
        Some(200),
        t0.elapsed(),
    );
    let mut translator = tr::StreamToOpenAi::new(&ctx.req.model, created);
    let first_bytes = write_events(&translator.push(&first));
    let cell = Arc::new(std::sync::Mutex::new(None));
    let so_far = first
        .usage_metadata
        .as_ref()
        .map(crate::upstream::usage::from_gemini);
    let rest = events(messages, translator, place, so_far, cell.clone());

    let ttfb = ctx.started.elapsed();
    let mut record = ctx.record.clone();
    record.status = 200;
    record.ttfb_ms = Some(ttfb.as_secs_f64() * 1000.0);
    ctx.record.status = 200;
    let req = ctx.req;
    let gw = &req.generation.config().gateway;
    let body = relay::relay(
        pool.clone(),
        lease.share(),
        record,
        ctx.started,
        first_bytes,
        EventBuffer::new(),
        rest,
        ctx.req.conversion.reframe(created),
        gw.stream_idle_timeout,
        ctx.started + gw.request_timeout,
        Some(relay::UsageProbe::Cell(cell)),
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Step::Answer(
        response(StatusCode::OK, headers, Body::from_stream(body)),
        Some(ttfb),
    )
}

/// The rest of a stream's messages, as OpenAI chunk events; a gRPC error
/// mid-stream becomes a transport error for the relay to report. `place`
/// goes with the messages: freed when the stream ends, fails, or is
/// dropped unfinished (the client went away).
fn events(
    messages: Streaming<GenerateContentResponse>,
    translator: tr::StreamToOpenAi,
    place: InFlight,
    so_far: Option<crate::vocab::Usage>,
    usage: Arc<std::sync::Mutex<Option<crate::vocab::Usage>>>,
) -> relay::Upstream {
    let start = Some((messages, translator, place, so_far));
    futures_util::stream::unfold(start, move |state| {
        let usage = usage.clone();
        async move {
            let (mut messages, mut translator, place, so_far) = state?;
            match messages.message().await {
                Ok(Some(m)) => {
                    // Each message carries the counts so far; the last one's
                    // are the stream's.
                    let so_far = m
                        .usage_metadata
                        .as_ref()
                        .map(crate::upstream::usage::from_gemini)
                        .or(so_far);
                    let events = write_events(&translator.push(&m));
                    Some((Ok(events), Some((messages, translator, place, so_far))))
                }
                // Done now, whenever the relay lets go of this stream. Only a
                // stream that ends whole has final counts; a cut one's tokens
                // stay unknown.
                Ok(None) => {
                    *usage.lock().unwrap_or_else(|e| e.into_inner()) = so_far;
                    drop(messages);
                    drop(place);
                    Some((Ok(write_events(&translator.finish())), None))
                }
                Err(status) => Some((
                    Err(format!("gRPC {:?}: {}", status.code(), status.message())),
                    None,
                )),
            }
        }
    })
    .filter(|r| futures_util::future::ready(!matches!(r, Ok(b) if b.is_empty())))
    .boxed()
}

/// An API key goes in `x-goog-api-key`; an access token minted from a
/// refresh token is a bearer token.
fn authed<T>(message: T, lease: &Lease, token: &Secret) -> tonic::Request<T> {
    if lease.refreshes() {
        up::with_bearer(message, token)
    } else {
        up::with_key(message, token)
    }
}

fn timed_out(ctx: &Ctx<'_>, lease: &Lease, t0: Instant) -> Step {
    let what = format!(
        "no response within {}",
        human(ctx.req.generation.config().gateway.first_byte_timeout)
    );
    failed(ctx, lease, t0, StatusCode::GATEWAY_TIMEOUT, what)
}

/// A gRPC status instead of an answer: classified like an HTTP error.
async fn refused(ctx: &mut Ctx<'_>, lease: &Lease, t0: Instant, status: &tonic::Status) -> Step {
    let outcome = up::classify_status(status, lease.settings(), SystemTime::now());
    let http_status = match &outcome {
        Outcome::RateLimited { .. } | Outcome::QuotaExhausted { .. } => 429,
        Outcome::Unauthorized => 401,
        Outcome::PaymentRequired => 402,
        Outcome::ServerError { status } | Outcome::ClientError { status } => *status,
        Outcome::Overloaded => 503,
        Outcome::Ok { .. } => 200,
    };
    let message = format!("gRPC {:?}: {}", status.code(), status.message());
    let format = ctx.req.conversion.client;
    // Error-policy rules read the status's message as the body. A
    // `RESOURCE_EXHAUSTED` is taken as the key's own (its details name the
    // key's quota), never as a provider-wide 429.
    let body = status.message().as_bytes().to_vec();
    super::outcome::error_step(
        ctx,
        lease,
        t0,
        outcome,
        http_status,
        &body,
        true,
        move |s| ApiError::new(s, "invalid_request_error", message).into_response_as(format),
    )
    .await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sim::{Limit, SimConfig, SimHandle, start};

    /// A stream of `chunks` messages from the sim, its first message read,
    /// and the place it holds on `conns`.
    async fn opened(
        chunks: usize,
    ) -> (
        SimHandle,
        Connections,
        Streaming<GenerateContentResponse>,
        InFlight,
    ) {
        let mut cfg = SimConfig::with_api_keys(1, Limit::Unlimited);
        cfg.chunks = chunks;
        cfg.chunk_interval = Duration::from_millis(5);
        let sim = start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let conns = Connections::new(sim.gemini_url(), 1);
        let (mut client, place) = conns.acquire(Duration::from_secs(2)).await.unwrap();
        let body = json!({"messages": [{"role": "user", "content": "hello"}]});
        let request = tr::request_from_openai(&body, "sim-small").unwrap();
        let key = Secret::new("sk-sim-1");
        let mut messages = client
            .stream_generate_content(up::with_key(request, &key))
            .await
            .unwrap()
            .into_inner();
        messages.message().await.unwrap().expect("a first message");
        (sim, conns, messages, place)
    }

    #[tokio::test]
    async fn a_stream_dropped_mid_way_frees_its_place() {
        let (sim, conns, messages, place) = opened(1000).await;
        let mut rest = events(
            messages,
            tr::StreamToOpenAi::new("sim-small", 1),
            place,
            None,
            Default::default(),
        );
        rest.next().await.unwrap().unwrap();
        assert_eq!(conns.in_flight(), 1);
        drop(rest);
        assert_eq!(conns.in_flight(), 0);
        sim.shutdown().await;
    }

    /// Freed when the last message is in, not when the relay lets go.
    #[tokio::test]
    async fn a_finished_stream_frees_its_place_at_once() {
        let (sim, conns, messages, place) = opened(3).await;
        let mut rest = events(
            messages,
            tr::StreamToOpenAi::new("sim-small", 1),
            place,
            None,
            Default::default(),
        );
        let mut tail = String::new();
        while conns.in_flight() > 0 {
            let bytes = rest.next().await.expect("more until done").unwrap();
            tail = String::from_utf8_lossy(&bytes).into_owned();
        }
        assert!(tail.ends_with("data: [DONE]\n\n"), "{tail}");
        assert!(rest.next().await.is_none());
        sim.shutdown().await;
    }
}
