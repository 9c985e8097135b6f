//! The chaos suite's verdicts, computed after the run from what the sim saw
//! (every upstream request, with its arrival time and the exact wait of
//! every 429), what the gateway published (state changes, stamped when the
//! test received them) and what each client got.
//!
//! Arrival times are taken at the sim, so a request the gateway had already
//! sent when a 429 came back for the same key can land just after it. Every
//! check therefore allows `SLACK` at the edges of a window; the windows
//! themselves (0.1–1.5 s of cooling, seconds of being disabled) are mostly
//! far wider, and a cooldown shorter than twice the slack is not checked.
//!
//! When every credential of a provider answers 429 within a second, the
//! gateway takes the 429 as the provider's: the provider cools briefly,
//! none of its credentials is used meanwhile, and the keys of that set get
//! back the cooldowns they had before (see `pool/core/health.rs`). The
//! checks take those windows from the event feed: no request goes to the
//! provider inside one, a client 429 inside one is not needless, and the
//! 429s the gateway set aside for one do not count as the keys' cooldowns.

use std::collections::HashMap;
use std::time::Duration;

use tokenyard::events::State;
use tokenyard::sim::{HintStyle, SimRequest, TokenCall, TokenOutcome};
use tokio::time::Instant;

use super::client::{End, Outcome};

/// Covers the gateway's own lag between the sim answering and the gateway
/// acting on it (a 2-core machine running the debug binary at `trace`
/// level, with the load generator and the sim in this process).
pub const SLACK: Duration = Duration::from_millis(150);

/// What the test knows about one credential.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: &'static str,
    /// Its provider's name, as configured.
    pub provider: &'static str,
    /// The models it serves (its provider's).
    pub model: &'static str,
    pub hints: HintStyle,
    /// Announces its hints to the millisecond (else whole seconds or an
    /// HTTP date, which the gateway rounds up).
    pub precise: bool,
    /// Its token endpoint never works: it can never serve.
    pub broken: bool,
}

/// A window during which a credential must not be sent anything.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: Instant,
    pub to: Instant,
}

impl Window {
    fn strictly_inside(&self, t: Instant) -> bool {
        t > self.from + SLACK && t + SLACK < self.to
    }
    fn covers(&self, t: Instant) -> bool {
        t + SLACK >= self.from && t <= self.to + SLACK
    }
}

/// Every window in which each credential was cooling by the provider's own
/// word, from the sim's log: `(lower, upper)`, where `lower` is what the
/// hint asked for at the least (the exact wait; for a hint-less 429 the
/// gateway's `default_cooldown`) and `upper` the most a faithful reading of
/// the hint may wait (rounded up to the second where the hint is).
pub fn cooldowns(
    log: &[SimRequest],
    accounts: &[Account],
    default_cooldown: Duration,
) -> HashMap<&'static str, Vec<(Window, Window)>> {
    let mut out: HashMap<&'static str, Vec<(Window, Window)>> = HashMap::new();
    for r in log {
        let (Some(label), 429, Some(exact)) = (r.label.as_deref(), r.status, r.retry_after) else {
            continue;
        };
        let Some(a) = accounts.iter().find(|a| a.name == label) else {
            continue;
        };
        let (lower, upper) = match a.hints {
            HintStyle::None => (default_cooldown, default_cooldown),
            _ if a.precise => (exact, exact + Duration::from_millis(5)),
            _ => (exact, exact + Duration::from_secs(1)),
        };
        out.entry(a.name).or_default().push((
            Window {
                from: r.at,
                to: r.at + lower,
            },
            Window {
                from: r.at,
                to: r.at + upper,
            },
        ));
    }
    out
}

/// Intervals in which the gateway said a credential was `failed`, from its
/// event feed.
pub fn failed_windows(
    states: &[(Instant, String, State)],
    end: Instant,
) -> HashMap<String, Vec<Window>> {
    windows_of(
        states
            .iter()
            .map(|(at, name, state)| (*at, name, *state == State::Failed)),
        end,
    )
}

/// Intervals in which the gateway said a provider was cooling for a
/// provider-wide 429, from its event feed: `(arrival, provider, cooling)`.
pub fn provider_wide_windows(
    marks: &[(Instant, String, bool)],
    end: Instant,
) -> HashMap<String, Vec<Window>> {
    windows_of(marks.iter().map(|(at, name, on)| (*at, name, *on)), end)
}

