//! A provider's health: telling one credential's failures from the
//! provider's own outage.

use super::*;

/// A provider's health, as its credentials' failures tell it. Failures
/// that one credential gathers while its siblings answer are that
/// credential's; failures that several credentials gather while nothing
/// of the provider answers are the provider's (an outage, a broken
/// deployment), and then no key is marked failed: the provider is marked
/// unhealthy instead, and every key stays in rotation for the moment it
/// answers again.
#[derive(Debug, Clone, Default)]
pub struct ProviderHealth {
    /// Good answers (a success, or a 429 or quota answer: a provider that
    /// says "slow down" is up). Compared with [`Cred::run_from`].
    answers: u64,
    /// Credentials that failed since the last good answer, each with
    /// whether that run made it `failed` (undone if the provider turns out
    /// to be the cause).
    streak: Vec<(usize, bool)>,
    /// Why the provider is unhealthy, and since when; `None` while healthy.
    pub down: Option<(String, Instant)>,
    /// Its credentials' rate limits of the last [`PROVIDER_WIDE_WINDOW`]:
    /// when every credential has one, the 429 is the provider's, not
    /// theirs.
    limits: Vec<Limit>,
    /// A provider-wide 429: why, and until when none of its credentials is
    /// leased (their own cooldowns stay as they were).
    pub cooling: Option<(String, Instant)>,
    /// When the last provider-wide cooldown ended (or ends).
    last_wide: Option<Instant>,
}

/// How close together every credential's 429 must come for the 429 to be
/// taken as provider-wide.
pub const PROVIDER_WIDE_WINDOW: Duration = Duration::from_secs(1);
/// How long a provider-wide 429 cools the provider: the shortest wait its
/// credentials were asked for, within these bounds. Brief on purpose: a
/// provider that refuses every key at once is shedding load as a whole
/// (or its limit is shared by the keys), and a key's own cooldown of the
/// full hint would keep every key out long after it passed.
pub const PROVIDER_WIDE_MIN: Duration = Duration::from_millis(500);
pub const PROVIDER_WIDE_MAX: Duration = Duration::from_secs(5);
/// A provider-wide 429 again within this long of the last one's end is
/// taken at its word: the keys cool for the waits they were given. A pool
/// whose keys each ran out of their own limit looks the same as a
/// provider-wide 429 when one request rotates through them in a second;
/// this way it costs one brief pause and one more 429 per key, and then
/// every key's own hint is honoured.
pub const PROVIDER_WIDE_RECUR: Duration = Duration::from_secs(60);

/// One credential's 429 within the window.
#[derive(Debug, Clone)]
struct Limit {
    cred: usize,
    at: Instant,
    /// Its cooldown before this 429, put back if the 429 was the provider's.
    before: Option<Cooldown>,
    wait: Duration,
}

impl Core {
    /// The provider's health (healthy until its credentials say otherwise).
    pub fn health(&self, provider: usize) -> Option<&ProviderHealth> {
        self.health.get(provider)
    }

    /// Why `provider` is unhealthy, if it is.
    pub fn provider_down(&self, provider: usize) -> Option<&str> {
        self.health(provider)
            .and_then(|h| h.down.as_ref())
            .map(|(why, _)| why.as_str())
    }

    /// Until when `provider` is cooling for a provider-wide 429, if it is.
    pub fn provider_cooling(&self, provider: usize, now: Instant) -> Option<Instant> {
        self.health(provider)
            .and_then(|h| h.cooling.as_ref())
            .map(|(_, until)| *until)
            .filter(|until| *until > now)
    }

    /// Ends the provider-wide cooldowns that have run out; returns those
    /// providers.
    pub fn expire_providers(&mut self, now: Instant) -> Vec<usize> {
        let mut back = Vec::new();
        for (p, h) in self.health.iter_mut().enumerate() {
            if h.cooling.as_ref().is_some_and(|(_, until)| *until <= now) {
                h.cooling = None;
                back.push(p);
            }
        }
        back
    }

    /// When the next provider-wide cooldown ends.
    pub(super) fn next_provider_deadline(&self) -> Option<Instant> {
        self.health
            .iter()
            .filter_map(|h| h.cooling.as_ref().map(|(_, until)| *until))
            .min()
    }

