//! What the pool and the gateway tell the world (`Event`, fanned out on a
//! bounded broadcast channel) and what the operator can ask of the pool
//! (`Command`). Every field here is safe to show: secrets appear only
//! masked, and times are wall-clock milliseconds since the Unix epoch so the
//! same JSON works for a dashboard in another process.

#[cfg(test)]
pub(crate) mod fixtures;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use crate::vocab::{Format, human};

/// Wall-clock milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A credential's state as an operator reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ready,
    /// Rate limited; comes back by itself when the hint expires.
    Cooling,
    /// Quota gone; a long cooldown.
    Exhausted,
    /// Too many consecutive failures; a background probe brings it back.
    Failed,
    /// Switched off by the operator; only the operator brings it back.
    Disabled,
}

impl State {
    /// Every state, in the order reports and tables list them.
    pub const ALL: [State; 5] = [
        State::Ready,
        State::Cooling,
        State::Exhausted,
        State::Failed,
        State::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Cooling => "cooling",
            State::Exhausted => "exhausted",
            State::Failed => "failed",
            State::Disabled => "disabled",
        }
    }
}

/// Everything the dashboard and the admin API show about one credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialView {
    pub name: String,
    pub provider: String,
    pub tier: String,
    /// `…abcd` — never the secret itself.
    pub secret: String,
    pub kind: CredentialKind,
    pub state: State,
    /// Why it is in that state (the retry hint, the error, the operator).
    pub reason: Option<String>,
    /// When a cooling/exhausted credential comes back, or when a failed
    /// credential is probed next.
    pub until_ms: Option<u64>,
    /// Consecutive failures (reset by a success).
    pub failures: u32,
    pub requests: u64,
    pub successes: u64,
    pub rate_limited: u64,
    pub errors: u64,
    pub refreshes: u64,
    pub in_flight: u32,
    pub last_used_ms: Option<u64>,
    pub last_latency_ms: Option<f64>,
    pub last_status: Option<u16>,
    /// Expiry of the cached access token (refreshable credentials only).
    pub token_expires_ms: Option<u64>,
    /// The last refresh or probe error, kept until it succeeds again.
    pub last_error: Option<String>,
    /// Answers and tokens this credential carried (absent from an older
    /// gateway's feed).
    /// (Boxed: it is most of the view's size, and views travel in events.)
    #[serde(default)]
    pub usage: Box<crate::vocab::UsageView>,
    /// What its provider last reported of its rate limit: the most
    /// constraining window (absent until an answer reports one, and from
    /// an older gateway's feed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<crate::vocab::Capacity>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    ApiKey,
    RefreshToken,
}

/// A provider's health as the pool judges it from its credentials'
/// answers: unhealthy when several credentials failed with no good answer
/// between (an outage), which marks no key failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderView {
    pub name: String,
    pub healthy: bool,
    /// Why it is unhealthy (the failures that showed it).
    pub reason: Option<String>,
    /// When it was found unhealthy.
    pub since_ms: Option<u64>,
    /// A provider-wide 429 (every credential answered 429 within a
    /// second): until when none of its credentials is used. Their own
    /// states stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooling_until_ms: Option<u64>,
    /// Why it is cooling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooling_reason: Option<String>,
}

/// Pool-wide counters, kept by the pool itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Client requests finished.
    pub requests: u64,
    /// Client requests that ended 2xx.
    pub succeeded: u64,
    /// Upstream attempts made.
    pub attempts: u64,
    /// 429s received from providers.
    pub upstream_429: u64,
    /// 429s the gateway had to hand to clients.
    pub client_429: u64,
    pub refreshes: u64,
    pub refresh_failures: u64,
}

