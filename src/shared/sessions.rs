//! Session affinity's pins, shared: one string per session naming the
//! credential it is pinned to, expiring with the affinity TTL. No message
//! goes out: a replica reads a pin when its own is missing or cannot
//! serve, so a write needs no one to hear it.

use super::*;

impl SharedStore {
    /// The credential session `hex` is pinned to, if any replica pinned it
    /// within the TTL.
    pub async fn session_pin(&self, hex: &str) -> Result<Option<String>, SharedError> {
        let key = self.inner.keys.session(hex);
        let r: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.con())
            .await;
        self.check(|| format!("reading session pin {hex}"), r)
    }

    /// Pins session `hex` to `credential` for `ttl` (the last writer wins).
    pub async fn set_session_pin(
        &self,
        hex: &str,
        credential: &str,
        ttl: Duration,
    ) -> Result<(), SharedError> {
        let key = self.inner.keys.session(hex);
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&key)
            .arg(credential)
            .arg("PX")
            .arg(ms)
            .query_async(&mut self.con())
            .await;
        self.check(|| format!("writing session pin {hex}"), r)
    }
}
