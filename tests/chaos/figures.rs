//! The chaos run's figures: what the clients got, what the upstream did,
//! the token calls, printed so a reader can see the chaos was real.

use std::collections::HashMap;
use std::time::Duration;

use tokenyard::sim;
use tokio::time::Instant;

use super::Plan;
use super::checks;
use super::client::{End, Outcome};

/// What the run did, printed so a reader can see the chaos was real.
pub struct Figures {
    requests: usize,
    pub complete: usize,
    pub stream_errors: usize,
    client_errors: HashMap<(u16, String), usize>,
    upstream: usize,
    pub upstream_429: usize,
    /// 429s for requests that reached an account already limited: sent
    /// before the gateway heard of the limit, or after a hint-less 429's
    /// default cooldown ran out first.
    upstream_429_limited: usize,
    /// Of those, on the account whose 429s carry no hint.
    upstream_429_limited_hintless: usize,
    /// How long after the limit began those others arrived: p50, max (ms).
    echo_delay_ms: (f64, f64),
    upstream_5xx: usize,
    pub resets: usize,
    stalls: usize,
    token_calls: HashMap<String, usize>,
    latency_ms: (f64, f64),
    pub secs: f64,
    clients: usize,
}

impl Figures {
    pub fn new(
        plan: &Plan,
        outcomes: &[Outcome],
        log: &[sim::SimRequest],
        tokens: &[sim::TokenCall],
        start: Instant,
        ended: Instant,
    ) -> Figures {
        let mut client_errors = HashMap::new();
        for o in outcomes {
            if let End::Error(status, code) = &o.end {
                *client_errors.entry((*status, code.clone())).or_insert(0) += 1;
            }
        }
        let mut lat: Vec<Duration> = outcomes
            .iter()
            .filter(|o| o.end == End::Complete)
            .map(|o| o.done - o.sent)
            .collect();
        lat.sort();
        let fault = |f: fn(&sim::KeyFault) -> bool| {
            log.iter()
                .filter(|r| r.status == 200 && r.fault.as_ref().is_some_and(f))
                .count()
        };
        // Per account: when its current limit began and ends.
        let mut limited_until: HashMap<&str, (Instant, Instant)> = HashMap::new();
        let mut echo_delays = Vec::new();
        let mut upstream_429_limited = 0;
        let mut upstream_429_limited_hintless = 0;
        for r in log {
            if let (429, Some(label), Some(wait)) = (r.status, r.label.as_deref(), r.retry_after) {
                let (since, until) = limited_until.entry(label).or_insert((r.at, r.at));
                if r.at < *until {
                    upstream_429_limited += 1;
                    if label == "k-none" {
                        upstream_429_limited_hintless += 1;
                    } else {
                        echo_delays.push(r.at - *since);
                    }
                } else {
                    *since = r.at;
                }
                *until = (*until).max(r.at + wait);
            }
        }
        let mut token_calls = HashMap::new();
        for c in tokens {
            let label = c.label.clone().unwrap_or_else(|| "(unknown)".into());
            *token_calls.entry(label).or_insert(0) += 1;
        }
        Figures {
            requests: outcomes.len(),
            complete: outcomes.iter().filter(|o| o.end == End::Complete).count(),
            stream_errors: outcomes
                .iter()
                .filter(|o| matches!(o.end, End::StreamError(_)))
                .count(),
            client_errors,
            upstream: log.len(),
            upstream_429: log.iter().filter(|r| r.status == 429).count(),
            upstream_429_limited,
            upstream_429_limited_hintless,
            echo_delay_ms: {
                echo_delays.sort();
                (
                    checks::percentile(&echo_delays, 50.0),
                    checks::percentile(&echo_delays, 100.0),
                )
            },
            upstream_5xx: log.iter().filter(|r| r.status >= 500).count(),
            resets: fault(|f| matches!(f, sim::KeyFault::ResetAfterChunks(_))),
            stalls: fault(|f| matches!(f, sim::KeyFault::StallAfterChunks(_))),
            token_calls,
            latency_ms: (
                checks::percentile(&lat, 50.0),
                checks::percentile(&lat, 99.0),
            ),
            secs: (ended - start).as_secs_f64(),
            clients: plan.clients,
        }
    }

    pub fn token_calls(&self, label: &str) -> usize {
        self.token_calls.get(label).copied().unwrap_or(0)
    }

    pub fn print(&self) {
        let pct = |n: usize| 100.0 * n as f64 / self.upstream.max(1) as f64;
        println!(
            "chaos: {:.1} s, {} clients, {} requests ({:.0}/s)",
            self.secs,
            self.clients,
            self.requests,
            self.requests as f64 / self.secs
        );
        println!(
            "  upstream: {} requests; 429 {} ({:.1} %; {} of them to an account already limited: {} on the hint-less one, the rest sent before the gateway heard, arriving p50 {:.1} ms / max {:.1} ms after the limit began), 5xx {} ({:.1} %), resets {} ({:.1} %), stalls {} ({:.1} %)",
            self.upstream,
            self.upstream_429,
            pct(self.upstream_429),
            self.upstream_429_limited,
            self.upstream_429_limited_hintless,
            self.echo_delay_ms.0,
            self.echo_delay_ms.1,
            self.upstream_5xx,
            pct(self.upstream_5xx),
            self.resets,
            pct(self.resets),
            self.stalls,
            pct(self.stalls)
        );
        println!(
            "  clients: {} complete, {} streams ended by an error event after commit; latency of complete p50 {:.1} ms, p99 {:.1} ms",
            self.complete, self.stream_errors, self.latency_ms.0, self.latency_ms.1
        );
        let mut errors: Vec<_> = self.client_errors.iter().collect();
        errors.sort();
        for ((status, code), n) in errors {
            println!("  clients: {n} × {status} {code}");
        }
        let mut calls: Vec<_> = self.token_calls.iter().collect();
        calls.sort();
        println!("  token calls: {calls:?}");
    }
}
