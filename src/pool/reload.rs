//! Swapping in a new config without a restart: the next [`Generation`] is
//! built from the new [`Config`] and the one it replaces. A credential the
//! reload leaves alone keeps everything — cooldown, disabled flag, failure
//! count, counters, its token slot (so a rotated refresh token is never
//! lost) and its metrics series; a changed one starts fresh, an added one
//! starts ready, a removed one is gone once its in-flight requests end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::core::{Core, Cred};
use super::tokens::TokenSlot;
use super::{Generation, PoolHandle, credential_infos, lock};
use crate::config::{AuthSpec, Config, Provider};
use crate::events::{Event, State};

/// What a reload did, by credential name (the JSON `POST /admin/reload`
/// answers with).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadSummary {
    /// The generation now serving (1 is the one the process started with).
    pub generation: u64,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Same name, different provider, tier or secret: state starts fresh.
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
    /// Settings that differ in the new config but only take effect after a
    /// restart (the old values keep applying). Filled in by the gateway.
    pub restart_needed: Vec<String>,
    /// One line per changed credential saying what changed.
    pub notes: Vec<String>,
}

impl ReloadSummary {
    /// One line for logs and the dashboard.
    pub fn line(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        let mut line = format!(
            "added {} · removed {} · changed {} · unchanged {}",
            list(&self.added),
            list(&self.removed),
            list(&self.changed),
            self.unchanged.len()
        );
        if !self.restart_needed.is_empty() {
            line.push_str(&format!(
                " · needs a restart to apply: {}",
                self.restart_needed.join(", ")
            ));
        }
        line
    }
}

/// Whether two auth specs name the same secret the same way: then the
/// credential's token slot (cached access token, rotated refresh token) is
/// still valid.
fn same_auth(a: &AuthSpec, b: &AuthSpec) -> bool {
    match (a, b) {
        (AuthSpec::ApiKey(x), AuthSpec::ApiKey(y)) => x == y,
        (
            AuthSpec::Refresh {
                refresh_token: rt1,
                token_url: url1,
                client_id: id1,
                client_secret: s1,
            },
            AuthSpec::Refresh {
                refresh_token: rt2,
                token_url: url2,
                client_id: id2,
                client_secret: s2,
            },
        ) => rt1 == rt2 && url1 == url2 && id1 == id2 && s1 == s2,
        _ => false,
    }
}

/// Whether a credential's provider is the same upstream (its `models` may
/// differ: that changes routing, not the credential's standing there).
fn same_provider(a: &Provider, b: &Provider) -> bool {
    a.name == b.name && a.kind == b.kind && a.base_url == b.base_url
}

impl PoolHandle {
    /// Replaces the pool's generation with one built from `config` (already
    /// validated). Requests in flight finish on the generation they leased
    /// from; everything after this returns sees the new one.
    pub fn reload(&self, config: Config) -> ReloadSummary {
        let _one_at_a_time = lock(&self.shell.reloading);
        let old = self.current();
        let number = self.shell.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let mut summary = ReloadSummary {
            generation: number,
            ..Default::default()
        };

        // Per new credential: the old one whose state it keeps, its token
        // slot, its lineage id.
        let mut carried: Vec<Option<usize>> = Vec::with_capacity(config.credentials.len());
        let mut tokens = Vec::with_capacity(config.credentials.len());
        let mut lineage = Vec::with_capacity(config.credentials.len());
        let new_id = || self.shell.lineage.fetch_add(1, Ordering::Relaxed);
        for spec in &config.credentials {
            let Some(i) = old.specs().iter().position(|o| o.name == spec.name) else {
                summary.added.push(spec.name.clone());
                carried.push(None);
                tokens.push(Arc::new(TokenSlot::new(&spec.auth)));
                lineage.push(new_id());
                continue;
            };
            let was = &old.specs()[i];
            let auth = same_auth(&was.auth, &spec.auth);
            let provider = same_provider(
                &old.providers()[was.provider],
                &config.providers[spec.provider],
            );
            let tier = old.settings().tiers[was.tier] == config.pool.tiers[spec.tier];
            // The token slot follows the secret, whatever else changed: a
            // refresh token the provider rotated is the only live one.
            tokens.push(if auth {
                old.tokens[i].clone()
            } else {
                Arc::new(TokenSlot::new(&spec.auth))
            });
            if auth && provider && tier {
                summary.unchanged.push(spec.name.clone());
                carried.push(Some(i));
                lineage.push(old.lineage[i]);
            } else {
                let mut what = Vec::new();
                if !provider {
                    what.push("provider");
                }
                if !tier {
                    what.push("tier");
                }
                if !auth {
                    what.push("secret");
                }
                summary.notes.push(format!(
                    "{}: its {} changed; it starts fresh",
                    spec.name,
                    what.join(" and ")
                ));
                summary.changed.push(spec.name.clone());
                carried.push(None);
                lineage.push(new_id());
            }
        }
        for was in old.specs() {
            if !config.credentials.iter().any(|c| c.name == was.name) {
                summary.removed.push(was.name.clone());
            }
        }

        // Series of removed and changed credentials go (a changed one's
        // start again from 0); the others are the same counters as before.
        for was in old.specs() {
            if summary.removed.contains(&was.name) || summary.changed.contains(&was.name) {
                let provider = &old.providers()[was.provider].name;
                self.shell.metrics.forget(&was.name, provider);
            }
        }
        let series = self.shell.metrics.credentials(credential_infos(&config));

        super::lock(&self.shell.sessions)
            .set_limits(config.pool.affinity.ttl, config.pool.affinity.max_sessions);
        let config = Arc::new(config);
        let now = tokio::time::Instant::now();
        let back;
        {
            // Copy and swap under the old generation's lock: no lease,
            // verdict or release slips between the copy and the swap (each
            // checks `retired` under this same lock).
            let old_core = lock(&old.core);
            let creds = config
                .credentials
                .iter()
                .zip(&carried)
                .map(|(spec, from)| match from {
                    Some(i) => {
                        let mut c: Cred = old_core.creds[*i].clone();
                        c.provider = spec.provider;
                        c.tier = spec.tier;
                        c.budget = spec.budget;
                        c
                    }
                    None => {
                        let mut c = Cred::new(spec.name.clone(), spec.provider, spec.tier);
                        c.budget = spec.budget;
                        c
                    }
                })
                .collect::<Vec<_>>();
            back = creds
                .iter()
                .zip(&carried)
                .filter(|(c, from)| from.is_none() && c.state(now) == State::Ready)
                .count();
            let mut core = Core::new(config.pool.clone(), creds);
            core.totals = old_core.totals;
            let next = Arc::new(Generation {
                number,
                config,
                core: Mutex::new(core),
                lineage,
                tokens,
                series,
                retired: AtomicBool::new(false),
            });
            *self
                .shell
                .current
                .write()
                .unwrap_or_else(|e| e.into_inner()) = next;
            old.retired.store(true, Ordering::Release);
        }

        // New deadlines for the clock; waiters may have a credential now;
        // the state file drops removed credentials.
        self.shell.clock.notify_one();
        for _ in 0..back {
            self.shell.ready.notify_one();
        }
        self.shell.dirty.notify_one();
        // Subscribers replace what they knew, so removed rows go.
        self.publish(Event::Reloaded {
            snapshot: Box::new(self.snapshot()),
        });
        summary
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::pool::Verdict;

    fn config(creds: &[(&str, &str)]) -> Config {
        let mut toml = String::from(
            "listen = \"127.0.0.1:0\"\n[[provider]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9\"\n",
        );
        for (name, key) in creds {
            toml.push_str(&format!(
                "[[credential]]\nname = \"{name}\"\napi_key = \"{key}\"\n"
            ));
        }
        let mut c = Config::parse(&toml, "t.toml", Path::new("."), &|_| None).unwrap();
        c.state_file = None;
        c
    }

    fn pool(creds: &[(&str, &str)]) -> PoolHandle {
        PoolHandle::new(&config(creds), crate::sim::test_client()).0
    }

    fn in_flight(pool: &PoolHandle, name: &str) -> u32 {
        let snap = pool.snapshot();
        snap.credentials
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.in_flight)
            .unwrap()
    }

