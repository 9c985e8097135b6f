//! The HTTP surface: OpenAI-compatible routes, client authentication, the
//! admin API, and serving with a graceful drain.

mod admin;
pub mod convert;
pub mod dispatch;
pub mod error;
pub mod relay;
pub mod reload;
mod serve;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::error::{ApiError, Format};
pub use self::reload::{ReloadError, ReloadFrom};
use crate::config::Config;
use crate::events::{Level, human};
use crate::pool::{PoolHandle, ReloadSummary};
use crate::upstream::Endpoint;

/// What every handler needs.
pub struct AppState {
    /// The pool, and through its current generation the config: both
    /// change together on a reload (see [`AppState::config`]).
    pub pool: PoolHandle,
    /// The gateway's shutdown root. Long-lived responses (the admin event
    /// stream) end when it fires: a graceful drain waits for every open
    /// response, and an endless one would hold it until the grace ran out.
    pub shutdown: CancellationToken,
    /// gRPC connections to Gemini providers, opened as requests need them.
    pub gemini: dispatch::GeminiClients,
    /// The HTTP providers' client (`gateway.connect_timeout` as the config
    /// had it at start).
    pub transport: crate::transport::Transport,
    /// Client requests in flight (`gateway.max_concurrency`), made on first
    /// use from the config.
    pub in_flight: std::sync::OnceLock<Arc<tokio::sync::Semaphore>>,
    /// Where a reload reads the config from; `None` when the gateway was
    /// started from a config in memory (the demo, most tests).
    pub reload: Option<reload::Reloader>,
}

impl AppState {
    /// The state for a gateway over `pool`, without a config file to
    /// reload from.
    pub fn new(pool: PoolHandle, shutdown: CancellationToken) -> AppState {
        // The gateway is where the pool meets the upstream adapters: the
        // half-open probe's request is theirs.
        pool.set_prober(crate::upstream::probe_boxed);
        // And the shared store (used with `[state] backend = "redis"`),
        // which the pool takes when it starts: build this state first.
        pool.set_store_connector(crate::shared::connect_boxed);
        let transport = crate::transport::Transport::new(&pool.config().gateway);
        AppState {
            transport,
            pool,
            shutdown,
            gemini: Default::default(),
            in_flight: Default::default(),
            reload: None,
        }
    }

    /// The config in effect now. Take it once per request (or per piece of
    /// work): a reload may replace it at any moment.
    pub fn config(&self) -> Arc<Config> {
        self.pool.config()
    }
}

/// The whole HTTP surface, without sockets (tests drive it with `oneshot`).
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/responses", post(responses))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/models", get(models))
        .route("/v1/models/{model}", get(model))
        // One layer, not three: its future is boxed once per request.
        .route_layer(middleware::from_fn_with_state(state.clone(), v1_gate));
    let admin =
        admin::routes().route_layer(middleware::from_fn_with_state(state.clone(), admin::guard));
    Router::new()
        .merge(v1)
        .merge(admin)
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_limits,
        ))
        .with_state(state)
}

async fn not_found(uri: http::Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::not_found(format!("no route for {path}")).code("unknown_url")
}

async fn method_not_allowed(method: http::Method, uri: http::Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!("{method} is not allowed on {path}"),
    )
    .code("method_not_allowed")
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let snap = state.pool.snapshot();
    let ready = snap.count(crate::events::State::Ready);
    axum::Json(serde_json::json!({
        "status": "ok",
        "credentials": snap.credentials.len(),
        "ready": ready,
    }))
    .into_response()
}

/// The key a client presented: `Authorization: Bearer …` or `x-api-key`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        if let Some(prefix) = v.get(..7)
            && prefix.eq_ignore_ascii_case("bearer ")
            && !v[7..].trim().is_empty()
        {
            return Some(v[7..].trim());
        }
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The format a client of `path` speaks, for the errors it gets before a
/// handler runs.
fn format_of(path: &str) -> Format {
    if path.starts_with("/v1/messages") {
        Format::Anthropic
    } else if path.starts_with("/v1/responses") {
        Format::Responses
    } else {
        Format::OpenAi
    }
}

/// Oversized request lines and headers are refused before anything reads
/// them: 414 and 431, in the client's format.
async fn request_limits(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let config = state.config();
    let g = &config.gateway;
    let format = format_of(req.uri().path());
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > g.max_uri_bytes {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "invalid_request_error",
            format!("the request URL is longer than {} bytes", g.max_uri_bytes),
        )
        .code("uri_too_long")
        .into_response_as(format);
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > g.max_header_bytes {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request_error",
            format!(
                "the request headers are larger than {} bytes",
                g.max_header_bytes
            ),
        )
        .code("headers_too_large")
        .into_response_as(format);
    }
    next.run(req).await
}

