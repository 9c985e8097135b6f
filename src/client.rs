//! Every HTTP client tokenyard makes starts here: the providers' shared
//! client, the token endpoint's, `attach`'s and the traffic generator's.
//! Proxies come from the environment (never for loopback), and a transport
//! error is described without leaking anything. Below the pool, the
//! upstream adapters, the sim and the dashboard, which all use it; it
//! imports only the config.

use std::time::Duration;

use crate::config::GatewaySettings;

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
    ProxyVars::read(env).reqwest()
}

/// The proxy variables of the environment, read once: the same settings
/// for reqwest's clients ([`env_proxies`]) and the providers' transport
/// (`crate::transport`).
#[derive(Debug, Clone, Default)]
pub struct ProxyVars {
    https: Option<String>,
    pub(crate) http: Option<String>,
    pub(crate) all: Option<String>,
    /// `NO_PROXY` and loopback.
    bypass: String,
}

impl ProxyVars {
    pub fn from_env() -> ProxyVars {
        ProxyVars::read(&|k| std::env::var(k).ok())
    }

    /// See [`env_proxies`].
    pub fn read(env: &dyn Fn(&str) -> Option<String>) -> ProxyVars {
        let get = |name: &str| {
            env(name)
                .or_else(|| env(&name.to_ascii_lowercase()))
                .filter(|v| !v.trim().is_empty())
        };
        let valid = |name: &str| {
            let url = get(name)?;
            if reqwest::Proxy::all(url.as_str()).is_ok() {
                Some(url)
            } else {
                tracing::warn!("{name} is not a proxy URL; requests go without it");
                None
            }
        };
        ProxyVars {
            https: valid("HTTPS_PROXY"),
            http: valid("HTTP_PROXY"),
            all: valid("ALL_PROXY"),
            bypass: format!(
                "{},localhost,127.0.0.0/8,::1",
                get("NO_PROXY").unwrap_or_default()
            ),
        }
    }

    /// reqwest's proxies, in the order curl tries them.
    pub fn reqwest(&self) -> Vec<reqwest::Proxy> {
        let no_proxy = || reqwest::NoProxy::from_string(&self.bypass);
        let mut proxies = Vec::new();
        if let Some(url) = &self.https
            && let Ok(p) = reqwest::Proxy::https(url.as_str())
        {
            proxies.push(p.no_proxy(no_proxy()));
        }
        if let Some(url) = &self.http
            && let Ok(p) = reqwest::Proxy::http(url.as_str())
        {
            proxies.push(p.no_proxy(no_proxy()));
        }
        if let Some(url) = &self.all
            && let Ok(p) = reqwest::Proxy::all(url.as_str())
        {
            proxies.push(p.no_proxy(no_proxy()));
        }
        proxies
    }

    /// hyper's proxy matcher for the same settings.
    pub fn matcher(&self) -> hyper_util::client::proxy::matcher::Matcher {
        let mut b = hyper_util::client::proxy::matcher::Matcher::builder().no(self.bypass.as_str());
        if let Some(url) = &self.https {
            b = b.https(url.as_str());
        }
        if let Some(url) = &self.http {
            b = b.http(url.as_str());
        }
        if let Some(url) = &self.all {
            b = b.all(url.as_str());
        }
        b.build()
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
