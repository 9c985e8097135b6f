//! Gemini over gRPC never queues a request behind HTTP/2's per-connection
//! stream cap: an upstream that allows `CAP` concurrent streams per
//! connection (SETTINGS_MAX_CONCURRENT_STREAMS, as Google's front ends
//! advertise 100) still starts every one of more than `CAP` held-open
//! streams at once, because the gateway opens another connection instead
//! of letting hyper wait for a free stream.
//!
//! The upstream here is a real tonic server of `GenerativeService` whose
//! streams send their first message at once and then stay open, ticking,
//! until the test releases them: on one connection, stream `CAP + 1`
//! would get nothing until then.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{Stream, StreamExt as _, stream};
use serde_json::{Value, json};
use tokenyard::config::Config;
use tokenyard::gateway::{self, AppState, dispatch::GeminiClients};
use tokenyard::gemini::v1beta as pb;
use tokenyard::pool::PoolHandle;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use pb::generative_service_server::{GenerativeService, GenerativeServiceServer};

/// Concurrent streams the upstream allows per connection.
const CAP: u32 = 2;
/// Streams held open at once: more than one connection carries.
const HELD: usize = 5;
/// How long a first message may take. Locally it takes milliseconds; a
/// queued stream would wait for the release, which never comes first.
const PROMPT: Duration = Duration::from_secs(5);
/// Gap between the messages of a held stream, so a gateway writing to a
/// client that went away notices.
const TICK: Duration = Duration::from_millis(50);

/// The upstream's view: connections accepted, streams open now and at most.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    open: AtomicUsize,
    peak: AtomicUsize,
}

/// Counts a stream open for as long as it lives.
struct OpenStream(Arc<Seen>);

