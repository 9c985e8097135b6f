//! Session affinity across replicas: a pin this replica makes goes to
//! Redis off the request path (through the push queue); a request whose
//! session has no pin here, or one that cannot serve, reads the cluster's
//! first, for a bounded time. So replicas behind a load balancer keep a
//! conversation on the same credential, and move it to the same next one.

use super::push::Push;
use super::*;
use crate::pool::Generation;
use crate::pool::sessions::SessionKey;

/// How long a request waits for the cluster's pin of its session before it
/// picks on its own.
const SESSION_READ: Duration = Duration::from_millis(50);

impl PoolHandle {
    /// Queues session `key`'s pin for Redis when it is new, moved, or due
    /// again before Redis's copy expires.
    pub(in crate::pool) fn share_pin(&self, key: SessionKey, now: Instant) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        if cluster.store.get().is_none() {
            return;
        }
        let (credential, ttl) = {
            let mut sessions = lock(&self.shell.sessions);
            let Some(credential) = sessions.due_for_sharing(key, now) else {
                return;
            };
            (credential, sessions.ttl())
        };
        let _ = cluster.push.try_send(Push::Session {
            hex: key.hex(),
            credential,
            ttl,
        });
    }

    /// Before leasing for session `key` (of `provider` in `routed`): when
    /// this replica has no pin for it, or its pin cannot serve now, takes
    /// the cluster's, if Redis answers within [`SESSION_READ`] and names a
    /// credential this replica has. Without shared state, does nothing.
    pub async fn recall_session(&self, routed: &Arc<Generation>, provider: usize, key: SessionKey) {
        let Some(store) = self.cluster().and_then(|c| c.healthy_store()).cloned() else {
            return;
        };
        let local = lock(&self.shell.sessions)
            .get(key, Instant::now())
            .map(str::to_string);
        if local
            .as_deref()
            .is_some_and(|name| self.can_serve(routed, provider, name))
        {
            return;
        }
        let hex = key.hex();
        let Ok(Ok(Some(name))) = tokio::time::timeout(SESSION_READ, store.session_pin(&hex)).await
        else {
            return;
        };
        if local.as_deref() == Some(name.as_str()) {
            return;
        }
        let current = self.current();
        let known = lock(&current.core).find(&name).is_some();
        if known {
            lock(&self.shell.sessions).adopt(key, &name, Instant::now());
        }
    }

    /// Whether credential `name` could serve a request for `provider` of
    /// `routed` now.
    fn can_serve(&self, routed: &Arc<Generation>, provider: usize, name: &str) -> bool {
        let current = self.current();
        let (generation, p) = match current.follow(routed, provider) {
            Some(p) => (current, p),
            None => (routed.clone(), provider),
        };
        let core = lock(&generation.core);
        core.find(name)
            .is_some_and(|i| core.can_serve(i, p, Instant::now()))
    }
}
