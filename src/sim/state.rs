//! The sim's bookkeeping: accounts, their windows, tokens, and the log.
//! Every decision about a request is made here, under one lock, with the
//! clock passed in; the server only turns decisions into bytes.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wire::RateInfo;
use super::{
    AccountStats, Faults, HintStyle, KeyFault, Limit, SimAuth, SimConfig, SimRequest, SimStats,
    TokenCall, TokenFailure,
};

/// Headers for accounts with no request window: generous and steady.
const UNMETERED: RateInfo = RateInfo {
    limit: 10_000,
    remaining: 9_999,
    reset: Duration::from_millis(6),
    unified: false,
};

/// Settings fixed at start.
#[derive(Debug)]
pub(crate) struct Settings {
    pub models: Vec<String>,
    pub chunks: usize,
    pub chunk_interval: Duration,
    pub latency: Duration,
    pub access_token_ttl: Duration,
    pub rotate_refresh_tokens: bool,
}

/// State shared by the handle and every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub settings: Settings,
    /// Cancelled by `SimHandle::shutdown`; every wait in a handler or body
    /// watches it so stalled answers do not hold the server open.
    pub cancel: CancellationToken,
    inner: Mutex<Inner>,
}

impl Shared {
    pub fn new(cfg: SimConfig, cancel: CancellationToken) -> Self {
        let mut api_keys = HashMap::new();
        let accounts = cfg
            .accounts
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                let refresh_token = match &a.auth {
                    SimAuth::ApiKey(key) => {
                        api_keys.insert(key.clone(), i);
                        None
                    }
                    SimAuth::RefreshToken(rt) => Some(rt.clone()),
                };
                Account {
                    stats: AccountStats {
                        label: a.label.clone(),
                        ..AccountStats::default()
                    },
                    label: a.label,
                    limit: a.limit,
                    hints: a.hints,
                    fault: a.fault,
                    fault_left: None,
                    advertise: a.advertise,
                    token_failure: None,
                    refresh_token,
                    window_start: None,
                    used: 0,
                    blocked_until: None,
                }
            })
            .collect();
        let inner = Inner {
            accounts,
            api_keys,
            access_tokens: HashMap::new(),
            log: Vec::new(),
            token_log: Vec::new(),
            token_calls: 0,
            token_delay: Duration::ZERO,
            rng: StdRng::seed_from_u64(cfg.faults.seed),
            faults: cfg.faults,
            next_id: 0,
            unauthenticated: 0,
        };
        Shared {
            settings: Settings {
                models: cfg.models,
                chunks: cfg.chunks,
                chunk_interval: cfg.chunk_interval,
                latency: cfg.latency,
                access_token_ttl: cfg.access_token_ttl,
                rotate_refresh_tokens: cfg.rotate_refresh_tokens,
            },
            cancel,
            inner: Mutex::new(inner),
        }
    }

    /// Never held across an `.await`. A panic elsewhere must not take the
    /// sim down with it, so a poisoned lock is used as is.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps unless the sim shuts down first; `false` means shut down.
    pub async fn sleep(&self, d: Duration) -> bool {
        if d.is_zero() {
            return !self.cancel.is_cancelled();
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.cancel.cancelled() => false,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub accounts: Vec<Account>,
    /// API key -> account index.
    api_keys: HashMap<String, usize>,
    /// Minted access token -> account and expiry.
    access_tokens: HashMap<String, AccessToken>,
    pub log: Vec<SimRequest>,
    pub token_log: Vec<TokenCall>,
    pub token_calls: usize,
    pub token_delay: Duration,
    /// Seeded, so a run with the same arrival order draws the same faults.
    rng: StdRng,
    faults: Faults,
    /// Numbers completion and request ids.
    next_id: u64,
    unauthenticated: u64,
}

#[derive(Debug, Clone, Copy)]
struct AccessToken {
    account: usize,
    expires_at: Instant,
}

#[derive(Debug)]
pub(crate) struct Account {
    pub label: String,
    pub limit: Limit,
    pub hints: HintStyle,
    pub fault: Option<KeyFault>,
    /// How many more generation requests `fault` applies to (`None`: all);
    /// at zero the fault is gone.
    pub fault_left: Option<u32>,
    /// Successes carry `x-ratelimit-*` headers.
    pub advertise: bool,
    pub token_failure: Option<TokenFailure>,
    /// The refresh token valid right now (RefreshToken accounts only).
    pub refresh_token: Option<String>,
    /// When the current request window opened; `None` between windows.
    window_start: Option<Instant>,
    /// Requests admitted in the current window (Window) or ever (Total).
    used: u32,
    /// Limited by a rate-limit burst until then, whatever the window says.
    blocked_until: Option<Instant>,
    pub stats: AccountStats,
}

/// Why the limiter refused a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Refusal {
    RateLimited { wait: Duration, limit: u32 },
    Quota,
}

