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
