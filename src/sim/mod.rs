//! A simulated OpenAI-compatible upstream on a real loopback socket.
//!
//! The sim plays a provider with a handful of accounts, each with its own
//! rate limit, and answers in OpenAI's exact wire format: the same error
//! bodies, the same `retry-after` / `x-ratelimit-*` headers and the same SSE
//! chunk shapes. The gateway classifies responses by those formats, so the
//! sim is only useful if it gets them right.
//!
//! On one port it serves OpenAI's chat completions, embeddings and
//! Responses API (`chat`, `embeddings`, `responses`, behind the shared
//! gate in `openai`), Anthropic's Messages and token counting
//! (`anthropic`) and Gemini's gRPC service (`gemini`). Every [`Endpoint`]
//! draws on the same accounts, windows and faults.
//!
//! It is used three ways: by integration tests (`start` on `127.0.0.1:0`,
//! then inspect [`SimHandle::log`]), by `tokenyard demo`, and standalone via
//! `tokenyard sim` ([`run_cli`]). [`traffic`] generates client load for the
//! demo and checks that every answer arrives whole and in order.
//!
//! All clocks are `tokio::time`, so tests may pause time where no real
//! socket wait is involved.

mod anthropic;
mod chat;
mod cli;
mod embeddings;
mod gemini;
mod openai;
mod reply;
mod responses;
mod server;
mod state;
#[cfg(test)]
mod tests;
pub mod traffic;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use cli::{SimArgs, run_cli};

use state::Shared;

/// The unit tests' client: they talk to 127.0.0.1 only, so it takes no
/// proxy from the environment.
#[cfg(test)]
pub(crate) fn test_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// `(event name, data)` of each event of a complete, named SSE body (the
/// Anthropic and Responses streams); every event's `type` must repeat its
/// name.
#[cfg(test)]
pub(crate) fn sse_events(body: &str) -> Vec<(String, serde_json::Value)> {
    assert!(
        body.ends_with("\n\n"),
        "stream must end on an event boundary"
    );
    body.split_terminator("\n\n")
        .map(|e| {
            let (event, data) = e.split_once('\n').expect("event and data lines");
            let name = event.strip_prefix("event: ").expect("named event");
            let data: serde_json::Value =
                serde_json::from_str(data.strip_prefix("data: ").expect("data line")).unwrap();
            assert_eq!(data["type"], name, "type field repeats the event name");
            (name.to_owned(), data)
        })
        .collect()
}

/// Everything the sim needs to know up front. Most of it can be changed
/// later through [`SimHandle`] setters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub accounts: Vec<SimAccount>,
    /// Models `/v1/models` lists and the chat endpoints accept; any other
    /// model gets a 404 (`model_not_found`, Anthropic's `not_found_error`).
    pub models: Vec<String>,
    /// Content chunks per completion unless the request sets `max_tokens`.
    pub chunks: usize,
    /// Gap before each content chunk of a stream, so a stream takes about
    /// `chunks * chunk_interval`.
    pub chunk_interval: Duration,
    /// Delay before the response head of an admitted request (429s and other
    /// refusals answer at once, as a real limiter does).
    pub latency: Duration,
    /// Lifetime of access tokens minted by the token endpoint.
    pub access_token_ttl: Duration,
    /// The token endpoint issues a new refresh token each time and revokes
    /// the one it was called with, as several OAuth providers do.
    pub rotate_refresh_tokens: bool,
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            accounts: Vec::new(),
            models: vec!["sim-small".to_owned(), "sim-large".to_owned()],
            chunks: 8,
            chunk_interval: Duration::from_millis(20),
            latency: Duration::ZERO,
            access_token_ttl: Duration::from_secs(3600),
            rotate_refresh_tokens: false,
            faults: Faults::default(),
        }
    }
}

impl SimConfig {
    /// A config with `n` API-key accounts labelled `key-1..n` whose keys are
    /// `sk-sim-1..n`, all with the same limit.
    pub fn with_api_keys(n: usize, limit: Limit) -> Self {
        let accounts = (1..=n)
            .map(|i| SimAccount::api_key(format!("key-{i}"), format!("sk-sim-{i}"), limit.clone()))
            .collect();
        SimConfig {
            accounts,
            ..SimConfig::default()
        }
    }
}

