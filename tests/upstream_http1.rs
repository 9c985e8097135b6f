//! The upstream connection protocol, against a TLS provider that offers
//! HTTP/2 by ALPN with a cap of one concurrent stream per connection.
//!
//! hyper's HTTP/2 client never opens a second connection to a host: once a
//! server's `SETTINGS_MAX_CONCURRENT_STREAMS` is reached, further requests
//! wait, without an error, until an earlier stream ends (hyperium/hyper
//! #2197, #3623). LLM streams last minutes and real front ends cap at
//! 100–256, so a gateway on HTTP/2 would stall its busiest users silently.
//! tokenyard speaks HTTP/1.1 to HTTP providers, one connection per
//! request in flight; this test holds three long streams open at once and
//! requires each one's first chunk at once.
//!
//! The real binary runs with `SSL_CERT_FILE` naming a throwaway CA, which
//! is how its TLS stack (rustls with the system's roots) is told to trust
//! the mock provider.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

const KEY: &str = "fake-tls-key-river";
/// How long each upstream stream stays open after its first content chunk.
const HOLD: Duration = Duration::from_millis(1500);

/// What the mock provider saw.
#[derive(Default)]
struct Seen {
    alpn_h2: AtomicUsize,
    alpn_h1: AtomicUsize,
    requests_h1: AtomicUsize,
    requests_h2: AtomicUsize,
}

/// A throwaway CA and a certificate it signed.
struct Pki {
    ca_pem: String,
    leaf_der: Vec<u8>,
    leaf_key_der: Vec<u8>,
}

fn pki() -> Pki {
    pki_for("localhost")
}

/// A throwaway CA and a certificate for `name` it signed.
fn pki_for(name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        leaf_der: leaf.der().to_vec(),
        leaf_key_der: leaf_key.serialize_der(),
    }
}

fn chunk(delta: &str, finish: &str) -> Bytes {
    Bytes::from(format!(
        "data: {{\"id\":\"chatcmpl-tls\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
         \"model\":\"tls-model\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
    ))
}

/// An OpenAI-style provider over TLS, offering `h2` and `http/1.1`, with
/// HTTP/2 connections limited to one concurrent stream.
async fn provider(pki: &Pki, seen: Arc<Seen>) -> SocketAddr {
    let mut tls = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![pki.leaf_der.clone().into()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.leaf_key_der.clone())),
        )
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                match stream.get_ref().1.alpn_protocol() {
                    Some(b"h2") => seen.alpn_h2.fetch_add(1, Ordering::SeqCst),
                    _ => seen.alpn_h1.fetch_add(1, Ordering::SeqCst),
                };
                let mut server = auto::Builder::new(TokioExecutor::new());
                server.http2().max_concurrent_streams(1);
                let svc = hyper::service::service_fn(move |req| answer(req, seen.clone()));
                let _ = server.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

async fn answer(
    req: Request<Incoming>,
    seen: Arc<Seen>,
) -> Result<
    Response<
        StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>,
    >,
    Infallible,
