//! Synthetic client traffic for the demo: chat completions, streamed and
//! plain, at a steady rate, each answer checked for completeness.
//!
//! The sim numbers its content pieces `[0][1]...`, so a client can tell a
//! truncated, reordered or duplicated answer from a whole one. The counters
//! are atomics so the dashboard can read them while traffic runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// What traffic to send, and where.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// OpenAI-style base URL, e.g. the gateway's `http://127.0.0.1:8787/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer`, if set.
    pub client_key: Option<String>,
    /// Models to pick from at random (`sim-small` when empty).
    pub models: Vec<String>,
    /// Most requests in flight at once.
    pub concurrency: usize,
    /// Request starts per second; 0 means as fast as `concurrency` allows.
    pub rate_per_sec: f64,
    /// Share of requests that ask for a stream.
    pub stream_ratio: f64,
    /// Seeds the choice of model, stream and length, so runs repeat.
    pub seed: u64,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            base_url: "http://127.0.0.1:8787/v1".to_owned(),
            client_key: None,
            models: vec!["sim-small".to_owned(), "sim-large".to_owned()],
            concurrency: 8,
            rate_per_sec: 5.0,
            stream_ratio: 0.5,
            seed: 0,
        }
    }
}

/// A client gives up on one request after this long (stalls end here).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Live counts, shared with whoever wants to watch the run.
#[derive(Debug, Default)]
pub struct TrafficCounters {
    sent: AtomicU64,
    ok: AtomicU64,
    stream_errors: AtomicU64,
    body_errors: AtomicU64,
    transport_errors: AtomicU64,
    cancelled: AtomicU64,
    in_flight: AtomicU64,
    by_status: Mutex<BTreeMap<u16, u64>>,
}

/// A snapshot of [`TrafficCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrafficReport {
    /// Requests started.
    pub sent: u64,
    /// 2xx answers that arrived whole and in order.
    pub ok: u64,
    /// Response heads received, by status code.
    pub by_status: BTreeMap<u16, u64>,
    /// 2xx streams that carried an error event, broke off, lacked `[DONE]`,
    /// or had pieces missing, out of order or duplicated.
    pub stream_errors: u64,
    /// 2xx plain answers that broke off or had the wrong content.
    pub body_errors: u64,
    /// Requests that got no response head (connect failure, timeout).
    pub transport_errors: u64,
    /// Requests still open when the run was cancelled.
    pub cancelled: u64,
    /// Requests open at the time of the snapshot.
    pub in_flight: u64,
}

impl TrafficReport {
    /// Answers with this status.
    pub fn status(&self, code: u16) -> u64 {
        self.by_status.get(&code).copied().unwrap_or(0)
    }
}

impl TrafficCounters {
    pub fn snapshot(&self) -> TrafficReport {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TrafficReport {
            sent: load(&self.sent),
            ok: load(&self.ok),
            by_status: self
                .by_status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            stream_errors: load(&self.stream_errors),
            body_errors: load(&self.body_errors),
            transport_errors: load(&self.transport_errors),
            cancelled: load(&self.cancelled),
            in_flight: load(&self.in_flight),
        }
    }

    fn record(&self, outcome: &Outcome) {
        let status = match *outcome {
            Outcome::Transport => {
                self.transport_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Outcome::Refused(s) => s,
            Outcome::Whole(s) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                s
            }
            Outcome::Broken { status, stream } => {
                let counter = if stream {
                    &self.stream_errors
                } else {
                    &self.body_errors
                };
                counter.fetch_add(1, Ordering::Relaxed);
                status
            }
        };
        let mut by_status = self.by_status.lock().unwrap_or_else(|p| p.into_inner());
        *by_status.entry(status).or_default() += 1;
    }
}

/// Keeps `in_flight` honest and counts requests cut off by cancellation
/// (their task is dropped before it records an outcome).
struct InFlight {
    counters: Arc<TrafficCounters>,
    finished: bool,
}

