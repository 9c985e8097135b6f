//! Text for people: the startup and `check` reports, the periodic summary,
//! and the headless event log (rotations, state changes, notices).

use std::collections::HashMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::events::{Event, Level, PoolSnapshot, State, human};
use crate::pool::PoolHandle;

/// The pool report `check` prints and `serve` starts with.
pub fn pool_report(config: &Config, snap: &PoolSnapshot, notes: &[String]) -> String {
    let mut out = String::new();
    let counts: Vec<String> = State::ALL
        .iter()
        .map(|s| format!("{} {}", snap.count(*s), s.as_str()))
        .collect();
    let _ = writeln!(
        out,
        "credentials: {} total · {}",
        snap.credentials.len(),
        counts.join(" · ")
    );
    let per_tier: Vec<String> = snap
        .tiers
        .iter()
        .map(|t| {
            let n = snap.credentials.iter().filter(|c| &c.tier == t).count();
            format!("{t} {n}")
        })
        .collect();
    // Round-robin goes without saying; another strategy is named.
    let within = match config.pool.strategy {
        crate::config::Strategy::RoundRobin => String::new(),
        s => format!(" ({} within each)", s.as_str()),
    };
    let _ = writeln!(out, "  tiers:     {}{within}", per_tier.join(" · "));
    let per_provider: Vec<String> = config
        .providers
        .iter()
        .map(|p| {
            let n = snap
                .credentials
                .iter()
                .filter(|c| c.provider == p.name)
                .count();
            let native = match p.responses {
                crate::config::ResponsesMode::Native => ", /v1/responses native",
                crate::config::ResponsesMode::Translate => "",
            };
            format!(
                "{} {n} ({}, {}{native})",
                p.name,
                p.kind.as_str(),
                p.base_url
            )
        })
        .collect();
    let _ = writeln!(out, "  providers: {}", per_provider.join(" · "));

    let w = |f: &dyn Fn(&crate::events::CredentialView) -> usize, min: usize| {
        snap.credentials.iter().map(f).max().unwrap_or(0).max(min)
    };
    let (wn, wt, wp, ws) = (
        w(&|c| c.name.chars().count(), 4),
        w(&|c| c.tier.chars().count(), 4),
        w(&|c| c.provider.chars().count(), 8),
        w(&|c| c.secret.chars().count(), 6),
    );
    let _ = writeln!(
        out,
        "  {:wn$}  {:wt$}  {:wp$}  {:ws$}  STATE",
        "NAME", "TIER", "PROVIDER", "SECRET"
    );
    for c in &snap.credentials {
        let mut state = c.state.as_str().to_string();
        if let Some(until) = c.until_ms {
            let left = Duration::from_millis(until.saturating_sub(snap.at_ms));
            let _ = write!(state, " ({} left)", human(left));
        }
        if let Some(r) = &c.reason
            && c.state != State::Disabled
        {
            let _ = write!(state, ": {r}");
        }
        let kind = match c.kind {
            crate::events::CredentialKind::ApiKey => "",
            crate::events::CredentialKind::RefreshToken => " (refresh token)",
        };
        let _ = writeln!(
            out,
            "  {:wn$}  {:wt$}  {:wp$}  {:ws$}  {state}{kind}",
            c.name, c.tier, c.provider, c.secret
        );
    }
    let budgets: Vec<String> = config
        .credentials
        .iter()
        .filter(|c| !c.budget.is_empty())
        .map(|c| {
            let today = snap
                .credentials
                .iter()
                .find(|v| v.name == c.name)
                .map_or(0, |v| v.usage.today_tokens());
            format!(
                "{} {} ({} tokens today)",
                c.name,
                describe_budget(&c.budget),
                crate::vocab::compact(today)
            )
        })
        .collect();
    let zone = &config.pool.usage_zone;
    if !budgets.is_empty() {
        let days = if zone.name() == "UTC" {
            String::new()
        } else {
            format!(" · days begin at 00:00 {}", zone.name())
        };
        let _ = writeln!(out, "  budgets:   {}{days}", budgets.join(" · "));
    } else if zone.name() != "UTC" {
        let _ = writeln!(out, "  usage:     days begin at 00:00 {}", zone.name());
    }
    for n in notes {
        let _ = writeln!(out, "  note: {n}");
    }
    out
}

/// `60 requests/min, 1.0M tokens/day`.
pub fn describe_budget(b: &crate::config::Budget) -> String {
    use crate::vocab::compact;
    let mut parts = Vec::new();
    if let Some(n) = b.requests_per_minute {
        parts.push(format!("{} requests/min", compact(n)));
    }
    if let Some(n) = b.tokens_per_minute {
        parts.push(format!("{} tokens/min", compact(n)));
    }
    if let Some(n) = b.tokens_per_day {
        parts.push(format!("{} tokens/day", compact(n)));
    }
    parts.join(", ")
}

