//! Local changes on their way to the other replicas: the queue of
//! cooldowns and failure counts one task writes to Redis, off the request
//! path, and the operator's flags and ops, written as they are given.

use super::*;
use crate::pool::Generation;
use crate::pool::core::CooldownKind;

/// Local changes queued for Redis; beyond this they wait for the next
/// reconcile.
pub(super) const PUSH_QUEUE: usize = 4096;

/// A local change on its way to Redis.
pub(super) enum Push {
    Cooldown {
        name: String,
        until_ms: u64,
        kind: CooldownKind,
        reason: String,
    },
    Failures {
        name: String,
        failures: u32,
    },
    /// One answer's tokens, to add to the cluster's counts.
    Usage {
        name: String,
        at_ms: u64,
        /// The local day (see [`crate::vocab::UsageZone::day`]).
        day: u64,
        tokens: u64,
    },
    /// A session's pin (session affinity), by its hash.
    Session {
        hex: String,
        credential: String,
        ttl: Duration,
    },
}

impl PoolHandle {
    /// Writes queued local changes to Redis, in order.
    pub(super) async fn pusher(
        self,
        store: Arc<dyn SharedState>,
        mut rx: mpsc::Receiver<Push>,
        cancel: CancellationToken,
    ) {
        // The last cooldown written per credential, to skip repeats.
        let mut written: HashMap<String, u64> = HashMap::new();
        loop {
            let push = tokio::select! {
                _ = cancel.cancelled() => return,
                p = rx.recv() => match p { Some(p) => p, None => return },
            };
            match push {
                Push::Cooldown {
                    name,
                    until_ms,
                    kind,
                    reason,
                } => {
                    if written.get(&name).is_some_and(|&w| w >= until_ms) {
                        continue;
                    }
                    // A failed write is not lost: the reconcile after an
                    // outage writes every cooldown still running.
                    if store
                        .extend_cooldown(&name, until_ms, kind, &reason)
                        .await
                        .is_ok()
                    {
                        written.insert(name, until_ms);
                    }
                }
                Push::Failures { name, failures } => {
                    let _ = store.set_failures(&name, failures).await;
                }
                // Lost while Redis is away: the budgets then count what
                // this replica saw, as they do without Redis.
                Push::Usage {
                    name,
                    at_ms,
                    day,
                    tokens,
                } => {
                    if let Ok(counts) = store.add_usage(&name, day, at_ms / 60_000, tokens).await {
                        self.cluster_usage(&name, at_ms, day, counts);
                    }
                }
                // Lost while Redis is away: the other replicas then pick
                // for the session on their own, as without Redis.
                Push::Session {
                    hex,
                    credential,
                    ttl,
                } => {
                    let _ = store.set_session_pin(&hex, &credential, ttl).await;
                }
            }
        }
    }

    /// Queues credential `i`'s running cooldown and failure count for Redis
    /// (called wherever a local attempt changed them).
    pub(in crate::pool) fn share_change(
        &self,
        generation: &Generation,
        i: usize,
        failures_changed: bool,
    ) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        if cluster.store.get().is_none() {
            return;
        }
        let now = Instant::now();
        let (cooldown, failures, name) = {
            let core = lock(&generation.core);
            let c = &core.creds[i];
            (
                c.cooldown
                    .as_ref()
                    .filter(|cd| cd.until > now)
                    .map(|cd| (wall_ms(cd.until, now), cd.kind, cd.reason.clone())),
                c.failures,
                c.name.clone(),
            )
        };
        if let Some((until_ms, kind, reason)) = cooldown {
            let _ = cluster.push.try_send(Push::Cooldown {
                name: name.clone(),
                until_ms,
                kind,
                reason,
            });
        }
        if failures_changed {
            let _ = cluster.push.try_send(Push::Failures { name, failures });
        }
    }

    /// Queues one answer's tokens for the cluster's counts (with shared
    /// state configured).
    pub(in crate::pool) fn share_usage(&self, name: &str, at_ms: u64, day: u64, tokens: u64) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        if cluster.store.get().is_none() {
            return;
        }
        let _ = cluster.push.try_send(Push::Usage {
            name: name.to_string(),
            at_ms,
            day,
            tokens,
        });
    }

    /// Writes an operator's disable or enable for every replica; when Redis
    /// cannot take it now, it is written when Redis is back.
    pub(in crate::pool) async fn share_disabled(&self, name: &str, disabled: bool) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let written = match cluster.healthy_store() {
            Some(store) => store.set_disabled(name, disabled).await.is_ok(),
            None => false,
        };
        if !written {
            lock(&cluster.unsynced_flags).insert(name.to_owned());
        }
    }

    /// Tells the other replicas to do what this one's operator just did.
    pub(in crate::pool) async fn share_op(&self, op: Op) {
        if let Some(store) = self.cluster().and_then(|c| c.healthy_store()) {
            let _ = store.publish_op(&op).await;
        }
    }
}
