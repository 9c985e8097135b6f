//! The providers' HTTP client on the request path: hyper's HTTP/1
//! connections over rustls, `TCP_NODELAY`, the gateway's connect timeout,
//! the environment's proxies (loopback always direct), as
//! [`crate::client`] reads them for every other client, and a pool of idle
//! connections per origin ([`pool`]).
//!
//! It is hyper with nothing between it and the dispatcher. reqwest did the
//! same job through a redirect policy, a retry layer and a URL type, and
//! parsed each request's URL three times; hyper-util's pooled client then
//! hashed its pool key twice, formatted the `Host` header and spawned a
//! task for every answer to return its connection. Here a connection goes
//! back to the pool when the dispatcher has read its answer's body to the
//! end. The token endpoints, the probes and `attach` keep reqwest: they
//! are not hot.
//!
//! A leaf: it imports only the config and the proxy settings of `client`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, Uri};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::client::ProxyVars;
use crate::config::GatewaySettings;

pub(crate) mod h1;
mod pool;

pub use pool::Body;

type Connector = hyper_rustls::HttpsConnector<Route>;

/// How long a connection may idle in the pool before it is not reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per provider origin.
const MAX_IDLE_PER_ORIGIN: usize = 1024;

/// The shared client for every HTTP provider. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    connector: Connector,
    pool: Arc<pool::Pool>,
    proxies: Arc<Matcher>,
    /// Whether any proxy serves `http://` URLs: without one, no request
    /// needs the matcher's (per-request) look.
    http_proxy: bool,
}

/// Why a request got no response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection (refused, unreachable, timed out, TLS, proxy).
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection broke before the answer's head, or the answer's
    /// head is not HTTP.
    Request(h1::Error),
    /// The URL has no host.
    NoHost,
}

impl SendError {
    /// What went wrong, without the URL or anything else configured: the
    /// kind, then the innermost cause (`cannot connect: Connection
    /// refused (os error 111)`).
    pub fn describe(&self) -> String {
        match self {
            SendError::Connect(e) => with_root_cause("cannot connect", e.as_ref()),
            SendError::Request(e) => format!("request failed: {e}"),
            SendError::NoHost => "the provider's URL has no host".to_string(),
        }
    }
}

