//! Talking to providers: one adapter per provider kind, and the
//! classification of every response into an [`Outcome`] the pool can act on.

pub mod anthropic;
pub mod gemini;
pub mod hints;
pub mod openai;
#[cfg(test)]
mod test_support;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::config::{GatewaySettings, PoolSettings, Provider, ProviderKind};
use crate::events::human;
use crate::pool::Verdict;
use crate::secret::Secret;

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

/// A client builder with the environment's proxies, none of them for
/// loopback ([`env_proxies`]): every HTTP client tokenyard makes starts
/// here (providers, `attach`, the traffic generator).
pub fn client_builder() -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder().no_proxy();
    for proxy in env_proxies(&|k| std::env::var(k).ok()) {
        builder = builder.proxy(proxy);
    }
    builder
}

/// Builds the shared HTTP client for every provider: keep-alive pools,
/// TCP_NODELAY, redirects refused, and no automatic decompression (bytes
/// pass through as sent). Proxies come from the environment, as an
/// operator behind an egress proxy expects, but never for loopback (see
/// [`env_proxies`]).
///
/// HTTP/1.1 only, one connection per request in flight. Over HTTP/2 every
/// request to a host shares one connection, and hyper never opens a second:
/// past the server's `SETTINGS_MAX_CONCURRENT_STREAMS` (100–256 at the big
/// providers' front ends) further requests wait, with no error, for an
/// earlier stream to end — minutes, for LLM streams. `tests/upstream_http1.rs`
/// holds that line.
pub fn http_client(settings: &GatewaySettings) -> reqwest::Client {
    client_builder()
        .http1_only()
        .connect_timeout(settings.connect_timeout)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        // A provider that redirects is misconfigured; following would send
        // the credential somewhere nobody chose.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tokenyard/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client settings are static and valid")
}

/// `HTTPS_PROXY`, `HTTP_PROXY` and `ALL_PROXY` (or their lower-case
/// forms) with `NO_PROXY`, as curl reads them — plus loopback, always: a
/// provider on this machine (the demo's sim, a local model server) is
/// reached directly, where a proxy would refuse it or see its key. A proxy
/// URL that does not parse is skipped with a warning that names the
/// variable, never its value (it may hold a password).
pub fn env_proxies(env: &dyn Fn(&str) -> Option<String>) -> Vec<reqwest::Proxy> {
    let get = |name: &str| {
        env(name)
            .or_else(|| env(&name.to_ascii_lowercase()))
            .filter(|v| !v.trim().is_empty())
    };
    let bypass = format!(
        "{},localhost,127.0.0.0/8,::1",
        get("NO_PROXY").unwrap_or_default()
    );
    let mut proxies = Vec::new();
    for name in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"] {
        let Some(url) = get(name) else {
            continue;
        };
        let made = match name {
            "HTTPS_PROXY" => reqwest::Proxy::https(url.as_str()),
            "HTTP_PROXY" => reqwest::Proxy::http(url.as_str()),
            _ => reqwest::Proxy::all(url.as_str()),
        };
        match made {
            Ok(p) => proxies.push(p.no_proxy(reqwest::NoProxy::from_string(&bypass))),
            Err(_) => tracing::warn!("{name} is not a proxy URL; requests go without it"),
        }
    }
    proxies
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

/// A `POST` to `endpoint` of an HTTP provider (the parsed chat URL when
/// there is one).
fn post(
    http: &reqwest::Client,
    provider: &Provider,
    endpoint: Endpoint,
) -> reqwest::RequestBuilder {
    match (endpoint.path(), &provider.chat_url) {
        (None, Some(u)) => http.post(u.clone()),
        (None, None) => http.post(provider.base_url.as_str()),
        (Some(path), _) => http.post(format!("{}/{path}", provider.base_url)),
    }
}

/// Sends a request (already in the provider's format) with `token` to
/// `endpoint` of an HTTP provider. `bearer`: the token is an access token
/// minted from a refresh token (Anthropic takes those as `Authorization:
/// Bearer`, static keys as `x-api-key`). Resolves when the response head
/// arrives.
pub async fn send(
    http: &reqwest::Client,
    provider: &Provider,
    endpoint: Endpoint,
    token: &Secret,
    bearer: bool,
    body: Bytes,
    client_headers: &HeaderMap,
) -> Result<reqwest::Response, reqwest::Error> {
    let request = post(http, provider, endpoint);
    match provider.kind {
        ProviderKind::Anthropic => {
            let auth = if bearer {
                anthropic::Auth::Bearer
            } else {
                anthropic::Auth::ApiKey
            };
            anthropic::send(request, token, auth, body, client_headers).await
        }
        ProviderKind::OpenAi | ProviderKind::Gemini => {
            openai::send(request, token, body, client_headers).await
        }
    }
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

/// Describes a transport error without leaking anything: reqwest's own
/// text includes the URL, which is configuration, not a secret.
pub fn describe_error(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "connection broke while reading the response"
    } else if e.is_request() {
        "request failed"
    } else {
        "transport error"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut root = None;
    while let Some(s) = source {
        root = Some(s.to_string());
        source = s.source();
    }
    match root {
        Some(r) => format!("{what}: {r}"),
        None => what.to_string(),
    }
}
