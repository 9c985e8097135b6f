//! One credential: its state (ready, cooling, exhausted, failed,
//! disabled), its cooldown, its failure run and its counters.

use super::*;

#[derive(Debug, Clone)]
pub struct Cooldown {
    pub until: Instant,
    pub kind: CooldownKind,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct CredStats {
    pub requests: u64,
    pub successes: u64,
    pub rate_limited: u64,
    pub errors: u64,
    pub refreshes: u64,
    pub last_used: Option<std::time::SystemTime>,
    pub last_latency: Option<Duration>,
    pub last_status: Option<u16>,
    /// Answers and tokens, since start, today and over the last hour.
    pub usage: crate::pool::usage::UsageCounters,
}

#[derive(Debug, Clone)]
pub struct Cred {
    pub name: String,
    pub provider: usize,
    pub tier: usize,
    /// Operator switch, kept apart from the cooldown so that enabling a key
    /// never erases a retry hint the provider gave.
    pub disabled: bool,
    /// Why it was disabled when that was not the operator's doing (a 402,
    /// an error-policy rule); `None` for the operator's switch.
    pub disabled_reason: Option<String>,
    pub cooldown: Option<Cooldown>,
    /// Consecutive failures; a success resets it.
    pub failures: u32,
    /// Set once `failures` reaches `max_failures` (or on a fatal error):
    /// the reason, and when the half-open probe runs next.
    pub failed: Option<(String, Instant)>,
    /// A probe is running; at most one per credential.
    pub probing: bool,
    pub in_flight: u32,
    pub stats: CredStats,
    /// The operator's limits on its use (from its spec; a reload sets the
    /// new ones).
    pub budget: crate::config::Budget,
    pub last_error: Option<String>,
    /// What its provider last reported of its rate limit (see
    /// `[pool] strategy`, which may choose by it).
    pub capacity: Option<super::SeenCapacity>,
    /// Its provider's count of good answers when the current run of
    /// failures began: equal to the count now means the provider has not
    /// answered well anywhere since, the sign of an outage (see
    /// [`ProviderHealth`]).
    pub(super) run_from: u64,
    /// The last [`RECENT`] answers, newest in bit 0 (1: a failure), and
    /// how many of those bits are filled. A run of `max_failures` marks
    /// the credential failed only if at least half of them are failures:
    /// at a 5 % error rate, a key serving eight requests at once meets
    /// three failures in a row every few thousand requests, and must not
    /// be taken out for it; a key that fails everything still goes at
    /// `max_failures`.
    pub(super) recent: u16,
    pub(super) recent_len: u8,
}

/// How many answers [`Cred::recent`] keeps.
const RECENT: u8 = 16;

impl Cred {
    pub fn new(name: String, provider: usize, tier: usize) -> Self {
        Cred {
            name,
            provider,
            tier,
            disabled: false,
            disabled_reason: None,
            cooldown: None,
            failures: 0,
            failed: None,
            probing: false,
            in_flight: 0,
            stats: CredStats::default(),
            budget: Default::default(),
            last_error: None,
            capacity: None,
            run_from: 0,
            recent: 0,
            recent_len: 0,
        }
    }

    /// Remembers one answer for the failure rate.
    pub(super) fn note(&mut self, failure: bool) {
        self.recent = (self.recent << 1) | u16::from(failure);
        self.recent_len = (self.recent_len + 1).min(RECENT);
    }

    /// Marks it failed for its run of failures, probed at `probe_at`.
    pub(super) fn fail_after_run(&mut self, last: &str, probe_at: Instant) {
        let why = format!("{} consecutive failures; last: {last}", self.failures);
        self.failed = Some((why, probe_at));
    }

    /// At least half of the recent answers were failures.
    pub(super) fn mostly_failing(&self) -> bool {
        2 * self.recent.count_ones() >= u32::from(self.recent_len)
    }

    pub fn state(&self, now: Instant) -> State {
        if self.disabled {
            return State::Disabled;
        }
        if self.failed.is_some() {
            return State::Failed;
        }
        match &self.cooldown {
            Some(c) if c.until > now => match c.kind {
                CooldownKind::RateLimited => State::Cooling,
                CooldownKind::Quota => State::Exhausted,
            },
            _ => State::Ready,
        }
    }

    /// When this credential can serve again by itself, if ever.
    pub fn recovers_at(&self, now: Instant) -> Option<Instant> {
        match self.state(now) {
            State::Ready => Some(now),
            State::Cooling | State::Exhausted => self.cooldown.as_ref().map(|c| c.until),
            State::Failed => self.failed.as_ref().map(|(_, at)| *at),
            State::Disabled => None,
        }
    }

    pub(super) fn cool(
        &mut self,
        now: Instant,
        wait: Duration,
        kind: CooldownKind,
        reason: String,
    ) {
        let until = now + wait;
        match &mut self.cooldown {
            // Never shorten a wait a provider asked for; a quota cooldown
            // outranks a rate limit that ends sooner.
            Some(c) if c.until > now && c.until >= until => {
                if kind == CooldownKind::Quota {
                    c.kind = kind;
                }
            }
            _ => {
                self.cooldown = Some(Cooldown {
                    until,
                    kind,
                    reason,
                })
            }
        }
    }
}
