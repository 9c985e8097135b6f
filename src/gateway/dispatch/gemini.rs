//! One attempt on a Gemini provider, over gRPC. The request arrives in
//! OpenAI's shape (see `convert`) and becomes a `GenerateContentRequest`;
//! the answer becomes OpenAI's shapes again — a chat completion, or chunk
//! events for the relay — so the rest of the dispatcher, and the client's
//! own conversion, work as for any HTTP provider.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::StreamExt;
use tonic::transport::Channel;

use super::*;
use crate::gemini::v1beta::GenerateContentRequest;
use crate::gemini::v1beta::generative_service_client::GenerativeServiceClient;
use crate::translate::{gemini as tr, write_events};
use crate::upstream::gemini as up;

type Client = GenerativeServiceClient<Channel>;

/// One gRPC channel per Gemini provider address, made on first use and
/// shared by every request after it (a channel multiplexes HTTP/2
/// streams). Keyed by `base_url`, not by the provider's position, so a
/// reload that reorders providers cannot hand a request another's channel.
#[derive(Default)]
pub struct GeminiClients {
    clients: Mutex<HashMap<String, Client>>,
}

impl GeminiClients {
    async fn get(&self, base_url: &str, connect: Duration) -> Result<Client, String> {
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(base_url)
        {
            return Ok(c.clone());
        }
        let client = up::connect(base_url, connect).await?;
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(base_url.to_string(), client.clone());
        Ok(client)
    }

    /// After a reload: drops the channels of addresses no provider uses
    /// any more (requests still holding one keep it until they end).
    pub fn retain(&self, providers: &[crate::config::Provider]) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|url, _| providers.iter().any(|p| &p.base_url == url));
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
    let client = match state
        .gemini
        .get(&provider.base_url, gw.connect_timeout)
        .await
    {
        Ok(c) => c,
        Err(e) => return failed(ctx, lease, t0, StatusCode::BAD_GATEWAY, e),
    };

    if ctx.req.stream {
        stream(ctx, lease, token, client, request, deadline, created).await
    } else {
        unary(ctx, lease, token, client, request, deadline, created).await
    }
}

async fn unary(
    ctx: &mut Ctx<'_>,
    lease: &Lease,
    token: &Secret,
    mut client: Client,
    request: GenerateContentRequest,
    deadline: Instant,
    created: u64,
) -> Step {
    let t0 = Instant::now();
    let call = client.generate_content(authed(request, lease, token));
    let answer = match tokio::time::timeout_at(deadline, call).await {
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
    let openai = tr::response_to_openai(&answer, &ctx.req.model, created);
    let body = Bytes::from(serde_json::to_vec(&openai).expect("json"));
    let body = match ctx.req.conversion.response(body, created) {
        Ok(b) => b,
        Err(what) => return failed(ctx, lease, t0, StatusCode::BAD_GATEWAY, what),
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

#[allow(clippy::too_many_arguments)]
async fn stream(
    ctx: &mut Ctx<'_>,
    lease: &Lease,
    token: &Secret,
    mut client: Client,
    request: GenerateContentRequest,
    deadline: Instant,
    created: u64,
) -> Step {
    let t0 = Instant::now();
    let call = client.stream_generate_content(authed(request, lease, token));
    let mut messages = match tokio::time::timeout_at(deadline, call).await {
        Ok(Ok(resp)) => resp.into_inner(),
        Ok(Err(status)) => return refused(ctx, lease, t0, &status).await,
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
        Ok(Err(status)) => return refused(ctx, lease, t0, &status).await,
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
    // The rest of the messages, as OpenAI chunk events; a gRPC error
    // mid-stream becomes a transport error for the relay to report.
    let rest = futures_util::stream::unfold(
        (messages, translator, false),
        |(mut messages, mut translator, over)| async move {
            if over {
                return None;
            }
            match messages.message().await {
                Ok(Some(m)) => Some((
                    Ok(write_events(&translator.push(&m))),
                    (messages, translator, false),
                )),
                Ok(None) => {
                    let tail = write_events(&translator.finish());
                    Some((Ok(tail), (messages, translator, true)))
                }
                Err(status) => Some((
                    Err(format!("gRPC {:?}: {}", status.code(), status.message())),
                    (messages, translator, true),
                )),
            }
        },
    )
    .filter(|r| futures_util::future::ready(!matches!(r, Ok(b) if b.is_empty())))
    .boxed();

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
        Outcome::ServerError { status } | Outcome::ClientError { status } => *status,
        Outcome::Overloaded => 503,
        Outcome::Ok { .. } => 200,
    };
    let message = format!("gRPC {:?}: {}", status.code(), status.message());
    let format = ctx.req.conversion.client;
    outcome_step(ctx, lease, t0, outcome, http_status, move |s| {
        ApiError::new(s, "invalid_request_error", message).into_response_as(format)
    })
    .await
}