/// In front of every `/v1/*` route: the client key (when any is
/// configured), then load shedding — beyond `gateway.max_concurrency`
/// client requests in flight (streams count until they end), the next one
/// gets 503 with `Retry-After` at once instead of waiting in an unbounded
/// queue.
async fn v1_gate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let config = state.config();
    let keys = &config.client_keys;
    if !keys.is_empty() {
        let refusal = match presented_key(req.headers()) {
            Some(k) if keys.iter().any(|s| s.matches(k)) => None,
            Some(_) => Some("the API key is not one of this gateway's client keys"),
            None => Some("missing API key: send Authorization: Bearer <key> (or x-api-key)"),
        };
        if let Some(why) = refusal {
            return ApiError::unauthorized(why).into_response_as(format_of(req.uri().path()));
        }
    }
    // Fixed at start (a reload reports a new value as needing a restart).
    let limit = config.gateway.max_concurrency as usize;
    drop(config);
    let sem = state
        .in_flight
        .get_or_init(|| Arc::new(tokio::sync::Semaphore::new(limit)));
    let Ok(permit) = sem.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            format!(
                "the gateway is at its limit of {limit} requests in flight (gateway.max_concurrency); retry shortly"
            ),
        )
        .code("overloaded")
        .retry_after(1)
        .into_response_as(format_of(req.uri().path()));
    };
    let resp = next.run(req).await;
    // A whole body is already in memory: the request's work is done, and
    // the response keeps its content-length. A stream holds its place
    // until it ends: the permit lives as long as its body.
    if axum::body::HttpBody::size_hint(resp.body())
        .exact()
        .is_some()
    {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let body = Body::from_stream(futures_util::StreamExt::map(
        body.into_data_stream(),
        move |chunk| {
            let _held = &permit;
            chunk
        },
    ));
    Response::from_parts(parts, body)
}

/// The fields the gateway itself needs; everything else in the body is
/// passed upstream untouched.
#[derive(Deserialize)]
struct ChatPeek<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
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
    // a concurrency place; it gets a bounded time to finish.
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, max))
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
        })?;
    read.map_err(|e| {
        let is_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if is_limit {
            too_large()
        } else {
            ApiError::bad_request("could not read the request body").code("body_read_error")
        }
    })
}

/// A client API: the format it speaks and the provider endpoint it needs
/// (`Generate` follows the conversion: chat, messages or responses).
#[derive(Clone, Copy)]
struct Api {
    format: Format,
    endpoint: Endpoint,
}

/// Reads, routes and dispatches one request of `api`; every error is in
/// the client's format.
async fn serve_api(state: &AppState, headers: HeaderMap, body: Body, api: Api) -> Response {
    match inbound(state, headers, body, api).await {
        Ok(req) => dispatch::dispatch(state, req).await,
        Err(e) => e.into_response_as(api.format),
    }
}

/// `POST /v1/chat/completions`: OpenAI's Chat Completions.
async fn chat(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let api = Api {
        format: Format::OpenAi,
        endpoint: Endpoint::Generate,
    };
    serve_api(&state, headers, body, api).await
}

/// `POST /v1/responses`: OpenAI's Responses API (Codex CLI, the Agents
/// SDK), translated to the provider's format or forwarded as is.
async fn responses(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let api = Api {
        format: Format::Responses,
        endpoint: Endpoint::Generate,
    };
    serve_api(&state, headers, body, api).await
}

/// `POST /v1/embeddings`: OpenAI's embeddings, on OpenAI-kind providers.
async fn embeddings(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let api = Api {
        format: Format::OpenAi,
        endpoint: Endpoint::Embeddings,
    };
    serve_api(&state, headers, body, api).await
}

/// `POST /v1/messages`: Anthropic's Messages API.
async fn messages(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let api = Api {
        format: Format::Anthropic,
        endpoint: Endpoint::Generate,
    };
    serve_api(&state, headers, body, api).await
}

/// `POST /v1/messages/count_tokens`: Anthropic's token counting, on
/// Anthropic providers.
async fn count_tokens(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let api = Api {
        format: Format::Anthropic,
        endpoint: Endpoint::CountTokens,
    };
    serve_api(&state, headers, body, api).await
}

/// Deeper than this is hostile, not a chat request; serde_json's own limit
/// is 128, but skipping a field does not check it, so such a body would
/// otherwise go upstream on a credential's account.
const MAX_JSON_DEPTH: usize = 64;

