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

/// A throwaway CA and a `localhost` certificate it signed.
struct Pki {
    ca_pem: String,
    leaf_der: Vec<u8>,
    leaf_key_der: Vec<u8>,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
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

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("tokenyard.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nstate_file = {:?}\n\n[pool]\ntiers = [\"primary\"]\n\n\
             [[provider]]\nname = \"tls\"\nkind = \"openai\"\nbase_url = \"https://localhost:{}/v1\"\nmodels = [\"tls-model\"]\n\n\
             [[credential]]\nname = \"only\"\ntier = \"primary\"\napi_key = \"{KEY}\"\n",
            dir.path().join("state.json").display().to_string(),
            upstream.port()
        ),
    )
    .unwrap();
    let _gateway = tokio::process::Command::new(env!("CARGO_BIN_EXE_tokenyard"))
        .args(["serve", "--no-tui", "--config"])
        .arg(&cfg)
        .env("SSL_CERT_FILE", &ca_file)
        .env_remove("SSL_CERT_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    common::wait_until_up(&base).await;
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
