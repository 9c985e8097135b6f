//! What an attempt reports on its credential: the verdict, the usage,
//! and the provider's health they change.

use super::store::SharedUsage;
use super::usage::budget_reached;
use super::*;

impl PoolHandle {
    /// Applies an attempt's verdict to its credential (and, when a reload
    /// retired the lease's generation, to the same credential in the
    /// current one: a 429 that arrives mid-reload still cools it).
    pub fn record(&self, lease: &Lease, verdict: &Verdict, status: Option<u16>, latency: Duration) {
        self.record_at(
            lease,
            verdict,
            status,
            latency,
            Instant::now(),
            SystemTime::now(),
        );
    }

    /// [`PoolHandle::record`] at a time the caller has read already (`now`
    /// and `wall` of one instant): the request path reads the clocks once
    /// per answer rather than once per report.
    pub fn record_at(
        &self,
        lease: &Lease,
        verdict: &Verdict,
        status: Option<u16>,
        latency: Duration,
        now: Instant,
        wall: SystemTime,
    ) {
        let applied = self.apply(&lease.generation, lease.idx, |core, i| {
            core.totals.attempts += 1;
            let provider = core.creds[i].provider;
            let was_down = core.provider_down(provider).is_some();
            let was_cooling = core.provider_cooling(provider, now).is_some();
            let failures_before = core.creds[i].failures;
            let (before, after) = core.record(i, verdict, now);
            let c = &mut core.creds[i];
            c.stats.last_used = Some(wall);
            c.stats.last_latency = Some(latency);
            if status.is_some() {
                c.stats.last_status = status;
            }
            // Down or up, or a provider-wide 429 found (which ends by the
            // clock): the provider's view changed.
            let health = (was_down != core.provider_down(provider).is_some()
                || was_cooling != core.provider_cooling(provider, now).is_some())
            .then_some(provider);
            (
                before,
                after,
                failures_before != core.creds[i].failures,
                health,
            )
        });
        // Shared with the current generation for an unchanged credential.
        lease.generation.series.attempt(lease.idx, verdict);
        match applied {
            Some((generation, i, (before, after, failures_changed, health))) => {
                let disabled = matches!(verdict, Verdict::Disabled { .. });
                self.changed(&generation, i, before, after, failures_changed || disabled);
                if let Some(provider) = health {
                    self.health_changed(&generation, provider);
                }
                if let Verdict::Disabled { reason } = verdict
                    && before != after
                {
                    let name = generation.specs()[i].name.clone();
                    self.notice(Level::Warn, format!("{name} disabled: {reason}"));
                    // Every replica takes it out, as for the operator's
                    // switch (off the request path).
                    let pool = self.clone();
                    tokio::spawn(async move { pool.share_disabled(&name, true).await });
                }
            }
            // The credential went with a reload: the attempt still counts
            // in the pool's totals.
            None => self.with_current(|_, core| {
                core.totals.attempts += 1;
                if matches!(
                    verdict,
                    Verdict::RateLimited { .. } | Verdict::QuotaExhausted { .. }
                ) {
                    core.totals.upstream_429 += 1;
                }
            }),
        }
    }

    /// Keeps what an answer's headers said of `lease`'s credential's rate
    /// limit (the latest report wins), for the views and `[pool] strategy`.
    /// Published with the credential's next change or snapshot: it moves
    /// on every answer, as the counters do.
    pub fn note_capacity(&self, lease: &Lease, report: crate::vocab::Capacity, now: Instant) {
        self.apply(&lease.generation, lease.idx, |core, i| {
            core.note_capacity(i, report.clone(), now)
        });
    }

    /// Adds one answer to `lease`'s credential's usage, with the tokens its
    /// provider reported (`None`: it reported none, or the stream was cut
    /// before it did). Counted where [`PoolHandle::record`] counts: on the
    /// current generation's copy when a reload lands meanwhile.
    ///
    /// A credential whose budget this answer reaches is held at once (see
    /// [`crate::config::Budget`]), like a provider's depleted limit.
    pub fn add_usage(&self, lease: &Lease, usage: Option<crate::vocab::Usage>) {
        self.add_usage_at(lease, usage, Instant::now(), SystemTime::now());
    }

    /// [`PoolHandle::add_usage`] at a time the caller has read already.
    pub fn add_usage_at(
        &self,
        lease: &Lease,
        usage: Option<crate::vocab::Usage>,
        now: Instant,
        wall: SystemTime,
    ) {
        let ms = unix_ms(wall);
        let applied = self.apply(&lease.generation, lease.idx, |core, i| {
            let zone = &core.settings.usage_zone;
            let c = &mut core.creds[i];
            c.stats.usage.add(usage, ms / 1000, zone);
            let day = zone.day(ms / 1000);
            let held =
                c.stats
                    .usage
                    .reached(&c.budget, zone, ms)
                    .map(|(until_ms, kind, reason)| {
                        let wait = Duration::from_millis(until_ms.saturating_sub(ms));
                        core.hold(i, now, wait, kind, reason)
                    });
            (day, held)
        });
        let mut day = None;
        if let Some((generation, i, (today, held))) = applied {
            day = Some(today);
            if let Some((before, after)) = held {
                self.changed(&generation, i, before, after, false);
            }
        }
        self.shell
            .usage_dirty
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let name = &lease.generation.specs()[lease.idx].name;
        if let Some(day) = day {
            self.share_usage(name, ms, day, usage.map_or(0, |u| u.total()));
        }
    }

    /// The whole cluster's counts for `name` (Redis) after an answer at
    /// `at_ms`: holds the credential here if they reach its budget, and the
    /// hold goes to every replica as any cooldown does.
    pub(super) fn cluster_usage(&self, name: &str, at_ms: u64, day: u64, counts: SharedUsage) {
        let now = Instant::now();
        let generation = self.current();
        let Some(i) = generation.specs().iter().position(|s| s.name == name) else {
            return;
        };
        let held = {
            let mut core = lock(&generation.core);
            core.creds[i].stats.usage.set_cluster_day(
                day,
                crate::vocab::DayCounts {
                    answers: counts.day_answers,
                    tokens: counts.day_tokens,
                },
            );
            let budget = core.creds[i].budget;
            budget_reached(
                &budget,
                &core.settings.usage_zone,
                counts.day_tokens,
                counts.minute_answers,
                counts.minute_tokens,
                at_ms,
            )
            .map(|(until_ms, kind, reason)| {
                let wait =
                    Duration::from_millis(until_ms.saturating_sub(unix_ms(SystemTime::now())));
                core.hold(i, now, wait, kind, reason)
            })
        };
        if let Some((before, after)) = held {
            self.changed(&generation, i, before, after, false);
        }
    }

    /// A provider went down or came back: say so, and republish its
    /// credentials (going down can bring back keys its failures had marked
    /// failed; coming back resets their failure counts).
    pub(super) fn health_changed(&self, generation: &Generation, provider: usize) {
        if generation.is_retired() {
            return;
        }
        let view = {
            let core = lock(&generation.core);
            provider_view(
                generation,
                &core,
                provider,
                Instant::now(),
                SystemTime::now(),
            )
        };
        self.shell.ready.notify_waiters();
        self.shell.clock.notify_one();
        self.shell.dirty.notify_one();
        for i in 0..generation.specs().len() {
            if generation.specs()[i].provider == provider {
                self.publish_credential(generation, i);
            }
        }
        self.publish(Event::Provider { provider: view });
    }
}