> {
    match req.version() {
        Version::HTTP_2 => seen.requests_h2.fetch_add(1, Ordering::SeqCst),
        _ => seen.requests_h1.fetch_add(1, Ordering::SeqCst),
    };
    let authorized = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == format!("Bearer {KEY}").as_bytes());
    assert!(authorized, "the gateway sent the credential");
    let first = futures_util::stream::iter([
        chunk(r#"{"role":"assistant","content":""}"#, "null"),
        chunk(r#"{"content":"hello"}"#, "null"),
    ]);
    let rest = futures_util::stream::once(async {
        tokio::time::sleep(HOLD).await;
        chunk("{}", "\"stop\"")
    })
    .chain(futures_util::stream::iter([Bytes::from_static(
        b"data: [DONE]\n\n",
    )]));
    let body = first
        .chain(rest)
        .map(|b| Ok::<_, Infallible>(Frame::data(b)))
        .boxed();
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(body))
        .unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_streams_never_wait_behind_a_providers_http2_stream_cap() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let seen = Arc::new(Seen::default());
    let upstream = provider(&pki, seen.clone()).await;

    let (_gateway, base) = gateway(
        dir.path(),
        &format!("https://localhost:{}/v1", upstream.port()),
        &[("SSL_CERT_FILE", ca_file.display().to_string())],
    )
    .await;
    let client = common::client();

    let started = Instant::now();
    let streams: Vec<_> = (0..3)
        .map(|_| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                let resp = client
                    .post(format!("{base}/v1/chat/completions"))
                    .json(&serde_json::json!({
                        "model": "tls-model",
                        "stream": true,
                        "messages": [{"role": "user", "content": "hi"}],
                    }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200, "the stream was accepted");
                let mut body = resp.bytes_stream();
                let mut text = Vec::new();
                let mut first_content = None;
                while let Some(piece) = body.next().await {
                    text.extend_from_slice(&piece.unwrap());
                    if first_content.is_none() && text.windows(5).any(|w| w == b"hello") {
                        first_content = Some(started.elapsed());
                    }
                }
                (first_content, String::from_utf8(text).unwrap())
            })
        })
        .collect();
    for s in streams {
        let (first, text) = s.await.unwrap();
        let first = first.expect("the content chunk arrived");
        assert!(
            first < HOLD / 2,
            "a stream's first content came {first:?} after the start: it waited for another \
             stream to end"
        );
        assert!(
            text.contains("data: [DONE]"),
            "the stream ended whole: {text}"
        );
    }
    assert_eq!(
        seen.requests_h2.load(Ordering::SeqCst),
        0,
        "no request went over HTTP/2"
    );
    assert_eq!(seen.requests_h1.load(Ordering::SeqCst), 3);
    assert_eq!(seen.alpn_h2.load(Ordering::SeqCst), 0, "h2 was not offered");
}

/// The binary with one provider at `base_url` and `env` set.
async fn gateway(
    dir: &std::path::Path,
    base_url: &str,
    env: &[(&str, String)],
) -> (tokio::process::Child, String) {
    common::spawn_one_key(dir, base_url, KEY, env).await
}

/// An HTTP proxy that serves `CONNECT` only: it reports each request head
/// it gets, then joins the client to `to` whatever host it named.
async fn connect_proxy(
    to: SocketAddr,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                // Byte by byte: what follows the head is the TLS handshake.
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => head.push(byte[0]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let _ = tx.send(head.clone());
                if !head.starts_with("CONNECT ") {
                    let _ = conn
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let Ok(mut upstream) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let _ = conn
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
            });
        }
    });
    (addr, rx)
}

/// `HTTPS_PROXY` with credentials: an HTTPS provider is reached through a
/// `CONNECT` tunnel that carries them, TLS runs end to end inside it (the
/// certificate checked against the provider's name), and the credential
/// goes only to the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_provider_is_reached_through_the_environments_connect_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_for("provider.test");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let seen = Arc::new(Seen::default());
    let upstream = provider(&pki, seen.clone()).await;
    let (proxy, mut heads) = connect_proxy(upstream).await;
    let (_gateway, base) = gateway(
        dir.path(),
        // Not a name this machine resolves: only the proxy knows the way.
        "https://provider.test/v1",
        &[
            ("SSL_CERT_FILE", ca_file.display().to_string()),
            (
                "HTTPS_PROXY",
                format!("http://tunnel-user:tunnel-pass@{proxy}"),
            ),
        ],
    )
    .await;
    let resp = common::client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({
            "model": "tls-model",
            "stream": true,
            "messages": [{"role": "user", "content": "hi"}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("hello") && text.contains("data: [DONE]"),
        "{text}"
    );
    let head = heads
        .try_recv()
        .expect("the request went through the proxy");
    assert!(
        head.starts_with("CONNECT provider.test:443 HTTP/1.1\r\n"),
        "a tunnel to the provider's name and port: {head}"
    );
    // "tunnel-user:tunnel-pass" in base64.
    assert!(
        head.to_ascii_lowercase()
            .contains("proxy-authorization: basic dhvubmvslxvzzxi6dhvubmvslxbhc3m="),
        "the proxy's credentials ride on the CONNECT: {head}"
    );
    assert!(
        !head.contains(KEY),
        "the provider's key never reaches the proxy in the clear"
    );
    assert_eq!(
        seen.alpn_h1.load(Ordering::SeqCst),
        1,
        "TLS ran inside the tunnel"
    );
    assert_eq!(seen.requests_h1.load(Ordering::SeqCst), 1);
}