/// The report `serve` prints once it is listening.
pub fn startup(config: &Config, addr: SocketAddr, snap: &PoolSnapshot, notes: &[String]) -> String {
    let mut out = format!(
        "tokenyard {} listening on http://{addr}/v1 (config: {})\n",
        env!("CARGO_PKG_VERSION"),
        config.source
    );
    if let Some(p) = &config.state_file {
        let _ = writeln!(out, "  state file: {}", p.display());
    }
    if config.client_keys.is_empty() {
        out.push_str("  client keys: none (loopback only)\n");
    } else {
        let _ = writeln!(
            out,
            "  client keys: {} configured",
            config.client_keys.len()
        );
    }
    out.push_str(&pool_report(config, snap, notes));
    out
}

/// One line: what the pool has done so far.
pub fn summary(snap: &PoolSnapshot) -> String {
    let t = &snap.totals;
    let uptime = Duration::from_millis(snap.at_ms.saturating_sub(snap.started_ms));
    let states: Vec<String> = State::ALL
        .iter()
        .filter(|s| snap.count(**s) > 0)
        .map(|s| format!("{} {}", snap.count(*s), s.as_str()))
        .collect();
    format!(
        "[{}] requests {} · ok {} · client 429s {} · upstream 429s {} · attempts {} · refreshes {} · pool: {}",
        human(uptime),
        t.requests,
        t.succeeded,
        t.client_429,
        t.upstream_429,
        t.attempts,
        t.refreshes,
        states.join(", ")
    )
}

/// The line an event becomes in the headless log, if any.
pub fn event_line(event: &Event) -> Option<(Level, String)> {
    match event {
        Event::Rotation {
            from: _,
            to,
            reason,
            ..
        } => {
            let line = match to {
                Some(to) => format!("{reason} → retrying with {to}"),
                None => format!("{reason} → no credential left to try"),
            };
            Some((Level::Info, line))
        }
        Event::Credential { credential: c } => {
            let mut line = format!("{} is {}", c.name, c.state.as_str());
            if let Some(r) = &c.reason {
                let _ = write!(line, " ({r})");
            }
            let level = match c.state {
                State::Failed => Level::Warn,
                _ => Level::Info,
            };
            Some((level, line))
        }
        Event::Provider { provider: p } => Some(match &p.reason {
            None if p.cooling_reason.is_some() => (
                Level::Warn,
                format!(
                    "provider {}: {}",
                    p.name,
                    p.cooling_reason.as_deref().unwrap_or_default()
                ),
            ),
            Some(why) => (
                Level::Warn,
                format!(
                    "provider {} is unhealthy ({why}); its keys stay in rotation, none is marked failed",
                    p.name
                ),
            ),
            None => (Level::Info, format!("provider {} answers again", p.name)),
        }),
        Event::Notice { level, message, .. } => Some((*level, message.clone())),
        Event::Request { .. } | Event::Reloaded { .. } => None,
    }
}

/// Logs pool events through `tracing` until `stop`. A lag is reported and
/// skipped, never fatal.
pub async fn log_events(pool: PoolHandle, stop: CancellationToken) {
    // Finished requests are logged (at debug) where they finish: this task
    // is not woken for each.
    let mut rx = pool.subscribe_changes();
    // Credential events also carry counter and token updates; only a change
    // of state is worth a line.
    let mut states: HashMap<String, State> = HashMap::new();
    let resync = |states: &mut HashMap<String, State>| {
        states.clear();
        for c in pool.snapshot().credentials {
            states.insert(c.name, c.state);
        }
    };
    resync(&mut states);
    // Made once: a fresh one per event would register and drop a waiter
    // on the token for every request the gateway serves.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let event = tokio::select! {
            _ = &mut stopped => return,
            e = rx.recv() => e,
        };
        match event {
            Ok(Event::Credential { credential })
                if states.get(&credential.name) == Some(&credential.state) => {}
            // The reload's notice says what changed; start over from the
            // new pool so added and removed credentials are known.
            Ok(Event::Reloaded { snapshot }) => {
                states.clear();
                for c in snapshot.credentials {
                    states.insert(c.name, c.state);
                }
            }
            Ok(e) => {
                if let Event::Credential { credential } = &e {
                    states.insert(credential.name.clone(), credential.state);
                }
                if let Some((level, line)) = event_line(&e) {
                    match level {
                        Level::Info => tracing::info!("{line}"),
                        Level::Warn => tracing::warn!("{line}"),
                        Level::Error => tracing::error!("{line}"),
                    }
                }
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!("event log fell behind and skipped {n} events");
                resync(&mut states);
            }
            Err(RecvError::Closed) => return,
        }
    }
}