/// One credential the sim recognises.
#[derive(Debug, Clone)]
pub struct SimAccount {
    /// Human name used in logs and stats; never a secret.
    pub label: String,
    pub auth: SimAuth,
    pub limit: Limit,
    /// Which retry hints this account's rate-limit 429s carry.
    pub hints: HintStyle,
    /// A deterministic fault applied to every request of this account.
    pub fault: Option<KeyFault>,
    /// Whether successful answers carry `x-ratelimit-*` headers (OpenAI's
    /// do; many compatible servers send none, so a gateway only learns of
    /// the limit from the 429). Default true.
    pub advertise: bool,
}

impl SimAccount {
    /// An account reached with a static API key; all hints, no fault.
    pub fn api_key(label: impl Into<String>, key: impl Into<String>, limit: Limit) -> Self {
        SimAccount {
            label: label.into(),
            auth: SimAuth::ApiKey(key.into()),
            limit,
            hints: HintStyle::All,
            fault: None,
            advertise: true,
        }
    }

    /// An account reached through access tokens minted from `refresh_token`
    /// by the token endpoint; all hints, no fault.
    pub fn refresh_token(
        label: impl Into<String>,
        refresh_token: impl Into<String>,
        limit: Limit,
    ) -> Self {
        SimAccount {
            label: label.into(),
            auth: SimAuth::RefreshToken(refresh_token.into()),
            limit,
            hints: HintStyle::All,
            fault: None,
            advertise: true,
        }
    }
}

/// How a client proves it is an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimAuth {
    /// Sent as `Authorization: Bearer <key>`.
    ApiKey(String),
    /// Exchanged at `/oauth/token` for short-lived access tokens, which are
    /// then sent as bearer tokens.
    RefreshToken(String),
}

/// An account's request budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    /// A fixed window that opens with the first request after the previous
    /// window closed. Over it: 429 `rate_limit_exceeded` with retry hints.
    Window {
        requests: u32,
        window: Duration,
    },
    /// After this many admitted requests: 429 `insufficient_quota`, with no
    /// retry hint, until the limit is changed with [`SimHandle::set_limit`].
    Total {
        requests: u32,
    },
}

/// Which retry hints a rate-limit 429 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HintStyle {
    /// `retry-after` (seconds), `retry-after-ms` and `x-ratelimit-*`.
    #[default]
    All,
    /// Only `retry-after` in whole seconds, rounded up.
    RetryAfterOnly,
    /// Only `retry-after-ms`.
    RetryAfterMsOnly,
    /// Only `retry-after` as an HTTP-date, rounded up to the next second.
    HttpDate,
    /// Only the `x-ratelimit-*` headers.
    ResetHeadersOnly,
    /// No hint at all.
    None,
}

/// A deterministic per-account fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFault {
    /// Answer every request with this status and OpenAI's error body for it.
    Status(u16),
    /// Streams: send the head and this many SSE data events (the role chunk
    /// counts), then drop the connection without a clean end. Non-streams:
    /// send the head, then drop before the body.
    ResetAfterChunks(usize),
    /// Streams: send this many SSE data events, then go silent with the
    /// connection held open. Non-streams: never answer.
    StallAfterChunks(usize),
}

/// Random fault injection; probabilities per admitted request, drawn from a
/// seeded RNG so runs repeat (given the same arrival order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    pub error_5xx: f64,
    pub reset_mid_stream: f64,
    pub stall_mid_stream: f64,
    /// Rate-limit bursts: an admitted request is refused with a rate-limit
    /// 429 as if the account's budget had just run out, and the account
    /// stays limited for a wait drawn from `rate_limit_wait`, which its
    /// retry hints announce. Drawn before the other faults, from the same
    /// seeded RNG.
    pub rate_limit: f64,
    /// Shortest and longest wait of a rate-limit burst.
    pub rate_limit_wait: (Duration, Duration),
    pub seed: u64,
}

/// How the token endpoint should fail for one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFailure {
    /// 503 `{"error":"server_error"}`: transient, worth a retry.
    ServerError,
    /// 400 `invalid_grant`: the refresh token is dead.
    InvalidGrant,
}

