//! What the pool asks of shared state (`[state] backend = "redis"`): the
//! [`SharedState`] trait, and the values that cross it — what is stored
//! about a credential, what another replica changed, the refresh lock.
//! The Redis store (the `shared` module) implements the trait; the pool
//! decides what to do with what it reads. Both sit here, below the store,
//! so the pool is handed a store and never imports one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::config::SharedSettings;
use crate::secret::Secret;
use crate::vocab::CooldownKind;

/// The whole cluster's counts for one credential after an answer was added
/// to them: its UTC day's and its minute's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedUsage {
    pub day_answers: u64,
    pub day_tokens: u64,
    pub minute_answers: u64,
    pub minute_tokens: u64,
}

/// A credential's cooldown as stored. It may already be over: compare
/// `until_ms` with the wall clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCooldown {
    pub until_ms: u64,
    pub kind: CooldownKind,
    pub reason: String,
}

/// A credential's tokens as stored. `Debug` shows only masked secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedTokens {
    pub refresh_token: Option<Secret>,
    /// 0 while no refresh token is stored; bumped on every change of it.
    pub version: u64,
    pub access_token: Option<Secret>,
    /// Wall-clock unix ms.
    pub access_expires_ms: Option<u64>,
    /// Fingerprint of the configured refresh token that seeded the store
    /// (or of the one an operator put in by hand; see
    /// [`SharedState::seed_refresh_token`]). A replica whose
    /// configured token has another fingerprint runs a config the cluster
    /// did not start with: worth a warning, not an overwrite.
    pub seed_fingerprint: Option<String>,
}

/// Everything stored about one credential.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedCred {
    pub cooldown: Option<SharedCooldown>,
    pub disabled: bool,
    pub failures: u32,
    pub tokens: SharedTokens,
}

/// The result of a refresh, to store with [`SharedState::store_refresh`].
#[derive(Debug, Clone)]
pub struct NewTokens {
    pub access_token: Secret,
    /// Wall-clock unix ms.
    pub expires_ms: u64,
    /// The refresh token the provider returned, if it returned one. Stored
    /// (as a new version) only if it differs from the stored one.
    pub refresh_token: Option<Secret>,
}

/// Proof of holding a credential's refresh lock. Not `Clone`: hand it back
/// with [`SharedState::release`].
#[derive(Debug)]
pub struct RefreshLock {
    name: String,
    /// Grows with every grant; a holder whose lease ran out finds a larger
    /// one in the lock and is refused.
    fence: u64,
    /// When the lease runs out by this replica's clock (the store may see
    /// it a little earlier or later).
    expires: Instant,
}

impl RefreshLock {
    /// For a store, when it grants the lock of `name` with `fence`.
    pub fn new(name: String, fence: u64, expires: Instant) -> RefreshLock {
        RefreshLock {
            name,
            fence,
            expires,
        }
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn fence(&self) -> u64 {
        self.fence
    }
    pub fn expires_at(&self) -> Instant {
        self.expires
    }
}

/// What [`SharedState::store_refresh`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Written; the refresh token is now at `version`.
    Stored { version: u64 },
    /// The lease ran out and the lock is gone or someone else's: nothing
    /// written. If the provider rotated the refresh token, the new one is
    /// only in the caller's hands now.
    FencedOut,
    /// The refresh token changed since it was read (now at `version`):
    /// nothing written, the stored one is newer.
    Superseded { version: u64 },
}

impl StoreOutcome {
    pub fn is_stored(self) -> bool {
        matches!(self, StoreOutcome::Stored { .. })
    }
}

/// Which part of a credential another replica changed. Re-read it with
/// [`SharedState::load`] (or [`SharedState::tokens`]).
///
/// The serde names are the Redis store's wire format: replicas of
/// different versions read each other's messages, so they stay as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Cooldown,
    Disabled,
    Failures,
    /// The refresh token and/or the cached access token.
    Tokens,
}

/// An operator command taken on one replica that every replica carries out
/// on its own pool (state the command changes is written to the store
/// apart; these are the commands that only move each replica's selection).
///
/// The serde names are the Redis store's wire format, as for [`Field`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Rotate,
    UseNext { credential: String },
    Probe { credential: String },
}

/// What the store hands the pool when other replicas change something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Another replica wrote this part of this credential.
    Credential { name: String, field: Field },
    /// Another replica's operator asked for this.
    Op(Op),
    /// Messages may have been missed (the subscription was down, however
    /// briefly): re-read every credential. Sent after re-subscribing, so a
    /// re-read that starts on receipt misses nothing.
    Resync,
}

/// How the pool gets its store: connects to what `[state]` names, or says
/// why it could not (the pool retries with backoff). Handed to the pool
/// with [`PoolHandle::set_store_connector`] by whoever builds one with a
/// shared backend (the gateway hands `shared::connect_boxed`), as the probe
/// is handed in as a [`Prober`](super::Prober).
///
/// [`PoolHandle::set_store_connector`]: super::PoolHandle::set_store_connector
pub type StoreConnector =
    for<'a> fn(&'a SharedSettings) -> BoxFuture<'a, Result<Arc<dyn SharedState>, StoreError>>;

