//! The load generator: raw hyper HTTP/1.1 client connections, one per
//! simulated client, keep-alive and `TCP_NODELAY`, so the client costs as
//! little as the upstream does and every contender meets the same client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::upstream;

/// Something to send chat completions to: the upstream itself (direct, with
/// a key), or a gateway in front of it (no key: the gateway holds them).
pub struct Target {
    pub name: String,
    pub addr: SocketAddr,
    /// `host:port`, for the `Host` header.
    authority: String,
    /// The chat completions path, e.g. `/v1/chat/completions`.
    path: String,
    /// Extra request headers (Portkey takes its routing config this way;
    /// direct requests carry the first key).
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl Target {
    /// `base` is the OpenAI base URL (`http://127.0.0.1:4000/v1`).
    pub fn new(name: &str, base: &str) -> Target {
        let url = url::Url::parse(base).unwrap_or_else(|e| panic!("{name}: bad URL {base:?}: {e}"));
        let host = url.host_str().expect("a host");
        let port = url.port_or_known_default().expect("a port");
        let addr = format!("{host}:{port}")
            .parse()
            .unwrap_or_else(|_| panic!("{name}: use a numeric address, not {host:?}"));
        Target {
            name: name.to_string(),
            addr,
            authority: format!("{host}:{port}"),
            path: format!("{}/chat/completions", url.path().trim_end_matches('/')),
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Target {
        self.headers.push((
            name.parse().expect("a header name"),
            value.parse().expect("a header value"),
        ));
        self
    }

    /// The upstream, reached without a gateway, with the first key.
    pub fn direct(upstream: SocketAddr) -> Target {
        Target::new("direct", &format!("http://{upstream}/v1"))
            .header("authorization", &format!("Bearer {}", upstream::KEYS[0]))
    }
}

/// The request body: `req-N` lets the upstream say which requests it
/// answered with a 429; `failover` asks the third key to do that.
pub fn body(id: u64, stream: bool, failover: bool) -> Bytes {
    let tag = if failover { " failover" } else { "" };
    Bytes::from(format!(
        r#"{{"model":"bench-model","messages":[{{"role":"user","content":"req-{id}{tag} say hello"}}],"stream":{stream}}}"#
    ))
}

/// One answered request.
pub struct Answer {
    pub status: u16,
    /// From sending the head to the last byte of the body.
    pub micros: u32,
    /// tokenyard's `x-tokenyard-attempts`, when present.
    pub attempts: Option<u32>,
}

/// One finished stream, as its client saw it.
#[derive(Default)]
pub struct StreamRun {
    pub ok: bool,
    /// Request sent → first body byte (the role chunk).
    pub ttfb_us: u32,
    /// Between consecutive content chunks, at the client.
    pub gaps_us: Vec<u32>,
    /// Per content chunk: client arrival − upstream send (the relay's delay
    /// plus the client's own).
    pub relay_us: Vec<u32>,
    /// Worst content chunk: client arrival − when it was due.
    pub max_late_us: u64,
    /// Worst content chunk: upstream send − when it was due (the
    /// upstream's own lateness, not the gateway's).
    pub max_upstream_late_us: u64,
    pub chunks: usize,
}

/// A keep-alive connection; reopened after an error.
pub struct Conn {
    target: Arc<Target>,
    tx: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(target: Arc<Target>) -> Conn {
        Conn { target, tx: None }
    }

    /// The connection, ready for a request: hyper rejects (as "canceled")
    /// a request sent before the previous exchange has fully wound down.
    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if let Some(tx) = self.tx.as_mut()
            && tx.ready().await.is_ok()
        {
            return Ok(self.tx.as_mut().expect("just checked"));
        }
        let tcp = tokio::net::TcpStream::connect(self.target.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", self.target.addr))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        tx.ready().await.map_err(|e| e.to_string())?;
        Ok(self.tx.insert(tx))
    }

    fn request(&self, body: Bytes) -> http::Request<Full<Bytes>> {
        let t = &self.target;
        let mut req = http::Request::post(t.path.as_str())
            .header("host", t.authority.as_str())
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("a valid request");
        for (k, v) in &t.headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        req
    }

    /// A non-streaming request, the body read to the end.
    pub async fn chat(&mut self, body: Bytes) -> Result<Answer, String> {
        let req = self.request(body);
        let start = Instant::now();
        let result = async {
            let resp = self
                .sender()
                .await?
                .send_request(req)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let attempts = resp
                .headers()
                .get("x-tokenyard-attempts")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            resp.into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok(Answer {
                status,
                micros: elapsed_us(start),
                attempts,
            })
        }
        .await;
        if result.is_err() {
            self.tx = None;
        }
        result
    }

    /// A streaming request, read to `[DONE]` with the time of every event.
    pub async fn stream(&mut self, body: Bytes) -> Result<StreamRun, String> {
        let req = self.request(body);
        let start = Instant::now();
        let result = async {
            let resp = self
                .sender()
                .await?
                .send_request(req)
                .await
                .map_err(|e| e.to_string())?;
            if resp.status() != 200 {
                return Err(format!("status {}", resp.status()));
            }
            let mut body = resp.into_body();
            let mut run = StreamRun::default();
            let mut buf: Vec<u8> = Vec::with_capacity(1024);
            let mut first = true;
            let mut last_chunk: Option<Instant> = None;
            let mut done = false;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| e.to_string())?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let now = Instant::now();
                if first {
                    run.ttfb_us = elapsed_us(start);
                    first = false;
                }
                buf.extend_from_slice(&data);
                // Whole events only; a torn one waits for its rest.
                while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    let event: Vec<u8> = buf.drain(..end + 2).collect();
                    if event.starts_with(b"data: [DONE]") {
                        done = true;
                    }
                    let Some((due, sent)) = upstream::stamps(&event) else {
                        continue;
                    };
                    let at = upstream::micros_since_epoch(now);
                    run.chunks += 1;
                    run.relay_us.push(at.saturating_sub(sent) as u32);
                    run.max_late_us = run.max_late_us.max(at.saturating_sub(due));
                    run.max_upstream_late_us =
                        run.max_upstream_late_us.max(sent.saturating_sub(due));
                    if let Some(prev) = last_chunk {
                        run.gaps_us
                            .push(now.duration_since(prev).as_micros() as u32);
                    }
                    last_chunk = Some(now);
                }
            }
            run.ok = done && run.chunks == upstream::CHUNKS;
            Ok(run)
        }
        .await;
        if result.is_err() {
            self.tx = None;
        }
        result
    }
}