/// The intervals in which each name's flag was on, from its changes in
/// order of arrival; one still on at `end` closes there.
fn windows_of<'a>(
    marks: impl Iterator<Item = (Instant, &'a String, bool)>,
    end: Instant,
) -> HashMap<String, Vec<Window>> {
    let mut open: HashMap<String, Instant> = HashMap::new();
    let mut out: HashMap<String, Vec<Window>> = HashMap::new();
    for (at, name, on) in marks {
        match (on, open.get(name)) {
            (true, None) => {
                open.insert(name.clone(), at);
            }
            (true, Some(_)) => {}
            (false, Some(&from)) => {
                open.remove(name);
                out.entry(name.clone())
                    .or_default()
                    .push(Window { from, to: at });
            }
            (false, None) => {}
        }
    }
    for (name, from) in open {
        out.entry(name).or_default().push(Window { from, to: end });
    }
    out
}

/// When each credential could not serve: cooling by the provider's word
/// (lower and upper readings), disabled by the operator, failed by the
/// gateway's own verdict; and when each provider cooled as a whole.
pub struct Unusable {
    pub cooling: HashMap<&'static str, Vec<(Window, Window)>>,
    pub disabled: HashMap<&'static str, Window>,
    pub failed: HashMap<String, Vec<Window>>,
    pub provider_wide: HashMap<String, Vec<Window>>,
}

/// How close together a provider's 429s must come to be taken as one
/// provider-wide 429 (the gateway's `PROVIDER_WIDE_WINDOW`).
const PROVIDER_WIDE_WINDOW: Duration = Duration::from_secs(1);

impl Unusable {
    /// The provider-wide windows of `a`'s provider.
    fn provider_wide_of(&self, a: &Account) -> impl Iterator<Item = &Window> {
        self.provider_wide.get(a.provider).into_iter().flatten()
    }

    /// A 429 on `a` at `at` that the gateway set aside as its provider's:
    /// one of the set that made the provider cool (within the second before
    /// it began), or one that arrived while it cooled.
    fn set_aside(&self, a: &Account, at: Instant) -> bool {
        self.provider_wide_of(a)
            .any(|w| at + PROVIDER_WIDE_WINDOW + SLACK >= w.from && at <= w.to + SLACK)
    }
}

/// Requests the sim received on a credential the gateway had been told
/// was cooling, or had disabled or marked failed.
pub fn requests_to_unusable(log: &[SimRequest], accounts: &[Account], u: &Unusable) -> Vec<String> {
    let Unusable {
        cooling,
        disabled,
        failed,
        ..
    } = u;
    let mut bad = Vec::new();
    for r in log {
        let Some(label) = r.label.as_deref() else {
            continue;
        };
        let Some(a) = accounts.iter().find(|a| a.name == label) else {
            continue;
        };
        if a.broken {
            bad.push(format!(
                "{label}: a request with no valid token reached the sim"
            ));
            continue;
        }
        if u.provider_wide_of(a).any(|w| w.strictly_inside(r.at)) {
            bad.push(format!(
                "{label}: request while {} cooled provider-wide",
                a.provider
            ));
        }
        for (lower, _) in cooling.get(a.name).into_iter().flatten() {
            if lower.strictly_inside(r.at) && !u.set_aside(a, lower.from) {
                bad.push(format!(
                    "{label}: request {:?} into a {:?} cooldown",
                    r.at - lower.from,
                    lower.to - lower.from
                ));
            }
        }
        if let Some(w) = disabled.get(a.name)
            && w.strictly_inside(r.at)
        {
            bad.push(format!("{label}: request while disabled"));
        }
        for w in failed.get(label).into_iter().flatten() {
            if w.strictly_inside(r.at) {
                bad.push(format!("{label}: request while failed"));
            }
        }
    }
    bad
}