/// Which API a request came in on. Every one of them is served by the same
/// accounts and uses up the same window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// OpenAI's `POST /v1/chat/completions`.
    ChatCompletions,
    /// Anthropic's `POST /v1/messages`.
    Messages,
    /// Gemini's gRPC `GenerateContent` and `StreamGenerateContent` (on the
    /// same port; see [`SimHandle::gemini_url`]).
    GenerateContent,
    /// OpenAI's `POST /v1/embeddings`.
    Embeddings,
    /// Anthropic's `POST /v1/messages/count_tokens`.
    CountTokens,
    /// OpenAI's `POST /v1/responses`.
    Responses,
}

/// One request on any [`Endpoint`] as the sim saw and answered it.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// Arrival time.
    pub at: Instant,
    /// Requests on every endpoint share the account and its limit; this
    /// tells them apart.
    pub endpoint: Endpoint,
    /// The account the credential belongs to (also for an expired access
    /// token); `None` when it is missing or unknown.
    pub label: Option<String>,
    /// The requested model; empty when the body could not be read.
    pub model: String,
    /// Always false for endpoints that cannot stream (embeddings, token
    /// counts).
    pub stream: bool,
    /// The status of the response head (200 also for answers a fault later
    /// cut short or never sent; see `fault`).
    pub status: u16,
    /// On a rate-limit 429, the exact time until the window reopens, before
    /// any rounding for headers.
    pub retry_after: Option<Duration>,
    /// The fault applied to this request, if any.
    pub fault: Option<KeyFault>,
}

/// One call to the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCall {
    pub at: Instant,
    /// The account whose refresh token was presented (also when a
    /// [`TokenFailure`] answered); `None` for an unknown or revoked token.
    pub label: Option<String>,
    pub outcome: TokenOutcome,
    /// A new refresh token was issued and the presented one revoked.
    pub rotated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenOutcome {
    Issued,
    InvalidGrant,
    ServerError,
    UnsupportedGrantType,
    InvalidRequest,
}

/// Counters per account, by label. Served at `GET /sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    pub accounts: Vec<AccountStats>,
    /// Requests (on any endpoint) with a missing or unknown credential.
    pub unauthenticated: u64,
    pub token_calls: usize,
}

impl SimStats {
    pub fn account(&self, label: &str) -> Option<&AccountStats> {
        self.accounts.iter().find(|a| a.label == label)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStats {
    pub label: String,
    /// All requests for this account, on every [`Endpoint`].
    pub requests: u64,
    /// `requests` by the endpoint they came in on (only endpoints that saw
    /// one are listed).
    #[serde(default)]
    pub by_endpoint: BTreeMap<Endpoint, u64>,
    /// 2xx heads sent (including ones a fault later cut short).
    pub ok: u64,
    /// 429 `rate_limit_exceeded`.
    pub rate_limited: u64,
    /// 429 `insufficient_quota`.
    pub quota: u64,
    /// 5xx answers.
    pub errors: u64,
    /// 401 answers (expired access token or a `Status(401)` fault).
    pub unauthorized: u64,
    /// Other 4xx answers (bad body, unknown model).
    pub bad_requests: u64,
    /// Answers cut short by a reset or stall fault.
    pub aborted: u64,
    /// Calls to `GET /v1/models`, kept apart from chat requests.
    pub models_calls: u64,
}

/// Binds `addr`, spawns the server and returns at once.
pub async fn start(cfg: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        // Small SSE frames must leave at once, not wait for Nagle.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!("sim: cannot set TCP_NODELAY: {err}");
        }
    });
    let cancel = CancellationToken::new();
    let shared = Arc::new(Shared::new(cfg, cancel.clone()));
    let app = server::router(shared.clone()).merge(gemini::router(shared.clone()));
    let signal = cancel.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
        {
            tracing::warn!("sim server stopped: {err}");
        }
    });
    tracing::debug!(%addr, "sim listening");
    Ok(SimHandle {
        addr,
        shared,
        task: Arc::new(Mutex::new(Some(task))),
    })
}