    /// A 429 on credential `i` asking for `wait`: the credential cools for
    /// it, unless the 429 is the provider's. A 429 that says the key's own
    /// limit is spent (`own`) never is. One that does not is when the
    /// provider is already cooling for one (an answer that was on its
    /// way), or when it completes a set: every credential of the provider
    /// that can serve (two at least) answered such a 429 within
    /// [`PROVIDER_WIDE_WINDOW`]. Then the provider cools briefly and the
    /// credentials of the set get back the cooldowns they had before it.
    pub(super) fn rate_limited(
        &mut self,
        i: usize,
        wait: Duration,
        reason: &str,
        own: bool,
        now: Instant,
    ) {
        let provider = self.creds[i].provider;
        if own {
            self.creds[i].cool(now, wait, CooldownKind::RateLimited, reason.to_string());
            return;
        }
        if self.provider_cooling(provider, now).is_some() {
            return;
        }
        let before = self.creds[i].cooldown.clone();
        self.creds[i].cool(now, wait, CooldownKind::RateLimited, reason.to_string());
        let h = self.health_mut(provider);
        h.limits
            .retain(|l| now.saturating_duration_since(l.at) <= PROVIDER_WIDE_WINDOW);
        match h.limits.iter_mut().find(|l| l.cred == i) {
            Some(l) => {
                l.at = now;
                l.wait = wait;
            }
            None => h.limits.push(Limit {
                cred: i,
                at: now,
                before,
                wait,
            }),
        }
        let can_serve: Vec<usize> = (0..self.creds.len())
            .filter(|&j| {
                let c = &self.creds[j];
                c.provider == provider && !c.disabled && c.failed.is_none()
            })
            .collect();
        let h = &self.health[provider];
        let recurs = h
            .last_wide
            .is_some_and(|end| now < end + PROVIDER_WIDE_RECUR);
        if recurs
            || can_serve.len() < 2
            || !can_serve
                .iter()
                .all(|j| h.limits.iter().any(|l| l.cred == *j))
        {
            return;
        }
        let limits = std::mem::take(&mut self.health[provider].limits);
        let shortest = limits.iter().map(|l| l.wait).min().unwrap_or(wait);
        let brief = shortest.clamp(PROVIDER_WIDE_MIN, PROVIDER_WIDE_MAX);
        for l in limits {
            self.creds[l.cred].cooldown = l.before;
        }
        self.health[provider].cooling = Some((
            format!(
                "provider-wide 429: all {} credentials answered 429 within {}; \
                 the provider cools for {} (the keys keep their own cooldowns)",
                can_serve.len(),
                human(PROVIDER_WIDE_WINDOW),
                human(brief),
            ),
            now + brief,
        ));
        self.health[provider].last_wide = Some(now + brief);
    }

    fn health_mut(&mut self, provider: usize) -> &mut ProviderHealth {
        if self.health.len() <= provider {
            self.health
                .resize_with(provider + 1, ProviderHealth::default);
        }
        &mut self.health[provider]
    }

    /// A good answer from `provider`: its failures so far were passing, and
    /// if it was down, the keys it failed on start over.
    pub(super) fn answered(&mut self, provider: usize) {
        let h = self.health_mut(provider);
        h.answers += 1;
        let streak = std::mem::take(&mut h.streak);
        if h.down.take().is_some() {
            for (j, _) in streak {
                self.creds[j].failures = 0;
            }
        }
    }

    /// A failure (5xx, a broken connection, a timeout) on credential `i`:
    /// the credential's count rises; at `max_failures` (with at least half
    /// of its recent answers failures) it is marked failed,
    /// unless the provider has not answered well since the run began and
    /// another of its credentials failed meanwhile: then the provider is
    /// marked down instead, and what this run marked failed is undone.
    pub(super) fn provider_failure(&mut self, i: usize, reason: &str, now: Instant) {
        let (max_failures, probe_interval) =
            (self.settings.max_failures, self.settings.probe_interval);
        let provider = self.creds[i].provider;
        let answers = self.health_mut(provider).answers;
        let c = &mut self.creds[i];
        c.stats.errors += 1;
        if c.failures == 0 {
            c.run_from = answers;
        }
        c.failures = c.failures.saturating_add(1);
        c.last_error = Some(reason.to_string());
        c.note(true);
        let (failures, run_from, already) = (c.failures, c.run_from, c.failed.is_some());
        let mostly_failing = c.mostly_failing();
        let h = &mut self.health[provider];
        let pos = match h.streak.iter().position(|(j, _)| *j == i) {
            Some(pos) => pos,
            None => {
                h.streak.push((i, false));
                h.streak.len() - 1
            }
        };
        if h.down.is_some() || failures < max_failures || already || !mostly_failing {
            return;
        }
        let others = h.streak.iter().filter(|(j, _)| *j != i).count();
        if others > 0 && run_from == h.answers {
            h.down = Some((
                format!(
                    "{} credentials failed with no good answer between; last: {reason}",
                    others + 1
                ),
                now,
            ));
            let undo: Vec<usize> = h.streak.iter().filter(|s| s.1).map(|s| s.0).collect();
            for (_, made_failed) in &mut h.streak {
                *made_failed = false;
            }
            for j in undo {
                self.creds[j].failed = None;
            }
        } else {
            h.streak[pos].1 = true;
            self.creds[i].fail_after_run(reason, now + probe_interval);
        }
    }
}