impl InFlight {
    fn finish(mut self, outcome: &Outcome) {
        self.counters.record(outcome);
        self.finished = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.finished {
            self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Transport,
    /// A non-2xx answer.
    Refused(u16),
    /// A 2xx answer, complete and correct.
    Whole(u16),
    /// A 2xx answer that was not.
    Broken {
        status: u16,
        stream: bool,
    },
}

/// One request to send.
#[derive(Debug, Clone)]
struct Plan {
    n: u64,
    model: String,
    stream: bool,
    max_tokens: usize,
}

/// Sends traffic until `cancel` fires, then returns the final counts.
pub async fn run(cfg: TrafficConfig, cancel: CancellationToken) -> TrafficReport {
    run_with(cfg, cancel, Arc::default()).await
}

/// Starts traffic in the background; read live counts from the returned
/// counters, the final report from the task.
pub fn spawn(
    cfg: TrafficConfig,
    cancel: CancellationToken,
) -> (Arc<TrafficCounters>, JoinHandle<TrafficReport>) {
    let counters = Arc::new(TrafficCounters::default());
    let task = tokio::spawn(run_with(cfg, cancel, counters.clone()));
    (counters, task)
}

/// Like [`run`], counting into `counters`.
pub async fn run_with(
    cfg: TrafficConfig,
    cancel: CancellationToken,
    counters: Arc<TrafficCounters>,
) -> TrafficReport {
    let client = match crate::client::client_builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
    {
        Ok(c) => c,
        Err(err) => {
            tracing::error!("traffic: cannot build an HTTP client: {err}");
            return counters.snapshot();
        }
    };
    let url: Arc<str> = format!("{}/chat/completions", cfg.base_url.trim_end_matches('/')).into();
    let key: Option<Arc<str>> = cfg.client_key.as_deref().map(Arc::from);
    let models = if cfg.models.is_empty() {
        vec!["sim-small".to_owned()]
    } else {
        cfg.models.clone()
    };
    let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let mut ticker = (cfg.rate_per_sec.is_finite() && cfg.rate_per_sec > 0.0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.rate_per_sec));
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut tasks = JoinSet::new();
    for n in 1u64.. {
        if let Some(t) = ticker.as_mut() {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = t.tick() => {}
            }
        }
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let plan = Plan {
            n,
            model: models[rng.random_range(0..models.len())].clone(),
            stream: rng.random_bool(cfg.stream_ratio.clamp(0.0, 1.0)),
            max_tokens: rng.random_range(3..=12),
        };
        counters.sent.fetch_add(1, Ordering::Relaxed);
        counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight {
            counters: counters.clone(),
            finished: false,
        };
        let (client, url, key) = (client.clone(), url.clone(), key.clone());
        tasks.spawn(async move {
            let outcome = one_request(&client, &url, key.as_deref(), &plan).await;
            guard.finish(&outcome);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    tasks.shutdown().await;
    counters.snapshot()
}

async fn one_request(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    plan: &Plan,
) -> Outcome {
    let mut body = json!({
        "model": plan.model,
        "messages": [{"role": "user", "content": format!("Count for me, please (request {}).", plan.n)}],
        "max_tokens": plan.max_tokens,
        "stream": plan.stream,
    });
    if plan.stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    let mut req = client.post(url).json(&body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(err) => {
            tracing::debug!("traffic: request {} failed: {err}", plan.n);
            return Outcome::Transport;
        }
    };
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        // Drain so the connection can be reused.
        let _ = resp.bytes().await;
        return Outcome::Refused(status);
    }
    let broken = Outcome::Broken {
        status,
        stream: plan.stream,
    };
    let whole = if plan.stream {
        let mut check = SseCheck::default();
        loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => check.feed(&bytes),
                Ok(None) => break,
                Err(_) => return broken,
            }
        }
        check.verdict(plan.max_tokens)
    } else {
        match resp.bytes().await {
            Ok(bytes) => check_plain(&bytes, plan.max_tokens),
            Err(_) => return broken,
        }
    };
    if whole {
        Outcome::Whole(status)
    } else {
        broken
    }
}

