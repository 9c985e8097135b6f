//! What the dashboard knows, reduced from [`Feed`] messages. Pure: no I/O,
//! no clock reads — every function that needs "now" takes it, in wall-clock
//! milliseconds, so countdowns and rates are unit-testable.

use std::collections::VecDeque;

use crate::events::{
    CredentialView, Event, Level, PoolSnapshot, ProviderView, RequestRecord, State, Totals,
};
use crate::tui::Feed;

/// Per-second samples kept for the 429 history and the rates: ten minutes.
pub const HISTORY_SECS: usize = 600;
/// Finished requests kept for the "recent requests" pane.
pub const RECENT_REQUESTS: usize = 256;

/// The pool as the dashboard last heard of it.
#[derive(Debug, Clone, Default)]
pub struct Dashboard {
    /// Where the data comes from: the listen address, or the attached URL.
    pub source: String,
    /// `None` while connected; the reason while a remote source is gone.
    pub disconnected: Option<String>,
    /// Nothing heard yet (no snapshot): the screen says "connecting".
    pub waiting: bool,
    pub started_ms: u64,
    pub tiers: Vec<String>,
    pub credentials: Vec<CredentialView>,
    /// Every provider's health; the header names the unhealthy ones.
    pub providers: Vec<ProviderView>,
    /// The credential the next request would get (from the last snapshot).
    pub next: Option<String>,
    /// The pool's own counters, as of the last snapshot or request event.
    pub totals: Totals,
    /// Sessions kept on one credential (session affinity), as of the last
    /// snapshot.
    pub sessions: u64,
    /// Newest last; bounded by [`RECENT_REQUESTS`].
    pub recent: VecDeque<RequestRecord>,
    /// Totals at the end of each second, oldest first; bounded by
    /// [`HISTORY_SECS`]. Rates and the 429 history are differences of
    /// these, so they stay right when events were skipped after a lag.
    history: VecDeque<Sample>,
    /// The totals when the dashboard first heard of the pool, and when:
    /// the base for the first second's bucket and for rates over a window
    /// longer than the dashboard has been watching.
    baseline: Option<(u64, Totals)>,
    /// Rotations seen (a request moving to another credential).
    pub rotations: u64,
    /// Panics caught in any task while the dashboard is up.
    pub panics: u64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Unix second the sample closes.
    sec: u64,
    totals: Totals,
}

/// One second of the 429 history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    pub upstream_429: u64,
    pub client_429: u64,
    pub requests: u64,
}

impl Dashboard {
    pub fn new(source: impl Into<String>) -> Self {
        Dashboard {
            source: source.into(),
            waiting: true,
            ..Dashboard::default()
        }
    }

    /// Applies one message. Returns the line it is worth in the log pane,
    /// if any (a state change, a rotation, a notice, a lost connection).
    pub fn apply(&mut self, feed: Feed, now_ms: u64) -> Option<(Level, String)> {
        match feed {
            Feed::Snapshot(snap) => self.resync(snap, now_ms),
            Feed::Event(event) => self.event(event, now_ms),
            Feed::Disconnected(reason) => {
                let first = self.disconnected.is_none();
                let line = format!("disconnected from {}: {reason}; retrying", self.source);
                self.disconnected = Some(reason);
                first.then_some((Level::Warn, line))
            }
        }
    }

    fn resync(&mut self, snap: PoolSnapshot, now_ms: u64) -> Option<(Level, String)> {
        let reconnected = self.disconnected.take().is_some();
        self.waiting = false;
        self.started_ms = snap.started_ms;
        self.tiers = snap.tiers;
        self.credentials = snap.credentials;
        self.providers = snap.providers;
        self.next = snap.next;
        self.totals = snap.totals;
        self.sessions = snap.sessions;
        if self.baseline.is_none() {
            self.baseline = Some((now_ms, snap.totals));
        }
        self.tick(now_ms);
        reconnected.then(|| (Level::Info, format!("connected to {}", self.source)))
    }

    fn event(&mut self, event: Event, now_ms: u64) -> Option<(Level, String)> {
        if let Event::Reloaded { snapshot } = event {
            return self.resync(*snapshot, now_ms);
        }
        // The common case, by value: no copy of the record.
        if let Event::Request { request, totals } = event {
            self.totals = totals;
            // The answering credential's tokens, until its next view.
            if let (Some(tokens), Some(name)) = (request.tokens, request.path.last())
                && let Some(row) = self.credentials.iter_mut().find(|c| &c.name == name)
            {
                row.usage.add(Some(tokens), request.at_ms);
            }
            if self.recent.len() == RECENT_REQUESTS {
                self.recent.pop_front();
            }
            self.recent
                .push_back(std::sync::Arc::unwrap_or_clone(request));
            self.tick(now_ms);
            return None;
        }
        let line = match &event {
            Event::Credential { credential } => {
                let known = self
                    .credentials
                    .iter_mut()
                    .find(|c| c.name == credential.name);
                let changed = match known {
                    Some(row) => {
                        let changed = row.state != credential.state;
                        *row = (**credential).clone();
                        changed
                    }
                    None => {
                        self.credentials.push((**credential).clone());
                        true
                    }
                };
                if changed {
                    crate::report::event_line(&event)
                } else {
                    None
                }
            }
            Event::Provider { provider } => {
                match self.providers.iter_mut().find(|p| p.name == provider.name) {
                    Some(known) => *known = provider.clone(),
                    None => self.providers.push(provider.clone()),
                }
                crate::report::event_line(&event)
            }
            Event::Request { .. } | Event::Reloaded { .. } => None,
            Event::Rotation { .. } => {
                self.rotations += 1;
                crate::report::event_line(&event)
            }
            Event::Notice { .. } => crate::report::event_line(&event),
        };
        self.tick(now_ms);
        line
    }

