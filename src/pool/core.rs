//! The credential state machine and selection, with no I/O and no clock
//! reads: every method that depends on time takes `now`. The async shell in
//! `pool/mod.rs` wraps this in a mutex and adds tokens, events and files.
//!
//! One credential's state is in `cred`; a provider's health, told from
//! its credentials' failures, in `health`; the [`Core`] here ties them
//! together and selects.

mod cred;
mod health;
mod strategy;

use std::time::Duration;

use tokio::time::Instant;

use crate::config::PoolSettings;
use crate::events::{State, Totals};
use crate::vocab::human;
pub use crate::vocab::{CooldownKind, Verdict};

pub use self::cred::{Cooldown, Cred, CredStats};
pub use self::health::{
    PROVIDER_WIDE_MAX, PROVIDER_WIDE_MIN, PROVIDER_WIDE_RECUR, PROVIDER_WIDE_WINDOW, ProviderHealth,
};
pub use self::strategy::SeenCapacity;

/// Why nothing could be leased.
#[derive(Debug, Clone, PartialEq)]
pub struct Unavailable {
    /// Earliest moment some credential of the provider can serve again
    /// (cooldown end or next probe); `None` when all are disabled.
    pub retry_at: Option<Instant>,
    /// Some credential is ready but was already tried by this request.
    pub tried_ready: bool,
    /// Some credential is ready but at its `max_in_flight` cap: the pool is
    /// busy, not limited, and the request is shed rather than queued.
    pub busy: bool,
    /// Some credential is cooling or exhausted. When none is, the wait is
    /// for failed credentials' probes: the upstream is broken, not limiting
    /// us, and the client is told so rather than handed a 429.
    pub limited: bool,
}

/// The pool's state machine: credentials, tier cursors, the operator's
/// "use next" pick.
#[derive(Debug, Clone)]
pub struct Core {
    pub creds: Vec<Cred>,
    pub settings: PoolSettings,
    /// Credential indices per tier, in config order.
    members: Vec<Vec<usize>>,
    /// Round-robin position per tier (index into `members[tier]`).
    cursors: Vec<usize>,
    /// Set by the operator's use-next; consumed by the next matching lease.
    next_override: Option<usize>,
    /// Pool-wide counters; kept here so they move under the same lock as
    /// the credential they describe.
    pub totals: Totals,
    /// Per provider index (grown on demand: a provider without
    /// credentials never needs one).
    health: Vec<ProviderHealth>,
}

impl Core {
    /// Holds credential `i` for `wait` (a budget it reached): the same
    /// cooldown a provider's hint starts, never shortening a longer one.
    /// Returns its state before and after.
    pub fn hold(
        &mut self,
        i: usize,
        now: Instant,
        wait: Duration,
        kind: CooldownKind,
        reason: String,
    ) -> (State, State) {
        let c = &mut self.creds[i];
        let before = c.state(now);
        c.cool(now, wait, kind, reason);
        (before, c.state(now))
    }

    pub fn new(settings: PoolSettings, creds: Vec<Cred>) -> Self {
        let mut members = vec![Vec::new(); settings.tiers.len()];
        for (i, c) in creds.iter().enumerate() {
            members[c.tier].push(i);
        }
        Core {
            cursors: vec![0; members.len()],
            members,
            creds,
            settings,
            next_override: None,
            totals: Totals::default(),
            health: Vec::new(),
        }
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.creds.iter().position(|c| c.name == name)
    }

    fn usable(&self, i: usize, provider: usize, tried: &[usize], now: Instant) -> bool {
        let c = &self.creds[i];
        c.provider == provider
            && c.state(now) == State::Ready
            && !tried.contains(&i)
            && c.in_flight < self.settings.max_in_flight
            && self.provider_cooling(provider, now).is_none()
    }

    /// Picks the credential for the next attempt: the operator's use-next
    /// pick if it can serve, else the first tier with a ready credential,
    /// round-robin inside it. The last tier is the fallback by construction:
    /// it is reached only when every earlier tier has nothing ready.
    pub fn select(
        &mut self,
        provider: usize,
        tried: &[usize],
        now: Instant,
    ) -> Result<usize, Unavailable> {
        if let Some(i) = self.next_override
            && self.usable(i, provider, tried, now)
        {
            self.next_override = None;
            let tier = self.creds[i].tier;
            if let Some(pos) = self.members[tier].iter().position(|&m| m == i) {
                self.cursors[tier] = pos + 1;
            }
            return Ok(self.take(i, now));
        }
        for tier in 0..self.members.len() {
            if let Some(pos) = self.choose(tier, provider, tried, now) {
                self.cursors[tier] = pos + 1;
                return Ok(self.take(self.members[tier][pos], now));
            }
        }
        Err(self.unavailable(provider, tried, now))
    }