/// Whether `body` opens more than `limit` arrays/objects at once (strings,
/// escapes included, are skipped). One pass, no allocation.
fn nesting_exceeds(body: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Reads and checks a client request of `api`, routes its model, and
/// converts the body for the provider when the formats differ.
async fn inbound(
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
    if nesting_exceeds(&body, MAX_JSON_DEPTH) {
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
    if !api.endpoint.served_by(provider.kind) {
        return Err(unsupported(api.endpoint, &model, provider));
    }
    // Ids of a translated Responses answer; drawn only where one is made.
    let seed = if api.format == Format::Responses {
        format!("{:024x}", rand::random::<u128>() >> 32)
    } else {
        String::new()
    };
    let (conversion, upstream_body) =
        convert::Conversion::prepare(api.format, provider, &body, &seed)?;
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
        headers,
        provider: index,
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

/// Whether the client of `headers` is an Anthropic one (its SDKs always
/// send `anthropic-version`), which reads the model list in Anthropic's
/// shape.
fn anthropic_client(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

/// The models the gateway lists: every literal model name (globs serve
/// models but name none), first provider first, each once.
fn listed_models(config: &Config) -> Vec<(&str, &str)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for p in &config.providers {
        for m in &p.models {
            if m.contains(['*', '?']) || !seen.insert(m.as_str()) {
                continue;
            }
            out.push((m.as_str(), p.name.as_str()));
        }
    }
    out
}

fn model_entry(id: &str, owner: &str, anthropic: bool) -> serde_json::Value {
    if anthropic {
        serde_json::json!({
            "type": "model",
            "id": id,
            "display_name": id,
            "created_at": "1970-01-01T00:00:00Z",
        })
    } else {
        serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": owner})
    }
}

/// `GET /v1/models`, in OpenAI's shape or, for an Anthropic client,
/// Anthropic's (one page, `has_more: false`).
async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let config = state.config();
    let anthropic = anthropic_client(&headers);
    let listed = listed_models(&config);
    let data: Vec<_> = listed
        .iter()
        .map(|(id, owner)| model_entry(id, owner, anthropic))
        .collect();
    let body = if anthropic {
        serde_json::json!({
            "data": data,
            "has_more": false,
            "first_id": listed.first().map(|m| m.0),
            "last_id": listed.last().map(|m| m.0),
        })
    } else {
        serde_json::json!({ "object": "list", "data": data })
    };
    axum::Json(body).into_response()
}

/// `GET /v1/models/{model}`: any model the gateway routes (a glob's too),
/// in the client's shape; 404 in its error shape otherwise.
async fn model(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let config = state.config();
    let anthropic = anthropic_client(&headers);
    match config.route(&id) {
        Some(p) => {
            axum::Json(model_entry(&id, &config.providers[p].name, anthropic)).into_response()
        }
        None => {
            let shown: String = id.chars().take(100).collect();
            let format = if anthropic {
                Format::Anthropic
            } else {
                Format::OpenAi
            };
            ApiError::not_found(format!("the model `{shown}` is not served by this gateway"))
                .code("model_not_found")
                .into_response_as(format)
        }
    }
}

/// Whether the request came from this machine. An IPv4 client of a
/// dual-stack listener arrives as `::ffff:127.0.0.1`, which counts too.
/// (`MockConnectInfo` stands in for the socket in tests without one.)
fn from_loopback(req: &Request) -> bool {
    let ext = req.extensions();
    let peer = ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| *a)
        .or_else(|| {
            ext.get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>()
                .map(|m| m.0)
        });
    peer.is_some_and(|a| a.ip().to_canonical().is_loopback())
}

/// A gateway running on a socket.
pub struct Running {
    pub addr: SocketAddr,
    pub pool: PoolHandle,
    /// Cancel to stop accepting, drain and save.
    pub shutdown: CancellationToken,
    /// What restoring the state file found, for the startup report.
    pub notes: Vec<String>,
    state: Arc<AppState>,
    task: JoinHandle<()>,
}

impl Running {
    /// Waits until the gateway has drained and saved its state.
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Stops accepting, drains in-flight requests (up to the grace period),
    /// saves state.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Reloads the config file (as SIGHUP does); `trigger` names the cause
    /// in the notice.
    pub async fn reload(&self, trigger: &str) -> Result<ReloadSummary, ReloadError> {
        reload::reload(&self.state, trigger).await
    }

    /// A handle that reloads this gateway's config, for a task that
    /// outlives the borrow (the SIGHUP listener).
    pub fn reloader(&self) -> ReloadHandle {
        ReloadHandle {
            state: self.state.clone(),
        }
    }
}

/// Reloads one gateway's config; see [`Running::reloader`].
#[derive(Clone)]
pub struct ReloadHandle {
    state: Arc<AppState>,
}

impl ReloadHandle {
    pub async fn reload(&self, trigger: &str) -> Result<ReloadSummary, ReloadError> {
        reload::reload(&self.state, trigger).await
    }
}

/// Connections the kernel completes and queues for `accept` before it
/// drops new SYNs. tokio's default, 1,024, overflows when a burst of
/// clients connects while the accept loop is busy (the gateway bench opens
/// 5,000 streams in a second); a dropped SYN costs its client a one-second
/// retransmit. Linux caps this at `net.core.somaxconn` (4,096 by default).
pub const ACCEPT_BACKLOG: u32 = 8192;

/// Listens on `addr` with [`ACCEPT_BACKLOG`] (and `SO_REUSEADDR`, so a
/// restart does not wait out the old socket's `TIME_WAIT`).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Starts the pool and serves the gateway on `listener` until `shutdown`,
/// with no config file to reload from.
pub fn start(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    start_with(config, listener, shutdown, None)
}

/// Like [`start`]; with `from`, the config can be reloaded from that file
/// (`POST /admin/reload`, [`Running::reload`], and the file watcher when
/// asked for).
pub fn start_with(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    from: Option<ReloadFrom>,
) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let http = crate::upstream::http_client(&config.gateway);
    let (pool, notes) = PoolHandle::new(&config, http);
    // Before the pool starts: this hands it the probe and the shared
    // store's connector.
    let mut app_state = AppState::new(pool.clone(), shutdown.clone());
    let pool_stop = CancellationToken::new();
    pool.start(pool_stop.clone());
    let watch = from.as_ref().is_some_and(|f| f.watch);
    app_state.reload = from.map(|f| reload::Reloader::new(f, &config));
    let state = Arc::new(app_state);
    if watch {
        tokio::spawn(reload::watch(state.clone(), shutdown.clone()));
    }
    let live = pool.clone();
    let header_timeout: serve::HeaderTimeout =
        Arc::new(move || live.config().gateway.header_timeout);
    let server = serve::serve(
        listener,
        router(state.clone()),
        shutdown.clone(),
        header_timeout,
    );
    let task_pool = pool.clone();
    let task_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        let mut server = tokio::spawn(server);
        tokio::select! {
            _ = &mut server => {}
            _ = task_shutdown.cancelled() => {
                // The grace in effect now: a reload may have changed it.
                let grace = task_pool.config().gateway.shutdown_grace;
                match tokio::time::timeout(grace, &mut server).await {
                    Ok(_) => {}
                    Err(_) => {
                        task_pool.publish(crate::events::Event::Notice {
                            at_ms: crate::events::unix_ms(std::time::SystemTime::now()),
                            level: Level::Warn,
                            message: format!(
                                "shutdown grace of {} ran out; cutting the remaining requests",
                                human(grace)
                            ),
                        });
                        server.abort();
                    }
                }
            }
        }
        pool_stop.cancel();
        if let Err(e) = task_pool.save().await {
            tracing::error!("{e}");
        }
    });
    Ok(Running {
        addr,
        pool,
        shutdown,
        notes,
        state,
        task,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::nesting_exceeds;

    #[test]
    fn nesting_counts_structure_not_strings() {
        assert!(!nesting_exceeds(br#"{"a":[[1],[2]]}"#, 3));
        assert!(nesting_exceeds(br#"{"a":[[1],[2]]}"#, 2));
        // Brackets and escaped quotes inside strings do not count.
        assert!(!nesting_exceeds(br#"{"a":"[[[[\"{{{{"}"#, 1));
        assert!(!nesting_exceeds(b"", 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Agrees with the real nesting of any JSON value serde writes.
        #[test]
        fn nesting_agrees_with_serde(depth in 0usize..100, wrap in prop::bool::ANY, text in ".*") {
            let mut v = serde_json::Value::String(text);
            for i in 0..depth {
                v = if (i % 2 == 0) == wrap {
                    serde_json::json!([v])
                } else {
                    serde_json::json!({ "k": v })
                };
            }
            let bytes = serde_json::to_vec(&v).unwrap();
            prop_assert_eq!(nesting_exceeds(&bytes, 64), depth > 64);
        }

        #[test]
        fn nesting_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = nesting_exceeds(&bytes, 64);
        }
    }
}
