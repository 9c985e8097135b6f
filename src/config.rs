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
    pub chat_url: Option<url::Url>,
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

    /// The quick start: `TOKENYARD_UPSTREAM=<base url>` and
    /// `TOKENYARD_KEYS=k1,k2,…` give one OpenAI-kind provider serving every
    /// model with credentials `key-1..key-N` in one tier. `None` when
    /// `TOKENYARD_UPSTREAM` is unset.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<Result<Config, ConfigError>> {
        let upstream = env("TOKENYARD_UPSTREAM")?;
        let Some(keys) = env("TOKENYARD_KEYS") else {
            return Some(Err(invalid(
                "TOKENYARD_KEYS",
                "is not set; with TOKENYARD_UPSTREAM it must list the API keys, comma-separated",
            )));
        };
        let keys: Vec<&str> = keys
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        let raw = RawConfig {
            providers: vec![RawProvider {
                name: Some("upstream".into()),
                kind: Some("openai".into()),
                base_url: Some(upstream),
                models: None,
            }],
            credentials: keys
                .iter()
                .enumerate()
                .map(|(i, k)| RawCredential {
                    name: Some(format!("key-{}", i + 1)),
                    api_key: Some((*k).to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        // The keys may themselves be `env:`/`file:` references.
        Some(raw.resolve("environment", Path::new("."), env))
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

// ---------------------------------------------------------------------------
// Raw shape, as written in TOML.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    listen: Option<String>,
    #[serde(default)]
    client_keys: Vec<String>,
    admin_key: Option<String>,
    state_file: Option<String>,
    state: Option<RawState>,
    #[serde(default)]
    pool: RawPool,
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default, rename = "provider")]
    providers: Vec<RawProvider>,
    #[serde(default, rename = "credential")]
    credentials: Vec<RawCredential>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    backend: Option<String>,
    url: Option<String>,
    password: Option<String>,
    namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    tiers: Option<Vec<String>>,
    default_cooldown: Option<String>,
    quota_cooldown: Option<String>,
    max_failures: Option<i64>,
    probe_interval: Option<String>,
    max_attempts: Option<i64>,
    max_wait: Option<String>,
    refresh_skew: Option<String>,
    max_in_flight: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    max_body: Option<RawSize>,
    route_headers: Option<bool>,
    shutdown_grace: Option<String>,
    connect_timeout: Option<String>,
    first_byte_timeout: Option<String>,
    stream_idle_timeout: Option<String>,
    request_timeout: Option<String>,
    max_concurrency: Option<i64>,
    body_timeout: Option<String>,
    max_uri_bytes: Option<RawSize>,
    max_header_bytes: Option<RawSize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(i64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    name: Option<String>,
    kind: Option<String>,
    base_url: Option<String>,
    models: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    name: Option<String>,
    provider: Option<String>,
    tier: Option<String>,
    api_key: Option<String>,
    refresh_token: Option<String>,
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

struct Resolver<'a> {
    base_dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Resolver<'_> {
    /// Resolves `env:VAR`, `file:PATH` or a literal into a secret.
    fn secret(&self, path: &str, value: &str) -> Result<Secret, ConfigError> {
        let resolved = if let Some(var) = value.strip_prefix("env:") {
            match (self.env)(var) {
                Some(v) => v,
                None => {
                    return Err(invalid(
                        path,
                        format!("environment variable {var} is not set"),
                    ));
                }
            }
        } else if let Some(file) = value.strip_prefix("file:") {
            let p = self.path(file);
            match std::fs::read_to_string(&p) {
                Ok(v) => v.trim_end_matches(['\n', '\r']).to_string(),
                Err(e) => {
                    return Err(invalid(
                        path,
                        format!("cannot read secret file {}: {e}", p.display()),
                    ));
                }
            }
        } else {
            value.to_string()
        };
        if resolved.trim().is_empty() {
            return Err(invalid(path, "is empty"));
        }
        if resolved.chars().any(|c| c.is_control()) {
            return Err(invalid(
                path,
                "contains control characters (a stray newline in the secret?)",
            ));
        }
        Ok(Secret::new(resolved))
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

fn duration(
    path: &str,
    value: Option<&String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => humantime::parse_duration(v.trim()).map_err(|e| {
            invalid(
                path,
                format!("{v:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"1h\""),
            )
        }),
    }
}

fn size(path: &str, value: &RawSize) -> Result<usize, ConfigError> {
    let bad = |v: &dyn std::fmt::Debug| {
        invalid(
            path,
            format!("{v:?} is not a size; write bytes (1048576) or \"512KiB\", \"32MiB\""),
        )
    };
    let n: u64 = match value {
        RawSize::Bytes(n) if *n > 0 => *n as u64,
        RawSize::Bytes(n) => return Err(bad(n)),
        RawSize::Text(t) => {
            let t = t.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let num: u64 = num.parse().map_err(|_| bad(&t))?;
            let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "kb" => 1000,
                "kib" | "k" => 1024,
                "mb" => 1000 * 1000,
                "mib" | "m" => 1024 * 1024,
                "gb" => 1000 * 1000 * 1000,
                "gib" | "g" => 1024 * 1024 * 1024,
                _ => return Err(bad(&t)),
            };
            num.checked_mul(mult).ok_or_else(|| bad(&t))?
        }
    };
    if n == 0 {
        return Err(invalid(path, "must be greater than zero"));
    }
    usize::try_from(n).map_err(|_| invalid(path, "is too large"))
}

fn positive(path: &str, value: Option<i64>, default: u32) -> Result<u32, ConfigError> {
    match value {
        None => Ok(default),
        Some(n) if n >= 1 && n <= u32::MAX as i64 => Ok(n as u32),
        Some(n) => Err(invalid(
            path,
            format!("{n} must be a whole number of at least 1"),
        )),
    }
}

/// Names end up in URLs (`/admin/credentials/{name}/disable`) and logs, so
/// they are kept to a plain alphabet.
fn check_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(invalid(
            path,
            format!("{name:?} is not a valid name; use 1-64 letters, digits, '-', '_' or '.'"),
        ))
    }
}