/// What broke while a response body was being read.
pub fn describe_body_error(e: &h1::Error) -> String {
    e.to_string()
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
        let http_proxy = vars.http.is_some() || vars.all.is_some();
        Transport {
            connector,
            pool: Arc::new(pool::Pool::new(MAX_IDLE_PER_ORIGIN, IDLE_TIMEOUT)),
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
    ) -> Result<Response<Body>, SendError> {
        headers
            .entry(header::USER_AGENT)
            .or_insert(HeaderValue::from_static(USER_AGENT));
        headers
            .entry(header::ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        if self.http_proxy
            && url.scheme() == Some(&http::uri::Scheme::HTTP)
            && let Some(proxy) = self.proxies.intercept(url)
            && let Some(auth) = proxy.basic_auth()
        {
            let mut auth = auth.clone();
            auth.set_sensitive(true);
            headers.insert(header::PROXY_AUTHORIZATION, auth);
        }
        let (Some(scheme), Some(authority), Some(host)) =
            (url.scheme_str(), url.authority(), host(url))
        else {
            return Err(SendError::NoHost);
        };
        let origin = self.pool.origin(scheme, authority.as_str());
        loop {
            // A pooled connection first; one the provider closed while it
            // idled is dropped and the next tried, then a new one.
            let (mut conn, fresh) = match self.pool.checkout(origin) {
                Some(conn) => (conn, false),
                None => (self.connect(url).await?, true),
            };
            // A plain-HTTP proxy is sent the whole URL; a provider, the
            // path.
            let whole;
            let target = if conn.proxied {
                whole = url.to_string();
                whole.as_str()
            } else {
                url.path_and_query().map_or("/", |p| p.as_str())
            };
            if let Err(e) = conn
                .io
                .write_post(target, host.as_bytes(), &headers, &body)
                .await
            {
                // A pooled connection that broke while the request went
                // out had been closed by the provider: it took nothing,
                // so another may carry it.
                if fresh {
                    return Err(SendError::Request(e));
                }
                continue;
            }
            let (head, framing) = conn.io.read_head().await.map_err(SendError::Request)?;
            let body = Body::new(conn, &head, framing, self.pool.clone(), origin);
            let mut resp = Response::new(body);
            *resp.status_mut() = head.status;
            *resp.version_mut() = head.version;
            *resp.headers_mut() = head.headers;
            return Ok(resp);
        }
    }

    /// A new connection to `url`'s origin (through a proxy when the
    /// environment names one), driven by the requests that use it.
    async fn connect(&self, url: &Uri) -> Result<Box<pool::Conn>, SendError> {
        let io = tower::ServiceExt::oneshot(self.connector.clone(), url.clone())
            .await
            .map_err(SendError::Connect)?;
        let proxied = io.connected().is_proxied();
        Ok(Box::new(pool::Conn {
            io: h1::Connection::new(TokioIo::new(io)),
            proxied,
        }))
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
pub(super) struct Leg {
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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::{Transport, host};
    use crate::client::ProxyVars;
    use crate::config::GatewaySettings;

    /// How the test provider ends each answer.
    #[derive(Clone, Copy)]
    enum Ending {
        KeepAlive,
        /// `connection: close`, then closes.
        Close,
        /// Keeps the connection for one answer, then closes it silently
        /// (as a provider's idle timeout does).
        DropAfterOne,
    }

    /// A provider on a loopback port answering every request with a small
    /// JSON body; counts the connections it accepted.
    async fn provider(ending: Ending) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/v1/chat/completions",
            listener.local_addr().unwrap()
        );
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: its head, then `content-length` bytes.
                        let head_end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            if !read_more(&mut tcp, &mut buf).await {
                                return;
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buf.len() < head_end + len {
                            if !read_more(&mut tcp, &mut buf).await {
                                return;
                            }
                        }
                        buf.drain(..head_end + len);
                        let body = r#"{"ok":true}"#;
                        let close = matches!(ending, Ending::Close);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
                            body.len(),
                            if close { "connection: close\r\n" } else { "" },
                        );
                        if tcp.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        if !matches!(ending, Ending::KeepAlive) {
                            return;
                        }
                    }
                });
            }
        });
        (url, accepted)
    }

    /// Appends what the socket has; `false` once it is closed or broken.
    async fn read_more(tcp: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> bool {
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn post(t: &Transport, url: &str) -> Vec<u8> {
        let resp = t
            .post(&url.parse().unwrap(), http::HeaderMap::new(), "{}".into())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    fn transport() -> Transport {
        Transport::with_proxies(&GatewaySettings::default(), &ProxyVars::default())
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_answer_is_read() {
        let (url, accepted) = provider(Ending::KeepAlive).await;
        let t = transport();
        for _ in 0..20 {
            assert_eq!(post(&t, &url).await, br#"{"ok":true}"#);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Two answers open at once need two connections; both are kept.
        let (a, b) = tokio::join!(post(&t, &url), post(&t, &url));
        assert_eq!((a.len(), b.len()), (11, 11));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        for _ in 0..5 {
            post(&t, &url).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_answer_dropped_unread_takes_its_connection_with_it() {
        let (url, accepted) = provider(Ending::KeepAlive).await;
        let t = transport();
        let resp = t
            .post(&url.parse().unwrap(), http::HeaderMap::new(), "{}".into())
            .await
            .unwrap();
        drop(resp);
        post(&t, &url).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connections_the_provider_closes_are_not_reused() {
        for ending in [Ending::Close, Ending::DropAfterOne] {
            let (url, accepted) = provider(ending).await;
            let t = transport();
            for _ in 0..10 {
                assert_eq!(post(&t, &url).await, br#"{"ok":true}"#);
                // Let the provider's close arrive, as it would between
                // requests of a real client.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 10);
        }
    }

    #[test]
    fn host_header_as_hyper_writes_it() {
        let cases = [
            ("http://127.0.0.1:18500/v1", "127.0.0.1:18500"),
            ("https://api.openai.com/v1", "api.openai.com"),
            ("https://api.openai.com:443/v1", "api.openai.com"),
            ("http://models.local:80/v1", "models.local"),
            ("https://models.local:80/v1", "models.local:80"),
            ("http://[::1]:8080/v1", "[::1]:8080"),
            ("http://[::1]/v1", "[::1]"),
            ("http://user:pw@proxy.local:3128/", "proxy.local:3128"),
            ("http://user:pw@proxy.local/", "proxy.local"),
        ];
        for (url, want) in cases {
            let got = host(&url.parse().unwrap()).unwrap();
            assert_eq!(got.to_str().unwrap(), want, "{url}");
        }
    }
}
