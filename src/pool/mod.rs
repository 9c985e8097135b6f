//! The credential pool: the state machine in [`core`] behind a mutex, plus
//! everything that needs I/O — access-token refresh (one in flight per
//! credential), the clock that ends cooldowns, the half-open probes, the
//! state file, and the event channel.
//!
//! Locks here are `std` mutexes held for microseconds and never across an
//! `.await`; the one async mutex per credential is the single-flight gate
//! for token refresh and is meant to be held while the refresh runs.

pub mod core;
pub mod oauth;
pub mod persist;
mod tokens;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::core::{Cooldown, Core, Cred};
pub use self::core::{CooldownKind, Unavailable, Verdict};
use self::tokens::TokenSlot;
use crate::config::{AuthSpec, Config, CredentialSpec, PoolSettings, Provider};
use crate::events::{
    Command, CredentialKind, CredentialView, Event, Level, PoolSnapshot, RequestRecord, State,
    human, unix_ms,
};
use crate::metrics::{CredentialInfo, Metrics};
use crate::secret::Secret;

/// Events buffered per subscriber before it lags. A lagging subscriber
/// resyncs from [`PoolHandle::snapshot`]; the proxy never waits for it.
pub const EVENT_CAPACITY: usize = 4096;

/// How long a probe or an operator-requested refresh may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// State-file writes are batched this long after a change.
const SAVE_DEBOUNCE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no credential named {0:?}")]
    UnknownCredential(String),
    #[error("{0}")]
    Failed(String),
}

/// A cheap, cloneable handle to the pool.
#[derive(Clone)]
pub struct PoolHandle {
    inner: Arc<Inner>,
}

struct Inner {
    core: Mutex<Core>,
    specs: Vec<CredentialSpec>,
    providers: Vec<Provider>,
    /// One per credential, same order as `specs`.
    tokens: Vec<TokenSlot>,
    settings: PoolSettings,
    events: broadcast::Sender<Event>,
    /// Wakes requests waiting (`max_wait`) for a credential to come back.
    ready: Notify,
    /// Wakes the clock task when a deadline moved.
    clock: Notify,
    /// Asks the writer task to save soon.
    dirty: Notify,
    /// Serializes state-file writes; the state is read after taking it, so
    /// the newest state is always the last one written.
    writer: tokio::sync::Mutex<()>,
    http: reqwest::Client,
    state_file: Option<PathBuf>,
    started: SystemTime,
    request_ids: AtomicU64,
    /// This pool's Prometheus series (one registry per pool, so gateways
    /// in one process stay apart); bumped by `record` and `finish`.
    metrics: Metrics,
}

/// One credential taken for one attempt. Dropping it releases the
/// in-flight count.
pub struct Lease {
    inner: Arc<Inner>,
    idx: usize,
}

impl Lease {
    pub fn index(&self) -> usize {
        self.idx
    }
    pub fn name(&self) -> &str {
        &self.inner.specs[self.idx].name
    }
    pub fn refreshes(&self) -> bool {
        self.inner.specs[self.idx].auth.refreshes()
    }
    pub fn provider(&self) -> &Provider {
        &self.inner.providers[self.inner.specs[self.idx].provider]
    }
}

