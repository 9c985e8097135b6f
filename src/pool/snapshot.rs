//! The pool as the dashboard, the admin API and the metrics see it.

use super::*;

impl PoolHandle {
    /// The whole pool, now.
    pub fn snapshot(&self) -> PoolSnapshot {
        let generation = self.current();
        let expiries: Vec<_> = generation.tokens.iter().map(|t| t.expiry()).collect();
        let now = Instant::now();
        let wall = SystemTime::now();
        let pinned: std::collections::BTreeMap<String, u64> = lock(&self.shell.sessions)
            .per_credential(now)
            .into_iter()
            // A credential a reload removed keeps its pins until they
            // expire or move; they count for nobody.
            .filter(|(name, _)| generation.specs().iter().any(|c| &c.name == name))
            .map(|(name, n)| (name, n as u64))
            .collect();
        let core = lock(&generation.core);
        PoolSnapshot {
            at_ms: unix_ms(wall),
            started_ms: unix_ms(self.shell.started),
            tiers: core.settings.tiers.clone(),
            credentials: (0..core.creds.len())
                .map(|i| view(&generation, &core, i, expiries[i], now, wall))
                .collect(),
            providers: (0..generation.providers().len())
                .map(|p| provider_view(&generation, &core, p, now, wall))
                .collect(),
            next: core.peek(0, now).map(|i| core.creds[i].name.clone()),
            totals: core.totals,
            clients: lock(&self.shell.clients).clone(),
            sessions: pinned.values().sum(),
            pinned,
        }
    }
}

/// Provider `p` of `generation` with the health its credentials showed.
pub(super) fn provider_view(
    generation: &Generation,
    core: &Core,
    p: usize,
    now: Instant,
    wall: SystemTime,
) -> ProviderView {
    let down = core.health(p).and_then(|h| h.down.as_ref());
    let cooling = core
        .health(p)
        .and_then(|h| h.cooling.as_ref())
        .filter(|(_, until)| *until > now);
    ProviderView {
        name: generation.providers()[p].name.clone(),
        healthy: down.is_none(),
        reason: down.map(|(why, _)| why.clone()),
        since_ms: down.map(|(_, at)| unix_ms(wall - now.saturating_duration_since(*at))),
        cooling_until_ms: cooling
            .map(|(_, until)| unix_ms(wall + until.saturating_duration_since(now))),
        cooling_reason: cooling.map(|(why, _)| why.clone()),
    }
}

/// Credential `i` of `generation` as the dashboard and the admin API show it.
pub(super) fn view(
    generation: &Generation,
    core: &Core,
    i: usize,
    token_expiry: Option<SystemTime>,
    now: Instant,
    wall: SystemTime,
) -> CredentialView {
    let c = &core.creds[i];
    let spec = &generation.specs()[i];
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
        State::Disabled => (
            Some(
                c.disabled_reason
                    .clone()
                    .unwrap_or_else(|| "disabled by the operator".to_string()),
            ),
            None,
        ),
        State::Ready => (None, None),
    };
    CredentialView {
        name: spec.name.clone(),
        provider: generation.providers()[spec.provider].name.clone(),
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
        usage: Box::new(crate::vocab::UsageView {
            tokens_per_day_budget: c.budget.tokens_per_day,
            ..c.stats.usage.view(
                wall.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                &core.settings.usage_zone,
            )
        }),
        capacity: c.capacity.as_ref().map(|s| s.report.clone()),
    }
}
