//! Talking to providers: one adapter per provider kind, and the
//! classification of every response into an [`Outcome`] the pool can act on.

pub mod anthropic;
pub mod capacity;
pub mod gemini;
pub mod hints;
pub mod openai;
#[cfg(test)]
mod test_support;
pub mod usage;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

pub use crate::client::{client_builder, describe_error, env_proxies, http_client};
use crate::config::{PoolSettings, Provider, ProviderKind};
use crate::events::human;
use crate::secret::Secret;
use crate::transport::Transport;
use crate::vocab::Verdict;

/// What one upstream response means for the request and for the key.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx. `hold`: a limit hit zero on this very response; keep the key
    /// out until it resets.
    Ok { hold: Option<hints::Hint> },
    /// Rate limited: cool down for `wait`, try the next credential.
    RateLimited { wait: Duration, hinted: bool },
    /// Quota gone: a long cooldown.
    QuotaExhausted { wait: Duration, hinted: bool },
    /// The key (or access token) was refused.
    Unauthorized,
    /// The provider's fault (5xx, 408): count a failure, try the next one.
    ServerError { status: u16 },
    /// The provider as a whole is overloaded (Anthropic's 529): try another
    /// credential after a short pause, without blaming this one.
    Overloaded,
    /// 402: the provider wants paying for this credential's account. No
    /// wait fixes that; the credential is disabled until an operator
    /// enables it, and the request moves on.
    PaymentRequired,
    /// Any other 4xx: the request's fault, handed to the client as is.
    ClientError { status: u16 },
}

impl Outcome {
    /// What the outcome says about the key, for the pool.
    pub fn verdict(&self) -> Verdict {
        match self {
            Outcome::Ok { hold } => Verdict::Success {
                hold: hold.map(|h| {
                    (
                        h.wait,
                        format!("{} hit 0; held until reset", remaining_header(h.source)),
                    )
                }),
            },
            Outcome::RateLimited { wait, hinted } => Verdict::RateLimited {
                // The gateway, which has the headers, says when it is not.
                own: true,
                wait: *wait,
                reason: if *hinted {
                    format!("429 rate limited; retry in {}", human(*wait))
                } else {
                    format!("429 without retry hint; default cooldown {}", human(*wait))
                },
            },
            Outcome::QuotaExhausted { wait, hinted } => Verdict::QuotaExhausted {
                wait: *wait,
                reason: if *hinted {
                    format!("quota exhausted; retry in {}", human(*wait))
                } else {
                    format!("quota exhausted; quota cooldown {}", human(*wait))
                },
            },
            Outcome::Unauthorized => Verdict::Unauthorized {
                reason: "401 unauthorized: the provider refused this credential".into(),
            },
            Outcome::ServerError { status } => Verdict::Failure {
                reason: format!("upstream answered {status}"),
            },
            Outcome::PaymentRequired => Verdict::Disabled {
                reason: "402 payment required: the provider wants paying for this account; \
                         enable it again once that is settled"
                    .into(),
            },
            Outcome::ClientError { .. } | Outcome::Overloaded => Verdict::Neutral,
        }
    }
}

fn remaining_header(source: hints::HintSource) -> &'static str {
    match source {
        hints::HintSource::ResetTokens => "x-ratelimit-remaining-tokens",
        hints::HintSource::AnthropicReset => "anthropic-ratelimit-requests-remaining",
        _ => "x-ratelimit-remaining-requests",
    }
}

/// Request headers a client sent that are never forwarded: hop-by-hop
/// headers, the client's own credentials, and headers that bind the request
/// to an account other than the credential's.
const DROP_REQUEST: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "accept-encoding",
    "openai-organization",
    "openai-project",
    "x-admin-key",
];

/// Whether a client request header goes upstream.
pub fn forward_request_header(name: &str) -> bool {
    !DROP_REQUEST.contains(&name) && !name.starts_with("x-tokenyard-")
}

/// The headers a JSON request upstream starts with: the client's that may
/// be forwarded, and `content-type: application/json`. The adapter adds
/// its own auth.
pub fn upstream_headers(client_headers: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(client_headers.len() + 3);
    for (name, value) in client_headers {
        if forward_request_header(name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers
}

/// Whether an upstream response header goes back to the client. The
/// per-credential `x-ratelimit-*` numbers describe one key of the pool, not
/// the gateway, so they stay here; so do cookies and account identifiers.
pub fn forward_response_header(name: &str) -> bool {
    !(matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "upgrade"
            | "trailer"
            | "set-cookie"
            | "openai-organization"
            | "openai-project"
            | "retry-after"
            | "retry-after-ms"
            | "alt-svc"
    ) || name.starts_with("x-ratelimit-")
        || name.starts_with("anthropic-ratelimit-"))
}

/// Which of a provider's APIs a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The provider's generation call: Chat Completions (OpenAI kind) or
    /// Messages (Anthropic), in whatever format the conversion chose.
    Generate,
    /// OpenAI's Responses API, forwarded as the client sent it
    /// (`responses = "native"`).
    Responses,
    /// OpenAI's embeddings.
    Embeddings,
    /// Anthropic's token counting.
    CountTokens,
}

