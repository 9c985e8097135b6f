//! The TOML configuration: schema, secret references (`env:VAR`,
//! `file:PATH`, literal), defaults, and validation that names the key path of
//! whatever is wrong.
//!
//! Parsing is split in two: serde reads the raw shape (unknown keys are
//! errors, so a typo never silently does nothing), then `RawConfig::resolve`
//! checks meaning and turns references into [`Secret`]s.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

pub mod policy;
mod raw;
pub use self::policy::{ErrorAction, ErrorRule};
pub use self::raw::RawConfig;

/// What went wrong with a configuration, with enough context to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("cannot read config file {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error(
        "no configuration found: pass --config FILE, set TOKENYARD_CONFIG, create ./tokenyard.toml \
         or {xdg}, or set TOKENYARD_UPSTREAM and TOKENYARD_KEYS for a quick start"
    )]
    NotFound { xdg: String },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

/// The upstream wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI's Chat Completions over HTTP (and every compatible server).
    OpenAi,
    /// Anthropic's Messages API over HTTP.
    Anthropic,
    /// The Gemini API over gRPC (`GenerativeService`).
    Gemini,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        }
    }

    /// Where a provider of this kind lives when `base_url` is not given.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => None,
            ProviderKind::Anthropic => Some("https://api.anthropic.com/v1"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Without a trailing slash: paths are appended as `{base_url}/chat/completions`.
    pub base_url: String,
    /// Model names or globs (`*`, `?`) this provider serves.
    pub models: Vec<String>,
    /// Where chat requests go (`{base_url}/chat/completions` or
    /// `{base_url}/messages`), parsed once rather than per request; `None`
    /// for Gemini, which speaks gRPC.
    pub chat_url: Option<http::Uri>,
    /// How `/v1/responses` requests reach an OpenAI-kind provider.
    pub responses: ResponsesMode,
}

/// How a client's `POST /v1/responses` reaches an OpenAI-kind provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponsesMode {
    /// Translated to Chat Completions, which every OpenAI-compatible server
    /// speaks (the answer translated back).
    #[default]
    Translate,
    /// Forwarded untouched to `{base_url}/responses`, for providers that
    /// serve the Responses API themselves (OpenAI).
    Native,
}

impl Provider {
    pub fn serves(&self, model: &str) -> bool {
        self.models.iter().any(|p| glob_match(p, model))
    }
}

/// How a credential authenticates upstream.
#[derive(Debug, Clone)]
pub enum AuthSpec {
    /// A static key sent as a bearer token.
    ApiKey(Secret),
    /// An OAuth refresh token that mints short-lived access tokens.
    Refresh {
        refresh_token: Secret,
        token_url: String,
        client_id: Option<String>,
        client_secret: Option<Secret>,
    },
}

impl AuthSpec {
    /// The configured secret this credential is identified by; its
    /// fingerprint tells whether persisted state still belongs to it.
    pub fn identity(&self) -> &Secret {
        match self {
            AuthSpec::ApiKey(k) => k,
            AuthSpec::Refresh { refresh_token, .. } => refresh_token,
        }
    }

    pub fn refreshes(&self) -> bool {
        matches!(self, AuthSpec::Refresh { .. })
    }
}

#[derive(Debug, Clone)]
pub struct CredentialSpec {
    pub name: String,
    /// Index into [`Config::providers`].
    pub provider: usize,
    /// Index into [`PoolSettings::tiers`].
    pub tier: usize,
    pub auth: AuthSpec,
    /// Its own limits over the pool's default ([`PoolSettings::budget`]).
    pub budget: Budget,
}

/// Limits the operator puts on a credential's own use, below whatever the
/// provider allows: reaching one holds the credential (cooling for a
/// per-minute limit until the next minute, exhausted for the per-day one
/// until the next midnight in `[pool] usage_time_zone`, UTC by default) so the pool moves on before the provider
/// says 429. `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Answers per calendar minute.
    pub requests_per_minute: Option<u64>,
    /// Input plus output tokens per calendar minute.
    pub tokens_per_minute: Option<u64>,
    /// Input plus output tokens per calendar day (UTC unless
    /// `[pool] usage_time_zone` says otherwise).
    pub tokens_per_day: Option<u64>,
}

