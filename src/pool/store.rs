//! The values the pool exchanges with shared state
//! (`[state] backend = "redis"`): what is stored about a credential, what
//! another replica changed, the refresh lock. The Redis store (the `shared`
//! module) reads and writes them; the pool decides what to do with them.
//! They live here, below both, so the pool never imports the store.

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::secret::Secret;
use crate::vocab::CooldownKind;

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
    /// (or of the one an operator put in by hand). A replica whose
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

/// The result of a refresh, to store while holding the refresh lock.
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
/// to the store that gave it out.
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

/// What storing a refresh's result did.
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

/// Which part of a credential another replica changed. Re-read it (all of
/// it, or only the tokens).
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