/// Why a call to the store failed, in words fit for the log (say what and
/// where: the Redis store names the URL and the command).
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// What the pool asks of shared state. The pool is handed one through a
/// [`StoreConnector`]; the Redis store in `shared` is the one there is.
///
/// Every write is published to the other replicas, which hear of it as a
/// [`Change`] from [`SharedState::changes`].
pub trait SharedState: Send + Sync {
    /// True while the store answers and other replicas' changes reach this
    /// one. When false, changes may be missed: the pool leans on its own
    /// state (and expects a [`Change::Resync`] later).
    fn healthy(&self) -> bool;

    /// Where the store is, secrets masked, for the log.
    fn url(&self) -> &str;

    fn namespace(&self) -> &str;

    /// What other replicas change, as it happens. A receiver that lags
    /// should re-read everything, as on [`Change::Resync`].
    fn changes(&self) -> broadcast::Receiver<Change>;

    /// Everything stored about each credential; one the store knows
    /// nothing of comes back as the default (ready, no tokens).
    fn load<'a>(
        &'a self,
        names: &'a [&'a str],
    ) -> BoxFuture<'a, Result<HashMap<String, SharedCred>, StoreError>>;

    /// Moves the cooldown of `name` to end at `until_ms` (wall-clock unix
    /// ms), unless the stored one already ends as late or later. Returns
    /// whether it was written.
    fn extend_cooldown<'a>(
        &'a self,
        name: &'a str,
        until_ms: u64,
        kind: CooldownKind,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The operator's switch.
    fn set_disabled<'a>(
        &'a self,
        name: &'a str,
        disabled: bool,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The consecutive-failure count (last writer wins).
    fn set_failures<'a>(
        &'a self,
        name: &'a str,
        failures: u32,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Sends an operator op to every other replica.
    fn publish_op<'a>(&'a self, op: &'a Op) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Adds one answer of `tokens` to `name`'s counts for local day `day`
    /// and minute `minute` (both counted from the epoch); returns the
    /// cluster's counts after it, for the budgets.
    fn add_usage<'a>(
        &'a self,
        name: &'a str,
        day: u64,
        minute: u64,
        tokens: u64,
    ) -> BoxFuture<'a, Result<SharedUsage, StoreError>>;

    /// The credential session `hex` ([`SessionKey::hex`]) is pinned to,
    /// by any replica, within the affinity TTL.
    ///
    /// [`SessionKey::hex`]: super::SessionKey::hex
    fn session_pin<'a>(&'a self, hex: &'a str)
    -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    /// Pins session `hex` to `credential` for `ttl` (the last writer wins).
    fn set_session_pin<'a>(
        &'a self,
        hex: &'a str,
        credential: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The cluster's counts of local day `day` for each of `names` that
    /// has any.
    fn day_usage<'a>(
        &'a self,
        names: &'a [&'a str],
        day: u64,
    ) -> BoxFuture<'a, Result<HashMap<String, crate::vocab::DayCounts>, StoreError>>;

    /// Takes the refresh lock of `name` for `lease`, or `None` if another
    /// holder (on any replica) has it.
    fn try_lock_refresh<'a>(
        &'a self,
        name: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<RefreshLock>, StoreError>>;

    /// The stored tokens of `name`, or `None` if it has none at all.
    fn tokens<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SharedTokens>, StoreError>>;

    /// Stores a refresh's result: only if `lock` still holds the refresh
    /// lock and the refresh token is still at `expected_version` (what
    /// [`SharedState::tokens`] said before the refresh). A rotated refresh
    /// token becomes version + 1; an older one never replaces a newer one.
    fn store_refresh<'a>(
        &'a self,
        lock: &'a RefreshLock,
        expected_version: u64,
        new: &'a NewTokens,
    ) -> BoxFuture<'a, Result<StoreOutcome, StoreError>>;

    /// Gives the lock back, if `lock` still holds it. Returns whether it
    /// did.
    fn release(&self, lock: RefreshLock) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Writes the configured refresh token of `name` only if the store
    /// holds none yet (the first replica to start wins), and returns what
    /// it holds afterwards.
    fn seed_refresh_token<'a>(
        &'a self,
        name: &'a str,
        token: &'a Secret,
    ) -> BoxFuture<'a, Result<SharedTokens, StoreError>>;

    /// Puts back a refresh token this replica holds at `version`, but only
    /// if the store holds an older version or none. Returns what it holds
    /// afterwards.
    fn restore_refresh_token<'a>(
        &'a self,
        name: &'a str,
        token: &'a Secret,
        version: u64,
    ) -> BoxFuture<'a, Result<SharedTokens, StoreError>>;
}
