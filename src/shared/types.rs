//! How a stored hash turns into the values the pool sees
//! ([`SharedCred`], [`SharedTokens`]; they live in `pool::store`).

use std::collections::HashMap;

use super::wire::{self, field};
use super::{SharedCooldown, SharedCred, SharedTokens};
use crate::secret::Secret;

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
    use crate::vocab::CooldownKind;

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