/// Client 429s answered while some credential for the model could have
/// served: not cooling by any hint's upper reading, not disabled, not
/// failed, not broken. A request that spent all of `pool.max_attempts`
/// (`max_attempts`, told by `x-tokenyard-attempts`) on rate limits stops
/// there by the operator's bound, whatever has recovered meanwhile.
pub fn needless_429s(
    outcomes: &[Outcome],
    accounts: &[Account],
    u: &Unusable,
    max_attempts: u32,
) -> Vec<String> {
    let Unusable {
        cooling,
        disabled,
        failed,
        ..
    } = u;
    let mut bad = Vec::new();
    for o in outcomes {
        if !matches!(o.end, End::Error(429, _)) {
            continue;
        }
        if o.attempts.is_some_and(|n| n >= max_attempts) {
            continue;
        }
        let t = o.done;
        // While the provider cools as a whole, none of its keys serves.
        let provider_cooled = accounts
            .iter()
            .filter(|a| a.model == o.ask.model)
            .any(|a| u.provider_wide_of(a).any(|w| w.covers(t)));
        if provider_cooled {
            continue;
        }
        let free: Vec<&str> = accounts
            .iter()
            .filter(|a| a.model == o.ask.model && !a.broken)
            .filter(|a| {
                let cool = cooling
                    .get(a.name)
                    .into_iter()
                    .flatten()
                    .any(|(_, upper)| upper.covers(t));
                let off = disabled.get(a.name).is_some_and(|w| w.covers(t));
                let down = failed
                    .get(a.name)
                    .into_iter()
                    .flatten()
                    .any(|w| w.covers(t));
                !(cool || off || down)
            })
            .map(|a| a.name)
            .collect();
        if !free.is_empty() {
            let ms = |d: Duration| d.as_millis();
            let why: Vec<String> = free
                .iter()
                .map(|name| {
                    let last_cool = cooling
                        .get(name)
                        .into_iter()
                        .flatten()
                        .filter(|(_, u)| u.from <= t)
                        .map(|(_, u)| u)
                        .max_by_key(|u| u.to);
                    let cool = match last_cool {
                        Some(u) => format!(
                            "its last 429 at -{} ms promised {} ms",
                            ms(t - u.from),
                            ms(u.to - u.from)
                        ),
                        None => "no 429 before".into(),
                    };
                    let fails: Vec<String> = failed
                        .get(*name)
                        .into_iter()
                        .flatten()
                        .filter(|w| {
                            signed_ms(w.from, t).abs() < 5000 || signed_ms(w.to, t).abs() < 5000
                        })
                        .map(|w| {
                            format!(
                                "failed {:+} ms..{:+} ms",
                                signed_ms(w.from, t),
                                signed_ms(w.to, t)
                            )
                        })
                        .collect();
                    format!("{name}: {cool}; {}", fails.join(", "))
                })
                .collect();
            bad.push(format!(
                "429 for {} after {} ms (retry-after {:?}, {:.300}) while capacity: {why:?}",
                o.ask.model,
                ms(o.done - o.sent),
                o.retry_after,
                String::from_utf8_lossy(&o.raw),
            ));
        }
    }
    bad
}

/// `a - b` in ms, signed.
fn signed_ms(a: Instant, b: Instant) -> i64 {
    if a >= b {
        (a - b).as_millis() as i64
    } else {
        -((b - a).as_millis() as i64)
    }
}

/// Token calls for a healthy refresh-token credential: every call must
/// succeed (a lost rotated token shows as `invalid_grant`), and no two may
/// fall in one access token's lifetime (`min_gap` = its lifetime less the
/// refresh skew).
pub fn refresh_problems(calls: &[TokenCall], label: &str, min_gap: Duration) -> Vec<String> {
    let mut bad = Vec::new();
    let mine: Vec<&TokenCall> = calls
        .iter()
        .filter(|c| c.label.as_deref() == Some(label))
        .collect();
    for c in &mine {
        if c.outcome != TokenOutcome::Issued {
            bad.push(format!("{label}: token call answered {:?}", c.outcome));
        }
    }
    for pair in mine.windows(2) {
        let gap = pair[1].at - pair[0].at;
        if gap + SLACK < min_gap {
            bad.push(format!(
                "{label}: two refreshes {gap:?} apart, within one token's life"
            ));
        }
    }
    bad
}

/// `p`-th percentile (0–100) of a sample, in ms.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}
