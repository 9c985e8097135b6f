//! The values the store reads and writes, and how a stored hash turns
//! into them. `Debug` of every one of them masks the secrets it holds.

use std::collections::HashMap;

use tokio::time::Instant;

use super::CooldownKind;
#[cfg(doc)]
use super::SharedStore;
use super::wire::{self, field};
use crate::secret::Secret;

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
    /// Fingerprint of the configured refresh token that seeded Redis (or of
    /// the one an operator put in with
    /// [`SharedStore::replace_refresh_token`]). A replica whose configured
    /// token has another fingerprint runs a config the cluster did not
    /// start with: worth a warning, not an overwrite.
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

/// The result of a refresh, to store with [`SharedStore::store_refresh`].
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
/// with [`SharedStore::release`].
#[derive(Debug)]
pub struct RefreshLock {
    pub(super) name: String,
    /// Grows with every grant; a holder whose lease ran out finds a larger
    /// one in the lock and is refused.
    pub(super) fence: u64,
    /// When the lease runs out by this replica's clock (Redis may see it a
    /// little earlier or later).
    pub(super) expires: Instant,
}

impl RefreshLock {
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

/// What [`SharedStore::store_refresh`] did.
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

/// {written, refresh_token, refresh_version, access_token,
/// access_expires_ms, refresh_seed_fp}, as the seed and restore scripts
/// answer.
pub(super) type TokensReply = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub(super) fn tokens_from(
    refresh_token: Option<String>,
    version: Option<String>,
    access_token: Option<String>,
    expires: Option<String>,
    seed_fp: Option<String>,
) -> SharedTokens {
    SharedTokens {
        refresh_token: refresh_token.map(Secret::new),
        version: version.and_then(|v| v.parse().ok()).unwrap_or(0),
        access_token: access_token.map(Secret::new),
        access_expires_ms: expires.and_then(|v| v.parse().ok()),
        seed_fingerprint: seed_fp,
    }
}

pub(super) fn parse_cred(h: &HashMap<String, String>) -> SharedCred {
    let get = |f: &str| h.get(f).cloned();
    let cooldown = h
        .get(field::COOLDOWN_UNTIL)
        .and_then(|v| v.parse::<u64>().ok())
        .map(|until_ms| SharedCooldown {
            until_ms,
            kind: wire::parse_kind(h.get(field::COOLDOWN_KIND).map_or("", String::as_str)),
            reason: get(field::COOLDOWN_REASON).unwrap_or_default(),
        });
    SharedCred {
        cooldown,
        disabled: h.get(field::DISABLED).is_some_and(|v| v == "1"),
        failures: h
            .get(field::FAILURES)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        tokens: tokens_from(
            get(field::REFRESH_TOKEN),
            get(field::REFRESH_VERSION),
            get(field::ACCESS_TOKEN),
            get(field::ACCESS_EXPIRES),
            get(field::REFRESH_SEED_FP),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_hash_parses_and_masks() {
        let h: HashMap<String, String> = [
            ("cooldown_until_ms", "1700000000000"),
            ("cooldown_kind", "quota"),
            ("cooldown_reason", "quota exhausted"),
            ("disabled", "1"),
            ("failures", "3"),
            ("refresh_token", "rt-secret-0123456789"),
            ("refresh_version", "4"),
            ("access_token", "at-secret-0123456789"),
            ("access_expires_ms", "1700000060000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = parse_cred(&h);
        assert_eq!(
            c.cooldown,
            Some(SharedCooldown {
                until_ms: 1_700_000_000_000,
                kind: CooldownKind::Quota,
                reason: "quota exhausted".into()
            })
        );
        assert!(c.disabled);
        assert_eq!(c.failures, 3);
        assert_eq!(c.tokens.version, 4);
        assert_eq!(c.tokens.access_expires_ms, Some(1_700_000_060_000));
        let shown = format!("{c:?}");
        assert!(!shown.contains("0123456789"), "{shown}");
        assert_eq!(parse_cred(&HashMap::new()), SharedCred::default());
    }
}