impl OpenStream {
    fn new(seen: &Arc<Seen>) -> Self {
        let now = seen.open.fetch_add(1, Ordering::SeqCst) + 1;
        seen.peak.fetch_max(now, Ordering::SeqCst);
        OpenStream(seen.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

fn message(text: &str, last: bool) -> pb::GenerateContentResponse {
    pb::GenerateContentResponse {
        candidates: vec![pb::Candidate {
            index: Some(0),
            content: Some(pb::Content {
                parts: vec![pb::Part {
                    data: Some(pb::part::Data::Text(text.to_owned())),
                    thought: false,
                }],
                role: "model".to_owned(),
            }),
            finish_reason: if last {
                pb::candidate::FinishReason::Stop as i32
            } else {
                pb::candidate::FinishReason::Unspecified as i32
            },
            ..Default::default()
        }],
        ..Default::default()
    }
}

type Messages = Pin<Box<dyn Stream<Item = Result<pb::GenerateContentResponse, Status>> + Send>>;

struct Held {
    seen: Arc<Seen>,
    release: CancellationToken,
}

#[tonic::async_trait]
impl GenerativeService for Held {
    async fn generate_content(
        &self,
        _: Request<pb::GenerateContentRequest>,
    ) -> Result<Response<pb::GenerateContentResponse>, Status> {
        Ok(Response::new(message("[whole]", true)))
    }

    type StreamGenerateContentStream = Messages;

    /// "[0]" at once, "." every [`TICK`] until released, then "[end]".
    async fn stream_generate_content(
        &self,
        _: Request<pb::GenerateContentRequest>,
    ) -> Result<Response<Messages>, Status> {
        let open = OpenStream::new(&self.seen);
        let release = self.release.clone();
        let rest = stream::unfold(Some((open, release)), |state| async move {
            let (open, release) = state?;
            tokio::select! {
                _ = release.cancelled() => Some((Ok(message("[end]", true)), None)),
                _ = tokio::time::sleep(TICK) => Some((Ok(message(".", false)), Some((open, release)))),
            }
        });
        let first = stream::once(async { Ok(message("[0]", false)) });
        Ok(Response::new(first.chain(rest).boxed()))
    }
}

struct Upstream {
    addr: SocketAddr,
    seen: Arc<Seen>,
    release: CancellationToken,
}

impl Upstream {
    /// A tonic server allowing `cap` concurrent streams per connection,
    /// counting the connections it accepts.
    async fn start(cap: u32) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let release = CancellationToken::new();
        let counted = seen.clone();
        let incoming = stream::unfold(listener, move |l| {
            let counted = counted.clone();
            async move {
                let accepted = l.accept().await.map(|(tcp, _)| {
                    counted.connections.fetch_add(1, Ordering::SeqCst);
                    let _ = tcp.set_nodelay(true);
                    tcp
                });
                Some((accepted, l))
            }
        });
        let service = GenerativeServiceServer::new(Held {
            seen: seen.clone(),
            release: release.clone(),
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .max_concurrent_streams(cap)
                .add_service(service)
                .serve_with_incoming(Box::pin(incoming)),
        );
        Upstream {
            addr,
            seen,
            release,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.seen.open.load(Ordering::SeqCst)
    }
}

struct Gateway {
    addr: SocketAddr,
    state: Arc<AppState>,
}

/// A gateway in this process whose one provider is `upstream`, with
/// `gemini` as its gRPC connections (a stream cap of our choosing).
async fn gateway(upstream: &Upstream, gemini: GeminiClients) -> Gateway {
    let toml = format!(
        "listen = \"127.0.0.1:0\"\n\
         [pool]\ntiers = [\"main\"]\n\n\
         [[provider]]\nname = \"gem\"\nkind = \"gemini\"\nbase_url = \"{}\"\nmodels = [\"gemini-*\"]\n\n\
         [[credential]]\nname = \"k1\"\ntier = \"main\"\napi_key = \"AIza-fake-stream-cap\"\n",
        upstream.url()
    );
    let mut config =
        Config::parse(&toml, "test.toml", &std::env::temp_dir(), &|_| None).expect("config");
    config.state_file = None;
    let http = tokenyard::upstream::http_client(&config.gateway);
    let (pool, _) = PoolHandle::new(&config, http);
    let stop = CancellationToken::new();
    pool.start(stop.clone());
    let mut state = AppState::new(pool, stop.clone());
    state.gemini = gemini;
    let state = Arc::new(state);
    let app = gateway::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Gateway { addr, state }
}

fn body(stream: bool) -> Value {
    json!({
        "model": "gemini-test",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
    })
}

async fn post(client: &reqwest::Client, gw: &Gateway, stream: bool) -> reqwest::Response {
    client
        .post(format!("http://{}/v1/chat/completions", gw.addr))
        .json(&body(stream))
        .send()
        .await
        .expect("gateway answers")
}

/// The content of every `data:` event in `text`, and whether `[DONE]` came.
fn contents(text: &str) -> (String, bool) {
    let mut out = String::new();
    let mut done = false;
    for line in text.lines() {
        match line.strip_prefix("data: ") {
            Some("[DONE]") => done = true,
            Some(data) => {
                let v: Value = serde_json::from_str(data).expect("an event is JSON");
                if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                    out.push_str(t);
                }
            }
            None => {}
        }
    }
    (out, done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_one_connections_cap_start_at_once() {
    let upstream = Upstream::start(CAP).await;
    let gw = gateway(&upstream, GeminiClients::with_stream_cap(CAP as usize)).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    // One plain call first: the connection exists and the upstream's
    // SETTINGS (the cap) have arrived before the streams start.
    let resp = post(&client, &gw, false).await;
    assert_eq!(resp.status(), 200);
    let whole: Value = resp.json().await.unwrap();
    assert_eq!(whole["choices"][0]["message"]["content"], "[whole]");

    // HELD streams at once, none of which ends before the release.
    let t0 = Instant::now();
    let firsts = futures_util::future::join_all((0..HELD).map(|_| {
        let client = client.clone();
        let gw = &gw;
        async move {
            tokio::time::timeout(PROMPT, async {
                let mut resp = post(&client, gw, true).await;
                assert_eq!(resp.status(), 200);
                let first = resp.chunk().await.unwrap().expect("a first chunk");
                (resp, first, t0.elapsed())
            })
            .await
        }
    }))
    .await;
    let waits: Vec<Option<Duration>> = firsts
        .iter()
        .map(|r| r.as_ref().ok().map(|(_, _, at)| *at))
        .collect();
    let started = waits.iter().filter(|w| w.is_some()).count();
    assert_eq!(
        started,
        HELD,
        "only {started} of {HELD} streams had a first message within {PROMPT:?} \
         (cap {CAP} per upstream connection; first-message times {waits:?}; \
         upstream connections {})",
        upstream.connections()
    );
    assert_eq!(
        upstream.open(),
        HELD,
        "every stream is open upstream at once"
    );
    assert_eq!(
        upstream.connections(),
        HELD.div_ceil(CAP as usize),
        "one connection per {CAP} streams"
    );
    assert_eq!(gw.state.gemini.in_flight(&upstream.url()), HELD);
    println!("first messages after {waits:?}");

    // Released, every stream ends whole.
    upstream.release.cancel();
    for r in firsts {
        let (resp, first, _) = r.unwrap();
        let rest = resp.text().await.unwrap();
        let (text, done) = contents(&format!("{}{rest}", String::from_utf8_lossy(&first)));
        assert!(text.starts_with("[0]") && text.ends_with("[end]"), "{text}");
        assert!(done);
    }
    assert_eq!(upstream.seen.peak.load(Ordering::SeqCst), HELD);
    assert_eq!(gw.state.gemini.in_flight(&upstream.url()), 0);
    assert_eq!(
        gw.state.gemini.connections(&upstream.url()),
        HELD.div_ceil(CAP as usize)
    );
}

/// Polls `done` every 10 ms for up to five seconds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 5s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client that goes away mid-stream frees its place on the connection:
/// the next stream takes it instead of opening another connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_frees_its_place() {
    let upstream = Upstream::start(1).await;
    let gw = gateway(&upstream, GeminiClients::with_stream_cap(1)).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = upstream.url();

    let mut resp = post(&client, &gw, true).await;
    resp.chunk().await.unwrap().expect("a first chunk");
    resp.chunk().await.unwrap().expect("a tick");
    assert_eq!(gw.state.gemini.in_flight(&url), 1);
    drop(resp);
    eventually("the place is freed once the client is gone", || {
        gw.state.gemini.in_flight(&url) == 0 && upstream.open() == 0
    })
    .await;

    let mut resp = post(&client, &gw, true).await;
    resp.chunk().await.unwrap().expect("a first chunk");
    assert_eq!(upstream.connections(), 1, "the freed place is used again");
    upstream.release.cancel();
    let rest = resp.text().await.unwrap();
    assert!(
        rest.contains("[end]") && rest.ends_with("data: [DONE]\n\n"),
        "{rest}"
    );
    eventually("a finished stream frees its place", || {
        gw.state.gemini.in_flight(&url) == 0
    })
    .await;
}