impl Endpoint {
    /// The path after a provider's `base_url`, or `None` for the parsed
    /// generation URL the provider keeps (`Provider::chat_url`).
    fn path(self) -> Option<&'static str> {
        match self {
            Endpoint::Generate => None,
            Endpoint::Responses => Some("responses"),
            Endpoint::Embeddings => Some("embeddings"),
            Endpoint::CountTokens => Some("messages/count_tokens"),
        }
    }

    /// Whether a provider of `kind` has this endpoint.
    pub fn served_by(self, kind: ProviderKind) -> bool {
        match self {
            Endpoint::Generate => true,
            Endpoint::Responses | Endpoint::Embeddings => kind == ProviderKind::OpenAi,
            Endpoint::CountTokens => kind == ProviderKind::Anthropic,
        }
    }
}

/// Where a `POST` to `endpoint` of an HTTP provider goes (the parsed chat
/// URL when there is one).
fn post_url(provider: &Provider, endpoint: Endpoint) -> Result<http::Uri, SendError> {
    match (endpoint.path(), &provider.chat_url) {
        (None, Some(u)) => Ok(u.clone()),
        (None, None) => provider.base_url.parse().map_err(|_| SendError::BadUrl),
        (Some(path), _) => format!("{}/{path}", provider.base_url)
            .parse()
            .map_err(|_| SendError::BadUrl),
    }
}

/// Why a request to a provider got no response head.
#[derive(Debug)]
pub enum SendError {
    /// The provider's URL for this endpoint is not a URL.
    BadUrl,
    Transport(crate::transport::SendError),
}

impl SendError {
    /// Without the URL or anything else configured.
    pub fn describe(&self) -> String {
        match self {
            SendError::BadUrl => {
                "the provider's base_url does not make a URL for this endpoint".into()
            }
            SendError::Transport(e) => e.describe(),
        }
    }
}

/// Sends a request (already in the provider's format) with `token` to
/// `endpoint` of an HTTP provider. `bearer`: the token is an access token
/// minted from a refresh token (Anthropic takes those as `Authorization:
/// Bearer`, static keys as `x-api-key`). Resolves when the response head
/// arrives.
pub async fn send(
    http: &Transport,
    provider: &Provider,
    endpoint: Endpoint,
    token: &Secret,
    bearer: bool,
    body: Bytes,
    client_headers: &HeaderMap,
) -> Result<http::Response<crate::transport::Body>, SendError> {
    let url = post_url(provider, endpoint)?;
    let mut headers = upstream_headers(client_headers);
    match provider.kind {
        ProviderKind::Anthropic => {
            let auth = if bearer {
                anthropic::Auth::Bearer
            } else {
                anthropic::Auth::ApiKey
            };
            anthropic::auth_headers(&mut headers, token, auth);
        }
        ProviderKind::OpenAi | ProviderKind::Gemini => openai::auth_headers(&mut headers, token),
    }
    http.post(&url, headers, body)
        .await
        .map_err(SendError::Transport)
}

/// Classifies a response. `body` is needed only for non-2xx statuses.
pub fn classify(
    kind: ProviderKind,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    settings: &PoolSettings,
    now: SystemTime,
) -> Outcome {
    match kind {
        ProviderKind::Anthropic => anthropic::classify(status, headers, settings, now),
        ProviderKind::OpenAi | ProviderKind::Gemini => {
            openai::classify(status, headers, body, settings, now)
        }
    }
}

/// The half-open probe: one cheap authenticated request. `Ok` when the
/// credential works again.
pub async fn probe(
    http: &reqwest::Client,
    provider: &Provider,
    token: &Secret,
    bearer: bool,
    timeout: Duration,
) -> Result<(), String> {
    let fut = async {
        match provider.kind {
            ProviderKind::Anthropic => {
                let auth = if bearer {
                    anthropic::Auth::Bearer
                } else {
                    anthropic::Auth::ApiKey
                };
                anthropic::probe(http, provider, token, auth).await
            }
            ProviderKind::Gemini => gemini_probe(http, provider, token).await,
            ProviderKind::OpenAi => openai::probe(http, provider, token).await,
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("probe: no answer within {}", human(timeout))),
    }
}

/// [`probe`], boxed: the shape the pool takes it in (`pool::Prober`), so
/// the pool can probe without depending on the adapters.
pub fn probe_boxed<'a>(
    http: &'a reqwest::Client,
    provider: &'a Provider,
    token: &'a Secret,
    bearer: bool,
    timeout: Duration,
) -> futures_util::future::BoxFuture<'a, Result<(), String>> {
    Box::pin(probe(http, provider, token, bearer, timeout))
}

/// Gemini's REST model list, `GET {base}/v1beta/models`: authenticated and
/// free, where the gRPC service has no call that spends nothing.
async fn gemini_probe(
    http: &reqwest::Client,
    provider: &Provider,
    token: &Secret,
) -> Result<(), String> {
    let mut key = http::HeaderValue::from_str(token.expose())
        .map_err(|_| "probe: the key is not a valid header value".to_string())?;
    key.set_sensitive(true);
    let resp = http
        .get(format!("{}/v1beta/models", provider.base_url))
        .header("x-goog-api-key", key)
        .send()
        .await
        .map_err(|e| format!("probe: {}", describe_error(&e)))?;
    match resp.status() {
        s if s.is_success() => Ok(()),
        s => Err(format!("probe: GET /v1beta/models answered {}", s.as_u16())),
    }
}