impl Account {
    /// The status a `KeyFault::Status` makes this generation request
    /// answer, counted against `fault_left`.
    pub fn status_fault(&mut self) -> Option<u16> {
        let Some(KeyFault::Status(status)) = self.fault else {
            return None;
        };
        if let Some(left) = &mut self.fault_left {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.fault = None;
                self.fault_left = None;
            }
        }
        Some(status)
    }

    pub fn set_limit(&mut self, limit: Limit) {
        self.limit = limit;
        self.window_start = None;
        self.used = 0;
    }

    /// Closes the window if its time is up.
    fn roll(&mut self, now: Instant) {
        if let (Limit::Window { window, .. }, Some(start)) = (&self.limit, self.window_start)
            && now >= start + *window
        {
            self.window_start = None;
            self.used = 0;
        }
    }

    /// The request budget rate-limit headers announce.
    fn header_limit(&self) -> u32 {
        match self.limit {
            Limit::Window { requests, .. } | Limit::Total { requests } => requests,
            Limit::Unlimited => UNMETERED.limit,
        }
    }

    /// Would the limiter let a request through at `now`?
    pub fn check(&mut self, now: Instant) -> Result<(), Refusal> {
        self.roll(now);
        if let Some(until) = self.blocked_until {
            if until > now {
                return Err(Refusal::RateLimited {
                    wait: until - now,
                    limit: self.header_limit(),
                });
            }
            self.blocked_until = None;
        }
        match self.limit {
            Limit::Unlimited => Ok(()),
            Limit::Total { requests } if self.used >= requests => Err(Refusal::Quota),
            Limit::Total { .. } => Ok(()),
            Limit::Window { requests, window } if self.used >= requests => {
                // A zero budget still has windows, so the hint is honest.
                let start = *self.window_start.get_or_insert(now);
                Err(Refusal::RateLimited {
                    wait: (start + window).saturating_duration_since(now),
                    limit: requests,
                })
            }
            Limit::Window { .. } => Ok(()),
        }
    }

    /// Counts an admitted request; returns what the headers should say.
    pub fn consume(&mut self, now: Instant) -> RateInfo {
        self.roll(now);
        self.used = self.used.saturating_add(1);
        let unified = self.refresh_token.is_some();
        match self.limit {
            Limit::Unlimited | Limit::Total { .. } => RateInfo {
                unified,
                ..UNMETERED
            },
            Limit::Window { requests, window } => {
                let start = *self.window_start.get_or_insert(now);
                RateInfo {
                    limit: requests,
                    remaining: requests.saturating_sub(self.used),
                    reset: (start + window).saturating_duration_since(now),
                    unified,
                }
            }
        }
    }
}

/// Who a bearer token belongs to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Caller {
    /// No `Authorization: Bearer` header.
    Missing,
    Unknown,
    /// An access token past its expiry; the account is known.
    Expired(usize),
    Account(usize),
}

/// A random fault drawn for one admitted request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Drawn {
    ServerError(u16),
    Reset,
    Stall,
}

impl Inner {
    /// # Panics
    /// If no account has this label: only the handle calls this, and a
    /// wrong label there is a bug in the test that wrote it.
    pub fn account_mut(&mut self, label: &str) -> &mut Account {
        match self.accounts.iter_mut().find(|a| a.label == label) {
            Some(a) => a,
            None => panic!("sim: no account labelled {label:?}"),
        }
    }

    pub fn caller(&self, bearer: Option<&str>, now: Instant) -> Caller {
        let Some(token) = bearer else {
            return Caller::Missing;
        };
        if let Some(&i) = self.api_keys.get(token) {
            return Caller::Account(i);
        }
        match self.access_tokens.get(token) {
            Some(t) if now >= t.expires_at => Caller::Expired(t.account),
            Some(t) => Caller::Account(t.account),
            None => Caller::Unknown,
        }
    }

    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The limiter's verdict on a request for account `idx`, with a
    /// rate-limit burst drawn (and started) when the limiter says yes.
    pub fn admit(&mut self, idx: usize, now: Instant) -> Result<(), Refusal> {
        self.accounts[idx].check(now)?;
        let p = self.faults.rate_limit;
        if p <= 0.0 || self.rng.random::<f64>() >= p {
            return Ok(());
        }
        let (lo, hi) = self.faults.rate_limit_wait;
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        let wait = Duration::from_millis(if hi > lo {
            self.rng.random_range(lo..=hi)
        } else {
            lo
        });
        let account = &mut self.accounts[idx];
        account.blocked_until = Some(now + wait);
        Err(Refusal::RateLimited {
            wait,
            limit: account.header_limit(),
        })
    }