impl Budget {
    /// Each limit this one sets, else `default`'s.
    pub fn or(self, default: Budget) -> Budget {
        Budget {
            requests_per_minute: self.requests_per_minute.or(default.requests_per_minute),
            tokens_per_minute: self.tokens_per_minute.or(default.tokens_per_minute),
            tokens_per_day: self.tokens_per_day.or(default.tokens_per_day),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Budget::default()
    }
}

#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Preference order; the last one is the fallback tier.
    pub tiers: Vec<String>,
    pub default_cooldown: Duration,
    pub quota_cooldown: Duration,
    pub max_failures: u32,
    pub probe_interval: Duration,
    pub max_attempts: u32,
    pub max_wait: Duration,
    /// Access tokens are refreshed this long before they expire.
    pub refresh_skew: Duration,
    /// Requests one credential may have in flight at once; a credential at
    /// its cap is passed over like a busy one.
    pub max_in_flight: u32,
    /// The budget of every credential that sets none of its own.
    pub budget: Budget,
    /// Whose calendar day the usage counters and daily budgets follow.
    pub usage_zone: crate::vocab::UsageZone,
    /// How a credential is chosen among the ready ones of a tier.
    pub strategy: Strategy,
    /// Keeping a conversation on one credential (`[pool] affinity*`).
    pub affinity: Affinity,
}

/// `[pool] strategy`: how the pool chooses within the tier that serves
/// (tiers still come first, and only a credential that can serve is
/// chosen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// In turn, from where the last choice left off.
    #[default]
    RoundRobin,
    /// The one with the largest share of its rate-limit window left, as
    /// its provider last reported it.
    LeastUsed,
    /// The one whose window resets soonest (capacity that would otherwise
    /// go unused), among those with some left.
    SoonestReset,
}

impl Strategy {
    pub const NAMES: [&'static str; 3] = ["round_robin", "least_used", "soonest_reset"];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastUsed => "least_used",
            Strategy::SoonestReset => "soonest_reset",
        }
    }

    pub fn parse(name: &str) -> Option<Strategy> {
        match name {
            "round_robin" => Some(Strategy::RoundRobin),
            "least_used" => Some(Strategy::LeastUsed),
            "soonest_reset" => Some(Strategy::SoonestReset),
            _ => None,
        }
    }
}

/// Session affinity: a request that names its session (a
/// `prompt_cache_key`, Anthropic's `metadata.user_id`, a coding agent's
/// session header, or [`Affinity::header`]) goes to the credential that
/// served the session before, while it can serve, so the provider's
/// prompt cache (kept per key or account) is hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affinity {
    /// `[pool] affinity`; on by default: it acts only on requests that
    /// carry a signal.
    pub enabled: bool,
    /// A session unused this long is forgotten (`affinity_ttl`).
    pub ttl: Duration,
    /// Sessions remembered at most; the least recently used go first
    /// (`affinity_max_sessions`).
    pub max_sessions: usize,
    /// A request header naming the session, read before every other
    /// signal (`affinity_header`, lower-case).
    pub header: Option<http::HeaderName>,
    /// Without a signal, a hash of the system prompt and the first message
    /// stands for the session (`affinity_fallback = "prompt"`).
    pub fallback_prompt: bool,
}