/// Whether `text` is exactly `[0][1]...[n-1]`.
fn is_sequence(text: &str, n: usize) -> bool {
    let mut rest = text;
    for i in 0..n {
        let piece = format!("[{i}]");
        match rest.strip_prefix(piece.as_str()) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

fn check_plain(body: &[u8], n: usize) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    v.pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .is_some_and(|text| is_sequence(text, n))
}

/// Reads an SSE stream incrementally and judges it at the end.
#[derive(Debug, Default)]
struct SseCheck {
    /// Bytes not yet forming a whole event.
    pending: Vec<u8>,
    text: String,
    done: bool,
    /// An error event, unparseable data, or data after `[DONE]`.
    bad: bool,
}

impl SseCheck {
    fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend(bytes.iter().filter(|&&b| b != b'\r'));
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.pending.drain(..end + 2).collect();
            self.event(&String::from_utf8_lossy(&event));
        }
    }

    fn event(&mut self, event: &str) {
        let mut data = String::new();
        for line in event.lines() {
            if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            } else if line.strip_prefix("event:").map(str::trim) == Some("error") {
                self.bad = true;
            }
        }
        if data.is_empty() {
            return;
        }
        if self.done {
            self.bad = true;
            return;
        }
        if data == "[DONE]" {
            self.done = true;
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            self.bad = true;
            return;
        };
        if v.get("error").is_some() {
            self.bad = true;
        }
        let choices = v.get("choices").and_then(Value::as_array);
        for choice in choices.into_iter().flatten() {
            if let Some(piece) = choice.pointer("/delta/content").and_then(Value::as_str) {
                self.text.push_str(piece);
            }
        }
    }

    fn verdict(&self, n: usize) -> bool {
        !self.bad
            && self.done
            && self.pending.iter().all(u8::is_ascii_whitespace)
            && is_sequence(&self.text, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{KeyFault, Limit, SimAccount, SimConfig, start};

    #[test]
    fn sequences() {
        assert!(is_sequence("[0][1][2]", 3));
        assert!(is_sequence("", 0));
        assert!(!is_sequence("[0][2]", 2));
        assert!(!is_sequence("[0][1][1]", 3));
        assert!(!is_sequence("[0][1][1]", 2));
    }

    #[test]
    fn sse_check_splits_events_across_chunks() {
        let mut c = SseCheck::default();
        c.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"[0]\"}}]}\r\n\r\nda");
        c.feed(b"ta: {\"choices\":[{\"delta\":{\"content\":\"[1]\"}}]}\n\ndata: [DONE]\n\n");
        assert!(c.verdict(2));
        let mut c = SseCheck::default();
        c.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"[0]\"}}]}\n\n");
        c.feed(b"event: error\ndata: {\"error\":{\"message\":\"upstream failed\"}}\n\n");
        assert!(!c.verdict(1));
    }

    /// Waits (as long as a loaded machine needs, up to 10 s) for `done`.
    async fn until(done: impl Fn() -> bool, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "never saw {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn traffic_generator_checks_answers() {
        let mut cfg = SimConfig::with_api_keys(1, Limit::Unlimited);
        cfg.chunk_interval = Duration::from_millis(2);
        cfg.accounts.push(SimAccount {
            fault: Some(KeyFault::ResetAfterChunks(3)),
            ..SimAccount::api_key("key-broken", "sk-sim-broken", Limit::Unlimited)
        });
        let sim = start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let traffic = |key: &str| TrafficConfig {
            base_url: sim.base_url(),
            client_key: Some(key.to_owned()),
            models: vec!["sim-small".into(), "sim-large".into()],
            concurrency: 4,
            rate_per_sec: 100.0,
            stream_ratio: 0.5,
            seed: 1,
        };
        // Stopped once the live counts show ten answers, not after a fixed
        // time: on loaded cores 400 ms held fewer than ten.
        let cancel = CancellationToken::new();
        let (counters, task) = spawn(traffic("sk-sim-1"), cancel.clone());
        until(
            || counters.snapshot().ok >= 10,
            "live counts move while running",
        )
        .await;
        cancel.cancel();
        let report = task.await.unwrap();
        assert!(report.ok >= 10, "{report:?}");
        assert_eq!(report.ok + report.cancelled, report.sent, "{report:?}");
        assert_eq!(report.status(200), report.ok);
        assert_eq!(
            report.stream_errors + report.body_errors + report.transport_errors,
            0
        );
        assert_eq!(report.in_flight, 0);

        let cancel = CancellationToken::new();
        let (counters, task) = spawn(traffic("sk-sim-broken"), cancel.clone());
        until(
            || {
                let live = counters.snapshot();
                live.stream_errors > 0 && live.body_errors > 0
            },
            "a broken stream and a broken body",
        )
        .await;
        cancel.cancel();
        let report = task.await.unwrap();
        assert_eq!(report.ok, 0, "{report:?}");
        assert!(
            report.stream_errors > 0 && report.body_errors > 0,
            "{report:?}"
        );
        sim.shutdown().await;
    }
}