    /// Draws at most one random fault for an admitted request. The
    /// probabilities partition one roll, so they add up.
    pub fn draw_fault(&mut self) -> Option<Drawn> {
        let f = &self.faults;
        let (e, r, s) = (f.error_5xx, f.reset_mid_stream, f.stall_mid_stream);
        if e <= 0.0 && r <= 0.0 && s <= 0.0 {
            return None;
        }
        let roll: f64 = self.rng.random();
        if roll < e {
            let status = [500, 502, 503][self.rng.random_range(0..3)];
            Some(Drawn::ServerError(status))
        } else if roll < e + r {
            Some(Drawn::Reset)
        } else if roll < e + r + s {
            Some(Drawn::Stall)
        } else {
            None
        }
    }

    /// Where a drawn reset or stall cuts a stream of `events` events:
    /// strictly before its end, so the client always misses something.
    pub fn draw_cut(&mut self, events: usize) -> usize {
        if events == 0 {
            0
        } else {
            self.rng.random_range(0..events)
        }
    }

    /// Records a request on any endpoint and counts it for its account; `quota` marks
    /// a 429 that was `insufficient_quota` rather than a rate limit.
    pub fn record(&mut self, req: SimRequest, account: Option<usize>, quota: bool) {
        match account.and_then(|i| self.accounts.get_mut(i)) {
            Some(a) => {
                let s = &mut a.stats;
                s.requests += 1;
                *s.by_endpoint.entry(req.endpoint).or_default() += 1;
                match req.status {
                    200..=299 => s.ok += 1,
                    401 => s.unauthorized += 1,
                    429 if quota => s.quota += 1,
                    429 => s.rate_limited += 1,
                    500..=599 => s.errors += 1,
                    _ => s.bad_requests += 1,
                }
                if matches!(
                    req.fault,
                    Some(KeyFault::ResetAfterChunks(_) | KeyFault::StallAfterChunks(_))
                ) {
                    s.aborted += 1;
                }
            }
            None => self.unauthenticated += 1,
        }
        self.log.push(req);
    }

    /// Finds the account a refresh token belongs to right now.
    pub fn refresh_owner(&self, refresh_token: &str) -> Option<usize> {
        self.accounts
            .iter()
            .position(|a| a.refresh_token.as_deref() == Some(refresh_token))
    }

    pub fn mint_access_token(&mut self, account: usize, token: String, expires_at: Instant) {
        self.access_tokens.insert(
            token,
            AccessToken {
                account,
                expires_at,
            },
        );
    }

    pub fn issued_access_tokens(&self) -> Vec<String> {
        self.access_tokens.keys().cloned().collect()
    }

    pub fn expire_access_tokens(&mut self, now: Instant) {
        for t in self.access_tokens.values_mut() {
            t.expires_at = t.expires_at.min(now);
        }
    }

    pub fn stats(&self) -> SimStats {
        SimStats {
            accounts: self.accounts.iter().map(|a| a.stats.clone()).collect(),
            unauthenticated: self.unauthenticated,
            token_calls: self.token_calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(limit: Limit) -> Account {
        Account {
            label: "a".into(),
            limit,
            hints: HintStyle::All,
            fault: None,
            fault_left: None,
            advertise: true,
            token_failure: None,
            refresh_token: None,
            window_start: None,
            used: 0,
            blocked_until: None,
            stats: AccountStats::default(),
        }
    }

    #[test]
    fn window_counts_down_and_reopens() {
        let t0 = Instant::now();
        let window = Duration::from_millis(1000);
        let mut a = account(Limit::Window {
            requests: 2,
            window,
        });
        assert!(a.check(t0).is_ok());
        assert_eq!(a.consume(t0).remaining, 1);
        let t1 = t0 + Duration::from_millis(100);
        assert!(a.check(t1).is_ok());
        let info = a.consume(t1);
        assert_eq!(info.remaining, 0);
        assert_eq!(info.reset, Duration::from_millis(900));
        let t2 = t0 + Duration::from_millis(250);
        assert_eq!(
            a.check(t2),
            Err(Refusal::RateLimited {
                wait: Duration::from_millis(750),
                limit: 2
            })
        );
        assert!(a.check(t0 + window).is_ok());
    }

    #[test]
    fn total_is_forever() {
        let t0 = Instant::now();
        let mut a = account(Limit::Total { requests: 1 });
        assert!(a.check(t0).is_ok());
        a.consume(t0);
        assert_eq!(a.check(t0 + Duration::from_secs(3600)), Err(Refusal::Quota));
        a.set_limit(Limit::Total { requests: 1 });
        assert!(a.check(t0).is_ok());
    }
}