    /// The position in `tier` of the credential that serves next under
    /// `[pool] strategy` (see `core/strategy.rs`): candidates are taken
    /// from the tier's cursor on, so ties go round-robin.
    fn choose(&self, tier: usize, provider: usize, tried: &[usize], now: Instant) -> Option<usize> {
        let members = &self.members[tier];
        let n = members.len();
        let strategy = self.settings.strategy;
        // The latest day any of them counted usage on stands for today
        // (the core reads no wall clock); round-robin needs none of it.
        let day = match strategy {
            crate::config::Strategy::RoundRobin => 0,
            _ => members
                .iter()
                .map(|&i| self.creds[i].stats.usage.today().0)
                .max()
                .unwrap_or(0),
        };
        let mut best: Option<(usize, strategy::Rank)> = None;
        for step in 0..n {
            let pos = (self.cursors[tier] + step) % n;
            let i = members[pos];
            if !self.usable(i, provider, tried, now) {
                continue;
            }
            if strategy == crate::config::Strategy::RoundRobin {
                return Some(pos);
            }
            let rank = strategy::rank(strategy, &self.creds[i], now, day);
            if best.is_none_or(|(_, b)| rank.cmp(&b).is_lt()) {
                best = Some((pos, rank));
            }
        }
        best.map(|(pos, _)| pos)
    }

    /// Keeps what an answer said of credential `i`'s rate limit.
    pub fn note_capacity(&mut self, i: usize, report: crate::vocab::Capacity, now: Instant) {
        self.creds[i].capacity = Some(SeenCapacity::new(report, now));
    }

    /// Like [`Core::select`], for a request of a session pinned to
    /// credential `pinned`: the pin wins when it can serve and its tier is
    /// the first with a credential that can (tiers stay the stronger
    /// preference: a session pinned to a fallback key goes back once its
    /// own tier recovers), and the operator's use-next pick does not wait.
    /// The pin does not move the round-robin cursor, so new sessions keep
    /// spreading over the tier.
    pub fn select_pinned(
        &mut self,
        provider: usize,
        tried: &[usize],
        pinned: Option<usize>,
        now: Instant,
    ) -> Result<usize, Unavailable> {
        if let Some(i) = pinned
            && self.pin_holds(i, provider, tried, now)
        {
            return Ok(self.take(i, now));
        }
        self.select(provider, tried, now)
    }

    fn pin_holds(&self, i: usize, provider: usize, tried: &[usize], now: Instant) -> bool {
        let overridden = self
            .next_override
            .is_some_and(|o| o != i && self.usable(o, provider, tried, now));
        !overridden
            && self.usable(i, provider, tried, now)
            && self.first_usable_tier(provider, tried, now) == Some(self.creds[i].tier)
    }

    fn first_usable_tier(&self, provider: usize, tried: &[usize], now: Instant) -> Option<usize> {
        (0..self.members.len()).find(|&t| {
            self.members[t]
                .iter()
                .any(|&i| self.usable(i, provider, tried, now))
        })
    }

    /// Whether credential `i` could serve a request for `provider` now.
    pub fn can_serve(&self, i: usize, provider: usize, now: Instant) -> bool {
        self.usable(i, provider, &[], now)
    }

    /// Why a session pinned to `i` was served elsewhere, for the notice
    /// ("moved from key-a (cooling) to key-b"); `None` when only its
    /// concurrency cap stood in the way: a passing crowd, so the pin stays.
    pub fn pin_skipped(
        &self,
        i: usize,
        provider: usize,
        tried: &[usize],
        now: Instant,
    ) -> Option<String> {
        let c = &self.creds[i];
        let state = c.state(now);
        if state != State::Ready {
            return Some(state.as_str().to_string());
        }
        if tried.contains(&i) {
            return Some("failed on this request".to_string());
        }
        if self.provider_cooling(provider, now).is_some() {
            return Some("provider cooling".to_string());
        }
        if c.in_flight >= self.settings.max_in_flight {
            return None;
        }
        if let Some(o) = self.next_override
            && o != i
        {
            return Some("the operator picked another".to_string());
        }
        Some(format!(
            "tier {} is ready again",
            self.settings.tiers[self.first_usable_tier(provider, tried, now).unwrap_or(0)]
        ))
    }

    fn take(&mut self, i: usize, _now: Instant) -> usize {
        let c = &mut self.creds[i];
        c.in_flight += 1;
        c.stats.requests += 1;
        i
    }

    pub fn release(&mut self, i: usize) {
        let c = &mut self.creds[i];
        c.in_flight = c.in_flight.saturating_sub(1);
    }