/// The whole pool at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolSnapshot {
    pub at_ms: u64,
    pub started_ms: u64,
    pub tiers: Vec<String>,
    pub credentials: Vec<CredentialView>,
    /// Every configured provider's health (absent from older versions).
    #[serde(default)]
    pub providers: Vec<ProviderView>,
    /// The credential the next request (for the first provider) would get.
    pub next: Option<String>,
    pub totals: Totals,
    /// Answers and tokens by the client key that asked (shown masked,
    /// `…abcd`), since this gateway started; empty without client keys.
    #[serde(default)]
    pub clients: std::collections::BTreeMap<String, crate::vocab::TokenCounts>,
    /// Sessions the pool keeps on one credential (session affinity) on
    /// this replica, live within the TTL.
    #[serde(default)]
    pub sessions: u64,
    /// Those sessions per credential name (only credentials with some).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pinned: std::collections::BTreeMap<String, u64>,
}

impl PoolSnapshot {
    pub fn count(&self, state: State) -> usize {
        self.credentials.iter().filter(|c| c.state == state).count()
    }
}

/// One finished client request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: u64,
    pub at_ms: u64,
    pub model: String,
    pub stream: bool,
    /// Credentials tried, in order (`team-a → team-b`).
    pub path: Vec<String>,
    pub attempts: u32,
    /// Status the client got (499 when the client went away mid-stream).
    pub status: u16,
    pub latency_ms: f64,
    /// Time until the first body byte went to the client.
    pub ttfb_ms: Option<f64>,
    /// Why it did not succeed, or why a committed stream was cut.
    pub error: Option<String>,
    /// The wire format the client spoke (`None` in records from versions
    /// that did not keep it).
    #[serde(default)]
    pub format: Option<Format>,
    /// tokenyard's own error code when it answered with an error of its
    /// own (`pool_exhausted`, `request_timeout`, …), so counting those needs
    /// no parsing of `error`.
    #[serde(default)]
    pub code: Option<String>,
    /// The tokens the provider reported for the answer (`None`: none
    /// reported, or no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<crate::vocab::Usage>,
    /// The client key that asked, masked (`…abcd`); `None` without client
    /// keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A credential changed state (or was acted on).
    /// Shared, as every event is: each subscriber's copy is a count.
    Credential { credential: Arc<CredentialView> },
    /// A client request finished; `totals` are the pool's counters after it.
    Request {
        request: Arc<RequestRecord>,
        totals: Totals,
    },
    /// A provider turned unhealthy or recovered.
    Provider { provider: ProviderView },
    /// A request moved from one credential to another.
    Rotation {
        at_ms: u64,
        from: String,
        to: Option<String>,
        reason: String,
    },
    /// The pool's make-up changed (a config reload added, removed or
    /// changed credentials): the whole pool, which replaces what a
    /// subscriber knew — removed credentials included.
    Reloaded { snapshot: Box<PoolSnapshot> },
    /// Something the operator should read (refresh failed, state restored…).
    Notice {
        at_ms: u64,
        level: Level,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// What an operator can ask of the pool, from the admin API or the
/// dashboard; both go through [`crate::pool::PoolHandle::command`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", content = "credential", rename_all = "snake_case")]
pub enum Command {
    Disable(String),
    Enable(String),
    /// Refresh the access token now (for a static key: probe it now).
    Refresh(String),
    /// Clear the consecutive-failure count and probe the credential now; a
    /// failed credential whose probe answers is back in rotation.
    Probe(String),
    /// Make this credential the next one chosen.
    UseNext(String),
    /// Advance the serving tier's round-robin cursor.
    Rotate,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_a_type_tag() {
        let e = Event::Rotation {
            at_ms: 1,
            from: "a".into(),
            to: Some("b".into()),
            reason: "429".into(),
        };
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["type"], "rotation");
        let back: Event = serde_json::from_value(j).unwrap();
        assert_eq!(back, e);
        let c = serde_json::to_value(Command::Disable("team-a".into())).unwrap();
        assert_eq!(c["command"], "disable");
        assert_eq!(c["credential"], "team-a");
    }
}