fn elapsed_us(start: Instant) -> u32 {
    start.elapsed().as_micros().min(u32::MAX as u128) as u32
}

/// Latencies (µs) of successes, and the count of failures.
#[derive(Default)]
pub struct Sample {
    pub ok: Vec<u32>,
    pub errors: u64,
}

/// Workload 1: one request at a time on one connection per target, the
/// targets taking turns request by request, so drift hits both alike.
pub async fn alternating(targets: &[Arc<Target>], n: usize, warmup: usize) -> Vec<Sample> {
    let mut conns: Vec<Conn> = targets.iter().cloned().map(Conn::new).collect();
    let mut samples: Vec<Sample> = targets.iter().map(|_| Sample::default()).collect();
    for i in 0..warmup + n {
        for (conn, sample) in conns.iter_mut().zip(&mut samples) {
            match conn.chat(body(i as u64, false, false)).await {
                Ok(a) if a.status == 200 => {
                    if i >= warmup {
                        sample.ok.push(a.micros);
                    }
                }
                _ => sample.errors += 1,
            }
        }
    }
    samples
}

/// Workload 2: `conns` connections, each sending its next request as soon
/// as the last is answered. Returns the latencies of the measured window
/// and its length.
pub async fn flat_out(
    target: Arc<Target>,
    conns: usize,
    warmup: Duration,
    secs: Duration,
) -> (Sample, Duration) {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            let (target, measuring, stop, errors) = (
                target.clone(),
                measuring.clone(),
                stop.clone(),
                errors.clone(),
            );
            tokio::spawn(async move {
                let mut conn = Conn::new(target);
                let mut lat = Vec::with_capacity(1 << 16);
                let mut i = (c as u64) << 32;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    match conn.chat(body(i, false, false)).await {
                        Ok(a) if a.status == 200 => {
                            if measuring.load(Ordering::Relaxed) {
                                lat.push(a.micros);
                            }
                        }
                        _ => {
                            if measuring.load(Ordering::Relaxed) {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(warmup).await;
    measuring.store(true, Ordering::SeqCst);
    let start = Instant::now();
    tokio::time::sleep(secs).await;
    measuring.store(false, Ordering::SeqCst);
    let window = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut sample = Sample::default();
    for t in tasks {
        sample.ok.extend(t.await.expect("a load task"));
    }
    sample.errors = errors.load(Ordering::Relaxed);
    (sample, window)
}

/// Workload 4: one failover request at a time. Returns, per request, its id
/// and its answer (or what went wrong).
pub async fn failover(
    target: Arc<Target>,
    n: usize,
    first_id: u64,
) -> Vec<(u64, Result<Answer, String>)> {
    let mut conn = Conn::new(target);
    let mut out = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let id = first_id + i;
        out.push((id, conn.chat(body(id, false, true)).await));
    }
    out
}

/// Workload 3: `total` streams, at most `concurrent` at once, each on its
/// own connection; new streams start no faster than one per `stagger`.
pub async fn streams(
    target: Arc<Target>,
    total: usize,
    concurrent: usize,
    stagger: Duration,
) -> Vec<StreamRun> {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrent));
    let mut tasks = Vec::with_capacity(total);
    let start = tokio::time::Instant::now();
    for i in 0..total {
        let permit = sem.clone().acquire_owned().await.expect("open semaphore");
        tokio::time::sleep_until(start + stagger * i as u32).await;
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(target);
            let run = conn.stream(body(i as u64, true, false)).await;
            drop(permit);
            run.unwrap_or_default()
        }));
    }
    let mut out = Vec::with_capacity(total);
    for t in tasks {
        out.push(t.await.expect("a stream task"));
    }
    out
}