    fn limited() -> Verdict {
        Verdict::RateLimited {
            own: false,
            wait: Duration::from_secs(60),
            reason: "429".into(),
        }
    }

    #[test]
    fn a_verdict_that_lands_mid_reload_reaches_the_unchanged_credential() {
        let pool = pool(&[("a", "k-a"), ("b", "k-b")]);
        let routed = pool.current();
        let lease = pool.lease(&routed, 0, &[]).unwrap();
        assert_eq!(lease.name(), "a");
        let summary = pool.reload(config(&[("a", "k-a"), ("b", "k-b"), ("c", "k-c")]));
        assert_eq!(summary.added, ["c"]);
        assert!(routed.is_retired());
        // The in-flight count came along, and a share counts there too.
        assert_eq!(in_flight(&pool, "a"), 1);
        let shared = lease.share();
        assert_eq!(in_flight(&pool, "a"), 2);
        pool.record(&lease, &limited(), Some(429), Duration::ZERO);
        assert_eq!(pool.state_of("a"), Some(State::Cooling));
        assert_eq!(pool.snapshot().totals.attempts, 1);
        drop(shared);
        drop(lease);
        assert_eq!(in_flight(&pool, "a"), 0);
        // A request routed before the reload now leases in the new
        // generation: b, then the added c.
        let next = pool.lease(&routed, 0, &["a".into()]).unwrap();
        assert!(Arc::ptr_eq(&next.generation, &pool.current()));
    }

    #[test]
    fn a_changed_or_removed_credential_is_not_touched_by_old_leases() {
        let pool = pool(&[("a", "k-a"), ("b", "k-b")]);
        let routed = pool.current();
        let a = pool.lease(&routed, 0, &[]).unwrap();
        let b = pool.lease(&routed, 0, &["a".into()]).unwrap();
        assert_eq!(b.name(), "b");
        let summary = pool.reload(config(&[("a", "k-a2")]));
        assert_eq!(summary.changed, ["a"]);
        assert_eq!(summary.removed, ["b"]);
        assert!(summary.notes[0].contains("secret"), "{:?}", summary.notes);
        // The new `a` starts fresh: nothing in flight, and the old lease's
        // 429 was for the old key.
        assert_eq!(in_flight(&pool, "a"), 0);
        pool.record(&a, &limited(), Some(429), Duration::ZERO);
        pool.record(&b, &limited(), Some(429), Duration::ZERO);
        assert_eq!(pool.state_of("a"), Some(State::Ready));
        // The attempts still count in the pool's totals.
        assert_eq!(pool.snapshot().totals.attempts, 2);
        assert_eq!(pool.snapshot().totals.upstream_429, 2);
        drop(a);
        assert_eq!(in_flight(&pool, "a"), 0);
        assert_eq!(pool.snapshot().credentials.len(), 1);
    }

    #[test]
    fn a_request_whose_provider_went_finishes_on_its_own_generation() {
        let pool = pool(&[("a", "k-a")]);
        let routed = pool.current();
        let mut other = config(&[("a", "k-a")]);
        other.providers[0].name = "q".into();
        pool.reload(other);
        let lease = pool.lease(&routed, 0, &[]).unwrap();
        assert!(Arc::ptr_eq(&lease.generation, &routed));
        assert_eq!(lease.provider().name, "p");
    }
}
