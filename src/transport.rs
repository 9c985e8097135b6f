//! The providers' HTTP client on the request path: hyper's pooled client
//! over rustls, HTTP/1.1, `TCP_NODELAY`, the gateway's connect timeout, and
//! the environment's proxies (loopback always direct), as [`crate::client`]
//! reads them for every other client.
//!
//! It is hyper's client with nothing between it and the dispatcher. reqwest
//! did the same job through a redirect policy, a retry layer and a URL
//! type, and parsed each request's URL three times; on the gateway bench
//! that cost about a fifth of tokenyard's CPU per request. The token
//! endpoints, the probes and `attach` keep reqwest: they are not hot.
//!
//! A leaf: it imports only the config and the proxy settings of `client`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::client::ProxyVars;
use crate::config::GatewaySettings;

type Connector = hyper_rustls::HttpsConnector<Route>;

/// The shared client for every HTTP provider. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    client: Client<Connector, Full<Bytes>>,
    proxies: Arc<Matcher>,
    /// Whether any proxy serves `http://` URLs: without one, no request
    /// needs the matcher's (per-request) look.
    http_proxy: bool,
}

/// Why a request got no response head.
#[derive(Debug)]
pub struct SendError(hyper_util::client::legacy::Error);

impl SendError {
    /// What went wrong, without the URL or anything else configured: the
    /// kind, then the innermost cause (`cannot connect: Connection
    /// refused (os error 111)`).
    pub fn describe(&self) -> String {
        let what = if self.0.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        with_root_cause(what, &self.0)
    }
}

/// What broke while a response body was being read.
pub fn describe_body_error(e: &hyper::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else {
        "connection broke while reading the response"
    };
    with_root_cause(what, e)
}

fn with_root_cause(what: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e.source();
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

impl Transport {
    /// The client for `settings` (its `connect_timeout`) and the proxies
    /// the environment names.
    pub fn new(settings: &GatewaySettings) -> Transport {
        Transport::with_proxies(settings, &ProxyVars::from_env())
    }

    pub fn with_proxies(settings: &GatewaySettings, vars: &ProxyVars) -> Transport {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        // `https://` needs TLS; `http://` (a local model server, the sim)
        // does not.
        http.enforce_http(false);
        let proxies = Arc::new(vars.matcher());
        let route = Route {
            http,
            proxies: proxies.clone(),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(route);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        let http_proxy = vars.http.is_some() || vars.all.is_some();
        Transport {
            client,
            proxies,
            http_proxy,
        }
    }

    /// `POST url` with `headers` and `body`; resolves when the response
    /// head arrives. `headers` gain a `user-agent` and `accept` when the
    /// client sent none, and `proxy-authorization` when a plain-HTTP
    /// proxy with credentials carries the request.
    pub async fn post(
        &self,
        url: &Uri,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>, SendError> {
        headers
            .entry(header::USER_AGENT)
            .or_insert(HeaderValue::from_static(USER_AGENT));
        headers
            .entry(header::ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        // hyper's client would format it for every request.
        if let Some(host) = host(url) {
            headers.insert(header::HOST, host);
        }
        if self.http_proxy
            && url.scheme() == Some(&http::uri::Scheme::HTTP)
            && let Some(proxy) = self.proxies.intercept(url)
            && let Some(auth) = proxy.basic_auth()
        {
            let mut auth = auth.clone();
            auth.set_sensitive(true);
            headers.insert(header::PROXY_AUTHORIZATION, auth);
        }
        let mut req = Request::post(url.clone())
            .body(Full::new(body))
            .expect("a parsed URI and a method make a valid request");
        *req.headers_mut() = headers;
        self.client.request(req).await.map_err(SendError)
    }
}

/// The `Host` header for `url`: its host, and its port when not the
/// scheme's default (as hyper's client writes it).
fn host(url: &Uri) -> Option<HeaderValue> {
    let authority = url.authority()?;
    let default_port = match url.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    let value = match authority.port_u16() {
        // `[userinfo@]host:port`, minus the userinfo.
        Some(port) if Some(port) != default_port => authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, hp)| hp),
        _ => authority.host(),
    };
    HeaderValue::from_str(value).ok()
}

const USER_AGENT: &str = concat!("tokenyard/", env!("CARGO_PKG_VERSION"));

/// rustls with the platform's roots (which honour `SSL_CERT_FILE`), as
/// every other client of tokenyard has them.
fn tls_config() -> rustls::ClientConfig {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // ALPN (`http/1.1` only) is the connector's to set.
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map(|b| b.with_no_client_auth())
        .expect("rustls' default protocol versions and the platform verifier")
}

/// The TCP leg of a connection: straight to the provider, through a
/// `CONNECT` tunnel (HTTPS through a proxy; TLS then runs end to end), or
/// to a plain-HTTP proxy that is handed the whole URL.
#[derive(Clone)]
struct Route {
    http: HttpConnector,
    proxies: Arc<Matcher>,
}

impl tower_service::Service<Uri> for Route {
    type Response = Leg;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Leg, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let proxy = self.proxies.intercept(&dst);
        Box::pin(async move {
            let Some(proxy) = proxy else {
                let io = tower_service::Service::call(&mut http, dst).await?;
                return Ok(Leg { io, proxied: false });
            };
            if dst.scheme() == Some(&http::uri::Scheme::HTTPS) {
                let mut tunnel = Tunnel::new(proxy.uri().clone(), http);
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let io = tower_service::Service::call(&mut tunnel, dst).await?;
                return Ok(Leg { io, proxied: false });
            }
            let io = tower_service::Service::call(&mut http, proxy.uri().clone()).await?;
            Ok(Leg { io, proxied: true })
        })
    }
}

/// A connected socket, and whether it reaches a plain-HTTP proxy (hyper
/// then sends the whole URL in the request line).
struct Leg {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl Connection for Leg {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl hyper::rt::Read for Leg {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Leg {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::host;

    #[test]
    fn host_header_as_hyper_writes_it() {
        let h = |url: &str| host(&url.parse().unwrap()).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            h("http://127.0.0.1:18500/v1").as_deref(),
            Some("127.0.0.1:18500")
        );
        assert_eq!(
            h("https://api.openai.com/v1").as_deref(),
            Some("api.openai.com")
        );
        assert_eq!(
            h("https://api.openai.com:443/v1").as_deref(),
            Some("api.openai.com")
        );
        assert_eq!(
            h("http://models.local:80/v1").as_deref(),
            Some("models.local")
        );
        assert_eq!(
            h("https://models.local:80/v1").as_deref(),
            Some("models.local:80")
        );
        assert_eq!(h("http://[::1]:8080/v1").as_deref(), Some("[::1]:8080"));
        assert_eq!(h("http://[::1]/v1").as_deref(), Some("[::1]"));
        assert_eq!(
            h("http://user:pw@proxy.local:3128/").as_deref(),
            Some("proxy.local:3128")
        );
        assert_eq!(
            h("http://user:pw@proxy.local/").as_deref(),
            Some("proxy.local")
        );
    }
}