impl Default for Affinity {
    fn default() -> Self {
        Affinity {
            enabled: true,
            ttl: Duration::from_secs(3600),
            max_sessions: 10_000,
            header: None,
            fallback_prompt: false,
        }
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            tiers: vec!["default".into()],
            default_cooldown: Duration::from_secs(60),
            quota_cooldown: Duration::from_secs(3600),
            max_failures: 3,
            probe_interval: Duration::from_secs(30),
            max_attempts: 8,
            max_wait: Duration::ZERO,
            refresh_skew: Duration::from_secs(60),
            max_in_flight: 256,
            budget: Budget::default(),
            usage_zone: Default::default(),
            strategy: Strategy::RoundRobin,
            affinity: Affinity::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub max_body: usize,
    /// Whether responses carry `x-tokenyard-attempts` / `x-tokenyard-credential`.
    pub route_headers: bool,
    pub shutdown_grace: Duration,
    pub connect_timeout: Duration,
    /// Until the upstream's response head (and, for streams, first byte);
    /// past it the attempt counts as a failure and the next credential runs.
    pub first_byte_timeout: Duration,
    /// Longest silence inside a committed stream before it is ended with an
    /// error event.
    pub stream_idle_timeout: Duration,
    /// A request's whole life, waits and retries and streaming included;
    /// past it the client gets a timeout error (or an error event).
    pub request_timeout: Duration,
    /// Client requests (`/v1/*`) in flight at once; beyond it, 503 with
    /// `Retry-After` instead of an unbounded queue.
    pub max_concurrency: u32,
    /// How long a client may take to send its request body (slow-loris
    /// guard); then 408.
    pub body_timeout: Duration,
    /// How long a client may take to send a request's line and headers,
    /// counted from the end of the previous answer (on a new connection:
    /// once for the first byte, again for the rest of the head); then the
    /// connection is closed. So it is also how long an idle keep-alive
    /// connection stays open.
    pub header_timeout: Duration,
    /// Request line and header limits; beyond them, 414 and 431.
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            max_body: 32 * 1024 * 1024,
            route_headers: true,
            shutdown_grace: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(120),
            stream_idle_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(600),
            max_concurrency: 10_000,
            body_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// A validated configuration with every secret resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from, for reports: a file path or "environment".
    pub source: String,
    pub listen: SocketAddr,
    pub client_keys: Vec<Secret>,
    pub admin_key: Option<Secret>,
    /// `None` keeps state in memory only (the demo, tests).
    pub state_file: Option<PathBuf>,
    /// `[state] backend = "redis"`: pool state shared with other replicas
    /// through Redis (the state file, if any, is still written as the local
    /// fallback). `None` for the default file backend.
    pub shared: Option<SharedSettings>,
    pub pool: PoolSettings,
    pub gateway: GatewaySettings,
    pub providers: Vec<Provider>,
    pub credentials: Vec<CredentialSpec>,
    /// `[[error_policy]]`: the operator's rules for upstream errors, in
    /// order (see [`policy`]).
    pub error_policy: Vec<ErrorRule>,
    /// Every `file:` secret the config read, with a hash of what it read:
    /// the reload watcher reloads when one of them changes (a rotated key
    /// mounted from a secret store).
    pub secret_files: Vec<WatchedFile>,
}

/// A file a config was read from, and a hash of its content then.
#[derive(Clone, PartialEq, Eq)]
pub struct WatchedFile {
    pub path: PathBuf,
    pub hash: u64,
}

impl std::fmt::Debug for WatchedFile {
    // The hash is of a secret: only the path is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The hash the reload watcher compares file contents by.
pub fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// Where replicas share pool state.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedSettings {
    /// `redis://` or `rediss://` (TLS), without a password.
    pub url: String,
    /// From `password` (`env:`/`file:` or literal); kept out of the URL.
    pub password: Option<Secret>,
    /// Key prefix, so several clusters can share one Redis.
    pub namespace: String,
}

impl Config {
    /// Reads and validates a config file. Relative `file:` references and a
    /// relative `state_file` are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.display().to_string(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, &path.display().to_string(), base, &|k| {
            std::env::var(k).ok()
        })
    }

    /// Parses TOML text. `env` looks variables up (injected for tests).
    pub fn parse(
        text: &str,
        source: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: source.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        raw.resolve(source, base_dir, env)
    }

    pub fn provider(&self, cred: &CredentialSpec) -> &Provider {
        &self.providers[cred.provider]
    }

    /// The first provider, in config order, whose `models` match.
    pub fn route(&self, model: &str) -> Option<usize> {
        self.providers.iter().position(|p| p.serves(model))
    }

    /// Checks that only make sense once `--listen` overrides are applied.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() && self.client_keys.is_empty() {
            return Err(invalid(
                "listen",
                format!(
                    "{} is not a loopback address and no client_keys are set; anyone who can \
                     reach it could spend your credentials. Add client_keys or listen on 127.0.0.1",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}

/// Where the config comes from when no `--config` is given, in order:
/// `$TOKENYARD_CONFIG`, the `TOKENYARD_UPSTREAM` quick start, `./tokenyard.toml`,
/// then `$XDG_CONFIG_HOME/tokenyard/config.toml`.
pub fn discover(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    if let Some(p) = explicit {
        return Config::load(p);
    }
    if let Some(p) = std::env::var_os("TOKENYARD_CONFIG") {
        return Config::load(Path::new(&p));
    }
    if let Some(c) = Config::from_env(&|k| std::env::var(k).ok()) {
        return c;
    }
    let local = Path::new("tokenyard.toml");
    if local.exists() {
        return Config::load(local);
    }
    let xdg = dirs::config_dir().map(|d| d.join("tokenyard").join("config.toml"));
    match xdg {
        Some(p) if p.exists() => Config::load(&p),
        other => Err(ConfigError::NotFound {
            xdg: other
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "~/.config/tokenyard/config.toml".into()),
        }),
    }
}

fn default_state_file() -> Option<PathBuf> {
    dirs::state_dir()
        .or_else(dirs::data_dir)
        .map(|d| d.join("tokenyard").join("state.json"))
}

/// Shell-style glob with `*` (any run) and `?` (one character). Runs on
/// the bytes, without allocating (it routes every request): a literal
/// matches byte for byte, and `?` and a star's retry step over one whole
/// UTF-8 character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    // The width of the character starting at `t[i]` (a char boundary).
    let width = |i: usize| text[i..].chars().next().map_or(1, char::len_utf8);
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'?' {
            pi += 1;
            ti += width(ti);
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            let next = st + width(st);
            pi = sp + 1;
            ti = next;
            star = Some((sp, next));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests;