    fn unavailable(&self, provider: usize, tried: &[usize], now: Instant) -> Unavailable {
        let mut retry_at: Option<Instant> = None;
        let mut tried_ready = false;
        let mut busy = false;
        let mut limited = false;
        let cooling = self.provider_cooling(provider, now);
        for (i, c) in self.creds.iter().enumerate() {
            if c.provider != provider {
                continue;
            }
            if c.state(now) == State::Ready && tried.contains(&i) {
                tried_ready = true;
                continue;
            }
            // A provider-wide 429: its ready credentials are held with it.
            if let Some(until) = cooling
                && c.state(now) == State::Ready
            {
                limited = true;
                retry_at = Some(retry_at.map_or(until, |r| r.min(until)));
                continue;
            }
            if c.state(now) == State::Ready && c.in_flight >= self.settings.max_in_flight {
                busy = true;
                continue;
            }
            limited |= matches!(c.state(now), State::Cooling | State::Exhausted);
            if let Some(at) = c.recovers_at(now) {
                retry_at = Some(retry_at.map_or(at, |r| r.min(at)));
            }
        }
        Unavailable {
            retry_at,
            tried_ready,
            busy,
            limited,
        }
    }

    /// The credential the next request for `provider` would get, without
    /// taking it (for the dashboard's marker).
    pub fn peek(&self, provider: usize, now: Instant) -> Option<usize> {
        if let Some(i) = self.next_override
            && self.usable(i, provider, &[], now)
        {
            return Some(i);
        }
        (0..self.members.len()).find_map(|tier| {
            self.choose(tier, provider, &[], now)
                .map(|pos| self.members[tier][pos])
        })
    }

    /// Applies what an attempt said. Returns the state before and after so
    /// the caller can publish a change (a change of the provider's health
    /// shows in [`Core::provider_down`]).
    pub fn record(&mut self, i: usize, verdict: &Verdict, now: Instant) -> (State, State) {
        if matches!(
            verdict,
            Verdict::RateLimited { .. } | Verdict::QuotaExhausted { .. }
        ) {
            self.totals.upstream_429 += 1;
        }
        let before = self.creds[i].state(now);
        let provider = self.creds[i].provider;
        match verdict {
            Verdict::Success { .. } | Verdict::QuotaExhausted { .. } => self.answered(provider),
            Verdict::RateLimited { wait, reason, own } => {
                self.answered(provider);
                self.creds[i].stats.rate_limited += 1;
                self.rate_limited(i, *wait, reason, *own, now);
            }
            Verdict::Failure { reason } => self.provider_failure(i, reason, now),
            Verdict::Unauthorized { .. }
            | Verdict::Neutral
            | Verdict::Held { .. }
            | Verdict::Disabled { .. } => {}
        }
        let c = &mut self.creds[i];
        if matches!(
            verdict,
            Verdict::Success { .. } | Verdict::RateLimited { .. } | Verdict::QuotaExhausted { .. }
        ) {
            c.note(false);
        }
        match verdict {
            Verdict::Success { hold } => {
                c.stats.successes += 1;
                c.failures = 0;
                c.failed = None;
                c.last_error = None;
                if let Some((wait, reason)) = hold {
                    c.cool(now, *wait, CooldownKind::RateLimited, reason.clone());
                }
            }
            // Counted and cooled above (unless the 429 was the provider's).
            Verdict::RateLimited { .. } => {}
            Verdict::QuotaExhausted { wait, reason } => {
                c.stats.rate_limited += 1;
                c.cool(now, *wait, CooldownKind::Quota, reason.clone());
            }
            Verdict::Unauthorized { reason } => {
                c.stats.errors += 1;
                c.failures = c.failures.saturating_add(1);
                c.last_error = Some(reason.clone());
                c.failed = Some((reason.clone(), now + self.settings.probe_interval));
            }
            Verdict::Held { wait, reason } => {
                c.stats.errors += 1;
                c.cool(now, *wait, CooldownKind::RateLimited, reason.clone());
            }
            Verdict::Disabled { reason } => {
                c.stats.errors += 1;
                c.last_error = Some(reason.clone());
                c.disabled = true;
                c.disabled_reason = Some(reason.clone());
            }
            // Counted in `provider_failure`.
            Verdict::Failure { .. } | Verdict::Neutral => {}
        }
        (before, c.state(now))
    }

