//! A client request as the dispatcher takes it: the body read within its
//! limits and checked (UTF-8, a JSON object, not nested too deep), the
//! model routed to a provider that serves the endpoint, and the body
//! converted when the formats differ.

use std::borrow::Cow;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use serde::Deserialize;

use super::error::{ApiError, Format};
use super::{AppState, affinity, convert, dispatch};
use crate::events::human;
use crate::upstream::Endpoint;

/// The fields the gateway itself needs; everything else in the body is
/// passed upstream untouched.
#[derive(Deserialize)]
struct ChatPeek<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    /// Session affinity's signals, read in the same pass (a field of
    /// another shape is left to the provider).
    #[serde(borrow, default)]
    prompt_cache_key: affinity::Lenient<'a>,
    #[serde(borrow, default)]
    metadata: affinity::Metadata<'a>,
}

async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("request body is larger than the gateway's limit of {max} bytes"),
        )
        .code("request_too_large")
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(too_large());
    }
    // A client that trickles its body (slow loris) holds a connection and
    // a concurrency place; it gets a bounded time to finish. A body that
    // came whole with its head (most do) is taken at once, with no timer.
    let deadline = tokio::time::Instant::now() + timeout;
    let mut body = body;
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    loop {
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => tokio::time::timeout_at(deadline, body.frame())
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "invalid_request_error",
                        format!(
                            "the request body did not arrive within {} (gateway.body_timeout)",
                            human(timeout)
                        ),
                    )
                    .code("body_timeout")
                })?,
        };
        let data = match frame {
            None => break,
            Some(Err(_)) => {
                return Err(ApiError::bad_request("could not read the request body")
                    .code("body_read_error"));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: nothing the gateway reads.
                Err(_) => continue,
            },
        };
        let held = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if held + data.len() > max {
            return Err(too_large());
        }
        match first.take() {
            None if rest.is_empty() => first = Some(data),
            None => rest.extend_from_slice(&data),
            Some(earlier) => {
                rest.extend_from_slice(&earlier);
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// A client API: the format it speaks and the provider endpoint it needs
/// (`Generate` follows the conversion: chat, messages or responses).
#[derive(Clone, Copy)]
pub(super) struct Api {
    pub(super) format: Format,
    pub(super) endpoint: Endpoint,
}

impl Api {
    /// `POST /v1/chat/completions`.
    pub(super) const CHAT: Api = Api::new(Format::OpenAi, Endpoint::Generate);
    /// `POST /v1/responses`.
    pub(super) const RESPONSES: Api = Api::new(Format::Responses, Endpoint::Generate);
    /// `POST /v1/embeddings`.
    pub(super) const EMBEDDINGS: Api = Api::new(Format::OpenAi, Endpoint::Embeddings);
    /// `POST /v1/messages`.
    pub(super) const MESSAGES: Api = Api::new(Format::Anthropic, Endpoint::Generate);
    /// `POST /v1/messages/count_tokens`.
    pub(super) const COUNT_TOKENS: Api = Api::new(Format::Anthropic, Endpoint::CountTokens);

    const fn new(format: Format, endpoint: Endpoint) -> Api {
        Api { format, endpoint }
    }
}

/// Deeper than this is hostile, not a chat request; serde_json's own limit
/// is 128, but skipping a field does not check it, so such a body would
/// otherwise go upstream on a credential's account.
const MAX_JSON_DEPTH: usize = 64;

/// Reads and checks a client request of `api`, routes its model, and
/// converts the body for the provider when the formats differ.
pub(super) async fn inbound(
    state: &AppState,
    headers: HeaderMap,
    body: Body,
    api: Api,
) -> Result<dispatch::Inbound, ApiError> {
    // The generation the request is routed in: its config decides the
    // limits, the provider and the conversion, even if a reload lands now.
    let generation = state.pool.current();
    let config = generation.config();
    let g = &config.gateway;
    let body = read_body(&headers, body, g.max_body, g.body_timeout).await?;
    // serde skips the fields it does not need without checking their UTF-8,
    // and would read a struct from a JSON array: check both here so nothing
    // malformed is sent upstream on a credential's account.
    if std::str::from_utf8(&body).is_err() {
        return Err(
            ApiError::bad_request("the request body is not valid UTF-8").code("invalid_json")
        );
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            ApiError::bad_request("the request body must be a JSON object").code("invalid_json"),
        );
    }
    if crate::json::nests_deeper_than(&body, MAX_JSON_DEPTH) {
        return Err(ApiError::bad_request(format!(
            "the request body nests JSON deeper than {MAX_JSON_DEPTH} levels"
        ))
        .code("invalid_json"));
    }
    let peek: ChatPeek<'_> = serde_json::from_slice(&body).map_err(|e| {
        let what = if e.is_data() {
            format!("invalid request body: {e}")
        } else {
            format!("the request body is not valid JSON: {e}")
        };
        ApiError::bad_request(what).code("invalid_json")
    })?;
    let Some(model) = peek.model.filter(|m| !m.is_empty()) else {
        return Err(ApiError::bad_request("you must provide a model parameter")
            .param("model")
            .code("missing_model"));
    };
    let Some(index) = config.route(&model) else {
        let shown: String = model.chars().take(100).collect();
        return Err(ApiError::not_found(format!(
            "the model `{shown}` is not served by this gateway"
        ))
        .param("model")
        .code("model_not_found"));
    };
    let provider = &config.providers[index];
    let session = affinity::session(
        &config.pool.affinity,
        &provider.name,
        &headers,
        peek.prompt_cache_key.text(),
        peek.metadata.user_id(),
        &body,
    );
    if !api.endpoint.served_by(provider.kind) {
        return Err(unsupported(api.endpoint, &model, provider));
    }
    // Ids of a translated Responses answer; drawn only where one is made.
    let seed = if api.format == Format::Responses {
        format!("{:024x}", rand::random::<u128>() >> 32)
    } else {
        String::new()
    };
    let (mut conversion, mut upstream_body) =
        convert::Conversion::prepare(api.format, provider, &body, &seed)?;
    let stream = endpoint_streams(api.endpoint) && peek.stream.unwrap_or(false);
    if stream
        && api.format == Format::OpenAi
        && provider.kind == crate::config::ProviderKind::OpenAi
        && conversion.passthrough()
        && let Some(asked) = conversion.ask_for_usage(&upstream_body)
    {
        upstream_body = asked;
    }
    let endpoint = match api.endpoint {
        Endpoint::Generate if conversion.upstream == Format::Responses => Endpoint::Responses,
        e => e,
    };
    Ok(dispatch::Inbound {
        model: model.into_owned(),
        // Only generation streams; a `stream` field elsewhere means nothing.
        stream: endpoint_streams(endpoint) && peek.stream.unwrap_or(false),
        body: upstream_body,
        conversion,
        endpoint,
        provider: index,
        session,
        // The gate let it in: its key (if keys are set) is one of these.
        client: super::gate::presented_key(&headers).and_then(|k| {
            config
                .client_keys
                .iter()
                .find(|s| s.matches(k))
                .map(|s| s.masked())
        }),
        headers,
        generation: generation.clone(),
    })
}

fn endpoint_streams(e: Endpoint) -> bool {
    matches!(e, Endpoint::Generate | Endpoint::Responses)
}

/// A model whose provider has no such endpoint: a 400 that says which
/// providers do.
fn unsupported(endpoint: Endpoint, model: &str, provider: &crate::config::Provider) -> ApiError {
    let (what, who) = match endpoint {
        Endpoint::CountTokens => ("token counting", "Anthropic providers"),
        Endpoint::Embeddings => ("embeddings", "OpenAI-kind providers"),
        Endpoint::Generate | Endpoint::Responses => ("this endpoint", "other providers"),
    };
    let shown: String = model.chars().take(100).collect();
    ApiError::bad_request(format!(
        "{what} is served by {who} only; the model `{shown}` routes to provider `{}` (kind = \"{}\")",
        provider.name,
        provider.kind.as_str()
    ))
    .param("model")
    .code("unsupported_endpoint")
}
