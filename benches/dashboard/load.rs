//! The load generator: keep-alive connections sending chat completions back
//! to back or paced, counting successes and errors, recording latencies in
//! the measured window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::BODY;

pub const MEASURE: u8 = 1;
pub const STOP: u8 = 2;

/// Shared by the load tasks: counters the main thread samples at the edges
/// of the measured window, and the phase that tells the tasks when to
/// record latencies and when to stop.
#[derive(Default)]
pub struct Load {
    /// 0 while warming up, then [`MEASURE`], then [`STOP`].
    pub phase: AtomicU8,
    pub ok: AtomicU64,
    /// Non-200 answers and transport errors.
    pub errors: AtomicU64,
}

/// One keep-alive connection's worth of load until told to stop: requests
/// back to back, or with `ticks = (offset, period)` one per period (a late
/// answer delays the next; none are bunched up to catch up). Returns the
/// latencies (µs) of successes in the measured window.
pub async fn client_loop(
    client: reqwest::Client,
    url: String,
    load: Arc<Load>,
    ticks: Option<(Duration, Duration)>,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut ticker = ticks.map(|(offset, period)| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        if load.phase.load(Ordering::Relaxed) == STOP {
            return latencies;
        }
        let start = Instant::now();
        let ok = match client
            .post(&url)
            .header("content-type", "application/json")
            .body(BODY)
            .send()
            .await
        {
            Ok(resp) => {
                let status = resp.status();
                resp.bytes().await.is_ok() && status == 200
            }
            Err(_) => false,
        };
        if ok {
            load.ok.fetch_add(1, Ordering::Relaxed);
            if load.phase.load(Ordering::Relaxed) == MEASURE {
                latencies.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
        } else {
            load.errors.fetch_add(1, Ordering::Relaxed);
            // Do not spin on a gateway that refuses outright.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i] as f64 / 1000.0
}
