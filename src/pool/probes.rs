//! The pool's clock, which ends cooldowns and wakes waiting requests, and
//! the half-open probes of failed credentials.

use futures_util::future::BoxFuture;

use super::*;

/// The half-open probe's request: one cheap authenticated call to the
/// provider with `token` (`bearer`: sent as an access token, not an API
/// key), `Ok` when the credential works again, given up after `timeout`.
/// The gateway hands the pool `upstream::probe_boxed`.
pub type Prober = for<'a> fn(
    &'a reqwest::Client,
    &'a Provider,
    &'a Secret,
    bool,
    Duration,
) -> BoxFuture<'a, Result<(), String>>;

impl PoolHandle {
    /// Hands the pool the probe's request (the gateway does, with the
    /// upstream adapters'). The first one stays. A pool without one (built
    /// outside a gateway) answers every probe with an error that says so.
    pub fn set_prober(&self, prober: Prober) {
        let _ = self.shell.prober.set(prober);
    }

    pub(super) async fn clock_task(self, cancel: CancellationToken) {
        loop {
            let deadline = lock(&self.current().core).next_deadline();
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.shell.clock.notified() => {}
                _ = tokio::time::sleep_until(deadline.unwrap_or(far).min(far)) => {}
            }
            let now = Instant::now();
            let (generation, back, due, providers) = self.with_current(|generation, core| {
                (
                    generation.clone(),
                    core.expire(now),
                    core.due_probes(now),
                    core.expire_providers(now),
                )
            });
            for i in back {
                self.changed(&generation, i, State::Cooling, State::Ready, true);
            }
            // A provider-wide 429's cooldown ended: its keys serve again.
            for p in providers {
                self.health_changed(&generation, p);
            }
            for i in due {
                // The probe carries its generation: its result lands on the
                // credential it probed, whatever reloads happen meanwhile.
                let pool = self.clone();
                let generation = generation.clone();
                tokio::spawn(async move {
                    let _ = pool.run_probe(&generation, i).await;
                });
            }
        }
    }

    /// One half-open probe of credential `i` (already marked probing).
    pub(super) async fn run_probe(
        &self,
        generation: &Arc<Generation>,
        i: usize,
    ) -> Result<(), String> {
        let spec = &generation.specs()[i];
        let provider = &generation.providers()[spec.provider];
        let token = match &spec.auth {
            AuthSpec::ApiKey(k) => Ok(k.clone()),
            AuthSpec::Refresh { .. } => self
                .refresh(generation, i, tokens::Mode::IfStale, false)
                .await
                .map_err(|e| e.message),
        };
        let result = match token {
            Ok(t) => {
                let bearer = spec.auth.refreshes();
                match self.shell.prober.get() {
                    Some(probe) => {
                        probe(&self.shell.http, provider, &t, bearer, PROBE_TIMEOUT).await
                    }
                    None => Err("probe: this pool was given no prober (no gateway)".to_string()),
                }
            }
            Err(e) => Err(e),
        };
        let now = Instant::now();
        let applied = self.apply(generation, i, |core, i| {
            core.probe_done(i, result.clone(), now)
        });
        if let Some((g, j, (before, after))) = applied {
            if before == State::Failed {
                match &result {
                    Ok(()) => self.notice(
                        Level::Info,
                        format!("{}: probe succeeded; back in rotation", spec.name),
                    ),
                    Err(e) => self.notice(
                        Level::Warn,
                        format!(
                            "{}: probe failed ({e}); next probe in {}",
                            spec.name,
                            human(g.settings().probe_interval)
                        ),
                    ),
                }
            }
            self.changed(&g, j, before, after, true);
        }
        self.shell.clock.notify_one();
        result
    }
}