impl Lease {
    /// A second lease on the same credential (the stream relay holds one so
    /// the in-flight count lasts as long as the stream).
    pub fn share(&self) -> Lease {
        let mut core = lock(&self.inner.core);
        core.creds[self.idx].in_flight += 1;
        Lease {
            inner: self.inner.clone(),
            idx: self.idx,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        lock(&self.inner.core).release(self.idx);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PoolHandle {
    /// Builds the pool from the config and restores the state file. Returns
    /// the handle and what restoring found, for the startup report.
    pub fn new(config: &Config, http: reqwest::Client) -> (PoolHandle, Vec<String>) {
        Self::build(config, http, false)
    }

    /// Like [`PoolHandle::new`], but never writes: a broken state file is
    /// reported, not moved, and [`PoolHandle::save`] does nothing. For
    /// `tokenyard check`.
    pub fn new_readonly(config: &Config, http: reqwest::Client) -> (PoolHandle, Vec<String>) {
        Self::build(config, http, true)
    }

    fn build(config: &Config, http: reqwest::Client, readonly: bool) -> (PoolHandle, Vec<String>) {
        let creds = config
            .credentials
            .iter()
            .map(|c| Cred::new(c.name.clone(), c.provider, c.tier))
            .collect();
        let core = Core::new(config.pool.clone(), creds);
        let tokens = config
            .credentials
            .iter()
            .map(|c| TokenSlot::new(&c.auth))
            .collect();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let metrics = Metrics::new(config.credentials.iter().map(|c| CredentialInfo {
            name: &c.name,
            provider: &config.providers[c.provider].name,
            refreshes: c.auth.refreshes(),
        }));
        let inner = Inner {
            core: Mutex::new(core),
            specs: config.credentials.clone(),
            settings: config.pool.clone(),
            providers: config.providers.clone(),
            tokens,
            events,
            ready: Notify::new(),
            clock: Notify::new(),
            dirty: Notify::new(),
            writer: tokio::sync::Mutex::new(()),
            http,
            state_file: if readonly {
                None
            } else {
                config.state_file.clone()
            },
            started: SystemTime::now(),
            request_ids: AtomicU64::new(1),
            metrics,
        };
        let pool = PoolHandle {
            inner: Arc::new(inner),
        };
        let notes = pool.restore(config.state_file.as_deref(), readonly);
        (pool, notes)
    }

    /// Spawns the clock (cooldown ends, probes) and the state writer. Both
    /// stop when `cancel` fires; call [`PoolHandle::save`] after that for
    /// the final write.
    pub fn start(&self, cancel: CancellationToken) {
        tokio::spawn(self.clone().clock_task(cancel.clone()));
        tokio::spawn(self.clone().writer_task(cancel));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// A sender for other parts (the gateway) that publish on the same bus.
    pub fn publish(&self, event: Event) {
        let _ = self.inner.events.send(event);
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.inner.settings
    }

    /// When the first credential of `provider` can serve (now, if one is
    /// ready); `None` when all are disabled.
    pub fn earliest_recovery(&self, provider: usize) -> Option<Instant> {
        let now = Instant::now();
        let core = lock(&self.inner.core);
        core.creds
            .iter()
            .filter(|c| c.provider == provider)
            .filter_map(|c| c.recovers_at(now))
            .min()
    }

    pub fn providers(&self) -> &[Provider] {
        &self.inner.providers
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// This pool's Prometheus series (`GET /metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn next_request_id(&self) -> u64 {
        self.inner.request_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes a credential of `provider` for one attempt, skipping those the
    /// request already tried.
    pub fn lease(&self, provider: usize, tried: &[usize]) -> Result<Lease, Unavailable> {
        let idx = lock(&self.inner.core).select(provider, tried, Instant::now())?;
        Ok(Lease {
            inner: self.inner.clone(),
            idx,
        })
    }

    /// Resolves when some credential may be able to serve: it came back (a
    /// cooldown ended, a probe succeeded, the operator enabled it) or just
    /// answered and is still ready. Wakes one waiter per such event, so the
    /// waiters drain at the pace the provider accepts them. Call `enable()`
    /// on the pinned future before checking the pool to miss nothing.
    pub fn ready_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.ready.notified()
    }

    /// The token to send for this lease: the API key, or a valid access
    /// token (refreshed first if it is missing or about to expire).
    pub async fn token(&self, lease: &Lease) -> Result<Secret, String> {
        self.refresh(lease.idx, tokens::Mode::IfStale, true)
            .await
            .map_err(|e| e.message)
    }

    /// After a 401 with `rejected`: refresh once (unless another request
    /// already did) and return the new access token.
    pub async fn reauth(&self, lease: &Lease, rejected: &Secret) -> Result<Secret, String> {
        self.refresh(lease.idx, tokens::Mode::Replace(rejected.clone()), true)
            .await
            .map_err(|e| e.message)
    }

    /// Applies an attempt's verdict to its credential.
    pub fn record(&self, lease: &Lease, verdict: &Verdict, status: Option<u16>, latency: Duration) {
        let i = lease.idx;
        let (before, after, failures_changed) = {
            let mut core = lock(&self.inner.core);
            core.totals.attempts += 1;
            let failures_before = core.creds[i].failures;
            let (before, after) = core.record(i, verdict, Instant::now());
            let c = &mut core.creds[i];
            c.stats.last_used = Some(SystemTime::now());
            c.stats.last_latency = Some(latency);
            if status.is_some() {
                c.stats.last_status = status;
            }
            (before, after, failures_before != c.failures)
        };
        self.inner.metrics.attempt(i, verdict);
        self.changed(i, before, after, failures_changed);
    }

    /// Publishes a finished client request and counts it.
    pub fn finish(&self, record: RequestRecord) {
        let totals = {
            let mut core = lock(&self.inner.core);
            core.totals.requests += 1;
            if (200..300).contains(&record.status) {
                core.totals.succeeded += 1;
            }
            if record.status == 429 {
                core.totals.client_429 += 1;
            }
            core.totals
        };
        self.inner.metrics.request(&record);
        self.publish(Event::Request {
            request: record,
            totals,
        });
    }

    /// A request moved on from `from` (to `to`, if anything was left).
    pub fn rotation(&self, from: &str, to: Option<&str>, reason: &str) {
        self.publish(Event::Rotation {
            at_ms: unix_ms(SystemTime::now()),
            from: from.to_string(),
            to: to.map(str::to_string),
            reason: reason.to_string(),
        });
    }

    fn notice(&self, level: Level, message: String) {
        self.publish(Event::Notice {
            at_ms: unix_ms(SystemTime::now()),
            level,
            message,
        });
    }

    /// After any change to credential `i`: tell subscribers, wake waiters
    /// and the clock, schedule a save.
    fn changed(&self, i: usize, before: State, after: State, persist_anyway: bool) {
        if after == State::Ready {
            // One waiting request gets the chance; if it succeeds, its
            // success wakes the next (see the dispatcher).
            self.inner.ready.notify_one();
        }
        if before != after {
            self.publish_credential(i);
            self.inner.clock.notify_one();
        }
        if before != after || persist_anyway {
            self.inner.dirty.notify_one();
        }
    }

    fn publish_credential(&self, i: usize) {
        if self.inner.events.receiver_count() == 0 {
            return;
        }
        let expiry = self.inner.tokens[i].expiry();
        let view = {
            let core = lock(&self.inner.core);
            self.view(&core, i, expiry, Instant::now(), SystemTime::now())
        };
        self.publish(Event::Credential { credential: view });
    }

    fn view(
        &self,
        core: &Core,
        i: usize,
        token_expiry: Option<SystemTime>,
        now: Instant,
        wall: SystemTime,
    ) -> CredentialView {
        let c = &core.creds[i];
        let spec = &self.inner.specs[i];
        let state = c.state(now);
        let to_wall = |at: Instant| unix_ms(wall + at.saturating_duration_since(now));
        let (reason, until_ms) = match state {
            State::Cooling | State::Exhausted => {
                let cd = c.cooldown.as_ref().expect("cooling has a cooldown");
                (Some(cd.reason.clone()), Some(to_wall(cd.until)))
            }
            State::Failed => {
                let (why, at) = c.failed.as_ref().expect("failed has a reason");
                (Some(why.clone()), Some(to_wall(*at)))
            }
            State::Disabled => (Some("disabled by the operator".to_string()), None),
            State::Ready => (None, None),
        };
        CredentialView {
            name: spec.name.clone(),
            provider: self.inner.providers[spec.provider].name.clone(),
            tier: core.settings.tiers[spec.tier].clone(),
            secret: spec.auth.identity().masked(),
            kind: match spec.auth {
                AuthSpec::ApiKey(_) => CredentialKind::ApiKey,
                AuthSpec::Refresh { .. } => CredentialKind::RefreshToken,
            },
            state,
            reason,
            until_ms,
            failures: c.failures,
            requests: c.stats.requests,
            successes: c.stats.successes,
            rate_limited: c.stats.rate_limited,
            errors: c.stats.errors,
            refreshes: c.stats.refreshes,
            in_flight: c.in_flight,
            last_used_ms: c.stats.last_used.map(unix_ms),
            last_latency_ms: c.stats.last_latency.map(|d| d.as_secs_f64() * 1000.0),
            last_status: c.stats.last_status,
            token_expires_ms: token_expiry.map(unix_ms),
            last_error: c.last_error.clone(),
        }
    }

    /// The whole pool, now.
    pub fn snapshot(&self) -> PoolSnapshot {
        let expiries: Vec<_> = self.inner.tokens.iter().map(TokenSlot::expiry).collect();
        let now = Instant::now();
        let wall = SystemTime::now();
        let core = lock(&self.inner.core);
        PoolSnapshot {
            at_ms: unix_ms(wall),
            started_ms: unix_ms(self.inner.started),
            tiers: core.settings.tiers.clone(),
            credentials: (0..core.creds.len())
                .map(|i| self.view(&core, i, expiries[i], now, wall))
                .collect(),
            next: core.peek(0, now).map(|i| core.creds[i].name.clone()),
            totals: core.totals,
        }
    }

    /// Runs an operator command. The admin API and the dashboard both come
    /// here, so an action means the same wherever it is taken.
    pub async fn command(&self, cmd: Command) -> Result<String, CommandError> {
        let find = |name: &str| {
            lock(&self.inner.core)
                .find(name)
                .ok_or_else(|| CommandError::UnknownCredential(name.chars().take(64).collect()))
        };
        let now = Instant::now();
        let message = match &cmd {
            Command::Disable(name) => {
                let i = find(name)?;
                let (before, after) = {
                    let mut core = lock(&self.inner.core);
                    let before = core.creds[i].state(now);
                    core.set_disabled(i, true);
                    (before, core.creds[i].state(now))
                };
                self.changed(i, before, after, true);
                format!("disabled {name}")
            }
            Command::Enable(name) => {
                let i = find(name)?;
                let (before, after) = {
                    let mut core = lock(&self.inner.core);
                    let before = core.creds[i].state(now);
                    core.set_disabled(i, false);
                    core.probe_now(i, now);
                    (before, core.creds[i].state(now))
                };
                self.changed(i, before, after, true);
                self.inner.clock.notify_one();
                match after {
                    State::Ready => format!("enabled {name}"),
                    other => format!(
                        "enabled {name} (still {}; it comes back by itself)",
                        other.as_str()
                    ),
                }
            }
            Command::Refresh(name) => {
                let i = find(name)?;
                if self.inner.specs[i].auth.refreshes() {
                    match self.refresh(i, tokens::Mode::Force, true).await {
                        Ok(_) => {
                            // A refresh that works proves the token endpoint;
                            // give a failed credential its probe now.
                            lock(&self.inner.core).probe_now(i, Instant::now());
                            self.inner.clock.notify_one();
                            format!("refreshed the access token of {name}")
                        }
                        Err(e) => {
                            return Err(CommandError::Failed(format!(
                                "refresh of {name} failed: {}",
                                e.message
                            )));
                        }
                    }
                } else {
                    self.probe_command(i, name, false).await?
                }
            }
            Command::Probe(name) => {
                let i = find(name)?;
                self.probe_command(i, name, true).await?
            }
            Command::UseNext(name) => {
                let i = find(name)?;
                let state = {
                    let mut core = lock(&self.inner.core);
                    core.use_next(i);
                    core.creds[i].state(now)
                };
                self.publish_credential(i);
                match state {
                    State::Ready => format!("{name} will serve the next request"),
                    other => format!(
                        "{name} will serve the next request once it is ready (now {})",
                        other.as_str()
                    ),
                }
            }
            Command::Rotate => {
                let next = {
                    let mut core = lock(&self.inner.core);
                    let mut next = None;
                    for p in 0..self.inner.providers.len() {
                        let n = core.rotate(p, now);
                        if p == 0 {
                            next = n.map(|i| core.creds[i].name.clone());
                        }
                    }
                    next
                };
                match next {
                    Some(n) => format!("rotated; next is {n}"),
                    None => "rotated; no credential is ready".to_string(),
                }
            }
        };
        // An acknowledged operator action survives a crash the moment after:
        // write it now rather than after the writer's debounce.
        if matches!(cmd, Command::Disable(_) | Command::Enable(_))
            && let Err(e) = self.save().await
        {
            self.notice(Level::Error, e.to_string());
        }
        self.notice(Level::Info, format!("operator: {message}"));
        Ok(message)
    }

    /// An operator's probe: optionally forget the consecutive failures
    /// first, then one probe now, inline, so the answer says how it went.
    async fn probe_command(
        &self,
        i: usize,
        name: &str,
        clear_failures: bool,
    ) -> Result<String, CommandError> {
        let cleared = {
            let mut core = lock(&self.inner.core);
            if core.creds[i].probing {
                return Err(CommandError::Failed(format!(
                    "a probe of {name} is already running"
                )));
            }
            core.creds[i].probing = true;
            let cleared = std::mem::take(&mut core.creds[i].failures);
            if !clear_failures {
                core.creds[i].failures = cleared;
            }
            cleared
        };
        let prefix = if clear_failures && cleared > 0 {
            format!("cleared {cleared} failure(s) of {name}; ")
        } else {
            String::new()
        };
        match self.run_probe(i).await {
            Ok(()) => Ok(format!("{prefix}probed {name}: it answers")),
            Err(e) => Err(CommandError::Failed(format!(
                "{prefix}probe of {name} failed: {e}"
            ))),
        }
    }

    // ---- background work ---------------------------------------------

    async fn clock_task(self, cancel: CancellationToken) {
        loop {
            let deadline = lock(&self.inner.core).next_deadline();
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.inner.clock.notified() => {}
                _ = tokio::time::sleep_until(deadline.unwrap_or(far).min(far)) => {}
            }
            let now = Instant::now();
            let (back, due) = {
                let mut core = lock(&self.inner.core);
                (core.expire(now), core.due_probes(now))
            };
            for i in back {
                self.changed(i, State::Cooling, State::Ready, true);
            }
            for i in due {
                let pool = self.clone();
                tokio::spawn(async move {
                    let _ = pool.run_probe(i).await;
                });
            }
        }
    }

    /// One half-open probe of credential `i` (already marked probing).
    async fn run_probe(&self, i: usize) -> Result<(), String> {
        let spec = &self.inner.specs[i];
        let provider = &self.inner.providers[spec.provider];
        let token = match &spec.auth {
            AuthSpec::ApiKey(k) => Ok(k.clone()),
            AuthSpec::Refresh { .. } => self
                .refresh(i, tokens::Mode::IfStale, false)
                .await
                .map_err(|e| e.message),
        };
        let result = match token {
            Ok(t) => {
                let bearer = spec.auth.refreshes();
                crate::upstream::probe(&self.inner.http, provider, &t, bearer, PROBE_TIMEOUT).await
            }
            Err(e) => Err(e),
        };
        let (before, after) = lock(&self.inner.core).probe_done(i, result.clone(), Instant::now());
        if before == State::Failed {
            match (&result, after) {
                (Ok(()), _) => self.notice(
                    Level::Info,
                    format!("{}: probe succeeded; back in rotation", spec.name),
                ),
                (Err(e), _) => self.notice(
                    Level::Warn,
                    format!(
                        "{}: probe failed ({e}); next probe in {}",
                        spec.name,
                        human(self.inner.settings.probe_interval)
                    ),
                ),
            }
        }
        self.changed(i, before, after, true);
        self.inner.clock.notify_one();
        result
    }

    async fn writer_task(self, cancel: CancellationToken) {
        if self.inner.state_file.is_none() {
            return;
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.inner.dirty.notified() => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(SAVE_DEBOUNCE) => {}
            }
            if let Err(e) = self.save().await {
                self.notice(Level::Error, e.to_string());
            }
        }
    }

    /// Writes the state file now (no-op without one).
    pub async fn save(&self) -> Result<(), persist::PersistError> {
        let Some(path) = self.inner.state_file.clone() else {
            return Ok(());
        };
        let _writer = self.inner.writer.lock().await;
        let state = self.state_file_contents();
        tokio::task::spawn_blocking(move || persist::save(&path, &state))
            .await
            .unwrap_or_else(|e| {
                Err(persist::PersistError::Write {
                    path: "state file".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }

    fn state_file_contents(&self) -> persist::StateFile {
        let rotated: Vec<Option<Secret>> =
            self.inner.tokens.iter().map(TokenSlot::rotated).collect();
        let now = Instant::now();
        let wall = SystemTime::now();
        let core = lock(&self.inner.core);
        let mut file = persist::StateFile {
            version: persist::VERSION,
            saved_at_ms: unix_ms(wall),
            ..Default::default()
        };
        for (i, c) in core.creds.iter().enumerate() {
            let spec = &self.inner.specs[i];
            let cooldown =
                c.cooldown
                    .as_ref()
                    .filter(|cd| cd.until > now)
                    .map(|cd| persist::SavedCooldown {
                        until_ms: unix_ms(wall + (cd.until - now)),
                        kind: match cd.kind {
                            CooldownKind::RateLimited => "cooling".into(),
                            CooldownKind::Quota => "exhausted".into(),
                        },
                        reason: cd.reason.clone(),
                    });
            file.credentials.insert(
                spec.name.clone(),
                persist::SavedCredential {
                    fingerprint: spec.auth.identity().fingerprint(),
                    disabled: c.disabled,
                    failures: c.failures,
                    failed_reason: c.failed.as_ref().map(|(r, _)| r.clone()),
                    cooldown,
                    refresh_token: rotated[i].as_ref().map(|s| s.expose().to_string()),
                },
            );
        }
        file
    }

    /// Applies the state file at startup. Returns lines for the report.
    fn restore(&self, path: Option<&std::path::Path>, readonly: bool) -> Vec<String> {
        let mut notes = Vec::new();
        let Some(path) = path else {
            return notes;
        };
        let file = match persist::load(path, !readonly) {
            Ok(persist::Loaded::Missing) => return notes,
            Ok(persist::Loaded::Ok(f)) => f,
            Ok(persist::Loaded::MovedAside { to, why }) => {
                notes.push(format!(
                    "warning: state file {} was unreadable ({why}); moved it to {} and started fresh",
                    path.display(),
                    to.display()
                ));
                return notes;
            }
            Ok(persist::Loaded::Unreadable { why }) => {
                notes.push(format!(
                    "warning: state file {} is unreadable ({why}); serve would move it aside and start fresh",
                    path.display()
                ));
                return notes;
            }
            Err(e) => {
                notes.push(format!("warning: {e}; starting without saved state"));
                return notes;
            }
        };
        let now = Instant::now();
        let wall_ms = unix_ms(SystemTime::now());
        let mut restored = 0;
        let mut core = lock(&self.inner.core);
        let max_failures = core.settings.max_failures;
        for (i, spec) in self.inner.specs.iter().enumerate() {
            let Some(saved) = file.credentials.get(&spec.name) else {
                continue;
            };
            if saved.fingerprint != spec.auth.identity().fingerprint() {
                notes.push(format!(
                    "{}: its secret changed since the state was saved; starting it fresh",
                    spec.name
                ));
                continue;
            }
            restored += 1;
            let c = &mut core.creds[i];
            c.disabled = saved.disabled;
            c.failures = saved.failures;
            if saved.failed_reason.is_some() || saved.failures >= max_failures {
                let reason = saved
                    .failed_reason
                    .clone()
                    .unwrap_or_else(|| format!("{} consecutive failures", saved.failures));
                // Probe right away: the restart may have fixed it.
                c.failed = Some((reason, now));
            }
            if let Some(cd) = &saved.cooldown
                && cd.until_ms > wall_ms
            {
                c.cooldown = Some(Cooldown {
                    until: now + Duration::from_millis(cd.until_ms - wall_ms),
                    kind: if cd.kind == "exhausted" {
                        CooldownKind::Quota
                    } else {
                        CooldownKind::RateLimited
                    },
                    reason: cd.reason.clone(),
                });
            }
            if let Some(rt) = &saved.refresh_token {
                self.inner.tokens[i].restore_rotated(Secret::new(rt.as_str()));
            }
        }
        if restored > 0 {
            notes.push(format!(
                "restored saved state of {restored} credential(s) from {}",
                path.display()
            ));
        }
        notes
    }

    /// Test and tooling access to one credential's state.
    pub fn state_of(&self, name: &str) -> Option<State> {
        let core = lock(&self.inner.core);
        core.find(name).map(|i| core.creds[i].state(Instant::now()))
    }
}
