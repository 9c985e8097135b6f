//! The refresh lock and the tokens: taking and giving back the
//! cluster-wide lock with its fencing token, reading the stored tokens,
//! and storing a refresh's result or a refresh token (seeded, restored,
//! replaced) so that an older one never replaces a newer one.

use tokio::time::Instant;

use super::types::{TokensReply, tokens_from};
use super::wire::field;
use super::*;

impl SharedStore {
    /// Takes the refresh lock of `name` for `lease`, or `None` if another
    /// holder (on any replica) has it.
    pub async fn try_lock_refresh(
        &self,
        name: &str,
        lease: Duration,
    ) -> Result<Option<RefreshLock>, SharedError> {
        let lease_ms = lease.as_millis().max(1) as u64;
        let taken_at = Instant::now();
        // The script answers the fence as a string (it outgrows Lua's
        // integer printing) or 0.
        let r: redis::RedisResult<redis::Value> = self
            .inner
            .scripts
            .acquire
            .key(self.inner.keys.lock(name))
            .key(self.inner.keys.cred(name))
            .arg(lease_ms)
            .invoke_async(&mut self.con())
            .await;
        let reply = self.check(|| format!("taking the refresh lock of {name:?}"), r)?;
        let fence = match reply {
            redis::Value::Int(n) => n.max(0) as u64,
            redis::Value::BulkString(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            _ => 0,
        };
        Ok((fence > 0).then(|| RefreshLock::new(name.to_string(), fence, taken_at + lease)))
    }

    /// The stored tokens of `name`, or `None` if it has none at all.
    pub async fn tokens(&self, name: &str) -> Result<Option<SharedTokens>, SharedError> {
        let r: redis::RedisResult<Vec<Option<String>>> = redis::cmd("HMGET")
            .arg(self.inner.keys.cred(name))
            .arg(&[
                field::REFRESH_TOKEN,
                field::REFRESH_VERSION,
                field::ACCESS_TOKEN,
                field::ACCESS_EXPIRES,
                field::REFRESH_SEED_FP,
            ])
            .query_async(&mut self.con())
            .await;
        let mut f = self
            .check(|| format!("reading the tokens of {name:?}"), r)?
            .into_iter();
        let mut next = || f.next().flatten();
        let tokens = tokens_from(next(), next(), next(), next(), next());
        let empty = tokens.refresh_token.is_none() && tokens.access_token.is_none();
        Ok((!empty).then_some(tokens))
    }

    /// Stores a refresh's result: only if `lock` still holds the refresh
    /// lock and the refresh token is still at `expected_version` (what
    /// [`SharedStore::tokens`] said before the refresh). A rotated refresh
    /// token becomes version + 1. An older refresh token can never replace
    /// a newer one.
    pub async fn store_refresh(
        &self,
        lock: &RefreshLock,
        expected_version: u64,
        new: &NewTokens,
    ) -> Result<StoreOutcome, SharedError> {
        let name = lock.name();
        let r: redis::RedisResult<(i64, u64)> = self
            .inner
            .scripts
            .store_refresh
            .key(self.inner.keys.cred(name))
            .key(self.inner.keys.lock(name))
            .arg(lock.fence())
            .arg(expected_version)
            .arg(new.access_token.expose())
            .arg(new.expires_ms)
            .arg(new.refresh_token.as_ref().map_or("", Secret::expose))
            .arg(self.inner.keys.channel())
            .arg(self.message(name, Field::Tokens))
            .invoke_async(&mut self.con())
            .await;
        let (status, version) =
            self.check(|| format!("storing the refreshed tokens of {name:?}"), r)?;
        Ok(match status {
            1 => StoreOutcome::Stored { version },
            -1 => StoreOutcome::FencedOut,
            _ => StoreOutcome::Superseded { version },
        })
    }

    /// Gives the lock back, if `lock` still holds it (a lease that ran out
    /// may belong to someone else by now). Returns whether it did.
    pub async fn release(&self, lock: RefreshLock) -> Result<bool, SharedError> {
        let name = lock.name();
        let r: redis::RedisResult<i64> = self
            .inner
            .scripts
            .release
            .key(self.inner.keys.lock(name))
            .arg(lock.fence())
            .invoke_async(&mut self.con())
            .await;
        Ok(self.check(|| format!("releasing the refresh lock of {name:?}"), r)? == 1)
    }

    /// Writes the configured refresh token of `name` only if Redis holds
    /// none yet (the first replica to start wins), and returns what Redis
    /// holds afterwards. A replica that loses keeps using Redis's token:
    /// it may be a rotated successor of its own.
    pub async fn seed_refresh_token(
        &self,
        name: &str,
        token: &Secret,
    ) -> Result<SharedTokens, SharedError> {
        let r: redis::RedisResult<TokensReply> = self
            .inner
            .scripts
            .seed
            .key(self.inner.keys.cred(name))
            .arg(token.expose())
            .arg(token.fingerprint())
            .arg(self.inner.keys.channel())
            .arg(self.message(name, Field::Tokens))
            .invoke_async(&mut self.con())
            .await;
        let (_, rt, version, at, exp, fp) =
            self.check(|| format!("seeding the refresh token of {name:?}"), r)?;
        Ok(tokens_from(rt, version, at, exp, fp))
    }

    /// Puts back a refresh token this replica holds at `version` (from
    /// [`SharedStore::tokens`] or [`StoreOutcome::Stored`], plus one for a
    /// token rotated by a refresh whose store was refused), but only if
    /// Redis holds an older version or none: after Redis lost its data, or
    /// a [`StoreOutcome::FencedOut`] refresh whose rotated token would
    /// otherwise exist nowhere else. Returns what Redis holds afterwards.
    pub async fn restore_refresh_token(
        &self,
        name: &str,
        token: &Secret,
        version: u64,
    ) -> Result<SharedTokens, SharedError> {
        let r: redis::RedisResult<TokensReply> = self
            .inner
            .scripts
            .restore
            .key(self.inner.keys.cred(name))
            .arg(token.expose())
            .arg(version)
            .arg(self.inner.keys.channel())
            .arg(self.message(name, Field::Tokens))
            .invoke_async(&mut self.con())
            .await;
        let (_, rt, version, at, exp, fp) =
            self.check(|| format!("restoring the refresh token of {name:?}"), r)?;
        Ok(tokens_from(rt, version, at, exp, fp))
    }

    /// Puts `token` in as the refresh token of `name` whatever is stored
    /// (an operator's explicit choice, e.g. after the stored one was
    /// revoked), as a new version, and drops the cached access token.
    /// Returns the new version.
    pub async fn replace_refresh_token(
        &self,
        name: &str,
        token: &Secret,
    ) -> Result<u64, SharedError> {
        let r: redis::RedisResult<u64> = self
            .inner
            .scripts
            .replace
            .key(self.inner.keys.cred(name))
            .arg(token.expose())
            .arg(token.fingerprint())
            .arg(self.inner.keys.channel())
            .arg(self.message(name, Field::Tokens))
            .invoke_async(&mut self.con())
            .await;
        self.check(|| format!("replacing the refresh token of {name:?}"), r)
    }
}