    /// Closes the samples of every second up to `now_ms` with the current
    /// totals. Called on every message and on every frame.
    pub fn tick(&mut self, now_ms: u64) {
        if self.waiting {
            return;
        }
        let sec = now_ms / 1000;
        match self.history.back() {
            Some(last) if last.sec >= sec => {
                if last.sec == sec {
                    self.history.back_mut().expect("checked").totals = self.totals;
                }
            }
            Some(last) => {
                // Seconds with no news carry the totals they ended with.
                let (last_sec, last_totals) = (last.sec, last.totals);
                let from = (last_sec + 1).max(sec.saturating_sub(HISTORY_SECS as u64 - 1));
                for s in from..sec {
                    self.push_sample(Sample {
                        sec: s,
                        totals: last_totals,
                    });
                }
                self.push_sample(Sample {
                    sec,
                    totals: self.totals,
                });
            }
            None => self.push_sample(Sample {
                sec,
                totals: self.totals,
            }),
        }
    }

    fn push_sample(&mut self, s: Sample) {
        if self.history.len() == HISTORY_SECS {
            self.history.pop_front();
        }
        self.history.push_back(s);
    }

    /// The last `n` seconds up to and including the current one, oldest
    /// first; seconds before the dashboard started are empty.
    pub fn buckets(&self, n: usize, now_ms: u64) -> Vec<Bucket> {
        let now_sec = now_ms / 1000;
        let (Some(first), Some((_, baseline))) = (self.history.front(), self.baseline) else {
            return vec![Bucket::default(); n];
        };
        let first = first.sec;
        // Totals at the end of `sec`; the second before the first sample
        // ends with the baseline.
        let at = |sec: u64| -> Option<Totals> {
            if sec + 1 == first {
                return Some(baseline);
            }
            if sec < first {
                return None;
            }
            // Samples are one per second, so the index is arithmetic; past
            // the newest sample nothing has happened since.
            self.history
                .get((sec - first) as usize)
                .or(self.history.back())
                .map(|s| s.totals)
        };
        (0..n as u64)
            .rev()
            .map(|back| {
                let sec = now_sec.saturating_sub(back);
                match (sec.checked_sub(1).and_then(at), at(sec)) {
                    (Some(a), Some(b)) => Bucket {
                        upstream_429: b.upstream_429.saturating_sub(a.upstream_429),
                        client_429: b.client_429.saturating_sub(a.client_429),
                        requests: b.requests.saturating_sub(a.requests),
                    },
                    _ => Bucket::default(),
                }
            })
            .collect()
    }

    /// Change of the totals over the last `window_secs` (less if the
    /// dashboard has not been watching that long), and the seconds it
    /// covers.
    pub fn window(&self, window_secs: u64, now_ms: u64) -> (Totals, f64) {
        let (Some(oldest), Some((since_ms, baseline))) = (self.history.front(), self.baseline)
        else {
            return (Totals::default(), 0.0);
        };
        let now_sec = now_ms / 1000;
        // The sample closing second `from` holds the totals at the start of
        // the window.
        let (base, from_ms) = match now_sec.checked_sub(window_secs) {
            Some(from) if from >= oldest.sec => (
                self.history
                    .get((from - oldest.sec) as usize)
                    .map(|s| s.totals)
                    .unwrap_or(oldest.totals),
                (from + 1) * 1000,
            ),
            _ => (baseline, since_ms),
        };
        let t = self.totals;
        let d = Totals {
            requests: t.requests.saturating_sub(base.requests),
            succeeded: t.succeeded.saturating_sub(base.succeeded),
            attempts: t.attempts.saturating_sub(base.attempts),
            upstream_429: t.upstream_429.saturating_sub(base.upstream_429),
            client_429: t.client_429.saturating_sub(base.client_429),
            refreshes: t.refreshes.saturating_sub(base.refreshes),
            refresh_failures: t.refresh_failures.saturating_sub(base.refresh_failures),
        };
        let secs = now_ms.saturating_sub(from_ms) as f64 / 1000.0;
        (d, secs.max(1.0))
    }

    /// Requests per second over the last minute.
    pub fn rate(&self, now_ms: u64) -> f64 {
        let (d, secs) = self.window(60, now_ms);
        d.requests as f64 / secs
    }

    /// No credential can serve right now (all cooling, exhausted, failed or
    /// disabled) — new requests wait or get a 429.
    pub fn exhausted(&self, now_ms: u64) -> bool {
        !self.credentials.is_empty()
            && !self
                .credentials
                .iter()
                .any(|c| effective_state(c, now_ms) == State::Ready)
    }

    pub fn credential(&self, name: &str) -> Option<&CredentialView> {
        self.credentials.iter().find(|c| c.name == name)
    }
}

/// A credential's state as of `now_ms`: a cooldown whose deadline passed is
/// over even if the pool's "ready" event has not arrived yet.
pub fn effective_state(c: &CredentialView, now_ms: u64) -> State {
    match (c.state, c.until_ms) {
        (State::Cooling | State::Exhausted, Some(until)) if until <= now_ms => State::Ready,
        (s, _) => s,
    }
}

/// Milliseconds from `now_ms` until `at_ms` (0 when past).
pub fn remaining(at_ms: u64, now_ms: u64) -> u64 {
    at_ms.saturating_sub(now_ms)
}

#[cfg(test)]
mod tests;