/// A required, well-formed name not used before among `what`.
fn unique_name(
    path: &str,
    name: Option<&str>,
    seen: &mut HashSet<String>,
    what: &str,
) -> Result<String, ConfigError> {
    let name = name.ok_or_else(|| invalid(path, "is missing"))?;
    check_name(path, name)?;
    if !seen.insert(name.to_string()) {
        return Err(invalid(path, format!("{name:?} is used by two {what}")));
    }
    Ok(name.to_string())
}

fn one_of(path: &str, value: &str, allowed: &[String]) -> ConfigError {
    invalid(
        path,
        format!("{value:?} is not one of {}", allowed.join(", ")),
    )
}

impl RawConfig {
    fn resolve(
        self,
        source: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let r = Resolver { base_dir, env };

        let listen_text = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.trim().parse().map_err(|_| {
            invalid(
                "listen",
                format!("{listen_text:?} is not an address like \"127.0.0.1:8787\""),
            )
        })?;

        let client_keys = self
            .client_keys
            .iter()
            .enumerate()
            .map(|(i, v)| r.secret(&format!("client_keys[{i}]"), v))
            .collect::<Result<Vec<_>, _>>()?;
        let admin_key = self
            .admin_key
            .as_deref()
            .map(|v| r.secret("admin_key", v))
            .transpose()?;
        let state_file = match self.state_file.as_deref() {
            Some("") => return Err(invalid("state_file", "is empty")),
            Some(p) => Some(r.path(p)),
            None => default_state_file(),
        };

        let shared = match &self.state {
            None => None,
            Some(s) => match s.backend.as_deref().unwrap_or("file") {
                "file" => {
                    if s.url.is_some() || s.password.is_some() {
                        return Err(invalid("state.url", "only applies to backend = \"redis\""));
                    }
                    None
                }
                "redis" => {
                    let Some(url) = s.url.as_deref() else {
                        return Err(invalid(
                            "state.url",
                            "is required for backend = \"redis\" (redis://host:6379 or rediss://… for TLS)",
                        ));
                    };
                    let parsed = url::Url::parse(url)
                        .map_err(|e| invalid("state.url", format!("is not a URL ({e})")))?;
                    if !matches!(parsed.scheme(), "redis" | "rediss") {
                        return Err(invalid(
                            "state.url",
                            format!(
                                "must start with redis:// or rediss://, not {}://",
                                parsed.scheme()
                            ),
                        ));
                    }
                    if parsed.password().is_some() {
                        return Err(invalid(
                            "state.url",
                            "must not hold a password; set state.password (env:/file: work)",
                        ));
                    }
                    let namespace = s.namespace.clone().unwrap_or_else(|| "tokenyard".into());
                    if namespace.is_empty()
                        || namespace.contains(|c: char| c.is_whitespace() || c == '{' || c == '}')
                    {
                        return Err(invalid(
                            "state.namespace",
                            "must be a non-empty word without spaces or braces",
                        ));
                    }
                    Some(SharedSettings {
                        url: url.to_owned(),
                        password: s
                            .password
                            .as_deref()
                            .map(|v| r.secret("state.password", v))
                            .transpose()?,
                        namespace,
                    })
                }
                other => {
                    return Err(invalid(
                        "state.backend",
                        format!("{other:?} is not a backend; use \"file\" or \"redis\""),
                    ));
                }
            },
        };

        let defaults = PoolSettings::default();
        let p = &self.pool;
        let tiers = p.tiers.clone().unwrap_or(defaults.tiers.clone());
        if tiers.is_empty() {
            return Err(invalid("pool.tiers", "must name at least one tier"));
        }
        let mut seen = HashSet::new();
        for (i, t) in tiers.iter().enumerate() {
            check_name(&format!("pool.tiers[{i}]"), t)?;
            if !seen.insert(t.as_str()) {
                return Err(invalid(
                    format!("pool.tiers[{i}]"),
                    format!("{t:?} is listed twice"),
                ));
            }
        }
        let pool = PoolSettings {
            default_cooldown: duration(
                "pool.default_cooldown",
                p.default_cooldown.as_ref(),
                defaults.default_cooldown,
            )?,
            quota_cooldown: duration(
                "pool.quota_cooldown",
                p.quota_cooldown.as_ref(),
                defaults.quota_cooldown,
            )?,
            max_failures: positive("pool.max_failures", p.max_failures, defaults.max_failures)?,
            probe_interval: duration(
                "pool.probe_interval",
                p.probe_interval.as_ref(),
                defaults.probe_interval,
            )?,
            max_attempts: positive("pool.max_attempts", p.max_attempts, defaults.max_attempts)?,
            max_wait: duration("pool.max_wait", p.max_wait.as_ref(), defaults.max_wait)?,
            refresh_skew: duration(
                "pool.refresh_skew",
                p.refresh_skew.as_ref(),
                defaults.refresh_skew,
            )?,
            max_in_flight: positive(
                "pool.max_in_flight",
                p.max_in_flight,
                defaults.max_in_flight,
            )?,
            tiers,
        };
        if pool.probe_interval.is_zero() {
            return Err(invalid("pool.probe_interval", "must be greater than zero"));
        }

        let gd = GatewaySettings::default();
        let g = &self.gateway;
        let gateway = GatewaySettings {
            max_body: match &g.max_body {
                Some(s) => size("gateway.max_body", s)?,
                None => gd.max_body,
            },
            route_headers: g.route_headers.unwrap_or(gd.route_headers),
            shutdown_grace: duration(
                "gateway.shutdown_grace",
                g.shutdown_grace.as_ref(),
                gd.shutdown_grace,
            )?,
            connect_timeout: duration(
                "gateway.connect_timeout",
                g.connect_timeout.as_ref(),
                gd.connect_timeout,
            )?,
            first_byte_timeout: duration(
                "gateway.first_byte_timeout",
                g.first_byte_timeout.as_ref(),
                gd.first_byte_timeout,
            )?,
            stream_idle_timeout: duration(
                "gateway.stream_idle_timeout",
                g.stream_idle_timeout.as_ref(),
                gd.stream_idle_timeout,
            )?,
            request_timeout: duration(
                "gateway.request_timeout",
                g.request_timeout.as_ref(),
                gd.request_timeout,
            )?,
            max_concurrency: positive(
                "gateway.max_concurrency",
                g.max_concurrency,
                gd.max_concurrency,
            )?,
            body_timeout: duration(
                "gateway.body_timeout",
                g.body_timeout.as_ref(),
                gd.body_timeout,
            )?,
            max_uri_bytes: match &g.max_uri_bytes {
                Some(s) => size("gateway.max_uri_bytes", s)?,
                None => gd.max_uri_bytes,
            },
            max_header_bytes: match &g.max_header_bytes {
                Some(s) => size("gateway.max_header_bytes", s)?,
                None => gd.max_header_bytes,
            },
        };
        for (key, d) in [
            ("gateway.connect_timeout", gateway.connect_timeout),
            ("gateway.first_byte_timeout", gateway.first_byte_timeout),
            ("gateway.stream_idle_timeout", gateway.stream_idle_timeout),
            ("gateway.request_timeout", gateway.request_timeout),
            ("gateway.body_timeout", gateway.body_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }

        if self.providers.is_empty() {
            return Err(invalid(
                "provider",
                "no [[provider]] is configured; add one with name, kind and base_url",
            ));
        }
        let mut providers = Vec::new();
        let mut names = HashSet::new();
        for (i, rp) in self.providers.iter().enumerate() {
            let at = |k: &str| format!("provider[{i}].{k}");
            let name = unique_name(&at("name"), rp.name.as_deref(), &mut names, "providers")?;
            let kind = match rp.kind.as_deref() {
                None => {
                    return Err(invalid(
                        at("kind"),
                        "is missing; use \"openai\", \"anthropic\" or \"gemini\"",
                    ));
                }
                Some("openai") => ProviderKind::OpenAi,
                Some("anthropic") => ProviderKind::Anthropic,
                Some("gemini") => ProviderKind::Gemini,
                Some(k) => {
                    return Err(invalid(
                        at("kind"),
                        format!("{k:?} is not one of openai, anthropic, gemini"),
                    ));
                }
            };
            let base_url = rp
                .base_url
                .clone()
                .or_else(|| kind.default_base_url().map(str::to_string))
                .ok_or_else(|| invalid(at("base_url"), "is missing"))?;
            match url::Url::parse(&base_url) {
                Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {}
                _ => {
                    return Err(invalid(
                        at("base_url"),
                        format!("{base_url:?} is not an http(s) URL"),
                    ));
                }
            }
            let models = rp.models.clone().unwrap_or_else(|| vec!["*".into()]);
            if models.is_empty() || models.iter().any(|m| m.trim().is_empty()) {
                return Err(invalid(
                    at("models"),
                    "must list model names or globs such as \"*\"",
                ));
            }
            let base_url = base_url.trim_end_matches('/').to_string();
            let chat_path = match kind {
                ProviderKind::OpenAi => Some("chat/completions"),
                ProviderKind::Anthropic => Some("messages"),
                ProviderKind::Gemini => None,
            };
            let chat_url = match chat_path {
                Some(path) => {
                    Some(url::Url::parse(&format!("{base_url}/{path}")).map_err(|e| {
                        invalid(at("base_url"), format!("{base_url:?} is not a URL ({e})"))
                    })?)
                }
                None => None,
            };
            providers.push(Provider {
                name,
                kind,
                base_url,
                models,
                chat_url,
            });
        }

        if self.credentials.is_empty() {
            return Err(invalid(
                "credential",
                "no [[credential]] is configured; add at least one with name and api_key or refresh_token",
            ));
        }
        let mut credentials = Vec::new();
        let mut names = HashSet::new();
        for (i, rc) in self.credentials.iter().enumerate() {
            let at = |k: &str| format!("credential[{i}].{k}");
            let name = unique_name(&at("name"), rc.name.as_deref(), &mut names, "credentials")?;
            let provider = match rc.provider.as_deref() {
                None if providers.len() == 1 => 0,
                None => {
                    return Err(invalid(
                        at("provider"),
                        "is missing (required when more than one provider is configured)",
                    ));
                }
                Some(p) => providers.iter().position(|x| x.name == p).ok_or_else(|| {
                    let all: Vec<String> = providers.iter().map(|x| x.name.clone()).collect();
                    one_of(&at("provider"), p, &all)
                })?,
            };
            let tier = match rc.tier.as_deref() {
                None => 0,
                Some(t) => pool
                    .tiers
                    .iter()
                    .position(|x| x == t)
                    .ok_or_else(|| one_of(&at("tier"), t, &pool.tiers))?,
            };
            let auth = match (&rc.api_key, &rc.refresh_token) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        at("api_key"),
                        "and refresh_token are both set; a credential has one or the other",
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        at("api_key"),
                        "is missing; set api_key, or refresh_token with token_url",
                    ));
                }
                (Some(k), None) => {
                    for (key, set) in [
                        ("token_url", rc.token_url.is_some()),
                        ("client_id", rc.client_id.is_some()),
                        ("client_secret", rc.client_secret.is_some()),
                    ] {
                        if set {
                            return Err(invalid(at(key), "only applies with refresh_token"));
                        }
                    }
                    AuthSpec::ApiKey(r.secret(&at("api_key"), k)?)
                }
                (None, Some(rt)) => {
                    let token_url = rc.token_url.clone().ok_or_else(|| {
                        invalid(at("token_url"), "is missing (required with refresh_token)")
                    })?;
                    match url::Url::parse(&token_url) {
                        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
                        _ => {
                            return Err(invalid(
                                at("token_url"),
                                format!("{token_url:?} is not an http(s) URL"),
                            ));
                        }
                    }
                    if rc.client_secret.is_some() && rc.client_id.is_none() {
                        return Err(invalid(at("client_secret"), "needs client_id"));
                    }
                    AuthSpec::Refresh {
                        refresh_token: r.secret(&at("refresh_token"), rt)?,
                        token_url,
                        client_id: rc.client_id.clone(),
                        client_secret: rc
                            .client_secret
                            .as_deref()
                            .map(|s| r.secret(&at("client_secret"), s))
                            .transpose()?,
                    }
                }
            };
            credentials.push(CredentialSpec {
                name,
                provider,
                tier,
                auth,
            });
        }

        let config = Config {
            source: source.to_string(),
            listen,
            client_keys,
            admin_key,
            state_file,
            shared,
            pool,
            gateway,
            providers,
            credentials,
        };
        config.check_exposure()?;
        Ok(config)
    }
}

/// Shell-style glob with `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests;
