//! Taking a credential for one attempt: the [`Lease`], the token to send
//! with it, and, when nothing was free, when its provider can serve again
//! or why it is down.

use super::sessions::SessionKey;
use super::*;

/// One credential taken for one attempt. Dropping it releases the
/// in-flight count. It keeps the generation it came from, so a request
/// finishes on the credential (and provider) it started with.
pub struct Lease {
    pub(super) generation: Arc<Generation>,
    pub(super) idx: usize,
    /// The pool, to pass in-flight releases on to the current generation
    /// after a reload.
    pub(super) shell: Arc<Shell>,
}

impl Lease {
    pub fn index(&self) -> usize {
        self.idx
    }
    pub fn name(&self) -> &str {
        &self.generation.specs()[self.idx].name
    }
    pub fn refreshes(&self) -> bool {
        self.generation.specs()[self.idx].auth.refreshes()
    }
    pub fn provider(&self) -> &Provider {
        &self.generation.providers()[self.generation.specs()[self.idx].provider]
    }
    /// The pool settings of the generation this lease came from.
    pub fn settings(&self) -> &PoolSettings {
        self.generation.settings()
    }
}

impl Lease {
    /// A second lease on the same credential (the stream relay holds one so
    /// the in-flight count lasts as long as the stream).
    pub fn share(&self) -> Lease {
        let pool = PoolHandle {
            shell: self.shell.clone(),
        };
        pool.apply(&self.generation, self.idx, |core, i| {
            core.creds[i].in_flight += 1;
        });
        Lease {
            generation: self.generation.clone(),
            idx: self.idx,
            shell: self.shell.clone(),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let pool = PoolHandle {
            shell: self.shell.clone(),
        };
        pool.apply(&self.generation, self.idx, |core, i| core.release(i));
    }
}

impl PoolHandle {
    /// When the first credential of `provider` (of generation `routed`,
    /// followed into the current one) can serve: now, if one is ready;
    /// `None` when all are disabled.
    pub fn earliest_recovery(&self, routed: &Arc<Generation>, provider: usize) -> Option<Instant> {
        let now = Instant::now();
        let current = self.current();
        let (generation, provider) = match current.follow(routed, provider) {
            Some(p) => (current, p),
            None => (routed.clone(), provider),
        };
        let core = lock(&generation.core);
        core.creds
            .iter()
            .filter(|c| c.provider == provider)
            .filter_map(|c| c.recovers_at(now))
            .min()
    }

    /// Takes a credential of `provider` for one attempt, skipping those the
    /// request already tried (by name). `routed` is the generation the
    /// request was routed in: when a reload replaced it since, the lease
    /// comes from the current generation (the same provider by name), so a
    /// removed credential gets nothing new and an added one serves at once.
    /// Only when the provider itself is gone (or changed its kind) does the
    /// request finish on the generation it started in.
    pub fn lease(
        &self,
        routed: &Arc<Generation>,
        provider: usize,
        tried: &[String],
    ) -> Result<Lease, Unavailable> {
        self.lease_for(routed, provider, tried, None)
    }

    /// [`PoolHandle::lease`] for a request of `session`: the credential the
    /// session was pinned to, while it can serve (see
    /// [`Core::select_pinned`]); otherwise the usual pick, and the session
    /// is pinned to it — with a notice when it moved. A retry after a 429
    /// or a failure moves on like any retry, so the session ends up pinned
    /// to the credential that answered.
    pub fn lease_for(
        &self,
        routed: &Arc<Generation>,
        provider: usize,
        tried: &[String],
        session: Option<SessionKey>,
    ) -> Result<Lease, Unavailable> {
        let now = Instant::now();
        let pinned_name =
            session.and_then(|k| lock(&self.shell.sessions).get(k, now).map(str::to_string));
        loop {
            let current = self.current();
            let (generation, p, follows) = match current.follow(routed, provider) {
                Some(p) => (current, p, true),
                None => (routed.clone(), provider, false),
            };
            let mut core = lock(&generation.core);
            // A reload swapped generations between reading and locking:
            // take the new one, so the reload's copy counts this lease.
            if follows && generation.is_retired() {
                continue;
            }
            let tried: Vec<usize> = tried.iter().filter_map(|n| core.find(n)).collect();
            let pinned = pinned_name
                .as_deref()
                .and_then(|n| core.find(n))
                .filter(|&i| core.creds[i].provider == p);
            let idx = core.select_pinned(p, &tried, pinned, now)?;
            // Why the pin did not hold (`None`: only busy, it stays).
            let moved = match (session, pinned) {
                (None, _) => None,
                (Some(_), Some(i)) if i == idx => None,
                (Some(_), Some(i)) => core.pin_skipped(i, p, &tried, now).map(Some),
                (Some(_), None) => Some(pinned_name.as_ref().map(|_| "gone".to_string())),
            };
            drop(core);
            let lease = Lease {
                generation,
                idx,
                shell: self.shell.clone(),
            };
            if let (Some(key), Some(why)) = (session, moved) {
                self.repin(key, lease.name(), why, now);
            } else if let Some(key) = session {
                self.share_pin(key, now);
            }
            return Ok(lease);
        }
    }

    /// Pins `key` to `to`; says so when it moved from another credential
    /// (`why` that one was left).
    fn repin(&self, key: SessionKey, to: &str, why: Option<String>, now: Instant) {
        let from = lock(&self.shell.sessions).pin(key, to, now);
        if let (Some(from), Some(why)) = (from, why) {
            let line = format!("session {key} moved from {from} ({why}) to {to}");
            self.notice(Level::Info, line);
        }
        self.share_pin(key, now);
    }

    /// Live sessions (with affinity), for the snapshot.
    pub fn sessions(&self) -> usize {
        lock(&self.shell.sessions).len(Instant::now())
    }

    /// Resolves when some credential may be able to serve: it came back (a
    /// cooldown ended, a probe succeeded, the operator enabled it, a reload
    /// added it) or just answered and is still ready. Wakes one waiter per
    /// such event, so the waiters drain at the pace the provider accepts
    /// them. Call `enable()` on the pinned future before checking the pool
    /// to miss nothing.
    pub fn ready_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.shell.ready.notified()
    }

    /// The lease's token when it is at hand (an API key, or an access
    /// token not due for refresh); `None` when [`PoolHandle::token`] must
    /// refresh it. Lets the request path skip the refresh's future.
    pub fn ready_token(&self, lease: &Lease) -> Option<Secret> {
        self.ready_token_of(&lease.generation, lease.idx)
    }

    /// The token to send for this lease: the API key, or a valid access
    /// token (refreshed first if it is missing or about to expire).
    pub async fn token(&self, lease: &Lease) -> Result<Secret, String> {
        self.refresh(&lease.generation, lease.idx, tokens::Mode::IfStale, true)
            .await
            .map_err(|e| e.message)
    }

    /// After a 401 with `rejected`: refresh once (unless another request
    /// already did) and return the new access token.
    pub async fn reauth(&self, lease: &Lease, rejected: &Secret) -> Result<Secret, String> {
        self.refresh(
            &lease.generation,
            lease.idx,
            tokens::Mode::Replace(rejected.clone()),
            true,
        )
        .await
        .map_err(|e| e.message)
    }

    /// Why the provider a request routes to is unhealthy, if it is.
    pub fn provider_down(&self, routed: &Arc<Generation>, provider: usize) -> Option<String> {
        let current = self.current();
        let (generation, p) = match current.follow(routed, provider) {
            Some(p) => (current, p),
            None => (routed.clone(), provider),
        };
        let core = lock(&generation.core);
        core.provider_down(p).map(str::to_string)
    }
}