/// A handle on a running sim: addresses, the request log, and knobs to
/// change its behaviour while it runs. Cheap to clone.
#[derive(Clone)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The server task, taken by `shutdown`.
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT/oauth/token`
    pub fn token_url(&self) -> String {
        format!("http://{}/oauth/token", self.addr)
    }

    /// `http://127.0.0.1:PORT`: the Gemini gRPC service shares the port
    /// (HTTP/2 with prior knowledge, no TLS).
    pub fn gemini_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request on any [`Endpoint`], in arrival order.
    pub fn log(&self) -> Vec<SimRequest> {
        self.shared.lock().log.clone()
    }

    /// Calls to the token endpoint, counted on arrival, whatever the outcome.
    pub fn token_calls(&self) -> usize {
        self.shared.lock().token_calls
    }

    /// Finished token endpoint calls, in completion order.
    pub fn token_log(&self) -> Vec<TokenCall> {
        self.shared.lock().token_log.clone()
    }

    /// Calls to `GET /v1/models` made with this account's credential.
    ///
    /// # Panics
    /// If no account has this label (a typo in a test).
    pub fn models_calls(&self, label: &str) -> usize {
        let mut inner = self.shared.lock();
        inner.account_mut(label).stats.models_calls as usize
    }

    /// # Panics
    /// If no account has this label.
    pub fn set_fault(&self, label: &str, fault: Option<KeyFault>) {
        let mut inner = self.shared.lock();
        let account = inner.account_mut(label);
        account.fault = fault;
        account.fault_left = None;
    }

    /// The next `n` generation requests (chat, messages, responses,
    /// embeddings, token counts, Gemini calls) of the account answer
    /// `status` with the provider's error body; then it serves normally.
    /// Model-list probes are not counted.
    ///
    /// # Panics
    /// If no account has this label, or `n` is 0.
    pub fn fail_next(&self, label: &str, status: u16, n: u32) {
        assert!(n > 0, "fail_next needs at least one request");
        let mut inner = self.shared.lock();
        let account = inner.account_mut(label);
        account.fault = Some(KeyFault::Status(status));
        account.fault_left = Some(n);
    }

    /// Replaces the account's limit and starts its counters afresh.
    ///
    /// # Panics
    /// If no account has this label.
    pub fn set_limit(&self, label: &str, limit: Limit) {
        self.shared.lock().account_mut(label).set_limit(limit);
    }

    /// # Panics
    /// If no account has this label.
    pub fn set_hints(&self, label: &str, hints: HintStyle) {
        self.shared.lock().account_mut(label).hints = hints;
    }

    /// Delay every token endpoint answer by `d` (to widen refresh races).
    pub fn set_token_delay(&self, d: Duration) {
        self.shared.lock().token_delay = d;
    }

    /// # Panics
    /// If no account has this label.
    pub fn set_token_failure(&self, label: &str, f: Option<TokenFailure>) {
        self.shared.lock().account_mut(label).token_failure = f;
    }

    /// The refresh token currently valid for this account (changes on each
    /// rotation); `None` for API-key accounts and unknown labels.
    pub fn current_refresh_token(&self, label: &str) -> Option<String> {
        let inner = self.shared.lock();
        inner
            .accounts
            .iter()
            .find(|a| a.label == label)
            .and_then(|a| a.refresh_token.clone())
    }

    /// Makes `token` this account's valid refresh token, as a provider's
    /// reuse grace would: for a test whose gateway died after the sim
    /// rotated a token but before the answer reached it.
    ///
    /// # Panics
    /// If no account has this label.
    pub fn set_refresh_token(&self, label: &str, token: &str) {
        self.shared.lock().account_mut(label).refresh_token = Some(token.to_owned());
    }

    /// Every access token minted so far (for tests that check none leaked).
    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.shared.lock().issued_access_tokens()
    }

    /// Every access token minted so far is expired from now on.
    pub fn expire_access_tokens(&self) {
        self.shared.lock().expire_access_tokens(Instant::now());
    }

    pub fn stats(&self) -> SimStats {
        self.shared.lock().stats()
    }

    /// Stops accepting, cuts open streams and waits (briefly) for the
    /// server to wind down.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}