    /// A refresh that failed for a reason that may pass (the token
    /// endpoint answered 5xx or not at all): counts towards
    /// `max_failures` like any failure, but says nothing about the
    /// provider's API.
    pub fn refresh_failed(&mut self, i: usize, reason: &str, now: Instant) -> (State, State) {
        let (max_failures, probe_interval) =
            (self.settings.max_failures, self.settings.probe_interval);
        let c = &mut self.creds[i];
        let before = c.state(now);
        c.stats.errors += 1;
        c.failures = c.failures.saturating_add(1);
        c.last_error = Some(reason.to_string());
        if c.failures >= max_failures && c.failed.is_none() {
            c.fail_after_run(reason, now + probe_interval);
        }
        (before, c.state(now))
    }

    /// Marks a credential failed at once (a dead refresh token).
    pub fn fail(&mut self, i: usize, reason: String, now: Instant) -> (State, State) {
        let probe_interval = self.settings.probe_interval;
        let c = &mut self.creds[i];
        let before = c.state(now);
        c.failures = c.failures.saturating_add(1);
        c.stats.errors += 1;
        c.last_error = Some(reason.clone());
        c.failed = Some((reason, now + probe_interval));
        (before, c.state(now))
    }

    /// Failed credentials whose probe is due and not already running; marks
    /// them as probing.
    pub fn due_probes(&mut self, now: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        for (i, c) in self.creds.iter_mut().enumerate() {
            if c.disabled || c.probing {
                continue;
            }
            if let Some((_, at)) = &c.failed
                && *at <= now
            {
                c.probing = true;
                due.push(i);
            }
        }
        due
    }

    /// The probe's result: success brings the credential back, failure
    /// schedules the next probe.
    pub fn probe_done(
        &mut self,
        i: usize,
        result: Result<(), String>,
        now: Instant,
    ) -> (State, State) {
        let probe_interval = self.settings.probe_interval;
        let c = &mut self.creds[i];
        let before = c.state(now);
        c.probing = false;
        match result {
            Ok(()) => {
                c.failed = None;
                c.failures = 0;
                c.last_error = None;
                // Back from a failure: judged afresh.
                c.recent = 0;
                c.recent_len = 0;
            }
            Err(reason) => {
                c.last_error = Some(reason.clone());
                if c.failed.is_some() {
                    c.failed = Some((reason, now + probe_interval));
                }
            }
        }
        (before, c.state(now))
    }

    /// Drops cooldowns that have run out. Returns the credentials that came
    /// back to ready.
    pub fn expire(&mut self, now: Instant) -> Vec<usize> {
        let mut back = Vec::new();
        for (i, c) in self.creds.iter_mut().enumerate() {
            if let Some(cd) = &c.cooldown
                && cd.until <= now
            {
                c.cooldown = None;
                if c.state(now) == State::Ready {
                    back.push(i);
                }
            }
        }
        back
    }

    /// The next moment something changes by itself (a cooldown ends or a
    /// probe is due).
    pub fn next_deadline(&self) -> Option<Instant> {
        let provider = self.next_provider_deadline();
        self.creds
            .iter()
            .filter(|c| !c.disabled)
            .flat_map(|c| {
                let cd = c.cooldown.as_ref().map(|c| c.until);
                let probe = c.failed.as_ref().filter(|_| !c.probing).map(|(_, at)| *at);
                [cd, probe]
            })
            .flatten()
            .chain(provider)
            .min()
    }

    /// A cooldown another replica learned: kept if it ends later than the
    /// one this credential has (the stricter wins).
    pub fn adopt_cooldown(
        &mut self,
        i: usize,
        until: Instant,
        kind: CooldownKind,
        reason: String,
        now: Instant,
    ) {
        if until > now {
            self.creds[i].cool(now, until - now, kind, reason);
        }
    }

    /// The operator's switch (here or on another replica): whatever
    /// disabled the credential before, it is the operator's now.
    pub fn set_disabled(&mut self, i: usize, disabled: bool) {
        self.creds[i].disabled = disabled;
        self.creds[i].disabled_reason = None;
    }

    /// Clears failures so a failed credential is probed right away.
    pub fn probe_now(&mut self, i: usize, now: Instant) {
        if let Some((_, at)) = &mut self.creds[i].failed {
            *at = now;
        }
    }

    pub fn use_next(&mut self, i: usize) {
        self.next_override = Some(i);
    }

    /// Advances the round-robin cursor of the tier that would serve the
    /// next request for `provider`, skipping the credential it would pick.
    pub fn rotate(&mut self, provider: usize, now: Instant) -> Option<usize> {
        self.next_override = None;
        let current = self.peek(provider, now)?;
        let tier = self.creds[current].tier;
        let pos = self.members[tier].iter().position(|&m| m == current)?;
        self.cursors[tier] = pos + 1;
        self.peek(provider, now)
    }
}

#[cfg(test)]
mod tests;
