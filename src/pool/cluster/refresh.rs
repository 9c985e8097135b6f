//! A token refresh across the cluster: one replica holds the cluster-wide
//! lock and calls the token endpoint, the others take the token it stores.

use super::*;
use crate::pool::oauth::{Granted, RefreshError};
use crate::pool::store::NewTokens;
use crate::secret::Secret;

/// How long a refresh may hold the cluster-wide lock: longer than the
/// token endpoint's timeout, so a lease runs out only when its holder is
/// stuck or gone.
const REFRESH_LEASE: Duration = Duration::from_secs(60);
/// How often a replica waiting on another's refresh looks for its result
/// (besides the change notification that usually comes first).
const REFRESH_POLL: Duration = Duration::from_millis(25);

/// What a refresh got from the cluster path.
pub(in crate::pool) struct Fetched {
    pub granted: Granted,
    /// Another replica's token, taken as it is (no call was made here).
    pub adopted: bool,
}

impl PoolHandle {
    /// A refresh through the cluster: take a token another replica stored,
    /// or hold the cluster-wide lock and call `call` with the refresh token
    /// Redis holds, storing what it returns. `known` is the access token
    /// the caller has (or was refused); only a different one is taken, and
    /// none without `adopt` (the operator asked for a refresh).
    /// `None` when Redis cannot be used right now: refresh locally.
    pub(in crate::pool) async fn cluster_refresh<F, Fut>(
        &self,
        name: &str,
        local_refresh_token: &Secret,
        known: Option<&Secret>,
        adopt: bool,
        call: F,
    ) -> Option<Result<Fetched, RefreshError>>
    where
        F: FnOnce(Secret) -> Fut,
        Fut: std::future::Future<Output = Result<Granted, RefreshError>>,
    {
        let store = self.cluster()?.healthy_store()?.clone();
        let deadline = Instant::now() + REFRESH_LEASE;
        let taken = |t: &SharedTokens| -> Option<Granted> {
            if !adopt {
                return None;
            }
            let (access, exp_ms) = (t.access_token.as_ref()?, t.access_expires_ms?);
            let now_ms = unix_ms(SystemTime::now());
            if Some(access) == known || exp_ms <= now_ms + 1000 {
                return None;
            }
            Some(Granted {
                access_token: access.clone(),
                expires_in: Duration::from_millis(exp_ms - now_ms),
                refresh_token: t.refresh_token.clone(),
            })
        };
        let mut changes = store.changes();
        loop {
            let t = store.tokens(name).await.ok()?.unwrap_or_default();
            if let Some(granted) = taken(&t) {
                return Some(Ok(Fetched {
                    granted,
                    adopted: true,
                }));
            }
            if let Some(held) = store.try_lock_refresh(name, REFRESH_LEASE).await.ok()? {
                // Someone may have stored a token between the read and the lock.
                let t = match store.tokens(name).await {
                    Ok(t) => t.unwrap_or_default(),
                    Err(_) => {
                        let _ = store.release(held).await;
                        return None;
                    }
                };
                if let Some(granted) = taken(&t) {
                    let _ = store.release(held).await;
                    return Some(Ok(Fetched {
                        granted,
                        adopted: true,
                    }));
                }
                let used = t
                    .refresh_token
                    .clone()
                    .unwrap_or_else(|| local_refresh_token.clone());
                let result = call(used.clone()).await;
                let out = match result {
                    Ok(mut granted) => {
                        let rotated = granted.refresh_token.clone().filter(|n| *n != used);
                        let new = NewTokens {
                            access_token: granted.access_token.clone(),
                            expires_ms: unix_ms(SystemTime::now())
                                + granted.expires_in.as_millis() as u64,
                            refresh_token: rotated.clone(),
                        };
                        let stored = store.store_refresh(&held, t.version, &new).await;
                        if !stored.as_ref().is_ok_and(|s| s.is_stored())
                            && let Some(r) = &rotated
                        {
                            // Only this replica holds the new refresh token:
                            // put it where Redis has nothing newer.
                            if let Err(e) =
                                store.restore_refresh_token(name, r, t.version + 1).await
                            {
                                self.notice(
                                    Level::Error,
                                    format!(
                                        "{name}: rotated refresh token not stored in Redis: {e}"
                                    ),
                                );
                            }
                        }
                        // The slot learns the token in use, whoever rotated it.
                        if rotated.is_none() && used != *local_refresh_token {
                            granted.refresh_token = Some(used);
                        }
                        Ok(Fetched {
                            granted,
                            adopted: false,
                        })
                    }
                    Err(e) => Err(e),
                };
                let _ = store.release(held).await;
                return Some(out);
            }
            // Another replica is refreshing: wait for what it stores.
            if Instant::now() >= deadline {
                return None;
            }
            tokio::select! {
                _ = changes.recv() => {}
                _ = tokio::time::sleep(REFRESH_POLL) => {}
            }
        }
    }
}
