//! The raw shape, as written in TOML (unknown keys are errors), and the
//! quick start from the environment. Its resolution into a checked
//! [`Config`] is in `resolve` (defaults, the key path of anything wrong),
//! reading one value of it (a secret reference, a duration, a size, a name)
//! in `values`.

use super::*;

mod resolve;
mod values;

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
    #[serde(default)]
    error_policy: Vec<super::policy::RawErrorRule>,
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
    max_requests_per_minute: Option<i64>,
    max_tokens_per_minute: Option<i64>,
    max_tokens_per_day: Option<i64>,
    usage_time_zone: Option<String>,
    strategy: Option<String>,
    affinity: Option<bool>,
    affinity_ttl: Option<String>,
    affinity_max_sessions: Option<i64>,
    affinity_header: Option<String>,
    affinity_fallback: Option<String>,
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
    header_timeout: Option<String>,
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
    responses: Option<String>,
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
    max_requests_per_minute: Option<i64>,
    max_tokens_per_minute: Option<i64>,
    max_tokens_per_day: Option<i64>,
}

impl Config {
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
                responses: None,
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
}
